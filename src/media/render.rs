//! The built-in renderer: one pass over the frame that moves the whole portrait a little (breathing
//! and a slow sway), closes the eyelids now and then, and, while the voice speaks, opens the mouth:
//! the jaw and lower lip slide down and the upper lip lifts, with the displacement fading smoothly
//! into the cheeks and chin around the landmarks, the mouth widens or rounds with the viseme
//! (`visemes`: spread, rounded), and the opening shows the mouth's dark inside below what was
//! above the lip line.
//!
//! Pixels are sampled backwards (each output pixel reads the source where it came from) with
//! bilinear filtering, over `ndarray` images in HWC `u8` layout.

use ndarray::Array3;

use super::avatar::AvatarModel;

/// A session's base frame and its geometry.
pub struct Prepared {
    pub model: AvatarModel,
    /// `[height, width, 3]` RGB.
    pub base: Array3<u8>,
}

impl Prepared {
    pub fn new(model: AvatarModel, image: image::RgbImage) -> Self {
        let (w, h) = image.dimensions();
        // unwrap: an RgbImage's buffer is exactly h * w * 3 bytes.
        let base = Array3::from_shape_vec((h as usize, w as usize, 3), image.into_raw()).unwrap();
        Self { model, base }
    }

    pub fn width(&self) -> usize {
        self.base.dim().1
    }

    pub fn height(&self) -> usize {
        self.base.dim().0
    }
}

/// What changes from frame to frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameParams {
    /// Seconds since the session's renderer started (idle motion is a function of it).
    pub t: f32,
    /// 0 closed .. 1 wide open.
    pub open: f32,
    /// -1 rounded .. 1 spread.
    pub shape: f32,
    /// 0 open eyes .. 1 closed.
    pub blink: f32,
}

/// How closed the eyes are at `t`: a 160 ms blink every 3 to 5 seconds, its rhythm set by `seed`.
pub fn blink_at(t: f32, seed: u32) -> f32 {
    let mut start = 0.7 + (seed % 1000) as f32 / 1000.0;
    let mut n = seed;
    while start + 0.16 < t {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        start += 3.0 + ((n >> 16) % 2000) as f32 / 1000.0;
    }
    let phase = (t - start) / 0.16;
    if (0.0..1.0).contains(&phase) {
        1.0 - (2.0 * phase - 1.0).abs()
    } else {
        0.0
    }
}

#[inline]
fn smooth(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// The mouth's motion for one frame, in base-image pixels.
struct MouthWarp {
    cx: f32,
    cy: f32,
    reach_x: f32,
    jaw: f32,
    lift: f32,
    lip_band: f32,
    chin_full: f32,
    chin_end: f32,
    widen: f32,
    cavity_hw: f32,
    cavity_hh: f32,
    cavity_cy: f32,
    /// Rows and columns the warp touches.
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
}

impl MouthWarp {
    fn new(model: &AvatarModel, p: &FrameParams, w: usize, h: usize) -> Option<Self> {
        if p.open < 0.01 {
            return None;
        }
        let m = &model.mouth;
        let mw = m.width;
        let (cx, cy) = (m.center[0], m.center[1]);
        let jaw = p.open * 0.42 * mw;
        let lift = p.open * 0.10 * mw;
        let widen = 1.0 + p.open * (0.10 * p.shape.max(0.0) - 0.12 * (-p.shape).max(0.0));
        let reach_x = 1.15 * mw;
        let chin_end = cy + 1.9 * mw;
        let x0 = (cx - reach_x).floor().max(0.0) as usize;
        let x1 = ((cx + reach_x).ceil() as usize).min(w);
        let y0 = (cy - 0.9 * mw).floor().max(0.0) as usize;
        let y1 = ((chin_end + jaw).ceil() as usize).min(h);
        Some(Self {
            cx,
            cy,
            reach_x,
            jaw,
            lift,
            lip_band: 0.35 * mw,
            chin_full: cy + 1.1 * mw,
            chin_end,
            widen,
            cavity_hw: 0.40 * mw * widen,
            cavity_hh: (jaw + lift) * 0.48,
            cavity_cy: cy + (jaw - lift) / 2.0,
            x0,
            x1,
            y0,
            y1,
        })
    }

    #[inline]
    fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    /// Where (`u`, `v`) of the warped face was in the unwarped one, and how much cavity covers it.
    #[inline]
    fn source(&self, u: f32, v: f32) -> (f32, f32, f32, f32) {
        let dx = u - self.cx;
        let across = smooth(1.0 - (dx / self.reach_x).abs());
        let down = if v <= self.chin_full {
            1.0
        } else {
            1.0 - smooth((v - self.chin_full) / (self.chin_end - self.chin_full))
        };
        let d = (self.cy - v) / self.lip_band;
        let up = (-d * d).exp();
        // Inside the opening the lips part (a jump at the lip line); towards the corners the
        // same motion is spread over a band, so no seam runs out into the cheeks.
        let jaw = -self.jaw * across * down;
        let lift = self.lift * across * up;
        let parted = if v >= self.cy { jaw } else { lift };
        let blend = smooth((v - self.cy + self.lip_band) / (2.0 * self.lip_band));
        let joined = lift * (1.0 - blend) + jaw * blend;
        let opening = smooth((1.0 - dx.abs() / (1.1 * self.cavity_hw)) * 4.0);
        let sv = v + joined + (parted - joined) * opening;
        let near = across * smooth(1.0 - ((v - self.cy).abs() / (1.5 * self.lip_band)));
        let su = self.cx + dx / (1.0 + (self.widen - 1.0) * near);
        // The opening: an ellipse between the lips, soft at its edge.
        let ex = dx / self.cavity_hw;
        let ey = (v - self.cavity_cy) / self.cavity_hh.max(0.5);
        let r = ex * ex + ey * ey;
        let cover = if r < 1.0 {
            smooth((1.0 - r) * 4.0)
        } else {
            0.0
        };
        (su, sv, cover, ey)
    }
}

/// One axis of a bilinear sample in fixed point: the two neighbours' byte offsets and the far
/// one's weight (0..=256).
#[derive(Clone, Copy)]
struct Tap {
    near: usize,
    far: usize,
    weight: u32,
}

impl Tap {
    /// The tap at `coord` on an axis of `len` pixels, `stride` bytes apart, clamped to its ends.
    #[inline]
    fn at(coord: f32, len: usize, stride: usize) -> Self {
        let c = coord.clamp(0.0, (len - 1) as f32);
        let c0 = c as usize;
        let c1 = (c0 + 1).min(len - 1);
        Self {
            near: c0 * stride,
            far: c1 * stride,
            weight: ((c - c0 as f32) * 256.0) as u32,
        }
    }
}

/// Bilinear sample of `src` at the taps' point, in fixed point.
#[inline]
fn blend(src: &[u8], x: Tap, y: Tap) -> [u8; 3] {
    let (wx, wy) = (x.weight, y.weight);
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let at = |row: usize, col: usize| src[row + col + c] as u32;
        let top = at(y.near, x.near) * (256 - wx) + at(y.near, x.far) * wx;
        let bottom = at(y.far, x.near) * (256 - wx) + at(y.far, x.far) * wx;
        *o = ((top * (256 - wy) + bottom * wy + (1 << 15)) >> 16) as u8;
    }
    out
}

/// Renders one frame of `prepared` from `src` (the base, or the base with a lip-sync model's
/// mouth pasted in) into `out` (`w * h * 3` bytes).
///
/// Most of the frame only breathes and sways: an axis-aligned scale and shift, so each column's
/// and each row's sample point is computed once per frame and those pixels are a fixed-point
/// blend of four. Only the mouth's box (while it is open) and the eyes' (while they blink) take
/// the full per-pixel warp; both paths sample the same way, so no seam shows where they meet.
pub fn render_into(prepared: &Prepared, src: &[u8], p: &FrameParams, out: &mut [u8]) {
    let (h, w) = (prepared.height(), prepared.width());
    let model = &prepared.model;
    let mouth = MouthWarp::new(model, p, w, h);
    // Breathing and sway: a slight scale about the bottom centre and a slow drift.
    let tau = std::f32::consts::TAU;
    let breath = (tau * p.t / 4.5).sin();
    let scale = 1.0 + 0.004 * breath;
    let (dx, dy) = (0.8 * (tau * p.t / 7.3).sin(), 1.0 * breath);
    let (ox, oy) = (w as f32 / 2.0, h as f32);
    let column = |x: usize| ox + (x as f32 - ox) / scale - dx;
    let row_at = |y: usize| oy + (y as f32 - oy) / scale - dy;
    let columns: Vec<Tap> = (0..w).map(|x| Tap::at(column(x), w, 3)).collect();
    // The eyes: the upper lid slides down over each.
    let lm = &model.landmarks;
    let ed = lm.eye_distance().max(4.0);
    let (ehw, ehh) = (0.30 * ed, 0.16 * ed);
    let eyes = [lm.left_eye, lm.right_eye];
    let eye_rows = (
        (eyes[0][1].min(eyes[1][1]) - ehh - 1.0).max(0.0) as usize,
        (eyes[0][1].max(eyes[1][1]) + ehh + 1.0).max(0.0) as usize,
    );
    // Columns the lids can reach, with a margin for the sway.
    let eye_columns = |x: usize| {
        eyes.iter()
            .any(|e| (x as f32 - e[0]).abs() < ehw + 3.0 + dx.abs())
    };
    let (cavity_edge, cavity_core) = ([96.0, 42.0, 46.0], [34.0, 11.0, 15.0]);
    let mut mixed = vec![0u16; w * 3];
    for y in 0..h {
        let v0 = row_at(y);
        let tap_y = Tap::at(v0, h, w * 3);
        let row = &mut out[y * w * 3..(y + 1) * w * 3];
        let blink_row = p.blink > 0.01 && y >= eye_rows.0 && y <= eye_rows.1;
        let mouth_row = mouth.as_ref().is_some_and(|m| y >= m.y0 && y < m.y1);
        if !blink_row && !mouth_row {
            // Separable: the two source rows blended first (contiguous, vectorised), then each
            // column's two taps; the same integer sum as `blend`, so the same bytes.
            let (near, far) = (
                &src[tap_y.near..tap_y.near + w * 3],
                &src[tap_y.far..tap_y.far + w * 3],
            );
            let wy = tap_y.weight as u16;
            for ((t, a), b) in mixed.iter_mut().zip(near).zip(far) {
                *t = *a as u16 * (256 - wy) + *b as u16 * wy;
            }
            for (o, tap_x) in row.chunks_exact_mut(3).zip(&columns) {
                let wx = tap_x.weight;
                for (c, o) in o.iter_mut().enumerate() {
                    let sum = mixed[tap_x.near + c] as u32 * (256 - wx)
                        + mixed[tap_x.far + c] as u32 * wx;
                    *o = ((sum + (1 << 15)) >> 16) as u8;
                }
            }
            continue;
        }
        for x in 0..w {
            let o = &mut row[x * 3..x * 3 + 3];
            let in_mouth = mouth.as_ref().is_some_and(|m| m.contains(x, y));
            let in_eyes = blink_row && eye_columns(x);
            if !in_mouth && !in_eyes {
                o.copy_from_slice(&blend(src, columns[x], tap_y));
                continue;
            }
            let mut u = column(x);
            let mut v = v0;
            let mut cover = 0.0;
            let mut ey = 0.0;
            if let Some(m) = mouth.as_ref().filter(|_| in_mouth) {
                let (su, sv, c, e) = m.source(u, v);
                u = su;
                v = sv;
                cover = c;
                ey = e;
            }
            if blink_row {
                for e in &eyes {
                    let ex = (u - e[0]) / ehw;
                    if ex.abs() >= 1.0 {
                        continue;
                    }
                    // The upper lid follows the eye's upper arc and travels to its lower arc,
                    // stretching the skin below the brow with it; nothing moves at the corners.
                    let arc = (1.0 - ex * ex).sqrt();
                    let top = e[1] - 2.4 * ehh;
                    let edge = e[1] - ehh * arc;
                    let travel = 2.0 * ehh * arc * p.blink;
                    if v > top && v < edge + travel {
                        v = top + (v - top) * (edge - top) / (edge + travel - top);
                    }
                }
            }
            let px = blend(src, Tap::at(u, w, 3), Tap::at(v, h, w * 3));
            if cover > 0.0 {
                // What was just above the lip line (upper teeth in a smile, else the upper lip)
                // stays visible at the top of the opening; below it, the mouth's dark inside.
                let depth = smooth((ey + 0.5) * 2.0);
                let cover = cover * depth;
                let core = (1.0 - ey * ey).clamp(0.0, 1.0);
                for c in 0..3 {
                    let inside = cavity_edge[c] * (1.0 - core) + cavity_core[c] * core;
                    o[c] = (px[c] as f32 * (1.0 - cover) + inside * cover) as u8;
                }
            } else {
                o.copy_from_slice(&px);
            }
        }
    }
}

/// Mean absolute difference of two frames over `region` (x, y, w, h), in 0..255.
pub fn region_difference(
    a: &[u8],
    b: &[u8],
    width: usize,
    region: (usize, usize, usize, usize),
) -> f64 {
    let (x0, y0, rw, rh) = region;
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in y0..y0 + rh {
        for x in x0..x0 + rw {
            let i = (y * width + x) * 3;
            for c in 0..3 {
                if let (Some(p), Some(q)) = (a.get(i + c), b.get(i + c)) {
                    sum += p.abs_diff(*q) as u64;
                    n += 1;
                }
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avatar;
    use crate::media::face::Face;

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
}
