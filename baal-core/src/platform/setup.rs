//! What the platform makes of the settings when it starts, told before it starts: where the key
//! that seals secrets comes from, and whether the operator pays for a free tier.
//! [`super::Platform::from_settings`] acts on these functions and `baal-cli doctor` prints
//! [`settings_report`], so the two cannot disagree.

use std::path::{Path, PathBuf};

use super::{Plan, PlatformConfig, PlatformError};
use crate::config::{Finding, Settings};
use crate::secrets::SecretBox;

/// The file under `BAAL_DATA_DIR` that holds the sealing key when `BOT_ENCRYPTION_KEY` is unset.
pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";

fn key_file(settings: &Settings) -> PathBuf {
    settings.data_dir.join(ENCRYPTION_KEY_FILE)
}

/// Where an existing sealing key was found.
enum KeySource {
    Variable,
    File,
}

/// The sealing key the settings already give, without creating one: `None` when the platform
/// will generate one into [`key_file`].
fn existing_key(settings: &Settings) -> Result<Option<(SecretBox, KeySource)>, PlatformError> {
    if let Some(key) = &settings.bot_encryption_key {
        return Ok(Some((SecretBox::from_secret(key)?, KeySource::Variable)));
    }
    let path = key_file(settings);
    match std::fs::read_to_string(&path) {
        Ok(encoded) => match SecretBox::from_encoded_key(encoded.trim()) {
            Ok(sealer) => Ok(Some((sealer, KeySource::File))),
            Err(_) => Err(PlatformError::Setup(format!(
                "the key in {} is not 32 bytes of base64 or hex. Restore the file, or set BOT_ENCRYPTION_KEY \
                 to the key that sealed the stored secrets",
                path.display()
            ))),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(PlatformError::Setup(format!(
            "cannot read the encryption key {}: {err}. Fix its permissions or set BOT_ENCRYPTION_KEY",
            path.display()
        ))),
    }
}

/// The key that seals secrets: `BOT_ENCRYPTION_KEY`, else `<BAAL_DATA_DIR>/encryption.key`,
/// generated (mode 0600) on first run so a fresh machine works without setup.
pub fn secret_box_from_settings(settings: &Settings) -> Result<SecretBox, PlatformError> {
    if let Some((sealer, _)) = existing_key(settings)? {
        return Ok(sealer);
    }
    let path = key_file(settings);
    let key = crate::secrets::generate_key()?;
    write_new_key(&settings.data_dir, &path, secrecy::ExposeSecret::expose_secret(&key)).map_err(|err| {
        PlatformError::Setup(format!(
            "cannot write a new encryption key to {}: {err}. Set BOT_ENCRYPTION_KEY or BAAL_DATA_DIR",
            path.display()
        ))
    })?;
    tracing::info!(
        path = %path.display(),
        "no BOT_ENCRYPTION_KEY: generated one into this file; keep it, stored keys cannot be opened without it"
    );
    Ok(SecretBox::from_secret(&key)?)
}

/// Writes a key only the owner may read, never over an existing file (a second process racing
/// this one must not replace the key the first already sealed with).
fn write_new_key(dir: &Path, path: &Path, encoded: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(encoded.as_bytes())?;
    file.write_all(b"\n")
}

/// What the platform will do with the core settings (the sealing key, `LIBERTAI_API_KEY`), one
/// finding each. Only looks: no key is generated. A [`Finding`] with
/// [`Severity::Problem`](crate::config::Severity::Problem) is one the platform refuses to start
/// with.
pub fn settings_report(settings: &Settings) -> Vec<Finding> {
    vec![sealing_key_finding(settings), libertai_finding(settings)]
}

fn sealing_key_finding(settings: &Settings) -> Finding {
    const VARIABLE: &str = "BOT_ENCRYPTION_KEY";
    let path = key_file(settings);
    match existing_key(settings) {
        Ok(Some((_, KeySource::Variable))) => Finding::ok(VARIABLE, "BOT_ENCRYPTION_KEY is a valid 32-byte key"),
        Ok(Some((_, KeySource::File))) => Finding::note(
            VARIABLE,
            format!("BOT_ENCRYPTION_KEY: not set; the key in {} is used (keep that file)", path.display()),
        ),
        Ok(None) => Finding::note(
            VARIABLE,
            format!(
                "BOT_ENCRYPTION_KEY: not set; a key will be generated into {} at the first start (keep that file)",
                path.display()
            ),
        ),
        Err(err) => Finding::problem(VARIABLE, err.to_string()),
    }
}

fn libertai_finding(settings: &Settings) -> Finding {
    const VARIABLE: &str = "LIBERTAI_API_KEY";
    match Plan::decide(false, &PlatformConfig::from_settings(settings)) {
        Plan::FreeTier { daily_messages } => Finding::ok(
            VARIABLE,
            format!(
                "LIBERTAI_API_KEY is set: users without their own key get the free tier, {daily_messages} \
                 messages a day (FREE_TIER_DAILY_MESSAGES)"
            ),
        ),
        _ => Finding::note(
            VARIABLE,
            "LIBERTAI_API_KEY: not set; users must /login with their own key, nobody gets the free tier \
             (set it to the operator's LibertAI key to offer one)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    fn settings(dir: &Path, vars: &[(&str, &str)]) -> Settings {
        let data_dir = dir.to_str().unwrap().to_owned();
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_vars(vars.chain([("BAAL_DATA_DIR".to_owned(), data_dir)])).unwrap()
    }

    fn severities(report: &[Finding]) -> Vec<(&str, Severity)> {
        report.iter().map(|f| (f.variable, f.severity)).collect()
    }

    #[test]
    fn nothing_set_is_two_notes_and_the_platform_then_generates_the_key_it_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &[]);
        let report = settings_report(&s);
        assert_eq!(severities(&report), [("BOT_ENCRYPTION_KEY", Severity::Note), ("LIBERTAI_API_KEY", Severity::Note)]);
        let file = dir.path().join(ENCRYPTION_KEY_FILE);
        assert!(report[0].text.contains(&file.display().to_string()), "{}", report[0]);
        assert!(report[1].text.contains("/login") && report[1].text.contains("nobody gets the free tier"));
        assert!(!file.exists(), "the report only looks");

        secret_box_from_settings(&s).unwrap();
        let report = settings_report(&s);
        assert_eq!(report[0].severity, Severity::Note);
        assert!(report[0].text.contains("is used"), "{}", report[0]);
    }

    #[test]
    fn a_malformed_key_is_a_problem_that_says_what_to_do_and_stops_the_platform() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &[("BOT_ENCRYPTION_KEY", "too-short")]);
        let finding = &settings_report(&s)[0];
        assert_eq!(finding.severity, Severity::Problem);
        assert!(finding.text.contains("baal-cli keygen"), "{finding}");
        assert!(secret_box_from_settings(&s).is_err());

        let s = settings(dir.path(), &[]);
        std::fs::write(dir.path().join(ENCRYPTION_KEY_FILE), "garbage\n").unwrap();
        let finding = &settings_report(&s)[0];
        assert_eq!(finding.severity, Severity::Problem);
        assert!(finding.text.contains("Restore the file"), "{finding}");
        assert!(secret_box_from_settings(&s).is_err());
    }

    #[test]
    fn set_keys_are_ok() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::secrets::generate_key().unwrap();
        let key = secrecy::ExposeSecret::expose_secret(&key).to_owned();
        let s = settings(
            dir.path(),
            &[("BOT_ENCRYPTION_KEY", &key), ("LIBERTAI_API_KEY", "k"), ("FREE_TIER_DAILY_MESSAGES", "9")],
        );
        let report = settings_report(&s);
        assert_eq!(severities(&report), [("BOT_ENCRYPTION_KEY", Severity::Ok), ("LIBERTAI_API_KEY", Severity::Ok)]);
        assert!(report[1].text.contains("9 messages a day"));
        assert!(report.iter().all(|f| !f.text.contains(&key)), "no secret in a finding");
    }
}
