//! Sessions: admission (link use + concurrency slot + row, in one transaction), state writes, and
//! the final write that releases the concurrency slot exactly once.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, Func, Query, QueryStatementBuilder};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DbBackend, EntityTrait, FromQueryResult, Iterable,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};

use super::entities::{account, link, session};
use super::{now_ms, Store, StoreError, StoreResult};
use crate::domain::link::LinkStatus;
use crate::domain::session::SessionState;

pub enum Admission {
    Admitted(Box<session::Model>),
    /// The link was revoked, expired or used up by the time the write ran.
    LinkUnavailable,
    InsufficientBalance,
    /// The account's limit (live sessions).
    ConcurrencyLimit(i64),
    AccountGone,
}

/// How long an admitted session may last: what the start asked for, never more than its
/// account allows (its own cap, else the server's default). Settled in the admission, which reads
/// the account as it takes the slot.
#[derive(Debug, Clone, Copy)]
pub struct DurationCap {
    pub asked_seconds: Option<i64>,
    pub default_seconds: i64,
}

#[derive(Default)]
pub struct SessionFilter {
    pub state: Option<SessionState>,
    pub agent_id: Option<String>,
    pub limit: u64,
}

impl Store {
    /// Admits `new` (written in its state, `queued`, `starting` or `live`): takes a concurrency
    /// slot and, if it came through a link, a link use, writes the row and sets its
    /// `max_duration_seconds` from the account's cap; all or nothing.
    ///
    /// The slot's update passes only if the link is usable too, and the link's update follows it.
    /// On SQLite, which holds the write lock from the list's `BEGIN IMMEDIATE` to its `COMMIT`,
    /// each step after the slot runs only if the one before changed its row (`changes() = 1`), so
    /// the whole admission is one call to the database (`store/write.rs`) and a refusal writes
    /// nothing. Elsewhere the gates' rows decide between commit and rollback.
    pub async fn admit(&self, new: session::Model, cap: DurationCap) -> StoreResult<Admission> {
        super::guarded(async move {
            let backend = self.db.get_database_backend();
            let gated = backend == DbBackend::Sqlite;
            let now = now_ms();
            let (id, account_id, link_id) =
                (new.id.clone(), new.account_id.clone(), new.link_id.clone());
            let mut statements = Vec::new();
            let mut slot = account::Entity::update_many()
                .col_expr(
                    account::Column::LiveSessions,
                    Expr::col(account::Column::LiveSessions).add(1),
                )
                .filter(account::Column::Id.eq(account_id.as_str()))
                .filter(
                    Expr::col(account::Column::LiveSessions)
                        .lt(Expr::col(account::Column::ConcurrencyLimit)),
                )
                .filter(account::Column::BalanceMs.gt(0))
                .apply_if(link_id.as_deref(), |slot, link_id| {
                    slot.filter(Expr::exists(
                        Query::select()
                            .expr(Expr::val(1))
                            .from(link::Entity)
                            .cond_where(usable_link(link_id, now))
                            .to_owned(),
                    ))
                })
                .into_query();
            slot.returning_col(account::Column::ConcurrencyLimit);
            statements.push(backend.build(&slot));
            if let Some(link_id) = &link_id {
                let mut use_link = link::Entity::update_many()
                    .col_expr(link::Column::Uses, Expr::col(link::Column::Uses).add(1))
                    .filter(usable_link(link_id, now))
                    .apply_if(gated.then_some(()), |update, ()| {
                        update.filter(after_a_change())
                    })
                    .into_query();
                use_link.returning_col(link::Column::UseLimit);
                statements.push(backend.build(&use_link));
            }
            statements.push(insert_row(backend, new));
            let mut capped = session::Entity::update_many()
                .col_expr(
                    session::Column::MaxDurationSeconds,
                    max_duration(&account_id, cap),
                )
                .filter(session::Column::Id.eq(id.as_str()))
                .into_query();
            capped.returning_all();
            statements.push(backend.build(&capped));

            let mut txn = self.write_txn().await?;
            let (rows, undecided) = if gated {
                (txn.commit_with(statements).await?, None)
            } else {
                (txn.query(statements).await?, Some(txn))
            };
            // The gates answer one column each; the session's row comes last.
            let passed = |gate: &str| rows.iter().any(|r| r.column_names() == [gate]);
            let admitted =
                passed("concurrency_limit") && (link_id.is_none() || passed("use_limit"));
            if !admitted {
                if let Some(txn) = undecided {
                    txn.rollback().await?;
                }
                return self.refusal(&account_id, link_id.as_deref(), now).await;
            }
            let row = rows
                .last()
                .map(|r| session::Model::from_query_result(r, ""))
                .transpose()?
                .ok_or_else(|| StoreError::Corrupt(format!("session {id} not written")))?;
            if let Some(txn) = undecided {
                txn.commit_with(Vec::new()).await?;
            }
            Ok(Admission::Admitted(Box::new(row)))
        })
        .await
    }

    /// Why an admission was refused, read after it.
    async fn refusal(
        &self,
        account_id: &str,
        link_id: Option<&str>,
        now: i64,
    ) -> StoreResult<Admission> {
        if let Some(link_id) = link_id {
            let usable = link::Entity::find()
                .filter(usable_link(link_id, now))
                .one(&self.db)
                .await?;
            if usable.is_none() {
                return Ok(Admission::LinkUnavailable);
            }
        }
        let account = account::Entity::find_by_id(account_id.to_string())
            .one(&self.db)
            .await?;
        Ok(match account {
            None => Admission::AccountGone,
            Some(a) if a.balance_ms <= 0 => Admission::InsufficientBalance,
            Some(a) => Admission::ConcurrencyLimit(a.concurrency_limit),
        })
    }

    pub async fn session(&self, id: &str) -> StoreResult<Option<session::Model>> {
        super::guarded(async move {
            Ok(session::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?)
        })
        .await
    }

    /// Sessions with their accounts, a few hundred a statement; one whose session or account is
    /// gone is absent.
    pub async fn sessions_and_accounts(
        &self,
        ids: &[&str],
    ) -> StoreResult<HashMap<String, (session::Model, account::Model)>> {
        super::guarded(async move {
            let mut found = HashMap::new();
            for chunk in ids.chunks(400) {
                let rows = session::Entity::find()
                    .filter(session::Column::Id.is_in(chunk.to_vec()))
                    .find_also_related(account::Entity)
                    .all(&self.db)
                    .await?;
                for (session, account) in rows {
                    if let Some(account) = account {
                        found.insert(session.id.clone(), (session, account));
                    }
                }
            }
            Ok(found)
        })
        .await
    }

    pub async fn session_of(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<session::Model>> {
        super::guarded(async move {
            Ok(self
                .session(id)
                .await?
                .filter(|s| s.account_id == account_id))
        })
        .await
    }

    pub async fn sessions_of(
        &self,
        account_id: &str,
        filter: SessionFilter,
    ) -> StoreResult<Vec<session::Model>> {
        super::guarded(async move {
            let mut query =
                session::Entity::find().filter(session::Column::AccountId.eq(account_id));
            if let Some(state) = filter.state {
                query = query.filter(session::Column::State.eq(state));
            }
            if let Some(agent) = filter.agent_id {
                query = query.filter(session::Column::AgentId.eq(agent));
            }
            Ok(query
                .order_by_desc(session::Column::CreatedAt)
                .limit(filter.limit.clamp(1, 500))
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// The agent's sessions on `node_id` that have not ended: what an agent's channel waits to see
    /// ended when that node falls silent.
    pub async fn unended_on_node(
        &self,
        agent_id: &str,
        node_id: &str,
    ) -> StoreResult<Vec<session::Model>> {
        super::guarded(async move {
            Ok(session::Entity::find()
                .filter(session::Column::AgentId.eq(agent_id))
                .filter(session::Column::NodeId.eq(node_id))
                .filter(session::Column::EndedAt.is_null())
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// A state change of a session that has not ended, made at `at` (ms since the epoch; for
    /// `live`, its `started_at`). [`session::Model::with_state`] says what it leaves in the row.
    pub async fn set_session_state(
        &self,
        id: &str,
        state: SessionState,
        at: i64,
    ) -> StoreResult<()> {
        super::guarded(async move {
            let _turn = self.write_turn().await;
            let now = at;
            let mut update = session::Entity::update_many()
                .col_expr(session::Column::State, Expr::value(state))
                .col_expr(session::Column::UpdatedAt, Expr::value(now))
                .col_expr(session::Column::HeartbeatAt, Expr::value(now));
            if state == SessionState::Live {
                update = update.col_expr(session::Column::StartedAt, Expr::value(now));
            }
            update
                .filter(session::Column::Id.eq(id))
                .filter(session::Column::EndedAt.is_null())
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// The nodes running an unended session of the agent (only its session in `room_name`, when
    /// given): where a fan-out must go.
    pub async fn nodes_running_agent(
        &self,
        agent_id: &str,
        room_name: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        super::guarded(async move {
            let mut query = session::Entity::find()
                .select_only()
                .column(session::Column::NodeId)
                .distinct()
                .filter(session::Column::AgentId.eq(agent_id))
                .filter(session::Column::EndedAt.is_null());
            if let Some(room) = room_name {
                query = query.filter(session::Column::RoomName.eq(room));
            }
            Ok(query.into_tuple::<String>().all(&self.db).await?)
        })
        .await
    }

    /// Unended sessions of other nodes whose heartbeat went stale before `stale_before`: their
    /// node is taken for lost.
    pub async fn lost_sessions(
        &self,
        node_id: &str,
        stale_before: i64,
    ) -> StoreResult<Vec<session::Model>> {
        super::guarded(async move {
            Ok(session::Entity::find()
                .filter(session::Column::EndedAt.is_null())
                .filter(session::Column::NodeId.ne(node_id))
                .filter(stale(stale_before))
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// Sessions that never ended although no actor runs them: owned by this node (a previous run
    /// of it), or by any node whose heartbeat went stale.
    pub async fn orphaned_sessions(
        &self,
        node_id: &str,
        stale_before: i64,
    ) -> StoreResult<Vec<session::Model>> {
        super::guarded(async move {
            Ok(session::Entity::find()
                .filter(session::Column::EndedAt.is_null())
                .filter(
                    Condition::any()
                        .add(session::Column::NodeId.eq(node_id))
                        .add(stale(stale_before)),
                )
                .all(&self.db)
                .await?)
        })
        .await
    }
}

/// A link that may be used now: active, not expired, uses left.
fn usable_link(link_id: &str, now: i64) -> Condition {
    Condition::all()
        .add(link::Column::Id.eq(link_id))
        .add(link::Column::Status.eq(LinkStatus::Active))
        .add(
            Condition::any()
                .add(link::Column::UseLimit.is_null())
                .add(Expr::col(link::Column::Uses).lt(Expr::col(link::Column::UseLimit))),
        )
        .add(
            Condition::any()
                .add(link::Column::ExpiresAt.is_null())
                .add(link::Column::ExpiresAt.gt(now)),
        )
}

/// SQLite: the statement before this one changed exactly one row (`changes()` counts the last
/// finished statement of this connection; the write lock is held, so nothing else ran between).
fn after_a_change() -> Expr {
    Expr::cust("changes() = 1")
}

/// The row's insert. On SQLite it runs only after a change (the link's use or the slot, see
/// [`Store::admit`]): `INSERT … SELECT <values> WHERE changes() = 1`.
fn insert_row(backend: DbBackend, new: session::Model) -> Statement {
    let row = session::ActiveModel::from(new);
    if backend != DbBackend::Sqlite {
        return session::Entity::insert(row).build(backend);
    }
    let (columns, values): (Vec<session::Column>, Vec<Expr>) = session::Column::iter()
        .filter_map(|column| row.get(column).into_value().map(|v| (column, Expr::val(v))))
        .unzip();
    let mut insert = Query::insert();
    insert.into_table(session::Entity).columns(columns);
    let select = Query::select()
        .exprs(values)
        .and_where(after_a_change())
        .to_owned();
    // The values come from the model: their count matches the columns'.
    insert
        .select_from(select)
        .expect("as many values as columns");
    backend.build(&insert)
}

/// How long a session of `account_id` may last: what was asked, never more than the account's cap
/// (else the server's default), read by the statement that sets it.
fn max_duration(account_id: &str, cap: DurationCap) -> Expr {
    let account_cap = Query::select()
        .column(account::Column::MaxSessionSeconds)
        .from(account::Entity)
        .and_where(account::Column::Id.eq(account_id))
        .to_owned();
    let account_max: Expr = Func::coalesce([
        Expr::SubQuery(None, Box::new(account_cap.into_sub_query_statement())),
        Expr::val(cap.default_seconds),
    ])
    .into();
    match cap.asked_seconds {
        None => account_max,
        Some(asked) => Expr::case(account_max.clone().lt(asked), account_max)
            .finally(asked)
            .into(),
    }
}

/// A session whose heartbeat (or, before its first, its creation) is older than `stale_before`.
fn stale(stale_before: i64) -> Condition {
    Condition::any()
        .add(session::Column::HeartbeatAt.lt(stale_before))
        .add(
            Condition::all()
                .add(session::Column::HeartbeatAt.is_null())
                .add(session::Column::CreatedAt.lt(stale_before)),
        )
}

impl session::Model {
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// The row as [`Store::set_session_state`] leaves it (for a row not ended), without reading
    /// it back; the two change the same columns.
    pub fn with_state(mut self, state: SessionState, at: i64) -> Self {
        self.state = state;
        self.updated_at = at;
        self.heartbeat_at = Some(at);
        if state == SessionState::Live {
            self.started_at = Some(at);
        }
        self
    }
}
