//! The real `baal-telegram` binary's exit codes, in an empty directory with a cleared
//! environment: 2 for a bad setting (systemd's `RestartPreventExitStatus=2` then stops restarting
//! it), 1 for a failure at run time.

use std::process::{Command, Output, Stdio};

fn bot(dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baal-telegram"))
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run baal-telegram")
}

const TELEGRAM: [(&str, &str); 3] =
    [("TELEGRAM_BOT_TOKEN", "123:not-a-real-token"), ("TELEGRAM_API_ID", "12345"), ("TELEGRAM_API_HASH", "0123abcd")];
/// 32 bytes in hex; seals nothing real.
const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

#[test]
fn bad_settings_exit_2_and_runtime_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = bot(dir.path(), &[]);
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{said}");
    assert!(said.contains("TELEGRAM_BOT_TOKEN"), "{said}");

    let mut bad_format = TELEGRAM.to_vec();
    bad_format.push(("LOG_FORMAT", "yaml"));
    let output = bot(dir.path(), &bad_format);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("LOG_FORMAT"), "{said}");

    let mut bad_key = TELEGRAM.to_vec();
    bad_key.push(("BOT_ENCRYPTION_KEY", "too-short"));
    let output = bot(dir.path(), &bad_key);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("BOT_ENCRYPTION_KEY"), "{said}");

    // Everything set, the database down: a runtime failure, worth a restart.
    let mut no_database = TELEGRAM.to_vec();
    no_database.extend([("BOT_ENCRYPTION_KEY", KEY), ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/baal")]);
    let output = bot(dir.path(), &no_database);
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(!said.contains('\u{1b}'), "no colour off a terminal: {said:?}");
}
