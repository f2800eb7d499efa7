//! Measures the media engine with str0m clients on 127.0.0.1:
//! 1. VP8 encode cost per frame at 512×512 (p50/p95/p99) on the renderer's test pictures;
//! 2. one viewer: time to connect and to the first decoded frame, frame rate, bitrate, CPU of the
//!    session's encoder thread and of the I/O thread, and the audio/video offset at the receiver;
//! 3. N viewers of one session: the frame rate each sustains, and the server's CPU.
//!
//! `cargo run --release --example rtc_bench -- [seconds] [viewer counts, comma-separated]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use avs_rtc::vp8::Vp8Encoder;
use avs_rtc::{RtcConfig, RtcServer};
use support::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(6);
    let counts: Vec<usize> = args
        .next()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    encoder_cost();
    audio_cost();
    rt.block_on(one_viewer(seconds));
    rt.block_on(many_viewers(seconds, &counts));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

type I420 = (Vec<u8>, Vec<u8>, Vec<u8>);

/// A "talking head" stand-in: a still background with a 160×128 region (the mouth and jaw) that changes
/// every frame; cheaper to encode than the renderer's full-frame moving gradient.
fn talking_picture(i: u32) -> I420 {
    let (mut y, u, v) = picture(0, DARK);
    for row in 300..428 {
        for col in 176..336 {
            let phase = ((row * 7 + col * 3 + i * 11) % 97) as u8;
            y[(row * SIZE + col) as usize] = 60 + phase + (i % 25) as u8 * 3;
        }
    }
    (y, u, v)
}

/// CPU seconds of the calling thread.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / 100.0
}

fn audio_cost() {
    // What the encoder thread does per 20 ms of voice: 16 -> 48 kHz (sinc, 256 taps) and Opus at 32 kbit/s.
    let mut resampler = avs_rtc::audio::MonoResampler::new(16_000, 48_000, 320).expect("resampler");
    let mut opus = avs_rtc::audio::OpusEncoder::new(32_000).expect("opus");
    let voice: Vec<i16> = (0..16_000 * 10)
        .map(|i| (8000.0 * (i as f64 * 0.157).sin() * (i as f64 * 0.0007).sin()) as i16)
        .collect();
    let mut pcm48 = Vec::new();
    let (cpu0, wall0) = (own_cpu(), Instant::now());
    let mut packets = 0;
    for chunk in voice.chunks(320) {
        resampler.process(chunk, &mut pcm48);
        while pcm48.len() >= 960 {
            let frame: Vec<i16> = pcm48.drain(..960).collect();
            opus.encode(&frame).expect("opus encode");
            packets += 1;
        }
    }
    println!(
        "audio (resample 16->48 kHz + Opus 32 kbit/s): {:.3} ms CPU per 20 ms packet ({:.3} ms wall), {:.1}% of a core",
        (own_cpu() - cpu0) * 1e3 / packets as f64,
        wall0.elapsed().as_secs_f64() * 1e3 / packets as f64,
        (own_cpu() - cpu0) / 10.0 * 100.0
    );
}

fn encoder_cost() {
    println!("## VP8 encode, 512x512, 800 kbit/s CBR, cpu-used -6, 1 thread");
    let sets: [(&str, Vec<I420>); 2] = [
        (
            "full-frame moving gradient",
            (0..25).map(|i| picture(i, DARK)).collect(),
        ),
        (
            "still background, moving 160x128 mouth",
            (0..25).map(talking_picture).collect(),
        ),
    ];
    for (name, pictures) in sets {
        let mut enc = Vp8Encoder::new(SIZE, SIZE, 25, 800_000).expect("encoder");
        let mut times = Vec::new();
        let mut bytes = 0usize;
        let n = 500;
        let cpu0 = own_cpu();
        for i in 0..n {
            let (y, u, v) = &pictures[i % 25];
            let t = Instant::now();
            let f = enc
                .encode(y, u, v, i as u64 * 3600, i % 125 == 0)
                .expect("encode")
                .expect("a frame");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            bytes += f.data.len();
        }
        let cpu = (own_cpu() - cpu0) * 1e3 / n as f64;
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{name}: ms per frame (wall) mean {:.2}  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}; CPU {cpu:.2} ms/frame; {:.0} kbit/s (a keyframe every 5 s)",
            times.iter().sum::<f64>() / n as f64,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.95),
            percentile(&sorted, 0.99),
            sorted[n - 1],
            bytes as f64 * 8.0 / (n as f64 / 25.0) / 1000.0
        );
    }
}

/// utime+stime in seconds of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
        if let Some(rest) = stat.rsplit(')').next() {
            let f: Vec<&str> = rest.split_whitespace().collect();
            ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}

fn ntp_of(sr: (SystemTime, u64), rtp: u64, clock: f64) -> f64 {
    let base =
        sr.0.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
    base + (rtp as f64 - sr.1 as f64) / clock
}

async fn one_viewer(seconds: u64) {
    let server = RtcServer::start(RtcConfig::default()).expect("server");
    let session = Arc::new(
        server
            .open_session("bench", SIZE, SIZE, 25)
            .expect("session"),
    );
    let renderer = Renderer::start(session.clone(), 25, Duration::from_millis(2000));
    let (client, offer) = TestClient::new(ClientConfig {
        microphone: Some(tone_48k(seconds as f64)),
        ..Default::default()
    });
    let t_accept = Instant::now();
    let (_, answer) = session.accept(&offer).await.expect("accept");
    let t_answer = Instant::now();
    let client = client.start(&answer);
    let cpu0 = (thread_cpu("avs-rtc-enc"), thread_cpu("avs-rtc-io"));
    let stats0 = server.stats();
    let wall0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = wall0.elapsed().as_secs_f64();
    let cpu1 = (thread_cpu("avs-rtc-enc"), thread_cpu("avs-rtc-io"));
    let stats = server.stats();
    let step_at = renderer.step_at;
    drop(renderer);
    let r = client.stop();

    let first = r.first_frame_at.expect("a frame");
    let last = r.frames.last().expect("frames");
    let span = last.arrived.duration_since(first).as_secs_f64();
    let payload: usize = r.frames.iter().map(|f| f.bytes).sum();
    let wire = (stats.rtp_video_bytes_sent_total - stats0.rtp_video_bytes_sent_total) as f64;
    let encoded = stats.video_frames_encoded_total - stats0.video_frames_encoded_total;
    let enc_ms = (stats.encode_seconds_sum - stats0.encode_seconds_sum) * 1e3
        / (stats.encode_seconds_count - stats0.encode_seconds_count).max(1) as f64;
    println!("\n## One viewer, 512x512 at 25 fps, {seconds} s");
    println!(
        "accept answered in {:.1} ms; ICE+DTLS connected {:.1} ms after the answer; first decoded frame {:.1} ms after accept",
        (t_answer - t_accept).as_secs_f64() * 1e3,
        r.connected_at.map(|c| (c - t_answer).as_secs_f64() * 1e3).unwrap_or(f64::NAN),
        (first - t_accept).as_secs_f64() * 1e3
    );
    println!(
        "received {} frames = {:.1} fps (all {}x{}: {}), decode errors {}; {} audio packets = {:.1}/s",
        r.frames.len(),
        (r.frames.len() - 1) as f64 / span,
        SIZE,
        SIZE,
        r.frames.iter().all(|f| f.width == SIZE && f.height == SIZE),
        r.decode_errors,
        r.audio.len(),
        r.audio.len() as f64 / span
    );
    println!(
        "video bitrate per viewer: {:.0} kbit/s VP8 payload, {:.0} kbit/s on the wire (RTP+SRTP, incl. RTX)",
        payload as f64 * 8.0 / span / 1000.0,
        wire * 8.0 / wall / 1000.0
    );
    println!(
        "server CPU: encoder thread {:.1}% of a core ({} frames, {:.2} ms mean encode), I/O thread {:.1}%",
        (cpu1.0 - cpu0.0) / wall * 100.0,
        encoded,
        enc_ms,
        (cpu1.1 - cpu0.1) / wall * 100.0
    );

    // A/V offset: the frame where the square turns bright and the audio onset were pushed with one instant.
    let bright = r
        .frames
        .iter()
        .find(|f| f.square_luma > (DARK as f64 + BRIGHT as f64) / 2.0);
    let onset = r.audio.iter().find(|a| a.onset.is_some());
    match (bright, onset, r.video_sr, r.audio_sr) {
        (Some(v), Some(a), Some(vsr), Some(asr)) => {
            let video_t = ntp_of(vsr, v.rtp, 90_000.0);
            let audio_t = ntp_of(asr, a.rtp + a.onset.unwrap_or(0) as u64, 48_000.0);
            println!(
                "A/V offset at the receiver (sender-report clock): audio {:+.1} ms vs video; arrival: audio packet {:+.1} ms vs frame; step frame arrived {:.1} ms after capture",
                (audio_t - video_t) * 1e3,
                (a.arrived.duration_since(step_at).as_secs_f64()
                    - v.arrived.duration_since(step_at).as_secs_f64())
                    * 1e3,
                v.arrived.duration_since(step_at).as_secs_f64() * 1e3
            );
        }
        other => println!(
            "A/V offset: not measurable (bright frame {}, onset {}, video SR {}, audio SR {})",
            other.0.is_some(),
            other.1.is_some(),
            other.2.is_some(),
            other.3.is_some()
        ),
    }
}

async fn many_viewers(seconds: u64, counts: &[usize]) {
    println!("\n## N viewers of one session (client 0 decodes VP8; the others only receive, to spare the 2 cores)");
    println!("viewers | min fps | mean fps | enc CPU % | I/O CPU % | frames dropped (encoder/viewer) | send drops");
    for &n in counts {
        let server = RtcServer::start(RtcConfig::default()).expect("server");
        let session = Arc::new(
            server
                .open_session("bench-n", SIZE, SIZE, 25)
                .expect("session"),
        );
        let renderer = Renderer::start(session.clone(), 25, Duration::from_secs(3600));
        let mut clients = Vec::new();
        for i in 0..n {
            let (c, offer) = TestClient::new(ClientConfig {
                decode_video: i == 0,
                ..Default::default()
            });
            let (_, answer) = session.accept(&offer).await.expect("accept");
            clients.push(c.start(&answer));
        }
        // Let every viewer connect and get its keyframe, then measure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts0: Vec<usize> = clients.iter().map(|c| c.frames()).collect();
        let cpu0 = (thread_cpu("avs-rtc-enc"), thread_cpu("avs-rtc-io"));
        let wall0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let wall = wall0.elapsed().as_secs_f64();
        let cpu1 = (thread_cpu("avs-rtc-enc"), thread_cpu("avs-rtc-io"));
        let fps: Vec<f64> = clients
            .iter()
            .zip(&counts0)
            .map(|(c, c0)| (c.frames() - c0) as f64 / wall)
            .collect();
        let s = server.stats();
        println!(
            "{n:7} | {:7.1} | {:8.1} | {:9.1} | {:9.1} | {} / {} | {}",
            fps.iter().cloned().fold(f64::INFINITY, f64::min),
            fps.iter().sum::<f64>() / n as f64,
            (cpu1.0 - cpu0.0) / wall * 100.0,
            (cpu1.1 - cpu0.1) / wall * 100.0,
            s.video_frames_dropped_encoder_total,
            s.video_frames_dropped_viewer_total,
            s.datagrams_send_dropped_total
        );
        drop(renderer);
        drop(clients);
    }
}
