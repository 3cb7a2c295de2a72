//! The Python Baal's SQLite files: the tables, columns and indexes they may hold, opened
//! read-only, and their rows read value by value, each bad value a [`Problem`] naming its place.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::{ImportError, Place, Problem};

/// A table the Python Baal writes: the columns its first version had, and those added later
/// (missing from older databases, never written back by its code: it has no migrations).
pub(super) struct TableSpec {
    name: &'static str,
    columns: &'static [&'static str],
    later: &'static [&'static str],
    required: bool,
}

/// The tables and named indexes of one file. Names starting `sqlite_` are SQLite's own.
pub(super) struct FileSpec {
    tables: &'static [TableSpec],
    indexes: &'static [&'static str],
}

pub(super) const USERS: &str = "users";
pub(super) const AGENTS: &str = "agents";
pub(super) const VM_POOL: &str = "vm_pool";

pub(super) const AGENT_COLUMNS: &[&str] = &[
    "id",
    "owner_id",
    "name",
    "system_prompt",
    "model",
    "is_active",
    "instance_hash",
    "vm_ipv6",
    "vm_url",
    "crn_url",
    "auth_token",
    "deployment_status",
    "created_at",
    "updated_at",
];
pub(super) const POOL_COLUMNS: &[&str] = &[
    "id",
    "instance_hash",
    "vm_ip",
    "vm_url",
    "crn_url",
    "ssh_port",
    "created_at",
    "claimed_at",
    "agent_id",
    "status",
];

pub(super) const BAAL_DB: FileSpec = FileSpec {
    tables: &[
        TableSpec {
            name: USERS,
            columns: &["telegram_id", "api_key", "created_at"],
            later: &["show_tools"],
            required: true,
        },
        TableSpec { name: AGENTS, columns: AGENT_COLUMNS, later: &[], required: true },
        // Not imported: daily counters of a past day, and a history the Python Baal never read.
        TableSpec {
            name: "daily_usage",
            columns: &["telegram_id", "date", "message_count"],
            later: &[],
            required: false,
        },
        TableSpec {
            name: "deployment_history",
            columns: &["id", "agent_id", "status", "step", "error_message", "duration_seconds", "created_at"],
            later: &[],
            required: false,
        },
    ],
    indexes: &["idx_agents_owner", "idx_deployment_history_agent"],
};

pub(super) const POOL_DB: FileSpec = FileSpec {
    tables: &[TableSpec { name: VM_POOL, columns: POOL_COLUMNS, later: &[], required: true }],
    indexes: &["idx_pool_hash"],
};

/// One of the Python Baal's files, open read-only.
pub(super) struct SqliteFile {
    pub(super) name: String,
    conn: Connection,
}

impl SqliteFile {
    pub(super) fn open(path: &Path) -> Result<SqliteFile, ImportError> {
        let name = path.display().to_string();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|err| ImportError::Open { file: name.clone(), reason: err.to_string() })?;
        Ok(SqliteFile { name, conn })
    }

    fn failed(&self, err: rusqlite::Error) -> ImportError {
        ImportError::Open { file: self.name.clone(), reason: err.to_string() }
    }

    pub(super) fn corrupt_unless_empty(&self, problems: Vec<Problem>) -> Result<(), ImportError> {
        if problems.is_empty() { Ok(()) } else { Err(ImportError::Corrupt { file: self.name.clone(), problems }) }
    }

    /// Checks every table, index, view and trigger against `spec`; returns each known table's
    /// columns.
    pub(super) fn check_schema(&self, spec: &FileSpec) -> Result<HashMap<&'static str, Vec<String>>, ImportError> {
        let objects: Vec<(String, String)> = self
            .conn
            .prepare("SELECT type, name FROM sqlite_master ORDER BY type, name")
            .and_then(|mut stmt| stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
            .map_err(|err| self.failed(err))?;
        let mut problems = Vec::new();
        let mut columns = HashMap::new();
        for (kind, name) in &objects {
            if name.starts_with("sqlite_") {
                continue;
            }
            match (kind.as_str(), spec.tables.iter().find(|t| t.name == name)) {
                ("table", Some(table)) => {
                    let present = self.columns_of(name)?;
                    problems.extend(column_problems(table, &present));
                    columns.insert(table.name, present);
                }
                ("index", _) if spec.indexes.contains(&name.as_str()) => {}
                _ => problems.push(format!("unknown {kind} {name}")),
            }
        }
        for table in spec.tables.iter().filter(|t| t.required && !columns.contains_key(t.name)) {
            problems.push(format!("no table {}", table.name));
        }
        if problems.is_empty() { Ok(columns) } else { Err(ImportError::Schema { file: self.name.clone(), problems }) }
    }

    fn columns_of(&self, table: &str) -> Result<Vec<String>, ImportError> {
        self.conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut stmt| stmt.query_map([table], |row| row.get(0))?.collect())
            .map_err(|err| self.failed(err))
    }

    /// Runs `SELECT columns FROM table ORDER BY its id` and hands each row to `each` with its id
    /// (the first column).
    pub(super) fn each_row(
        &self,
        table: &'static str,
        columns: &[&'static str],
        mut each: impl FnMut(&mut Cells<'_, '_>),
    ) -> Result<(), ImportError> {
        // Names from the constants above, never from the file: nothing outside reaches this SQL.
        let sql = format!("SELECT {} FROM {table} ORDER BY {}", columns.join(", "), columns[0]);
        let mut stmt = self.conn.prepare(&sql).map_err(|err| self.failed(err))?;
        let mut rows = stmt.query([]).map_err(|err| self.failed(err))?;
        while let Some(row) = rows.next().map_err(|err| self.failed(err))? {
            let id = row.get::<_, i64>(0).map_err(|err| self.failed(err))?;
            each(&mut Cells { row, table, id, columns });
        }
        Ok(())
    }
}

fn column_problems(table: &TableSpec, present: &[String]) -> Vec<String> {
    let known = |c: &String| table.columns.iter().chain(table.later).any(|k| k == c);
    let unknown = present.iter().filter(|c| !known(c)).map(|c| format!("unknown column {}.{c}", table.name));
    let missing = table
        .columns
        .iter()
        .filter(|c| !present.iter().any(|p| p == *c))
        .map(|c| format!("table {} has no column {c}", table.name));
    unknown.chain(missing).collect()
}

/// One row being read: each value converted, or a [`Problem`] naming its place.
pub(super) struct Cells<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    table: &'static str,
    pub(super) id: i64,
    columns: &'a [&'static str],
}

impl Cells<'_, '_> {
    pub(super) fn place(&self, column: &'static str) -> Place {
        Place { table: self.table, row: self.id, column }
    }

    /// The value of `column` converted by `convert`, or `None` with the problem recorded.
    pub(super) fn get<T>(
        &self,
        column: &'static str,
        problems: &mut Vec<Problem>,
        convert: impl FnOnce(ValueRef<'_>) -> Result<T, String>,
    ) -> Option<T> {
        let Some(index) = self.columns.iter().position(|c| *c == column) else {
            problems.push(Problem { place: self.place(column), reason: "not read (a bug in the import)".into() });
            return None;
        };
        let converted = match self.row.get_ref(index) {
            Ok(value) => convert(value),
            Err(err) => Err(err.to_string()),
        };
        converted.map_err(|reason| problems.push(Problem { place: self.place(column), reason })).ok()
    }
}

fn kind(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "a whole number",
        ValueRef::Real(_) => "a decimal number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "binary data",
    }
}

pub(super) fn integer(value: ValueRef<'_>) -> Result<i64, String> {
    match value {
        ValueRef::Integer(n) => Ok(n),
        other => Err(format!("{} where a whole number belongs", kind(other))),
    }
}

pub(super) fn text(value: ValueRef<'_>) -> Result<String, String> {
    match value {
        ValueRef::Text(bytes) => {
            std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| "text that is not UTF-8".into())
        }
        other => Err(format!("{} where text belongs", kind(other))),
    }
}

/// Text, or `None` for NULL and the empty string (which the Python Baal reads as "none").
pub(super) fn optional_text(value: ValueRef<'_>) -> Result<Option<String>, String> {
    match value {
        ValueRef::Null => Ok(None),
        other => text(other).map(|t| Some(t).filter(|t| !t.is_empty())),
    }
}

/// A SQLite boolean: 0 or 1; NULL reads as `null_means`.
pub(super) fn flag(value: ValueRef<'_>, null_means: bool) -> Result<bool, String> {
    match value {
        ValueRef::Null => Ok(null_means),
        ValueRef::Integer(0) => Ok(false),
        ValueRef::Integer(1) => Ok(true),
        ValueRef::Integer(n) => Err(format!("{n} where 0 or 1 belongs")),
        other => Err(format!("{} where 0 or 1 belongs", kind(other))),
    }
}

/// A time as the Python Baal writes them: `datetime.isoformat()` of an aware UTC time
/// (`2026-02-10T00:17:05.123456+00:00`), or SQLite's `datetime('now')` (`2026-02-10 00:17:05`,
/// UTC) from a column default.
pub(super) fn timestamp(value: ValueRef<'_>) -> Result<DateTime<Utc>, String> {
    let text = text(value)?;
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.to_utc());
    }
    if let Ok(at) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(at.to_utc());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| format!("{text:?} is not a date and time"))
}

pub(super) fn word<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str, value: ValueRef<'_>) -> Result<T, String> {
    let text = text(value)?;
    all.iter().copied().find(|w| name(*w) == text).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|w| name(*w)).collect();
        format!("{text:?} is none of {}", known.join(", "))
    })
}
