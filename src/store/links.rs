//! Shareable links. A link's `uses` only ever grows through the conditional write in
//! `sessions::admit`, so it cannot pass `use_limit` however many starts race.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::link;
use super::{now_ms, Store, StoreResult};
use crate::domain::link::LinkStatus;

impl Store {
    pub async fn create_link(&self, model: link::Model) -> StoreResult<link::Model> {
        super::guarded(async move { Ok(link::ActiveModel::from(model).insert(&self.db).await?) })
            .await
    }

    pub async fn link(&self, id: &str) -> StoreResult<Option<link::Model>> {
        super::guarded(async move {
            Ok(link::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?)
        })
        .await
    }

    pub async fn link_of(&self, account_id: &str, id: &str) -> StoreResult<Option<link::Model>> {
        super::guarded(
            async move { Ok(self.link(id).await?.filter(|l| l.account_id == account_id)) },
        )
        .await
    }

    pub async fn links_of(&self, account_id: &str) -> StoreResult<Vec<link::Model>> {
        super::guarded(async move {
            Ok(link::Entity::find()
                .filter(link::Column::AccountId.eq(account_id))
                .order_by_desc(link::Column::CreatedAt)
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// Revokes the link; `None` if the account has no such link.
    pub async fn revoke_link(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<link::Model>> {
        super::guarded(async move {
            link::Entity::update_many()
                .col_expr(link::Column::Status, Expr::value(LinkStatus::Revoked))
                .filter(link::Column::Id.eq(id))
                .filter(link::Column::AccountId.eq(account_id))
                .exec(&self.db)
                .await?;
            self.link_of(account_id, id).await
        })
        .await
    }
}

/// The status a client sees: stored `active` links read `expired` or `exhausted` once they are.
pub fn effective_status(link: &link::Model) -> LinkStatus {
    if link.status != LinkStatus::Active {
        return link.status;
    }
    if link.expires_at.is_some_and(|t| t <= now_ms()) {
        return LinkStatus::Expired;
    }
    if link.use_limit.is_some_and(|limit| link.uses >= limit) {
        return LinkStatus::Exhausted;
    }
    LinkStatus::Active
}
