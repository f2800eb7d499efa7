//! Sessions: admission (link use + concurrency slot + row, in one transaction), state writes, and
//! the final write that releases the concurrency slot exactly once.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entities::{account, link, session};
use super::{now_ms, Store, StoreResult};
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
    /// Admits `new` (whose state is `queued`): takes a link use if it came through a link, then a
    /// concurrency slot (the account's row comes back with it: its cap sets the row's
    /// `max_duration_seconds`), then writes the row; all or nothing.
    pub async fn admit(&self, mut new: session::Model, cap: DurationCap) -> StoreResult<Admission> {
        super::guarded(async move {
            let _turn = self.write_turn().await;
            let now = now_ms();
            let txn = self.db.begin().await?;
            if let Some(link_id) = &new.link_id {
                let used =
                    link::Entity::update_many()
                        .col_expr(link::Column::Uses, Expr::col(link::Column::Uses).add(1))
                        .filter(link::Column::Id.eq(link_id.as_str()))
                        .filter(link::Column::Status.eq(LinkStatus::Active))
                        .filter(Condition::any().add(link::Column::UseLimit.is_null()).add(
                            Expr::col(link::Column::Uses).lt(Expr::col(link::Column::UseLimit)),
                        ))
                        .filter(
                            Condition::any()
                                .add(link::Column::ExpiresAt.is_null())
                                .add(link::Column::ExpiresAt.gt(now)),
                        )
                        .exec(&txn)
                        .await?;
                if used.rows_affected == 0 {
                    return Ok(Admission::LinkUnavailable);
                }
            }
            let slot = account::Entity::update_many()
                .col_expr(
                    account::Column::LiveSessions,
                    Expr::col(account::Column::LiveSessions).add(1),
                )
                .filter(account::Column::Id.eq(new.account_id.as_str()))
                .filter(
                    Expr::col(account::Column::LiveSessions)
                        .lt(Expr::col(account::Column::ConcurrencyLimit)),
                )
                .filter(account::Column::BalanceMs.gt(0))
                .exec_with_returning(&txn)
                .await?;
            let Some(account) = slot.into_iter().next() else {
                let account = account::Entity::find_by_id(new.account_id.clone())
                    .one(&txn)
                    .await?;
                return Ok(match account {
                    None => Admission::AccountGone,
                    Some(a) if a.balance_ms <= 0 => Admission::InsufficientBalance,
                    Some(a) => Admission::ConcurrencyLimit(a.concurrency_limit),
                });
            };
            let account_max = account.max_session_seconds.unwrap_or(cap.default_seconds);
            new.max_duration_seconds = cap
                .asked_seconds
                .map_or(account_max, |asked| Ord::min(asked, account_max));
            let row = session::ActiveModel::from(new).insert(&txn).await?;
            txn.commit().await?;
            Ok(Admission::Admitted(Box::new(row)))
        })
        .await
    }

    pub async fn session(&self, id: &str) -> StoreResult<Option<session::Model>> {
        super::guarded(async move {
            Ok(session::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?)
        })
        .await
    }

    /// A session with its account, in one statement; `None` if either is gone.
    pub async fn session_and_account(
        &self,
        id: &str,
    ) -> StoreResult<Option<(session::Model, account::Model)>> {
        super::guarded(async move {
            let found = session::Entity::find_by_id(id.to_string())
                .find_also_related(account::Entity)
                .one(&self.db)
                .await?;
            Ok(found.and_then(|(session, account)| Some((session, account?))))
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
