//! All SQL of xcat3. The sea-orm entities are private; callers see a [`Store`] that speaks
//! `xcat3-types`. The same code runs on SQLite (a file, the single-machine default) and PostgreSQL
//! (a cluster), and one conformance suite (`tests/`) runs on both.
//!
//! ## What is stored
//! Nodes with their NICs, networks, OS images, named credentials (hashed) and the registry of
//! running services. Secrets in node control parameters (the conductor needs them to reach the
//! BMC) and credential hashes are sealed with AES-256-GCM when a key is configured
//! ([`sealing`]); they leave the store only through [`xcat3_types::Control::get`] and
//! [`Store::passwd_hash`].
//!
//! ## Bulk writes
//! Every write method runs in one transaction and sends multi-row statements of at most
//! [`ROWS_PER_STATEMENT`] rows, so 10,000 nodes cost tens of statements, not 10,000 round trips.

mod conductors;
mod deploys;
mod entity;
mod netboot;
mod networks;
mod nodes;
mod osimages;
mod passwds;
pub mod sealing;
mod services;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use xcat3_migrations::{Migrator, MigratorTrait};

pub use conductors::{EVENT_NODES_PER_QUERY, EVENTS_PER_NODE, EventRecord, NodeUpdate};
pub use deploys::{
    CallbackError, CallbackReport, ChangeOutcome, DeployRecord, DeployStart, Fence, Finished,
    StateChange,
};
pub use netboot::{
    Block, BootHostRecord, BootTable, DiscoveredRecord, InventoryWrite, MAX_BLOCKS_PER_CLAIM,
};
pub use networks::{NetworkView, NetworkWrite};
pub use nodes::NodeRecord;
pub use osimages::{OsImage, OsImageDeletion};
pub use passwds::PasswdRecord;
pub use sealing::{Resealed, SealingKeys};
pub use services::ServiceRecord;

/// Largest number of rows one INSERT carries (keeps under SQLite's and PostgreSQL's parameter limits).
pub const ROWS_PER_STATEMENT: usize = 1000;

/// Largest number of values in one `IN (...)` list.
pub(crate) const KEYS_PER_QUERY: usize = 5000;

/// `n` bind markers for a raw statement's `IN (...)` list, in the back end's syntax.
pub(crate) fn bind_marks(backend: DbBackend, n: usize) -> String {
    let marks: Vec<String> = (1..=n)
        .map(|i| {
            if backend == DbBackend::Postgres {
                format!("${i}")
            } else {
                "?".to_owned()
            }
        })
        .collect();
    marks.join(",")
}

/// The rows of `SELECT columns FROM rest`, read as one JSON array of arrays that the database
/// builds (`json_group_array` on SQLite, `json_agg` on PostgreSQL) and parsed into `T` (a tuple
/// struct of the columns, in order). A bulk read then costs one row's hand-over, not one per
/// row: with the SQLite driver each row is a message between threads and a copy of each value,
/// which made reading 100,000 nodes cost more than the database's own work. `what` names the
/// rows in errors.
pub(crate) async fn json_rows<C: ConnectionTrait, T: serde::de::DeserializeOwned>(
    db: &C,
    columns: &str,
    rest: &str,
    values: Vec<sea_orm::Value>,
    what: &str,
) -> Result<Vec<T>> {
    let backend = db.get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        format!("SELECT COALESCE(json_agg(json_build_array({columns})), '[]')::text FROM {rest}")
    } else {
        format!("SELECT json_group_array(json_array({columns})) FROM {rest}")
    };
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?
        .ok_or_else(|| corrupt(what, "an aggregate gave no row"))?;
    let text: String = row.try_get_by_index(0)?;
    serde_json::from_str(&text).map_err(|e| corrupt(what, e))
}

/// A boolean column as JSON: `true`/`false` from PostgreSQL, 1/0 from SQLite.
pub(crate) fn json_flag<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<bool, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
    })
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique or foreign-key constraint refused the write (two writers raced for a name, MAC or IP).
    #[error("conflict: {0}")]
    Conflict(String),
    /// What a write was checked against changed before it could commit (a network of one of its
    /// addresses was changed or deleted): nothing was written; checking again will tell.
    #[error("the inventory changed while this write was checked, nothing written: {0}")]
    Stale(String),
    /// A row could not be turned back into a domain value.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    /// A conductor's write carried a fencing token older than the shard's: another conductor has
    /// claimed the shard since.
    #[error(
        "shard {shard} is owned by a newer conductor (token {token} < {epoch}); nothing written"
    )]
    Fenced { shard: u32, token: i64, epoch: i64 },
    #[error("database error: {0}")]
    Db(DbErr),
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(m))
            | Some(SqlErr::ForeignKeyConstraintViolation(m)) => Error::Conflict(m),
            _ => Error::Db(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Error {
    Error::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The key of the PostgreSQL advisory lock that serialises schema migrations ("xcat3mig").
const MIGRATION_LOCK: i64 = 0x7863_6174_336d_6967;

/// Brings the schema up to date. On PostgreSQL, replicas starting at the same moment against an
/// empty database would each see every migration pending and race to create the same tables; so
/// the migrations run in one transaction that first takes an advisory lock: the second replica
/// waits for the first to commit, then finds nothing pending. (Each migration's own transaction
/// nests as a savepoint.) SQLite is one machine's file and needs no lock.
async fn migrate(db: &DatabaseConnection) -> Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        Migrator::up(db, None).await?;
        return Ok(());
    }
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await?;
    Ok(())
}

/// The inventory database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// This process's committed inventory writes (see [`Store::subscribe_writes`]).
    writes: tokio::sync::broadcast::Sender<std::sync::Arc<InventoryWrite>>,
    /// Inventory commits of this process not yet sent to `writes` (see
    /// [`Store::inventory_writes_in_flight`]).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Seal secrets on the way in, open them on the way out.
    keys: SealingKeys,
}

impl Store {
    /// Connects to `url` (`sqlite:///path/x.db?mode=rwc`, `postgres://...`) and brings the schema up
    /// to date.
    pub async fn connect(url: &str) -> Result<Store> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            // WAL: readers never wait for the writer; one writer at a time, waiting up to 10 s.
            opts.max_connections(4)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|o| {
                    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                        .create_if_missing(true)
                });
        } else {
            opts.max_connections(16).min_connections(1);
        }
        let db = Database::connect(opts).await?;
        migrate(&db).await?;
        Ok(Store {
            db,
            writes: tokio::sync::broadcast::channel(1024).0,
            in_flight: std::sync::Arc::default(),
            keys: SealingKeys::default(),
        })
    }

    /// Seals secrets written from now on with `keys` (and opens with them).
    pub fn with_sealing(mut self, keys: SealingKeys) -> Store {
        self.keys = keys;
        self
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(Error::from)
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// two writers queue instead of failing when the second one tries to upgrade its lock.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok(self.db.begin_with_options(options).await?)
    }
}
