//! Agents, their revisions and assets. Generation debits credits in the same transaction that
//! creates the agent, and a failure refunds them exactly once.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::accounts::ledger;
use super::entities::{account, agent, agent_revision, asset};
use super::{now_ms, Store, StoreResult};
use crate::domain::agent::AgentStatus;

pub struct NewAgent {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub system_prompt: String,
    pub voice_agent: Option<String>,
    pub allowed_origins: String,
    pub published: bool,
    pub aspect_ratio: String,
    pub credits: i64,
}

pub enum CreateAgent {
    Created(Box<agent::Model>),
    InsufficientCredits { needed: i64 },
    Duplicate,
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Default)]
pub struct AgentChanges {
    pub system_prompt: Option<String>,
    pub name: Option<String>,
    pub allowed_origins: Option<String>,
    pub published: Option<bool>,
    pub voice_agent: Option<Option<String>>,
}

pub struct Progress<'a> {
    pub status: AgentStatus,
    pub progress: f64,
    pub message: &'a str,
    pub step: Option<&'a str>,
}

impl Store {
    pub async fn create_agent(&self, new: NewAgent) -> StoreResult<CreateAgent> {
        super::guarded(async move {
            let now = now_ms();
            // Write first: in SQLite a transaction that reads before it writes can lose its snapshot
            // to a racing writer and fail instead of waiting for the lock.
            let txn = self.db.begin().await?;
            let debited = account::Entity::update_many()
                .col_expr(
                    account::Column::Credits,
                    Expr::col(account::Column::Credits).sub(new.credits),
                )
                .filter(account::Column::Id.eq(new.account_id.clone()))
                .filter(account::Column::Credits.gte(new.credits))
                .exec(&txn)
                .await?;
            if debited.rows_affected == 0 {
                return Ok(CreateAgent::InsufficientCredits {
                    needed: new.credits,
                });
            }
            if agent::Entity::find_by_id(new.id.clone())
                .one(&txn)
                .await?
                .is_some()
            {
                return Ok(CreateAgent::Duplicate);
            }
            let model = agent::ActiveModel {
                id: Set(new.id.clone()),
                account_id: Set(new.account_id.clone()),
                name: Set(new.name),
                status: Set(AgentStatus::Processing),
                progress: Set(0.0),
                progress_msg: Set("Queued".into()),
                current_step: Set(None),
                error_message: Set(None),
                system_prompt: Set(new.system_prompt.clone()),
                revision: Set(1),
                voice_agent: Set(new.voice_agent.clone()),
                allowed_origins: Set(new.allowed_origins),
                published: Set(new.published),
                aspect_ratio: Set(new.aspect_ratio),
                image_asset_id: Set(None),
                video_asset_id: Set(None),
                audio_asset_id: Set(None),
                model_asset_id: Set(None),
                avatar_asset_id: Set(None),
                credits_charged: Set(new.credits),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            }
            .insert(&txn)
            .await?;
            agent_revision::ActiveModel {
                agent_id: Set(new.id.clone()),
                revision: Set(1),
                system_prompt: Set(new.system_prompt),
                voice_agent: Set(new.voice_agent),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
            ledger(
                &txn,
                &new.account_id,
                None,
                Some(&new.id),
                "credits",
                -new.credits,
                "agent generation",
            )
            .await?;
            txn.commit().await?;
            Ok(CreateAgent::Created(Box::new(model)))
        })
        .await
    }

    /// Any live (not deleted) agent by id, whoever owns it: public connect and links resolve this way.
    pub async fn agent(&self, id: &str) -> StoreResult<Option<agent::Model>> {
        super::guarded(async move {
            Ok(agent::Entity::find_by_id(id.to_string())
                .filter(agent::Column::DeletedAt.is_null())
                .one(&self.db)
                .await?)
        })
        .await
    }

    /// The agent if `account_id` owns it; another tenant's agent is indistinguishable from none.
    pub async fn agent_of(&self, account_id: &str, id: &str) -> StoreResult<Option<agent::Model>> {
        super::guarded(
            async move { Ok(self.agent(id).await?.filter(|a| a.account_id == account_id)) },
        )
        .await
    }

    pub async fn agents_of(&self, account_id: &str) -> StoreResult<Vec<agent::Model>> {
        super::guarded(async move {
            Ok(agent::Entity::find()
                .filter(agent::Column::AccountId.eq(account_id))
                .filter(agent::Column::DeletedAt.is_null())
                .order_by_asc(agent::Column::CreatedAt)
                .all(&self.db)
                .await?)
        })
        .await
    }

    /// Published agents that name any origin at all: what a CORS preflight is checked against.
    pub async fn public_agents_origins(&self) -> StoreResult<Vec<String>> {
        super::guarded(async move {
            Ok(agent::Entity::find()
                .filter(agent::Column::DeletedAt.is_null())
                .filter(agent::Column::Published.eq(true))
                .filter(agent::Column::AllowedOrigins.ne("[]"))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|a| a.allowed_origins)
                .collect())
        })
        .await
    }

    pub async fn agent_revision(
        &self,
        id: &str,
        revision: i64,
    ) -> StoreResult<Option<agent_revision::Model>> {
        super::guarded(async move {
            Ok(
                agent_revision::Entity::find_by_id((id.to_string(), revision))
                    .one(&self.db)
                    .await?,
            )
        })
        .await
    }

    /// Applies `changes`; a new prompt or voice makes a new revision. `None` if no such agent.
    pub async fn update_agent(
        &self,
        account_id: &str,
        id: &str,
        changes: AgentChanges,
    ) -> StoreResult<Option<agent::Model>> {
        super::guarded(async move {
            let now = now_ms();
            let txn = self.db.begin().await?;
            // Write first (see create_agent): this also takes the row for the rest of the transaction.
            let touched = agent::Entity::update_many()
                .col_expr(agent::Column::UpdatedAt, Expr::value(now))
                .filter(agent::Column::Id.eq(id))
                .filter(agent::Column::AccountId.eq(account_id))
                .filter(agent::Column::DeletedAt.is_null())
                .exec(&txn)
                .await?;
            if touched.rows_affected == 0 {
                return Ok(None);
            }
            let Some(current) = agent::Entity::find_by_id(id.to_string()).one(&txn).await? else {
                return Ok(None);
            };
            let new_revision = changes
                .system_prompt
                .as_ref()
                .is_some_and(|p| *p != current.system_prompt)
                || changes
                    .voice_agent
                    .as_ref()
                    .is_some_and(|v| *v != current.voice_agent);
            let mut model: agent::ActiveModel = current.clone().into();
            if let Some(name) = changes.name {
                model.name = Set(name);
            }
            if let Some(origins) = changes.allowed_origins {
                model.allowed_origins = Set(origins);
            }
            if let Some(published) = changes.published {
                model.published = Set(published);
            }
            if new_revision {
                let prompt = changes
                    .system_prompt
                    .unwrap_or(current.system_prompt.clone());
                let voice = changes.voice_agent.unwrap_or(current.voice_agent.clone());
                let revision = current.revision + 1;
                agent_revision::ActiveModel {
                    agent_id: Set(id.to_string()),
                    revision: Set(revision),
                    system_prompt: Set(prompt.clone()),
                    voice_agent: Set(voice.clone()),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await?;
                model.system_prompt = Set(prompt);
                model.voice_agent = Set(voice);
                model.revision = Set(revision);
            }
            model.updated_at = Set(now);
            let updated = model.update(&txn).await?;
            txn.commit().await?;
            Ok(Some(updated))
        })
        .await
    }

    /// Soft delete; `false` if there was no such agent.
    pub async fn delete_agent(&self, account_id: &str, id: &str) -> StoreResult<bool> {
        super::guarded(async move {
            let done = agent::Entity::update_many()
                .col_expr(agent::Column::DeletedAt, Expr::value(now_ms()))
                .filter(agent::Column::Id.eq(id))
                .filter(agent::Column::AccountId.eq(account_id))
                .filter(agent::Column::DeletedAt.is_null())
                .exec(&self.db)
                .await?;
            Ok(done.rows_affected == 1)
        })
        .await
    }

    pub async fn set_agent_progress(&self, id: &str, p: Progress<'_>) -> StoreResult<()> {
        super::guarded(async move {
            agent::Entity::update_many()
                .col_expr(agent::Column::Status, Expr::value(p.status))
                .col_expr(agent::Column::Progress, Expr::value(p.progress))
                .col_expr(agent::Column::ProgressMsg, Expr::value(p.message))
                .col_expr(
                    agent::Column::CurrentStep,
                    Expr::value(p.step.map(str::to_string)),
                )
                .col_expr(agent::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(agent::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn set_agent_asset(
        &self,
        id: &str,
        column: agent::Column,
        asset_id: &str,
    ) -> StoreResult<()> {
        super::guarded(async move {
            agent::Entity::update_many()
                .col_expr(column, Expr::value(asset_id))
                .filter(agent::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Marks generation failed and refunds its credits; the status guard makes the refund happen once.
    pub async fn fail_agent(&self, id: &str, message: &str) -> StoreResult<()> {
        super::guarded(async move {
            let txn = self.db.begin().await?;
            let marked = agent::Entity::update_many()
                .col_expr(agent::Column::Status, Expr::value(AgentStatus::Failed))
                .col_expr(agent::Column::ErrorMessage, Expr::value(message))
                .col_expr(agent::Column::ProgressMsg, Expr::value("Failed"))
                .col_expr(agent::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(agent::Column::Id.eq(id))
                .filter(agent::Column::Status.ne(AgentStatus::Failed))
                .exec(&txn)
                .await?;
            let Some(current) = agent::Entity::find_by_id(id.to_string()).one(&txn).await? else {
                return Ok(());
            };
            if marked.rows_affected == 1 && current.credits_charged > 0 {
                account::Entity::update_many()
                    .col_expr(
                        account::Column::Credits,
                        Expr::col(account::Column::Credits).add(current.credits_charged),
                    )
                    .filter(account::Column::Id.eq(current.account_id.clone()))
                    .exec(&txn)
                    .await?;
                ledger(
                    &txn,
                    &current.account_id,
                    None,
                    Some(id),
                    "credits",
                    current.credits_charged,
                    "generation failed: refund",
                )
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn insert_asset(&self, model: asset::Model) -> StoreResult<()> {
        super::guarded(async move {
            asset::ActiveModel::from(model).insert(&self.db).await?;
            Ok(())
        })
        .await
    }

    /// Rewrites a model asset (`kind` `model`) in place: an avatar's description upgraded to the
    /// current layout (a mesh added to a model made before it). Other kinds are never touched.
    /// Whether a row changed.
    pub async fn upgrade_model_asset(&self, id: &str, data: Vec<u8>) -> StoreResult<bool> {
        super::guarded(async move {
            let done = asset::Entity::update_many()
                .col_expr(asset::Column::Data, sea_orm::sea_query::Expr::value(data))
                .filter(asset::Column::Id.eq(id))
                .filter(asset::Column::Kind.eq("model"))
                .exec(&self.db)
                .await?;
            Ok(done.rows_affected == 1)
        })
        .await
    }

    pub async fn asset(&self, id: &str) -> StoreResult<Option<asset::Model>> {
        super::guarded(async move {
            Ok(asset::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?)
        })
        .await
    }
}
