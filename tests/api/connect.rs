use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

async fn connect(app: &TestApp, origin: Option<&str>, body: serde_json::Value) -> Reply {
    let mut req = app
        .client
        .post(app.url("/v1/public/agents/connect"))
        .json(&body);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    reply(req.send().await.unwrap()).await
}

async fn preflight(app: &TestApp, origin: &str) -> Reply {
    let req = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            app.url("/v1/public/agents/connect"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST");
    reply(req.send().await.unwrap()).await
}

async fn origin_allowlist_and_errors(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(10, 10.0, 10_000).await;
    let open = app
        .ready_agent(&acct.key, json!({"allowed_origins": ["*"]}))
        .await;
    let listed = app
        .ready_agent(
            &acct.key,
            json!({"allowed_origins": ["app.example.com", "https://shop.example.org"]}),
        )
        .await;
    let private = app.ready_agent(&acct.key, json!({})).await;
    let hidden = app
        .ready_agent(
            &acct.key,
            json!({"allowed_origins": ["*"], "published": false}),
        )
        .await;

    // `*` takes server-side calls without an Origin.
    let r = connect(
        &app,
        None,
        json!({"agent_id": open, "client_user_ref": "user-42"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.body["session_id"].as_str().unwrap();
    assert!(r.body["room_url"].is_string() && r.body["token"].is_string());
    let row = app
        .get(&format!("/v1/sessions/{session}"), &acct.key)
        .await
        .body["data"]
        .clone();
    assert_eq!(
        (row["client_user_ref"].as_str(), row["source"].as_str()),
        (Some("user-42"), Some("connect"))
    );

    let r = connect(
        &app,
        Some("https://app.example.com"),
        json!({"agent_id": listed}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        connect(
            &app,
            Some("https://shop.example.org"),
            json!({"agent_id": listed})
        )
        .await
        .status,
        200
    );

    for (origin, agent) in [
        (Some("https://evil.example.net"), &listed),
        (Some("http://shop.example.org"), &listed),
        (None, &listed),
        (Some("https://app.example.com"), &private),
    ] {
        let r = connect(&app, origin, json!({"agent_id": agent})).await;
        assert_eq!(
            (r.status, r.error_code()),
            (403, "auth_failed"),
            "{origin:?}"
        );
    }
    let r = connect(&app, None, json!({"agent_id": hidden})).await;
    assert_eq!((r.status, r.error_code()), (403, "agent_unpublished"));
    let r = connect(&app, None, json!({"agent_id": "agnt_nope"})).await;
    assert_eq!((r.status, r.error_code()), (404, "agent_not_found"));
    let r = connect(
        &app,
        None,
        json!({"agent_id": open, "client_user_ref": "x".repeat(257)}),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (422, "validation_error"));
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains(".client_user_ref"));
    let r = connect(&app, None, json!({"client_user_ref": "u"})).await;
    assert_eq!((r.status, r.error_code()), (422, "validation_error"));
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 3);
}

async fn connect_obeys_the_owners_quota(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app
        .ready_agent(&acct.key, json!({"allowed_origins": ["*"]}))
        .await;
    assert_eq!(
        connect(&app, None, json!({"agent_id": agent})).await.status,
        200
    );
    let r = connect(&app, None, json!({"agent_id": agent})).await;
    assert_eq!((r.status, r.error_code()), (429, "concurrency_limit"));
    assert!(r.body["retry_after_seconds"].is_u64());
}

/// A preflight carries no body, so it is allowed when some published agent allows the origin.
async fn preflight_answers_allowed_origins_only(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 10.0, 1000).await;
    app.ready_agent(&acct.key, json!({"allowed_origins": ["app.example.com"]}))
        .await;
    app.ready_agent(
        &acct.key,
        json!({"allowed_origins": ["*"], "published": false}),
    )
    .await;
    let r = preflight(&app, "https://app.example.com").await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let r = preflight(&app, "https://evil.example.net").await;
    assert_eq!((r.status, r.error_code()), (403, "auth_failed"));
    assert!(r.header("access-control-allow-origin").is_none());
}

on_both_databases!(
    origin_allowlist_and_errors,
    connect_obeys_the_owners_quota,
    preflight_answers_allowed_origins_only
);
