//! The avatar as a participant of a real LiveKit room, through the whole server: a session whose
//! room is on the fake LiveKit server (`tests/support/fake_livekit.py`, real WebRTC through
//! aiortc) and whose voice is an ElevenLabs agent (the fake in `tests/support/elevenlabs.rs`).
//! The avatar joins with the session's identity and grants, publishes its face and voice (decoded
//! at the fake), hears a user who joins and speaks (their words reach ElevenLabs as
//! `user_audio_chunk`), goes quiet on `interrupt`, and on stop leaves and deletes the room. A
//! LiveKit server that vanishes restarts the room child, then fails the session. Measured on the
//! way (printed): start request → first frame decoded at the fake, CPU and memory of publishing,
//! and the audio/video offset at the receiver.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::require_netns;
use crate::control::connect;
use crate::helpers::*;
use crate::support::elevenlabs::{Access, FakeElevenLabs};
use crate::support::livekit_media::FakeLiveKit;

const KEY: &str = "devkey";
const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";
const XI_KEY: &str = "xi-operator-key";
const AVATAR: &str = "avatar-agent";
const WAIT: Duration = Duration::from_secs(15);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// CPU seconds of this process (the server runs in it) and its RSS in MB.
fn cpu_and_rss() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (
        (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0,
        rss_kb / 1024.0,
    )
}

fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// (arrival, rms) of each 20 ms of the avatar's audio decoded at the fake.
fn audio_windows(observed: &Value) -> Vec<(f64, f64)> {
    observed["audio"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["t"].as_f64()?, a["rms"].as_f64()?)))
        .collect()
}

/// A server with its rooms on the fake LiveKit and its voice on the fake ElevenLabs.
async fn server(fake: &FakeLiveKit, el: &FakeElevenLabs) -> TestApp {
    let (url, http, ws) = (fake.url(), el.http_base(), el.ws_base());
    spawn_app_with(Db::Sqlite, move |s| {
        s.livekit.url = url;
        s.livekit.api_key = KEY.into();
        s.livekit.api_secret = avatar_supervisor::config::Secret::new(SECRET);
        s.livekit.avatar_participant = true;
        s.voice.elevenlabs_http_base = http;
        s.voice.elevenlabs_ws_base = ws;
        s.voice.elevenlabs_api_key = avatar_supervisor::config::Secret::new(XI_KEY);
        s.sessions.room_check_interval_ms = 1000;
        s.sessions.max_child_restarts = 1;
    })
    .await
}

#[actix_web::test]
async fn the_avatar_meets_a_user_in_a_livekit_room() {
    require_netns();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fake = FakeLiveKit::start(root, KEY, SECRET).await;
    let el = FakeElevenLabs::start(XI_KEY).await;
    el.add_agent("el_ada", Access::Public);
    let app = server(&fake, &el).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app
        .ready_agent(
            &acct.key,
            json!({"voice_agent": {"provider": "elevenlabs", "agent_id": "el_ada", "auth_method": "public"}}),
        )
        .await;

    let (cpu0, rss0) = cpu_and_rss();
    let requested = now();
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["livekit_url"], fake.url());
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let room = r.body["room_name"].as_str().unwrap().to_string();
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();

    // It joins as the session's agent identity (the fake checked the token's signature and
    // grants), publishes, and the status says so; the voice agent listens.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let s = ws.until("status").await.0;
        if s["room"]["published"] == true && s["video"]["width"].is_number() {
            break s;
        }
        assert!(Instant::now() < deadline, "never published: {s}");
    };
    assert_eq!(status["voice"]["listening"], true, "{status}");
    let me = fake.participant(AVATAR).await;
    assert_eq!(me["kind"], "AGENT", "{me}");
    assert!(me["state"] == "joined" || me["state"] == "active", "{me}");
    let (w, h) = (
        status["video"]["width"].as_u64().unwrap(),
        status["video"]["height"].as_u64().unwrap(),
    );
    // The fake measures the mean luma of the middle of the mouth region, where the opening
    // shows the mouth's dark inside.
    let m: Vec<f64> = status["video"]["mouth_region"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (mx, my, mw, mh) = (m[0] + 0.3 * m[2], m[1] + 0.4 * m[3], 0.4 * m[2], 0.4 * m[3]);
    fake.control(
        "POST",
        "/control/mouth",
        Some(json!({"x": mx as u32, "y": my as u32, "w": mw as u32, "h": mh as u32})),
    )
    .await;

    // Video: nobody watches a preview, yet the avatar renders for the room: >= 20 fps of the
    // session's size, decoded at the fake.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu1, rss1) = cpu_and_rss();
    let observed = fake.observations(AVATAR).await;
    let frames = observed["video"].as_array().cloned().unwrap_or_default();
    let first = frames[0]["t"].as_f64().unwrap();
    let recent: Vec<&Value> = frames
        .iter()
        .filter(|f| f["t"].as_f64().unwrap() > now() - 4.0)
        .collect();
    let fps = recent.len() as f64 / 4.0;
    println!(
        "livekit: first frame decoded at the fake {:.0} ms after the start request; {fps:.1} fps; \
         publishing: {:.0} % of a core, rss {rss0:.0} -> {rss1:.0} MB",
        (first - requested) * 1000.0,
        (cpu1 - cpu0) / (now() - requested) * 100.0
    );
    assert!(fps >= 20.0, "decoded {fps:.1} fps");
    assert!(
        frames.iter().all(|f| f["w"] == w && f["h"] == h),
        "every frame is {w}x{h}"
    );

    // The avatar speaks (a `speak` is said verbatim through the local TTS): its voice arrives,
    // and the mouth moves with it; the offset between them is measured at the receiver.
    let spoke_at = now();
    ws.send(json!({"type": "speak", "id": "s1", "text": "Hello there, I am your avatar, and I can talk for quite a while today."}))
        .await;
    ws.until("speech_started").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Interrupt: the room hears it stop.
    ws.send(json!({"type": "interrupt", "id": "i1"})).await;
    ws.until("ack").await;
    let interrupted_at = now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let observed = fake.observations(AVATAR).await;
    let audio = audio_windows(&observed);
    let onset = audio
        .iter()
        .find(|(t, r)| *t > spoke_at && *r > 500.0)
        .map(|(t, _)| *t)
        .expect("the avatar's voice is heard in the room");
    let last_loud = audio
        .iter()
        .filter(|(t, r)| *t > spoke_at && *r > 500.0)
        .map(|(t, _)| *t)
        .fold(f64::NAN, f64::max);
    let mouths: Vec<(f64, f64)> = observed["video"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["t"].as_f64()?, f["mouth"].as_f64()?)))
        .collect();
    let before: Vec<f64> = mouths
        .iter()
        .filter(|(t, _)| *t < spoke_at)
        .map(|(_, m)| *m)
        .collect();
    let rest = before.iter().sum::<f64>() / before.len().max(1) as f64;
    let spread = before.iter().map(|m| (m - rest).abs()).fold(0.0, f64::max);
    let peak = mouths
        .iter()
        .filter(|(t, _)| *t > spoke_at)
        .map(|(_, m)| (m - rest).abs())
        .fold(0.0, f64::max);
    println!(
        "livekit: mouth luma at rest {rest:.1} (idle spread {spread:.1}, {} frames), peak change while speaking {peak:.1}",
        before.len()
    );
    let opened = mouths
        .iter()
        .find(|(t, m)| *t > spoke_at && (m - rest).abs() > spread + 4.0)
        .map(|(t, _)| *t);
    println!(
        "livekit: voice heard {:.0} ms after speak; mouth moved {}; interrupt: last loud audio {:.0} ms after its ack",
        (onset - spoke_at) * 1000.0,
        opened.map_or("never".to_string(), |t| format!(
            "{:.0} ms after speak (audio/video offset {:+.0} ms)",
            (t - spoke_at) * 1000.0,
            (t - onset) * 1000.0
        )),
        (last_loud - interrupted_at) * 1000.0
    );
    assert!(opened.is_some(), "the mouth moves while the avatar speaks");
    assert!(
        last_loud - interrupted_at < 0.3,
        "quiet within the audio path's own latency of the interrupt"
    );

    // A user joins and speaks: the ElevenLabs agent hears them.
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("user.wav");
    let spoken = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .arg("Hello avatar, can you hear me? I would like to know the weather tomorrow.")
        .status()
        .expect("espeak-ng runs");
    assert!(spoken.success());
    fake.control(
        "POST",
        "/control/users",
        Some(json!({"room": room, "identity": "user-1", "wav": wav})),
    )
    .await;
    let conversation = el.conversation(0, WAIT).await;
    let heard = eventually(WAIT, || {
        let record = conversation.record();
        async move {
            record
                .user_audio
                .chunks(320)
                .filter(|c| rms(c) > 500.0)
                .count()
                >= 50
        }
    })
    .await;
    let record = conversation.record();
    println!(
        "livekit: the user's voice reached ElevenLabs: {:.2} s of user_audio_chunk audio, peak rms {:.0}",
        record.user_audio.len() as f64 / 16_000.0,
        record.user_audio.chunks(320).map(rms).fold(0.0, f64::max)
    );
    assert!(
        heard,
        "a second or more of the user's speech reached the voice agent"
    );
    let s = loop {
        let s = ws.until("status").await.0;
        if s["users"].as_u64() >= Some(1) {
            break s;
        }
    };
    assert_eq!(
        s["room"]["participants"].as_u64().map(|n| n >= 1),
        Some(true)
    );

    // Stop: the avatar leaves, the room is deleted, no FFI handle is left.
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let me = fake.participant(AVATAR).await;
    assert_eq!(me["state"], "left", "{me}");
    let state = fake.control("GET", "/control/state", None).await;
    let ours = state["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == room.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert!(ours.is_null() || ours["deleted"] == true, "{ours}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("avs_livekit_ffi_handles 0"), "{metrics}");
    assert!(metrics.contains("avs_livekit_published_sessions 0"));
}

#[actix_web::test]
async fn a_vanished_livekit_server_restarts_the_room_then_fails_the_session() {
    require_netns();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut fake = FakeLiveKit::start(root, KEY, SECRET).await;
    let el = FakeElevenLabs::start(XI_KEY).await;
    let app = server(&fake, &el).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let id = app.started_session(&acct.key, &agent).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    loop {
        let s = ws.until("status").await.0;
        if s["room"]["published"] == true {
            break;
        }
    }
    fake.kill().await;
    let killed = Instant::now();
    let (restarted, _) = ws.until("room_restarted").await;
    println!(
        "livekit gone: room_restarted after {:.1} s ({})",
        killed.elapsed().as_secs_f64(),
        restarted["reason"]
    );
    let row = app
        .wait_session(&acct.key, &id, "failed", Duration::from_secs(90))
        .await;
    assert_eq!(row["end_reason"], "room_failed", "{row}");
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);
}
