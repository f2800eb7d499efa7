//! The database is the record. Every query lives in this module, one file per aggregate; limits are
//! enforced by conditional writes (`… WHERE live_sessions < concurrency_limit`) so that no number of
//! racing requests, nor several nodes sharing PostgreSQL, can pass them.

pub mod accounts;
pub mod agents;
pub mod billing;
pub mod entities;
pub mod links;
pub mod sessions;
mod values;
pub mod views;
pub mod webhooks;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
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
    /// SQLite only: the turn of the hot writers (admission, state changes, billing).
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Store {
    /// SQLite has one writer at a time; a writer that finds the lock taken sleeps in SQLite's
    /// busy handler, whose back-off (up to 100 ms a try) is what a start waited behind another
    /// under load. The hot writes take their turn here instead, in order, woken the moment the
    /// previous one is done. PostgreSQL writes concurrently: no turn.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.writer {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }

    /// Connects and applies pending migrations (SQLite files are created on first start).
    pub async fn connect(
        url: &str,
        settings: &crate::config::DatabaseSettings,
        master_key: MasterKey,
    ) -> StoreResult<Self> {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms.max(1)))
            .sqlx_logging(false);
        // sqlx pings a connection each time it lends it: one more round trip on every query (on
        // SQLite, one more hand-over to its thread). A server's connection is pinged only after
        // a quiet spell, when the server or the network between may have dropped it; SQLite's,
        // a file in this process, never.
        if url.starts_with("sqlite:") {
            options.test_before_acquire(false);
            // One writer at a time: waiting writers queue on the busy timeout instead of failing.
            // WAL with `synchronous = NORMAL`: a commit is durable against a crash of this
            // process (what billing must survive) without an fsync per commit.
            options.map_sqlx_sqlite_opts(|o| {
                o.busy_timeout(Duration::from_secs(30))
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .foreign_keys(true)
            });
        } else {
            options.test_before_acquire_if_idle_for(Duration::from_secs(10));
        }
        let writer = url
            .starts_with("sqlite:")
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        let db = Database::connect(options).await?;
        Ok(Self {
            db,
            master_key,
            writer,
        })
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        guarded(async {
            Migrator::up(&self.db, None).await?;
            Ok(())
        })
        .await
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

/// Runs a store future so that, if it is dropped mid-query (a request cancelled, a runtime shutting
/// down), its pooled connection goes back to the pool on a runtime that is still there. sqlx
/// returns connections by spawning a task; without a Tokio context that panics, and during a
/// runtime's shutdown that panic aborts the process.
pub async fn guarded<T>(fut: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    Guarded {
        inner: Some(Box::pin(fut)),
    }
    .await
}

struct Guarded<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for Guarded<F> {
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _context = housekeeping().enter();
            drop(inner);
        }
    }
}

/// A small runtime that lives as long as the process: where abandoned connections are returned.
fn housekeeping() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("store-housekeeping")
                .enable_all()
                .build()
                // unwrap: building a one-thread runtime only fails if the OS refuses a thread.
                .unwrap()
        })
        .handle()
}

pub use crate::domain::time::{iso, iso_opt, now_ms};
