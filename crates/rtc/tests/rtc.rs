//! The media engine against a real WebRTC peer over UDP on 127.0.0.1: str0m as the browser, libvpx and
//! libopus decoding. Runs on a current-thread runtime, as actix arbiters are. Rates are asserted loosely
//! (a loaded 2-core machine must pass); `examples/rtc_bench.rs` measures them.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use avs_rtc::{RtcConfig, RtcError, RtcServer};
use support::*;

fn server(cfg: RtcConfig) -> RtcServer {
    RtcServer::start(cfg).expect("server starts")
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_viewer_gets_video_and_audio_and_its_microphone_comes_back() {
    let server = server(RtcConfig::default());
    let session = Arc::new(server.open_session("s1", SIZE, SIZE, 25).unwrap());
    let mut mic = session.take_microphone().expect("the microphone");
    assert!(session.take_microphone().is_none(), "one reader");

    let speech = espeak_48k("Hello avatar. The quick brown fox jumps over the lazy dog, twice.")
        .unwrap_or_else(|| {
            eprintln!("espeak-ng not found: the microphone sends a tone");
            tone_48k(3.0)
        });
    let speech_secs = speech.len() as f64 / 48_000.0;
    let renderer = Renderer::start(session.clone(), 25, Duration::from_millis(1600));
    let (client, offer) = TestClient::new(ClientConfig {
        microphone: Some(speech.clone()),
        ..Default::default()
    });
    let (viewer, answer) = session.accept(&offer).await.expect("offer accepted");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("typ host"), "{answer}");
    assert!(
        answer.contains("VP8/90000") && !answer.contains("H264"),
        "{answer}"
    );
    assert_eq!(session.viewers(), 1);
    let client = client.start(&answer);

    // The microphone, for as long as the speech lasts (it starts 200 ms after connecting).
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(speech_secs + 1.5);
    let mut heard = Vec::new();
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, mic.recv()).await {
        assert_eq!(chunk.len(), 320, "20 ms at 16 kHz");
        heard.extend(chunk);
    }
    // At least 3 s of video, whatever the speech length.
    wait_until("3 s of video", Duration::from_secs(5), || {
        client.report(|r| r.frames.last().map(|f| f.rtp).unwrap_or(0) >= 4 * 90_000)
    })
    .await;
    drop(renderer);
    let stats = server.stats();
    let report = client.stop();

    // Video: decoded 512×512 frames, starting with a keyframe, the square's step visible.
    assert_eq!(report.decode_errors, 0);
    assert!(
        report.frames.len() >= 40,
        "only {} frames",
        report.frames.len()
    );
    assert!(
        report.frames[0].keyframe,
        "a new viewer starts on a keyframe"
    );
    assert!(report
        .frames
        .iter()
        .all(|f| f.width == SIZE && f.height == SIZE));
    // The square is dark, then bright from the step on (one frame may straddle it), never back.
    let lumas: Vec<f64> = report.frames.iter().map(|f| f.square_luma).collect();
    let first_bright = lumas
        .iter()
        .position(|&l| (l - BRIGHT as f64).abs() < 15.0)
        .expect("the step is visible");
    assert!(first_bright > 0, "frames before the step were dark");
    for (i, &l) in lumas.iter().enumerate() {
        let want = if i < first_bright { DARK } else { BRIGHT };
        let transition = i + 1 == first_bright;
        assert!(
            (l - want as f64).abs() < 15.0 || transition,
            "frame {i}: square luma {l:.1}, expected about {want}"
        );
    }
    // The step is 1.6 s into the renderer's clock; frames are 40 ms apart on the RTP clock.
    let step_rtp = report.frames[first_bright].rtp - report.frames[0].rtp;
    assert!(step_rtp <= 90_000 * 17 / 10, "step at {step_rtp} ticks");

    // Audio: Opus packets, silent then the tone.
    assert!(
        report.audio.len() >= 100,
        "only {} audio packets",
        report.audio.len()
    );
    assert!(
        report.audio.iter().any(|a| a.rms > 3000.0),
        "the tone arrived"
    );

    // Microphone: the speech's length and energy at 16 kHz.
    let heard_secs = heard.len() as f64 / 16_000.0;
    assert!(
        (heard_secs - speech_secs).abs() < 0.6,
        "heard {heard_secs:.2} s of {speech_secs:.2} s"
    );
    let source_rms = rms(&to_16k(&speech));
    let ratio = rms(&heard) / source_rms;
    assert!(
        (0.7..1.3).contains(&ratio),
        "microphone energy ratio {ratio:.2}"
    );

    // Counters.
    assert_eq!(stats.connections_new_total, 1);
    assert_eq!(stats.connections_connected_total, 1);
    assert_eq!(stats.viewers_connected, 1);
    assert!(stats.keyframe_requests_total >= 1);
    assert!(stats.video_keyframes_encoded_total >= 1);
    assert!(stats.video_frames_encoded_total >= report.frames.len() as u64);
    assert!(stats.rtp_video_packets_sent_total > report.frames.len() as u64);
    assert!(stats.rtp_audio_packets_sent_total >= report.audio.len() as u64);
    assert!(stats.rtp_video_bytes_sent_total > 10_000);
    assert!((stats.microphone_seconds_total - speech_secs).abs() < 0.6);
    assert!(stats.encode_seconds_count >= stats.video_frames_encoded_total);
    eprintln!(
        "frames {} audio {} mic {heard_secs:.2}/{speech_secs:.2} s energy {ratio:.2}; encode mean {:.2} ms",
        report.frames.len(),
        report.audio.len(),
        stats.encode_seconds_sum * 1e3 / stats.encode_seconds_count as f64
    );
    assert!(session.leave(viewer));
}

#[tokio::test]
async fn two_viewers_share_one_encode_and_a_frozen_one_does_not_stall_the_other() {
    let server = server(RtcConfig {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let session = Arc::new(server.open_session("s2", SIZE, SIZE, 25).unwrap());
    let renderer = Renderer::start(session.clone(), 25, Duration::from_secs(3600));
    let (a, offer_a) = TestClient::new(ClientConfig::default());
    let (b, offer_b) = TestClient::new(ClientConfig {
        separate_mic_track: true,
        ..Default::default()
    });
    let (_, answer_a) = session.accept(&offer_a).await.unwrap();
    let (_, answer_b) = session.accept(&offer_b).await.unwrap();
    let (a, b) = (a.start(&answer_a), b.start(&answer_b));
    wait_until("both viewers' video", Duration::from_secs(5), || {
        a.frames() >= 25 && b.frames() >= 25
    })
    .await;

    // Same packets: every frame both decoded is the same picture.
    let frames_a = a.report(|r| r.frames.clone());
    let frames_b = b.report(|r| r.frames.clone());
    let mut common = 0;
    for fa in &frames_a {
        if let Some(fb) = frames_b.iter().find(|fb| fb.rtp == fa.rtp) {
            assert_eq!(fa.hash, fb.hash, "frame {} differs between viewers", fa.rtp);
            assert_eq!(fa.bytes, fb.bytes);
            common += 1;
        }
    }
    assert!(common >= 20, "only {common} frames in common");
    // Encoded once: no more frames encoded than rendered, although two viewers received them.
    let rendered = (renderer.start.elapsed().as_secs_f64() * 25.0).ceil() as u64 + 1;
    let stats = server.stats();
    assert!(
        stats.video_frames_encoded_total <= rendered,
        "{} encoded for {rendered} rendered",
        stats.video_frames_encoded_total
    );

    // B freezes (stops reading and answering); A keeps getting frames.
    b.freeze();
    let before = a.frames();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = a.frames() - before;
    assert!(
        during >= 20,
        "viewer A got {during} frames in 2 s while B was frozen"
    );

    // B is dropped after the idle timeout; A stays.
    wait_until(
        "the frozen viewer's removal",
        Duration::from_secs(4),
        || session.viewers() == 1,
    )
    .await;
    let stats = server.stats();
    assert_eq!(stats.connections_timed_out_total, 1);
    assert_eq!(stats.viewers, 1);
    let before = a.frames();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.frames() > before, "A still receives");
    drop(renderer);
}

#[tokio::test]
async fn leave_and_dropping_the_session_close_viewers() {
    let server = server(RtcConfig::default());
    let session = Arc::new(server.open_session("s3", SIZE, SIZE, 25).unwrap());
    let renderer = Renderer::start(session.clone(), 25, Duration::from_secs(3600));

    let (c1, offer) = TestClient::new(ClientConfig::default());
    let (v1, answer) = session.accept(&offer).await.unwrap();
    let c1 = c1.start(&answer);
    wait_until("video", Duration::from_secs(5), || c1.frames() > 0).await;
    assert!(session.leave(v1));
    assert!(!session.leave(v1), "a second leave finds nobody");
    assert_eq!(session.viewers(), 0);
    wait_until(
        "the client to see the close",
        Duration::from_secs(3),
        || c1.closed(),
    )
    .await;

    let (c2, offer) = TestClient::new(ClientConfig::default());
    let (_, answer) = session.accept(&offer).await.unwrap();
    let c2 = c2.start(&answer);
    wait_until("video", Duration::from_secs(5), || c2.frames() > 0).await;
    drop(renderer);
    let session = Arc::try_unwrap(session).ok().expect("the renderer let go");
    drop(session);
    wait_until(
        "the client to see the session end",
        Duration::from_secs(3),
        || c2.closed(),
    )
    .await;
    // (libvpx contexts are counted process-wide, and other tests run beside this one: their
    // release is checked by the vp8 unit test, per thread.)
    wait_until(
        "the server to forget everything",
        Duration::from_secs(10),
        || {
            let s = server.stats();
            s.viewers == 0 && s.sessions == 0
        },
    )
    .await;
    let s = server.stats();
    assert_eq!(s.connections_closed_total, 2);
    assert_eq!(s.connections_failed_total, 0);
}

#[tokio::test]
async fn unusable_offers_are_errors_with_a_reason() {
    let server = server(RtcConfig::default());
    let session = server.open_session("s4", SIZE, SIZE, 25).unwrap();

    for garbage in ["", "hello", "{\"type\":\"offer\",\"sdp\":\"v=0\"}"] {
        let err = session.accept(garbage).await.unwrap_err();
        assert!(matches!(err, RtcError::InvalidSdp(_)), "{garbage:?}: {err}");
    }

    let (_, no_vp8) = TestClient::new(ClientConfig {
        offer_vp8: false,
        ..Default::default()
    });
    let err = session.accept(&no_vp8).await.unwrap_err();
    assert!(err.to_string().contains("VP8"), "{err}");

    let (_, offer) = TestClient::new(ClientConfig::default());
    let no_fingerprint: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let err = session.accept(&no_fingerprint).await.unwrap_err();
    assert!(matches!(err, RtcError::UnsupportedOffer(_)), "{err}");
    assert!(err.to_string().contains("fingerprint"), "{err}");

    // Any truncation of a real offer is an answer or an error, never a panic of the I/O thread.
    for n in (0..offer.len()).step_by(23) {
        let _ = session.accept(&offer[..n]).await;
    }
    assert!(
        session.accept(&offer).await.is_ok(),
        "the engine still works"
    );
    assert_eq!(
        server.stats().connections_new_total as usize,
        session.viewers(),
        "failed offers leave no viewer behind"
    );
}

#[tokio::test]
async fn a_viewer_that_never_connects_is_dropped() {
    let server = server(RtcConfig {
        connect_timeout: Duration::from_millis(800),
        ..Default::default()
    });
    let session = server.open_session("s5", SIZE, SIZE, 25).unwrap();
    let (client, offer) = TestClient::new(ClientConfig::default());
    let (viewer, _answer) = session.accept(&offer).await.unwrap();
    drop(client); // never answers ICE
    assert_eq!(session.viewers(), 1);
    wait_until("the viewer's removal", Duration::from_secs(3), || {
        session.viewers() == 0
    })
    .await;
    let s = server.stats();
    assert_eq!(s.connections_failed_total, 1);
    assert_eq!(s.connections_connected_total, 0);
    assert!(!session.leave(viewer));
    let err = session
        .patch(viewer, "a=end-of-candidates\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, RtcError::UnknownViewer(_)), "{err}");
}

#[tokio::test]
async fn nothing_is_encoded_without_a_viewer_and_bad_frames_are_errors() {
    let server = server(RtcConfig::default());
    let session = server.open_session("s6", 64, 48, 25).unwrap();
    let (y, u, v) = (vec![0u8; 64 * 48], vec![0u8; 32 * 24], vec![0u8; 32 * 24]);
    for _ in 0..10 {
        session.push_video_i420(&y, &u, &v, Instant::now()).unwrap();
        session.push_audio(&[0; 320], Instant::now());
    }
    let err = session
        .push_video_i420(&y[..100], &u, &v, Instant::now())
        .unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = server.stats();
    assert_eq!(s.video_frames_encoded_total, 0);
    assert_eq!(s.audio_packets_encoded_total, 0);
    assert!(server.open_session("bad", 4, 4, 25).is_err());
    assert!(server.open_session("bad", 64, 64, 0).is_err());
    let (client, offer) = TestClient::new(ClientConfig::default());
    let (viewer, answer) = session.accept(&offer).await.unwrap();
    // Trickle: a usable candidate is taken, an mDNS one skipped, garbage refused.
    let local = "a=candidate:1 1 udp 2113929471 127.0.0.1 9 typ host\r\n";
    session.patch(viewer, local).await.unwrap();
    session
        .patch(
            viewer,
            "a=candidate:2 1 udp 2113929471 abc.local 9 typ host\r\n",
        )
        .await
        .unwrap();
    assert!(session.patch(viewer, "garbage").await.is_err());
    drop((client, answer));
}
