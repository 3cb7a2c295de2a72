//! The account: LibertAI keys (/login, /logout) and the plan card.

pub(crate) mod views;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use self::views::{AgentCounts, PlanView};
use super::views::{name_in, until, usage_section};
use crate::domain::{Agent, AgentStatus, Payer, UserId, usage_day};
use crate::inference::{self, KeyCheck};
use crate::metering::UsageReport;
use crate::platform::Plan;
use crate::platform::engine::{Ctx, Inner, PlatformError};
use crate::platform::jobs::JobKind;
use crate::platform::metering::tokens_of;
use crate::secrets::{SealContext, secret_hint};
use crate::store::AgentFilter;
use crate::store::UsageQuery;

/// Days of usage the bot's views show (today included).
pub(crate) const USAGE_VIEW_DAYS: u32 = 7;

impl Inner {
    pub(super) async fn login(self: &Arc<Self>, ctx: &Ctx, args: &str) -> Result<(), PlatformError> {
        let Some(key) = args.split_whitespace().next() else {
            self.say(ctx.chat, views::login_usage()).await;
            return Ok(());
        };
        let key = SecretString::from(key.to_owned());
        let balance = match self.check_key(&key).await {
            KeyCheck::Valid { balance } => balance,
            KeyCheck::Invalid => {
                self.say(ctx.chat, views::key_refused()).await;
                return Ok(());
            }
            _ => {
                self.say(ctx.chat, views::key_unchecked()).await;
                return Ok(());
            }
        };
        let sealed = self.secrets.seal_str_for(&SealContext::user_api_key(ctx.user_id()), key.expose_secret())?;
        self.store.user_set_api_key(ctx.user_id(), Some(sealed)).await?;
        let restarted = self.rekey_running_agents(ctx, "your key").await?;
        self.say(ctx.chat, views::key_connected(&secret_hint(&key, 4), balance, restarted)).await;
        Ok(())
    }

    pub(super) async fn logout(self: &Arc<Self>, ctx: &Ctx) -> Result<(), PlatformError> {
        self.store.user_set_api_key(ctx.user_id(), None).await?;
        // Without a key of Baal's own there is nothing to move the running agents to.
        let restarted = match self.config.libertai_api_key {
            Some(_) => Some(self.rekey_running_agents(ctx, "Baal's key").await?),
            None => None,
        };
        self.say(ctx.chat, views::logged_out(restarted)).await;
        Ok(())
    }

    /// Redeploys the caller's running agents so they pick up the key now in effect.
    async fn rekey_running_agents(self: &Arc<Self>, ctx: &Ctx, whose: &str) -> Result<usize, PlatformError> {
        let running =
            self.store.list_agents(&AgentFilter::all().owner(ctx.user_id()).status(AgentStatus::Running)).await?;
        let mut count = 0;
        for agent in running.into_iter().filter(|a| !self.is_in_flight(a.id)) {
            let done = format!("✅ {} now runs on {whose}.", agent.name);
            self.start_job(agent.id, ctx.chat, None, JobKind::Redeploy { done });
            count += 1;
        }
        Ok(count)
    }

    /// The tokens section of `owner`'s agents (`agents`, for their names) over the last
    /// [`USAGE_VIEW_DAYS`] days.
    pub(super) async fn usage_of_agents(&self, owner: UserId, agents: &[Agent]) -> Result<String, PlatformError> {
        let today = usage_day(self.now()).0;
        let from = today - chrono::Days::new(u64::from(USAGE_VIEW_DAYS - 1));
        let rows = self.store.usage_rows(&UsageQuery::days(from, today).owner(owner)).await?;
        let report = UsageReport::new(&rows, today, USAGE_VIEW_DAYS);
        Ok(usage_section(&report, |id| name_in(agents, id)))
    }

    async fn check_key(&self, key: &SecretString) -> KeyCheck {
        inference::check_key(&self.http, &self.config.libertai_api_base_url, key).await
    }

    pub(super) async fn account(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let user = self.store.user_get(ctx.user_id()).await?.unwrap_or_else(|| ctx.user.clone());
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        let count = |status| agents.iter().filter(|a| a.status == status).count();
        let counts = AgentCounts {
            total: agents.len(),
            slots: self.config.max_agents_per_user,
            running: count(AgentStatus::Running),
            deploying: count(AgentStatus::Deploying) + count(AgentStatus::Pending),
            failed: count(AgentStatus::Failed),
            down: count(AgentStatus::Down),
        };
        let context = SealContext::user_api_key(user.id);
        let own_key =
            user.api_key_sealed.as_deref().and_then(|sealed| self.secrets.open_str_for(&context, sealed).ok());
        let plan = match (Plan::of(&user, &self.config), own_key) {
            (Plan::OwnKey, Some(key)) => {
                let balance = match self.check_key(&key).await {
                    KeyCheck::Valid { balance } => Some(balance),
                    _ => None,
                };
                PlanView::OwnKey { hint: secret_hint(&key, 4), balance }
            }
            (Plan::NoKey, _) => PlanView::NoKey,
            // Also a stored key that no longer opens: its deployments ask for `/login` again.
            _ => {
                let now = self.now();
                let (day, resets_at) = usage_day(now);
                let used = self.store.usage_get(ctx.user_id(), day).await?;
                let charged = UsageQuery::days(day, day).user(ctx.user_id()).payer(Payer::Operator);
                PlanView::FreeTier {
                    used,
                    limit: self.config.free_tier_daily_messages,
                    tokens_used: tokens_of(&self.store.usage_rows(&charged).await?),
                    tokens_limit: self.config.free_tier_daily_tokens,
                    resets_in: until(resets_at, now),
                }
            }
        };
        let usage = self.usage_of_agents(ctx.user_id(), &agents).await?;
        self.say(ctx.chat, views::account_card(plan, counts, &usage)).await;
        Ok(())
    }
}
