//! End to end with real WebRTC against LiveKit's own server (`livekit-server` v1.13.5, built by
//! `scripts/setup_livekit_server.sh` into `.setup/livekit-server/`): the avatar joins, publishes,
//! is interrupted, hears a user, leaves, is removed, loses its room or its server; and the data
//! side a LiveKit Agents worker uses (byte streams on `lk.audio_stream`, RPC both ways).
//! (One file past 600 lines: the tests share one namespace set-up and run one at a time, since
//! the library's live handles are counted process-wide.)
//!
//! The other participants are `tests/support/lk_peer.py` of the repository (LiveKit's Python SDK,
//! the pinned wheel `scripts/setup_livekit.sh` installs into `.setup/venv`): one subscribes to the
//! avatar and measures what it decodes (frame arrival, size, the mouth rectangle's luma; audio RMS
//! per 20 ms), one speaks (a WAV microphone), one plays the agent (byte streams, RPC).
//!
//! One test, `signal_drop_reconnects_and_republishes`, still runs against the fake server
//! (`tests/support/fake_livekit.py`): it closes only the signal connection and keeps the media,
//! which nothing can make the real server do.
//!
//! libwebrtc ignores loopback, so this runs inside a network namespace with `lo` up and a veth pair
//! 10.99.0.1/24 (the server) and 10.99.0.2/24, both ends inside it, as `scripts/netns_run.sh`
//! makes one:
//!
//! ```sh
//! bash scripts/netns_run.sh env CARGO_TARGET_DIR=/work/dev-ffi-target \
//!     cargo test --offline -p avs-livekit-ffi --test netns -- --test-threads=1 --nocapture
//! ```
//!
//! Without `AVS_NETNS=1` every test here fails at once, saying why. `$AVS_NETNS_ADDRS` (the
//! server's address first), `$AVS_REPO_ROOT` (where `.setup/` and `tests/support/` are),
//! `$AVS_LIVEKIT_SERVER` and `$AVS_LIVEKIT_PYTHON` can be set.

mod support;

mod netns {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use avs_livekit_ffi::{
        join, live_handles, AvatarOptions, AvatarRoom, FfiLibrary, LkError, RoomEvent,
        RpcErrorCode, RpcInvocation,
    };
    use base64::Engine as _;
    use serde_json::{json, Value};
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::support;
    use super::support::peer::Peer;
    use super::support::server::{join_token, LiveKitServer, API_KEY, API_SECRET};

    const AVATAR: &str = "avatar-agent";
    const SIZE: u32 = 512;
    const FPS: u32 = 25;
    const RATE: u32 = 16_000;
    /// The mouth rectangle of the synthetic picture: (x, y, w, h).
    const MOUTH: (u32, u32, u32, u32) = (196, 340, 120, 48);
    /// LiveKit Agents' topic for the agent's speech sent to its avatar.
    const AUDIO_TOPIC: &str = "lk.audio_stream";

    /// These tests need a network namespace of their own (libwebrtc ignores loopback):
    /// `scripts/test.sh` runs them in one; run alone (`cargo test`), each skips itself saying so.
    fn enabled(test: &str) -> bool {
        let inside = std::env::var("AVS_NETNS").as_deref() == Ok("1");
        if !inside {
            eprintln!(
                "skipped {test}: it needs AVS_NETNS=1 inside a network namespace: run it through \
                 scripts/test.sh or scripts/netns_run.sh (see tests/netns.rs)"
            );
        }
        inside
    }

    fn opts() -> AvatarOptions {
        AvatarOptions {
            width: SIZE,
            height: SIZE,
            fps: FPS,
            max_video_bitrate: 800_000,
            audio_sample_rate: RATE,
            audio_queue_ms: 200,
            receive_microphones: true,
            byte_stream_topics: Vec::new(),
        }
    }

    /// An avatar as a LiveKit Agents worker's: it hears nobody and reads the agent's speech.
    fn agent_avatar_opts() -> AvatarOptions {
        AvatarOptions {
            receive_microphones: false,
            byte_stream_topics: vec![AUDIO_TOPIC.into()],
            ..opts()
        }
    }

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs_f64()
    }

    fn library() -> Arc<FfiLibrary> {
        support::init_logs();
        FfiLibrary::load(support::library_path()).expect("the library loads")
    }

    async fn start_server() -> LiveKitServer {
        LiveKitServer::start(&support::repo_root()).await
    }

    /// The avatar joins `room` with the avatar's token (`kind: agent`, as a hosted avatar's is).
    async fn joined(
        url: &str,
        room: &str,
        opts: AvatarOptions,
    ) -> (AvatarRoom, UnboundedReceiver<RoomEvent>, Duration) {
        let lib = library();
        let started = Instant::now();
        let (avatar, events) = join(&lib, url, &join_token(room, AVATAR, Some("agent")), opts)
            .await
            .expect("the avatar joins and publishes");
        (avatar, events, started.elapsed())
    }

    async fn peer(server: &LiveKitServer, room: &str, identity: &str, kind: Option<&str>) -> Peer {
        Peer::join(
            &support::repo_root(),
            &server.url(),
            &join_token(room, identity, kind),
        )
        .await
    }

    // --- synthetic media ----------------------------------------------------------------------

    /// A grey gradient face with a mouth rectangle that is dark (closed) or bright (open).
    fn picture(open: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let s = SIZE as usize;
        let mut y: Vec<u8> = (0..s * s)
            .map(|i| (60 + (i % s) * 100 / s + (i / s) * 40 / s) as u8)
            .collect();
        let (mx, my, mw, mh) = MOUTH;
        for row in my..my + mh {
            let start = row as usize * s + mx as usize;
            y[start..start + mw as usize].fill(if open { 220 } else { 30 });
        }
        let c = s / 2;
        (y, vec![128; c * c], vec![100; c * c])
    }

    fn tone(ms: u32, amplitude: f64) -> Vec<i16> {
        let n = (RATE * ms / 1000) as usize;
        (0..n)
            .map(|i| {
                (amplitude
                    * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(RATE)).sin())
                    as i16
            })
            .collect()
    }

    fn rms(pcm: &[i16]) -> f64 {
        if pcm.is_empty() {
            return 0.0;
        }
        (pcm.iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>()
            / pcm.len() as f64)
            .sqrt()
    }

    /// CPU seconds (user + system) of this process, and its resident memory in MB.
    fn cpu_and_rss() -> (f64, f64) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (ticks / 100.0, rss_kb / 1024.0) // USER_HZ is 100 on Linux
    }

    async fn next_event(
        events: &mut UnboundedReceiver<RoomEvent>,
        secs: u64,
        what: &str,
    ) -> RoomEvent {
        tokio::time::timeout(Duration::from_secs(secs), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {secs} s while waiting for {what}"))
            .unwrap_or_else(|| panic!("the event stream ended while waiting for {what}"))
    }

    /// Events until one that `wanted` accepts (within `secs`), skipping received audio; the others
    /// are returned too, in order, for the test to check.
    async fn wait_for<T>(
        events: &mut UnboundedReceiver<RoomEvent>,
        secs: u64,
        what: &str,
        mut wanted: impl FnMut(&RoomEvent) -> Option<T>,
    ) -> (T, Vec<RoomEvent>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut others = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {secs} s; other events: {others:?}"))
                .unwrap_or_else(|| panic!("the event stream ended while waiting for {what}"));
            if let Some(found) = wanted(&event) {
                return (found, others);
            }
            if !matches!(event, RoomEvent::UserAudio { .. }) {
                others.push(event);
            }
        }
    }

    /// Every event already delivered, without waiting.
    fn drain(events: &mut UnboundedReceiver<RoomEvent>) -> Vec<RoomEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    /// Polls `check` every 50 ms until it holds, for at most `secs`; panics with `what` otherwise.
    async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check().await {
            assert!(Instant::now() < deadline, "not within {secs} s: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn espeak_wav(dir: &Path) -> PathBuf {
        let wav = dir.join("user.wav");
        let status = std::process::Command::new("espeak-ng")
            .arg("-w")
            .arg(&wav)
            .arg("Hello avatar, can you hear me? I would like to know the weather tomorrow.")
            .status()
            .expect("espeak-ng runs (apt-get install espeak-ng)");
        assert!(status.success());
        wav
    }

    /// `(t, value)` pairs of one kind of observation.
    fn series(observed: &Value, kind: &str, field: &str) -> Vec<(f64, f64)> {
        observed[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["t"].as_f64()?, a[field].as_f64()?)))
            .collect()
    }

    /// A still picture at 25 fps for `secs` seconds.
    async fn feed_video(avatar: &AvatarRoom, secs: u32) {
        let (y, u, v) = picture(false);
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(FPS)));
        for _ in 0..secs * FPS {
            tick.tick().await;
            let _ = avatar.capture_video_i420(SIZE, SIZE, &y, &u, &v, 0);
        }
    }

    /// Whether the peer has left the room `reason` (LiveKit's DisconnectReason name) for `who`.
    async fn peer_saw_leave(peer: &Peer, who: &str) -> Option<String> {
        let state = peer.state().await;
        state["left"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["identity"] == who)
            .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
    }

    // --- media against the real server --------------------------------------------------------

    /// Publish 5 s of video and audio, interrupt, hear a user, leave: measured by a subscriber.
    #[tokio::test(flavor = "current_thread")]
    async fn publish_interrupt_listen_and_leave() {
        if !enabled("netns::publish_interrupt_listen_and_leave") {
            return;
        }
        let server = start_server().await;
        let created = server.create_room("room-1").await;
        assert_eq!(
            created["name"], "room-1",
            "CreateRoom answers the room: {created}"
        );
        let viewer = peer(&server, "room-1", "viewer", None).await;
        let (x, y, w, h) = MOUTH;
        viewer
            .command("mouth", json!({"x": x, "y": y, "w": w, "h": h}))
            .await;
        let baseline = live_handles();
        let (cpu0, rss0) = cpu_and_rss();
        let (avatar, mut events, join_time) = joined(&server.url(), "room-1", opts()).await;
        let (cpu1, rss1) = cpu_and_rss();
        println!(
            "join + publish both tracks: {:.0} ms (cpu {:.2} s, rss {rss0:.0} -> {rss1:.0} MB)",
            join_time.as_secs_f64() * 1000.0,
            cpu1 - cpu0
        );
        let (viewer_kind, _) =
            wait_for(
                &mut events,
                5,
                "the viewer's ParticipantJoined",
                |e| match e {
                    RoomEvent::ParticipantJoined { identity, agent } if identity == "viewer" => {
                        Some(*agent)
                    }
                    _ => None,
                },
            )
            .await;
        assert!(!viewer_kind, "the viewer is a standard participant");

        // The viewer subscribes once the tracks are published: feed frames until it decodes one,
        // so that what follows measures the flow rather than the subscription.
        let subscribed = Instant::now();
        let warm_up = async {
            loop {
                let observed = viewer.observations(AVATAR).await;
                let frames = observed["video"].as_array().map_or(0, Vec::len);
                let audio = observed["audio"].as_array().map_or(0, Vec::len);
                if frames > 0 && audio > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = warm_up => {}
            _ = feed_video(&avatar, 15) => panic!("the viewer decoded no video and audio within 15 s"),
        }
        println!(
            "the viewer decodes video and audio {:.0} ms after join returned",
            subscribed.elapsed().as_secs_f64() * 1000.0
        );

        // 5 s at 25 fps, the mouth toggling every 5 frames; audio in bursts of 400 ms tone and
        // 600 ms silence, captured in 20 ms pieces (the pace of a real voice pipeline).
        let (closed, open) = (picture(false), picture(true));
        let publish_started = now();
        let t0 = Instant::now();
        let video = async {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(FPS)));
            for i in 0..(5 * FPS) {
                tick.tick().await;
                let (py, pu, pv) = if (i / 5) % 2 == 0 { &closed } else { &open };
                let ts = t0.elapsed().as_micros() as i64;
                avatar
                    .capture_video_i420(SIZE, SIZE, py, pu, pv, ts)
                    .expect("capture a frame");
            }
        };
        let audio = async {
            let (loud, quiet) = (tone(20, 8000.0), vec![0i16; (RATE / 50) as usize]);
            for i in 0..250 {
                let piece = if i % 50 < 20 { &loud } else { &quiet };
                avatar.capture_audio(piece).await.expect("capture audio");
            }
        };
        tokio::join!(video, audio);
        let publish_secs = t0.elapsed().as_secs_f64();
        let (cpu2, rss2) = cpu_and_rss();
        tokio::time::sleep(Duration::from_millis(800)).await; // the last frames and queued audio arrive
        let observed = viewer.observations(AVATAR).await;

        let frames: Vec<&Value> = observed["video"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["t"].as_f64().unwrap_or(0.0) > publish_started)
            .collect();
        let in_window = frames
            .iter()
            .filter(|f| f["t"].as_f64().unwrap_or(0.0) <= publish_started + publish_secs + 0.3)
            .count();
        let fps = in_window as f64 / publish_secs;
        let full_size = frames
            .iter()
            .filter(|f| f["w"] == SIZE && f["h"] == SIZE)
            .count();
        let mouths: Vec<f64> = frames.iter().filter_map(|f| f["mouth"].as_f64()).collect();
        let (mouth_min, mouth_max) = mouths
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &m| (a.min(m), b.max(m)));
        let mouth_changes = mouths
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() > 80.0)
            .count();
        println!(
            "video: {} frames decoded since the first capture ({in_window} in the {publish_secs:.2} s window = {fps:.1} fps), \
             {full_size} of them {SIZE}x{SIZE}",
            frames.len(),
        );
        println!("mouth luma: min {mouth_min:.0}, max {mouth_max:.0}, {mouth_changes} open/close changes");
        println!(
            "publishing 5 s: cpu {:.2} s ({:.0} % of one core), rss {rss1:.0} -> {rss2:.0} MB",
            cpu2 - cpu1,
            (cpu2 - cpu1) / publish_secs * 100.0
        );
        assert!(
            in_window >= (5 * FPS as usize) * 3 / 5,
            "at least 60 % of the {} frames decoded in time ({in_window}, {fps:.1} fps)",
            5 * FPS
        );
        assert!(
            full_size * 10 >= frames.len() * 9,
            "at least 90 % of the decoded frames are {SIZE}x{SIZE} ({full_size} of {})",
            frames.len()
        );
        assert!(
            mouth_min < 80.0 && mouth_max > 170.0,
            "the mouth is seen dark and bright"
        );
        assert!(
            mouth_changes >= 10,
            "the mouth is seen opening and closing ({mouth_changes})"
        );

        // Audio: loud during bursts, silent between. Bursts are 400 ms every second.
        let levels: Vec<f64> = series(&observed, "audio", "rms")
            .into_iter()
            .filter(|(t, _)| *t > publish_started && *t <= publish_started + publish_secs + 0.5)
            .map(|(_, r)| r)
            .collect();
        let loud = levels.iter().filter(|&&r| r > 2000.0).count();
        let silent = levels.iter().filter(|&&r| r < 100.0).count();
        // A window straddling a burst's edge is neither loud nor silent: count with hysteresis.
        let bursts = levels
            .iter()
            .fold((0, false), |(n, in_burst), &r| match (in_burst, r) {
                (false, r) if r > 2000.0 => (n + 1, true),
                (true, r) if r < 100.0 => (n, false),
                (state, _) => (n, state),
            })
            .0;
        println!(
            "audio: {} windows of 20 ms decoded, {loud} loud (rms > 2000), {silent} silent (rms < 100), {bursts} bursts; \
             peak rms {:.0} (tone rms 5657)",
            levels.len(),
            levels.iter().cloned().fold(0.0, f64::max)
        );
        assert!(
            bursts >= 4,
            "the five bursts are heard as bursts ({bursts})"
        );
        assert!(
            loud >= 60 && silent >= 60,
            "energy during bursts, silence between"
        );

        // The audio path's own latency, for scale: a tone into an empty queue, until the viewer
        // decodes it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let probe_at = now();
        avatar
            .capture_audio(&tone(200, 8000.0))
            .await
            .expect("capture the probe");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let heard_at = series(&viewer.observations(AVATAR).await, "audio", "rms")
            .into_iter()
            .find(|(t, r)| *t > probe_at && *r > 2000.0)
            .map(|(t, _)| t)
            .expect("the probe tone is heard");
        let path_ms = (heard_at - probe_at) * 1000.0;
        println!("audio path: a tone captured into an empty queue is decoded by the viewer {path_ms:.0} ms later");

        // Interrupt: 3 s of tone queued as fast as the queue takes it, cleared after 1 s.
        let long_tone = tone(3000, 8000.0);
        let capture = avatar.capture_audio(&long_tone);
        let interrupt = async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let at = now();
            avatar.clear_audio_buffer().expect("clear");
            at
        };
        let (captured, cleared_at) = tokio::join!(capture, interrupt);
        captured.expect("an interrupted capture returns Ok");
        let capture_returned = now();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after: Vec<(f64, f64)> = series(&viewer.observations(AVATAR).await, "audio", "rms")
            .into_iter()
            .filter(|(t, _)| *t > cleared_at - 0.5)
            .collect();
        let last_loud = after
            .iter()
            .filter(|(_, r)| *r > 2000.0)
            .map(|(t, _)| *t)
            .fold(f64::NAN, f64::max);
        let latency_ms = (last_loud - cleared_at) * 1000.0;
        // The path's latency varies with the receiver's jitter buffer (50-250 ms seen here), so the
        // check is behaviour with a margin: the tone, which had 2 s left, stops within 200 ms of the
        // interrupt beyond the path, and nothing is heard after that.
        let loud_later = after
            .iter()
            .filter(|(t, r)| *t > cleared_at + (path_ms + 300.0) / 1000.0 && *r > 100.0)
            .count();
        println!(
            "interrupt: last loud audio decoded by the viewer {latency_ms:.0} ms after clear_audio_buffer, i.e. {:.0} ms more than \
             the audio path itself; capture_audio returned {:.0} ms after the clear; {loud_later} non-silent windows after that",
            latency_ms - path_ms,
            (capture_returned - cleared_at) * 1000.0
        );
        assert!(
            latency_ms.is_finite(),
            "the tone was heard before the interrupt"
        );
        assert!(
            latency_ms - path_ms <= 200.0 && loud_later == 0,
            "silent within 200 ms of the interrupt (beyond the path's own latency), not 2 s later"
        );
        assert!(
            capture_returned - cleared_at < 0.5,
            "the interrupted capture_audio returns instead of feeding the rest"
        );

        // A user joins and speaks (espeak-ng): the avatar hears it as 16 kHz mono.
        let dir = std::env::temp_dir().join(format!("avs-lk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let wav = espeak_wav(&dir);
        let user = peer(&server, "room-1", "user-1", None).await;
        let (user_kind, _) = wait_for(
            &mut events,
            10,
            "the user's ParticipantJoined",
            |e| match e {
                RoomEvent::ParticipantJoined { identity, agent } if identity == "user-1" => {
                    Some(*agent)
                }
                _ => None,
            },
        )
        .await;
        assert!(!user_kind, "the user is a standard participant");
        user.command("publish_wav", json!({"path": wav})).await;
        let published = Instant::now();
        let mut pcm = Vec::new();
        let mut first_audio = None;
        while published.elapsed() < Duration::from_secs(8) {
            match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Some(RoomEvent::UserAudio {
                    identity,
                    pcm: piece,
                })) => {
                    assert_eq!(identity, "user-1");
                    first_audio.get_or_insert(published.elapsed());
                    pcm.extend_from_slice(&piece);
                }
                Ok(Some(other)) => println!("event: {other:?}"),
                Ok(None) => panic!("events ended"),
                Err(_) => {}
            }
        }
        let windows: Vec<f64> = pcm.chunks(320).map(rms).collect();
        let speech = windows.iter().filter(|&&r| r > 500.0).count();
        println!(
            "user audio: first samples {first_audio:?} after the user published, {:.2} s received ({} samples), \
             {speech} speech windows of 20 ms (rms > 500), peak rms {:.0}",
            pcm.len() as f64 / f64::from(RATE),
            pcm.len(),
            windows.iter().cloned().fold(0.0, f64::max)
        );
        assert!(speech >= 50, "a second or more of speech energy");

        // The user goes on sending (silence) until it leaves; every sample counted in the stats
        // is delivered before its ParticipantLeft (one thread emits both, in order).
        user.leave().await;
        let mut delivered = pcm.len() as u64;
        let left = Instant::now();
        loop {
            match next_event(&mut events, 10, "the user's ParticipantLeft").await {
                RoomEvent::UserAudio { pcm, .. } => delivered += pcm.len() as u64,
                RoomEvent::ParticipantLeft { identity } if identity == "user-1" => break,
                other => println!("event: {other:?}"),
            }
            assert!(
                left.elapsed() < Duration::from_secs(10),
                "no ParticipantLeft within 10 s"
            );
        }
        assert_eq!(avatar.stats().user_audio_samples_received, delivered);
        user.close().await;

        let stats = avatar.stats();
        println!("stats: {stats:?}");
        assert!(stats.video_frames_captured >= u64::from(5 * FPS));
        let closing = Instant::now();
        avatar.close().await.expect("close");
        println!("close: {:.0} ms", closing.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(live_handles(), baseline, "no handle outlives the room");
        let left_at = Instant::now();
        let reason = loop {
            if let Some(reason) = peer_saw_leave(&viewer, AVATAR).await {
                break reason;
            }
            assert!(
                left_at.elapsed() < Duration::from_secs(10),
                "the viewer saw the avatar leave"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(reason, "CLIENT_INITIATED");
        let left = server.participants("room-1").await;
        assert!(
            !left.iter().any(|p| p == AVATAR),
            "the server no longer lists the avatar: {left:?}"
        );
        viewer.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Deleting the room (RoomService.DeleteRoom) disconnects the avatar with `room_deleted`.
    #[tokio::test(flavor = "current_thread")]
    async fn room_deleted() {
        if !enabled("netns::room_deleted") {
            return;
        }
        let server = start_server().await;
        let baseline = live_handles();
        let (avatar, mut events, _) = joined(&server.url(), "room-2", opts()).await;
        assert_eq!(
            server.participants("room-2").await,
            vec![AVATAR.to_string()]
        );
        server.delete_room("room-2").await;
        let deleted = Instant::now();
        let (reason, _) = wait_for(&mut events, 15, "Disconnected", |e| match e {
            RoomEvent::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
        println!(
            "room deleted: Disconnected {{ reason: {reason:?} }} after {:.0} ms",
            deleted.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(reason, "room_deleted");
        assert!(avatar.is_disconnected());
        assert!(avatar
            .capture_video_i420(2, 2, &[0; 4], &[0], &[0], 0)
            .is_err());
        avatar.close().await.expect("closing a disconnected room");
        assert_eq!(live_handles(), baseline);
    }

    /// RoomService.RemoveParticipant disconnects the avatar with `participant_removed`.
    #[tokio::test(flavor = "current_thread")]
    async fn participant_removed() {
        if !enabled("netns::participant_removed") {
            return;
        }
        let server = start_server().await;
        let baseline = live_handles();
        let (avatar, mut events, _) = joined(&server.url(), "room-6", opts()).await;
        server.remove_participant("room-6", AVATAR).await;
        let (reason, _) = wait_for(&mut events, 15, "Disconnected", |e| match e {
            RoomEvent::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert_eq!(reason, "participant_removed");
        avatar
            .close()
            .await
            .expect("closing a removed participant's room");
        assert_eq!(live_handles(), baseline);
    }

    /// An `AvatarRoom` dropped without `close` (an owner that panicked or was cancelled) still
    /// leaves the room and releases every handle.
    #[tokio::test(flavor = "current_thread")]
    async fn dropped_room_leaves() {
        if !enabled("netns::dropped_room_leaves") {
            return;
        }
        let server = start_server().await;
        let baseline = live_handles();
        let (avatar, _events, _) = joined(&server.url(), "room-5", opts()).await;
        feed_video(&avatar, 1).await;
        assert!(live_handles() > baseline);
        drop(avatar);
        let dropped = Instant::now();
        let server = &server;
        eventually(
            10,
            "the dropped room is left and its handles released",
            || async move {
                live_handles() == baseline
                    && !server
                        .participants("room-5")
                        .await
                        .iter()
                        .any(|p| p == AVATAR)
            },
        )
        .await;
        println!(
            "dropped room: left and released after {:.0} ms",
            dropped.elapsed().as_secs_f64() * 1000.0
        );
    }

    /// The server goes away for good (SIGKILL): the library retries, then reports the room
    /// disconnected (about 20 s in 1.2.1; bounded here at 60).
    #[tokio::test(flavor = "current_thread")]
    async fn server_gone_ends_in_disconnected() {
        if !enabled("netns::server_gone_ends_in_disconnected") {
            return;
        }
        let mut server = start_server().await;
        let baseline = live_handles();
        let (avatar, mut events, _) = joined(&server.url(), "room-3", opts()).await;
        server.kill().await;
        let gone = Instant::now();
        let mut reconnecting = None;
        let (reason, others) = wait_for(&mut events, 60, "Disconnected after the retries", |e| {
            if matches!(e, RoomEvent::Reconnecting) {
                reconnecting.get_or_insert(gone.elapsed());
            }
            match e {
                RoomEvent::Disconnected { reason } => Some(reason.clone()),
                _ => None,
            }
        })
        .await;
        println!(
            "server gone: Reconnecting after {reconnecting:?}, Disconnected {{ reason: {reason:?} }} after {:.1} s; \
             other events {others:?}",
            gone.elapsed().as_secs_f64()
        );
        assert!(
            reconnecting.is_some(),
            "the library tried to reconnect first"
        );
        assert!(avatar.is_disconnected());
        avatar.close().await.expect("closing a disconnected room");
        assert_eq!(live_handles(), baseline);
    }

    // --- the fake server, for what the real one cannot be made to do --------------------------

    /// The signal connection drops: the library resumes, is told to rejoin, rejoins and
    /// republishes; the same `AvatarRoom` keeps publishing into the new session.
    ///
    /// On the fake (`tests/support/fake_livekit.py`), not the real server: this needs the
    /// signalling closed while the server lives on, which livekit-server offers no way to do
    /// (killing it ends media too; RoomService has no such call).
    #[tokio::test(flavor = "current_thread")]
    async fn signal_drop_reconnects_and_republishes() {
        if !enabled("netns::signal_drop_reconnects_and_republishes") {
            return;
        }
        let fake =
            support::fake::FakeLiveKit::start(&support::repo_root(), API_KEY, API_SECRET).await;
        let baseline = live_handles();
        let (avatar, mut events, _) = joined(&fake.url(), "room-4", opts()).await;
        feed_video(&avatar, 1).await;
        fake.control("POST", "/control/drop_signal", None).await;
        let dropped = Instant::now();
        let mut reconnecting = None;
        let mut feed = Box::pin(feed_video(&avatar, 30));
        loop {
            tokio::select! {
                _ = &mut feed => panic!("no Reconnected within 30 s"),
                event = next_event(&mut events, 30, "Reconnected") => match event {
                    RoomEvent::Reconnecting => {
                        reconnecting.get_or_insert(dropped.elapsed());
                    }
                    RoomEvent::Reconnected => break,
                    RoomEvent::Disconnected { reason } => panic!("disconnected ({reason}) instead of reconnecting"),
                    other => println!("event: {other:?}"),
                },
            }
        }
        let reconnected = dropped.elapsed();
        let since = now();
        feed_video(&avatar, 3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let observed = fake.observations(AVATAR).await;
        let frames = observed["video"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["t"].as_f64().unwrap_or(0.0) > since)
            .count();
        println!(
            "signal dropped: Reconnecting after {reconnecting:?}, Reconnected after {:.0} ms; {frames} frames decoded in the new session's next 3 s",
            reconnected.as_secs_f64() * 1000.0
        );
        assert!(reconnecting.is_some());
        assert!(
            frames >= 40,
            "the republished track carries video ({frames} frames in 3 s)"
        );
        assert_eq!(avatar.stats().reconnects, 1);
        drop(feed);
        avatar.close().await.expect("close after a reconnect");
        assert_eq!(live_handles(), baseline);
        let me = fake.participant(AVATAR).await;
        assert_eq!(me["state"], "left", "the new session was left: {me}");
    }

    // --- what a LiveKit Agents worker says to its avatar: byte streams and RPC -----------------

    /// 1 s of 24 kHz mono PCM (a tone), as an agent streams its speech.
    fn speech_pcm() -> Vec<u8> {
        (0..24_000)
            .flat_map(|i| {
                let s = (6000.0
                    * (2.0 * std::f64::consts::PI * 220.0 * f64::from(i) / 24_000.0).sin())
                    as i16;
                s.to_le_bytes()
            })
            .collect()
    }

    /// The agent's byte streams on `lk.audio_stream` arrive whole, with their attributes; streams on
    /// other topics produce nothing and leave no handle; the agent is seen as an agent.
    #[tokio::test(flavor = "current_thread")]
    async fn byte_streams_from_the_agent() {
        if !enabled("netns::byte_streams_from_the_agent") {
            return;
        }
        let server = start_server().await;
        let baseline = live_handles();
        let (avatar, mut events, _) = joined(&server.url(), "room-bs", agent_avatar_opts()).await;
        let agent = peer(&server, "room-bs", "agent-1", Some("agent")).await;
        let (is_agent, _) = wait_for(
            &mut events,
            10,
            "the agent's ParticipantJoined",
            |e| match e {
                RoomEvent::ParticipantJoined { identity, agent } if identity == "agent-1" => {
                    Some(*agent)
                }
                _ => None,
            },
        )
        .await;
        assert!(
            is_agent,
            "a participant whose token has kind agent is an agent"
        );
        let joined_handles = live_handles();
        // The agent also publishes a microphone, which this avatar (receive_microphones: false)
        // neither subscribes to nor keeps a handle of: no UserAudio below, no handle left.
        let dir = std::env::temp_dir().join(format!("avs-lk-bs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        agent
            .command("publish_wav", json!({"path": espeak_wav(&dir)}))
            .await;

        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let pcm = speech_pcm();
        let short = vec![7u8; 1000];
        let attributes = json!({"sample_rate": "24000", "num_channels": "1"});
        // Another topic, ours, another again, ours: the data channel keeps their order.
        let mut sent = Vec::new();
        for (topic, data) in [
            ("lk.other_topic", &pcm),
            (AUDIO_TOPIC, &pcm),
            ("lk.chat", &short),
            (AUDIO_TOPIC, &short),
        ] {
            let reply = agent
                .command(
                    "stream_bytes",
                    json!({"destination": AVATAR, "topic": topic, "name": "speech",
                           "attributes": attributes, "data_b64": b64(data), "chunk_size": 15_000}),
                )
                .await;
            sent.push((
                topic,
                reply["stream_id"].as_str().unwrap_or_default().to_string(),
            ));
        }
        let ours: Vec<&String> = sent
            .iter()
            .filter(|(t, _)| *t == AUDIO_TOPIC)
            .map(|(_, id)| id)
            .collect();

        // Collect until both of ours are closed.
        let mut opened = Vec::new();
        let mut received: HashMap<String, Vec<u8>> = HashMap::new();
        let mut chunks: HashMap<String, usize> = HashMap::new();
        let mut closed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while closed.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("streams not closed within 20 s: opened {opened:?}, closed {closed:?}")
                })
                .expect("events go on");
            match event {
                RoomEvent::ByteStreamOpened {
                    stream_id,
                    identity,
                    topic,
                    name,
                    mime_type,
                    attributes,
                } => {
                    println!(
                        "opened {stream_id} from {identity} on {topic} ({name}, {mime_type}, {attributes:?})"
                    );
                    opened.push((stream_id, identity, topic, attributes));
                }
                RoomEvent::ByteStreamChunk { stream_id, bytes } => {
                    *chunks.entry(stream_id.clone()).or_default() += 1;
                    received
                        .entry(stream_id)
                        .or_default()
                        .extend_from_slice(&bytes);
                }
                RoomEvent::ByteStreamClosed { stream_id, error } => closed.push((stream_id, error)),
                other => panic!("unexpected event {other:?}"),
            }
        }
        println!("byte streams: sent {sent:?}; chunks per stream {chunks:?}; closed {closed:?}");
        assert_eq!(
            opened.len(),
            2,
            "only the streams on {AUDIO_TOPIC} are opened: {opened:?}"
        );
        for (i, (stream_id, identity, topic, attributes)) in opened.iter().enumerate() {
            assert_eq!(stream_id, ours[i], "in the order sent");
            assert_eq!(identity, "agent-1");
            assert_eq!(topic, AUDIO_TOPIC);
            assert_eq!(
                attributes.get("sample_rate").map(String::as_str),
                Some("24000")
            );
            assert_eq!(
                attributes.get("num_channels").map(String::as_str),
                Some("1")
            );
        }
        assert!(
            received[ours[0]] == pcm,
            "the second's bytes, concatenated, are exactly those sent ({} bytes of {})",
            received[ours[0]].len(),
            pcm.len()
        );
        assert!(chunks[ours[0]] >= 2, "1 s of PCM comes in several chunks");
        assert_eq!(received.get(ours[1]), Some(&short));
        assert_eq!(
            closed,
            vec![(ours[0].clone(), None), (ours[1].clone(), None)],
            "each closed by its sender, in order"
        );
        assert_eq!(
            live_handles(),
            joined_handles,
            "no reader outlives its stream, none is kept for other topics"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let late = drain(&mut events);
        assert!(late.is_empty(), "nothing after the streams: {late:?}");

        assert_eq!(avatar.stats().user_audio_samples_received, 0);

        agent.close().await;
        avatar.close().await.expect("close");
        assert_eq!(live_handles(), baseline);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The avatar's registered method is called by the agent and answered (a payload or an
    /// error); an unregistered one is refused by the library; the avatar calls the agent's.
    #[tokio::test(flavor = "current_thread")]
    async fn rpc_both_ways() {
        if !enabled("netns::rpc_both_ways") {
            return;
        }
        let server = start_server().await;
        let baseline = live_handles();
        // The agent is there first: the avatar learns its kind from the join itself.
        let agent = peer(&server, "room-rpc", "agent-1", Some("agent")).await;
        let (avatar, mut events, _) = joined(&server.url(), "room-rpc", agent_avatar_opts()).await;
        avatar
            .register_rpc_method("lk.clear_buffer")
            .expect("register lk.clear_buffer");
        assert!(matches!(
            avatar.register_rpc_method(""),
            Err(LkError::InvalidArgument(_))
        ));
        wait_for(&mut events, 10, "the agent's ParticipantJoined", |e| {
            matches!(e, RoomEvent::ParticipantJoined { identity, agent: true } if identity == "agent-1")
                .then_some(())
        })
        .await;
        let agent_ref = &agent;
        eventually(10, "the agent sees the avatar", || async move {
            agent_ref.state().await["participants"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["identity"] == AVATAR))
        })
        .await;

        // The agent calls; the avatar's owner answers from its event loop.
        let invoked = |e: &RoomEvent| match e {
            RoomEvent::RpcInvocation(invocation) => Some(invocation.clone()),
            _ => None,
        };
        for (answer, payload) in [
            (Ok("ok".to_string()), r#"{"reason":"interrupted"}"#),
            (
                Err((RpcErrorCode::Application, "nope".to_string())),
                "again",
            ),
        ] {
            let call = agent.command(
                "perform_rpc",
                json!({"destination": AVATAR, "method": "lk.clear_buffer", "payload": payload,
                       "timeout": 10}),
            );
            let respond = async {
                let (invocation, _): (RpcInvocation, _) =
                    wait_for(&mut events, 15, "RpcInvocation", invoked).await;
                let started = Instant::now();
                avatar
                    .respond_rpc(invocation.invocation_id, answer.clone())
                    .expect("answer the call");
                (invocation, started)
            };
            let (reply, (invocation, answered)) = tokio::join!(call, respond);
            println!(
                "rpc {payload:?}: {invocation:?} answered {answer:?}; the caller got {reply} {:.0} ms after the answer",
                answered.elapsed().as_secs_f64() * 1000.0
            );
            assert_eq!(invocation.method, "lk.clear_buffer");
            assert_eq!(invocation.caller_identity, "agent-1");
            assert_eq!(invocation.payload, payload);
            assert!(invocation.response_timeout_ms > 0);
            match answer {
                Ok(_) => assert_eq!(reply["payload"], "ok", "{reply}"),
                Err(_) => {
                    assert_eq!(reply["rpc_error"]["code"], 1500, "{reply}");
                    assert_eq!(reply["rpc_error"]["message"], "nope", "{reply}");
                }
            }
        }

        // A method the avatar never registered: the library refuses it, the owner sees nothing.
        let reply = agent
            .command(
                "perform_rpc",
                json!({"destination": AVATAR, "method": "lk.not_registered", "payload": "x",
                       "timeout": 5}),
            )
            .await;
        assert_eq!(
            reply["rpc_error"]["code"], 1400,
            "UNSUPPORTED_METHOD: {reply}"
        );
        let seen = drain(&mut events);
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, RoomEvent::RpcInvocation(_))),
            "no invocation for an unregistered method: {seen:?}"
        );

        // The avatar calls the agent's methods.
        agent
            .command(
                "register_rpc",
                json!({"method": "lk.playback_finished", "reply": "thanks"}),
            )
            .await;
        agent
            .command(
                "register_rpc",
                json!({"method": "lk.fails", "error_code": 1500, "error_message": "bad"}),
            )
            .await;
        let finished = r#"{"playback_position":1.5,"interrupted":false}"#;
        let answer = avatar
            .perform_rpc(
                "agent-1",
                "lk.playback_finished",
                finished,
                Duration::from_secs(5),
            )
            .await
            .expect("the agent answers");
        assert_eq!(answer, "thanks");
        let calls = agent.state().await["rpc_calls"].clone();
        assert_eq!(calls[0]["method"], "lk.playback_finished", "{calls}");
        assert_eq!(calls[0]["caller"], AVATAR, "{calls}");
        assert_eq!(calls[0]["payload"], finished, "{calls}");
        match avatar
            .perform_rpc("agent-1", "lk.fails", "", Duration::from_secs(5))
            .await
        {
            Err(LkError::Rpc {
                code: 1500,
                message,
            }) => assert_eq!(message, "bad"),
            other => panic!("an application error, not {other:?}"),
        }
        match avatar
            .perform_rpc("agent-1", "lk.unknown", "", Duration::from_secs(5))
            .await
        {
            Err(LkError::Rpc { code: 1400, .. }) => {}
            other => panic!("UNSUPPORTED_METHOD, not {other:?}"),
        }
        let to_nobody = avatar
            .perform_rpc("nobody", "lk.playback_finished", "", Duration::from_secs(2))
            .await;
        println!("rpc to a participant not in the room: {to_nobody:?}");
        assert!(matches!(to_nobody, Err(LkError::Rpc { .. })));

        agent.close().await;
        avatar.close().await.expect("close");
        assert_eq!(live_handles(), baseline);
    }
}
