//! Settings as environment variables, for the bot (`config`) and the agent (`agent::settings`)
//! alike: one reader, [`Vars`], with one error type, [`SettingError`], that names the variable at
//! fault and says what to do; and the two settings-file formats the deployers write and
//! `baal-agent --config` reads: a JSON object, and `KEY="value"` lines exactly as systemd's
//! `EnvironmentFile=` reads them.
//!
//! Written by hand rather than with figment or envy: the rules are per variable (lists, several
//! spellings of a flag, defaults that depend on other settings), and a generic deserialiser's
//! errors name a field path instead of the variable an operator must fix.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// A setting is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}. {fix}")]
#[non_exhaustive]
pub struct SettingError {
    /// The variable at fault (or the settings file).
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl SettingError {
    /// `variable` is wrong in the way `problem` says; `fix` says what to do.
    pub fn new(variable: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        SettingError { variable: variable.into(), problem: problem.into(), fix: fix.into() }
    }

    /// `variable` is required and not set; `fix` says where to get a value.
    pub fn missing(variable: impl Into<String>, fix: impl Into<String>) -> Self {
        SettingError::new(variable, "not set", fix)
    }
}

/// Variables by name, each value trimmed; empty values count as unset.
#[derive(Clone, Default)]
pub struct Vars(HashMap<String, String>);

impl std::fmt::Debug for Vars {
    // Values may be secrets: only the names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Vars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(vars: I) -> Self {
        Vars(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into().trim().to_owned()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )
    }
}

impl Vars {
    /// The value of `name`, if set.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// The value of `name` as a secret, if set.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        self.0.get(name).map(|v| SecretString::from(v.clone()))
    }

    /// The value of `name` as a secret; `fix` says where to get one when it is not set.
    pub fn required_secret(&self, name: &str, fix: &str) -> Result<SecretString, SettingError> {
        self.secret(name).ok_or_else(|| SettingError::missing(name, fix))
    }

    /// `name` parsed as a `T`; `expected` describes a valid value ("a whole number of MiB").
    pub fn number<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, SettingError> {
        self.0
            .get(name)
            .map(|raw| {
                raw.parse::<T>().map_err(|_| {
                    SettingError::new(name, format!("{raw:?} is not {expected}"), format!("set {name} to {expected}"))
                })
            })
            .transpose()
    }

    /// `name` as whole seconds, `default` when unset.
    pub fn seconds(&self, name: &str, default: Duration) -> Result<Duration, SettingError> {
        Ok(self.number(name, "a whole number of seconds")?.map_or(default, Duration::from_secs))
    }

    /// `name` as a flag: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, in any case.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, SettingError> {
        self.0
            .get(name)
            .map(|raw| match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                other => Err(SettingError::new(
                    name,
                    format!("{other:?} is not true or false"),
                    format!("set {name} to true or false"),
                )),
            })
            .transpose()
    }

    /// `name` as a comma-separated list (empty items dropped), if set.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.0.get(name).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    /// `name` as an `http(s)` URL without a trailing slash, `default` when unset.
    pub fn url(&self, name: &str, default: &str) -> Result<String, SettingError> {
        let url = self.0.get(name).map_or(default, String::as_str);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingError::new(
                name,
                format!("{url:?} is not an http(s) URL"),
                format!("set {name} to a URL such as {default}"),
            ));
        }
        Ok(url.trim_end_matches('/').to_owned())
    }
}

/// Reads a settings file: a JSON object (`{"KEY": "value", …}`, numbers and booleans allowed) or
/// `KEY=value` lines as systemd's `EnvironmentFile=` reads them (see [`parse`]).
pub fn read_file(path: &Path) -> Result<HashMap<String, String>, SettingError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingError::new(&shown, format!("cannot be read ({e})"), "check the path given to --config"))?;
    parse(&text).map_err(|problem| SettingError::new(&shown, problem, "fix the settings file"))
}

/// Parses a settings file's text. A JSON object when it starts with `{`; otherwise `KEY=value`
/// lines (`#` comments, an optional `export `), where a value may be single-quoted (verbatim) or
/// double-quoted, in which `\` before `"`, `\`, `$` or `` ` `` stands for that character, a `\`
/// before a line break joins the lines, any other `\` is kept, and quoted values may span lines:
/// systemd's rules, so a file [`environment_file`] wrote reads back the same here and on a VM.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    if text.trim_start().starts_with('{') {
        return parse_json(text);
    }
    let mut out = HashMap::new();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut pos = 0;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            pos = line_end + 1;
            continue;
        }
        let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let eq = assignment.find('=').ok_or_else(|| format!("line {} is not KEY=value", line_of(pos)))?;
        let key = assignment[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {} has an invalid name `{key}`", line_of(pos)));
        }
        // A quoted value may run over several lines, so it is read from the text, not the line.
        let value_at = pos + (line.len() - assignment.len()) + eq + 1;
        let (value, taken) =
            parse_value(&text[value_at..]).map_err(|problem| format!("line {}: {problem}", line_of(pos)))?;
        out.insert(key.to_owned(), value);
        pos = value_at + taken + 1;
    }
    Ok(out)
}

/// One value from the start of `input`; returns it and how many bytes it took (up to, not
/// including, the line break that ends it).
fn parse_value(input: &str) -> Result<(String, usize), String> {
    let input_trimmed = input.trim_start_matches([' ', '\t']);
    let lead = input.len() - input_trimmed.len();
    let mut chars = input_trimmed.char_indices();
    match chars.next() {
        Some((_, '\'')) => {
            let end = input_trimmed[1..].find('\'').ok_or("unterminated single quote")? + 1;
            Ok((input_trimmed[1..end].to_owned(), lead + end + 1 + trailing(&input_trimmed[end + 1..])?))
        }
        Some((_, '"')) => {
            let mut value = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                match (escaped, c) {
                    (true, '"' | '\\' | '$' | '`') => value.push(c),
                    (true, '\n') => {}
                    (true, other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    (false, '\\') => {
                        escaped = true;
                        continue;
                    }
                    (false, '"') => return Ok((value, lead + i + 1 + trailing(&input_trimmed[i + 1..])?)),
                    (false, other) => value.push(other),
                }
                escaped = false;
            }
            Err("unterminated double quote".into())
        }
        _ => {
            let end = input.find('\n').unwrap_or(input.len());
            Ok((input[..end].trim().to_owned(), end))
        }
    }
}

/// Bytes after a closing quote up to the line break: only blanks (or a comment) may follow.
fn trailing(after_quote: &str) -> Result<usize, String> {
    let end = after_quote.find('\n').unwrap_or(after_quote.len());
    let rest = after_quote[..end].trim();
    if rest.is_empty() || rest.starts_with('#') { Ok(end) } else { Err(format!("unexpected `{rest}` after a quote")) }
}

fn parse_json(text: &str) -> Result<HashMap<String, String>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("is not a JSON object of settings ({e})"))?;
    object
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            serde_json::Value::Null => Ok((k, String::new())),
            _ => Err(format!("{k} must be a string, a number or a boolean")),
        })
        .collect()
}

/// `entries` as a JSON object: carries any value (quotes, `$`, line breaks) without an escaping
/// scheme of our own.
pub fn json<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let object: serde_json::Map<String, serde_json::Value> =
        entries.into_iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned()))).collect();
    serde_json::Value::Object(object).to_string()
}

/// `entries` as `KEY="value"` lines for systemd's `EnvironmentFile=`, under a `#` header line.
pub fn environment_file<'a>(header: &str, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = format!("# {header}\n");
    for (key, value) in entries {
        out.push_str(key);
        out.push('=');
        out.push_str(&environment_file_value(value));
        out.push('\n');
    }
    out
}

/// One value for `EnvironmentFile=`, double-quoted. Inside double quotes systemd treats only `\`,
/// `"`, `$` and `` ` `` specially (and a backslash before a line break as a continuation), so
/// escaping those four makes every other byte literal, line breaks included. A POSIX shell reading
/// the same text gets the same value, with no expansion or command substitution.
pub fn environment_file_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' | '`' => {
                out.push('\\');
                out.push(c);
            }
            // NUL cannot live in an environment variable; drop it rather than cut the value.
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn errors_name_the_variable_and_the_fix() {
        let v = vars(&[("N", " twelve "), ("B", "maybe"), ("U", "ftp://x"), ("E", "  ")]);
        let err = v.number::<u32>("N", "a whole number").unwrap_err();
        assert_eq!(err.to_string(), "N: \"twelve\" is not a whole number. set N to a whole number");
        assert_eq!(v.flag("B").unwrap_err().variable, "B");
        assert_eq!(v.url("U", "https://a").unwrap_err().variable, "U");
        assert_eq!(v.required_secret("E", "set it").unwrap_err().to_string(), "E: not set. set it");
        assert!(!format!("{v:?}").contains("twelve"));
    }

    #[test]
    fn values_are_read() {
        let v = vars(&[("L", " a, ,b "), ("F", "Yes"), ("U", "http://h/v1/"), ("S", "7")]);
        assert_eq!(v.list("L").unwrap(), ["a", "b"]);
        assert_eq!(v.flag("F").unwrap(), Some(true));
        assert_eq!(v.url("U", "https://d").unwrap(), "http://h/v1");
        assert_eq!(v.url("missing", "https://d/").unwrap(), "https://d");
        assert_eq!(v.seconds("S", Duration::ZERO).unwrap(), Duration::from_secs(7));
        assert_eq!(v.seconds("missing", Duration::from_secs(3)).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn settings_files_in_both_formats() {
        let env = parse(
            "# c\nAGENT_NAME=\"Bob \\\"the\\\" bot\"\nSYSTEM_PROMPT=\"line1\nline2 \\n \\$HOME\"\n\nexport PORT=0\n\
             X='a\\b'\nJOINED=\"a\\\nb\"\nLAST=z",
        )
        .unwrap();
        assert_eq!(env["AGENT_NAME"], "Bob \"the\" bot");
        assert_eq!(env["SYSTEM_PROMPT"], "line1\nline2 \\n $HOME", "systemd keeps unknown escapes");
        assert_eq!(env["PORT"], "0");
        assert_eq!(env["X"], "a\\b");
        assert_eq!(env["JOINED"], "ab");
        assert_eq!(env["LAST"], "z");
        let env = parse(r#"{"AGENT_NAME":"J","PORT":0,"X":true}"#).unwrap();
        assert_eq!(env["PORT"], "0");
        assert!(parse("A=1\nNOEQUALS").unwrap_err().contains("line 2"));
        assert!(parse("A=\"open").is_err());
        assert!(parse("A=\"x\" y").is_err());
        assert!(parse("A=\"two\nlines\"\nB=1\nbad").unwrap_err().contains("line 4"));
    }

    #[test]
    fn written_files_read_back_the_same() {
        let nasty = "a\"b'c $(touch x) `id` ${HOME} \\ \\n\nline two\r\n\tend\\";
        let entries = [("NAME", nasty), ("EMPTY", ""), ("PLAIN", "x=y # not a comment")];
        for text in [environment_file("header", entries), json(entries)] {
            let back = parse(&text).unwrap();
            for (key, value) in entries {
                assert_eq!(back[key], value, "{key} in {text}");
            }
        }
    }
}
