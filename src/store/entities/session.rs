use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub agent_id: String,
    pub agent_revision: i64,
    /// Which dialect started it: `api`, `link`, `connect`, `deployment`.
    pub source: String,
    pub link_id: Option<String>,
    pub state: crate::domain::session::SessionState,
    pub room_name: String,
    pub agent_identity: String,
    /// The LiveKit URL of a room the caller brought; `None`: this server's room.
    pub livekit_url: Option<String>,
    pub user_identity: String,
    pub aspect_ratio: String,
    pub client_user_ref: Option<String>,
    pub metadata: Option<String>,
    pub env: Option<String>,
    pub tag: Option<String>,
    /// JSON `{url, events}` of the per-session webhook.
    pub webhook: Option<String>,
    pub max_duration_seconds: i64,
    pub idle_timeout_seconds: i64,
    /// The node whose actor runs the session (the seam for several nodes).
    pub node_id: String,
    pub heartbeat_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub updated_at: i64,
    pub end_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub billed_seconds: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The account it bills (read with it where both are needed: one statement, not two).
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::AccountId",
        to = "super::account::Column::Id"
    )]
    Account,
}

impl Related<super::account::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Account.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
