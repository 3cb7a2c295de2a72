//! Formatting every feature shares.

use chrono::{DateTime, Utc};

use crate::domain::{Agent, AgentId, AgentStatus};
use crate::platform::action::Action;
use crate::platform::messenger::{Button, Text};
use crate::platform::render::escape_html;

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
