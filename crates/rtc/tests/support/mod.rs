//! Test support: the WebRTC test client (`avs_rtc::test_client`, feature `test-client`), and a renderer
//! that pushes a synthetic picture and voice into a session the way the avatar pipeline will.
#![allow(dead_code)] // each test binary and the benchmark use a different part

pub use avs_rtc::test_client::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use avs_rtc::vp8::i420_plane_sizes;
use avs_rtc::MediaSession;

pub const SIZE: u32 = 512;
/// The renderer's picture: a moving gradient, and a flat top-left quadrant whose brightness steps from
/// DARK to BRIGHT at the step instant (the audio goes from silence to a tone at the same instant).
pub const DARK: u8 = 40;
pub const BRIGHT: u8 = 220;

/// The renderer's I420 picture `i` (luma gradient moving one pixel a frame, flat square at `level`).
pub fn picture(i: u32, level: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (luma, chroma) = i420_plane_sizes(SIZE, SIZE);
    let mut y = vec![0u8; luma];
    for row in 0..SIZE {
        for col in 0..SIZE {
            let idx = (row * SIZE + col) as usize;
            y[idx] = if row < SIZE / 2 && col < SIZE / 2 {
                level
            } else {
                (((row + col + 2 * i) % 160) + 40) as u8
            };
        }
    }
    (y, vec![110u8; chroma], vec![140u8; chroma])
}

/// Pushes frames at `fps` and 20 ms voice chunks into a session from its own thread, as the avatar's
/// renderer will. At `step_after` the square turns bright and a 440 Hz tone starts, both with one instant.
pub struct Renderer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub start: Instant,
    pub step_at: Instant,
}

impl Renderer {
    pub fn start(session: Arc<MediaSession>, fps: u32, step_after: Duration) -> Renderer {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now() + Duration::from_millis(20);
        let step_at = start + step_after;
        let s = stop.clone();
        let frame_every = Duration::from_secs(1) / fps;
        let thread = std::thread::spawn(move || {
            // Precomputed pictures: the renderer's own cost stays out of the measurements.
            let pictures: Vec<_> = (0..fps)
                .flat_map(|i| [picture(i, DARK), picture(i, BRIGHT)])
                .collect();
            let mut frame = 0u32;
            let mut chunk = 0u32;
            while !s.load(Ordering::SeqCst) {
                let next_frame = start + frame_every * frame;
                let next_chunk = start + Duration::from_millis(20) * chunk;
                let due = next_frame.min(next_chunk);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if next_frame <= next_chunk {
                    let bright = next_frame >= step_at;
                    let (y, u, v) = &pictures[(frame % fps) as usize * 2 + bright as usize];
                    session
                        .push_video_i420(y, u, v, next_frame)
                        .expect("frame of the session's size");
                    frame += 1;
                } else {
                    let pcm: Vec<i16> = (0..320)
                        .map(|k| {
                            if next_chunk >= step_at {
                                let n = (chunk * 320 + k) as f64;
                                (12_000.0
                                    * (2.0 * std::f64::consts::PI * 440.0 * n / 16_000.0).sin())
                                    as i16
                            } else {
                                0
                            }
                        })
                        .collect();
                    session.push_audio(&pcm, next_chunk);
                    chunk += 1;
                }
            }
        });
        Renderer {
            stop,
            thread: Some(thread),
            start,
            step_at,
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A test tone standing in for speech when espeak-ng is missing.
pub fn tone_48k(seconds: f64) -> Vec<i16> {
    (0..(48_000.0 * seconds) as usize)
        .map(|i| (6000.0 * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / 48_000.0).sin()) as i16)
        .collect()
}

/// Resamples 48 kHz to 16 kHz the way the server does, for comparing energy.
pub fn to_16k(pcm48: &[i16]) -> Vec<i16> {
    let mut r = avs_rtc::audio::MonoResampler::new(48_000, 16_000, 960).expect("resampler");
    let mut out = Vec::new();
    r.process(pcm48, &mut out);
    out
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}
