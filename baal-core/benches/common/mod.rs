//! What the benchmarks that run real agents share.

use std::path::PathBuf;

use baal_core::deploy::local::find_agent_binary;

/// The `baal-agent` to run: `BAAL_AGENT_BIN`, else next to this binary or on `PATH`, else the
/// workspace's `target/release` or `target/debug` (a bench binary lives in `target/release/deps`,
/// where `find_agent_binary` does not look).
pub fn agent_bin() -> Option<PathBuf> {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    if let Ok(found) = find_agent_binary(explicit.as_deref()) {
        return Some(found);
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"].iter().map(|profile| target.join(profile).join("baal-agent")).find(|p| p.is_file())
}
