use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

async fn own_sessions_start_get_list_stop(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app
        .post("/v1/sessions", &acct.key, json!({"agent_id": agent, "aspect_ratio": "1:1", "client_user_ref": "u1", "metadata": {"plan": "pro"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for field in [
        "session_id",
        "livekit_url",
        "participant_token",
        "agent_identity",
        "room_name",
        "control_url",
    ] {
        assert!(r.body[field].is_string(), "{field}: {}", r.body);
    }
    assert_eq!(r.body["status"], "live");
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let row = app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(row["metadata"], json!({"plan": "pro"}));
    assert_eq!(row["aspect_ratio"], "1:1");
    assert!(row["started_at"].is_string() && row["ended_at"].is_null());

    let second = app.started_session(&acct.key, &agent).await;
    assert_eq!(
        app.get("/v1/sessions?status=live", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        app.get(&format!("/v1/sessions?agent_id={agent}"), &acct.key)
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = app.get("/v1/sessions?status=sleeping", &acct.key).await;
    assert_eq!((r.status, r.error_code()), (422, "validation_error"));

    // Another tenant sees nothing and stops nothing.
    let other = app.account(1, 1.0, 0).await;
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &other.key)
            .await
            .status,
        404
    );
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &other.key, json!({}))
        .await;
    assert_eq!((r.status, r.error_code()), (404, "session_not_found"));
    assert_eq!(
        app.get("/v1/sessions", &other.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let r = app.start_session(&other.key, &agent).await;
    assert_eq!((r.status, r.error_code()), (404, "agent_not_found"));

    let stopped = app
        .post(&format!("/v1/sessions/{second}/stop"), &acct.key, json!({}))
        .await
        .body["data"]
        .clone();
    assert_eq!(
        (stopped["status"].as_str(), stopped["end_reason"].as_str()),
        (Some("stopped"), Some("stopped_by_api"))
    );
    // Stopping again is harmless and releases nothing twice.
    let again = app
        .post(&format!("/v1/sessions/{second}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(again.body["data"]["status"], "stopped");
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 1);
}

async fn bad_session_bodies_change_nothing(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let cases = vec![
        (json!({}), "agent_id"),
        (
            json!({"agent_id": agent, "aspect_ratio": "16:10"}),
            ".aspect_ratio",
        ),
        (
            json!({"agent_id": agent, "max_duration_seconds": 0}),
            ".max_duration_seconds",
        ),
        (
            json!({"agent_id": agent, "max_duration_seconds": "long"}),
            ".max_duration_seconds",
        ),
        (json!({"agent_id": agent, "metadata": [1, 2]}), ".metadata"),
        (
            json!({"agent_id": agent, "webhook": {"url": "not a url"}}),
            ".webhook.url",
        ),
        (
            json!({"agent_id": agent, "webhook": {"url": "https://example.com/h", "events": ["session.exploded"]}}),
            ".webhook.events[0]",
        ),
        (
            json!({"agent_id": agent, "surprise": true}),
            "unknown field `surprise`",
        ),
    ];
    for (body, needle) in cases {
        let r = app.post("/v1/sessions", &acct.key, body.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (422, "validation_error"),
            "{body}"
        );
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{body}: {}",
            r.body
        );
    }
    let r = app
        .post_raw("/v1/sessions", Some(&acct.key), "{\"agent_id\": ")
        .await;
    assert_eq!((r.status, r.error_code()), (400, "validation_error"));
    let r = app
        .post_raw("/v1/sessions", Some(&acct.key), vec![b' '; 100 * 1024])
        .await;
    assert_eq!((r.status, r.error_code()), (413, "payload_too_large"));
    assert_eq!(
        app.get("/v1/sessions", &acct.key).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);

    // An agent that is not ready cannot start a session.
    let r = app
        .post(
            "/v1/agent/generate",
            &acct.key,
            json!({"image": base64_png(10, 10)}),
        )
        .await;
    let failed = r.body["agent_id"].as_str().unwrap().to_string();
    app.wait_agent(&acct.key, &failed).await;
    let r = app.start_session(&acct.key, &failed).await;
    assert_eq!((r.status, r.error_code()), (409, "conflict"));
}

on_both_databases!(
    own_sessions_start_get_list_stop,
    bad_session_bodies_change_nothing
);
