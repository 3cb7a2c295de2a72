//! Formatting every feature shares.

use chrono::{DateTime, Utc};

use super::settings_views;
use crate::domain::{Agent, AgentId, AgentStatus};
use crate::metering::{Tally, UsageReport};
use crate::platform::action::Action;
use crate::platform::messenger::{Button, Text};
use crate::platform::render::escape_html;
use crate::proxy::UsageCause;

pub(crate) fn html(body: impl Into<String>) -> Text {
    Text::html(body)
}

pub(crate) fn e(text: &str) -> String {
    escape_html(text)
}

pub(crate) fn status_emoji(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Running => "🟢",
        AgentStatus::Deploying => "🟡",
        AgentStatus::Pending => "⏳",
        AgentStatus::Failed => "🔴",
        AgentStatus::Stopped => "⚫",
        AgentStatus::Down => "🟠",
    }
}

/// A status as users read it: its stored word, and for `down` what is being done about it.
pub(crate) fn status_word(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Down => "down — Baal is repairing it",
        other => other.as_str(),
    }
}

/// "3 days ago", "2 hours ago", "5 minutes ago".
pub(crate) fn age(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds().max(0);
    let (n, unit) = if seconds >= 86_400 {
        (seconds / 86_400, "day")
    } else if seconds >= 3600 {
        (seconds / 3600, "hour")
    } else {
        (seconds / 60, "minute")
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// "5h 12m" until `at`.
pub(crate) fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (at - now).num_minutes().max(0);
    format!("{}h {}m", minutes / 60, minutes % 60)
}

pub(crate) fn with_rows(mut text: Text, rows: Vec<Vec<Button>>) -> Text {
    text.buttons.extend(rows);
    text
}

/// A deployer's usual duration as users are told it: rough on purpose, since it is a typical
/// figure, not a promise.
pub(crate) fn usually_takes(usual: std::time::Duration) -> String {
    match usual.as_secs() {
        0..=10 => "a few seconds".to_owned(),
        11..=59 => "less than a minute".to_owned(),
        60..=150 => "a minute or two".to_owned(),
        secs => format!("about {} minutes", secs.div_ceil(60)),
    }
}

pub(crate) fn where_agents_run(deployer: &str) -> &'static str {
    match deployer {
        "aleph" => "its own Aleph Cloud VM",
        "local" => "this machine",
        _ => "its own machine",
    }
}

pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A question with one button per agent, each performing `action` on its agent.
pub(crate) fn agent_picker<'a>(
    question: &str,
    agents: impl IntoIterator<Item = &'a Agent>,
    action: impl Fn(AgentId) -> Action,
) -> Text {
    agents.into_iter().fold(Text::plain(question), |text, agent| {
        text.row(vec![Button::action(format!("{} (#{})", agent.name, agent.id), action(agent.id))])
    })
}

/// The name of agent `id` among `agents`, or "#id" for one not there (deleted, or another's).
pub(crate) fn name_in(agents: &[Agent], id: AgentId) -> String {
    agents.iter().find(|a| a.id == id).map_or_else(|| format!("#{id}"), |a| format!("{} #{id}", a.name))
}

/// What a cause of model calls is called in views.
pub(crate) fn cause_label(cause: UsageCause) -> &'static str {
    match cause {
        UsageCause::OwnerTurn => "owner",
        UsageCause::VisitorTurn => "visitors",
        UsageCause::Heartbeat => "heartbeat",
        UsageCause::Subagent => "subagents",
        UsageCause::Compaction => "compaction",
        _ => "other",
    }
}

/// "12.3k" tokens, with "~" when any figure behind it is an estimate.
pub(crate) fn tally_tokens(tally: &Tally) -> String {
    let tilde = if tally.estimated() { "~" } else { "" };
    format!("{tilde}{}", settings_views::tokens(tally.total_tokens()))
}

/// "≈0.42 credits", or "price unknown" when a model behind it has none in the catalog.
pub(crate) fn cost(tally: &Tally) -> String {
    match tally.cost() {
        Some(credits) => format!("≈{credits:.2} credits"),
        None => "price unknown".to_owned(),
    }
}

/// Tokens per agent and cause, today and over the report's days, with the period's cost:
/// `name_of` names an agent (its name, or "#id" for one that is gone).
pub(crate) fn usage_section(report: &UsageReport, name_of: impl Fn(AgentId) -> String) -> String {
    let mut body = format!("<b>Tokens</b> (today · last {} days)", report.days());
    if report.is_empty() {
        body.push_str(&format!("\nNone in the last {} days.", report.days()));
        return body;
    }
    for agent in report.agents() {
        let totals = agent.totals();
        body.push_str(&format!(
            "\n<b>{}</b>: {} · {} · {}",
            e(&name_of(agent.agent_id())),
            tally_tokens(totals.today()),
            tally_tokens(totals.period()),
            cost(totals.period())
        ));
        let causes: Vec<String> = agent
            .causes()
            .iter()
            .map(|c| {
                let t = c.totals();
                format!("{} {} · {}", cause_label(c.cause()), tally_tokens(t.today()), tally_tokens(t.period()))
            })
            .collect();
        body.push_str(&format!("\n   {}", causes.join("; ")));
    }
    if report.agents().len() > 1 {
        let total = report.total();
        body.push_str(&format!(
            "\nAll: {} · {} · {}",
            tally_tokens(total.today()),
            tally_tokens(total.period()),
            cost(total.period())
        ));
    }
    body
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::usually_takes;

    #[test]
    fn usual_durations_read_as_people_say_them() {
        for (secs, said) in [
            (0, "a few seconds"),
            (10, "a few seconds"),
            (11, "less than a minute"),
            (60, "a minute or two"),
            (150, "a minute or two"),
            (151, "about 3 minutes"),
        ] {
            assert_eq!(usually_takes(Duration::from_secs(secs)), said, "{secs} s");
        }
    }

    #[cfg(feature = "local")]
    #[test]
    fn the_local_deployer_says_a_few_seconds() {
        use crate::deploy::Deployer as _;
        let dir = tempfile::tempdir().unwrap();
        let local = crate::deploy::local::LocalDeployer::new(dir.path(), "baal-agent").unwrap();
        assert_eq!(usually_takes(local.usual_deploy_duration().unwrap()), "a few seconds");
    }
}
