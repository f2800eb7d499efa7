use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub concurrency_limit: i64,
    pub live_sessions: i64,
    /// Remaining session time in milliseconds; sessions are debited whole seconds.
    pub balance_ms: i64,
    pub credits: i64,
    pub max_session_seconds: Option<i64>,
    pub webhook_url: Option<String>,
    pub webhook_secret_sealed: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
