//! A session whose agent talks through an ElevenLabs conversational agent (the fake in
//! `tests/support/elevenlabs.rs`, the production client unchanged): the conversation starts with
//! the agent's prompt and the deployment's `env`; add_context and prompt updates reach it; the
//! agent's audio plays out into the session (its turns reported); an interruption drops what was
//! not played; `speak` is said verbatim, and the conversation told; a dropped connection is
//! reconnected and shown in the session's status.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::videosdk_jwt;
use crate::control::connect;
use crate::helpers::*;
use crate::on_both_databases;
use crate::support::elevenlabs::{sine, Access, FakeElevenLabs};

const KEY: &str = "xi-operator-key";
const WAIT: Duration = Duration::from_secs(10);

async fn agent_audio_speak_context_and_reconnect(db: Db) {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("el_ada", Access::Signed);
    let (http, ws) = (fake.http_base(), fake.ws_base());
    let app = spawn_app_with(db, move |s| {
        s.voice.elevenlabs_http_base = http;
        s.voice.elevenlabs_ws_base = ws;
        s.voice.elevenlabs_api_key = avatar_supervisor::config::Secret::new(KEY);
    })
    .await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app
        .ready_agent(
            &acct.key,
            json!({"prompt": "You are Ada, a bank's assistant.",
                   "voice_agent": {"provider": "elevenlabs", "agent_id": "el_ada", "auth_method": "signed"}}),
        )
        .await;
    // A VideoSDK deployment session: its env reaches the agent as dynamic variables.
    let token = videosdk_jwt(&acct.key_id, &acct.key, 600);
    let r = reply(
        app.client
            .post(app.url("/ai/v1/ai-deployment-sessions/start"))
            .header("authorization", token)
            .json(&json!({"deploymentId": agent, "env": {"customer": "Bob", "tier": "gold"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["data"]["sessionId"].as_str().unwrap().to_string();
    app.wait_session(&acct.key, &id, "live", WAIT).await;

    let conversation = fake.conversation(0, WAIT).await;
    let record = conversation.record();
    assert!(record.signed, "reached through a signed URL");
    assert_eq!(record.prompt(), Some("You are Ada, a bank's assistant."));
    let vars = record
        .dynamic_variables()
        .expect("dynamic variables")
        .clone();
    assert_eq!(
        (vars["customer"].as_str(), vars["tier"].as_str()),
        (Some("Bob"), Some("gold"))
    );
    assert_eq!(fake.signed_url_requests()[0].api_key.as_deref(), Some(KEY));

    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    // The status shows the provider connected.
    let deadline = Instant::now() + WAIT;
    loop {
        let s = ws.until("status").await.0;
        if s["voice"]["connected"] == true {
            assert_eq!(s["voice"]["provider"], "elevenlabs");
            break;
        }
        assert!(Instant::now() < deadline, "provider never connected: {s}");
    }

    // add_context becomes a contextual_update.
    ws.send(json!({"type": "add_context", "id": "c", "text": "Bob's card was blocked."}))
        .await;
    assert_eq!(ws.until("ack").await.0["delivered_to"], 1);
    conversation
        .wait_for("contextual update", WAIT, |r| {
            r.contextual_updates
                .iter()
                .any(|t| t == "Bob's card was blocked.")
        })
        .await;

    // The agent's turn: its audio plays in the session (turn reported, PCM on the preview).
    let mut audio = app_audio(&app, &id, &acct.key).await;
    conversation.send_audio(1, &sine(8000, 220.0, 16_000, 8000));
    conversation.send_audio(2, &sine(8000, 220.0, 16_000, 8000));
    conversation.agent_response("Hello Bob, how can I help?");
    let (started, _) = ws.until("speech_started").await;
    assert_eq!(started["source"], "agent");
    let (said, _) = ws.until("transcript").await;
    assert_eq!(
        (said["role"].as_str(), said["text"].as_str()),
        (Some("agent"), Some("Hello Bob, how can I help?"))
    );
    let heard = audio.samples_within(Duration::from_millis(600)).await;
    assert!(
        heard.iter().any(|s| s.unsigned_abs() > 4000),
        "the agent's audio was not played"
    );
    let (ended, _) = ws.until("speech_ended").await;
    assert_eq!(
        (ended["source"].as_str(), ended["interrupted"].as_bool()),
        (Some("agent"), Some(false))
    );

    // An interruption drops what of the turn has not played (5 s of audio, cut at once).
    conversation.send_audio(3, &sine(80_000, 220.0, 16_000, 8000));
    ws.until("speech_started").await;
    conversation.interrupt(3);
    let (ended, _) = ws.until("speech_ended").await;
    assert_eq!(ended["interrupted"], true, "{ended}");
    // Chunks played before the cut may still be on the wire: let them arrive first.
    audio.samples_within(Duration::from_millis(200)).await;
    // Late audio of the interrupted turn is dropped too.
    conversation.send_audio(3, &sine(8000, 220.0, 16_000, 8000));
    let after = audio.samples_within(Duration::from_millis(400)).await;
    assert!(
        after.is_empty(),
        "{} samples played after the interruption",
        after.len()
    );

    // `speak` is said verbatim by the TTS, and the conversation hears that it was.
    ws.send(json!({"type": "speak", "id": "s", "text": "Your new card is on its way."}))
        .await;
    let (started, _) = ws.until("speech_started").await;
    assert_eq!(started["source"], "speak");
    conversation
        .wait_for("told of the speak", WAIT, |r| {
            r.contextual_updates
                .iter()
                .any(|t| t.contains("Your new card is on its way."))
        })
        .await;

    // A prompt update reaches the live conversation, and the next one starts with it.
    let r = app
        .post(
            &format!("/v1/agent/{agent}"),
            &acct.key,
            json!({"system_prompt": "You are Ada, now brief."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    conversation
        .wait_for("prompt change", WAIT, |r| {
            r.contextual_updates
                .iter()
                .any(|t| t.contains("You are Ada, now brief."))
        })
        .await;

    // The connection drops: the status says so, the client reconnects with the new prompt.
    conversation.drop_connection();
    let deadline = Instant::now() + WAIT;
    let mut saw_down = false;
    loop {
        let s = ws.until("status").await.0;
        saw_down |= s["voice"]["connected"] == false;
        if saw_down && s["voice"]["connected"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnection: {s}");
    }
    let second = fake.conversation(1, WAIT).await;
    assert_eq!(second.record().prompt(), Some("You are Ada, now brief."));
    assert_eq!(
        fake.signed_url_requests().len(),
        2,
        "a fresh signed URL per connection"
    );

    // Ending the session closes the conversation.
    app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    second.wait_for("closed", WAIT, |r| r.ended).await;
    fake.stop().await;
}

/// The session's audio, as the preview channel carries it.
struct Audio {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

async fn app_audio(app: &TestApp, id: &str, key: &str) -> Audio {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app
        .url(&format!("/v1/sessions/{id}/preview"))
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    Audio { socket }
}

impl Audio {
    async fn samples_within(&mut self, span: Duration) -> Vec<i16> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let end = tokio::time::Instant::now() + span;
        let mut out = Vec::new();
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, self.socket.next()).await {
            if let Message::Binary(b) = msg {
                if b.first() == Some(&0x02) {
                    out.extend(
                        b[1..]
                            .chunks_exact(2)
                            .map(|c| i16::from_le_bytes([c[0], c[1]])),
                    );
                }
            }
        }
        out
    }
}

on_both_databases!(agent_audio_speak_context_and_reconnect);
