//! A room the caller brings (`room: {livekit_url, livekit_token}`, LiveKit Agents' avatar): what
//! could never join is refused before anything is started or billed. The avatar in such a room,
//! with a real LiveKit server and a real Agents pipeline, is `tests/agents/` (Python, in the
//! network namespace).

use std::collections::HashMap;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_databases;

const SECRET: &str = "a-secret-the-caller-keeps-of-32-chars";

fn token(grants: VideoGrants, ttl: Duration) -> String {
    AccessToken::with_api_key("their-key", SECRET)
        .with_identity("avatar-1")
        .with_kind("agent")
        .with_ttl(ttl)
        .with_grants(grants)
        .with_attributes(HashMap::from([(
            "lk.publish_on_behalf".to_string(),
            "agent-1".to_string(),
        )]))
        .to_jwt()
        .unwrap()
}

fn join(room: &str) -> VideoGrants {
    VideoGrants {
        room_join: true,
        room: room.into(),
        ..Default::default()
    }
}

fn borrowed(agent: &str, url: &str, token: &str) -> Value {
    json!({"agent_id": agent, "room": {"livekit_url": url, "livekit_token": token}, "voice": "room"})
}

async fn nothing_started(app: &TestApp, key: &str) {
    let sessions = app.get("/v1/sessions", key).await.body["data"].clone();
    assert_eq!(sessions.as_array().map(Vec::len), Some(0), "{sessions}");
    let info = app.account_info(key).await;
    assert_eq!(info["live_sessions"], 0, "{info}");
    assert_eq!(info["minutes_remaining"].as_f64(), Some(10.0), "{info}");
}

async fn tokens_that_could_never_join_are_refused_naming_why(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let url = "wss://livekit.example";
    let good = token(join("their-room"), Duration::from_secs(600));
    let expired = {
        // Minted to expire a second ago (LiveKit tokens carry `exp` in seconds).
        let t = token(join("their-room"), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        t
    };
    let no_room = token(VideoGrants::default(), Duration::from_secs(600));
    let no_publish = token(
        VideoGrants {
            can_publish: Some(false),
            ..join("their-room")
        },
        Duration::from_secs(600),
    );
    for (body, says) in [
        (borrowed(&agent, url, &expired), "has expired"),
        (borrowed(&agent, url, "not-a-token"), "is malformed"),
        (borrowed(&agent, url, "a.b.c"), "is malformed"),
        (borrowed(&agent, url, &no_room), "grants no room"),
        (
            borrowed(&agent, url, &no_publish),
            "does not allow publishing",
        ),
        (borrowed(&agent, "ftp://x", &good), "room.livekit_url"),
    ] {
        let r = app.post("/v1/sessions", &acct.key, body).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "invalid_request"),
            "{}",
            r.body
        );
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says}: {message}");
    }
    // The voice of the room needs a room; a voice this server does not know is named.
    let r = app
        .post(
            "/v1/sessions",
            &acct.key,
            json!({"agent_id": agent, "voice": "room"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("voice"));
    let r = app
        .post("/v1/sessions", &acct.key, json!({"agent_id": agent, "voice": "elvis", "room": {"livekit_url": url, "livekit_token": good}}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app
        .post(
            "/v1/sessions",
            &acct.key,
            json!({"agent_id": agent, "room": {"livekit_url": url}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    nothing_started(&app, &acct.key).await;
}

async fn an_unreachable_room_fails_the_start_and_bills_nothing(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let good = token(join("their-room"), Duration::from_secs(600));
    // Nothing listens on port 1: the avatar's join is refused at once.
    let r = app
        .post(
            "/v1/sessions",
            &acct.key,
            borrowed(&agent, "ws://127.0.0.1:1", &good),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (502, "room_creation_failed"),
        "{}",
        r.body
    );
    let info = app.account_info(&acct.key).await;
    assert_eq!(info["live_sessions"], 0, "{info}");
    assert_eq!(info["minutes_remaining"].as_f64(), Some(10.0), "{info}");
    for session in app.get("/v1/sessions", &acct.key).await.body["data"]
        .as_array()
        .unwrap()
    {
        assert_eq!(session["billed_seconds"], 0, "{session}");
        assert_ne!(session["status"], "live", "{session}");
    }
    // The concurrency count (a limit of 1) and the render slot came back: a session starts.
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

on_both_databases!(
    tokens_that_could_never_join_are_refused_naming_why,
    an_unreachable_room_fails_the_start_and_bills_nothing,
);
