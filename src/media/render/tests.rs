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

/// The portrait with its lips parted by a gap (its upper half teeth, its lower half dark) and a
/// face mesh whose lip contours run along the lips' edges (an ellipse between the corners), the
/// rest of its points far from the mouth.
struct Parted {
    p: Prepared,
    cx: f32,
    cy: f32,
    half: f32,
}

const TEETH: [u8; 3] = [236, 232, 220];

impl Parted {
    fn new() -> Self {
        Self::with_gap(5.0)
    }

    /// The same with lips `gap` apart in the middle (0: closed, no teeth showing).
    fn with_gap(gap: f32) -> Self {
        let p = portrait();
        let (cx, cy, mw) = (
            p.model.mouth.center[0],
            p.model.mouth.center[1],
            p.model.mouth.width,
        );
        let (w, h) = (p.width(), p.height());
        let mut image =
            image::RgbImage::from_raw(w as u32, h as u32, p.base.as_slice().unwrap().to_vec())
                .unwrap();
        let half = 0.4 * mw;
        for (x, y, px) in image.enumerate_pixels_mut() {
            let (x, y) = (x as f32, y as f32);
            if (x - cx).abs() < half {
                let g = Self::gap(cx, half, x) * gap / 5.0;
                if y >= cy - g && y < cy {
                    *px = image::Rgb(TEETH);
                } else if y >= cy && y < cy + g {
                    *px = image::Rgb([20, 10, 10]);
                } else if (y - cy).abs() < g + 5.0 {
                    *px = image::Rgb([170, 60, 70]);
                }
            }
        }
        let mut model = p.model.clone();
        let mut mesh = vec![[0.0, 0.0, 0.0]; 468];
        for k in 0..11 {
            let x = cx - half + 2.0 * half * k as f32 / 10.0;
            let g = Self::gap(cx, half, x) * gap / 5.0;
            mesh[points::INNER_UPPER_CONTOUR[k]] = [x, cy - g, 0.0];
            mesh[points::INNER_LOWER_CONTOUR[k]] = [x, cy + g, 0.0];
            mesh[points::OUTER_UPPER_CONTOUR[k]] = [x, cy - g - 5.0, 0.0];
            mesh[points::OUTER_LOWER_CONTOUR[k]] = [x, cy + g + 5.0, 0.0];
        }
        mesh[points::MOUTH_LEFT] = [cx - half - 4.0, cy, 0.0];
        mesh[points::MOUTH_RIGHT] = [cx + half + 4.0, cy, 0.0];
        model.mesh = Some(MeshState::Ok { points: mesh });
        Self {
            p: Prepared::new(model, image),
            cx,
            cy,
            half,
        }
    }

    /// Half the gap's height at column `x`: an ellipse through the contours' eleven points,
    /// straight between them as the mesh's contours are.
    fn gap(cx: f32, half: f32, x: f32) -> f32 {
        let ellipse = |k: f32| 5.0 * (1.0 - (k / 5.0 - 1.0).powi(2)).max(0.0).sqrt();
        let k = ((x - cx + half) / (2.0 * half) * 10.0).clamp(0.0, 10.0);
        let (k0, t) = (k.floor().min(9.0), k - k.floor().min(9.0));
        ellipse(k0) * (1.0 - t) + ellipse(k0 + 1.0) * t
    }

    fn frame(&self, open: f32) -> Vec<u8> {
        frame(
            &self.p,
            FrameParams {
                open,
                ..Default::default()
            },
        )
    }

    /// The pixels of column `x` from row `y0` to `y1`.
    fn column(&self, f: &[u8], x: usize, rows: std::ops::Range<usize>) -> Vec<[u8; 3]> {
        let w = self.p.width();
        rows.map(|y| {
            let i = (y * w + x) * 3;
            [f[i], f[i + 1], f[i + 2]]
        })
        .collect()
    }
}

#[test]
fn a_closure_presses_parted_lips_together_along_the_mesh() {
    let parted = Parted::new();
    let (cx, cy, half) = (parted.cx, parted.cy, parted.half);
    let w = parted.p.width();
    // Pixels of the gap (teeth or dark) left.
    let gap = |open: f32| {
        let f = parted.frame(open);
        let (x0, x1) = ((cx - half) as usize, (cx + half) as usize);
        let (y0, y1) = ((cy - 8.0) as usize, (cy + 8.0) as usize);
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|(x, y)| {
                let r = f[(y * w + x) * 3];
                !(150..=190).contains(&r) && !(200..=235).contains(&r)
            })
            .count()
    };
    let (rest, half_way, pressed) = (gap(0.0), gap(-0.5), gap(-1.0));
    assert!(rest > 100, "{rest}");
    assert!(
        half_way < rest && pressed < half_way,
        "{rest} {half_way} {pressed}"
    );
    assert!(pressed * 10 < rest, "{rest} -> {pressed}");
    // Without a mesh, rest is as closed as lips get.
    let mut bare = parted.p.model.clone();
    bare.mesh = None;
    let (h, src) = (parted.p.height(), parted.p.base.as_slice().unwrap());
    let image = image::RgbImage::from_raw(w as u32, h as u32, src.to_vec());
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
fn an_open_mouth_shows_the_portraits_teeth_unstretched_over_a_cavity_darker_at_the_back() {
    let parted = Parted::new();
    let (cx, cy) = (parted.cx as usize, parted.cy);
    let rows = (cy - 30.0) as usize..(cy + 60.0) as usize;
    let teeth = |f: &[u8]| {
        parted
            .column(f, cx, rows.clone())
            .iter()
            .filter(|px| px.iter().zip(TEETH).all(|(a, b)| a.abs_diff(b) < 30))
            .count()
    };
    let (rest, open) = (parted.frame(0.0), parted.frame(1.0));
    // Five rows of teeth at rest, about as many wide open: they move with the upper lip, the
    // opening grows below them.
    let (before, after) = (teeth(&rest), teeth(&open));
    assert!((4..=6).contains(&before), "{before}");
    assert!(after.abs_diff(before) <= 2, "{before} -> {after}");
    let dark = |f: &[u8]| {
        parted
            .column(f, cx, rows.clone())
            .iter()
            .filter(|px| px[0] < 110 && px[1] < 60)
            .count()
    };
    assert!(
        dark(&open) > dark(&rest) + 12,
        "{} -> {}",
        dark(&rest),
        dark(&open)
    );
    // The cavity is darkest in its middle (the back of the mouth), lighter toward the corners.
    let depth = |x: usize| {
        let column = parted.column(&open, x, rows.clone());
        let run = column
            .iter()
            .position(|px| px[0] < 110 && px[1] < 60)
            .unwrap();
        let end = run
            + column[run..]
                .iter()
                .take_while(|px| px[0] < 110 && px[1] < 60)
                .count();
        column[(run + end) / 2][0]
    };
    let (middle, side) = (depth(cx), depth((parted.cx - 0.7 * parted.half) as usize));
    assert!(middle + 15 < side, "{middle} vs {side}");
}

#[test]
fn the_mesh_moves_nothing_outside_the_lower_face() {
    let parted = Parted::new();
    let p = &parted.p;
    let w = p.width();
    let (still, open) = (parted.frame(0.0), parted.frame(1.0));
    let mw = p.model.mouth.width;
    // Above the ring and beside it, every pixel is the idle frame's.
    let above = (0, 0, w, (parted.cy - 0.9 * mw - 2.0) as usize);
    assert_eq!(region_difference(&still, &open, w, above), 0.0);
    let left = (0, 0, (parted.cx - 1.15 * mw - 2.0) as usize, p.height());
    assert_eq!(region_difference(&still, &open, w, left), 0.0);
    // Inside it, the lips moved.
    let mouth = (
        (parted.cx - parted.half) as usize,
        (parted.cy - 15.0) as usize,
        (2.0 * parted.half) as usize,
        40,
    );
    assert!(region_difference(&still, &open, w, mouth) > 10.0);
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

#[test]
fn a_portrait_with_closed_lips_opens_on_drawn_teeth_that_do_not_stretch() {
    let closed = Parted::with_gap(0.0);
    // Through the middle of a front tooth (the two meet in the middle).
    let mw = closed.p.model.mouth.width;
    let (cx, cy) = ((closed.cx + 0.045 * mw) as usize, closed.cy);
    let rows = (cy - 30.0) as usize..(cy + 60.0) as usize;
    let bright = |open: f32| {
        let f = closed.frame(open);
        let column = closed.column(&f, cx, rows.clone());
        // The first light run below the upper lip's red: its start and length.
        let start = column
            .iter()
            .position(|px| px.iter().all(|c| *c > 150) && px[1] > 140)
            .unwrap_or_else(|| panic!("no teeth at open {open}: {column:?}"));
        let len = column[start..]
            .iter()
            .take_while(|px| px.iter().all(|c| *c > 150) && px[1] > 140)
            .count();
        (start, len)
    };
    assert_eq!(
        closed
            .column(&closed.frame(0.0), cx, rows.clone())
            .iter()
            .filter(|px| px[1] > 200)
            .count(),
        0,
        "no teeth at rest"
    );
    let ((_, half_way), (_, wide)) = (bright(0.6), bright(1.0));
    assert!(half_way >= 3, "{half_way} rows of teeth");
    assert!(
        wide.abs_diff(half_way) <= 1,
        "{half_way} -> {wide} rows: stretched"
    );
}

/// Numbers in 0..1 from `seed` (xorshift): the same every run.
fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as f32 / u32::MAX as f32
    }
}

#[test]
fn any_mesh_renders_without_a_panic() {
    // Meshes as a broken model or a bad read could give: points scattered over the face,
    // contours crossing, points on top of each other, some far outside the picture.
    let p = portrait();
    let (cx, cy, mw) = (
        p.model.mouth.center[0],
        p.model.mouth.center[1],
        p.model.mouth.width,
    );
    let (w, h) = (p.width() as u32, p.height() as u32);
    let image = image::RgbImage::from_raw(w, h, p.base.as_slice().unwrap().to_vec()).unwrap();
    let mut random = uniform(0x2545_f491);
    for case in 0..60 {
        let spread = [0.0, 0.3, 1.0, 3.0, 50.0][case % 5] * mw;
        let mesh: Vec<[f32; 3]> = (0..468)
            .map(|i| {
                if case % 7 == 0 && i % 3 == 0 {
                    [cx, cy, 0.0]
                } else {
                    [
                        cx + (random() - 0.5) * spread,
                        cy + (random() - 0.5) * spread,
                        0.0,
                    ]
                }
            })
            .collect();
        let mut model = p.model.clone();
        model.mesh = Some(MeshState::Ok { points: mesh });
        let prepared = Prepared::new(model, image.clone());
        for open in [-1.0, -0.4, 0.0, 0.5, 1.0] {
            frame(
                &prepared,
                FrameParams {
                    open,
                    shape: random() * 2.0 - 1.0,
                    ..Default::default()
                },
            );
        }
    }
}

#[test]
fn a_jittered_mesh_still_moves_the_lips_without_a_panic() {
    let parted = Parted::new();
    let (w, h) = (parted.p.width() as u32, parted.p.height() as u32);
    let src = parted.p.base.as_slice().unwrap().to_vec();
    let Some(MeshState::Ok { points: mesh }) = parted.p.model.mesh.clone() else {
        unreachable!("Parted has a mesh")
    };
    let mut uniform = uniform(0x9e37_79b9);
    let mut random = move || uniform() - 0.5;
    for noise in [0.5, 2.0, 6.0, 20.0] {
        let jittered: Vec<[f32; 3]> = mesh
            .iter()
            .map(|q| [q[0] + noise * random(), q[1] + noise * random(), q[2]])
            .collect();
        let mut model = parted.p.model.clone();
        model.mesh = Some(MeshState::Ok { points: jittered });
        let image = image::RgbImage::from_raw(w, h, src.clone()).unwrap();
        let prepared = Prepared::new(model, image);
        if noise < 1.0 {
            assert!(
                prepared.lips.is_some(),
                "a mesh half a pixel off is still one"
            );
        }
        let still = frame(&prepared, FrameParams::default());
        for open in [-1.0, 0.5, 1.0] {
            let moved = frame(
                &prepared,
                FrameParams {
                    open,
                    ..Default::default()
                },
            );
            if prepared.lips.is_some() && open > 0.0 {
                assert_ne!(moved, still, "open {open} with noise {noise}");
            }
        }
    }
}
