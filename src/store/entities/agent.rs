use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub status: crate::domain::agent::AgentStatus,
    pub progress: f64,
    pub progress_msg: String,
    pub current_step: Option<String>,
    pub error_message: Option<String>,
    pub system_prompt: String,
    /// Latest revision number of prompt/voice settings (`v{revision}` as a deployment tag).
    pub revision: i64,
    /// JSON `{provider, agent_id, auth_method}`.
    pub voice_agent: Option<String>,
    /// JSON array of origins or hostnames; `*` allows any.
    pub allowed_origins: String,
    pub published: bool,
    pub aspect_ratio: String,
    pub image_asset_id: Option<String>,
    pub video_asset_id: Option<String>,
    pub audio_asset_id: Option<String>,
    pub model_asset_id: Option<String>,
    /// The face framed at the agent's aspect ratio (PNG): the renderer's base.
    pub avatar_asset_id: Option<String>,
    /// Credits debited for generation, refunded if it fails.
    pub credits_charged: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
