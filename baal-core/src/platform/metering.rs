//! What agents spend and the limits on it, on the platform's side: the gate before each turn
//! (sharing, the visitor's daily messages, the free tier's messages and tokens, the agent's own
//! daily budget), the limits handed to the agent with the turn (which it enforces before every
//! model call), the usage the agents report (`GET /usage`, stored per agent, day, charged user,
//! cause and model), estimates for agents that report none, and the owner's budget notices.
//!
//! Invariants:
//! - a refused message is not counted: every limit is read, or refused atomically, before the
//!   next counter is consumed (only a race between one user's messages can leave a visitor's
//!   counter one message ahead of the free tier's);
//! - usage is stored from `GET /usage` only, page by page, each page with the cursor it moves in
//!   one transaction, so a page is counted once however many bot processes poll;
//! - an agent is hostile: a visitor turn it reports is charged to that visitor only if the visitor
//!   really talked to it that day (else to the owner, who runs the agent), so no agent can spend
//!   a stranger's free tier;
//! - each budget notice (80 %, 100 %) reaches the owner once per agent and UTC day.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;

use super::engine::{Inner, PlatformError};
use super::handlers::daily_limit;
use super::handlers::settings_views as views;
use super::handlers::views::until;
use super::messenger::Text;
use crate::domain::{Agent, AgentId, AgentUsage, Payer, Role, UsageDecision, UserId, usage_day};
use crate::proxy::{AgentEndpoint, TurnUsage, UsageCause, UsageRecord};
use crate::store::UsageQuery;
use crate::wire::{Budget, MAX_USAGE_RECORDS};

/// Pages of `GET /usage` read per collection: a busy agent's backlog is caught up over a few
/// polls instead of holding one poll for long.
const MAX_PAGES_PER_COLLECTION: usize = 20;
/// Bytes per token of the platform's estimate for agents that report no usage (as the agent's
/// own estimate).
const ESTIMATE_BYTES_PER_TOKEN: usize = 4;

/// What the platform hands an agent with a turn: the agent stops starting model calls once one
/// of these is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnLimits {
    /// The agent's daily limits (kept by the agent for its background work, too).
    pub budget: Budget,
    /// What the sender may still spend today on the operator's key, when the operator pays.
    pub turn_tokens: Option<u64>,
    /// The tools a visitor gets; `None` for the owner.
    pub visitor_tools: Option<Vec<String>>,
}

/// The sum of `rows`' tokens.
pub(crate) fn tokens_of(rows: &[AgentUsage]) -> u64 {
    rows.iter().map(AgentUsage::total_tokens).fold(0, u64::saturating_add)
}

/// The level of the budget notice `used` of `budget` calls for: 100, 80, or 0 for none.
pub(crate) fn notice_level(used: u64, budget: u64) -> u8 {
    if used >= budget {
        100
    } else if u128::from(used) * 5 >= u128::from(budget) * 4 {
        80
    } else {
        0
    }
}

impl Inner {
    /// The limits of a turn nobody sent (the introduction after a deployment): the agent's own.
    pub(crate) fn owner_limits(&self, agent: &Agent) -> TurnLimits {
        TurnLimits { budget: self.budget_of(agent), turn_tokens: None, visitor_tools: None }
    }

    /// The agent's daily limits: the owner's budget for the whole agent and, when the operator
    /// pays, the free tier's tokens for its background work (charged to the owner).
    pub(crate) fn budget_of(&self, agent: &Agent) -> Budget {
        let background = match agent.payer {
            Payer::Operator => Some(self.config.free_tier_daily_tokens),
            Payer::Owner => None,
        };
        Budget::new(agent.policy.daily_token_budget, background)
    }

    /// The tools a visitor of `agent` gets: the owner's choice, within what the operator allows.
    pub(crate) fn visitor_tools_of(&self, agent: &Agent) -> Vec<String> {
        let allowed = &self.config.visitor_tools_allowed;
        agent.visitor_tools.iter().filter(|t| allowed.contains(t)).cloned().collect()
    }

    /// The gate before a turn of `user` with `agent`: `Err` with what to tell the user when a
    /// limit is reached (nothing is counted then), else the limits for the agent (and the
    /// message is counted).
    pub(crate) async fn gate_turn(
        &self,
        user: UserId,
        agent: &Agent,
    ) -> Result<Result<TurnLimits, Text>, PlatformError> {
        let now = self.now();
        let (day, resets_at) = usage_day(now);
        let resets_in = until(resets_at, now);
        let role = agent.role_of(user);
        if role == Role::Visitor && !agent.policy.sharing {
            return Ok(Err(views::sharing_paused(agent)));
        }
        let today = UsageQuery::days(day, day);
        if let Some(budget) = agent.policy.daily_token_budget {
            let used = tokens_of(&self.store.usage_rows(&today.agent(agent.id)).await?);
            if used >= budget {
                return Ok(Err(views::agent_budget_spent(agent, role, budget, &resets_in)));
            }
        }
        let mut turn_tokens = None;
        if agent.payer == Payer::Operator {
            let limit = self.config.free_tier_daily_tokens;
            let used = tokens_of(&self.store.usage_rows(&today.user(user).payer(Payer::Operator)).await?);
            if used >= limit {
                return Ok(Err(views::free_tokens_spent(agent, role, limit, &resets_in)));
            }
            turn_tokens = Some(limit - used);
        }
        let free_messages = self.config.free_tier_daily_messages;
        if role == Role::Visitor {
            // A visitor's counter is consumed before the free tier's, so a message the free tier
            // refuses must be seen here first, or the owner would see it counted.
            if agent.payer == Payer::Operator {
                let sent = self.store.usage_get(user, day).await?;
                if sent >= free_messages {
                    return Ok(Err(daily_limit(sent, free_messages, &resets_in, false)));
                }
            }
            // Counted with or without a limit: the owner sees each visitor's messages, and only a
            // visitor counted here can be charged for what the agent reports. Refused atomically,
            // and then not counted.
            let limit = agent.policy.visitor_daily_messages.unwrap_or(u32::MAX);
            if let UsageDecision::Refused { .. } =
                self.store.visitor_consume(agent.id, user, day, limit, resets_at).await?
            {
                return Ok(Err(views::visitor_limit(agent, limit, &resets_in)));
            }
        }
        // Only a race with another of the user's messages makes this refuse a visitor after their
        // counter above took the message.
        if agent.payer == Payer::Operator
            && let UsageDecision::Refused { used, limit, .. } =
                self.store.usage_consume(user, day, free_messages, resets_at).await?
        {
            return Ok(Err(daily_limit(used, limit, &resets_in, role == Role::Owner)));
        }
        let visitor_tools = (role == Role::Visitor).then(|| self.visitor_tools_of(agent));
        Ok(Ok(TurnLimits { budget: self.budget_of(agent), turn_tokens, visitor_tools }))
    }

    /// Brings what `agent` recorded since its cursor into the store, then, if anything was
    /// stored, tells the owner about a budget threshold crossed. Failures are logged: the next
    /// poll tries again from the cursor.
    pub(crate) async fn collect_usage(&self, agent: AgentId, endpoint: &AgentEndpoint) {
        match self.collect_usage_pages(agent, endpoint).await {
            Ok(Some(agent)) => self.budget_notices(&agent).await,
            Ok(None) => {}
            Err(err) => tracing::warn!(agent = %agent, error = %err, "storing an agent's usage failed"),
        }
    }

    /// Stores the pages the agent has; the agent as last read when at least one was stored.
    async fn collect_usage_pages(&self, id: AgentId, endpoint: &AgentEndpoint) -> Result<Option<Agent>, PlatformError> {
        let mut stored = None;
        for _ in 0..MAX_PAGES_PER_COLLECTION {
            let Some(agent) = self.store.agent_get(id).await? else { break };
            let cursor = agent.usage_cursor;
            let page = match self.proxy.usage(endpoint, cursor).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::debug!(agent = %id, error = %err, "no usage from the agent");
                    break;
                }
            };
            if page.records.is_empty() || page.next <= cursor {
                break;
            }
            let visitors = self.visitors_of(&agent, &page.records).await?;
            let rows = charge(&agent, &page.records, &visitors, self.now().date_naive());
            if !self.store.usage_ingest(id, Some((cursor, page.next)), &rows).await? {
                // Another process stored this page first (and checks the budget for it).
                break;
            }
            super::observe::tokens_stored(&page.records);
            let full = page.records.len() >= MAX_USAGE_RECORDS;
            stored = Some(agent);
            if !full {
                break;
            }
        }
        Ok(stored)
    }

    /// The (day, visitor) pairs of `records`' visitor turns that the platform counted: only those
    /// are charged to the visitor.
    async fn visitors_of(
        &self,
        agent: &Agent,
        records: &[UsageRecord],
    ) -> Result<HashSet<(NaiveDate, UserId)>, PlatformError> {
        let days: Vec<NaiveDate> =
            records.iter().filter(|r| r.cause == UsageCause::VisitorTurn).filter_map(|r| parse_day(&r.day)).collect();
        let (Some(from), Some(to)) = (days.iter().min(), days.iter().max()) else {
            return Ok(HashSet::new());
        };
        let counted = self.store.visitor_counts(agent.id, *from, *to).await?;
        Ok(counted.into_iter().map(|row| (row.day, row.user_id)).collect())
    }

    /// Stores the platform's estimate of a turn of an agent that reports no usage (a Python
    /// agent): the bytes of its instructions, the message and the answer, four to a token.
    pub(crate) async fn estimate_turn(&self, agent: &Agent, user: UserId, message: &str, answer_bytes: usize) {
        let role = agent.role_of(user);
        let prompt = (agent.system_prompt.len() + message.len()) / ESTIMATE_BYTES_PER_TOKEN + 1;
        let completion = answer_bytes / ESTIMATE_BYTES_PER_TOKEN + 1;
        let row = AgentUsage::new(
            agent.id,
            self.now().date_naive(),
            user,
            UsageCause::of_turn(role),
            &agent.model,
            agent.payer,
        )
        .with_tokens(prompt as u64, completion as u64, 1, true);
        match self.store.usage_ingest(agent.id, None, &[row]).await {
            Ok(_) => self.budget_notices(agent).await,
            Err(err) => tracing::warn!(agent = %agent.id, error = %err, "storing a turn's estimate failed"),
        }
    }

    /// Tells the owner once per day when `agent` reaches 80 % and 100 % of its daily budget.
    /// Failures are logged: the next usage stored checks again.
    pub(crate) async fn budget_notices(&self, agent: &Agent) {
        if let Err(err) = self.budget_notice(agent).await {
            tracing::warn!(agent = %agent.id, error = %err, "checking an agent's budget failed");
        }
    }

    async fn budget_notice(&self, agent: &Agent) -> Result<(), PlatformError> {
        let Some(budget) = agent.policy.daily_token_budget else { return Ok(()) };
        let now = self.now();
        let (day, resets_at) = usage_day(now);
        let used = tokens_of(&self.store.usage_rows(&UsageQuery::days(day, day).agent(agent.id)).await?);
        let level = notice_level(used, budget);
        if level == 0 || !self.store.agent_budget_notice(agent.id, day, level).await? {
            return Ok(());
        }
        let resets_in = until(resets_at, now);
        self.say(agent.owner_id, views::budget_notice(agent, level, used, budget, &resets_in)).await;
        Ok(())
    }

    /// Drops usage figures older than the retention, once a day at most.
    pub(crate) async fn prune_usage(&self) {
        let today = self.now().date_naive();
        {
            let mut last = self.usage_pruned.lock().unwrap_or_else(|p| p.into_inner());
            if *last == Some(today) {
                return;
            }
            *last = Some(today);
        }
        let before = today - chrono::Days::new(u64::from(self.config.usage_retention_days));
        match self.store.usage_prune(before).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, %before, "pruned old usage figures"),
            Err(err) => tracing::warn!(error = %err, "pruning old usage figures failed"),
        }
    }
}

/// `records` as stored rows, summed per (day, charged user, cause, model). A visitor turn is
/// charged to its visitor when `visitors` has them that day, else to the owner; everything else
/// to the owner. A day the agent wrote badly is taken as `today`.
pub(crate) fn charge(
    agent: &Agent,
    records: &[UsageRecord],
    visitors: &HashSet<(NaiveDate, UserId)>,
    today: NaiveDate,
) -> Vec<AgentUsage> {
    let mut sums: BTreeMap<(NaiveDate, UserId, &str, &str), (UsageCause, TurnUsage)> = BTreeMap::new();
    for record in records {
        let day = parse_day(&record.day).unwrap_or(today);
        let visitor = match record.cause {
            UsageCause::VisitorTurn => record.chat_id.parse::<UserId>().ok().filter(|v| visitors.contains(&(day, *v))),
            _ => None,
        };
        let user = visitor.unwrap_or(agent.owner_id);
        let entry = sums
            .entry((day, user, record.cause.as_str(), record.model.as_str()))
            .or_insert((record.cause, TurnUsage::default()));
        entry.1.add(record.prompt_tokens, record.completion_tokens, record.estimated);
    }
    sums.into_iter()
        .map(|((day, user, _, model), (cause, usage))| {
            AgentUsage::new(agent.id, day, user, cause, model, agent.payer).with_tokens(
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.calls,
                usage.estimated,
            )
        })
        .collect()
}

fn parse_day(day: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}
