use std::time::Duration;

use livekit_api::access_token::TokenVerifier;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_databases;
use crate::support::livekit::FakeLiveKit;

const KEY: &str = "APItestkey";
const SECRET: &str = "a-livekit-secret-of-some-length-0123456789";

async fn with_livekit(db: Db, fake: &FakeLiveKit, idle_seconds: u64) -> TestApp {
    let url = fake.url();
    spawn_app_with(db, move |s| {
        s.livekit.url = url;
        s.livekit.api_key = KEY.into();
        s.livekit.api_secret = avatar_supervisor::config::Secret::new(SECRET);
        // This fake speaks RoomService only, for the faults LiveKit's server cannot be made to
        // show on demand; the avatar's media is tested against LiveKit's own server inside the
        // network namespace (tests/api/netns/livekit.rs, tests/agents/).
        s.livekit.avatar_participant = false;
        s.sessions.idle_timeout_seconds = idle_seconds;
    })
    .await
}

async fn rooms_and_tokens_through_roomservice(db: Db) {
    let fake = FakeLiveKit::start(KEY, SECRET).await;
    let app = with_livekit(db, &fake, 60).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let room = r.body["room_name"].as_str().unwrap().to_string();
    assert_eq!(fake.rooms(), vec![room.clone()]);
    assert_eq!(
        r.body["livekit_url"],
        fake.url().replacen("http://", "ws://", 1)
    );

    let claims = TokenVerifier::with_api_key(KEY, SECRET)
        .verify(r.body["participant_token"].as_str().unwrap())
        .expect("valid LiveKit token");
    assert_eq!(claims.iss, KEY);
    assert!(claims.sub.starts_with("user_"));
    assert!(claims.nbf > 0 && claims.exp > claims.nbf);
    assert_eq!(claims.video.room, room);
    assert!(
        claims.video.room_join
            && claims.video.can_publish()
            && claims.video.can_subscribe()
            && claims.video.can_publish_data()
    );
    assert!(!claims.video.agent && claims.kind != "agent");
    assert!(
        TokenVerifier::with_api_key(KEY, "another-secret-entirely-0123456789")
            .verify(r.body["participant_token"].as_str().unwrap())
            .is_err()
    );

    let id = r.body["session_id"].as_str().unwrap();
    app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert!(fake.rooms().is_empty());
    assert_eq!(fake.deleted(), vec![room]);
}

async fn livekit_down_is_502_and_holds_nothing(db: Db) {
    let fake = FakeLiveKit::start(KEY, SECRET).await;
    let app = with_livekit(db, &fake, 60).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = app
        .post(
            "/v1/links",
            &acct.key,
            json!({"agent_id": agent, "use_limit": 1}),
        )
        .await
        .body["link"]["link_id"]
        .as_str()
        .unwrap()
        .to_string();
    fake.set_unavailable(true);
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (502, "room_creation_failed"));
    let info = app.account_info(&acct.key).await;
    assert_eq!(
        (
            info["live_sessions"].as_i64(),
            info["seconds_remaining"].as_i64()
        ),
        (Some(0), Some(600))
    );
    assert_eq!(
        app.get(&format!("/v1/links/{link}"), &acct.key).await.body["link"]["uses"],
        0
    );
    let rows = app.get("/v1/sessions", &acct.key).await.body["data"].clone();
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["end_reason"], "room_creation_failed");

    fake.set_unavailable(false);
    let r = app
        .post_raw(
            "/v1/links/start-session",
            None,
            json!({"link_id": link}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "the link use came back: {}", r.body);
}

async fn livekit_webhooks_drive_idle_and_room_close(db: Db) {
    let fake = FakeLiveKit::start(KEY, SECRET).await;
    let app = with_livekit(db, &fake, 1).await;
    let hooks = fake.webhook_sender(app.url("/v1/livekit/webhook"));
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;

    let r = app.start_session(&acct.key, &agent).await;
    let (id, room) = (
        r.body["session_id"].as_str().unwrap().to_string(),
        r.body["room_name"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        hooks
            .send("participant_joined", &room, Some("avatar-agent"))
            .await
            .status(),
        200
    );
    assert_eq!(
        hooks
            .send("participant_joined", &room, Some("user_1"))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"]["status"],
        "live",
        "a user is present"
    );
    hooks.send("participant_left", &room, Some("user_1")).await;
    let row = app
        .wait_session(&acct.key, &id, "stopped", Duration::from_secs(4))
        .await;
    assert_eq!(row["end_reason"], "idle_timeout", "{row}");

    let r = app.start_session(&acct.key, &agent).await;
    let (id, room) = (
        r.body["session_id"].as_str().unwrap().to_string(),
        r.body["room_name"].as_str().unwrap().to_string(),
    );
    hooks
        .send("participant_joined", &room, Some("user_2"))
        .await;
    hooks.send("room_finished", &room, None).await;
    let row = app
        .wait_session(&acct.key, &id, "stopped", Duration::from_secs(4))
        .await;
    assert_eq!(row["end_reason"], "room_closed", "{row}");

    // Unsigned, tampered or foreign-signed webhooks are refused.
    let body = r#"{"event":"room_finished","room":{"name":"x"}}"#;
    assert_eq!(hooks.send_raw(body, None).await.status(), 401);
    let signed_other = hooks.sign(r#"{"event":"room_started"}"#);
    assert_eq!(
        hooks.send_raw(body, Some(&signed_other)).await.status(),
        401
    );
    let mut foreign = hooks.clone();
    foreign.api_secret = "not-the-secret-at-all-0123456789".into();
    assert_eq!(
        foreign.send("room_finished", &room, None).await.status(),
        401
    );
}

async fn webhook_route_needs_livekit(db: Db) {
    let app = spawn_app(db).await;
    let r = app.post_raw("/v1/livekit/webhook", None, "{}").await;
    assert_eq!((r.status, r.error_code()), (404, "not_found"));
}

/// The Room child is supervised: a room that vanishes is recreated; a LiveKit that stays down
/// exhausts the restart budget and the session fails, releasing its slot once.
async fn room_child_restarts_then_escalates(db: Db) {
    let fake = FakeLiveKit::start(KEY, SECRET).await;
    let app = with_livekit(db, &fake, 60).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    let (id, room) = (
        r.body["session_id"].as_str().unwrap().to_string(),
        r.body["room_name"].as_str().unwrap().to_string(),
    );

    assert!(fake.close_room(&room));
    let room2 = room.clone();
    assert!(
        eventually(Duration::from_secs(5), || async {
            fake.created().iter().filter(|r| **r == room2).count() == 2
        })
        .await
    );
    assert_eq!(fake.rooms(), vec![room.clone()]);
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"]["status"],
        "live"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_session_child_restarts_total{child=\"room\"} 1"),
        "{metrics}"
    );

    fake.set_unavailable(true);
    let row = app
        .wait_session(&acct.key, &id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(row["end_reason"], "room_failed", "{row}");
    assert!(
        row["failure_reason"]
            .as_str()
            .unwrap()
            .contains("room failed too often"),
        "{row}"
    );
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);
    // The slot came back exactly once: the account can fill its limit again, and no further.
    fake.set_unavailable(false);
    for _ in 0..5 {
        assert_eq!(app.start_session(&acct.key, &agent).await.status, 200);
    }
    assert_eq!(app.start_session(&acct.key, &agent).await.status, 429);
}

on_both_databases!(
    rooms_and_tokens_through_roomservice,
    livekit_down_is_502_and_holds_nothing,
    livekit_webhooks_drive_idle_and_room_close,
    webhook_route_needs_livekit,
    room_child_restarts_then_escalates,
);
