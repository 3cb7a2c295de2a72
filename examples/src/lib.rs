//! Runnable examples of embedding `baal-core`; the programs live in `examples/examples/` (see
//! `examples/README.md`). This library holds only the set-up they share, so each example shows
//! just what it is about: a scratch directory, the scripted LLM standing in for LibertAI, and a
//! SQLite store and sealing key inside that directory.
//!
//! Nothing here reaches beyond 127.0.0.1 or writes outside its temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use baal_core::deploy::local::find_agent_binary;
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
        let llm = ScriptedLlm::start().await;
        let store = open_sqlite(dir.path()).await?;
        let secrets = Arc::new(SecretBox::from_secret(&secrets::generate_key()?)?);
        let mut config = PlatformConfig::default();
        // The key the agents spend when their owner has not logged in. The scripted LLM accepts
        // any key; in production this is `LIBERTAI_API_KEY`.
        config.libertai_api_key = Some(SecretString::from("example-operator-key"));
        config.libertai_api_base_url = llm.base_url();
        // No need to pace edits of streamed answers when nobody watches a real chat.
        config.edit_interval = std::time::Duration::ZERO;
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

/// The `baal-agent` program the local deployer starts: `BAAL_AGENT_BIN` if set, else
/// `target/<profile>/baal-agent` beside this example's `target/<profile>/examples/` directory,
/// else next to the example or on `PATH`.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("BAAL_AGENT_BIN") {
        return Ok(find_agent_binary(Some(Path::new(&explicit)))?);
    }
    // Cargo puts examples one directory below the workspace's binaries, where
    // `find_agent_binary` does not look.
    let beside_examples = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("baal-agent")))
        .filter(|path| path.is_file());
    match beside_examples {
        Some(path) => Ok(path),
        None => find_agent_binary(None).context(
            "this example runs real agents: build `baal-agent` with `cargo build --workspace` (it lands in \
             target/debug/), or set BAAL_AGENT_BIN to a built one",
        ),
    }
}
