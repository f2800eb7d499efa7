//! Billing settles live time in batches (one transaction per checkpoint for every live session),
//! and a session's last seconds exactly at its end: billed seconds equal live seconds, the ledger
//! has a line per settlement (not per second), an outage of the database loses nothing, and the
//! account's live count always equals its sessions that have not ended. The rate limits of the
//! unauthenticated routes answer 429 before any database work.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_databases;

/// Live seconds of an ended session as its row records them (started_at → ended_at).
fn live_seconds(row: &Value) -> f64 {
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(row[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (at("ended_at") - at("started_at")) as f64 / 1000.0
}

async fn ledger_seconds(app: &TestApp, account: &str, session: &str) -> (i64, usize) {
    let ledger = app.state.store.usage(account).await.unwrap();
    let lines: Vec<_> = ledger
        .iter()
        .filter(|l| l.kind == "seconds" && l.session_id.as_deref() == Some(session))
        .collect();
    (lines.iter().map(|l| -l.amount).sum(), lines.len())
}

/// The account's live count equals its sessions that have not ended.
async fn counter_agrees(app: &TestApp, key: &str) {
    let info = app.account_info(key).await;
    let sessions = app.get("/v1/sessions?limit=500", key).await.body["data"]
        .as_array()
        .unwrap()
        .clone();
    let open = sessions.iter().filter(|s| s["ended_at"].is_null()).count() as i64;
    assert_eq!(info["live_sessions"].as_i64(), Some(open), "{info}");
}

async fn billing_is_exact_for_sessions_of_known_length(db: Db) {
    // Checkpoints every 2 s: sessions of 1, 3 and 6 s see none, one and several.
    let app = spawn_app_with(db, |s| s.billing.checkpoint_seconds = 2).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.started_session(&acct.key, &agent).await);
    }
    let mut stopped = Vec::new();
    for (id, hold) in ids.iter().zip([1000u64, 2100, 3300]) {
        tokio::time::sleep(Duration::from_millis(hold)).await;
        let r = app
            .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        stopped.push(r.body["data"].clone());
    }
    let mut total = 0;
    for row in &stopped {
        let id = row["session_id"].as_str().unwrap();
        assert_eq!(row["status"], "stopped", "{row}");
        let billed = row["billed_seconds"].as_i64().unwrap();
        let live = live_seconds(row);
        assert!(
            (billed as f64 - live).abs() <= 1.0,
            "billed {billed} s for {live:.2} s live: {row}"
        );
        let (in_ledger, lines) = ledger_seconds(&app, &acct.id, id).await;
        assert_eq!(in_ledger, billed, "the ledger has what the session has");
        // One line per settlement (checkpoints every 2 s, and the end), never one per second.
        assert!(
            lines as f64 <= live / 2.0 + 2.0,
            "{lines} ledger lines for {live:.1} s"
        );
        total += billed;
    }
    let info = app.account_info(&acct.key).await;
    assert_eq!(
        info["seconds_remaining"].as_i64(),
        Some(600 - total),
        "{info}"
    );
    counter_agrees(&app, &acct.key).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("avs_billing_settlements_total{kind=\"final\"}"));
}

/// Starts and stops racing each other leave no drift: every session ends, once, billed.
async fn counters_agree_after_racing_starts_and_stops(db: Db) {
    let app = spawn_app_with(db, |s| s.billing.checkpoint_seconds = 1).await;
    let acct = app.account(6, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let starts = (0..16).map(|_| app.start_session(&acct.key, &agent));
    let started: Vec<Reply> = futures_util::future::join_all(starts).await;
    let ids: Vec<String> = started
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6, "exactly the limit got in");
    assert!(started
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 429 && r.error_code() == "concurrency_limit"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Each stopped twice at once, and new starts racing the stops.
    let paths: Vec<String> = ids
        .iter()
        .flat_map(|id| vec![format!("/v1/sessions/{id}/stop"); 2])
        .collect();
    let stops = paths
        .iter()
        .map(|path| app.post(path, &acct.key, json!({})));
    let (_, more) = tokio::join!(
        futures_util::future::join_all(stops),
        futures_util::future::join_all((0..6).map(|_| app.start_session(&acct.key, &agent)))
    );
    for r in more.iter().filter(|r| r.status == 200) {
        let id = r.body["session_id"].as_str().unwrap();
        app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
            .await;
    }
    for id in &ids {
        let row = app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
        assert_eq!(row["status"], "stopped", "{row}");
        let (in_ledger, _) = ledger_seconds(&app, &acct.id, id).await;
        assert_eq!(in_ledger, row["billed_seconds"].as_i64().unwrap(), "{row}");
        assert!((row["billed_seconds"].as_i64().unwrap() as f64 - live_seconds(&row)).abs() <= 1.0);
    }
    counter_agrees(&app, &acct.key).await;
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);
}

/// The database goes away for a while mid-session (PostgreSQL refuses connections and drops
/// those it had): the session lives on, its time is kept, and once the database is back every
/// second is billed.
#[actix_web::test]
async fn a_database_outage_loses_no_billed_time() {
    let app = spawn_app_with(Db::Postgres, |s| {
        s.billing.checkpoint_seconds = 1;
        s.database.acquire_timeout_ms = 500;
    })
    .await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let url = app.state.settings.database_url();
    let name = url.rsplit('/').next().unwrap().to_string();
    let admin = Database::connect(postgres_admin_url()).await.unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    // Three seconds without a database: checkpoints fail and are kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = app.get(&format!("/v1/sessions/{id}"), &acct.key).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.error_code(), "unavailable");
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = r.body["data"].clone();
    let billed = row["billed_seconds"].as_i64().unwrap();
    let live = live_seconds(&row);
    assert!(
        (billed as f64 - live).abs() <= 1.0,
        "billed {billed} s for {live:.2} s live across the outage: {row}"
    );
    assert!(live >= 5.0, "{live}");
    let (in_ledger, _) = ledger_seconds(&app, &acct.id, &id).await;
    assert_eq!(in_ledger, billed);
    counter_agrees(&app, &acct.key).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_billing_failures_total{what=\"checkpoint\"}"),
        "the failed checkpoints are counted"
    );
}

/// Start-session with random link ids from one client: past the budget, 429 `rate_limited` with
/// a wait, before any database work; one link has its own budget, whatever the client.
async fn rate_limits_answer_429_before_any_work(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.limits.link_start_per_ip = 5;
        s.limits.link_start_per_link = 2;
        s.limits.connect_per_ip = 3;
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        let link = format!("lnk_{}", avatar_supervisor::domain::ids::random_token(24));
        let r = app
            .post("/v1/links/start-session", "", json!({"link_id": link}))
            .await;
        codes.push((r.status, r.error_code().to_string()));
        if r.status == 429 {
            let wait = r.body["retry_after_seconds"].as_u64().unwrap();
            assert!((1..=60).contains(&wait), "{}", r.body);
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(
        codes.iter().filter(|(s, _)| *s == 404).count(),
        5,
        "{codes:?}"
    );
    assert!(codes[5..]
        .iter()
        .all(|(s, c)| *s == 429 && c == "rate_limited"));
    for _ in 0..4 {
        let r = app
            .post(
                "/v1/public/agents/connect",
                "",
                json!({"agent_id": "nobody"}),
            )
            .await;
        assert_ne!(r.status, 500);
    }
    let r = app
        .post(
            "/v1/public/agents/connect",
            "",
            json!({"agent_id": "nobody"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (429, "rate_limited"));
    let metrics = app.metrics().await;
    assert!(metrics.contains("avs_rate_limited_total{by=\"ip\",route=\"link_start\"} 3"));
}

/// A node admitting its share of starts refuses the next at once (503 with a wait) and holds
/// nothing for it; once those are live, starts are admitted again.
async fn a_busy_node_refuses_starts_at_once_and_holds_nothing(db: Db) {
    let app = spawn_app_with(db, |s| s.sessions.max_pending_starts = 2).await;
    let acct = app.account(20, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let starts = (0..12).map(|_| app.start_session(&acct.key, &agent));
    let replies: Vec<Reply> = futures_util::future::join_all(starts).await;
    let live = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(live >= 2, "the first two are admitted");
    assert!(!busy.is_empty(), "twelve at once past a bound of two");
    for r in &busy {
        assert_eq!(
            (r.status, r.error_code()),
            (503, "unavailable"),
            "{}",
            r.body
        );
        assert_eq!(r.body["retry_after_seconds"], 1, "{}", r.body);
    }
    counter_agrees(&app, &acct.key).await;
    assert_eq!(
        app.account_info(&acct.key).await["live_sessions"].as_i64(),
        Some(live as i64)
    );
    // The bound holds starts in progress, not sessions: more start once these are live.
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "avs_admissions_rejected_total{{reason=\"busy\"}} {}",
            busy.len()
        )),
        "{metrics}"
    );
}

/// A checkpoint refreshes the heartbeat of every live session it settles, its total grown or not:
/// a live session whose billed seconds did not grow at one checkpoint is not taken for lost.
async fn every_checkpoint_refreshes_every_heartbeat(db: Db) {
    use avatar_supervisor::store::billing::BillLine;
    let app = spawn_app(db).await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let row = app.state.store.session(&id).await.unwrap().unwrap();
    let line = BillLine {
        session_id: id.clone(),
        account_id: row.account_id.clone(),
        total_seconds: row.billed_seconds,
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let settled = app.state.store.settle(&[line]).await.unwrap();
    assert!(settled.debited.is_empty(), "nothing grew: {settled:?}");
    let after = app.state.store.session(&id).await.unwrap().unwrap();
    assert_eq!(after.billed_seconds, row.billed_seconds);
    assert!(
        after.heartbeat_at > row.heartbeat_at,
        "{:?} then {:?}",
        row.heartbeat_at,
        after.heartbeat_at
    );
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.body["data"]["status"], "stopped", "{:?}", r.body);
}

on_both_databases!(
    every_checkpoint_refreshes_every_heartbeat,
    a_busy_node_refuses_starts_at_once_and_holds_nothing,
    billing_is_exact_for_sessions_of_known_length,
    counters_agree_after_racing_starts_and_stops,
    rate_limits_answer_429_before_any_work,
);
