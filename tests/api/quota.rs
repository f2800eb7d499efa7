use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

/// 50 racing starts against a concurrency limit of 3: exactly 3 go live, 47 get 429.
async fn concurrency_limit_holds_under_a_race(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 100.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let starts = (0..50).map(|_| app.start_session(&acct.key, &agent));
    let replies = futures_util::future::join_all(starts).await;
    let ok: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (ok.len(), limited.len()),
        (3, 47),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &limited {
        assert_eq!(r.error_code(), "concurrency_limit");
        assert!(
            r.body["retry_after_seconds"]
                .as_u64()
                .is_some_and(|s| s >= 1),
            "{}",
            r.body
        );
    }
    let info = app.account_info(&acct.key).await;
    assert_eq!(info["live_sessions"], 3);
    let live = app.get("/v1/sessions?status=live", &acct.key).await.body["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(live, 3);

    // Stopping one frees exactly one slot.
    let first = ok[0].body["session_id"].as_str().unwrap();
    let stopped = app
        .post(&format!("/v1/sessions/{first}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(stopped.body["data"]["status"], "stopped");
    assert_eq!(stopped.body["data"]["end_reason"], "stopped_by_api");
    assert_eq!(app.start_session(&acct.key, &agent).await.status, 200);
    assert_eq!(app.start_session(&acct.key, &agent).await.status, 429);
}

async fn no_minutes_is_402_and_holds_nothing(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 0.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!((r.status, r.error_code()), (402, "insufficient_balance"));
    let info = app.account_info(&acct.key).await;
    assert_eq!(
        (
            info["live_sessions"].as_i64(),
            info["minutes_remaining"].as_f64()
        ),
        (Some(0), Some(0.0))
    );
    assert_eq!(
        app.get("/v1/sessions", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// 0.05 minutes = 3 s: the session is billed each second and ends itself at zero.
async fn minutes_run_out_mid_session(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 0.05, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["session_id"].as_str().unwrap();
    let row = app
        .wait_session(&acct.key, id, "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(row["end_reason"], "minutes_exhausted", "{row}");
    assert_eq!(row["billed_seconds"], 3, "{row}");
    let info = app.account_info(&acct.key).await;
    assert_eq!(
        (
            info["live_sessions"].as_i64(),
            info["seconds_remaining"].as_i64()
        ),
        (Some(0), Some(0))
    );
    let ledger = app.state.store.usage(&acct.id).await.unwrap();
    let billed: i64 = ledger
        .iter()
        .filter(|l| l.session_id.as_deref() == Some(id))
        .map(|l| -l.amount)
        .sum();
    assert_eq!(billed, 3);
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!((r.status, r.error_code()), (402, "insufficient_balance"));
}

async fn max_duration_and_idle_timeout_end_sessions(db: Db) {
    let app = spawn_app_with(db, |s| s.sessions.idle_timeout_seconds = 1).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    // Nobody ever joins: the idle timer ends it.
    let idle = app.started_session(&acct.key, &agent).await;
    // The idle timer fires after 1 s; the rest is slack for a loaded machine.
    let row = app
        .wait_session(&acct.key, &idle, "stopped", Duration::from_secs(15))
        .await;
    assert_eq!(row["end_reason"], "idle_timeout", "{row}");
    assert!(row["ended_at"].is_string());

    let app = spawn_app_with(db, |s| s.sessions.idle_timeout_seconds = 60).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app
        .post(
            "/v1/sessions",
            &acct.key,
            json!({"agent_id": agent, "max_duration_seconds": 2}),
        )
        .await;
    let id = r.body["session_id"].as_str().unwrap();
    let row = app
        .wait_session(&acct.key, id, "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(row["end_reason"], "max_duration", "{row}");
    assert_eq!(row["max_duration_seconds"], 2);
    assert!(
        (1..=3).contains(&row["billed_seconds"].as_i64().unwrap()),
        "{row}"
    );
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);

    // The account's own maximum caps what a request asks for.
    let capped = app
        .state
        .store
        .create_account(avatar_supervisor::store::accounts::NewAccount {
            name: "capped".into(),
            concurrency_limit: 1,
            balance_ms: 600_000,
            credits: 1000,
            webhook_url: None,
            max_session_seconds: Some(30),
        })
        .await
        .unwrap();
    let agent = app.ready_agent(&capped.api_key, json!({})).await;
    let r = app
        .post(
            "/v1/sessions",
            &capped.api_key,
            json!({"agent_id": agent, "max_duration_seconds": 600}),
        )
        .await;
    let id = r.body["session_id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &capped.api_key)
            .await
            .body["data"]["max_duration_seconds"],
        30
    );
}

on_both_databases!(
    concurrency_limit_holds_under_a_race,
    no_minutes_is_402_and_holds_nothing,
    minutes_run_out_mid_session,
    max_duration_and_idle_timeout_end_sessions,
);
