//! The avatar as a participant of a real LiveKit room, through the whole server: a session whose
//! room is on LiveKit's own server (`livekit-server`, `.setup/livekit-server/`; rooms made and
//! deleted through its RoomService) and whose voice is an ElevenLabs agent (the fake in
//! `tests/support/elevenlabs.rs`). A user in the room (`tests/support/lk_peer.py`, LiveKit's
//! Python SDK) decodes and measures what the avatar publishes. The avatar joins with the session's
//! identity and grants, publishes its face and voice, hears the user speak (their words reach
//! ElevenLabs as `user_audio_chunk`), goes quiet on `interrupt`, and on stop leaves and deletes the
//! room. A room deleted through RoomService ends the session `room_closed`; the server killed
//! restarts the room child, then fails the session. Measured on the way (printed): the user's join
//! → first frame decoded, CPU and memory of publishing, and the audio/video offset at the user.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::in_netns;
use crate::control::connect;
use crate::helpers::*;
use crate::support::elevenlabs::{Access, FakeElevenLabs};
use crate::support::livekit_peer::Peer;
use crate::support::livekit_server::{LiveKitServer, API_KEY as KEY, API_SECRET as SECRET};

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

/// (arrival, rms) of each 20 ms of the avatar's audio decoded at the user.
fn audio_windows(observed: &Value) -> Vec<(f64, f64)> {
    observed["audio"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["t"].as_f64()?, a["rms"].as_f64()?)))
        .collect()
}

/// Whether the avatar shows in `room` on the server (within [`WAIT`]).
async fn avatar_joined(livekit: &LiveKitServer, room: &str) -> bool {
    eventually(WAIT, || async {
        livekit.participants(room).await.iter().any(|p| p == AVATAR)
    })
    .await
}

/// A server with its rooms on LiveKit's server and its voice on the fake ElevenLabs.
async fn server(livekit: &LiveKitServer, el: &FakeElevenLabs) -> TestApp {
    let (url, http, ws) = (livekit.url(), el.http_base(), el.ws_base());
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
    if !in_netns() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let livekit = LiveKitServer::start(root).await;
    let el = FakeElevenLabs::start(XI_KEY).await;
    el.add_agent("el_ada", Access::Public);
    let app = server(&livekit, &el).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app
        .ready_agent(
            &acct.key,
            json!({"voice_agent": {"provider": "elevenlabs", "agent_id": "el_ada", "auth_method": "public"}}),
        )
        .await;

    let (cpu0, rss0) = cpu_and_rss();
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["livekit_url"], livekit.url());
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let room = r.body["room_name"].as_str().unwrap().to_string();
    // The room exists on the server (made through RoomService) with the avatar in it.
    assert!(
        avatar_joined(&livekit, &room).await,
        "the avatar is not in {room}: {}",
        livekit.log_tail(20)
    );
    // A user joins with the session's own participant token.
    let token = r.body["participant_token"].as_str().unwrap().to_string();
    let joined_at = now();
    let user = Peer::join(root, &livekit.url(), &token).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();

    // It joins as the session's agent identity (the server checked the token's signature and
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
    let state = user.state().await;
    let me = state["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["identity"] == AVATAR)
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        me["kind"].as_str().is_some_and(|k| k.ends_with("AGENT")),
        "{state}"
    );
    let (w, h) = (
        status["video"]["width"].as_u64().unwrap(),
        status["video"]["height"].as_u64().unwrap(),
    );
    // The user measures the mean luma of the middle of the mouth region, where the opening
    // shows the mouth's dark inside.
    let m: Vec<f64> = status["video"]["mouth_region"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (mx, my, mw, mh) = (m[0] + 0.3 * m[2], m[1] + 0.4 * m[3], 0.4 * m[2], 0.4 * m[3]);
    user.command(
        "mouth",
        json!({"x": mx as u32, "y": my as u32, "w": mw as u32, "h": mh as u32}),
    )
    .await;

    // Video: nobody watches a preview, yet the avatar renders for the room: frames keep coming at
    // the session's size, decoded at the user (the rate is printed; load-tests measure it).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu1, rss1) = cpu_and_rss();
    let observed = user.observations(AVATAR).await;
    let frames = observed["video"].as_array().cloned().unwrap_or_default();
    assert!(!frames.is_empty(), "no frame of the avatar decoded");
    let first = frames[0]["t"].as_f64().unwrap();
    let recent: Vec<&Value> = frames
        .iter()
        .filter(|f| f["t"].as_f64().unwrap() > now() - 4.0)
        .collect();
    let fps = recent.len() as f64 / 4.0;
    println!(
        "livekit: first frame decoded {:.0} ms after the user joined; {fps:.1} fps; \
         publishing: {:.0} % of a core, rss {rss0:.0} -> {rss1:.0} MB",
        (first - joined_at) * 1000.0,
        (cpu1 - cpu0) / (now() - joined_at) * 100.0
    );
    assert!(
        recent.len() >= 40,
        "frames keep coming: {} in 4 s",
        recent.len()
    );
    let of_size = frames.iter().filter(|f| f["w"] == w && f["h"] == h).count();
    assert!(
        of_size * 10 >= frames.len() * 9,
        "{of_size} of {} frames are {w}x{h}",
        frames.len()
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
    let observed = user.observations(AVATAR).await;
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
    // Quiet after the interrupt, within the audio path's own latency (a jitter buffer of the
    // real receiver's; the rest of the sentence would run seconds longer).
    assert!(
        last_loud - interrupted_at < 0.6,
        "loud audio {:.0} ms after the interrupt",
        (last_loud - interrupted_at) * 1000.0
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
    user.command("publish_wav", json!({"path": wav})).await;
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
    // The user joined before the avatar spoke: a fresh channel's first status counts them.
    let mut fresh = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    let s = fresh.until("status").await.0;
    assert!(s["users"].as_u64() >= Some(1), "{s}");
    assert_eq!(
        s["room"]["participants"].as_u64().map(|n| n >= 1),
        Some(true)
    );

    // Stop: the avatar leaves, the room is deleted (the user is told so), no FFI handle is left.
    let r = app
        .post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let gone = eventually(WAIT, || async {
        let state = user.state().await;
        let left = state["left"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["identity"] == AVATAR);
        left || !state["disconnected"].is_null()
    })
    .await;
    assert!(
        gone,
        "the user saw the avatar leave: {}",
        user.state().await
    );
    assert!(
        eventually(WAIT, || async {
            livekit.participants(&room).await.is_empty()
        })
        .await,
        "the room {room} is gone"
    );
    user.close().await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("avs_livekit_ffi_handles 0"), "{metrics}");
    assert!(metrics.contains("avs_livekit_published_sessions 0"));
}

#[actix_web::test]
async fn a_vanished_livekit_server_restarts_the_room_then_fails_the_session() {
    if !in_netns() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut livekit = LiveKitServer::start(root).await;
    let el = FakeElevenLabs::start(XI_KEY).await;
    let app = server(&livekit, &el).await;
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
    livekit.kill().await;
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

#[actix_web::test]
async fn a_room_deleted_through_room_service_ends_the_session_room_closed() {
    if !in_netns() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let livekit = LiveKitServer::start(root).await;
    let el = FakeElevenLabs::start(XI_KEY).await;
    let app = server(&livekit, &el).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let r = app.start_session(&acct.key, &agent).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["session_id"].as_str().unwrap().to_string();
    let room = r.body["room_name"].as_str().unwrap().to_string();
    assert!(
        avatar_joined(&livekit, &room).await,
        "the avatar is not in {room}: {}",
        livekit.log_tail(20)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The room's owner deletes it: the avatar is told `room_deleted`, and the session is over
    // (not restarted into a room that was deleted on purpose), billed, its count released.
    livekit.delete_room(&room).await;
    let row = app
        .wait_session(&acct.key, &id, "stopped", Duration::from_secs(20))
        .await;
    assert_eq!(row["end_reason"], "room_closed", "{row}");
    assert!(row["billed_seconds"].as_i64() >= Some(1), "{row}");
    assert_eq!(app.account_info(&acct.key).await["live_sessions"], 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_livekit_published_sessions 0"),
        "{metrics}"
    );
}
