//! What every Baal binary does the same way for its operator: logs (`LOG_FORMAT`, colour only on
//! a terminal) and exit codes (0 ok, 1 runtime failure, 2 bad settings or usage).
//!
//! The binaries call `init_logs` (feature `logs`) once at start and [`exit_code`] on the error
//! that ended them, so a supervisor sees the same codes and the same log shapes from the bot, the
//! agent and the CLI.

use std::process::ExitCode;

use crate::env::SettingError;

/// The setting that chooses the log format.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines (the default); colour only when the output is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of every span the event happened in (the agent,
    /// user, turn or deployment), for journald, Loki and friends. Never coloured.
    Json,
}

impl LogFormat {
    /// Reads `LOG_FORMAT` (`text`, the default, or `json`) from `value`.
    pub fn parse(value: Option<&str>) -> Result<LogFormat, SettingError> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(SettingError::new(
                LOG_FORMAT,
                format!("`{other}` is not a log format"),
                "set LOG_FORMAT to text or json",
            )),
        }
    }

    /// `LOG_FORMAT` from the process environment.
    pub fn from_env() -> Result<LogFormat, SettingError> {
        LogFormat::parse(std::env::var(LOG_FORMAT).ok().as_deref())
    }
}

/// Where log lines go: always standard error, since standard output is for what a command prints
/// (the CLI's tables and JSON, the agent's `listening on` line).
#[cfg(feature = "logs")]
fn writer() -> std::io::Stderr {
    std::io::stderr()
}

/// Whether to colour text logs: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>), so journald, `agent.log` and the deploy errors built from it never
/// carry escape codes.
#[cfg(feature = "logs")]
pub fn colour_logs() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && writer().is_terminal()
}

/// Starts logging to standard error in `format`, filtered by `RUST_LOG` or else `default_filter`
/// (e.g. `"info"`). A second call does nothing (tests start binaries' code more than once).
#[cfg(feature = "logs")]
pub fn init_logs(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour_logs()).try_init(),
        // The current span's fields and every parent's, so a line names its agent, user and turn.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// The exit code for the error that ended a binary: 2 when a setting (or the usage) is wrong, so a
/// supervisor does not restart it in a loop (`RestartPreventExitStatus=2`), else 1.
pub fn exit_code(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    if is_settings_error(error) { ExitCode::from(2) } else { ExitCode::FAILURE }
}

/// Whether `error`, or anything it wraps, says a setting is missing or malformed.
pub fn is_settings_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<SettingError>() {
            return true;
        }
        #[cfg(feature = "platform")]
        if error.downcast_ref::<crate::platform::PlatformError>().is_some_and(|e| e.is_settings()) {
            return true;
        }
        current = error.source();
    }
    false
}

/// A short random id for a turn or a deployment, put on its log span so that its lines can be
/// followed (`LOG_FORMAT=json`: `"turn":"3f9a0c1e"`). Not a secret and not unique forever.
pub fn trace_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Removes terminal escape sequences (colour codes and the like) from `text`: what an agent's log
/// holds is shown to users in deploy errors, and an older agent may have written colour into it.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // ECMA-48: CSI (`ESC [`, parameters, a final byte 0x40..=0x7e), OSC (`ESC ]` … BEL or
        // `ESC \`), or `ESC`, intermediate bytes 0x20..=0x2f, a final byte (`ESC ( B`, `ESC 7`).
        // Hand-written: a dozen lines for log tails, where a terminal parser crate is a lot more.
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                while chars.next_if(|c| ('\u{20}'..='\u{2f}').contains(c)).is_some() {}
                chars.next();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_reads_text_and_json_and_names_the_setting_otherwise() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("json")).unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::parse(Some(" text ")).unwrap(), LogFormat::Text);
        let err = LogFormat::parse(Some("xml")).unwrap_err().to_string();
        assert!(err.contains("LOG_FORMAT") && err.contains("xml") && err.contains("text or json"), "{err}");
    }

    #[test]
    fn escapes_are_stripped_and_text_kept() {
        let coloured = "\u{1b}[2m2026-12-05T00:00:00Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m baal: port taken \u{1b}(B";
        assert_eq!(strip_escapes(coloured), "2026-12-05T00:00:00Z ERROR baal: port taken ");
        assert_eq!(strip_escapes("plain ünïcode"), "plain ünïcode");
        assert_eq!(strip_escapes("\u{1b}]0;title\u{7}a\u{1b}]8;;x\u{1b}\\b\u{1b}7c"), "abc");
    }

    #[test]
    fn settings_errors_exit_2_wherever_they_are_wrapped() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not start")]
        struct Wrapper(#[source] SettingError);
        let wrapped = Wrapper(SettingError::new("PORT", "not a number", "set a port"));
        assert!(is_settings_error(&wrapped));
        assert_eq!(exit_code(&wrapped), ExitCode::from(2));
        let other = std::io::Error::other("disk full");
        assert!(!is_settings_error(&other));
        assert_eq!(exit_code(&other), ExitCode::FAILURE);
    }
}
