//! Importing the Python Baal: its `baal.db` (users, agents) and `pool.db` (warm VMs) into a
//! [`Store`], each secret opened with the Python Baal's Fernet key and sealed again with this
//! platform's [`SecretBox`].
//!
//! Three steps, so that bad input never leaves half an import behind ([`import`] runs them):
//!
//! 1. [`Snapshot::read`] opens both files read-only, checks their schema (every table and column
//!    must be one the Python Baal wrote; columns it added later may be missing), reads every row
//!    and opens every Fernet token. Any problem is an [`ImportError`] naming the file, table, row
//!    and column, and nothing has been written.
//! 2. [`Plan::new`] compares the snapshot with the store: users are matched by Telegram id,
//!    agents by their Python id ([`Store::agent_by_python_id`]), pool VMs by instance hash.
//!    [`Plan::report`] tells what would be done (a dry run).
//! 3. [`Plan::apply`] writes it, reporting [`Progress`] as it goes.
//!
//! What is decided, once, here:
//!
//! - **Users**: created with their `show_tools` (true where the column is missing: older
//!   databases) and their LibertAI key sealed for their row. A user the store already knows keeps
//!   everything, their own key included; when the Python key differs from theirs, the report
//!   names them ([`UserCounts::kept_keys`]). A known user without a key gets the Python one.
//!   Owners of agents missing from the `users` table (its foreign keys were never enforced) are
//!   created without a key.
//! - **Agents**: only active ones (`is_active = 1`); deleted ones are counted and skipped, and an
//!   agent imported before and deleted in Python since is left as it is. Each is created with
//!   [`NewAgent::imported_from_python`](crate::domain::NewAgent::imported_from_python) (slug =
//!   its old id, runtime Python, its creation time), then given its bearer secret (sealed for its
//!   new row, so once the row exists), its deployment facts (`vm_ipv6`, which holds the SSH
//!   host's IPv4, becomes `vm_host`; no SSH port, which the Python database does not hold), who
//!   pays (the owner when they have a key, else the operator) and, last, its status:
//!   `running`/`deployed` → running when it has a URL and a secret to reach it by; everything
//!   else (`pending`, `deploying`, `failed`, an active `stopped`) → failed, so that the owner's
//!   `/repair` takes it from there, and no deployment is resumed behind anyone's back. Because
//!   the status is written last, an agent still `pending` with runtime Python was cut off
//!   mid-import, and the next import finishes it.
//! - **Pool VMs**: `warm` and `claimed` rows (a claim dies with the Python bot, as its own
//!   restart assumes) become warm VMs of the store's pool, unless their instance serves an agent;
//!   `deployed` rows belong to their agent; `provisioning` and `failed` rows are not imported and
//!   are listed as possible leaks (an instance the wallet may still pay for; see
//!   `baal-cli aleph reconcile`).
//! - Not imported: `daily_usage` (counters of past days), `deployment_history` (never read by the
//!   Python Baal), users' creation times (the store sets its own).
//!
//! Invariants: no secret (Fernet key, token, plaintext) is ever in an error, a report or a
//! `Debug`; a second import of the same files changes nothing and says so ([`Report::changed`]).

mod key;
mod plan;
mod read;
mod schema;
mod write;

use std::fmt;

pub use key::PythonKey;
pub use plan::{AgentAction, AgentCounts, AgentLine, Plan, PoolCounts, PoolLeak, Report, UserCounts};
pub use read::{Snapshot, Source, check_apart};
pub use write::Progress;

use crate::secrets::{SecretBox, SecretsError};
use crate::store::{Store, StoreError};

/// The three steps in one: reads `source` with `key` (synchronously: plain file reads), plans
/// against `store`, and writes unless `dry_run`, calling `progress` after each write. The report
/// says what was (or, for a dry run, would be) done.
pub async fn import(
    source: &Source,
    key: &PythonKey,
    store: &dyn Store,
    secrets: &SecretBox,
    dry_run: bool,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report, ImportError> {
    let snapshot = Snapshot::read(source, key)?;
    let plan = Plan::new(snapshot, store, secrets).await?;
    if dry_run { Ok(plan.report()) } else { plan.apply(store, secrets, progress).await }
}

/// Where in a Python database a value sits: its table, the row's id and the column.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Place {
    /// The table (`users`, `agents`, `vm_pool`).
    pub table: &'static str,
    /// The row's id (`telegram_id` for users, `id` otherwise).
    pub row: i64,
    /// The column.
    pub column: &'static str,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {}, row {}, column {}", self.table, self.row, self.column)
    }
}

/// A value that cannot be imported: where it is and what is wrong (never the value of a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Where.
    pub place: Place,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.reason)
    }
}

/// How many problems an error lists before it only counts the rest.
const PROBLEMS_SHOWN: usize = 10;

fn list<T: fmt::Display>(items: &[T]) -> String {
    let mut text: Vec<String> = items.iter().take(PROBLEMS_SHOWN).map(|p| format!("\n  - {p}")).collect();
    if items.len() > PROBLEMS_SHOWN {
        text.push(format!("\n  - and {} more", items.len() - PROBLEMS_SHOWN));
    }
    text.concat()
}

/// Why an import stopped. Every variant but [`ImportError::Store`] and [`ImportError::Seal`] comes
/// before anything is written; [`ImportError::is_bad_input`] tells them apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be opened or read as SQLite.
    #[error("cannot read {file}: {reason}. Check the path (the Python Baal's DB_PATH or POOL_DB_PATH)")]
    Open {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The file's tables or columns are not the ones the Python Baal writes.
    #[error("{file} is not a Python Baal database this import knows; nothing was written:{}", list(problems))]
    Schema {
        /// The file.
        file: String,
        /// Each unknown or missing table or column.
        problems: Vec<String>,
    },
    /// The Fernet key opens none of the tokens.
    #[error(
        "the Python Baal's key does not open the tokens in {file} ({first}, and every other); nothing was \
         written. Give the Python Baal's BOT_ENCRYPTION_KEY as PYTHON_BOT_ENCRYPTION_KEY or --python-key-file"
    )]
    WrongKey {
        /// The file.
        file: String,
        /// The first token it failed to open.
        first: Place,
    },
    /// Rows whose values cannot be imported.
    #[error(
        "{file} has values that cannot be imported; nothing was written. Fix or delete these rows:{}",
        list(problems)
    )]
    Corrupt {
        /// The file.
        file: String,
        /// Each value, with where it is.
        problems: Vec<Problem>,
    },
    /// The store to import into is one of the files to import from.
    #[error(
        "the database to import into is {file}, the Python Baal's own file; nothing was written. Set \
         DATABASE_URL (or --database-url) to this platform's database, a new file or PostgreSQL"
    )]
    SameFile {
        /// The file.
        file: String,
    },
    /// There are pool VMs to import, but the store keeps no pool.
    #[error("pool.db has {vms} warm VM(s) to import, but this store keeps no VM pool")]
    NoPool {
        /// How many.
        vms: usize,
    },
    /// The store failed while planning or writing. What was written stays; importing again
    /// finishes the job.
    #[error("{0} (once the database answers, import again: it finishes what an earlier import started)")]
    Store(#[from] StoreError),
    /// Sealing a secret failed.
    #[error("cannot seal a secret: {0}")]
    Seal(#[from] SecretsError),
}

impl ImportError {
    /// Whether the input is at fault (a path, the key, the files' contents): the operator must
    /// fix something before trying again, and nothing was written.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ImportError::Open { .. }
                | ImportError::Schema { .. }
                | ImportError::WrongKey { .. }
                | ImportError::Corrupt { .. }
                | ImportError::SameFile { .. }
        )
    }
}
