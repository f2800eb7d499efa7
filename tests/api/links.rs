use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;

async fn create_list_get_revoke(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app
        .ready_agent(&acct.key, json!({"name": "Support Agent"}))
        .await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let r = app
        .post("/v1/links", &acct.key, json!({"agent_id": agent, "name": "Product Demo", "expires_at": expires, "use_limit": 100}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let link = r.body["link"].clone();
    let id = link["link_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("lnk_") && id.len() >= 4 + 22, "{id}");
    assert_eq!(link["url"], format!("{}/s/{id}", app.base));
    assert_eq!(link["status"], "active");
    assert_eq!(
        (link["uses"].as_i64(), link["use_limit"].as_i64()),
        (Some(0), Some(100))
    );
    assert_eq!(link["agent"]["agent_id"], agent.as_str());
    assert_eq!(link["agent"]["name"], "Support Agent");
    assert!(link["agent"]["avatar_image_url"].is_string());

    let default_named = app
        .post("/v1/links", &acct.key, json!({"agent_id": agent}))
        .await;
    let name = default_named.body["link"]["name"].as_str().unwrap();
    assert!(
        name.contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()),
        "{name}"
    );
    assert!(default_named.body["link"]["expires_at"].is_null());

    assert_eq!(
        app.get("/v1/links", &acct.key).await.body["links"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        app.get(&format!("/v1/links/{id}"), &acct.key).await.body["link"]["name"],
        "Product Demo"
    );

    let other = app.account(1, 1.0, 0).await;
    let r = app.get(&format!("/v1/links/{id}"), &other.key).await;
    assert_eq!((r.status, r.error_code()), (404, "link_not_found"));
    assert_eq!(
        app.delete(&format!("/v1/links/{id}"), &other.key)
            .await
            .status,
        404
    );
    let r = app
        .post("/v1/links", &other.key, json!({"agent_id": agent}))
        .await;
    assert_eq!((r.status, r.error_code()), (404, "agent_not_found"));

    let r = app.delete(&format!("/v1/links/{id}"), &acct.key).await;
    assert_eq!(r.body["link"]["status"], "revoked");
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": id}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (403, "link_inactive"));
}

async fn bad_link_bodies(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let cases = vec![
        (json!({}), "agent_id"),
        (json!({"agent_id": agent, "use_limit": 0}), ".use_limit"),
        (json!({"agent_id": agent, "use_limit": -4}), ".use_limit"),
        (json!({"agent_id": agent, "use_limit": "ten"}), ".use_limit"),
        (json!({"agent_id": agent, "use_limit": 1.5}), ".use_limit"),
        (
            json!({"agent_id": agent, "expires_at": "next tuesday"}),
            ".expires_at",
        ),
        (
            json!({"agent_id": agent, "expires_at": past}),
            ".expires_at",
        ),
        (json!({"agent_id": agent, "name": ""}), ".name"),
        (
            json!({"agent_id": agent, "colour": "red"}),
            "unknown field `colour`",
        ),
        (json!({"agent_id": 7}), ".agent_id"),
    ];
    for (body, needle) in cases {
        let r = app.post("/v1/links", &acct.key, body.clone()).await;
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
    assert_eq!(
        app.get("/v1/links", &acct.key).await.body["links"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let r = app.post_raw("/v1/links/start-session", None, "{oops").await;
    assert_eq!((r.status, r.error_code()), (400, "validation_error"));
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": "lnk_doesnotexist0000000000"}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (404, "link_not_found"));
}

async fn start_session_via_link(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = app
        .post(
            "/v1/links",
            &acct.key,
            json!({"agent_id": agent, "use_limit": 2}),
        )
        .await
        .body["link"]["link_id"]
        .as_str()
        .unwrap()
        .to_string();
    // No API key: the link id is the credential.
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link, "aspect_ratio": "9:16"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    let session = r.body["session_id"].as_str().unwrap().to_string();
    assert!(session.starts_with("sess_"));
    assert!(r.body["livekit_url"]
        .as_str()
        .unwrap()
        .starts_with("ws://127.0.0.1:"));
    assert!(
        r.body["participant_token"]
            .as_str()
            .unwrap()
            .split('.')
            .count()
            == 3
    );
    assert_eq!(r.body["agent_identity"], "avatar-agent");
    let row = app
        .get(&format!("/v1/sessions/{session}"), &acct.key)
        .await
        .body["data"]
        .clone();
    assert_eq!(
        row["aspect_ratio"], "4:3",
        "an invalid ratio falls back to 4:3"
    );
    assert_eq!(row["source"], "link");
    assert_eq!(row["status"], "live");
    let token = r.body["participant_token"].as_str().unwrap();
    let claims = app.state.rooms.verify(token).expect("token verifies");
    assert_eq!(claims.video.room, row["room_name"].as_str().unwrap());

    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link, "aspect_ratio": "1:1"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (403, "link_inactive"));
    let got = app.get(&format!("/v1/links/{link}"), &acct.key).await.body["link"].clone();
    assert_eq!(
        (got["uses"].as_i64(), got["status"].as_str()),
        (Some(2), Some("exhausted"))
    );
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 2);
}

/// 50 racing starts on a link with use_limit 5 (and room for all in the account): exactly 5 win.
async fn link_use_limit_holds_under_a_race(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(100, 100.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = app
        .post(
            "/v1/links",
            &acct.key,
            json!({"agent_id": agent, "use_limit": 5}),
        )
        .await
        .body["link"]["link_id"]
        .as_str()
        .unwrap()
        .to_string();
    let starts = (0..50).map(|_| {
        app.post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link}).to_string(),
        )
    });
    let replies = futures_util::future::join_all(starts).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 403 && r.body["error_code"] == "link_inactive")
        .count();
    assert_eq!(
        (ok, refused),
        (5, 45),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        app.get(&format!("/v1/links/{link}"), &acct.key).await.body["link"]["uses"],
        5
    );
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 5);
}

/// A start through a link that the account's limit refuses takes no use of the link and writes no
/// session; one the link refuses takes no slot. The admission is all or nothing.
async fn a_refused_link_start_takes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 100.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = |use_limit: i64| {
        let app = &app;
        let key = acct.key.clone();
        let agent = agent.clone();
        async move {
            app.post(
                "/v1/links",
                &key,
                json!({"agent_id": agent, "use_limit": use_limit}),
            )
            .await
            .body["link"]["link_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (open, spent) = (link(5).await, link(1).await);
    let start = |link: String| {
        app.post_raw(
            "/v1/links/start-session",
            None,
            json!({ "link_id": link }).to_string(),
        )
    };
    let r = start(spent.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The account's one slot is taken: the open link's start is refused for it.
    let r = start(open.clone()).await;
    assert_eq!((r.status, r.error_code()), (429, "concurrency_limit"));
    let uses = |link: String| {
        let app = &app;
        let key = acct.key.clone();
        async move { app.get(&format!("/v1/links/{link}"), &key).await.body["link"]["uses"].as_i64() }
    };
    assert_eq!(uses(open.clone()).await, Some(0), "no use taken");
    let listed = app.get("/v1/sessions", &acct.key).await.body["data"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "no row: {listed}");
    // The spent link is refused before the slot: ending the first frees the slot only once.
    let r = start(spent).await;
    assert_eq!((r.status, r.error_code()), (403, "link_inactive"));
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 1);
}

on_both_databases!(
    create_list_get_revoke,
    bad_link_bodies,
    start_session_via_link,
    link_use_limit_holds_under_a_race,
    a_refused_link_start_takes_nothing
);
