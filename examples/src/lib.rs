//! Runnable examples of embedding `baal-core`; the programs live in `examples/examples/` (see
//! `examples/README.md`). This library holds only the set-up they share, so each example shows
//! just what it is about: a scratch directory, the scripted LLM standing in for LibertAI, and a
//! SQLite store and sealing key inside that directory.
//!
//! Nothing here reaches beyond 127.0.0.1 or writes outside its temporary directory.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use baal_core::platform::PlatformConfig;
use baal_core::secrets::{self, SecretBox};
use baal_core::store::{SqlStore, Store};
use baal_core::testing::openai::ScriptedLlm;
use secrecy::SecretString;

/// Everything a [`baal_core::platform::Platform`] needs except the parts an example chooses
/// itself (deployer, proxy, messenger). Dropping it stops the scripted LLM and removes the
/// directory.
pub struct Scratch {
    /// The scripted OpenAI-compatible server that plays LibertAI (`llm.base_url()`).
    pub llm: ScriptedLlm,
    /// A fresh SQLite store in the scratch directory.
    pub store: Arc<dyn Store>,
    /// A freshly generated sealing key; sealed values die with it.
    pub secrets: Arc<SecretBox>,
    /// Platform settings pointing agents at the scripted LLM, with an operator key so users need
    /// not `/login`.
    pub config: PlatformConfig,
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates the directory, the store, the key and the scripted LLM. Needs a tokio runtime.
    pub async fn new() -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("baal-example-").tempdir().context("cannot create a temp dir")?;
        let llm = ScriptedLlm::try_start().await.context("cannot start the scripted LLM on 127.0.0.1")?;
        let store = open_sqlite(dir.path()).await?;
        let secrets = Arc::new(SecretBox::from_secret(&secrets::generate_key()?)?);
        let config = PlatformConfig::default()
            // The key the agents spend when their owner has not logged in. The scripted LLM
            // accepts any key; in production this is `LIBERTAI_API_KEY`.
            .with_libertai_api_key(SecretString::from("example-operator-key"))
            .with_libertai_api_base_url(llm.base_url())
            // No need to pace edits of streamed answers when nobody watches a real chat.
            .with_edit_interval(std::time::Duration::ZERO);
        Ok(Scratch { llm, store, secrets, config, dir })
    }

    /// The scratch directory (agents' files go under it).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A [`SqlStore`] on `<dir>/baal.db`, migrated. This is the embedded default store.
pub async fn open_sqlite(dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("baal.db").display());
    Ok(Arc::new(SqlStore::open(&url).await?))
}

/// The `baal-agent` program the local deployer starts, looked for in this order:
///
/// 1. `BAAL_AGENT_BIN`, if set (an error if it is not a file);
/// 2. next to this example: its own directory, and, when that is Cargo's
///    `target/<profile>/examples/`, `target/<profile>/` (the build that made the example);
/// 3. the workspace's `target/release/` and `target/debug/` (`CARGO_TARGET_DIR` if set), the
///    newer build first when both exist, so an example built in one profile still finds an
///    agent built in the other (the README builds `baal-agent` with `--release`);
/// 4. `PATH`.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let explicit = std::env::var_os("BAAL_AGENT_BIN").map(PathBuf::from);
    let exe = std::env::current_exe().ok();
    // `CARGO_TARGET_DIR` as Cargo reads it (relative to where it runs, which for the examples is
    // the workspace root); otherwise the workspace's own `target/`.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    search_agent_binary(explicit.as_deref(), exe.as_deref(), &target_dir, &path)
}

const AGENT_BIN_NAME: &str = "baal-agent";

/// [`agent_binary`]'s search over explicit inputs, so tests can lay out a target directory.
fn search_agent_binary(
    explicit: Option<&Path>,
    exe: Option<&Path>,
    target_dir: &Path,
    path: &std::ffi::OsStr,
) -> anyhow::Result<PathBuf> {
    if let Some(explicit) = explicit {
        anyhow::ensure!(
            explicit.is_file(),
            "BAAL_AGENT_BIN is {}, which is not a file: point it at a built `baal-agent` \
             (cargo build --release -p baal-agent), or unset it to let the example look in target/",
            explicit.display()
        );
        return Ok(explicit.to_owned());
    }
    let exe_dir = exe.and_then(Path::parent);
    let beside_exe = exe_dir.into_iter().chain(
        // Cargo puts examples one directory below the binaries of the same build.
        exe_dir.filter(|dir| dir.file_name() == Some("examples".as_ref())).and_then(Path::parent),
    );
    let mut built: Vec<PathBuf> =
        ["release", "debug"].iter().map(|profile| target_dir.join(profile).join(AGENT_BIN_NAME)).collect();
    // Newest first; a build whose time cannot be read goes last. The sort is stable, so release
    // stays ahead of debug on a tie.
    built.sort_by_key(|candidate| std::cmp::Reverse(candidate.metadata().and_then(|m| m.modified()).ok()));
    let on_path = std::env::split_paths(path);
    beside_exe
        .map(|dir| dir.join(AGENT_BIN_NAME))
        .chain(built)
        .chain(on_path.map(|dir| dir.join(AGENT_BIN_NAME)))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "this example runs real agents and cannot find `baal-agent` (looked next to the example, in {} \
                 and {}, and on PATH): build it with `cargo build --release -p baal-agent`, or set BAAL_AGENT_BIN \
                 to a built one",
                target_dir.join("release").display(),
                target_dir.join("debug").display(),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::time::{Duration, SystemTime};

    use super::*;

    /// `root/target/<profile>/baal-agent` for each of `agents` (made `age` old), and the path of an
    /// example binary `root/target/debug/examples/x`.
    fn layout(root: &Path, agents: &[(&str, Duration)]) -> (PathBuf, PathBuf) {
        let target = root.join("target");
        let example = target.join("debug/examples/x");
        fs::create_dir_all(example.parent().unwrap()).unwrap();
        File::create(&example).unwrap();
        for (profile, age) in agents {
            let agent = target.join(profile).join(AGENT_BIN_NAME);
            fs::create_dir_all(agent.parent().unwrap()).unwrap();
            File::create(&agent).unwrap().set_modified(SystemTime::now() - *age).unwrap();
        }
        (target, example)
    }

    const NO_PATH: &str = "";

    #[test]
    fn a_debug_example_finds_a_release_agent() {
        let dir = tempfile::tempdir().unwrap();
        let (target, example) = layout(dir.path(), &[("release", Duration::ZERO)]);
        let found = search_agent_binary(None, Some(&example), &target, NO_PATH.as_ref()).unwrap();
        assert_eq!(found, target.join("release/baal-agent"));
    }

    #[test]
    fn the_agent_of_the_examples_own_build_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        // The release agent is newer, but the example was built in debug beside a debug agent.
        let (target, example) =
            layout(dir.path(), &[("release", Duration::ZERO), ("debug", Duration::from_secs(3600))]);
        let found = search_agent_binary(None, Some(&example), &target, NO_PATH.as_ref()).unwrap();
        assert_eq!(found, target.join("debug/baal-agent"));
    }

    #[test]
    fn elsewhere_the_newer_build_wins() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("bin/x");
        for (older, newer) in [("release", "debug"), ("debug", "release")] {
            let run = dir.path().join(older);
            let (target, _) = layout(&run, &[(older, Duration::from_secs(3600)), (newer, Duration::ZERO)]);
            let found = search_agent_binary(None, Some(&elsewhere), &target, NO_PATH.as_ref()).unwrap();
            assert_eq!(found, target.join(newer).join(AGENT_BIN_NAME));
        }
    }

    #[test]
    fn baal_agent_bin_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let (target, example) = layout(dir.path(), &[("release", Duration::ZERO)]);
        let own = dir.path().join("my-agent");
        File::create(&own).unwrap();
        let found = search_agent_binary(Some(&own), Some(&example), &target, NO_PATH.as_ref()).unwrap();
        assert_eq!(found, own);
        let missing = dir.path().join("missing");
        let err = search_agent_binary(Some(&missing), Some(&example), &target, NO_PATH.as_ref()).unwrap_err();
        assert!(err.to_string().starts_with("BAAL_AGENT_BIN is "), "{err}");
    }

    #[test]
    fn path_is_the_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let (target, example) = layout(dir.path(), &[]);
        let bin = dir.path().join("usr-bin");
        fs::create_dir_all(&bin).unwrap();
        File::create(bin.join(AGENT_BIN_NAME)).unwrap();
        let found = search_agent_binary(None, Some(&example), &target, bin.as_os_str()).unwrap();
        assert_eq!(found, bin.join(AGENT_BIN_NAME));
    }

    #[test]
    fn nothing_found_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let (target, example) = layout(dir.path(), &[]);
        let err = search_agent_binary(None, Some(&example), &target, NO_PATH.as_ref()).unwrap_err();
        assert!(err.to_string().contains("`cargo build --release -p baal-agent`"), "{err}");
        assert!(err.to_string().contains("BAAL_AGENT_BIN"), "{err}");
    }
}
