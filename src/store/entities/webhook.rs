use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub session_id: Option<String>,
    pub url: String,
    pub event: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: crate::domain::events::WebhookStatus,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
