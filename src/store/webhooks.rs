//! The webhook outbox: a delivery is written here before any attempt, so it survives a restart.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::webhook;
use super::{now_ms, Store, StoreResult};

impl Store {
    pub async fn enqueue_webhook(&self, row: webhook::Model) -> StoreResult<()> {
        super::guarded(async move {
            webhook::ActiveModel::from(row).insert(&self.db).await?;
            Ok(())
        })
        .await
    }

    /// Pending deliveries whose next attempt is due, oldest first.
    pub async fn due_webhooks(&self, limit: u64) -> StoreResult<Vec<webhook::Model>> {
        super::guarded(async move {
            Ok(webhook::Entity::find()
                .filter(webhook::Column::Status.eq("pending"))
                .filter(webhook::Column::NextAttemptAt.lte(now_ms()))
                .order_by_asc(webhook::Column::NextAttemptAt)
                .limit(limit)
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        super::guarded(async move {
            webhook::Entity::update_many()
                .col_expr(webhook::Column::Status, Expr::value("delivered"))
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
                None => update.col_expr(webhook::Column::Status, Expr::value("failed")),
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
                .filter(webhook::Column::Status.eq("pending"))
                .count(&self.db)
                .await?)
        })
        .await
    }
}
