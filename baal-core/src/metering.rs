//! What stored usage adds up to: tokens and estimated cost per agent, per cause and per charged
//! user, for today and for the last few days. `/account`, `/dashboard` and `baal-cli usage` all
//! build their figures with [`UsageReport`], so they always agree.
//!
//! Pure: it reads the rows it is given ([`AgentUsage`], from
//! `Store::usage_rows`) and the model catalog, nothing else.
//! A cost is in LibertAI credits and known only when every model behind it has a price
//! ([`Model::price`]); otherwise it is `None`, shown as "price unknown", never a guess.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use serde::Serialize;

use crate::domain::{AgentId, AgentUsage, Model, Price, UserId};
use crate::wire::UsageCause;

/// The first day of the `days` days ending with `today` (at least today itself): what to read
/// with `store::UsageQuery::days` for a [`UsageReport`] of them.
pub fn first_day(today: NaiveDate, days: u32) -> NaiveDate {
    today.checked_sub_days(Days::new(u64::from(days.max(1) - 1))).unwrap_or(NaiveDate::MIN)
}

/// Tokens, calls and cost summed over some usage rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tally {
    prompt_tokens: u64,
    completion_tokens: u64,
    calls: u64,
    estimated: bool,
    /// `None` once a row's model has no known price.
    cost: Option<f64>,
}

impl Default for Tally {
    /// Nothing used, which costs nothing.
    fn default() -> Self {
        Tally { prompt_tokens: 0, completion_tokens: 0, calls: 0, estimated: false, cost: Some(0.0) }
    }
}

impl Tally {
    /// Tokens sent.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Tokens written.
    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens
    }

    /// Tokens sent and written.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Model calls.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Whether any figure is an estimate (a server or an agent that reported no usage).
    pub fn estimated(&self) -> bool {
        self.estimated
    }

    /// Estimated cost in LibertAI credits; `None` when a model behind it has no known price.
    pub fn cost(&self) -> Option<f64> {
        self.cost
    }

    fn add(&mut self, row: &AgentUsage, price: Option<Price>) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(row.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(row.completion_tokens);
        self.calls = self.calls.saturating_add(row.calls);
        self.estimated |= row.estimated;
        self.cost = match (self.cost, price) {
            (Some(sum), Some(price)) => Some(sum + price.cost(row.prompt_tokens, row.completion_tokens)),
            _ => None,
        };
    }
}

/// Today's figures and those of the whole period (today included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    today: Tally,
    period: Tally,
}

impl Totals {
    /// Today's (UTC).
    pub fn today(&self) -> &Tally {
        &self.today
    }

    /// The report's last `days` days, today included.
    pub fn period(&self) -> &Tally {
        &self.period
    }

    fn add(&mut self, row: &AgentUsage, price: Option<Price>, is_today: bool) {
        if is_today {
            self.today.add(row, price);
        }
        self.period.add(row, price);
    }
}

/// One cause's share of an agent's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CauseUsage {
    cause: UsageCause,
    #[serde(flatten)]
    totals: Totals,
}

impl CauseUsage {
    /// Why the model was called.
    pub fn cause(&self) -> UsageCause {
        self.cause
    }

    /// Its figures.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }
}

/// One agent's usage, whole and per cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentReport {
    agent_id: AgentId,
    #[serde(flatten)]
    totals: Totals,
    causes: Vec<CauseUsage>,
}

impl AgentReport {
    /// The agent.
    pub fn agent_id(&self) -> AgentId {
        self.agent_id
    }

    /// Every cause together.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Per cause, the most tokens of the period first.
    pub fn causes(&self) -> &[CauseUsage] {
        &self.causes
    }
}

/// What one user was charged: a visitor their turns, an owner everything else of their agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserUsage {
    user_id: UserId,
    #[serde(flatten)]
    totals: Totals,
}

impl UserUsage {
    /// The user charged.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// Their figures.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }
}

/// Tokens and cost of a set of stored usage rows, grouped for views: per agent and cause, per
/// charged user, and in all, each for today and for the last `days` days (today included).
///
/// ```
/// use baal_core::domain::{AgentId, AgentUsage, Payer};
/// use baal_core::metering::UsageReport;
/// use baal_core::wire::UsageCause;
///
/// let today = "2026-11-25".parse().unwrap();
/// let rows = [AgentUsage::new(AgentId(1), today, 42, UsageCause::VisitorTurn, "glm-4.7", Payer::Operator)
///     .with_tokens(1_000, 200, 3, false)];
/// let report = UsageReport::new(&rows, today, 7);
/// assert_eq!(report.total().today().total_tokens(), 1_200);
/// assert_eq!(report.users()[0].user_id(), 42);
/// assert_eq!(report.total().period().cost(), None, "the catalog knows no prices yet");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    today: NaiveDate,
    from: NaiveDate,
    days: u32,
    total: Totals,
    agents: Vec<AgentReport>,
    users: Vec<UserUsage>,
}

impl UsageReport {
    /// The report of `rows` for `today` and the `days` days ending today (at least today), with
    /// the catalog's prices. Rows outside those days are left out.
    pub fn new(rows: &[AgentUsage], today: NaiveDate, days: u32) -> Self {
        UsageReport::with_prices(rows, today, days, |model| Model::find(model).and_then(|m| m.price))
    }

    /// As [`UsageReport::new`], with the price of each model from `price_of`.
    pub fn with_prices(
        rows: &[AgentUsage],
        today: NaiveDate,
        days: u32,
        price_of: impl Fn(&str) -> Option<Price>,
    ) -> Self {
        let days = days.max(1);
        let from = first_day(today, days);
        let mut total = Totals::default();
        // Causes keyed by name: `UsageCause` has no order of its own.
        type ByCause<'a> = BTreeMap<&'a str, (UsageCause, Totals)>;
        let mut agents: BTreeMap<AgentId, (Totals, ByCause<'_>)> = BTreeMap::new();
        let mut users: BTreeMap<UserId, Totals> = BTreeMap::new();
        for row in rows.iter().filter(|row| (from..=today).contains(&row.day)) {
            let price = price_of(&row.model);
            let is_today = row.day == today;
            total.add(row, price, is_today);
            let (agent, causes) = agents.entry(row.agent_id).or_default();
            agent.add(row, price, is_today);
            causes.entry(row.cause.as_str()).or_insert((row.cause, Totals::default())).1.add(row, price, is_today);
            users.entry(row.user_id).or_default().add(row, price, is_today);
        }
        let agents = agents
            .into_iter()
            .map(|(agent_id, (totals, causes))| {
                let mut causes: Vec<CauseUsage> =
                    causes.into_values().map(|(cause, totals)| CauseUsage { cause, totals }).collect();
                causes.sort_by_key(|c| std::cmp::Reverse(c.totals.period.total_tokens()));
                AgentReport { agent_id, totals, causes }
            })
            .collect();
        let mut users: Vec<UserUsage> =
            users.into_iter().map(|(user_id, totals)| UserUsage { user_id, totals }).collect();
        users.sort_by_key(|u| std::cmp::Reverse(u.totals.period.total_tokens()));
        UsageReport { today, from, days, total, agents, users }
    }

    /// The day reported as today.
    pub fn today(&self) -> NaiveDate {
        self.today
    }

    /// The first day of the period.
    pub fn from(&self) -> NaiveDate {
        self.from
    }

    /// How many days the period covers, today included.
    pub fn days(&self) -> u32 {
        self.days
    }

    /// Every row together.
    pub fn total(&self) -> &Totals {
        &self.total
    }

    /// Per agent, by id.
    pub fn agents(&self) -> &[AgentReport] {
        &self.agents
    }

    /// One agent's figures, if it used anything in the period.
    pub fn agent(&self, id: AgentId) -> Option<&AgentReport> {
        self.agents.iter().find(|agent| agent.agent_id == id)
    }

    /// Per charged user, the most tokens of the period first.
    pub fn users(&self) -> &[UserUsage] {
        &self.users
    }

    /// One user's figures, if they were charged anything in the period.
    pub fn user(&self, id: UserId) -> Option<&UserUsage> {
        self.users.iter().find(|user| user.user_id == id)
    }

    /// Whether the period holds no usage at all.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Payer;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn row(agent: i64, on: &str, user: UserId, cause: UsageCause, model: &str) -> AgentUsage {
        AgentUsage::new(AgentId(agent), day(on), user, cause, model, Payer::Operator)
    }

    /// 2 credits per million sent, 10 per million written; "mystery" has no price.
    fn prices(model: &str) -> Option<Price> {
        (model == "priced").then_some(Price::new(2.0, 10.0))
    }

    fn close(actual: Option<f64>, expected: f64) -> bool {
        actual.is_some_and(|cost| (cost - expected).abs() < 1e-9)
    }

    #[test]
    fn sums_today_and_the_period_per_agent_cause_and_user() {
        let rows = [
            row(1, "2026-11-25", 10, UsageCause::OwnerTurn, "priced").with_tokens(1_000_000, 100_000, 4, false),
            row(1, "2026-11-25", 20, UsageCause::VisitorTurn, "priced").with_tokens(500_000, 0, 1, true),
            row(1, "2026-11-20", 10, UsageCause::Heartbeat, "priced").with_tokens(2_000_000, 300_000, 2, false),
            row(2, "2026-11-24", 10, UsageCause::OwnerTurn, "priced").with_tokens(10, 20, 1, false),
            // Outside the 7 days ending 2026-11-25, and a day ahead of it: left out.
            row(1, "2026-11-18", 10, UsageCause::OwnerTurn, "priced").with_tokens(999, 999, 9, true),
            row(1, "2026-11-26", 10, UsageCause::OwnerTurn, "priced").with_tokens(999, 999, 9, true),
        ];
        let report = UsageReport::with_prices(&rows, day("2026-11-25"), 7, prices);
        assert_eq!((report.from(), report.days()), (day("2026-11-19"), 7));

        let total = report.total();
        assert_eq!((total.today().prompt_tokens(), total.today().completion_tokens()), (1_500_000, 100_000));
        assert_eq!((total.today().calls(), total.today().estimated()), (5, true));
        assert_eq!(total.period().total_tokens(), 3_900_030);
        assert_eq!((total.period().calls(), total.period().estimated()), (8, true));
        // Today: 1.5 M sent × 2 + 0.1 M written × 10 = 4 credits.
        assert!(close(total.today().cost(), 4.0), "{:?}", total.today().cost());
        // Period: 3.500010 M × 2 + 0.400020 M × 10 = 11.00022 credits.
        assert!(close(total.period().cost(), 11.00022), "{:?}", total.period().cost());

        let ids: Vec<AgentId> = report.agents().iter().map(AgentReport::agent_id).collect();
        assert_eq!(ids, [AgentId(1), AgentId(2)]);
        let first = report.agent(AgentId(1)).unwrap();
        let causes: Vec<(UsageCause, u64, u64)> = first
            .causes()
            .iter()
            .map(|c| (c.cause(), c.totals().today().total_tokens(), c.totals().period().total_tokens()))
            .collect();
        assert_eq!(
            causes,
            [
                (UsageCause::Heartbeat, 0, 2_300_000),
                (UsageCause::OwnerTurn, 1_100_000, 1_100_000),
                (UsageCause::VisitorTurn, 500_000, 500_000)
            ],
            "most tokens of the period first"
        );
        assert!(!first.causes()[0].totals().period().estimated());
        assert!(first.causes()[2].totals().today().estimated());
        assert_eq!(report.agent(AgentId(2)).unwrap().totals().today(), &Tally::default(), "nothing today");
        assert_eq!(report.agent(AgentId(3)), None);

        let users: Vec<(UserId, u64)> =
            report.users().iter().map(|u| (u.user_id(), u.totals().period().total_tokens())).collect();
        assert_eq!(users, [(10, 3_400_030), (20, 500_000)], "the most charged first");
        assert!(close(report.user(20).unwrap().totals().today().cost(), 1.0));
    }

    #[test]
    fn a_cost_is_unknown_once_any_model_behind_it_has_no_price() {
        let rows = [
            row(1, "2026-11-25", 10, UsageCause::OwnerTurn, "priced").with_tokens(1_000_000, 0, 1, false),
            row(1, "2026-11-24", 10, UsageCause::Compaction, "mystery").with_tokens(5, 5, 1, false),
        ];
        let report = UsageReport::with_prices(&rows, day("2026-11-25"), 2, prices);
        assert!(close(report.total().today().cost(), 2.0), "today only the priced model ran");
        assert_eq!(report.total().period().cost(), None);
        let agent = report.agent(AgentId(1)).unwrap();
        assert_eq!(agent.totals().period().cost(), None);
        let compaction = agent.causes().iter().find(|c| c.cause() == UsageCause::Compaction).unwrap();
        assert_eq!(compaction.totals().period().cost(), None);
        let owner = agent.causes().iter().find(|c| c.cause() == UsageCause::OwnerTurn).unwrap();
        assert!(close(owner.totals().period().cost(), 2.0), "a line of priced calls keeps its cost");

        let catalog = UsageReport::new(&rows, day("2026-11-25"), 2);
        assert_eq!(catalog.total().today().cost(), None, "the catalog has no prices yet");
    }

    #[test]
    fn one_day_is_today_only_and_nothing_used_costs_nothing() {
        let rows = [
            row(1, "2026-11-25", 10, UsageCause::OwnerTurn, "priced").with_tokens(1, 1, 1, false),
            row(1, "2026-11-24", 10, UsageCause::OwnerTurn, "priced").with_tokens(1, 1, 1, false),
        ];
        assert_eq!(first_day(day("2026-11-25"), 7), day("2026-11-19"));
        assert_eq!(first_day(day("2026-03-01"), 2), day("2026-02-28"));
        assert_eq!(first_day(NaiveDate::MIN, 3), NaiveDate::MIN, "never before the first date");
        for days in [0, 1] {
            let report = UsageReport::with_prices(&rows, day("2026-11-25"), days, prices);
            assert_eq!((report.days(), report.from()), (1, day("2026-11-25")), "days {days}");
            assert_eq!(report.total().period(), report.total().today());
            assert_eq!(report.total().period().calls(), 1);
        }
        let empty = UsageReport::with_prices(&[], day("2026-11-25"), 7, prices);
        assert!(empty.is_empty() && empty.users().is_empty());
        assert_eq!(empty.total().period().cost(), Some(0.0));
        let saturated = [
            row(1, "2026-11-25", 10, UsageCause::OwnerTurn, "priced").with_tokens(u64::MAX, 0, u64::MAX, false),
            row(1, "2026-11-25", 10, UsageCause::OwnerTurn, "priced").with_tokens(1, 0, 1, false),
        ];
        let report = UsageReport::with_prices(&saturated, day("2026-11-25"), 1, prices);
        assert_eq!((report.total().today().prompt_tokens(), report.total().today().calls()), (u64::MAX, u64::MAX));
    }

    #[test]
    fn serialises_for_scripts() {
        let rows = [row(3, "2026-11-25", 10, UsageCause::VisitorTurn, "priced").with_tokens(1_000_000, 0, 2, true)];
        let report = UsageReport::with_prices(&rows, day("2026-11-25"), 7, prices);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["today"], "2026-11-25");
        assert_eq!(json["from"], "2026-11-19");
        assert_eq!(json["total"]["period"]["prompt_tokens"], 1_000_000);
        assert_eq!(json["total"]["today"]["cost"], 2.0);
        let agent = &json["agents"][0];
        assert_eq!(agent["agent_id"], 3);
        assert_eq!(agent["today"]["estimated"], true);
        assert_eq!(agent["causes"][0]["cause"], "visitor_turn");
        assert_eq!(agent["causes"][0]["period"]["calls"], 2);
        assert_eq!(json["users"][0]["user_id"], 10);
        let unpriced = UsageReport::with_prices(&rows, day("2026-11-25"), 7, |_| None);
        assert_eq!(serde_json::to_value(&unpriced).unwrap()["total"]["today"]["cost"], serde_json::Value::Null);
    }
}
