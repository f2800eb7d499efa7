//! Accounts, API keys, balances and the usage ledger.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::entities::{account, api_key, usage};
use super::{now_ms, Store, StoreError, StoreResult};
use crate::crypto::{constant_time_eq, sha256_hex};
use crate::domain::ids;

pub struct NewAccount {
    pub name: String,
    pub concurrency_limit: i64,
    pub balance_ms: i64,
    pub credits: i64,
    pub webhook_url: Option<String>,
    pub max_session_seconds: Option<i64>,
}

/// What `account create` prints: the secret is shown this once and never stored in clear.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedKey {
    pub account_id: String,
    pub key_id: String,
    pub api_key: String,
}

/// A verified key: the account it belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: String,
    pub key_id: String,
}

impl Store {
    pub async fn create_account(&self, new: NewAccount) -> StoreResult<CreatedKey> {
        super::guarded(async move {
            let now = now_ms();
            let account_id = ids::account_id();
            let txn = self.db.begin().await?;
            account::ActiveModel {
                id: Set(account_id.clone()),
                name: Set(new.name),
                concurrency_limit: Set(new.concurrency_limit),
                live_sessions: Set(0),
                balance_ms: Set(new.balance_ms),
                credits: Set(new.credits),
                max_session_seconds: Set(new.max_session_seconds),
                webhook_url: Set(new.webhook_url),
                webhook_secret_sealed: Set(self.master_key.seal(&ids::webhook_secret())),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
            let created = self.insert_key(&txn, &account_id).await?;
            ledger(
                &txn,
                &account_id,
                None,
                None,
                "seconds",
                new.balance_ms / 1000,
                "initial grant",
            )
            .await?;
            ledger(
                &txn,
                &account_id,
                None,
                None,
                "credits",
                new.credits,
                "initial grant",
            )
            .await?;
            txn.commit().await?;
            Ok(created)
        })
        .await
    }

    pub async fn create_key(&self, account_id: &str) -> StoreResult<Option<CreatedKey>> {
        super::guarded(async move {
            if self.account(account_id).await?.is_none() {
                return Ok(None);
            }
            Ok(Some(self.insert_key(&self.db, account_id).await?))
        })
        .await
    }

    async fn insert_key(
        &self,
        db: &impl ConnectionTrait,
        account_id: &str,
    ) -> StoreResult<CreatedKey> {
        let key_id = ids::key_id();
        let secret = ids::api_secret();
        api_key::ActiveModel {
            key_id: Set(key_id.clone()),
            account_id: Set(account_id.to_string()),
            secret_hash: Set(sha256_hex(secret.as_bytes())),
            secret_sealed: Set(self.master_key.seal(&secret)),
            created_at: Set(now_ms()),
            revoked_at: Set(None),
        }
        .insert(db)
        .await?;
        Ok(CreatedKey {
            account_id: account_id.to_string(),
            key_id,
            api_key: secret,
        })
    }

    pub async fn accounts(&self) -> StoreResult<Vec<account::Model>> {
        super::guarded(async move {
            Ok(account::Entity::find()
                .order_by_asc(account::Column::CreatedAt)
                .all(&self.db)
                .await?)
        })
        .await
    }

    pub async fn account(&self, id: &str) -> StoreResult<Option<account::Model>> {
        super::guarded(async move {
            Ok(account::Entity::find_by_id(id.to_string())
                .one(&self.db)
                .await?)
        })
        .await
    }

    pub async fn webhook_secret(&self, account: &account::Model) -> StoreResult<String> {
        super::guarded(async move {
            self.master_key
                .unseal(&account.webhook_secret_sealed)
                .map_err(|e| StoreError::Corrupt(format!("webhook secret of {}: {e}", account.id)))
        })
        .await
    }

    pub async fn set_account_webhook(&self, id: &str, url: Option<String>) -> StoreResult<()> {
        super::guarded(async move {
            account::Entity::update_many()
                .col_expr(account::Column::WebhookUrl, Expr::value(url))
                .filter(account::Column::Id.eq(id))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Adds minutes (as milliseconds) and credits; `None` when the account does not exist.
    pub async fn topup(
        &self,
        id: &str,
        add_ms: i64,
        add_credits: i64,
    ) -> StoreResult<Option<account::Model>> {
        super::guarded(async move {
            let txn = self.db.begin().await?;
            let updated = account::Entity::update_many()
                .col_expr(
                    account::Column::BalanceMs,
                    Expr::col(account::Column::BalanceMs).add(add_ms),
                )
                .col_expr(
                    account::Column::Credits,
                    Expr::col(account::Column::Credits).add(add_credits),
                )
                .filter(account::Column::Id.eq(id))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                return Ok(None);
            }
            if add_ms != 0 {
                ledger(&txn, id, None, None, "seconds", add_ms / 1000, "top-up").await?;
            }
            if add_credits != 0 {
                ledger(&txn, id, None, None, "credits", add_credits, "top-up").await?;
            }
            txn.commit().await?;
            self.account(id).await
        })
        .await
    }

    /// Finds the key a presented secret belongs to (constant-time confirmation of the digest).
    pub async fn authenticate_secret(&self, secret: &str) -> StoreResult<Option<Principal>> {
        super::guarded(async move {
            let digest = sha256_hex(secret.as_bytes());
            let key = api_key::Entity::find()
                .filter(api_key::Column::SecretHash.eq(digest.clone()))
                .filter(api_key::Column::RevokedAt.is_null())
                .one(&self.db)
                .await?;
            Ok(key
                .filter(|k| constant_time_eq(k.secret_hash.as_bytes(), digest.as_bytes()))
                .map(|k| Principal {
                    account_id: k.account_id,
                    key_id: k.key_id,
                }))
        })
        .await
    }

    /// The clear secret of a key, to verify a JWT signed with it.
    pub async fn key_secret(&self, key_id: &str) -> StoreResult<Option<(Principal, String)>> {
        super::guarded(async move {
            let Some(key) = api_key::Entity::find_by_id(key_id.to_string())
                .filter(api_key::Column::RevokedAt.is_null())
                .one(&self.db)
                .await?
            else {
                return Ok(None);
            };
            let secret = self
                .master_key
                .unseal(&key.secret_sealed)
                .map_err(|e| StoreError::Corrupt(format!("secret of {}: {e}", key.key_id)))?;
            Ok(Some((
                Principal {
                    account_id: key.account_id,
                    key_id: key.key_id,
                },
                secret,
            )))
        })
        .await
    }

    /// Returns a session's concurrency slot.
    pub async fn release_live(&self, account_id: &str) -> StoreResult<()> {
        super::guarded(async move {
            account::Entity::update_many()
                .col_expr(
                    account::Column::LiveSessions,
                    Expr::col(account::Column::LiveSessions).sub(1),
                )
                .filter(account::Column::Id.eq(account_id))
                .filter(account::Column::LiveSessions.gt(0))
                .exec(&self.db)
                .await?;
            Ok(())
        })
        .await
    }

    /// Debits `seconds` of session time (never below zero) and records it in the ledger and on the
    /// session, in one transaction. Returns the balance left, in milliseconds.
    pub async fn bill_seconds(
        &self,
        account_id: &str,
        session_id: &str,
        seconds: i64,
    ) -> StoreResult<i64> {
        super::guarded(async move {
            use super::entities::session;
            let debit = seconds * 1000;
            let txn = self.db.begin().await?;
            account::Entity::update_many()
                .col_expr(
                    account::Column::BalanceMs,
                    Expr::case(
                        Expr::col(account::Column::BalanceMs).gt(debit),
                        Expr::col(account::Column::BalanceMs).sub(debit),
                    )
                    .finally(0i64)
                    .into(),
                )
                .filter(account::Column::Id.eq(account_id))
                .exec(&txn)
                .await?;
            session::Entity::update_many()
                .col_expr(
                    session::Column::BilledSeconds,
                    Expr::col(session::Column::BilledSeconds).add(seconds),
                )
                .col_expr(session::Column::HeartbeatAt, Expr::value(now_ms()))
                .filter(session::Column::Id.eq(session_id))
                .exec(&txn)
                .await?;
            ledger(
                &txn,
                account_id,
                Some(session_id),
                None,
                "seconds",
                -seconds,
                "session time",
            )
            .await?;
            let balance = account::Entity::find_by_id(account_id.to_string())
                .one(&txn)
                .await?
                .map(|a| a.balance_ms)
                .unwrap_or(0);
            txn.commit().await?;
            Ok(balance)
        })
        .await
    }
}

/// One line of the usage ledger; `amount` is negative for a debit.
pub(super) async fn ledger(
    db: &impl ConnectionTrait,
    account_id: &str,
    session_id: Option<&str>,
    agent_id: Option<&str>,
    kind: &str,
    amount: i64,
    reason: &str,
) -> StoreResult<()> {
    usage::ActiveModel {
        account_id: Set(account_id.to_string()),
        session_id: Set(session_id.map(str::to_string)),
        agent_id: Set(agent_id.map(str::to_string)),
        kind: Set(kind.to_string()),
        amount: Set(amount),
        reason: Set(reason.to_string()),
        created_at: Set(now_ms()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

impl Store {
    /// Ledger lines of an account, oldest first (tests and audits).
    pub async fn usage(&self, account_id: &str) -> StoreResult<Vec<usage::Model>> {
        super::guarded(async move {
            Ok(usage::Entity::find()
                .filter(usage::Column::AccountId.eq(account_id))
                .order_by_asc(usage::Column::Id)
                .all(&self.db)
                .await?)
        })
        .await
    }
}
