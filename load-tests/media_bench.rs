//! Media benchmark: face detection at 512×512 and 1280×720, the built-in renderer's frames per
//! second on one core at 512×512, JPEG encoding per frame, the talking density (N sessions all
//! speaking, each frame drawn, turned into I420 and VP8-encoded as a published session's is, on
//! every core as the render workers do), and (with `--lipsync MODEL`) a batched lip-sync model
//! run. Prints p50/p99 and throughput.
//!
//! ```text
//! make bench-media                    # or:
//! cargo run --release --example media_bench -- [--assets .setup] [--frames 500]
//!     [--density 1,2,4,8,12,16] [--lipsync MODEL] [--device cpu|cuda:0] [--dump DIR]
//! ```
//!
//! The lips themselves (visemes, the frame sheet) are `lips_bench`'s.
//!
//! The density figure is the node's media work alone: no network, no subscriber decoding on the
//! same cores. A count "holds 25 fps" when the median tick (every session's frame) takes at most
//! 40 ms.
//!
//! `--dump DIR` writes a few rendered frames (idle, blinking, speaking) as PNG to look at.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use avatar_supervisor::media::audio::{MelSpec, MEL_SAMPLES};
use avatar_supervisor::media::avatar;
use avatar_supervisor::media::face::FaceDetector;
use avatar_supervisor::media::jpeg;
use avatar_supervisor::media::lipsync::{LipFace, LipSync};
use avatar_supervisor::media::onnx::{Device, Onnx};
use avatar_supervisor::media::render::{render_into, FrameParams, Prepared};
use avatar_supervisor::media::yuv::I420;
use avs_rtc::vp8::Vp8Encoder;
use rayon::prelude::*;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let total: Duration = times.iter().sum();
    println!(
        "{what:<44} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  throughput={:>8.1}/s",
        times.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.len() as f64 / total.as_secs_f64()
    );
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn main() {
    let assets = PathBuf::from(arg("--assets").unwrap_or_else(|| ".setup".into()));
    let frames: usize = arg("--frames").and_then(|f| f.parse().ok()).unwrap_or(500);
    let onnx =
        Onnx::load(Some(assets.join("libonnxruntime.so"))).expect("onnxruntime (make setup)");
    let detector = FaceDetector::load(&onnx, &assets.join("models/centerface.onnx"), 0.5)
        .expect("face model (make setup)");
    let portrait = image::open(assets.join("images/astronaut.png"))
        .expect("astronaut.png (make setup)")
        .to_rgb8();

    for (w, h) in [(512u32, 512u32), (1280, 720)] {
        let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([30, 40, 50]));
        image::imageops::replace(
            &mut canvas,
            &portrait,
            ((w - 512) / 2) as i64,
            ((h - 512.min(h)) / 2) as i64,
        );
        let times: Vec<Duration> = (0..20)
            .map(|_| time(|| detector.detect(&canvas).expect("detect")).1)
            .collect();
        report(&format!("face detection {w}x{h}"), times);
    }

    let face = detector.detect(&portrait).expect("detect").remove(0);
    let (model, crop) = avatar::build(&portrait, &face, "1:1", 512);
    let (model, base) = avatar::prepare(&model, &crop, "1:1", 512);
    let prepared = Prepared::new(model, base);
    let (w, h) = (prepared.width(), prepared.height());
    let src = prepared.base.as_slice().expect("contiguous").to_vec();
    let mut out = vec![0u8; w * h * 3];
    let params = |i: usize| FrameParams {
        t: i as f32 / 25.0,
        open: ((i as f32 * 0.7).sin() * 0.5 + 0.5) * if i % 50 < 30 { 1.0 } else { 0.0 },
        shape: (i as f32 * 0.3).sin(),
        blink: avatar_supervisor::media::render::blink_at(i as f32 / 25.0, 7),
    };
    let times: Vec<Duration> = (0..frames)
        .map(|i| time(|| render_into(&prepared, &src, &params(i), &mut out)).1)
        .collect();
    report(&format!("built-in renderer {w}x{h} (one core)"), times);
    let times: Vec<Duration> = (0..frames.min(200))
        .map(|_| time(|| jpeg::encode(&out, w, h, 80).expect("jpeg")).1)
        .collect();
    let size = jpeg::encode(&out, w, h, 80).expect("jpeg").len();
    report(
        &format!("JPEG encode {w}x{h} q80 ({} KB)", size / 1024),
        times,
    );

    // One session-frame on one core: draw, I420, VP8 (what a published session costs a frame).
    let mut encoder = Vp8Encoder::new(w as u32, h as u32, 25, 800_000).expect("vp8");
    let times: Vec<Duration> = (0..frames.min(300))
        .map(|i| {
            time(|| {
                render_into(&prepared, &src, &params(i), &mut out);
                let i420 = I420::from_rgb(&out, w as u32, h as u32).expect("i420");
                let (y, u, v) = i420.planes();
                encoder
                    .encode(y, u, v, i as u64 * 3600, i == 0)
                    .expect("vp8")
            })
            .1
        })
        .collect();
    report(&format!("draw + I420 + VP8 {w}x{h} (one core)"), times);
    let counts: Vec<usize> = arg("--density")
        .unwrap_or_else(|| "1,2,4,8,12,16".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut held = 0;
    for n in counts {
        struct Talking {
            out: Vec<u8>,
            encoder: Vp8Encoder,
        }
        let mut sessions: Vec<Talking> = (0..n)
            .map(|_| Talking {
                out: vec![0u8; w * h * 3],
                encoder: Vp8Encoder::new(w as u32, h as u32, 25, 800_000).expect("vp8"),
            })
            .collect();
        let ticks: Vec<Duration> = (0..100)
            .map(|tick| {
                time(|| {
                    sessions.par_iter_mut().enumerate().for_each(|(k, s)| {
                        let i = tick + 7 * k;
                        render_into(&prepared, &src, &params(i), &mut s.out);
                        let i420 = I420::from_rgb(&s.out, w as u32, h as u32).expect("i420");
                        let (y, u, v) = i420.planes();
                        s.encoder
                            .encode(y, u, v, tick as u64 * 3600, tick == 0)
                            .expect("vp8");
                    })
                })
                .1
            })
            .collect();
        let mut sorted = ticks.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        if median <= Duration::from_millis(40) {
            held = held.max(n);
        }
        report(
            &format!("{n} talking sessions, one tick ({cores} cores)"),
            ticks,
        );
    }
    println!("talking sessions held at 25 fps (median tick <= 40 ms): {held}");

    if let Some(dir) = arg("--dump") {
        std::fs::create_dir_all(&dir).expect("dump dir");
        for (name, p) in [
            ("idle", FrameParams::default()),
            (
                "blink",
                FrameParams {
                    blink: 1.0,
                    ..Default::default()
                },
            ),
            (
                "open",
                FrameParams {
                    open: 0.9,
                    ..Default::default()
                },
            ),
            (
                "open_round",
                FrameParams {
                    open: 0.8,
                    shape: -1.0,
                    ..Default::default()
                },
            ),
            (
                "half_wide",
                FrameParams {
                    open: 0.45,
                    shape: 1.0,
                    ..Default::default()
                },
            ),
        ] {
            render_into(&prepared, &src, &p, &mut out);
            let img = image::RgbImage::from_raw(w as u32, h as u32, out.clone()).expect("frame");
            img.save(format!("{dir}/{name}.png")).expect("save");
        }
        println!("frames written to {dir}");
    }

    if let Some(model_path) = arg("--lipsync") {
        let device =
            Device::parse(&arg("--device").unwrap_or_else(|| "cpu".into())).expect("device");
        let mut lipsync =
            LipSync::load(&onnx, model_path.as_ref(), device).expect("lip-sync model");
        let lip = LipFace::of(&prepared);
        let mel = MelSpec::new();
        let audio: Vec<f32> = (0..MEL_SAMPLES)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        let (m, t) = time(|| mel.compute(&audio));
        println!("mel spectrogram (80x16) {:.3} ms", t.as_secs_f64() * 1e3);
        for batch in [1usize, 8, 32] {
            let items: Vec<(&[f32], &LipFace)> = (0..batch).map(|_| (m.as_slice(), &lip)).collect();
            lipsync.run(&items).expect("warm-up");
            let times: Vec<Duration> = (0..50)
                .map(|_| time(|| lipsync.run(&items).expect("run")).1)
                .collect();
            report(
                &format!("lip-sync batch {batch} on {}", device.label()),
                times,
            );
        }
    }
}
