//! Budgets: the agent's own daily token limits ([`Budget`]: set by the platform with
//! `PUT /budget` or with a turn's request, kept in the agent's database) and the day's totals
//! they are checked against.
//!
//! Invariants:
//! - no model call (chat turn, heartbeat, subagent, compaction) starts once a limit that applies
//!   to it is spent: [`Budget::daily_tokens`] to every call, [`Budget::background_tokens`] to
//!   background causes ([`UsageCause::is_background`]); a call already started finishes and is
//!   recorded, so a limit is crossed by at most the call that was running;
//! - the day's totals live in memory: read from the `usage` table at the first check of a UTC
//!   day (and after a row dated another day than the totals), then bumped by every row the agent
//!   writes, while the connection's lock is held, so a row is never counted twice or missed;
//!   checking a call is a comparison, never a query;
//! - a budget is written only when it changed (the platform sends it with every turn).

use chrono::NaiveDate;
use rusqlite::OptionalExtension as _;

use crate::wire::{AgentEvent, Budget, BudgetLimit, BudgetStatus, TurnUsage, UsageCause};

use super::history::{History, HistoryError};
use super::usage::Metered;

/// A limit that stops the agent: which one, what was counted against it, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Spent {
    /// Which limit.
    pub limit: BudgetLimit,
    /// Tokens counted against it.
    pub used: u64,
    /// The limit, in tokens.
    pub allowed: u64,
}

impl Spent {
    /// The limit `allowed` when `used` has reached it.
    pub(crate) fn check(limit: BudgetLimit, used: u64, allowed: Option<u64>) -> Option<Spent> {
        allowed.filter(|&allowed| used >= allowed).map(|allowed| Spent { limit, used, allowed })
    }

    /// The event a chat turn sends before its error.
    pub(crate) fn event(&self) -> AgentEvent {
        AgentEvent::BudgetSpent { limit: self.limit, used: self.used, allowed: self.allowed }
    }

    /// What the user reads (the `error` of a chat turn, a subagent's result).
    pub fn message(&self) -> String {
        let allowed = tokens(self.allowed);
        match self.limit {
            BudgetLimit::AgentDaily => {
                format!("This agent has used its daily budget of {allowed}; it starts again at 00:00 UTC.")
            }
            BudgetLimit::Background => format!(
                "This agent has used its daily budget of {allowed} for background work (heartbeat, \
                 subagents, summaries of long chats); it starts again at 00:00 UTC."
            ),
            BudgetLimit::Turn => {
                format!("This message has used the {allowed} its sender had left, so the agent stopped here.")
            }
            BudgetLimit::Unknown => "This agent has reached a spending limit.".to_owned(),
        }
    }
}

/// `1 token`, `1,234,567 tokens`.
fn tokens(n: u64) -> String {
    format!("{} token{}", grouped(n), if n == 1 { "" } else { "s" })
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The stored budget and the totals of one UTC day, shared by every handle of one [`History`].
#[derive(Debug, Default)]
pub(crate) struct Meter {
    budget: Budget,
    /// The day `all` and `background` count; `None` until they are read from the database.
    day: Option<NaiveDate>,
    all: TurnUsage,
    background: TurnUsage,
}

impl Meter {
    pub(crate) fn new(budget: Budget) -> Self {
        Meter { budget, ..Meter::default() }
    }

    /// Whether any limit applies to a call of `cause`; when none does, nothing is counted.
    fn limits(&self, cause: UsageCause) -> bool {
        self.budget.daily_tokens.is_some() || (cause.is_background() && self.budget.background_tokens.is_some())
    }

    fn spent(&self, cause: UsageCause) -> Option<Spent> {
        Spent::check(BudgetLimit::AgentDaily, self.all.tokens(), self.budget.daily_tokens).or_else(|| {
            if cause.is_background() {
                Spent::check(BudgetLimit::Background, self.background.tokens(), self.budget.background_tokens)
            } else {
                None
            }
        })
    }

    /// Counts a row just written for `day`.
    fn count(&mut self, day: NaiveDate, cause: UsageCause, metered: Metered) {
        if self.day != Some(day) {
            // Totals of another day (or none yet): the next check reads the day afresh, this row
            // included.
            self.day = None;
            return;
        }
        self.all.add(metered.prompt_tokens, metered.completion_tokens, metered.estimated);
        if cause.is_background() {
            self.background.add(metered.prompt_tokens, metered.completion_tokens, metered.estimated);
        }
    }
}

fn clamp(tokens: Option<u64>) -> Option<i64> {
    tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX))
}

/// The budget stored in the agent's database (no limits when none was ever set).
pub(crate) fn stored_budget(c: &rusqlite::Connection) -> rusqlite::Result<Budget> {
    let row: Option<(Option<i64>, Option<i64>)> = c
        .query_row("SELECT daily_tokens, background_tokens FROM budget WHERE id = 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let tokens = |t: Option<i64>| t.map(|t| u64::try_from(t).unwrap_or(0));
    Ok(row.map_or_else(Budget::default, |(daily, background)| Budget::new(tokens(daily), tokens(background))))
}

fn merge(sum: &mut TurnUsage, part: TurnUsage) {
    sum.prompt_tokens = sum.prompt_tokens.saturating_add(part.prompt_tokens);
    sum.completion_tokens = sum.completion_tokens.saturating_add(part.completion_tokens);
    sum.calls = sum.calls.saturating_add(part.calls);
    sum.estimated |= part.estimated;
}

/// The totals of UTC `day`: every call, and the background calls. Rows are appended as calls
/// are made, so a day's rows are the newest ones: they are read walking back by id (the table's
/// own order; `usage` keeps no index on `day`, which would cost every call) until an older day
/// shows up. Rows of a later day (a clock set back) are passed over.
fn day_totals(c: &rusqlite::Connection, day: NaiveDate) -> rusqlite::Result<(TurnUsage, TurnUsage)> {
    let day = day.format("%Y-%m-%d").to_string();
    let mut statement =
        c.prepare_cached("SELECT day, cause, prompt_tokens, completion_tokens, estimated FROM usage ORDER BY id DESC")?;
    let mut rows = statement.query([])?;
    let (mut all, mut background) = (TurnUsage::default(), TurnUsage::default());
    while let Some(row) = rows.next()? {
        let row_day: String = row.get(0)?;
        // `YYYY-MM-DD` sorts as the days do.
        match row_day.as_str().cmp(day.as_str()) {
            std::cmp::Ordering::Less => break,
            std::cmp::Ordering::Greater => continue,
            std::cmp::Ordering::Equal => {}
        }
        let count = |i: usize| row.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
        let cause = UsageCause::parse(&row.get::<_, String>(1)?);
        let part =
            TurnUsage { prompt_tokens: count(2)?, completion_tokens: count(3)?, calls: 1, estimated: row.get(4)? };
        merge(&mut all, part);
        if cause.is_background() {
            merge(&mut background, part);
        }
    }
    Ok((all, background))
}

impl History {
    /// The stored budget.
    pub fn budget(&self) -> Budget {
        self.meter().budget
    }

    /// Stores `budget` in place of the current one; returns whether it changed (an unchanged
    /// budget is not written).
    pub fn set_budget(&self, budget: Budget) -> Result<bool, HistoryError> {
        if self.meter().budget == budget {
            return Ok(false);
        }
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO budget (id, daily_tokens, background_tokens, updated_at) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET daily_tokens = excluded.daily_tokens, \
                 background_tokens = excluded.background_tokens, updated_at = excluded.updated_at",
            )?
            .execute(rusqlite::params![
                clamp(budget.daily_tokens),
                clamp(budget.background_tokens),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            ])?;
            // Under the connection's lock: two writers leave the budget the last one stored.
            self.meter().budget = budget;
            Ok(true)
        })
    }

    /// The stored budget and today's totals (UTC).
    pub fn budget_status(&self) -> Result<BudgetStatus, HistoryError> {
        let today = chrono::Utc::now().date_naive();
        self.with_today(today, |meter| {
            BudgetStatus::new(meter.budget, today.format("%Y-%m-%d").to_string(), meter.all, meter.background)
        })
    }

    /// The limit of the stored budget that forbids a model call of `cause` now, if one does
    /// (what the agent checks before each call; a turn's own allowance is the turn's business).
    pub fn budget_spent(&self, cause: UsageCause) -> Result<Option<Spent>, HistoryError> {
        let today = chrono::Utc::now().date_naive();
        {
            let meter = self.meter();
            if !meter.limits(cause) {
                return Ok(None);
            }
            if meter.day == Some(today) {
                return Ok(meter.spent(cause));
            }
        }
        self.with_today(today, |meter| meter.spent(cause))
    }

    /// Runs `read` on the meter once it counts `today`, reading the day's totals first if it
    /// does not yet.
    fn with_today<T>(&self, today: NaiveDate, read: impl FnOnce(&Meter) -> T) -> Result<T, HistoryError> {
        {
            let meter = self.meter();
            if meter.day == Some(today) {
                return Ok(read(&meter));
            }
        }
        // Read and set under the connection's lock, which every recording holds while it counts
        // its row: no row lands between the sum and the totals.
        self.with(|c| {
            let (all, background) = day_totals(c, today)?;
            let mut meter = self.meter();
            meter.day = Some(today);
            meter.all = all;
            meter.background = background;
            Ok(read(&meter))
        })
    }

    /// Counts a row just written for `day`. Called with the connection's lock held.
    pub(super) fn count_usage(&self, day: NaiveDate, cause: UsageCause, metered: Metered) {
        let tokens = crate::telemetry::AGENT_TOKENS;
        crate::telemetry::count_tokens(tokens, cause.as_str(), metered.prompt_tokens, metered.completion_tokens);
        self.meter().count(day, cause, metered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_naturally() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!((tokens(1), tokens(0), tokens(2000)), ("1 token".into(), "0 tokens".into(), "2,000 tokens".into()));
        let daily = Spent { limit: BudgetLimit::AgentDaily, used: 100_200, allowed: 100_000 };
        assert_eq!(
            daily.message(),
            "This agent has used its daily budget of 100,000 tokens; it starts again at 00:00 UTC."
        );
        assert_eq!(Spent::check(BudgetLimit::Turn, 10, Some(10)).map(|s| s.used), Some(10), "reached is spent");
        assert_eq!(Spent::check(BudgetLimit::Turn, 9, Some(10)), None);
        assert_eq!(Spent::check(BudgetLimit::Turn, u64::MAX, None), None, "no limit");
    }

    #[tokio::test]
    async fn totals_follow_every_row_and_the_budget_is_kept() {
        let history = History::in_memory().await.unwrap();
        assert_eq!(history.budget(), Budget::default());
        assert_eq!(history.budget_spent(UsageCause::Heartbeat).unwrap(), None, "no budget, no limit");
        history.record_usage("7", UsageCause::OwnerTurn, "m", Metered::new(60, 10, false)).unwrap();
        assert!(history.set_budget(Budget::new(Some(100), Some(20))).unwrap());
        assert!(!history.set_budget(Budget::new(Some(100), Some(20))).unwrap(), "unchanged: not written");
        // Read from the table at the first check, which counts the row written before.
        assert_eq!(history.budget_spent(UsageCause::OwnerTurn).unwrap(), None);
        history.record_usage("__heartbeat__", UsageCause::Heartbeat, "m", Metered::new(15, 5, true)).unwrap();
        let background = history.budget_spent(UsageCause::Subagent).unwrap().unwrap();
        assert_eq!((background.limit, background.used, background.allowed), (BudgetLimit::Background, 20, 20));
        assert_eq!(history.budget_spent(UsageCause::VisitorTurn).unwrap(), None, "a visitor turn is not background");
        history.record_usage("8", UsageCause::VisitorTurn, "m", Metered::new(10, 0, false)).unwrap();
        let daily = history.budget_spent(UsageCause::VisitorTurn).unwrap().unwrap();
        assert_eq!((daily.limit, daily.used, daily.allowed), (BudgetLimit::AgentDaily, 100, 100));

        let status = history.budget_status().unwrap();
        assert_eq!(status.day, super::super::usage::day_of(chrono::Utc::now()));
        assert_eq!(status.today, history.usage_on(&status.day, None).unwrap(), "the same as the table's sums");
        assert_eq!(
            status.background_today,
            TurnUsage { prompt_tokens: 15, completion_tokens: 5, calls: 1, estimated: true }
        );
        assert_eq!(status.budget, Budget::new(Some(100), Some(20)));
    }

    #[tokio::test]
    async fn the_budget_survives_a_reopen_and_totals_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let history = History::open(&path).await.unwrap();
        history.set_budget(Budget::new(None, Some(50))).unwrap();
        history.record_usage("__subagent__", UsageCause::Subagent, "m", Metered::new(40, 10, false)).unwrap();
        drop(history);
        let history = History::open(&path).await.unwrap();
        assert_eq!(history.budget(), Budget::new(None, Some(50)));
        let spent = history.budget_spent(UsageCause::Compaction).unwrap().unwrap();
        assert_eq!((spent.limit, spent.used), (BudgetLimit::Background, 50));
        // Totals of another day are read afresh at the next check.
        history.meter().day = NaiveDate::from_ymd_opt(2000, 1, 1);
        history.record_usage("__subagent__", UsageCause::Subagent, "m", Metered::new(1, 1, false)).unwrap();
        assert_eq!(history.budget_status().unwrap().background_today.tokens(), 52);
        assert!(history.set_budget(Budget::default()).unwrap());
        assert_eq!(history.budget_spent(UsageCause::Compaction).unwrap(), None);
    }
}
