//! `baal-cli usage`: tokens and estimated cost per agent and cause, today and over the last days,
//! grouped by the same `metering::UsageReport` the bot's views use, so both show one truth.

use std::collections::BTreeMap;
use std::process::ExitCode;

use baal_core::config::Settings;
use baal_core::domain::{AgentId, usage_day};
use baal_core::metering::{self, Tally, UsageReport};
use baal_core::store::{AgentFilter, Store, UsageQuery};
use chrono::Utc;
use clap::Args;

use crate::{open_store, print_table};

/// The longest period `--days` takes: a year, leap day included.
const MAX_DAYS: u32 = 366;

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this agent (its id, as `agents list` shows it).
    #[arg(long, value_parser = parse_agent_id)]
    agent: Option<AgentId>,
    /// How many days to sum, today (UTC) included: 1 to 366.
    #[arg(long, default_value_t = 7, value_parser = parse_days)]
    days: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_days(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(days) if (1..=MAX_DAYS).contains(&days) => Ok(days),
        _ => Err(format!("give a number of days from 1 to {MAX_DAYS} (today included)")),
    }
}

fn parse_agent_id(raw: &str) -> Result<AgentId, String> {
    raw.parse::<AgentId>().map_err(|_| "not an agent id: pass the number shown by `agents list`".to_owned())
}

pub async fn run(settings: &Settings, args: UsageArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(settings).await?;
    let (today, _) = usage_day(Utc::now());
    let mut query = UsageQuery::days(metering::first_day(today, args.days), today);
    let names: BTreeMap<AgentId, String> = match args.agent {
        Some(id) => {
            let Some(agent) = store.agent_get(id).await? else {
                eprintln!("No agent with id {id}. See `baal-cli agents list`.");
                return Ok(ExitCode::FAILURE);
            };
            query = query.agent(id);
            BTreeMap::from([(id, display_name(&agent.name, agent.deleted))])
        }
        // Deleted agents too: their usage stays, and the operator paid for it.
        None => store
            .list_agents(&AgentFilter::all().include_deleted())
            .await?
            .into_iter()
            .map(|agent| (agent.id, display_name(&agent.name, agent.deleted)))
            .collect(),
    };
    let report = UsageReport::new(&store.usage_rows(&query).await?, today, args.days);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&with_names(&report, &names)?)?);
    } else if report.is_empty() {
        println!("No usage from {} to {} (UTC).", report.from(), report.today());
    } else {
        println!(
            "Usage from {} to {} (UTC). ~ marks estimated figures; cost in LibertAI credits.",
            report.from(),
            report.today()
        );
        let period = format!("LAST {} DAYS", report.days());
        print_table(&["AGENT", "CAUSE", "TODAY", &period, "IN", "OUT", "CALLS", "COST"], &table_rows(&report, &names));
    }
    Ok(ExitCode::SUCCESS)
}

fn display_name(name: &str, deleted: bool) -> String {
    if deleted { format!("{name} (deleted)") } else { name.to_owned() }
}

/// The report as JSON, each agent with its name beside its id.
fn with_names(report: &UsageReport, names: &BTreeMap<AgentId, String>) -> anyhow::Result<serde_json::Value> {
    let mut json = serde_json::to_value(report)?;
    if let Some(agents) = json.get_mut("agents").and_then(serde_json::Value::as_array_mut) {
        for (agent, entry) in report.agents().iter().zip(agents) {
            if let Some(entry) = entry.as_object_mut() {
                entry.insert("name".into(), names.get(&agent.agent_id()).map(String::as_str).into());
            }
        }
    }
    Ok(json)
}

/// One row per agent and cause, one per agent for all its causes when it has several, and a total.
fn table_rows(report: &UsageReport, names: &BTreeMap<AgentId, String>) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for agent in report.agents() {
        let label = format!("{} {}", agent.agent_id(), names.get(&agent.agent_id()).map_or("-", String::as_str));
        for cause in agent.causes() {
            rows.push(row(&label, cause.cause().as_str(), cause.totals().today(), cause.totals().period()));
        }
        if agent.causes().len() > 1 {
            rows.push(row(&label, "all", agent.totals().today(), agent.totals().period()));
        }
    }
    if report.agents().len() > 1 {
        rows.push(row("TOTAL", "all", report.total().today(), report.total().period()));
    }
    rows
}

fn row(agent: &str, cause: &str, today: &Tally, period: &Tally) -> Vec<String> {
    vec![
        agent.to_owned(),
        cause.to_owned(),
        tokens(today.total_tokens(), today.estimated()),
        tokens(period.total_tokens(), period.estimated()),
        tokens(period.prompt_tokens(), period.estimated()),
        tokens(period.completion_tokens(), period.estimated()),
        period.calls().to_string(),
        period.cost().map_or_else(|| "price unknown".to_owned(), |cost| format!("{cost:.4}")),
    ]
}

fn tokens(count: u64, estimated: bool) -> String {
    if estimated { format!("~{count}") } else { count.to_string() }
}

#[cfg(test)]
mod tests {
    use baal_core::domain::{AgentUsage, Payer, Price};
    use baal_core::wire::UsageCause;
    use clap::Parser as _;

    use super::*;

    #[test]
    fn rows_show_today_the_period_estimates_and_costs() {
        let today = "2026-11-25".parse().unwrap();
        let earlier = "2026-11-23".parse().unwrap();
        let usage = |agent: i64, day, cause, model: &str| {
            AgentUsage::new(AgentId(agent), day, 9, cause, model, Payer::Operator)
        };
        let rows = [
            usage(1, today, UsageCause::OwnerTurn, "priced").with_tokens(1_000, 500, 2, false),
            usage(1, earlier, UsageCause::Heartbeat, "priced").with_tokens(2_000, 0, 1, true),
            usage(2, today, UsageCause::OwnerTurn, "mystery").with_tokens(10, 10, 1, false),
        ];
        let price = |model: &str| (model == "priced").then_some(Price::new(1.0, 4.0));
        let report = UsageReport::with_prices(&rows, today, 7, price);
        let names = BTreeMap::from([(AgentId(1), "Helper".to_owned())]);
        let table = table_rows(&report, &names);
        let expect = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            table,
            [
                expect(&["1 Helper", "heartbeat", "0", "~2000", "~2000", "~0", "1", "0.0020"]),
                expect(&["1 Helper", "owner_turn", "1500", "1500", "1000", "500", "2", "0.0030"]),
                expect(&["1 Helper", "all", "1500", "~3500", "~3000", "~500", "3", "0.0050"]),
                expect(&["2 -", "owner_turn", "20", "20", "10", "10", "1", "price unknown"]),
                expect(&["TOTAL", "all", "1520", "~3520", "~3010", "~510", "4", "price unknown"]),
            ]
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(flatten)]
        args: UsageArgs,
    }

    #[test]
    fn arguments_are_checked_before_anything_is_opened() {
        let parsed = Probe::try_parse_from(["usage"]).unwrap().args;
        assert_eq!((parsed.agent, parsed.days, parsed.json), (None, 7, false));
        let parsed = Probe::try_parse_from(["usage", "--agent", "#12", "--days", "366", "--json"]).unwrap().args;
        assert_eq!((parsed.agent, parsed.days, parsed.json), (Some(AgentId(12)), 366, true));
        for bad in [["--days", "0"], ["--days", "367"], ["--days", "week"], ["--agent", "twelve"]] {
            let err = Probe::try_parse_from(["usage", bad[0], bad[1]]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
    }
}
