//! The Webhooks actor: a durable outbox. An event becomes one row per endpoint before any attempt,
//! and a delivery loop POSTs due rows, signed, retrying with exponential backoff; rows left pending
//! by a restart are picked up by the next run.

use std::time::Duration;

use actix::prelude::*;
use serde_json::json;

use crate::config::WebhookSettings;
use crate::crypto::webhook_signature;
use crate::domain::backoff::Backoff;
use crate::domain::events::{EventNaming, LifecycleEvent, SessionWebhook, WebhookStatus};
use crate::domain::ids;
use crate::domain::session::SessionState;
use crate::domain::views::Urls;
use crate::metrics::Metrics;
use crate::net::UrlPolicy;
use crate::store::entities::{account, session, webhook};
use crate::store::{iso, now_ms, Store, StoreResult};

/// A session changed state: tell the account's and the session's endpoints.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit {
    pub session_id: String,
    pub event: LifecycleEvent,
}

/// An agent's generation finished: `agent.ready` or `agent.failed` to the account's endpoint.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmitAgent {
    pub agent_id: String,
    pub ready: bool,
}

/// Deliver what is due now.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver;

pub struct Webhooks {
    store: Store,
    http: reqwest::Client,
    settings: WebhookSettings,
    policy: UrlPolicy,
    urls: Urls,
    metrics: Metrics,
    delivering: bool,
    /// Session events waiting for the read in flight (see `emit_waiting`).
    waiting: Vec<Emit>,
    reading: bool,
}

impl Webhooks {
    pub fn new(
        store: Store,
        http: reqwest::Client,
        settings: WebhookSettings,
        policy: UrlPolicy,
        urls: Urls,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            http,
            settings,
            policy,
            urls,
            metrics,
            delivering: false,
            waiting: Vec::new(),
            reading: false,
        }
    }
}

impl Actor for Webhooks {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(
            Duration::from_millis(self.settings.poll_interval_ms.max(50)),
            |_, ctx| {
                ctx.notify(Deliver);
            },
        );
        ctx.notify(Deliver);
    }
}

/// A pending delivery of `event` with `data`, due now, as the outbox stores it.
pub fn outbox_row(
    account_id: &str,
    session_id: Option<&str>,
    url: &str,
    event: &str,
    data: serde_json::Value,
) -> webhook::Model {
    let id = ids::delivery_id();
    let now = now_ms();
    let body = json!({"id": id, "event": event, "created_at": iso(now), "data": data});
    webhook::Model {
        id,
        account_id: account_id.to_string(),
        session_id: session_id.map(str::to_string),
        url: url.to_string(),
        event: event.to_string(),
        body: body.to_string(),
        attempts: 0,
        next_attempt_at: now,
        status: WebhookStatus::Pending,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

/// Queues each event of `batch` for its session's account's and its own webhook, in the order
/// they came, having read the sessions (with their accounts) in one statement; whether it queued
/// any.
async fn enqueue_session_events(store: &Store, urls: &Urls, batch: &[Emit]) -> StoreResult<bool> {
    let ids: Vec<&str> = batch.iter().map(|e| e.session_id.as_str()).collect();
    let found = store.sessions_and_accounts(&ids).await?;
    let rows: Vec<webhook::Model> = batch
        .iter()
        .filter_map(|e| {
            found
                .get(&e.session_id)
                .map(|(s, a)| outbox_rows(urls, s, a, e.event))
        })
        .flatten()
        .collect();
    let queued = !rows.is_empty();
    store.enqueue_webhooks(rows).await?;
    Ok(queued)
}

/// The deliveries of `event` of `session`: to its account's webhook and to its own.
fn outbox_rows(
    urls: &Urls,
    session: &session::Model,
    account: &account::Model,
    event: LifecycleEvent,
) -> Vec<webhook::Model> {
    let mut rows = Vec::new();
    let mut view = session.view(urls);
    // `stopping` is not written to the row, which goes from `live` to its end in one write.
    if matches!(event, LifecycleEvent::Stopping) && session.ended_at.is_none() {
        view.status = SessionState::Stopping.as_str().into();
    }
    let data = serde_json::to_value(view).unwrap_or_default();
    if let Some(url) = &account.webhook_url {
        rows.push(outbox_row(
            &account.id,
            Some(&session.id),
            url,
            &event.name(EventNaming::Own),
            data.clone(),
        ));
    }
    let hook: Option<SessionWebhook> = session
        .webhook
        .as_deref()
        .and_then(|w| serde_json::from_str(w).ok());
    if let Some(hook) = hook {
        let name = event.name(EventNaming::of_source(&session.source));
        if hook
            .events
            .as_ref()
            .is_none_or(|events| events.contains(&name))
        {
            rows.push(outbox_row(
                &account.id,
                Some(&session.id),
                &hook.url,
                &name,
                data,
            ));
        }
    }
    rows
}

/// After an event: delivers at once what it queued. An event that queued nothing (no webhook
/// configured) claims nothing: claiming is a write, and the poll finds anything else due.
fn deliver_if_queued(queued: bool, _: &mut Webhooks, ctx: &mut Context<Webhooks>) {
    if queued {
        ctx.notify(Deliver);
    }
}

impl Webhooks {
    /// Queues the waiting session events, read together; events that arrive meanwhile wait for
    /// the next read. One read an event when they come one at a time, far fewer under load.
    fn emit_waiting(&mut self, ctx: &mut Context<Self>) {
        if self.reading || self.waiting.is_empty() {
            return;
        }
        self.reading = true;
        let batch = std::mem::take(&mut self.waiting);
        let store = self.store.clone();
        let urls = self.urls.clone();
        ctx.spawn(
            async move {
                enqueue_session_events(&store, &urls, &batch)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(events = batch.len(), error = %e, "webhook enqueue failed");
                        false
                    })
            }
            .into_actor(self)
            .map(|queued, act, ctx| {
                act.reading = false;
                deliver_if_queued(queued, act, ctx);
                act.emit_waiting(ctx);
            }),
        );
    }
}

impl Handler<Emit> for Webhooks {
    type Result = ();

    fn handle(&mut self, msg: Emit, ctx: &mut Self::Context) {
        self.metrics.actor_message("webhooks", "emit");
        self.waiting.push(msg);
        self.emit_waiting(ctx);
    }
}

impl Handler<EmitAgent> for Webhooks {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: EmitAgent, _: &mut Self::Context) -> Self::Result {
        self.metrics.actor_message("webhooks", "emit_agent");
        let store = self.store.clone();
        let urls = self.urls.clone();
        Box::pin(
            async move {
                let result: StoreResult<bool> = async {
                    let Some(agent) = store.agent(&msg.agent_id).await? else {
                        return Ok(false);
                    };
                    let Some(account) = store.account(&agent.account_id).await? else {
                        return Ok(false);
                    };
                    let Some(url) = &account.webhook_url else {
                        return Ok(false);
                    };
                    let event = if msg.ready {
                        "agent.ready"
                    } else {
                        "agent.failed"
                    };
                    store
                        .enqueue_webhooks(vec![outbox_row(
                            &account.id,
                            None,
                            url,
                            event,
                            serde_json::to_value(agent.view(&urls)).unwrap_or_default(),
                        )])
                        .await?;
                    Ok(true)
                }
                .await;
                result.unwrap_or_else(|e| {
                    tracing::error!(agent = %msg.agent_id, error = %e, "webhook enqueue failed");
                    false
                })
            }
            .into_actor(self)
            .map(deliver_if_queued),
        )
    }
}

impl Handler<Deliver> for Webhooks {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Deliver, _: &mut Self::Context) -> Self::Result {
        if self.delivering {
            return Box::pin(actix::fut::ready(()));
        }
        self.delivering = true;
        let store = self.store.clone();
        let http = self.http.clone();
        let settings = self.settings.clone();
        let policy = self.policy;
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                // The lease outlasts an attempt (its request timeout), with room to record it.
                let lease_ms = (settings.request_timeout_seconds as i64 + 5) * 1000;
                let due = match store.claim_due_webhooks(64, lease_ms).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox read failed");
                        return;
                    }
                };
                let attempts = due
                    .into_iter()
                    .map(|row| deliver_one(&store, &http, &settings, policy, &metrics, row));
                futures_util::future::join_all(attempts).await;
                if let Ok(pending) = store.pending_webhook_count().await {
                    metrics.webhook_pending.set(pending as i64);
                }
            }
            .into_actor(self)
            .map(|_, act, _| act.delivering = false),
        )
    }
}

async fn deliver_one(
    store: &Store,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    policy: UrlPolicy,
    metrics: &Metrics,
    row: webhook::Model,
) {
    let outcome = attempt(store, http, policy, &row).await;
    let result = match outcome {
        Ok(()) => {
            metrics
                .webhook_deliveries
                .with_label_values(&["delivered"])
                .inc();
            store.webhook_delivered(&row.id).await
        }
        Err(error) => {
            let attempts = row.attempts as u32 + 1;
            let next = (attempts < settings.max_attempts).then(|| {
                let backoff = Backoff::new(
                    Duration::from_millis(settings.initial_backoff_ms),
                    Duration::from_millis(settings.max_backoff_ms),
                );
                now_ms() + backoff.after(attempts).as_millis() as i64
            });
            metrics
                .webhook_deliveries
                .with_label_values(&[if next.is_some() { "retry" } else { "gave_up" }])
                .inc();
            tracing::warn!(delivery = %row.id, url = %row.url, attempts, %error, "webhook delivery failed");
            store.webhook_attempt_failed(&row.id, &error, next).await
        }
    };
    if let Err(e) = result {
        tracing::error!(delivery = %row.id, error = %e, "outbox update failed");
    }
}

async fn attempt(
    store: &Store,
    http: &reqwest::Client,
    policy: UrlPolicy,
    row: &webhook::Model,
) -> Result<(), String> {
    let url = policy.parse(&row.url)?;
    policy.check_resolved(&url).await?;
    let account = store
        .account(&row.account_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("account no longer exists")?;
    let secret = store
        .webhook_secret(&account)
        .await
        .map_err(|e| e.to_string())?;
    let signature = webhook_signature(&secret, chrono::Utc::now().timestamp(), &row.body);
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-webhook-signature", signature)
        .header("x-webhook-id", &row.id)
        .body(row.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("endpoint answered {}", response.status()))
    }
}
