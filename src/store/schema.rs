//! The tables of the store, the settings of its connections, and the check that a file
//! was not written by a newer Tidewater, whose layout this build would misread.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{Result, StoreError, open_err};

/// Version of the table layout below; bumped on every incompatible change.
const SCHEMA_VERSION: i64 = 2;

/// `tasks` holds the current state, one row a task; `history` every status event; `logs`
/// the captured output; `offsets` how far each partition has been consumed; `retired` the
/// tasks retention deleted before their task record was read, so that record, read
/// late, does not bring them back; `redriven` which tasks each redrive submitted (from
/// their task records), so the same redrive never submits a task twice.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    tenant          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    function        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    status_rank     BLOB    NOT NULL,
    status_at       INTEGER NOT NULL,
    submitted_at    INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    attempts        INTEGER NOT NULL,
    error           TEXT,
    error_rank      BLOB,
    reason          TEXT,
    scheduler_id    TEXT,
    queued_seen     INTEGER NOT NULL,
    queue_topic     TEXT,
    queue_partition INTEGER,
    queue_offset    INTEGER,
    run_epoch       INTEGER NOT NULL DEFAULT 0,
    redrive_id      TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_id ON tasks (id, tenant);
CREATE INDEX IF NOT EXISTS tasks_submitted ON tasks (submitted_at, id, tenant);
CREATE INDEX IF NOT EXISTS tasks_tenant_submitted ON tasks (tenant, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_tenant_status ON tasks (tenant, status, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_tenant_function ON tasks (tenant, function, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_started ON tasks (started_at) WHERE started_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS history (
    seq          INTEGER PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    rank         BLOB    NOT NULL,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    error        TEXT,
    reason       TEXT,
    scheduler_id TEXT    NOT NULL,
    epoch        INTEGER NOT NULL DEFAULT 0,
    redrive_id   TEXT
);
CREATE INDEX IF NOT EXISTS history_task ON history (task_id, tenant);

CREATE TABLE IF NOT EXISTS logs (
    seq       INTEGER PRIMARY KEY,
    tenant    TEXT    NOT NULL,
    task_id   TEXT    NOT NULL,
    function  TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    stream    TEXT    NOT NULL,
    data      BLOB    NOT NULL,
    truncated INTEGER NOT NULL,
    redrive_id TEXT
);
CREATE INDEX IF NOT EXISTS logs_task ON logs (task_id, tenant, seq);
CREATE INDEX IF NOT EXISTS logs_at ON logs (at);

CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS retired (
    tenant          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    queue_topic     TEXT,
    queue_partition INTEGER,
    queue_offset    INTEGER,
    retired_at      INTEGER NOT NULL,
    PRIMARY KEY (id, tenant)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS redriven (
    redrive_id      TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    submitted_at    INTEGER NOT NULL,
    redrive_by      TEXT,
    queue_topic     TEXT,
    queue_partition INTEGER,
    queue_offset    INTEGER,
    PRIMARY KEY (redrive_id, tenant, task_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redriven_task ON redriven (task_id, tenant);
"#;

/// Columns added after version 1, added in place to a file of version 1 (`ALTER TABLE`
/// keeps its rows; new columns read as the first run of each task).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("tasks", "run_epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("tasks", "redrive_id", "TEXT"),
    ("history", "epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("history", "redrive_id", "TEXT"),
    ("logs", "redrive_id", "TEXT"),
];

/// Adds the [`ADDED_COLUMNS`] a table lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !names.iter().any(|n| n == column) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

/// Settings of every connection, the writer's and the readers'.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_000i64)?;
    Ok(())
}

/// Opens the writer's connection to `path`, creating the file and its tables when
/// missing.
pub(super) fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(open_err(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err(path))?;
    configure(&conn).map_err(open_err(path))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err(path))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Version {
            path: path.display().to_string(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA).map_err(open_err(path))?;
    add_missing_columns(&conn).map_err(open_err(path))?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_err(path))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_version_1_gains_the_run_columns_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let v1 = SCHEMA
                .replace(
                    ",\n    run_epoch       INTEGER NOT NULL DEFAULT 0,\n    redrive_id      TEXT",
                    "",
                )
                .replace(
                    ",\n    epoch        INTEGER NOT NULL DEFAULT 0,\n    redrive_id   TEXT",
                    "",
                )
                .replace(",\n    redrive_id TEXT", "");
            conn.execute_batch(&v1).unwrap();
            conn.execute(
                "INSERT INTO history (tenant, task_id, status, rank, attempt, at, scheduler_id) \
                 VALUES ('acme', 't', 'failed', x'00', 1, 5, 's')",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let conn = open_writer(&path).unwrap();
        let (epoch, redrive): (i64, Option<String>) = conn
            .query_row("SELECT epoch, redrive_id FROM history", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((epoch, redrive), (0, None));
        conn.execute_batch("SELECT run_epoch, redrive_id FROM tasks; SELECT redrive_id FROM logs;")
            .unwrap();
    }
}
