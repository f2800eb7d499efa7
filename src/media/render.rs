//! The built-in renderer: one pass over the frame that moves the whole portrait a little (breathing
//! and a slow sway), closes the eyelids now and then (the lash line sliding down over the eye as
//! the mesh draws it, the brow still), and, while the voice speaks, moves the mouth.
//!
//! With the avatar's face mesh the lower face is a triangle mesh (`lips`): the jaw and lower lip
//! drop and the upper lip lifts, parting exactly along the inner lip edges, the lips widen or
//! round with the viseme (`visemes`: spread, rounded), and between them the inside of the mouth is
//! drawn (the portrait's own teeth, unstretched, and a cavity darker toward the back). Below rest
//! (`open` < 0, a /p b m/) the lips close what the portrait leaves open. Without a mesh (a
//! profile, an avatar whose mesh failed) the mouth opens by a smooth warp around the detector's
//! landmarks, and rest is as closed as the lips get.
//!
//! Pixels are sampled backwards (each output pixel reads the source where it came from) with
//! bilinear filtering, over `ndarray` images in HWC `u8` layout.

use ndarray::Array3;

use super::avatar::AvatarModel;

mod features;
mod geometry;
mod lips;
mod sample;

use features::Lid;
use lips::{Global, LipFrame, LipMesh, Pixel};
use sample::{blend, fade_out, smooth, Tap};

/// A session's base frame and its geometry.
pub struct Prepared {
    /// Read-only once prepared: the lids and the lips' mesh are derived from it.
    model: AvatarModel,
    /// `[height, width, 3]` RGB.
    pub base: Array3<u8>,
    /// Each eye's lids, for blinks.
    lids: Vec<Lid>,
    /// The lower face as a triangle mesh (`None` without a usable face mesh).
    lips: Option<LipMesh>,
}

impl Prepared {
    pub fn new(model: AvatarModel, image: image::RgbImage) -> Self {
        let (w, h) = image.dimensions();
        // unwrap: an RgbImage's buffer is exactly h * w * 3 bytes.
        let base = Array3::from_shape_vec((h as usize, w as usize, 3), image.into_raw()).unwrap();
        Self {
            lids: Lid::of(&model),
            lips: LipMesh::of(&model),
            model,
            base,
        }
    }

    pub fn model(&self) -> &AvatarModel {
        &self.model
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
    /// -1 lips pressed together .. 0 at rest (as in the portrait) .. 1 wide open.
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

/// The mouth's motion for one frame without a face mesh: a smooth warp around the detector's
/// landmarks, in base-image pixels.
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
    fn new(prepared: &Prepared, p: &FrameParams, w: usize, h: usize) -> Option<Self> {
        if p.open < 0.01 {
            return None;
        }
        let m = &prepared.model.mouth;
        let mw = m.width;
        let (cx, cy) = (m.center[0], m.center[1]);
        let widen = 1.0 + p.open * (0.10 * p.shape.max(0.0) - 0.12 * (-p.shape).max(0.0));
        let (jaw, lift) = (p.open * 0.42 * mw, p.open * 0.10 * mw);
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
        let down = fade_out(v, self.chin_full, self.chin_end);
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

/// Renders one frame of `prepared` from `src` (the base, or the base with a lip-sync model's
/// mouth pasted in) into `out` (`w * h * 3` bytes).
///
/// Most of the frame only breathes and sways: an axis-aligned scale and shift, so each column's
/// and each row's sample point is computed once per frame and those pixels are a fixed-point
/// blend of four. Only the mouth's box (while it is open) and the eyes' (while they blink) take
/// the full per-pixel warp; both paths sample the same way, so no seam shows where they meet.
pub fn render_into(prepared: &Prepared, src: &[u8], p: &FrameParams, out: &mut [u8]) {
    let (h, w) = (prepared.height(), prepared.width());
    // Breathing and sway: a slight scale about the bottom centre and a slow drift.
    let tau = std::f32::consts::TAU;
    let breath = (tau * p.t / 4.5).sin();
    let scale = 1.0 + 0.004 * breath;
    let (dx, dy) = (0.8 * (tau * p.t / 7.3).sin(), 1.0 * breath);
    let (ox, oy) = (w as f32 / 2.0, h as f32);
    let global = Global {
        sx: 1.0 / scale,
        bx: ox - ox / scale - dx,
        sy: 1.0 / scale,
        by: oy - oy / scale - dy,
    };
    let column = |x: usize| x as f32 * global.sx + global.bx;
    let row_at = |y: usize| y as f32 * global.sy + global.by;
    let mouth = match &prepared.lips {
        Some(lips) => lips
            .frame(p.open, p.shape, &global, src, (w, h))
            .map(Mouth::Mesh),
        None => MouthWarp::new(prepared, p, w, h).map(Mouth::Landmarks),
    };
    let columns: Vec<Tap> = (0..w).map(|x| Tap::at(column(x), w, 3)).collect();
    // The eyes: the upper lid slides down over each.
    let lids = &prepared.lids;
    let eye_rows = (
        lids.iter()
            .map(|l| l.top())
            .fold(f32::MAX, f32::min)
            .max(0.0) as usize,
        lids.iter().map(|l| l.bottom()).fold(0.0, f32::max).max(0.0) as usize + 1,
    );
    // Columns the lids can reach, with a margin for the sway.
    let eye_columns = |x: usize| {
        lids.iter()
            .any(|l| (x as f32 - l.cx).abs() < l.hw + 3.0 + dx.abs())
    };
    let (cavity_edge, cavity_core) = ([96.0, 42.0, 46.0], [34.0, 11.0, 15.0]);
    let mut mixed = vec![0u16; w * 3];
    for y in 0..h {
        let v0 = row_at(y);
        let tap_y = Tap::at(v0, h, w * 3);
        let row = &mut out[y * w * 3..(y + 1) * w * 3];
        let blink_row = p.blink > 0.01 && y >= eye_rows.0 && y <= eye_rows.1;
        let mouth_row = mouth.as_ref().is_some_and(|m| m.rows().contains(&y));
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
            let in_mouth = mouth.as_ref().filter(|m| m.contains(x, y));
            let in_eyes = blink_row && eye_columns(x);
            if in_mouth.is_none() && !in_eyes {
                o.copy_from_slice(&blend(src, columns[x], tap_y));
                continue;
            }
            let mut u = column(x);
            let mut v = v0;
            let mut cover = 0.0;
            let mut ey = 0.0;
            match in_mouth {
                Some(Mouth::Landmarks(m)) => {
                    let (su, sv, c, e) = m.source(u, v);
                    u = su;
                    v = sv;
                    cover = c;
                    ey = e;
                }
                Some(Mouth::Mesh(m)) => match m.pixel(x, y) {
                    Pixel::Paint(px) => {
                        o.copy_from_slice(&px);
                        continue;
                    }
                    Pixel::From(su, sv) => {
                        u = su;
                        v = sv;
                    }
                    Pixel::Still => {}
                },
                None => {}
            }
            if blink_row {
                for lid in lids {
                    v = lid.source(u, v, p.blink);
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

/// This frame's mouth: through the lower face's mesh, or around the landmarks without one.
enum Mouth {
    Mesh(LipFrame),
    Landmarks(MouthWarp),
}

impl Mouth {
    fn rows(&self) -> std::ops::Range<usize> {
        match self {
            Mouth::Mesh(m) => m.y0..m.y1,
            Mouth::Landmarks(m) => m.y0..m.y1,
        }
    }

    #[inline]
    fn contains(&self, x: usize, y: usize) -> bool {
        match self {
            Mouth::Mesh(m) => m.contains(x, y),
            Mouth::Landmarks(m) => m.contains(x, y),
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
mod tests;
