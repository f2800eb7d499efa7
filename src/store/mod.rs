//! The database is the record. Every query lives in this module, one file per aggregate; limits are
//! enforced by conditional writes (`… WHERE live_sessions < concurrency_limit`) so that no number of
//! racing requests, nor several nodes sharing PostgreSQL, can pass them.

pub mod accounts;
pub mod agents;
pub mod entities;
pub mod links;
pub mod sessions;
pub mod webhooks;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use crate::crypto::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Db(DbErr),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Db(err),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Cheap to clone: a pooled connection and the key that seals secrets.
#[derive(Clone, Debug)]
pub struct Store {
    pub db: DatabaseConnection,
    pub master_key: MasterKey,
}

impl Store {
    /// Connects and applies pending migrations (SQLite files are created on first start).
    pub async fn connect(
        url: &str,
        max_connections: u32,
        master_key: MasterKey,
    ) -> StoreResult<Self> {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            // One writer at a time: waiting writers queue on the busy timeout instead of failing.
            options.map_sqlx_sqlite_opts(|o| {
                o.busy_timeout(Duration::from_secs(30))
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .foreign_keys(true)
            });
        }
        let db = Database::connect(options).await?;
        Ok(Self { db, master_key })
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// For `/readyz`: reachable, and no migration pending.
    pub async fn ready(&self) -> StoreResult<()> {
        self.db.execute_unprepared("SELECT 1").await?;
        let pending = Migrator::get_pending_migrations(&self.db).await?;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "{} migrations pending",
                pending.len()
            )))
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 with milliseconds and `Z`, as every timestamp in the API is rendered.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn iso_opt(ms: Option<i64>) -> Option<String> {
    ms.map(iso)
}
