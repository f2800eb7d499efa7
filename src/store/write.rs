//! A write transaction in as few calls to the database as its logic allows. sqlx runs SQLite on a
//! thread of its own per connection and hands every statement over to it; each hand-over wakes a
//! thread on both sides, which on a busy machine is most of a short write's time, and the writers'
//! turn ([`Store::write_turn`], which a SQLite write transaction holds from its start to its
//! end) is held all the while. So on SQLite the statements a step sends go
//! as one call (a statement list), `BEGIN IMMEDIATE` travels with the first step and `COMMIT`
//! with the last: a transaction that reads once and then writes is two calls. PostgreSQL takes
//! one statement a call, in an ordinary transaction.
//!
//! sqlx 0.9 runs such a list (SQLite only: it prepares one statement after another and binds the
//! `?` values in order across them) but calls the behaviour deprecated (`Query::fetch_many`'s
//! note; `fetch_all` carries no warning): an upgrade of sqlx must keep it, or this file must
//! change. The admission test through a refused link (`tests/api/links.rs`) fails without it.

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, Sqlite};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbErr, QueryResult, RuntimeErr, Statement,
    TransactionTrait,
};
use sea_query_sqlx::SqlxValues;

use super::{Store, StoreError, StoreResult};

pub(crate) enum WriteTxn {
    Sqlite(SqliteTxn),
    Other(DatabaseTransaction),
}

pub(crate) struct SqliteTxn {
    conn: PoolConnection<Sqlite>,
    /// The writers' turn, given back after the connection (fields drop in order).
    _turn: tokio::sync::OwnedMutexGuard<()>,
    /// `BEGIN IMMEDIATE` has been sent.
    begun: bool,
    /// A transaction may be open on the connection: if this is dropped so, the connection is
    /// closed (SQLite rolls back) instead of going back to the pool mid-transaction.
    open: bool,
}

impl Drop for SqliteTxn {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl Store {
    /// A transaction that will write (after it reads, maybe): on SQLite it takes the write lock
    /// at its first statement (`BEGIN IMMEDIATE`: a deferred `BEGIN` would pin a read snapshot at
    /// the first read, and a commit by another connection meanwhile makes the later write fail at
    /// once with `SQLITE_BUSY_SNAPSHOT`, which no busy timeout waits out).
    /// SQLite's takes the writers' turn first (PostgreSQL has none).
    pub(crate) async fn write_txn(&self) -> StoreResult<WriteTxn> {
        let Some(turn) = self.write_turn().await else {
            return Ok(WriteTxn::Other(self.db.begin().await?));
        };
        let conn = self
            .db
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(WriteTxn::Sqlite(SqliteTxn {
            conn,
            _turn: turn,
            begun: false,
            open: false,
        }))
    }
}

impl WriteTxn {
    /// Runs `statements` in order and answers every row they return, in order.
    pub(crate) async fn query(
        &mut self,
        statements: Vec<Statement>,
    ) -> StoreResult<Vec<QueryResult>> {
        match self {
            WriteTxn::Sqlite(txn) => txn.send(statements, false).await,
            WriteTxn::Other(txn) => one_by_one(txn, statements).await,
        }
    }

    /// Runs `statements`, then commits; answers their rows.
    pub(crate) async fn commit_with(
        self,
        statements: Vec<Statement>,
    ) -> StoreResult<Vec<QueryResult>> {
        match self {
            WriteTxn::Sqlite(mut txn) => txn.send(statements, true).await,
            WriteTxn::Other(txn) => {
                let rows = one_by_one(&txn, statements).await?;
                txn.commit().await?;
                Ok(rows)
            }
        }
    }

    pub(crate) async fn rollback(self) -> StoreResult<()> {
        match self {
            WriteTxn::Sqlite(mut txn) => {
                txn.roll_back().await;
                Ok(())
            }
            WriteTxn::Other(txn) => Ok(txn.rollback().await?),
        }
    }
}

/// PostgreSQL: the statements one a call, their rows in order.
async fn one_by_one(
    txn: &DatabaseTransaction,
    statements: Vec<Statement>,
) -> StoreResult<Vec<QueryResult>> {
    let mut rows = Vec::new();
    for statement in statements {
        rows.extend(txn.query_all_raw(statement).await?);
    }
    Ok(rows)
}

impl SqliteTxn {
    async fn send(
        &mut self,
        statements: Vec<Statement>,
        commit: bool,
    ) -> StoreResult<Vec<QueryResult>> {
        let mut sql = String::new();
        if !self.begun {
            sql.push_str("BEGIN IMMEDIATE;\n");
        }
        let mut values = Vec::new();
        for statement in statements {
            sql.push_str(&statement.sql);
            sql.push_str(";\n");
            values.extend(statement.values.map(|v| v.0).unwrap_or_default());
        }
        if commit {
            sql.push_str("COMMIT;\n");
        }
        self.begun = true;
        self.open = true;
        let query = sqlx::query_with(
            sqlx::AssertSqlSafe(sql),
            SqlxValues(sea_orm::Values(values)),
        );
        match query.fetch_all(&mut *self.conn).await {
            Ok(rows) => {
                self.open = !commit;
                Ok(rows.into_iter().map(QueryResult::from).collect())
            }
            Err(e) => {
                // The list stopped at the failing statement: whatever it began is undone.
                self.roll_back().await;
                Err(DbErr::Query(RuntimeErr::SqlxError(e.into())).into())
            }
        }
    }

    /// Undoes what was sent. If even that fails the connection is closed, not pooled.
    async fn roll_back(&mut self) {
        if !self.open {
            return;
        }
        match sqlx::query("ROLLBACK").execute(&mut *self.conn).await {
            Ok(_) => self.open = false,
            Err(e) => {
                // "no transaction is active": the failing statement's error already undid it.
                let gone = e
                    .as_database_error()
                    .is_some_and(|db| db.message().contains("no transaction is active"));
                self.open = !gone;
            }
        }
    }
}
