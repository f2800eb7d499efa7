//! The room page and the console in headless Chromium (Debian's), driven by playwright-core (both
//! installed by `make setup`): the real server in-process, a Node script per scenario in
//! `tests/browser/` that prints its observations as JSON lines, and the assertions here.
//! Screenshots and each scenario's observations land in `target/browser/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::in_netns;
use crate::failover::{metric, TwoNodes};
use crate::helpers::*;
use crate::support::elevenlabs::{Access, FakeElevenLabs};
use crate::support::livekit_server::{LiveKitServer, API_KEY, API_SECRET};

const SAY: &str = "Hello there, I am your avatar.";
const USER_LINE: &str = "Could you tell me about the weather?";
const AGENT_LINE: &str = "It is sunny all day today.";
/// What the fake microphone says, over and over (Chromium loops the file).
const MIC_SENTENCE: &str = "Good morning. I would like to open a new account, please.";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/browser/` (under `CARGO_TARGET_DIR` when set): screenshots and observations.
fn artifacts() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("browser")
}

/// Chromium, node and playwright-core, or a sentence saying what installs them.
fn tools() -> (PathBuf, PathBuf) {
    let playwright = assets().join("web/node_modules/playwright-core");
    assert!(
        playwright.join("index.mjs").exists(),
        "{} is missing: run `make setup` (scripts/setup_web.sh installs playwright-core)",
        playwright.display()
    );
    let chromium = PathBuf::from(
        std::env::var("AVS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        chromium.exists(),
        "{} is missing: run `make setup` (it installs Debian's chromium)",
        chromium.display()
    );
    (playwright, chromium)
}

/// One scenario script running in Node; its stdout is JSON lines, its stderr is kept for a
/// failure's message.
struct Script {
    name: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    fn start(name: &str, mut config: Value) -> Script {
        let (playwright, chromium) = tools();
        config["playwright"] = json!(playwright);
        config["chromium"] = json!(chromium);
        config["artifacts"] = json!(artifacts());
        let mut child = Command::new("node")
            .arg(root().join(format!("tests/browser/{name}.mjs")))
            .arg(config.to_string())
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (Node.js 20 or newer) to run the browser tests");
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            sink.lock().unwrap().push_str(&text);
        });
        Script {
            name: name.to_string(),
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        }
    }

    /// The next observation named `event`; a failure the script reports is this test's failure.
    async fn until(&mut self, event: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => {
                    let _ = self.child.wait().await;
                    panic!(
                        "{}.mjs ended before `{event}`; stderr:\n{}",
                        self.name,
                        self.stderr.lock().unwrap()
                    )
                }
                Err(_) => panic!("{}.mjs: no `{event}` within {within:?}", self.name),
            };
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if value["event"] == "failed" {
                panic!(
                    "{}.mjs failed: {}\npage log: {:#}\nstderr:\n{}",
                    self.name,
                    value["error"].as_str().unwrap_or_default(),
                    value["page_log"],
                    self.stderr.lock().unwrap()
                );
            }
            if value["event"] == event {
                let file = artifacts().join(format!("{}-{event}.json", self.name));
                let _ = std::fs::write(file, serde_json::to_string_pretty(&value).unwrap());
                return value;
            }
        }
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the browser script exits")
            .expect("wait");
        assert!(
            status.success(),
            "{}.mjs exited with {status}: {}",
            self.name,
            self.stderr.lock().unwrap()
        );
    }
}

/// A WAV of a spoken sentence, made by espeak-ng now: the fake microphone's input.
fn speech_wav(dir: &Path) -> PathBuf {
    let path = dir.join("microphone.wav");
    let out = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&path)
        .arg(MIC_SENTENCE)
        .output()
        .expect("espeak-ng must be installed (make setup)");
    assert!(out.status.success(), "espeak-ng: {out:?}");
    path
}

async fn link_of(app: &TestApp, key: &str, agent: &str) -> String {
    let r = app
        .post("/v1/links", key, json!({"agent_id": agent, "use_limit": 5}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["link"]["link_id"].as_str().unwrap().to_string()
}

/// Root mean square of each 100 ms of 16 kHz audio.
fn window_rms(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(1600)
        .filter(|w| w.len() == 1600)
        .map(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect()
}

#[actix_web::test]
async fn room_page_plays_the_avatar_and_hears_the_visitor() {
    if !in_netns() {
        return;
    }
    room_page(Rooms::Local).await;
}

/// The same page when the server's rooms are on LiveKit's own server: livekit-client (served by
/// this server) joins the session's room there.
#[actix_web::test]
async fn room_page_on_livekit_plays_the_avatar_and_hears_the_visitor() {
    if !in_netns() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let livekit = LiveKitServer::start(root).await;
    room_page(Rooms::LiveKit(&livekit)).await;
}

/// The same page served by one node of two while the session runs on the other: the page's node
/// is full, so its start is placed on the other node, and the page's WebRTC offer (and its leave)
/// are relayed there over NATS; the other node answers with its own ICE address. PostgreSQL is
/// reached through its socket and NATS is the namespace's own (`scripts/netns_run.sh`).
#[actix_web::test]
async fn room_page_on_one_node_plays_a_session_on_another() {
    if !in_netns() {
        return;
    }
    room_page(Rooms::OtherNode).await;
}

/// Where the room page's session runs.
enum Rooms<'a> {
    /// The local room of the node serving the page.
    Local,
    /// LiveKit's own server.
    LiveKit(&'a LiveKitServer),
    /// The local room of another node than the page's.
    OtherNode,
}

/// A visit of the room page, its media through `rooms`.
async fn room_page(rooms: Rooms<'_>) {
    let fake = FakeElevenLabs::start("xi-unused").await;
    fake.add_agent("el_room", Access::Public);
    let (http, ws) = (fake.http_base(), fake.ws_base());
    let (single, nodes) = match rooms {
        Rooms::OtherNode => {
            let env = [
                ("AVS_VOICE__ELEVENLABS_HTTP_BASE", http.as_str()),
                ("AVS_VOICE__ELEVENLABS_WS_BASE", ws.as_str()),
            ];
            let (http, ws) = (http.clone(), ws.clone());
            let nodes = TwoNodes::start(
                move |s| {
                    s.voice.elevenlabs_http_base = http;
                    s.voice.elevenlabs_ws_base = ws;
                    // One slot, taken below: the page's start goes to the other node.
                    s.render.slots_per_device = 1;
                },
                &env,
            )
            .await;
            (None, Some(nodes))
        }
        Rooms::Local | Rooms::LiveKit(_) => {
            let livekit_url = match rooms {
                Rooms::LiveKit(livekit) => Some(livekit.url()),
                _ => None,
            };
            let app = spawn_app_with(Db::Sqlite, move |s| {
                s.voice.elevenlabs_http_base = http;
                s.voice.elevenlabs_ws_base = ws;
                if let Some(url) = livekit_url {
                    s.livekit.url = url;
                    s.livekit.api_key = API_KEY.into();
                    s.livekit.api_secret = avatar_supervisor::config::Secret::new(API_SECRET);
                    s.livekit.avatar_participant = true;
                }
            })
            .await;
            (Some(app), None)
        }
    };
    let app = match (&single, &nodes) {
        (Some(app), _) => app,
        (None, Some(nodes)) => &nodes.b,
        (None, None) => unreachable!("one of the two is made above"),
    };
    let key = match &nodes {
        Some(nodes) => {
            // The page's node's one slot: taken by a session of the plain agent.
            let r = app
                .post("/v1/sessions", &nodes.key, json!({"agent_id": nodes.agent}))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            nodes.key.clone()
        }
        None => app.account(2, 10.0, 1000).await.key,
    };
    let agent = app
        .ready_agent(
            &key,
            json!({"name": "Ada", "voice_agent": {"provider": "elevenlabs", "agent_id": "el_room", "auth_method": "public"}}),
        )
        .await;
    let link = link_of(app, &key, &agent).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = speech_wav(dir.path());

    let mut script = Script::start(
        "room",
        json!({
            "url": app.url(&format!("/s/{link}")),
            "wav": wav,
            "window_ms": 4000,
            "say": SAY,
            "expect_captions": [{"who": "you", "text": USER_LINE}, {"who": "avatar", "text": AGENT_LINE}],
        }),
    );
    let live = script.until("live", Duration::from_secs(60)).await;
    let session = live["session_id"].as_str().unwrap().to_string();
    // The voice provider hears the visitor and answers: both become captions.
    let conversation = fake.conversation(0, Duration::from_secs(10)).await;
    conversation.user_transcript(USER_LINE);
    conversation.agent_response(AGENT_LINE);
    let room = script.until("room", Duration::from_secs(90)).await;
    script.finish().await;
    eprintln!("room page observations: {room:#}");

    // The page: served, fits a phone, no session before Start, keyboard-operable.
    assert_eq!(room["loaded"]["status"], 200);
    assert_eq!(room["loaded"]["overflows"], false, "wider than 360 px");
    assert_eq!(room["loaded"]["state"], "idle", "nothing starts on load");
    assert_eq!(
        room["focus"][1], "start",
        "Tab, Tab reaches Start: {}",
        room["focus"]
    );
    assert_ne!(
        room["outline"], "none",
        "the focused button shows its focus"
    );
    assert_eq!(room["focus"][2], "leave", "focus moves to Leave once live");
    assert_eq!(room["focus"][3], "say-text");
    assert_eq!(room["focus"][4], "leave");
    assert_eq!(room["session_id"], session.as_str());
    match rooms {
        // The page joined the session's LiveKit room: no viewer of the local room.
        Rooms::LiveKit(_) => assert!(room["viewer"].is_null(), "{}", room["viewer"]),
        Rooms::Local | Rooms::OtherNode => assert!(room["viewer"]
            .as_str()
            .is_some_and(|v| v.contains(&format!("/v1/sessions/{session}/rtc/")))),
    }

    // Video: VP8 at the session's frame size, and frames keep coming (the rate is printed; the
    // benchmarks measure it, a test on a loaded machine does not). `AVS_TEST_MIN_FPS` raises the
    // bar for a run that wants one.
    let video = &room["video"];
    assert_eq!(video["codec"], "video/VP8");
    let fps = video["fps"].as_f64().unwrap();
    eprintln!("room page: {fps:.1} fps decoded");
    let min_fps: f64 = std::env::var("AVS_TEST_MIN_FPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    assert!(fps >= min_fps, "decoded {fps:.1} fps: {video}");
    let size = &room["status_video"];
    assert_eq!(
        (video["width"].as_i64(), video["height"].as_i64()),
        (size["width"].as_i64(), size["height"].as_i64()),
        "decoded frames are the session's size"
    );
    // The typed sentence: said aloud (Opus arrives, and the voice's level rises well above the
    // silence before it) and captioned. The server sends no audio packets while the avatar is
    // silent, so the rate is measured while it speaks.
    let speech = &room["speech"];
    assert_eq!(speech["codec"], "audio/opus");
    let packets = speech["packets_per_s"].as_f64().unwrap();
    assert!(
        packets >= 25.0,
        "{packets:.1} audio packets a second while speaking"
    );
    let (silent, loud) = (
        room["audio"]["silent_level"].as_f64().unwrap(),
        speech["loudest_level"].as_f64().unwrap(),
    );
    assert!(
        loud > 0.02 && loud > 5.0 * silent.max(0.001),
        "the avatar's voice did not rise: silent {silent:.4}, loudest {loud:.4}"
    );
    assert!(speech["caption_ms"].is_u64(), "no caption of `{SAY}`");
    let captions = room["captions_text"].as_str().unwrap();
    for text in [SAY, USER_LINE, AGENT_LINE] {
        assert!(
            captions.contains(text),
            "no caption `{text}` in `{captions}`"
        );
    }

    // The microphone reached the voice provider as speech.
    assert!(room["mic"]["packets_sent"].as_u64().unwrap() > 50);
    let heard = conversation.record().user_audio;
    let rms = window_rms(&heard);
    let loudest = rms.iter().cloned().fold(0.0, f64::max);
    let voiced = rms.iter().filter(|r| **r > 300.0).count();
    eprintln!(
        "microphone at the provider: {:.1} s, loudest 100 ms RMS {loudest:.0}, {voiced} voiced windows",
        heard.len() as f64 / 16_000.0
    );
    assert!(
        heard.len() > 16_000,
        "{} samples of user audio",
        heard.len()
    );
    assert!(
        loudest > 1000.0 && voiced >= 5,
        "no speech in the user audio: loudest {loudest:.0}, {voiced} windows over 300"
    );

    // Leave: the page says so and the session is stopped.
    assert!(room["ended"]["status"]
        .as_str()
        .unwrap()
        .contains("The session ended"));
    assert_eq!(room["ended"]["leave_visible"], false);
    let row = app
        .wait_session(&key, &session, "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(row["status"], "stopped", "{row}");
    if let Some(nodes) = &nodes {
        // The media came from the other node's room, relayed by the page's node.
        let a_metrics = nodes.a_metrics().await;
        let connected = |text: &str| metric(text, "avs_rtc_connections_total{state=\"connected\"}");
        assert_eq!(
            connected(&a_metrics),
            1.0,
            "the browser is the other node's viewer"
        );
        let b_metrics = app.metrics().await;
        assert_eq!(connected(&b_metrics), 0.0, "not the page's node's");
        let relayed = metric(
            &b_metrics,
            "avs_cluster_forwards_total{kind=\"rtc\",outcome=\"ok\"}",
        );
        assert!(
            relayed >= 2.0,
            "the offer and the leave went over NATS: {relayed}"
        );
    }
    fake.stop().await;
    if let Some(nodes) = nodes {
        nodes.end_a();
    }
}

#[actix_web::test]
async fn a_busy_start_counts_down_and_retries() {
    if !in_netns() {
        return;
    }
    let app = spawn_app_with(Db::Sqlite, |s| s.sessions.retry_after_seconds = 2).await;
    let acct = app.account(1, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = link_of(&app, &acct.key, &agent).await;
    let blocker = app.started_session(&acct.key, &agent).await;
    let mut script = Script::start("busy", json!({"url": app.url(&format!("/s/{link}"))}));
    let countdown = script.until("countdown", Duration::from_secs(60)).await;
    assert!(
        countdown["status"]
            .as_str()
            .unwrap()
            .contains("limit of 1 concurrent sessions"),
        "{countdown}"
    );
    assert!(
        countdown["retry"]
            .as_str()
            .unwrap()
            .starts_with("Trying again in"),
        "{countdown}"
    );
    assert_eq!(countdown["start_disabled"], true);
    app.post(
        &format!("/v1/sessions/{blocker}/stop"),
        &acct.key,
        json!({}),
    )
    .await;
    let started = script.until("started", Duration::from_secs(30)).await;
    script.finish().await;
    let id = started["session_id"].as_str().unwrap();
    assert_ne!(id, blocker);
    let row = app
        .wait_session(&acct.key, id, "stopped", Duration::from_secs(10))
        .await;
    assert_eq!(row["status"], "stopped", "{row}");
    assert_eq!(row["source"], "link");
}

#[actix_web::test]
async fn revoked_link_page_says_so() {
    if !in_netns() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let link = link_of(&app, &acct.key, &agent).await;
    app.delete(&format!("/v1/links/{link}"), &acct.key).await;
    let mut script = Script::start(
        "closed",
        json!({"url": app.url(&format!("/s/{link}")), "name": "revoked"}),
    );
    let page = script.until("closed_page", Duration::from_secs(60)).await;
    script.finish().await;
    assert_eq!(page["status"], 410);
    assert_eq!(page["heading"], "This link has been turned off");
    assert!(page["sentence"]
        .as_str()
        .unwrap()
        .starts_with("Its owner revoked it"));
    assert_eq!(page["has_start"], false);
    assert_eq!(page["overflows"], false);
}

#[actix_web::test]
async fn console_signs_in_and_creates_a_link() {
    if !in_netns() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await;
    let acct = app.account(2, 10.0, 1000).await;
    let agent = app.ready_agent(&acct.key, json!({"name": "Ada"})).await;
    let mut script = Script::start(
        "console",
        json!({"base": app.base, "key": acct.key, "agent_id": agent, "link_name": "From the browser"}),
    );
    let seen = script.until("console", Duration::from_secs(60)).await;
    script.finish().await;
    assert!(
        seen["refused"].as_str().unwrap().contains("not accepted"),
        "{seen}"
    );
    assert_eq!(
        seen["stored"],
        json!({"session": true, "local": 0, "in_url": false})
    );
    assert!(
        seen["account"].as_str().unwrap().contains("Credits"),
        "{seen}"
    );
    assert!(seen["agents"].as_str().unwrap().contains(&agent));
    assert!(seen["link_row"].as_str().unwrap().contains("0 of 3"));
    assert!(
        seen["signed_out_key"].is_null(),
        "signing out forgets the key"
    );

    let links = app.get("/v1/links", &acct.key).await.body["links"].clone();
    let link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "From the browser")
        .unwrap_or_else(|| panic!("the console's link is not listed: {links}"));
    assert_eq!(link["use_limit"], 3);
    assert_eq!(link["agent"]["agent_id"], agent.as_str());
    assert_eq!(seen["link_url"], link["url"]);
}

#[actix_web::test]
async fn docs_page_draws_every_operation() {
    if !in_netns() {
        return;
    }
    let app = spawn_app(Db::Sqlite).await;
    let doc = app.get("/openapi.json", "").await.body;
    let mut script = Script::start("docs", json!({"base": app.base}));
    let seen = script.until("docs", Duration::from_secs(60)).await;
    script.finish().await;
    assert_eq!(seen["failed"], false, "{seen}");
    let operations: Vec<String> = seen["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    let mut expected = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            expected.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut drawn = operations.clone();
    drawn.sort();
    expected.sort();
    assert_eq!(drawn, expected, "every operation is drawn once");
    assert!(seen["tags"].as_array().unwrap().len() >= 8, "{seen}");
    let start = seen["start_session"].as_str().unwrap_or_default();
    for words in [
        "POST /v1/links/start-session",
        "Authentication: none",
        "link_id",
        "participant_token",
        "link_inactive",
    ] {
        assert!(
            start.contains(words),
            "the start-session section lacks `{words}`: {start}"
        );
    }
}
