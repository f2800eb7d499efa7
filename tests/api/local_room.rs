//! The local room over WebRTC (no LiveKit), WHEP-style, with a real WebRTC peer (str0m as the
//! browser, over UDP on 127.0.0.1; it decodes VP8 with libvpx and Opus with libopus): the viewer
//! gets the avatar's frames at the session's size and its voice, its microphone reaches the voice
//! provider, it counts as present, and it leaves with DELETE. Bad requests are refused with a
//! sentence and change nothing.

use std::time::{Duration, Instant};

use avs_rtc::test_client::{espeak_48k, rms, ClientConfig, ClientHandle, TestClient};
use serde_json::json;

use crate::control::connect;
use crate::helpers::*;
use crate::on_both_databases;
use crate::support::elevenlabs::{Access, FakeElevenLabs};

const KEY: &str = "xi-operator-key";
const WAIT: Duration = Duration::from_secs(15);

/// POSTs `offer` as a WHEP offer with the session's participant token; answers the status, the
/// Location and the body.
async fn post_offer(
    app: &TestApp,
    id: &str,
    token: &str,
    offer: &str,
) -> (u16, Option<String>, String) {
    offer_with(app, id, ("authorization", format!("Bearer {token}")), offer).await
}

/// As `post_offer`, with any credential header (`x-api-key` for an account's key).
pub(crate) async fn offer_with(
    app: &TestApp,
    id: &str,
    (name, value): (&str, String),
    offer: &str,
) -> (u16, Option<String>, String) {
    let response = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/rtc")))
        .header(name, value)
        .header("content-type", "application/sdp")
        .body(offer.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, location, response.text().await.unwrap())
}

/// A viewer connected to `id`: its offer answered, its peer running.
async fn viewer(app: &TestApp, id: &str, token: &str, cfg: ClientConfig) -> (ClientHandle, String) {
    let (client, offer) = TestClient::new(cfg);
    let (status, location, answer) = post_offer(app, id, token, &offer).await;
    assert_eq!(status, 201, "{answer}");
    let location = location.expect("a Location for the viewer");
    assert!(
        location.starts_with(&format!("/v1/sessions/{id}/rtc/")),
        "{location}"
    );
    (client.start(&answer), location)
}

async fn wait_until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_viewer_sees_and_hears_the_avatar_and_is_heard(db: Db) {
    let fake = FakeElevenLabs::start(KEY).await;
    fake.add_agent("el_ada", Access::Public);
    let (http, ws) = (fake.http_base(), fake.ws_base());
    let app = spawn_app_with(db, move |s| {
        s.voice.elevenlabs_http_base = http;
        s.voice.elevenlabs_ws_base = ws;
    })
    .await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app
        .ready_agent(
            &acct.key,
            json!({"voice_agent": {"provider": "elevenlabs", "agent_id": "el_ada", "auth_method": "public"}}),
        )
        .await;
    let started = app.start_session(&acct.key, &agent).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let id = started.body["session_id"].as_str().unwrap().to_string();
    let token = started.body["participant_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut control = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    let video = loop {
        let status = control.until("status").await.0;
        if status["video"].is_object() {
            break status["video"].clone();
        }
    };
    let (width, height) = (
        video["width"].as_u64().unwrap(),
        video["height"].as_u64().unwrap(),
    );

    // A spoken sentence as the viewer's microphone (48 kHz, as a browser sends it).
    let speech = espeak_48k("Hello avatar, can you hear me speaking through my microphone?")
        .expect("espeak-ng (make setup installs it)");
    let cfg = ClientConfig {
        microphone: Some(speech),
        ..Default::default()
    };
    let (client, location) = viewer(&app, &id, &token, cfg).await;
    wait_until("frames", WAIT, || client.frames() >= 10).await;
    let (sizes, keyframe_first) = client.report(|r| {
        let sizes: Vec<(u32, u32)> = r.frames.iter().map(|f| (f.width, f.height)).collect();
        (sizes, r.frames[0].keyframe)
    });
    assert!(keyframe_first, "a new viewer starts on a keyframe");
    assert!(
        sizes
            .iter()
            .all(|&(w, h)| (w as u64, h as u64) == (width, height)),
        "frames of the session's size {width}x{height}: {sizes:?}"
    );
    // Present: the status counts the viewer.
    loop {
        let status = control.until("status").await.0;
        if status["viewers"] == 1 {
            assert_eq!(status["room"]["participants"], 1, "{status}");
            break;
        }
    }

    // The avatar speaks: its voice arrives, louder than its silence.
    let quiet_until = client.report(|r| r.audio.len());
    control
        .send(json!({"type": "speak", "id": "s", "text": "I can hear you. This is my voice, over WebRTC."}))
        .await;
    control.until("speech_started").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (quiet, loud) = client.report(|r| {
        let level = |packets: &[avs_rtc::test_client::AudioPacket]| {
            packets.iter().map(|p| p.rms).fold(0.0, f64::max)
        };
        (
            level(&r.audio[..quiet_until]),
            level(&r.audio[quiet_until..]),
        )
    });
    assert!(
        loud > 300.0 && loud > 4.0 * quiet.max(1.0),
        "voice {loud:.0} vs silence {quiet:.0}"
    );

    // The viewer's microphone reaches the voice provider as user audio with speech in it.
    let conversation = fake.conversation(0, WAIT).await;
    let record = conversation
        .wait_for("user audio", WAIT, |r| r.user_audio.len() >= 16_000)
        .await;
    let level = rms(&record.user_audio);
    assert!(
        level > 300.0,
        "the microphone's speech arrives (rms {level:.0})"
    );

    // DELETE leaves; the viewer is gone from the status.
    let r = app
        .client
        .delete(app.url(&location))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    loop {
        let status = control.until("status").await.0;
        if status["viewers"] == 0 {
            break;
        }
    }
    let r = app
        .client
        .delete(app.url(&location))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a viewer leaves once");
    drop(client.stop());
    let metrics = app.metrics().await;
    for series in [
        "avs_rtc_frames_encoded_total",
        "avs_rtc_connections_total{state=\"connected\"}",
    ] {
        assert!(metrics.contains(series), "{series} exported");
    }
}

/// Offers the server cannot answer, and requests without the right credentials, are refused with
/// a sentence; nothing is left behind.
async fn bad_offers_and_credentials_are_refused(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let a = app.start_session(&acct.key, &agent).await.body;
    let b = app.start_session(&acct.key, &agent).await.body;
    let (id, token) = (
        a["session_id"].as_str().unwrap(),
        a["participant_token"].as_str().unwrap(),
    );
    let other_token = b["participant_token"].as_str().unwrap();

    let (status, _, body) = post_offer(&app, id, token, "this is not SDP").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(".sdp"), "{body}");
    // An offer without VP8 to receive.
    let (_, no_vp8) = TestClient::new(ClientConfig {
        offer_vp8: false,
        ..Default::default()
    });
    let (status, _, body) = post_offer(&app, id, token, &no_vp8).await;
    assert_eq!(status, 422, "{body}");

    let (_, offer) = TestClient::new(ClientConfig::default());
    let r = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/rtc")))
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no credentials");
    let (status, _, _) = post_offer(&app, id, other_token, &offer).await;
    assert_eq!(status, 403, "another session's token");
    let r = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/rtc")))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "an offer is application/sdp");
    // A token opens its own session only; with the key, an unknown session is not found.
    let (status, _, _) = post_offer(&app, "sess_nope", token, &offer).await;
    assert_eq!(status, 403);
    let r = app
        .client
        .post(app.url("/v1/sessions/sess_nope/rtc"))
        .header("x-api-key", &acct.key)
        .header("content-type", "application/sdp")
        .body(offer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // With the API key instead of the token, a viewer is accepted.
    let r = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/rtc")))
        .header("x-api-key", &acct.key)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A stopped session takes no viewers.
    app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    let (_, offer) = TestClient::new(ClientConfig::default());
    let (status, _, body) = post_offer(&app, id, token, &offer).await;
    assert_eq!(status, 409, "{body}");
}

on_both_databases!(
    a_viewer_sees_and_hears_the_avatar_and_is_heard,
    bad_offers_and_credentials_are_refused,
);
