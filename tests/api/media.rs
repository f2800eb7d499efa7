//! The media path end to end: a live session's preview channel carries JPEG frames at the
//! configured rate and the voice's PCM; the mouth moves with speech; render slots are a limit of
//! their own; a renderer that fails is restarted, then escalated, and what the session held is
//! released once; a lip-sync ONNX model can drive the mouth instead of the built-in renderer.

use std::time::{Duration, Instant};

use avatar_supervisor::actors::registry::Lookup;
use avatar_supervisor::actors::render_pool::PoolStatus;
use avatar_supervisor::actors::session::messages::{ChildKind, InjectFault, InjectWorkerPanic};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::control::connect;
use crate::helpers::*;
use crate::on_both_databases;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a preview channel delivered.
#[derive(Debug)]
enum Item {
    Text(Value),
    Frame(Vec<u8>),
    Pcm(Vec<i16>),
    Closed,
}

pub(crate) struct Preview {
    socket: Socket,
}

pub(crate) async fn preview(app: &TestApp, id: &str, token: &str) -> Result<Preview, u16> {
    let url = app
        .url(&format!("/v1/sessions/{id}/preview?token={token}"))
        .replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await {
        Ok((socket, _)) => Ok(Preview { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("preview: {e}"),
    }
}

impl Preview {
    async fn next(&mut self) -> Item {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s");
            let Some(Ok(msg)) = msg else {
                return Item::Closed;
            };
            return match msg {
                Message::Text(t) => Item::Text(serde_json::from_str(&t).unwrap()),
                Message::Binary(b) => match b.first() {
                    Some(0x01) => Item::Frame(b[1..].to_vec()),
                    Some(0x02) => Item::Pcm(
                        b[1..]
                            .chunks_exact(2)
                            .map(|c| i16::from_le_bytes([c[0], c[1]]))
                            .collect(),
                    ),
                    other => panic!("unknown binary tag {other:?}"),
                },
                Message::Close(_) => Item::Closed,
                _ => continue,
            };
        }
    }

    /// The next JPEG frame, decoded.
    pub(crate) async fn frame(&mut self) -> image::RgbImage {
        loop {
            if let Item::Frame(jpeg) = self.next().await {
                return image::load_from_memory(&jpeg).expect("a JPEG").to_rgb8();
            }
        }
    }

    /// Everything that arrives within `span`.
    async fn collect(&mut self, span: Duration) -> Vec<Item> {
        let end = Instant::now() + span;
        let mut items = Vec::new();
        while let Ok(item) = tokio::time::timeout_at(end.into(), self.next()).await {
            let closed = matches!(item, Item::Closed);
            items.push(item);
            if closed {
                break;
            }
        }
        items
    }
}

async fn live_session(app: &TestApp, key: &str) -> (String, String) {
    let agent = app.ready_agent(key, json!({})).await;
    let r = app
        .post(
            "/v1/sessions",
            key,
            json!({"agent_id": agent, "aspect_ratio": "1:1"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    (
        r.body["session_id"].as_str().unwrap().to_string(),
        r.body["participant_token"].as_str().unwrap().to_string(),
    )
}

/// The mouth region the session reports (x, y, w, h), clamped to the frame.
fn mouth_region(video: &Value) -> (usize, usize, usize, usize) {
    let r: Vec<f64> = video["mouth_region"]
        .as_array()
        .expect("mouth_region")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (w, h) = (
        video["width"].as_f64().unwrap(),
        video["height"].as_f64().unwrap(),
    );
    let x = r[0].clamp(0.0, w - 1.0);
    let y = r[1].clamp(0.0, h - 1.0);
    (
        x as usize,
        y as usize,
        r[2].min(w - x) as usize,
        r[3].min(h - y) as usize,
    )
}

fn region_change(a: &image::RgbImage, b: &image::RgbImage, r: (usize, usize, usize, usize)) -> f64 {
    avatar_supervisor::media::render::region_difference(
        a.as_raw(),
        b.as_raw(),
        a.width() as usize,
        r,
    )
}

/// Mean change of the mouth region between consecutive frames.
fn motion(frames: &[image::RgbImage], r: (usize, usize, usize, usize)) -> f64 {
    let diffs: Vec<f64> = frames
        .windows(2)
        .map(|w| region_change(&w[0], &w[1], r))
        .collect();
    diffs.iter().sum::<f64>() / diffs.len().max(1) as f64
}

async fn video_info(app: &TestApp, key: &str, id: &str) -> Value {
    let mut ws = connect(app, &format!("/v1/sessions/{id}/control"), Some(key))
        .await
        .unwrap();
    loop {
        let status = ws.until("status").await.0;
        if status["video"].is_object() {
            return status["video"].clone();
        }
    }
}

async fn preview_streams_frames_and_the_mouth_follows_speech(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(2, 10.0, 1000).await;
    let (id, token) = live_session(&app, &acct.key).await;
    let video = video_info(&app, &acct.key, &id).await;
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(512), Some(512)),
        "{video}"
    );
    assert_eq!(video["fps"], 25);

    let mut pv = preview(&app, &id, &token).await.unwrap();
    let Item::Text(hello) = pv.next().await else {
        panic!("the preview opens with its metadata")
    };
    assert_eq!(hello["type"], "preview");
    assert_eq!(hello["audio"]["sample_rate"], 16000);

    // Frames arrive, at the session's size. (Their rate depends on the machine's load: it is
    // measured in load-tests/, not asserted here.)
    let start = Instant::now();
    let items = pv.collect(Duration::from_secs(2)).await;
    let frames: Vec<image::RgbImage> = items
        .iter()
        .filter_map(|i| match i {
            Item::Frame(j) => Some(image::load_from_memory(j).unwrap().to_rgb8()),
            _ => None,
        })
        .collect();
    let fps = frames.len() as f64 / start.elapsed().as_secs_f64();
    assert!(frames.len() >= 4, "{} frames in 2 s", frames.len());
    assert_eq!((frames[0].width(), frames[0].height()), (512, 512));
    let region = mouth_region(&video);
    let silent = motion(&frames, region);

    // Speech: PCM arrives on the same channel, and the mouth moves far more than at rest.
    let mut control = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    control
        .send(json!({"type": "speak", "text": "Hello! I am your avatar, and I am speaking out loud now. Watch my mouth move."}))
        .await;
    control.until("speech_started").await;
    let items = pv.collect(Duration::from_millis(1500)).await;
    let speaking: Vec<image::RgbImage> = items
        .iter()
        .filter_map(|i| match i {
            Item::Frame(j) => Some(image::load_from_memory(j).unwrap().to_rgb8()),
            _ => None,
        })
        .collect();
    let pcm: usize = items
        .iter()
        .map(|i| match i {
            Item::Pcm(s) => s.len(),
            _ => 0,
        })
        .sum();
    // About 1.5 s of 16 kHz audio, delivered in real time.
    assert!(pcm > 16_000 && pcm < 32_000, "{pcm} samples");
    let talking = motion(&speaking, region);
    eprintln!("preview: {fps:.1} fps; mouth motion {talking:.2} speaking vs {silent:.2} silent");
    assert!(
        talking > 3.0 * silent.max(0.3),
        "mouth change while speaking {talking:.2} vs silent {silent:.2}"
    );
    // Outside the face, speech changes no more than idle motion does.
    let corner = (0, 0, 64, 64);
    let still = motion(&speaking, corner);
    assert!(still < talking / 2.0, "{still} vs {talking}");

    // The time to first frame is measured.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_render_first_frame_seconds_count 1"),
        "first frame not measured"
    );
    assert!(metrics.contains("avs_render_frames_total{device=\"cpu\"}"));
}

async fn preview_credentials_and_an_ended_session(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 10.0, 1000).await;
    let (a, token_a) = live_session(&app, &acct.key).await;
    let (b, _) = live_session(&app, &acct.key).await;
    // No credentials, a bad token, and another session's token: refused at the upgrade.
    let url = app
        .url(&format!("/v1/sessions/{a}/preview"))
        .replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("opened without credentials: {:?}", other.is_ok()),
    }
    assert_eq!(preview(&app, &a, "not-a-token").await.err(), Some(401));
    assert_eq!(preview(&app, &b, &token_a).await.err(), Some(403));
    // The API key works as well.
    let mut keyed = connect(&app, &format!("/v1/sessions/{a}/preview"), Some(&acct.key))
        .await
        .unwrap();
    assert_eq!(keyed.next().await["type"], "preview");
    let stranger = app.account(1, 1.0, 0).await;
    assert_eq!(
        connect(
            &app,
            &format!("/v1/sessions/{a}/preview"),
            Some(&stranger.key)
        )
        .await
        .err(),
        Some(404)
    );

    // Stopping the session closes the preview after its final status; a later preview of it
    // gets that status and a close.
    let mut pv = preview(&app, &a, &token_a).await.unwrap();
    pv.frame().await;
    app.post(&format!("/v1/sessions/{a}/stop"), &acct.key, json!({}))
        .await;
    let mut last = Value::Null;
    loop {
        match pv.next().await {
            Item::Text(t) if t["type"] == "status" => last = t,
            Item::Closed => break,
            _ => {}
        }
    }
    assert_eq!(last["state"], "stopped");
    let mut late = preview(&app, &a, &token_a).await.unwrap();
    let Item::Text(status) = late.next().await else {
        panic!("a status first")
    };
    assert_eq!(
        (status["state"].as_str(), status["end_reason"].as_str()),
        (Some("stopped"), Some("stopped_by_api"))
    );
    assert!(matches!(late.next().await, Item::Closed));
}

async fn render_slots_are_a_limit_of_their_own(db: Db) {
    let app = spawn_app_with(db, |s| s.render.slots_per_device = 1).await;
    let acct = app.account(5, 10.0, 2000).await;
    let agent = app.ready_agent(&acct.key, json!({})).await;
    let first = app.start_session(&acct.key, &agent).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let refused = app.start_session(&acct.key, &agent).await;
    assert_eq!((refused.status, refused.error_code()), (429, "no_capacity"));
    assert!(refused.body["retry_after_seconds"]
        .as_u64()
        .is_some_and(|s| s >= 1));
    // The quota was not touched: one live session, one session row, no minutes taken for it.
    let account = app.account_info(&acct.key).await;
    assert_eq!(account["live_sessions"], 1, "{account}");
    let all = app.get("/v1/sessions", &acct.key).await.body["data"].clone();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    // A released slot is free again at once.
    let id = first.body["session_id"].as_str().unwrap();
    app.post(&format!("/v1/sessions/{id}/stop"), &acct.key, json!({}))
        .await;
    let again = app.start_session(&acct.key, &agent).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let pool = app.state.render_pool.send(PoolStatus).await.unwrap();
    assert_eq!((pool[0].slots, pool[0].in_use), (1, 1));
}

async fn a_failing_renderer_is_restarted_then_the_session_fails_once(db: Db) {
    let app = spawn_app_with(db, |s| {
        s.sessions.max_child_restarts = 2;
        s.sessions.child_restart_window_seconds = 60;
    })
    .await;
    let acct = app.account(2, 10.0, 1000).await;
    let (id, token) = live_session(&app, &acct.key).await;
    let mut ws = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    ws.until("status").await;
    let session = app
        .state
        .registry
        .send(Lookup {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .expect("live");
    let inject = || async {
        session
            .addr
            .send(InjectFault(ChildKind::Renderer))
            .await
            .unwrap()
            .unwrap()
    };
    for n in 1..=2 {
        inject().await;
        let (restarted, _) = ws.until("renderer_restarted").await;
        assert_eq!(restarted["restarts"], n);
        assert!(
            restarted["reason"].as_str().unwrap().contains("fault"),
            "{restarted}"
        );
        // The restarted renderer draws again.
        let mut pv = preview(&app, &id, &token).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut frames = 0;
        while frames < 3 && Instant::now() < deadline {
            pv.frame().await;
            frames += 1;
        }
        assert_eq!(frames, 3);
    }
    let status = loop {
        let s = ws.until("status").await.0;
        if s["renderer_restarts"] == 2 {
            break s;
        }
    };
    assert_eq!(status["state"], "live");
    // Past the bound: the session fails, with a reason, and releases what it held once.
    inject().await;
    let row = app
        .wait_session(&acct.key, &id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(row["end_reason"], "renderer_failed", "{row}");
    assert!(
        row["failure_reason"]
            .as_str()
            .unwrap()
            .contains("renderer failed too often"),
        "{row}"
    );
    let account = app.account_info(&acct.key).await;
    assert_eq!(account["live_sessions"], 0, "{account}");
    let pool = app.state.render_pool.send(PoolStatus).await.unwrap();
    assert_eq!(pool[0].in_use, 0);
    let ledger = app.state.store.usage(&acct.id).await.unwrap();
    let billed: i64 = ledger
        .iter()
        .filter(|l| l.kind == "seconds" && l.session_id.as_deref() == Some(id.as_str()))
        .map(|l| -l.amount)
        .sum();
    assert_eq!(
        billed,
        row["billed_seconds"].as_i64().unwrap(),
        "{ledger:?}"
    );
}

/// A panic in a device worker's tick (outside any one frame's render) fails every session on the
/// device through its restart policy, and the worker comes back: both sessions draw again.
async fn a_render_worker_that_panics_is_restarted_with_its_sessions(db: Db) {
    let app = spawn_app(db).await;
    let acct = app.account(3, 10.0, 1000).await;
    let (a, token_a) = live_session(&app, &acct.key).await;
    let (b, token_b) = live_session(&app, &acct.key).await;
    let mut ws_a = connect(&app, &format!("/v1/sessions/{a}/control"), Some(&acct.key))
        .await
        .unwrap();
    let mut ws_b = connect(&app, &format!("/v1/sessions/{b}/control"), Some(&acct.key))
        .await
        .unwrap();
    ws_a.until("status").await;
    ws_b.until("status").await;
    // Both renderers are attached to the device's worker (the status shows their video).
    video_info(&app, &acct.key, &a).await;
    video_info(&app, &acct.key, &b).await;
    // Someone watches, so the worker ticks for both.
    let mut pv_a = preview(&app, &a, &token_a).await.unwrap();
    pv_a.frame().await;
    let session = app
        .state
        .registry
        .send(Lookup {
            session_id: a.clone(),
        })
        .await
        .unwrap()
        .expect("live");
    session.addr.send(InjectWorkerPanic).await.unwrap().unwrap();
    for ws in [&mut ws_a, &mut ws_b] {
        let (restarted, _) = ws.until("renderer_restarted").await;
        assert_eq!(restarted["restarts"], 1, "{restarted}");
        assert!(
            restarted["reason"]
                .as_str()
                .unwrap()
                .contains("render worker restarted"),
            "{restarted}"
        );
    }
    // The worker is back and no slot was lost: both sessions draw again.
    for (id, token) in [(&a, &token_a), (&b, &token_b)] {
        let mut pv = preview(&app, id, token).await.unwrap();
        for _ in 0..3 {
            pv.frame().await;
        }
    }
    let pool = app.state.render_pool.send(PoolStatus).await.unwrap();
    assert!(pool[0].alive, "{pool:?}");
    assert_eq!(pool[0].in_use, 2);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_render_worker_restarts_total{device=\"cpu\"} 1"),
        "worker restart not counted"
    );
    for id in [&a, &b] {
        let row = app.get(&format!("/v1/sessions/{id}"), &acct.key).await;
        assert_eq!(row.body["data"]["status"], "live", "{}", row.body);
    }
}

async fn a_lipsync_model_drives_the_mouth(db: Db) {
    let model = assets().join("models/tiny_lipsync.onnx");
    let app = spawn_app_with(db, |s| s.render.lipsync_model = model.display().to_string()).await;
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["render"][0]["renderer"], "lipsync", "{ready}");
    let acct = app.account(2, 10.0, 1000).await;
    let (id, token) = live_session(&app, &acct.key).await;
    let video = video_info(&app, &acct.key, &id).await;
    let region = mouth_region(&video);
    let mut pv = preview(&app, &id, &token).await.unwrap();
    let mut silent = Vec::new();
    while silent.len() < 10 {
        silent.push(pv.frame().await);
    }
    let mut control = connect(&app, &format!("/v1/sessions/{id}/control"), Some(&acct.key))
        .await
        .unwrap();
    control
        .send(
            json!({"type": "speak", "text": "The model moves my mouth now, one batch at a time."}),
        )
        .await;
    control.until("speech_started").await;
    let mut talking = Vec::new();
    while talking.len() < 15 {
        talking.push(pv.frame().await);
    }
    // The model darkens the mouth in proportion to the audio: the speaking frames differ from
    // the silent ones there, far more than silent frames differ from each other.
    let rest = motion(&silent, region);
    eprintln!(
        "lipsync: mouth change {:.2} vs {rest:.2} at rest",
        region_change(
            &silent[silent.len() - 1],
            &talking[talking.len() - 1],
            region
        )
    );
    let change = region_change(
        &silent[silent.len() - 1],
        &talking[talking.len() - 1],
        region,
    )
    .max(
        talking
            .iter()
            .map(|f| region_change(&silent[0], f, region))
            .fold(0.0, f64::max),
    );
    assert!(change > 3.0 * rest.max(0.3), "{change:.2} vs {rest:.2}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("avs_render_batch_size_count"),
        "no batch measured"
    );
}

/// The face mesh on a picture with no face where the detector's box says: `unavailable`, with a
/// reason, never an error; on the astronaut's face, 468 points.
#[test]
fn the_face_mesh_is_unavailable_where_it_sees_no_face() {
    use avatar_supervisor::media::avatar::{MeshState, Rect};
    use avatar_supervisor::media::face::FaceDetector;
    use avatar_supervisor::media::mesh::FaceMesher;
    use avatar_supervisor::media::onnx::Onnx;

    let assets = assets();
    let onnx = Onnx::load(Some(assets.join("libonnxruntime.so"))).unwrap();
    let mesher = FaceMesher::load(&onnx, &assets.join("models/face_landmark.onnx")).unwrap();
    let face = Rect {
        x: 180.0,
        y: 60.0,
        w: 130.0,
        h: 160.0,
    };
    let wall = image::RgbImage::from_fn(512, 512, |x, y| {
        image::Rgb([120 + (x % 7) as u8, 110 + (y % 5) as u8, 100])
    });
    match mesher.mesh_or_why(&wall, &face) {
        MeshState::Unavailable { reason } => assert!(reason.contains("no face"), "{reason}"),
        MeshState::Ok { .. } => panic!("a mesh on a plain wall"),
    }
    let astronaut = image::load_from_memory(&photo("astronaut.png"))
        .unwrap()
        .to_rgb8();
    let detector = FaceDetector::load(&onnx, &assets.join("models/centerface.onnx"), 0.5).unwrap();
    let found = detector.detect(&astronaut).unwrap().remove(0);
    let face = Rect {
        x: found.x,
        y: found.y,
        w: found.w,
        h: found.h,
    };
    let points = match mesher.mesh_or_why(&astronaut, &face) {
        MeshState::Ok { points } => points,
        other => panic!("no mesh on the astronaut: {other:?}"),
    };
    assert_eq!(points.len(), 468);
    // Her mouth is in the lower half of the box, her eyes in the upper.
    assert!(points[13][1] > face.y + face.h / 2.0 && points[159][1] < face.y + face.h / 2.0);
    // A missing model is a set-up error naming what to run.
    let missing = FaceMesher::load(&onnx, &assets.join("models/absent.onnx"));
    assert!(matches!(missing, Err(e) if e.to_string().contains("make setup")));
}

on_both_databases!(
    preview_streams_frames_and_the_mouth_follows_speech,
    preview_credentials_and_an_ended_session,
    render_slots_are_a_limit_of_their_own,
    a_failing_renderer_is_restarted_then_the_session_fails_once,
    a_render_worker_that_panics_is_restarted_with_its_sessions,
    a_lipsync_model_drives_the_mouth,
);
