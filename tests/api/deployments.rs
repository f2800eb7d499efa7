use std::time::Duration;

use serde_json::json;

use crate::auth::videosdk_jwt;
use crate::helpers::*;
use crate::on_both_databases;
use crate::support::webhook_sink::{verify_signature, WebhookSink};

async fn post_jwt(app: &TestApp, path: &str, token: &str, body: serde_json::Value) -> Reply {
    reply(
        app.client
            .post(app.url(path))
            .header("authorization", token)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn start_tag_env_webhooks_and_end(db: Db) {
    let sink = WebhookSink::start().await;
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let token = videosdk_jwt(&acct.key_id, &acct.key, 600);
    let agent = app.ready_agent(&acct.key, json!({"prompt": "first"})).await;
    app.post(
        &format!("/v1/agent/{agent}"),
        &acct.key,
        json!({"system_prompt": "second"}),
    )
    .await;

    let body = json!({
        "deploymentId": agent,
        "tag": "v1",
        "env": {"env_1": "value"},
        "metaData": {"key_1": "value"},
        "webhook": {"endPoint": sink.url("/videosdk"), "events": ["ai-deployment-session-started", "ai-deployment-session-stopped"]},
    });
    let r = post_jwt(&app, "/ai/v1/ai-deployment-sessions/start", &token, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["message"], "Session started successfully");
    let data = &r.body["data"];
    assert_eq!(
        (data["status"].as_str(), data["tag"].as_str()),
        (Some("queued"), Some("v1"))
    );
    assert_eq!(data["deploymentId"], agent.as_str());
    for field in ["sessionId", "start", "createdAt", "updatedAt"] {
        assert!(data[field].is_string(), "{field}");
    }
    let id = data["sessionId"].as_str().unwrap().to_string();
    let row = app
        .wait_session(&acct.key, &id, "live", Duration::from_secs(5))
        .await;
    assert_eq!(
        (
            row["agent_revision"].as_str(),
            row["metadata"]["key_1"].as_str()
        ),
        (Some("v1"), Some("value"))
    );

    let started = sink
        .wait_for(
            |r| r.json()["event"] == "ai-deployment-session-started",
            Duration::from_secs(5),
        )
        .await
        .expect("started hook");
    let secret = app.account_info(&acct.key).await["webhook_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verify_signature(
        &secret,
        started.header("x-webhook-signature").unwrap(),
        &started.body
    ));
    let payload = started.json();
    assert_eq!(payload["data"]["session_id"], id.as_str());
    assert!(
        payload["id"].as_str().unwrap().starts_with("whd_") && payload["created_at"].is_string()
    );

    let r = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/end",
        &token,
        json!({"sessionId": id}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["status"], "stopped");
    sink.wait_for(
        |r| r.json()["event"] == "ai-deployment-session-stopped",
        Duration::from_secs(5),
    )
    .await
    .expect("stopped hook");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the subscribed events arrive, each once.
    let events: Vec<_> = sink
        .received()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        vec![
            "ai-deployment-session-started",
            "ai-deployment-session-stopped"
        ]
    );

    // Latest revision by default.
    let r = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/start",
        &token,
        json!({"deploymentId": agent}),
    )
    .await;
    assert_eq!(r.body["data"]["tag"], "v2");
}

async fn deployment_errors(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let token = videosdk_jwt(&acct.key_id, &acct.key, 600);
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let cases = vec![
        (json!({"deploymentId": agent, "tag": "v9"}), 422, ".tag"),
        (json!({"deploymentId": agent, "tag": "latest"}), 422, ".tag"),
        (
            json!({"deploymentId": agent, "env": {"n": 5}}),
            422,
            ".env.n",
        ),
        (
            json!({"deploymentId": agent, "webhook": {"endPoint": "ftp://x"}}),
            422,
            ".webhook.endPoint",
        ),
        (
            json!({"deploymentId": agent, "webhook": {"endPoint": "https://example.com", "events": ["boom"]}}),
            422,
            ".webhook.events[0]",
        ),
        (json!({"tag": "v1"}), 422, "deploymentId"),
        (json!({"deploymentId": "nope"}), 404, "nope"),
    ];
    for (body, status, needle) in cases {
        let r = post_jwt(
            &app,
            "/ai/v1/ai-deployment-sessions/start",
            &token,
            body.clone(),
        )
        .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.body
        );
    }
    let r = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/start",
        &videosdk_jwt(&acct.key_id, &acct.key, -60),
        json!({"deploymentId": agent}),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (401, "unauthorized"));
    assert_eq!(
        app.get("/v1/sessions", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let other = app.account(5, 10.0, 0).await;
    let theirs = videosdk_jwt(&other.key_id, &other.key, 600);
    let r = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/start",
        &theirs,
        json!({"deploymentId": agent}),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (404, "agent_not_found"));
    let mine = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/start",
        &token,
        json!({"deploymentId": agent}),
    )
    .await;
    let id = mine.body["data"]["sessionId"].as_str().unwrap();
    let r = post_jwt(
        &app,
        "/ai/v1/ai-deployment-sessions/end",
        &theirs,
        json!({"sessionId": id}),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (404, "session_not_found"));
    app.wait_session(&acct.key, id, "live", Duration::from_secs(5))
        .await;
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"]["status"],
        "live"
    );
}

on_both_databases!(start_tag_env_webhooks_and_end, deployment_errors);
