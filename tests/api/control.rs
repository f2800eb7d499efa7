use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::on_both_databases;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    socket: Socket,
}

/// Opens `path` with `x-api-key: key` (if any); Err carries the refused upgrade's HTTP status.
pub async fn connect(app: &TestApp, path: &str, key: Option<&str>) -> Result<Ws, u16> {
    let url = app.url(path).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(Ws { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect {path}: {e}"),
    }
}

impl Ws {
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next JSON text frame (pings are answered by the client library).
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("frame");
            match msg {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(frame) => {
                    return json!({"type": "__closed", "code": frame.map(|f| u16::from(f.code))})
                }
                _ => continue,
            }
        }
    }

    /// Frames until one of `kind` arrives (returned); the skipped ones too.
    pub async fn until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return (frame, skipped);
            }
            assert_ne!(
                frame["type"], "__closed",
                "closed while waiting for {kind}: {skipped:?}"
            );
            skipped.push(frame);
        }
    }
}

async fn session_channel_protocol(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();

    let status = ws.next().await;
    assert_eq!(
        (status["type"].as_str(), status["state"].as_str()),
        (Some("status"), Some("live")),
        "{status}"
    );
    assert_eq!(status["session_id"], id.as_str());

    ws.send(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong", "id": "p1"}));

    ws.send(json!({"type": "speak", "id": "s1", "text": "Hello there."}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "ack", "id": "s1", "delivered_to": 1})
    );
    let (started, _) = ws.until("speech_started").await;
    let (ended, _) = ws.until("speech_ended").await;
    assert_eq!(started["utterance_id"], ended["utterance_id"]);
    assert_eq!(ended["interrupted"], false);

    ws.send(json!({"type": "add_context", "id": 2, "text": "The customer is a VIP."}))
        .await;
    let (ack, _) = ws.until("ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "2", "delivered_to": 1}));
    let (added, _) = ws.until("context_added").await;
    assert_eq!(added["text"], "The customer is a VIP.");

    // Bad frames get an error frame naming the problem, and the connection stays up.
    for (frame, code, needle) in [
        ("not json".to_string(), "invalid_json", "Not JSON"),
        (
            json!({"type": "dance", "id": "d"}).to_string(),
            "unknown_type",
            "dance",
        ),
        (
            json!({"type": "speak", "id": "x"}).to_string(),
            "invalid_frame",
            "text",
        ),
        (
            json!({"type": "speak", "text": 5}).to_string(),
            "invalid_frame",
            ".text",
        ),
        (
            json!({"type": "speak", "text": "a".repeat(20_000)}).to_string(),
            "frame_too_large",
            "limited",
        ),
    ] {
        ws.send_text(&frame).await;
        let (error, _) = ws.until("error").await;
        assert_eq!(error["code"], code, "{frame:.60}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.until("pong").await.0["type"], "pong");

    // Interrupt cuts a long utterance.
    ws.send(json!({"type": "speak", "id": "long", "text": "This is a long sentence that takes several seconds to say out loud, word by word."})).await;
    ws.until("speech_started").await;
    ws.send(json!({"type": "interrupt", "id": "i"})).await;
    let (ended, skipped) = ws.until("speech_ended").await;
    assert_eq!(ended["interrupted"], true, "{skipped:?}");

    // `stop` ends the session: final status, then a normal close.
    ws.send(json!({"type": "stop", "id": "bye"})).await;
    let mut last_state = String::new();
    loop {
        let frame = ws.next().await;
        if frame["type"] == "status" {
            last_state = frame["state"].as_str().unwrap().to_string();
        }
        if frame["type"] == "__closed" {
            assert_eq!(frame["code"], u16::from(CloseCode::Normal));
            break;
        }
    }
    assert_eq!(last_state, "stopped");
    let row = app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"].clone();
    assert_eq!(
        (row["status"].as_str(), row["end_reason"].as_str()),
        (Some("stopped"), Some("stopped_by_client"))
    );
}

async fn channel_credentials_are_checked_at_the_upgrade(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let first = app.start_session(&acct.key, &agent).await.body.clone();
    let second = app.start_session(&acct.key, &agent).await.body.clone();
    let (id, token) = (
        first["session_id"].as_str().unwrap(),
        first["participant_token"].as_str().unwrap(),
    );
    let other_id = second["session_id"].as_str().unwrap();

    let mut ws = connect(
        &app,
        &format!("/v1/sessions/{id}/control?token={token}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(ws.next().await["session_id"], id);
    assert_eq!(
        connect(
            &app,
            &format!("/v1/sessions/{other_id}/control?token={token}"),
            None
        )
        .await
        .err(),
        Some(403)
    );
    assert_eq!(
        connect(
            &app,
            &format!("/v1/sessions/{id}/control?token=garbage"),
            None
        )
        .await
        .err(),
        Some(401)
    );
    assert_eq!(
        connect(&app, &format!("/v1/sessions/{id}/control"), None)
            .await
            .err(),
        Some(401)
    );
    let stranger = app.account(1, 1.0, 0).await;
    assert_eq!(
        connect(
            &app,
            &format!("/v1/sessions/{id}/control"),
            Some(&stranger.key)
        )
        .await
        .err(),
        Some(404)
    );
    assert_eq!(
        connect(
            &app,
            &format!("/v1/agents/{agent}/control"),
            Some(&stranger.key)
        )
        .await
        .err(),
        Some(404)
    );
    assert_eq!(
        connect(&app, &format!("/v1/agents/{agent}/control"), None)
            .await
            .err(),
        Some(401)
    );
    // A plain GET without the upgrade is refused in the error shape.
    let r = app
        .get(&format!("/v1/sessions/{id}/control"), &acct.key)
        .await;
    assert_eq!(r.status, 422);

    // An ended session answers its final status and closes.
    app.post(
        &format!("/v1/sessions/{other_id}/stop"),
        &acct.key,
        json!({}),
    )
    .await;
    let mut ended = connect(
        &app,
        &format!("/v1/sessions/{other_id}/control"),
        Some(&acct.key),
    )
    .await
    .unwrap();
    let status = ended.next().await;
    assert_eq!(
        (status["state"].as_str(), status["end_reason"].as_str()),
        (Some("stopped"), Some("stopped_by_api"))
    );
    assert_eq!(ended.next().await["type"], "__closed");
}

async fn agent_channel_and_rest_fan_out(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "Anyone?"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (404, "NO_ACTIVE_ROOMS"));

    // The agent's channel hears of sessions that start after it connected.
    let mut ws = connect(
        &app,
        &format!("/v1/agents/{agent}/control"),
        Some(&acct.key),
    )
    .await
    .unwrap();
    let a = app.start_session(&acct.key, &agent).await.body.clone();
    let b = app.start_session(&acct.key, &agent).await.body.clone();
    let room_a = a["room_name"].as_str().unwrap();
    let mut live = std::collections::HashSet::new();
    while live.len() < 2 {
        let frame = ws.next().await;
        if frame["type"] == "status" && frame["state"] == "live" {
            live.insert(frame["session_id"].as_str().unwrap().to_string());
        }
    }
    ws.send(json!({"type": "add_context", "id": "c", "text": "Sale ends Friday."}))
        .await;
    assert_eq!(ws.until("ack").await.0["delivered_to"], 2);
    ws.send(json!({"type": "stop", "id": "no"})).await;
    assert_eq!(ws.until("error").await.0["code"], "not_allowed");

    let r = app
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "We have a 20% discount today."}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"agent_code": agent, "context_type": "speak", "delivered_to_rooms": 2})
    );
    let r = app
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "Just you.", "room_id": room_a}),
        )
        .await;
    assert_eq!(r.body["delivered_to_rooms"], 1);
    let r = app
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &acct.key,
            json!({"message": "Hi", "room_id": "room_nope"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (404, "NO_ACTIVE_ROOMS"));
    let r = app
        .post(
            &format!("/v1/agent/{agent}/add-context"),
            &acct.key,
            json!({"context": "VIP customer", "room_id": room_a}),
        )
        .await;
    assert_eq!(
        r.body,
        json!({"agent_code": agent, "context_type": "add_context", "delivered_to_rooms": 1})
    );
    let r = app
        .post(
            &format!("/v1/agent/{agent}/add-context"),
            &acct.key,
            json!({"context": "Say hi", "type": "speak"}),
        )
        .await;
    assert_eq!(
        (
            r.body["context_type"].as_str(),
            r.body["delivered_to_rooms"].as_i64()
        ),
        (Some("speak"), Some(2))
    );
    for (path, body, needle) in [
        ("speak", json!({"message": ""}), ".message"),
        ("speak", json!({"msg": "x"}), "message"),
        (
            "add-context",
            json!({"context": "x", "type": "shout"}),
            ".type",
        ),
        ("add-context", json!({"context": 3}), ".context"),
    ] {
        let r = app
            .post(&format!("/v1/agent/{agent}/{path}"), &acct.key, body)
            .await;
        assert_eq!((r.status, r.error_code()), (422, "VALIDATION_ERROR"));
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{}",
            r.body
        );
    }
    let stranger = app.account(1, 1.0, 0).await;
    let r = app
        .post(
            &format!("/v1/agent/{agent}/speak"),
            &stranger.key,
            json!({"message": "pwned"}),
        )
        .await;
    assert_eq!((r.status, r.error_code()), (404, "AGENT_NOT_FOUND"));

    // Sessions ending do not close the agent's channel.
    let a_id = a["session_id"].as_str().unwrap();
    app.post(&format!("/v1/sessions/{a_id}/stop"), &acct.key, json!({}))
        .await;
    ws.send(json!({"type": "ping", "id": "still"})).await;
    assert_eq!(ws.until("pong").await.0["id"], "still");
    drop(b);
}

async fn a_connected_client_keeps_a_local_session_from_idling(db: Db) {
    let app = spawn_app_with(db, |s| s.sessions.idle_timeout_seconds = 1).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    ws.next().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}"), &acct.key).await.body["data"]["status"],
        "live"
    );
    drop(ws);
    let row = app
        .wait_session(&acct.key, &id, "stopped", Duration::from_secs(5))
        .await;
    assert_eq!(row["end_reason"], "idle_timeout", "{row}");
}

/// A handshake over a raw TCP stream, then whatever the test does with the socket.
async fn raw_upgrade(app: &TestApp, path: &str, key: &str) -> tokio::net::TcpStream {
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-api-key: {key}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let n = tcp.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    tcp
}

/// A reader that never reads is dropped once its bounded queue fills; the session and the other
/// clients go on at full speed.
async fn slow_readers_are_dropped_not_buffered(db: Db) {
    let app = spawn_app_with(db, |s| s.ws.mailbox_capacity = 8).await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let path = format!("/v1/sessions/{id}/control");
    let _stuck = raw_upgrade(&app, &path, &acct.key).await;
    let mut good = connect(&app, &path, Some(&acct.key)).await.unwrap();
    good.next().await;
    let text = "x".repeat(4000);
    let mut evicted = false;
    for i in 0..2000 {
        good.send(json!({"type": "add_context", "id": i, "text": text}))
            .await;
        let (ack, _) = good.until("ack").await;
        assert_eq!(ack["delivered_to"], 1);
        if i % 50 == 0 {
            let metrics = app.metrics().await;
            if metrics.contains("avs_ws_slow_reader_evictions_total 1") {
                evicted = true;
                break;
            }
        }
    }
    assert!(evicted, "the stuck reader was never dropped");
    good.send(json!({"type": "ping", "id": "alive"})).await;
    assert_eq!(good.until("pong").await.0["id"], "alive");
}

/// Under a minute left: `minutes_low` once; a TTS failure: an `error` frame naming the utterance.
async fn minutes_low_and_speech_failures_are_reported(db: Db) {
    let app = spawn_app_with(db, |s| s.voice.espeak_voice = "zz-no-such-voice".into()).await;
    let acct = app.account(1, 0.5, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    let (low, _) = ws.until("minutes_low").await;
    let left = low["seconds_remaining"].as_i64().unwrap();
    assert!((0..60).contains(&left), "{low}");
    ws.send(json!({"type": "speak", "id": "s", "text": "Hello"}))
        .await;
    let (error, _) = ws.until("error").await;
    assert_eq!(error["code"], "speech_failed", "{error}");
    assert!(error["utterance_id"].is_u64(), "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("voice does not exist"),
        "{error}"
    );
    // The session goes on.
    ws.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(ws.until("pong").await.0["id"], "p");
}

/// The server pings; a client that never answers is dropped after the timeout.
async fn silent_clients_are_dropped(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.ws.heartbeat_interval_ms = 200;
        s.ws.client_timeout_ms = 800;
    })
    .await;
    let acct = app.account(5, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let mut tcp = raw_upgrade(&app, &format!("/v1/sessions/{id}/control"), &acct.key).await;
    // Read (never answer) until the server closes the connection.
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // 0x88: a final close frame (the JSON and pings before it are ASCII or 0x89).
                Ok(n) if buf[..n].contains(&0x88) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent client was kept open");
}

on_both_databases!(
    session_channel_protocol,
    channel_credentials_are_checked_at_the_upgrade,
    agent_channel_and_rest_fan_out,
    a_connected_client_keeps_a_local_session_from_idling,
    slow_readers_are_dropped_not_buffered,
    silent_clients_are_dropped,
    minutes_low_and_speech_failures_are_reported,
);
