use std::time::Duration;

use avatar_supervisor::domain::events::WebhookStatus;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;
use crate::support::webhook_sink::{verify_signature, WebhookSink};

/// Lifecycle events reach the session's and the account's endpoints, signed, in order; a failing
/// endpoint is retried until it takes the delivery.
async fn lifecycle_events_are_signed_and_retried(db: Db) {
    let sink = WebhookSink::start().await;
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let r = app
        .set_account_webhook(&acct.key, &sink.url("/account"))
        .await;
    assert_eq!(r.body["webhook_url"], sink.url("/account"));
    let secret = r.body["webhook_secret"].as_str().unwrap().to_string();
    let agent = app.ready_agent(&acct.key, json!({})).await;
    sink.wait_for(
        |r| r.path == "/account" && r.json()["event"] == "agent.ready",
        Duration::from_secs(5),
    )
    .await
    .expect("agent.ready");

    sink.fail_next(2);
    let r = app
        .post(
            "/v1/sessions",
            &acct.key,
            json!({"agent_id": agent, "webhook": {"url": sink.url("/session")}}),
        )
        .await;
    let id = r.body["session_id"].as_str().unwrap().to_string();
    app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;

    let wanted = [
        "session.starting",
        "session.started",
        "session.stopping",
        "session.stopped",
    ];
    for path in ["/session", "/account"] {
        let mut seen = Vec::new();
        for event in wanted {
            let hit = sink
                .wait_for(
                    |r| r.path == path && r.status == 200 && r.json()["event"] == event,
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|| panic!("{event} never reached {path}"));
            assert!(verify_signature(
                &secret,
                hit.header("x-webhook-signature").unwrap(),
                &hit.body
            ));
            assert!(!verify_signature(
                "whsec_wrong",
                hit.header("x-webhook-signature").unwrap(),
                &hit.body
            ));
            assert_eq!(hit.json()["data"]["session_id"], id.as_str());
            seen.push(hit.json()["id"].as_str().unwrap().to_string());
        }
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }
    let stopped = sink
        .wait_for(
            |r| r.path == "/session" && r.json()["event"] == "session.stopped",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(stopped.json()["data"]["end_reason"], "stopped_by_api");
    // The two refused attempts were retried: every outbox row ends delivered.
    assert!(sink.received().iter().filter(|r| r.status == 500).count() == 2);
    let rows = app.state.store.webhooks_of_session(&id).await.unwrap();
    assert_eq!(rows.len(), 8);
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.state
                .store
                .webhooks_of_session(&id)
                .await
                .unwrap()
                .iter()
                .all(|r| r.status == WebhookStatus::Delivered)
        })
        .await
    );
}

/// A delivery written to the outbox before a crash is sent by the next run on that database.
async fn outbox_survives_a_restart(db: Db) {
    let sink = WebhookSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = avatar_supervisor::config::Settings::defaults().unwrap();
    settings.server.data_dir = dir.path().to_path_buf();
    settings.database.url = match db {
        Db::Sqlite => String::new(),
        Db::Postgres => fresh_postgres().await,
    };
    let url = settings.database_url();
    // No server runs: this is what a previous run left behind.
    let store = avatar_supervisor::app::open_store(&settings).await.unwrap();
    let acct = store
        .create_account(avatar_supervisor::store::accounts::NewAccount {
            name: "a".into(),
            concurrency_limit: 1,
            balance_ms: 0,
            credits: 0,
            webhook_url: Some(sink.url("/late")),
            max_session_seconds: None,
        })
        .await
        .unwrap();
    let now = avatar_supervisor::store::now_ms();
    store
        .enqueue_webhooks(vec![avatar_supervisor::store::entities::webhook::Model {
            id: "whd_left_behind".into(),
            account_id: acct.account_id.clone(),
            session_id: None,
            url: sink.url("/late"),
            event: "session.stopped".into(),
            body: json!({"id": "whd_left_behind", "event": "session.stopped", "data": {}})
                .to_string(),
            attempts: 1,
            next_attempt_at: now,
            status: WebhookStatus::Pending,
            last_error: Some("connection refused".into()),
            created_at: now,
            delivered_at: None,
        }])
        .await
        .unwrap();
    drop(store);
    let data_dir = dir.path().to_path_buf();
    let app = spawn_app_with(db, move |s| {
        s.server.data_dir = data_dir;
        s.database.url = url;
    })
    .await;
    let hit = sink
        .wait_for(|r| r.path == "/late", Duration::from_secs(5))
        .await
        .expect("the stored delivery was sent");
    assert_eq!(hit.header("x-webhook-id"), Some("whd_left_behind"));
    let secret = app.account_info(&acct.api_key).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verify_signature(
        &secret,
        hit.header("x-webhook-signature").unwrap(),
        &hit.body
    ));
}

on_both_databases!(
    lifecycle_events_are_signed_and_retried,
    outbox_survives_a_restart
);

/// Nodes sharing a database take deliveries by lease: two nodes polling one outbox deliver each
/// row once, and rows a node claimed before it died are delivered by the others once the lease
/// ends.
#[actix_web::test]
async fn nodes_sharing_an_outbox_deliver_each_webhook_once() {
    use avatar_supervisor::actors::webhooks::outbox_row;

    let sink = WebhookSink::start().await;
    // The first node only makes the database and plays the node that dies: it never polls.
    let dead = spawn_app_with(Db::Postgres, |s| s.webhooks.poll_interval_ms = 3_600_000).await;
    let url = dead.state.settings.database.url.clone();
    // Nodes of one service share the master key (the data dir's).
    let dir = dead.state.settings.server.data_dir.clone();
    let acct = dead.account(1, 1.0, 0).await;
    let row = |n: usize| {
        outbox_row(
            &acct.id,
            None,
            &sink.url("/hook"),
            "session.stopped",
            json!({"n": n}),
        )
    };
    let store = &dead.state.store;
    store
        .enqueue_webhooks((0..5).map(row).collect())
        .await
        .unwrap();
    const LEASE_MS: i64 = 1_500;
    let claimed_at = std::time::Instant::now();
    let orphaned = store.claim_due_webhooks(64, LEASE_MS).await.unwrap();
    assert_eq!(orphaned.len(), 5, "the dying node took its five");
    assert!(
        store
            .claim_due_webhooks(64, LEASE_MS)
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not due"
    );
    store
        .enqueue_webhooks((5..205).map(row).collect())
        .await
        .unwrap();

    let node = |s: &mut avatar_supervisor::config::Settings| {
        s.database.url = url.clone();
        s.server.data_dir = dir.clone();
    };
    let _a = spawn_app_with(Db::Postgres, node).await;
    let _b = spawn_app_with(Db::Postgres, node).await;
    let got = sink.wait_for_count(205, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 205, "every delivery arrives");
    // Time for a second copy of anything to arrive, were one sent.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let received = sink.received();
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(total, ids.len(), "a delivery arrived twice");
    assert_eq!(ids.len(), 205);
    for r in received.iter().filter(|r| {
        let id = r.json()["id"].as_str().unwrap().to_string();
        orphaned.iter().any(|o| o.id == id)
    }) {
        assert!(
            r.at.duration_since(claimed_at) >= Duration::from_millis(LEASE_MS as u64 - 100),
            "a leased delivery was taken before its lease ended"
        );
    }
    let pending = store.pending_webhook_count().await.unwrap();
    assert_eq!(pending, 0, "every row is marked delivered");
}
