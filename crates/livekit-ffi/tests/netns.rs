//! End to end with real WebRTC: the avatar joins the fake LiveKit server
//! (`tests/support/fake_livekit.py`, aiortc underneath), publishes, receives a user's microphone,
//! is interrupted, leaves, and loses its server.
//!
//! libwebrtc ignores loopback, so this runs inside a network namespace with `lo` up and a veth pair
//! 10.99.0.1/24 (the fake) and 10.99.0.2/24, both ends inside it, as `scripts/test.sh` makes one:
//!
//! ```sh
//! ip netns add lk; ip netns exec lk sh -c 'ip link set lo up; ip link add avs0 type veth peer name avs1;
//!   ip addr add 10.99.0.1/24 dev avs0; ip addr add 10.99.0.2/24 dev avs1; ip link set avs0 up; ip link set avs1 up'
//! AVS_NETNS=1 ip netns exec lk cargo test --test netns -- --test-threads=1 --nocapture
//! ip netns del lk
//! ```
//!
//! Without `AVS_NETNS=1` every test here fails at once, saying why. `$AVS_NETNS_ADDRS` (the
//! fake's address first) and `$AVS_REPO_ROOT` (where `.setup/` and the fake are) can be set.

mod support;

mod netns {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use avs_livekit_ffi::{join, live_handles, AvatarOptions, AvatarRoom, FfiLibrary, RoomEvent};
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::support;

    const API_KEY: &str = "devkey";
    const API_SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!";
    const AVATAR: &str = "avatar-agent";
    const SIZE: u32 = 512;
    const FPS: u32 = 25;
    const RATE: u32 = 16_000;
    /// The mouth rectangle of the synthetic picture: (x, y, w, h).
    const MOUTH: (u32, u32, u32, u32) = (196, 340, 120, 48);

    /// These tests need a network namespace of their own (libwebrtc ignores loopback):
    /// `scripts/test.sh` runs them in one; run alone, they fail saying so rather than pass unrun.
    fn enabled(test: &str) -> bool {
        assert!(
            std::env::var("AVS_NETNS").as_deref() == Ok("1"),
            "{test} needs AVS_NETNS=1 inside a network namespace: run it through scripts/test.sh \
             or scripts/netns_run.sh (see tests/netns.rs)"
        );
        true
    }

    fn opts() -> AvatarOptions {
        AvatarOptions {
            width: SIZE,
            height: SIZE,
            fps: FPS,
            max_video_bitrate: 800_000,
            audio_sample_rate: RATE,
            audio_queue_ms: 200,
        }
    }

    fn now() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs_f64()
    }

    // --- the fake server (tests/support/fake_livekit.py, driven by support/fake.rs) ----------

    use super::support::fake::FakeLiveKit as Fake;

    async fn start_fake() -> Fake {
        Fake::start(&support::repo_root(), API_KEY, API_SECRET).await
    }

    /// The avatar's token, as the server mints it (`kind: agent`, join/publish/subscribe grants).
    fn token(room: &str, identity: &str) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = now() as u64;
        let claims = json!({
            "iss": API_KEY, "sub": identity, "name": identity, "kind": "agent",
            "nbf": now - 10, "exp": now + 3600,
            "video": {"roomJoin": true, "room": room, "canPublish": true, "canSubscribe": true,
                      "canPublishData": true, "agent": true},
        });
        let signing_input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(API_SECRET.as_bytes()).expect("any key size");
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    async fn joined(
        fake: &Fake,
        room: &str,
    ) -> (AvatarRoom, UnboundedReceiver<RoomEvent>, Duration) {
        support::init_logs();
        let lib = FfiLibrary::load(support::library_path()).expect("the library loads");
        let started = Instant::now();
        let (avatar, events) = join(&lib, &fake.url(), &token(room, AVATAR), opts())
            .await
            .expect("the avatar joins and publishes");
        (avatar, events, started.elapsed())
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

    // --- the tests ----------------------------------------------------------------------------

    /// Publish 5 s of video and audio, interrupt, hear a user, leave: measured at the fake.
    #[tokio::test(flavor = "current_thread")]
    async fn publish_interrupt_listen_and_leave() {
        if !enabled("netns::publish_interrupt_listen_and_leave") {
            return;
        }
        let fake = start_fake().await;
        let (x, y, w, h) = MOUTH;
        fake.control(
            "POST",
            "/control/mouth",
            Some(json!({"x": x, "y": y, "w": w, "h": h})),
        )
        .await;
        let (cpu0, rss0) = cpu_and_rss();
        let join_started = now();
        let (avatar, mut events, join_time) = joined(&fake, "room-1").await;
        let (cpu1, rss1) = cpu_and_rss();
        println!(
            "join + publish both tracks: {:.0} ms (cpu {:.2} s, rss {rss0:.0} -> {rss1:.0} MB)",
            join_time.as_secs_f64() * 1000.0,
            cpu1 - cpu0
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
        let observed = fake.observations(AVATAR).await;

        let frames = observed["video"].as_array().cloned().unwrap_or_default();
        let in_window: Vec<&Value> = frames
            .iter()
            .filter(|f| f["t"].as_f64().unwrap_or(0.0) <= publish_started + publish_secs + 0.3)
            .collect();
        let fps = in_window.len() as f64 / publish_secs;
        let first = frames
            .first()
            .and_then(|f| f["t"].as_f64())
            .unwrap_or(f64::NAN);
        let sizes_ok = frames.iter().all(|f| f["w"] == SIZE && f["h"] == SIZE);
        let mouths: Vec<f64> = frames.iter().filter_map(|f| f["mouth"].as_f64()).collect();
        let (mouth_min, mouth_max) = mouths
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &m| (a.min(m), b.max(m)));
        let mouth_changes = mouths
            .windows(2)
            .filter(|w| (w[0] - w[1]).abs() > 80.0)
            .count();
        println!(
            "video: {} frames decoded ({} in the {publish_secs:.2} s window = {fps:.1} fps), all {SIZE}x{SIZE}: {sizes_ok}; \
             first decoded {:.0} ms after join() was called, {:.0} ms after the first capture",
            frames.len(),
            in_window.len(),
            (first - join_started) * 1000.0,
            (first - publish_started) * 1000.0
        );
        println!("mouth luma: min {mouth_min:.0}, max {mouth_max:.0}, {mouth_changes} open/close changes");
        println!(
            "publishing 5 s: cpu {:.2} s ({:.0} % of one core), rss {rss1:.0} -> {rss2:.0} MB",
            cpu2 - cpu1,
            (cpu2 - cpu1) / publish_secs * 100.0
        );
        assert!(fps >= 20.0, "decoded {fps:.1} fps");
        assert!(sizes_ok, "every decoded frame is {SIZE}x{SIZE}");
        assert!(
            mouth_min < 80.0 && mouth_max > 170.0,
            "the mouth is seen dark and bright"
        );
        assert!(
            mouth_changes >= 10,
            "the mouth is seen opening and closing ({mouth_changes})"
        );

        // Audio: loud during bursts, silent between. Bursts are 400 ms every second.
        let audio = observed["audio"].as_array().cloned().unwrap_or_default();
        let levels: Vec<f64> = audio.iter().filter_map(|a| a["rms"].as_f64()).collect();
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

        // The audio path's own latency, for scale: a tone into an empty queue, until the fake
        // decodes it (its Opus receiver holds four packets, 80 ms, before decoding).
        tokio::time::sleep(Duration::from_millis(600)).await;
        let probe_at = now();
        avatar
            .capture_audio(&tone(200, 8000.0))
            .await
            .expect("capture the probe");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let observed = fake.observations(AVATAR).await;
        let heard_at = observed["audio"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["t"].as_f64()?, a["rms"].as_f64()?)))
            .find(|(t, r)| *t > probe_at && *r > 2000.0)
            .map(|(t, _)| t)
            .expect("the probe tone is heard");
        let path_ms = (heard_at - probe_at) * 1000.0;
        println!("audio path: a tone captured into an empty queue is decoded at the fake {path_ms:.0} ms later");

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
        let observed = fake.observations(AVATAR).await;
        let after: Vec<(f64, f64)> = observed["audio"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["t"].as_f64()?, a["rms"].as_f64()?)))
            .filter(|(t, _)| *t > cleared_at - 0.5)
            .collect();
        let last_loud = after
            .iter()
            .filter(|(_, r)| *r > 2000.0)
            .map(|(t, _)| *t)
            .fold(f64::NAN, f64::max);
        let latency_ms = (last_loud - cleared_at) * 1000.0;
        let loud_later = after
            .iter()
            .filter(|(t, r)| *t > cleared_at + (path_ms + 100.0) / 1000.0 && *r > 100.0)
            .count();
        println!(
            "interrupt: last loud audio decoded at the fake {latency_ms:.0} ms after clear_audio_buffer, i.e. {:.0} ms more than \
             the audio path itself; capture_audio returned {:.0} ms after the clear; {loud_later} non-silent windows after that",
            latency_ms - path_ms,
            (capture_returned - cleared_at) * 1000.0
        );
        assert!(
            latency_ms.is_finite(),
            "the tone was heard before the interrupt"
        );
        assert!(
            latency_ms - path_ms <= 100.0 && loud_later == 0,
            "silent within 100 ms of the interrupt (beyond the path's own latency)"
        );

        // A user joins and speaks (espeak-ng): the avatar hears it as 16 kHz mono.
        let dir = std::env::temp_dir().join(format!("avs-lk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let wav = espeak_wav(&dir);
        fake.control(
            "POST",
            "/control/users",
            Some(json!({"room": "room-1", "identity": "user-1", "wav": wav})),
        )
        .await;
        let joined_at = Instant::now();
        let mut pcm = Vec::new();
        let mut first_audio = None;
        let mut saw_join = false;
        while joined_at.elapsed() < Duration::from_secs(8) {
            match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Some(RoomEvent::ParticipantJoined { identity })) => {
                    saw_join |= identity == "user-1"
                }
                Ok(Some(RoomEvent::UserAudio {
                    identity,
                    pcm: piece,
                })) => {
                    assert_eq!(identity, "user-1");
                    first_audio.get_or_insert(joined_at.elapsed());
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
            "user audio: joined event {saw_join}, first samples {:?} after the user joined, {:.2} s received ({} samples), \
             {speech} speech windows of 20 ms (rms > 500), peak rms {:.0}",
            first_audio,
            pcm.len() as f64 / f64::from(RATE),
            pcm.len(),
            windows.iter().cloned().fold(0.0, f64::max)
        );
        assert!(saw_join, "ParticipantJoined for the user");
        assert!(speech >= 50, "a second or more of speech energy");
        assert_eq!(avatar.stats().user_audio_samples_received, pcm.len() as u64);

        fake.control(
            "POST",
            "/control/users/leave",
            Some(json!({"room": "room-1", "identity": "user-1"})),
        )
        .await;
        loop {
            match next_event(&mut events, 10, "the user to leave").await {
                RoomEvent::ParticipantLeft { identity } if identity == "user-1" => break,
                _ => {}
            }
        }

        let stats = avatar.stats();
        println!("stats: {stats:?}");
        assert_eq!(stats.video_frames_captured, u64::from(5 * FPS));
        let closing = Instant::now();
        avatar.close().await.expect("close");
        println!("close: {:.0} ms", closing.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(live_handles(), 0, "no handle outlives the room");
        let me = fake.participant(AVATAR).await;
        assert_eq!(me["state"], "left", "the fake saw the leave: {me}");
        assert_eq!(me["leave_reason"], "CLIENT_INITIATED");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Deleting the room (RoomService.DeleteRoom) disconnects the avatar with `room_deleted`.
    #[tokio::test(flavor = "current_thread")]
    async fn room_deleted() {
        if !enabled("netns::room_deleted") {
            return;
        }
        let fake = start_fake().await;
        let (avatar, mut events, _) = joined(&fake, "room-2").await;
        fake.control(
            "POST",
            "/control/rooms/delete",
            Some(json!({"room": "room-2"})),
        )
        .await;
        let deleted = Instant::now();
        loop {
            match next_event(&mut events, 15, "Disconnected").await {
                RoomEvent::Disconnected { reason } => {
                    println!(
                        "room deleted: Disconnected {{ reason: {reason:?} }} after {:.0} ms",
                        deleted.elapsed().as_secs_f64() * 1000.0
                    );
                    assert_eq!(reason, "room_deleted");
                    break;
                }
                other => println!("event: {other:?}"),
            }
        }
        assert!(avatar.is_disconnected());
        assert!(avatar
            .capture_video_i420(2, 2, &[0; 4], &[0], &[0], 0)
            .is_err());
        avatar.close().await.expect("closing a disconnected room");
        assert_eq!(live_handles(), 0);
    }

    /// An `AvatarRoom` dropped without `close` (an owner that panicked or was cancelled) still
    /// leaves the room and releases every handle.
    #[tokio::test(flavor = "current_thread")]
    async fn dropped_room_leaves() {
        if !enabled("netns::dropped_room_leaves") {
            return;
        }
        let fake = start_fake().await;
        let (avatar, _events, _) = joined(&fake, "room-5").await;
        feed_video(&avatar, 1).await;
        drop(avatar);
        let dropped = Instant::now();
        while live_handles() > 0 || fake.participant(AVATAR).await["state"] != "left" {
            assert!(
                dropped.elapsed() < Duration::from_secs(10),
                "still {} handles, {}",
                live_handles(),
                fake.participant(AVATAR).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "dropped room: left and released after {:.0} ms",
            dropped.elapsed().as_secs_f64() * 1000.0
        );
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

    /// The signal connection drops: the library resumes, is told to rejoin, rejoins and
    /// republishes; the same `AvatarRoom` keeps publishing into the new session.
    #[tokio::test(flavor = "current_thread")]
    async fn signal_drop_reconnects_and_republishes() {
        if !enabled("netns::signal_drop_reconnects_and_republishes") {
            return;
        }
        let fake = start_fake().await;
        let (avatar, mut events, _) = joined(&fake, "room-4").await;
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
            "the republished track carries video ({frames} frames in 2 s)"
        );
        assert_eq!(avatar.stats().reconnects, 1);
        drop(feed);
        avatar.close().await.expect("close after a reconnect");
        assert_eq!(live_handles(), 0);
        let me = fake.participant(AVATAR).await;
        assert_eq!(me["state"], "left", "the new session was left: {me}");
    }

    /// The server goes away for good: the library retries, then reports the room disconnected.
    #[tokio::test(flavor = "current_thread")]
    async fn server_gone_ends_in_disconnected() {
        if !enabled("netns::server_gone_ends_in_disconnected") {
            return;
        }
        let fake = start_fake().await;
        let (avatar, mut events, _) = joined(&fake, "room-3").await;
        fake.control("POST", "/control/go_away", None).await;
        let gone = Instant::now();
        let mut reconnecting = None;
        loop {
            match next_event(&mut events, 120, "Disconnected after the retries").await {
                RoomEvent::Reconnecting => {
                    reconnecting.get_or_insert(gone.elapsed());
                }
                RoomEvent::Disconnected { reason } => {
                    println!(
                        "server gone: Reconnecting after {:?}, Disconnected {{ reason: {reason:?} }} after {:.1} s",
                        reconnecting,
                        gone.elapsed().as_secs_f64()
                    );
                    break;
                }
                other => println!("event: {other:?}"),
            }
        }
        assert!(
            reconnecting.is_some(),
            "the library tried to reconnect first"
        );
        avatar.close().await.expect("closing a disconnected room");
        assert_eq!(live_handles(), 0);
    }
}
