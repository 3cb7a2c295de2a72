//! How the platform's store opens a SQLite database through SeaORM. (Each agent's history opens
//! its own with rusqlite, in `agent::history`, and keeps the same settings.)
//!
//! Invariant: one pooled connection per database. Writers queue in the pool, in arrival order,
//! instead of in SQLite's busy handler (which sleeps 1, 2, 5, 10… ms between retries), and no
//! caller may hold that connection while it waits for another statement of the same database.

use std::time::Duration;

use sea_orm::ConnectOptions;

/// Applies Baal's SQLite settings to `options`: one connection, no ping before each statement,
/// WAL with `synchronous=NORMAL` for files, foreign keys on, `busy_timeout` for other processes
/// holding the write lock, and a query planner that ignores bound values (see
/// [`stable_query_plans`]).
pub(crate) fn configure(options: &mut ConnectOptions, in_memory: bool, busy_timeout: Duration) {
    options
        .max_connections(1)
        // A file on this machine cannot drop a connection the way a server can: pinging it
        // before every statement cost two more thread hand-offs per statement.
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(move |o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            let o = o.foreign_keys(true).busy_timeout(busy_timeout);
            if in_memory { o } else { o.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal) }
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_connect(|connection, _| {
                Box::pin(async move {
                    let mut handle = connection.lock_handle().await?;
                    stable_query_plans(handle.as_raw_handle().as_ptr());
                    Ok(())
                })
            })
        });
}

/// Turns on SQLite's query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`).
///
/// Without it, a statement whose plan could depend on a bound value (`LIMIT ?`, which SeaORM
/// binds for every `.one()`, or `LIKE ?`) is thrown away and compiled again each time a value is
/// bound, because the bundled SQLite is built with `SQLITE_ENABLE_STAT4`. That recompilation was
/// a fifth of the agent database thread's time under load. With it, sqlx's statement cache works
/// for every statement. Failing to turn it on only costs speed, so it is logged, not fatal.
fn stable_query_plans(db: *mut libsqlite3_sys::sqlite3) {
    // sqlite3_db_config is variadic; this option takes an int (1 = on) and an int* for the
    // resulting setting (null: not wanted).
    // SAFETY: `db` is the live handle of a connection locked by the caller for this call.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        tracing::warn!(code = rc, "SQLite refused the stable query planner; statements will be compiled more often");
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};

    /// A bound LIMIT must not make SQLite recompile the statement on every execution.
    #[tokio::test]
    async fn a_bound_limit_does_not_recompile_the_statement() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()));
        super::configure(&mut options, false, std::time::Duration::from_secs(1));
        let db = Database::connect(options).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT); CREATE INDEX t_k ON t (k, id); INSERT INTO t (k) VALUES ('a'), ('b')")
            .await
            .unwrap();
        let sql = "SELECT id FROM t WHERE k = $1 ORDER BY id DESC LIMIT $2";
        for round in 0..3 {
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    sql,
                    ["a".into(), (round + 1).into()],
                ))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
        }
        // SQLITE_STMTSTATUS_REPREPARE of the cached statement, read through SQLite itself.
        let mut conn = db.get_sqlite_connection_pool().acquire().await.unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        let raw = handle.as_raw_handle().as_ptr();
        let mut reprepared = 0;
        // SAFETY: walking the live statements of a connection we hold locked.
        unsafe {
            let mut stmt = libsqlite3_sys::sqlite3_next_stmt(raw, std::ptr::null_mut());
            while !stmt.is_null() {
                let text = std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_sql(stmt)).to_string_lossy();
                if text.contains("LIMIT") {
                    reprepared +=
                        libsqlite3_sys::sqlite3_stmt_status(stmt, libsqlite3_sys::SQLITE_STMTSTATUS_REPREPARE, 0);
                }
                stmt = libsqlite3_sys::sqlite3_next_stmt(raw, stmt);
            }
        }
        assert_eq!(reprepared, 0, "the statement was compiled again for new bound values");
    }
}
