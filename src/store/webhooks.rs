//! The webhook outbox: a delivery is written here before any attempt, so it survives a restart.
//! Nodes sharing a database take deliveries by lease (`claim_due_webhooks`), so each is attempted
//! by one node at a time, and one whose node died mid-attempt is taken again when its lease ends.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, Statement};

use super::entities::webhook;
use super::{now_ms, Store, StoreResult};
use crate::domain::events::WebhookStatus;

impl Store {
    /// Writes deliveries to the outbox, a few hundred a statement.
    pub async fn enqueue_webhooks(&self, rows: Vec<webhook::Model>) -> StoreResult<()> {
        super::guarded(async move {
            for chunk in rows.chunks(200) {
                webhook::Entity::insert_many(chunk.iter().cloned().map(webhook::ActiveModel::from))
                    .exec(&self.db)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Takes up to `limit` pending deliveries whose attempt is due, oldest first, for `lease_ms`:
    /// one statement moves their next attempt past the lease, so no other node sees them due
    /// meanwhile. The attempt's outcome then sets it (delivered, or the back-off's next attempt);
    /// a node that dies mid-attempt leaves it to whoever finds it due when the lease ends.
    /// PostgreSQL skips rows another node is claiming (`FOR UPDATE SKIP LOCKED`); SQLite has one
    /// writer.
    pub async fn claim_due_webhooks(
        &self,
        limit: u64,
        lease_ms: i64,
    ) -> StoreResult<Vec<webhook::Model>> {
        super::guarded(async move {
            let _turn = self.write_turn().await;
            let backend = self.db.get_database_backend();
            let (lease, now, count, lock) = match backend {
                DbBackend::Postgres => ("$1", "$2", "$3", " FOR UPDATE SKIP LOCKED"),
                _ => ("?", "?", "?", ""),
            };
            let sql = format!(
                "UPDATE webhook_outbox SET next_attempt_at = {lease} WHERE id IN \
                 (SELECT id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= {now} \
                 ORDER BY next_attempt_at LIMIT {count}{lock}) RETURNING *"
            );
            let now = now_ms();
            let statement = Statement::from_sql_and_values(
                backend,
                sql,
                [(now + lease_ms).into(), now.into(), (limit as i64).into()],
            );
            let mut claimed = webhook::Entity::find()
                .from_raw_sql(statement)
                .all(&self.db)
                .await?;
            claimed.sort_by_key(|row| row.created_at);
            Ok(claimed)
        })
        .await
    }

    pub async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        super::guarded(async move {
            webhook::Entity::update_many()
                .col_expr(
                    webhook::Column::Status,
                    Expr::value(WebhookStatus::Delivered),
                )
                .col_expr(
                    webhook::Column::Attempts,
                    Expr::col(webhook::Column::Attempts).add(1),
                )
                .col_expr(webhook::Column::DeliveredAt, Expr::value(now_ms()))
                .filter(webhook::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up on when that is `None`.
    pub async fn webhook_attempt_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Option<i64>,
    ) -> StoreResult<()> {
        super::guarded(async move {
            let mut update = webhook::Entity::update_many()
                .col_expr(
                    webhook::Column::Attempts,
                    Expr::col(webhook::Column::Attempts).add(1),
                )
                .col_expr(webhook::Column::LastError, Expr::value(error));
            update = match next_attempt_at {
                Some(at) => update.col_expr(webhook::Column::NextAttemptAt, Expr::value(at)),
                None => {
                    update.col_expr(webhook::Column::Status, Expr::value(WebhookStatus::Failed))
                }
            };
            update
                .filter(webhook::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn webhooks_of_session(&self, session_id: &str) -> StoreResult<Vec<webhook::Model>> {
        super::guarded(async move {
            Ok(webhook::Entity::find()
                .filter(webhook::Column::SessionId.eq(session_id))
                .order_by_asc(webhook::Column::CreatedAt)
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn pending_webhook_count(&self) -> StoreResult<u64> {
        super::guarded(async move {
            use sea_orm::PaginatorTrait;
            Ok(webhook::Entity::find()
                .filter(webhook::Column::Status.eq(WebhookStatus::Pending))
                .count(&self.db)
                .await?)
        })
        .await
    }
}
