//! Sessions the database says are running but no actor runs: at start, those of this node's
//! previous run (and of any node long gone) end with `shutdown`; while serving, every node watches
//! the others' heartbeats (each live session's billing checkpoint refreshes its own), and ends the
//! sessions of a node whose heartbeat stopped with `node_lost`. The database decides who ends
//! each: the final write only ends a row still unended, so however many nodes sweep at once, one
//! bills it, releases its counts and sends its webhook.

use std::time::Duration;

use crate::actors::webhooks::Emit;
use crate::domain::events::LifecycleEvent;
use crate::domain::session::EndReason;
use crate::domain::session::SessionState;
use crate::state::AppState;
use crate::store::billing::FinalLine;
use crate::store::entities::session;
use crate::store::now_ms;

/// Sessions ended per transaction.
const BATCH: usize = 1_000;

/// How long a session's heartbeat may be silent before its node counts as lost: the setting, but
/// never under two checkpoints and a second (a live node refreshes it at every checkpoint).
fn lost_after_seconds(state: &AppState) -> u64 {
    let settings = &state.settings;
    let checkpoints = settings.billing.checkpoint_seconds.max(1) * 2 + 1;
    settings.sessions.node_lost_after_seconds.max(checkpoints)
}

fn stale_before(state: &AppState) -> i64 {
    now_ms() - lost_after_seconds(state) as i64 * 1000
}

/// At start: this node's unfinished sessions (a crash, a kill) and stale ones of any node end with
/// `shutdown`.
pub async fn reconcile(state: &AppState) {
    match state
        .store
        .orphaned_sessions(&state.node_id, stale_before(state))
        .await
    {
        Ok(rows) => end(state, &rows, EndReason::Shutdown).await,
        Err(e) => tracing::error!(error = %e, "could not look for orphaned sessions"),
    }
}

/// While serving: every quarter of the heartbeat timeout, the sessions of lost nodes end with
/// `node_lost`.
pub async fn watch_nodes(state: AppState) {
    let every = Duration::from_millis((lost_after_seconds(&state) * 250).max(250));
    loop {
        tokio::time::sleep(every).await;
        match state
            .store
            .lost_sessions(&state.node_id, stale_before(&state))
            .await
        {
            Ok(rows) if rows.is_empty() => {}
            Ok(rows) => end(&state, &rows, EndReason::NodeLost).await,
            Err(e) => tracing::warn!(error = %e, "could not look for sessions of lost nodes"),
        }
    }
}

/// Ends `rows` through the one batched final write, each at its last checkpoint (`started_at` +
/// what was billed, so its billed seconds stay its live seconds; one that never went live ends
/// now), then sends the webhooks of those this call ended and deletes their rooms.
async fn end(state: &AppState, rows: &[session::Model], reason: EndReason) {
    let lines: Vec<FinalLine> = rows
        .iter()
        .map(|row| FinalLine {
            session_id: row.id.clone(),
            account_id: row.account_id.clone(),
            link_id: row.link_id.clone(),
            total_seconds: None,
            state: SessionState::Stopped,
            end_reason: reason.as_str(),
            failure_reason: None,
            refund_link: false,
            ended_at: row
                .started_at
                .map_or_else(now_ms, |started| started + row.billed_seconds * 1000),
        })
        .collect();
    let mut ended = Vec::new();
    for batch in lines.chunks(BATCH) {
        match state.store.finish_many(batch).await {
            Ok(settled) => ended.extend(
                batch
                    .iter()
                    .filter(|l| settled.ended.contains_key(&l.session_id))
                    .map(|l| l.session_id.clone()),
            ),
            Err(e) => {
                tracing::error!(error = %e, reason = reason.as_str(), "could not end sessions")
            }
        }
    }
    state
        .metrics
        .orphans_ended
        .with_label_values(&[reason.as_str()])
        .inc_by(ended.len() as u64);
    for session_id in ended {
        let node = rows
            .iter()
            .find(|r| r.id == session_id)
            .map(|r| r.node_id.clone());
        tracing::warn!(session = %session_id, node = ?node, reason = reason.as_str(), "ended a session no actor runs");
        state.webhooks.do_send(Emit {
            session_id,
            event: LifecycleEvent::Stopped,
        });
    }
    for row in rows {
        if let Err(e) = state.rooms.delete(&row.room_name).await {
            tracing::debug!(session = %row.id, error = %e, "orphan room delete");
        }
    }
}
