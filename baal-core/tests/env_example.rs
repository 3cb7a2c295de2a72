//! `.env.example` lists every setting `config.rs` reads, and copying it to `.env` as it is gives
//! valid settings.

use std::collections::BTreeSet;

const CONFIG_SOURCE: &str = include_str!("../src/config.rs");
const ENV_EXAMPLE: &str = include_str!("../../.env.example");

/// Quoted upper-case names with an underscore in config.rs: the variables it reads (and its tests
/// mention), e.g. `"FREE_TIER_DAILY_MESSAGES"`.
fn variables_in_config() -> BTreeSet<&'static str> {
    CONFIG_SOURCE
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains('_') && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
        .collect()
}

/// Names set or shown (commented) in .env.example.
fn variables_in_example() -> BTreeSet<&'static str> {
    ENV_EXAMPLE
        .lines()
        .map(|line| line.trim_start_matches('#').trim())
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect()
}

#[test]
fn every_setting_is_documented() {
    let config = variables_in_config();
    assert!(config.contains("DATABASE_URL") && config.len() > 20, "the scan found {config:?}");
    let example = variables_in_example();
    let missing: Vec<_> = config.difference(&example).collect();
    assert!(missing.is_empty(), "add these to .env.example with a comment: {missing:?}");
}

#[test]
fn the_example_as_is_gives_valid_settings() {
    let vars = ENV_EXAMPLE
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()));
    baal_core::config::Settings::from_vars(vars).expect(".env.example parses");
}
