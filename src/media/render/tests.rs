use super::*;
use crate::media::avatar::{self, MeshState};
use crate::media::face::Face;
use crate::media::mesh::points;

/// Bilinear sample of `src` (`w`×`h`, RGB) at (`u`, `v`), clamped to the edges.
fn sample(src: &[u8], w: usize, h: usize, u: f32, v: f32) -> [f32; 3] {
    let u = u.clamp(0.0, (w - 1) as f32);
    let v = v.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (u as usize, v as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (u - x0 as f32, v - y0 as f32);
    let i00 = (y0 * w + x0) * 3;
    let i10 = (y0 * w + x1) * 3;
    let i01 = (y1 * w + x0) * 3;
    let i11 = (y1 * w + x1) * 3;
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = src[i00 + c] as f32 * (1.0 - fx) + src[i10 + c] as f32 * fx;
        let bottom = src[i01 + c] as f32 * (1.0 - fx) + src[i11 + c] as f32 * fx;
        *o = top * (1.0 - fy) + bottom * fy;
    }
    out
}

fn portrait() -> Prepared {
    // A face-like picture: skin oval, darker eyes and a lip line, so motion is visible.
    let img = image::RgbImage::from_fn(400, 400, |x, y| {
        let (fx, fy) = (x as f32 - 200.0, y as f32 - 200.0);
        let skin = (fx / 110.0).powi(2) + (fy / 140.0).powi(2) < 1.0;
        let eye = ((fx.abs() - 40.0) / 14.0).powi(2) + ((fy + 30.0) / 7.0).powi(2) < 1.0;
        let lips = fx.abs() < 35.0 && (fy - 60.0).abs() < 4.0;
        match (skin, eye, lips) {
            (_, true, _) => image::Rgb([40, 30, 30]),
            (_, _, true) => image::Rgb([170, 60, 70]),
            (true, _, _) => image::Rgb([220, 180, 150]),
            _ => image::Rgb([60, 80, 120 + (y % 50) as u8]),
        }
    });
    let face = Face {
        x: 90.0,
        y: 60.0,
        w: 220.0,
        h: 280.0,
        score: 0.9,
        landmarks: [
            [160.0, 170.0],
            [240.0, 170.0],
            [200.0, 210.0],
            [165.0, 260.0],
            [235.0, 260.0],
        ],
    };
    let (model, crop) = avatar::build(&img, &face, "1:1", 256);
    Prepared::new(model, crop)
}

fn frame(p: &Prepared, params: FrameParams) -> Vec<u8> {
    let mut out = vec![0; p.width() * p.height() * 3];
    render_into(p, p.base.as_slice().unwrap(), &params, &mut out);
    out
}

fn mouth_region(p: &Prepared) -> (usize, usize, usize, usize) {
    let r = p.model.mouth.region;
    let x = r.x.max(0.0) as usize;
    let y = r.y.max(0.0) as usize;
    (
        x,
        y,
        (r.w as usize).min(p.width() - x),
        (r.h as usize).min(p.height() - y),
    )
}

#[test]
fn speech_moves_the_mouth_far_more_than_idle_motion() {
    let p = portrait();
    let region = mouth_region(&p);
    let w = p.width();
    let still = frame(
        &p,
        FrameParams {
            t: 0.0,
            ..Default::default()
        },
    );
    let idle = frame(
        &p,
        FrameParams {
            t: 0.5,
            ..Default::default()
        },
    );
    let open = frame(
        &p,
        FrameParams {
            t: 0.5,
            open: 0.9,
            ..Default::default()
        },
    );
    let idle_change = region_difference(&still, &idle, w, region);
    let speech_change = region_difference(&idle, &open, w, region);
    assert!(
        speech_change > 4.0 * idle_change.max(0.5),
        "{speech_change} vs {idle_change}"
    );
    // Outside the mouth region, opening the mouth changes nothing.
    let top = (0, 0, w, (p.model.mouth.region.y as usize).saturating_sub(2));
    assert_eq!(region_difference(&idle, &open, w, top), 0.0);
}

#[test]
fn a_closure_presses_parted_lips_together_along_the_mesh() {
    // The portrait with its lips parted by a dark gap, and a mesh whose inner lip contours
    // run along the gap's edges (an ellipse between the corners).
    let p = portrait();
    let (cx, cy, mw) = (
        p.model.mouth.center[0],
        p.model.mouth.center[1],
        p.model.mouth.width,
    );
    let (w, h) = (p.width(), p.height());
    let mut image =
        image::RgbImage::from_raw(w as u32, h as u32, p.base.as_slice().unwrap().to_vec()).unwrap();
    let half = 0.4 * mw;
    let gap = |x: f32| 5.0 * (1.0 - ((x - cx) / half).powi(2)).max(0.0).sqrt();
    for (x, y, px) in image.enumerate_pixels_mut() {
        let (x, y) = (x as f32, y as f32);
        if (x - cx).abs() < half {
            let g = gap(x);
            if (y - cy).abs() < g {
                *px = image::Rgb([20, 10, 10]);
            } else if (y - cy).abs() < g + 5.0 {
                *px = image::Rgb([170, 60, 70]);
            }
        }
    }
    let mut model = p.model.clone();
    let mut mesh = vec![[cx, cy, 0.0]; 468];
    for (k, (upper, lower)) in points::INNER_UPPER_CONTOUR
        .iter()
        .zip(points::INNER_LOWER_CONTOUR)
        .enumerate()
    {
        let x = cx - half + 2.0 * half * k as f32 / 10.0;
        mesh[*upper] = [x, cy - gap(x), 0.0];
        mesh[lower] = [x, cy + gap(x), 0.0];
    }
    model.mesh = Some(MeshState::Ok { points: mesh });
    let p = Prepared::new(model, image);
    let dark = |open: f32| {
        let f = frame(
            &p,
            FrameParams {
                open,
                ..Default::default()
            },
        );
        let (x0, x1) = ((cx - half) as usize, (cx + half) as usize);
        let (y0, y1) = ((cy - 8.0) as usize, (cy + 8.0) as usize);
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|(x, y)| f[(y * w + x) * 3] < 60)
            .count()
    };
    let (rest, half_way, pressed) = (dark(0.0), dark(-0.5), dark(-1.0));
    assert!(rest > 100, "{rest}");
    assert!(
        half_way < rest && pressed < half_way,
        "{rest} {half_way} {pressed}"
    );
    assert!(pressed * 10 < rest, "{rest} -> {pressed}");
    // Without a mesh, rest is as closed as lips get.
    let mut bare = p.model.clone();
    bare.mesh = None;
    let image = image::RgbImage::from_raw(w as u32, h as u32, p.base.as_slice().unwrap().to_vec());
    let bare = Prepared::new(bare, image.unwrap());
    let f = |open| {
        frame(
            &bare,
            FrameParams {
                open,
                ..Default::default()
            },
        )
    };
    assert_eq!(f(-1.0), f(0.0));
}

#[test]
fn eyes_blink() {
    let p = portrait();
    let lm = p.model.landmarks;
    let ed = lm.eye_distance();
    let eye = (
        (lm.left_eye[0] - 0.3 * ed) as usize,
        (lm.left_eye[1] - 0.2 * ed) as usize,
        (0.6 * ed) as usize,
        (0.4 * ed) as usize,
    );
    let open = frame(
        &p,
        FrameParams {
            t: 0.0,
            ..Default::default()
        },
    );
    let closed = frame(
        &p,
        FrameParams {
            t: 0.0,
            blink: 1.0,
            ..Default::default()
        },
    );
    assert!(region_difference(&open, &closed, p.width(), eye) > 5.0);
    // The lid moves, not the brow above it (no smear up the forehead).
    let brow = (
        (lm.left_eye[0] - 0.3 * ed) as usize,
        (lm.left_eye[1] - 0.5 * ed) as usize,
        (0.6 * ed) as usize,
        (0.25 * ed) as usize,
    );
    assert!(region_difference(&open, &closed, p.width(), brow) < 0.01);
    let blinks = (0..1000)
        .filter(|i| blink_at(*i as f32 * 0.01, 7) > 0.5)
        .count();
    assert!(blinks > 5 && blinks < 60, "{blinks}");
}

#[test]
fn the_fixed_point_frame_matches_a_float_bilinear_one() {
    // Idle motion alone (no mouth, no blink): every pixel took the fast path.
    let p = portrait();
    let (w, h) = (p.width(), p.height());
    let t = 1.3;
    let got = frame(
        &p,
        FrameParams {
            t,
            ..Default::default()
        },
    );
    let tau = std::f32::consts::TAU;
    let breath = (tau * t / 4.5).sin();
    let scale = 1.0 + 0.004 * breath;
    let (dx, dy) = (0.8 * (tau * t / 7.3).sin(), breath);
    let src = p.base.as_slice().unwrap();
    let mut worst = 0u8;
    for y in 0..h {
        for x in 0..w {
            let u = w as f32 / 2.0 + (x as f32 - w as f32 / 2.0) / scale - dx;
            let v = h as f32 + (y as f32 - h as f32) / scale - dy;
            let want = sample(src, w, h, u, v);
            for c in 0..3 {
                let diff = (got[(y * w + x) * 3 + c] as f32 - want[c]).abs();
                worst = worst.max(diff.round() as u8);
            }
        }
    }
    assert!(worst <= 2, "worst difference {worst}");
}
