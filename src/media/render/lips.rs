//! The lower face as a triangle mesh, for speech. The face mesh's points around the mouth and
//! chin and a fixed ring around them are triangulated once per avatar (spade's constrained
//! Delaunay triangulation, the inner lip contours kept as edges). Each frame moves the points (the
//! jaw and lower lip down, the upper lip up, the lips wider or rounder, or pressed together) and
//! draws every triangle through the affine map back to where it came from: a piecewise-affine
//! warp, so the lips part exactly along their inner edges and everything else bends smoothly.
//!
//! Between the inner lips it draws the inside of the mouth: the portrait's own teeth, the top of
//! its gap under the upper lip and the bottom over the lower lip (drawn upper teeth where its lips
//! are closed), moving with them and never stretched, and between them a cavity darker toward the back.

use super::geometry::{inside, triangulate, Curve};
use super::sample::{blend, fade_out, smooth, Tap};
use crate::media::avatar::{AvatarModel, MeshState};
use crate::media::mesh::points;

/// How a point of the lower face moves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    /// The ring around the warp: never moves.
    Fixed,
    UpperLip,
    LowerLip,
    /// Where the lips meet at the sides.
    Corner,
    /// Cheeks, chin and the skin between: moves with the lip nearest to it, fading away.
    Skin,
}

/// The lower face's mesh at rest, from the avatar's face mesh.
pub(super) struct LipMesh {
    rest: Vec<[f32; 2]>,
    /// Where each point reads the base: its rest position, the inner lip edges a pixel into
    /// the lip.
    source: Vec<[f32; 2]>,
    roles: Vec<Role>,
    triangles: Vec<[u32; 3]>,
    /// The inner contours' vertices, left corner to right corner.
    upper: Vec<usize>,
    lower: Vec<usize>,
    /// The inner contours at rest.
    top: Curve,
    bottom: Curve,
    /// Whether the portrait's lips part anywhere (else there is nothing to close).
    parted: bool,
    /// The mouth: the middle between its inner corners, half that width, and the face mesh's
    /// mouth width (the scale every motion is in).
    cx: f32,
    half: f32,
    mw: f32,
    reach_x: f32,
    lip_band: f32,
    chin_full: f32,
    chin_end: f32,
}

/// One frame's lips: jaw and lip motion in base-image pixels.
struct Motion {
    jaw: f32,
    lift: f32,
    widen: f32,
    /// 0 .. 1: how much of the portrait's own gap the lips close.
    press: f32,
}

/// Where the frame samples the base before any warp: output pixel `x` reads `x * sx + bx` (the
/// breathing and sway, an axis-aligned scale and shift).
#[derive(Clone, Copy)]
pub(super) struct Global {
    pub(super) sx: f32,
    pub(super) bx: f32,
    pub(super) sy: f32,
    pub(super) by: f32,
}

impl Global {
    #[inline]
    fn output(&self, p: [f32; 2]) -> [f32; 2] {
        [(p[0] - self.bx) / self.sx, (p[1] - self.by) / self.sy]
    }
}

/// What one output pixel of the mouth's box shows.
#[derive(Clone, Copy)]
pub(super) enum Pixel {
    /// Outside the mesh: the frame's global motion alone.
    Still,
    /// The base at this point (base-image pixels, the global motion included).
    From(f32, f32),
    /// Inside the mouth: drawn.
    Paint([u8; 3]),
}

/// One frame of the lower face: what each pixel of its box shows.
pub(super) struct LipFrame {
    pub(super) x0: usize,
    pub(super) y0: usize,
    pub(super) x1: usize,
    pub(super) y1: usize,
    pixels: Vec<Pixel>,
}

impl LipFrame {
    #[inline]
    pub(super) fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    #[inline]
    pub(super) fn pixel(&self, x: usize, y: usize) -> Pixel {
        self.pixels[(y - self.y0) * (self.x1 - self.x0) + (x - self.x0)]
    }
}

impl LipMesh {
    /// The mesh of `model`'s lower face; `None` without a face mesh or where it is unusable.
    pub(super) fn of(model: &AvatarModel) -> Option<Self> {
        let Some(MeshState::Ok { points: mesh }) = &model.mesh else {
            return None;
        };
        let at = |i: usize| -> Option<[f32; 2]> {
            let p = mesh.get(i)?;
            (p[0].is_finite() && p[1].is_finite()).then_some([p[0], p[1]])
        };
        let contour = |indices: &[usize]| -> Option<Vec<[f32; 2]>> {
            indices.iter().map(|i| at(*i)).collect()
        };
        let inner_upper = contour(&points::INNER_UPPER_CONTOUR)?;
        let mut inner_lower = contour(&points::INNER_LOWER_CONTOUR)?;
        let outer_upper = contour(&points::OUTER_UPPER_CONTOUR)?;
        let outer_lower = contour(&points::OUTER_LOWER_CONTOUR)?;
        // The lower inner edge never above the upper one (the mesh reads closed lips a pixel
        // either way), and between the corners half a pixel below it: two lips, not one.
        for (l, u) in inner_lower[1..10].iter_mut().zip(&inner_upper[1..10]) {
            l[1] = l[1].max(u[1] + 0.5);
        }
        let mw = model.mouth.width;
        let (left, right) = (inner_upper[0][0], inner_upper[10][0]);
        if !(mw > 4.0 && right - left > 2.0) {
            return None;
        }
        let top = Curve::new(inner_upper.clone());
        let bottom = Curve::new(inner_lower.clone());
        let cx = (left + right) / 2.0;
        let cy = (top.at(cx) + bottom.at(cx)) / 2.0;
        // The jaw moves the chin whole and fades out down the neck, before the collar.
        let chin =
            at(points::CHIN).map_or(cy + 1.1 * mw, |p| p[1].clamp(cy + 0.3 * mw, cy + 1.5 * mw));
        let (reach_x, chin_full, chin_end) = (1.15 * mw, chin, chin + 0.45 * mw);
        let bounds = [cx - reach_x, cy - 0.9 * mw, cx + reach_x, chin_end];

        let mut vertices: Vec<([f32; 2], Role)> = Vec::new();
        let push = |vertices: &mut Vec<([f32; 2], Role)>, p: [f32; 2], role: Role| {
            vertices.push((p, role));
            vertices.len() - 1
        };
        let ends = |k: usize, n: usize, role: Role| {
            if k == 0 || k + 1 == n {
                Role::Corner
            } else {
                role
            }
        };
        let upper: Vec<usize> = inner_upper
            .iter()
            .enumerate()
            .map(|(k, p)| push(&mut vertices, *p, ends(k, 11, Role::UpperLip)))
            .collect();
        // The corners are the upper contour's.
        let lower: Vec<usize> = inner_lower
            .iter()
            .enumerate()
            .map(|(k, p)| match k {
                0 => upper[0],
                10 => upper[10],
                _ => push(&mut vertices, *p, Role::LowerLip),
            })
            .collect();
        for (k, p) in outer_upper.iter().enumerate() {
            push(&mut vertices, *p, ends(k, 11, Role::UpperLip));
        }
        for p in &outer_lower[1..10] {
            push(&mut vertices, *p, Role::LowerLip);
        }
        let polygon = |a: &[[f32; 2]], b: &[[f32; 2]]| -> Vec<[f32; 2]> {
            a.iter().chain(b.iter().rev()).copied().collect()
        };
        let (upper_lip, lower_lip, opening) = (
            polygon(&outer_upper, &inner_upper),
            polygon(&outer_lower, &inner_lower),
            polygon(&inner_upper, &inner_lower),
        );
        let named: std::collections::HashSet<usize> = points::INNER_UPPER_CONTOUR
            .iter()
            .chain(&points::INNER_LOWER_CONTOUR)
            .chain(&points::OUTER_UPPER_CONTOUR)
            .chain(&points::OUTER_LOWER_CONTOUR)
            .copied()
            .collect();
        // A mesh with its lips inside out is not one to move.
        if outer_upper
            .iter()
            .chain(&outer_lower)
            .any(|p| inside(&opening, *p))
        {
            return None;
        }
        let margin = 0.05 * mw;
        for i in (0..mesh.len()).filter(|i| !named.contains(i)) {
            let Some(p) = at(i) else { continue };
            let within = p[0] > bounds[0] + margin
                && p[0] < bounds[2] - margin
                && p[1] > bounds[1] + margin
                && p[1] < bounds[3] - margin;
            // Nothing of the face lies between the lips.
            if !within || inside(&opening, p) {
                continue;
            }
            let role = if inside(&upper_lip, p) {
                Role::UpperLip
            } else if inside(&lower_lip, p) {
                Role::LowerLip
            } else {
                Role::Skin
            };
            push(&mut vertices, p, role);
        }
        // Where the face mesh has no points (the neck, beside the face), a grid of skin points
        // so the motion fades as smoothly there as over the face.
        let step = 0.2 * mw;
        let (gx, gy) = (
            ((bounds[2] - bounds[0] - 2.0 * margin) / step) as usize,
            ((bounds[3] - bounds[1] - 2.0 * margin) / step) as usize,
        );
        for j in 0..=gy {
            for i in 0..=gx {
                let p = [
                    bounds[0] + margin + i as f32 * step,
                    bounds[1] + margin + j as f32 * step,
                ];
                let near = vertices.iter().any(|(q, _)| {
                    (q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2) < (0.5 * step).powi(2)
                });
                let lips = [&opening, &upper_lip, &lower_lip];
                if !near && !lips.iter().any(|poly| inside(poly, p)) {
                    push(&mut vertices, p, Role::Skin);
                }
            }
        }
        // The fixed ring: the box's edges, a point every third of a mouth width or so.
        let (bw, bh) = (bounds[2] - bounds[0], bounds[3] - bounds[1]);
        let (nx, ny) = (
            (bw / (0.3 * mw)).ceil().max(2.0) as usize,
            (bh / (0.3 * mw)).ceil().max(2.0) as usize,
        );
        for k in 0..nx {
            let x = bounds[0] + bw * k as f32 / nx as f32;
            push(&mut vertices, [x, bounds[1]], Role::Fixed);
            push(
                &mut vertices,
                [bounds[2] - (x - bounds[0]), bounds[3]],
                Role::Fixed,
            );
        }
        for k in 0..ny {
            let y = bounds[1] + bh * k as f32 / ny as f32;
            push(&mut vertices, [bounds[2], y], Role::Fixed);
            push(
                &mut vertices,
                [bounds[0], bounds[3] - (y - bounds[1])],
                Role::Fixed,
            );
        }

        let (rest, roles): (Vec<[f32; 2]>, Vec<Role>) = vertices.into_iter().unzip();
        let triangles = triangulate(&rest, [&upper, &lower])?;
        // The lips' triangles read their inner edge a pixel inside the lip, so lips pressed
        // together meet lip to lip, not over the gap's last row.
        let mut source = rest.clone();
        for (contour, out) in [(&upper, -1.0), (&lower, 1.0)] {
            for i in &contour[1..contour.len() - 1] {
                source[*i][1] += out;
            }
        }
        Some(Self {
            rest,
            source,
            roles,
            triangles,
            upper,
            lower,
            parted: inner_upper
                .iter()
                .zip(&inner_lower)
                .any(|(u, l)| l[1] - u[1] > 0.5),
            top,
            bottom,
            cx,
            half: (right - left) / 2.0,
            mw,
            reach_x,
            lip_band: 0.35 * mw,
            chin_full,
            chin_end,
        })
    }

    /// The rest line between the lips at column `x` (level beyond the corners).
    #[inline]
    fn line(&self, x: f32) -> f32 {
        (self.top.at(x) + self.bottom.at(x)) / 2.0
    }

    /// The portrait's own gap between the lips at column `x`.
    #[inline]
    fn gap(&self, x: f32) -> f32 {
        if x <= self.cx - self.half || x >= self.cx + self.half {
            return 0.0;
        }
        (self.bottom.at(x) - self.top.at(x)).max(0.0)
    }

    /// How far vertex `i` moves in this frame.
    fn displacement(&self, i: usize, m: &Motion) -> [f32; 2] {
        let role = self.roles[i];
        if role == Role::Fixed {
            return [0.0, 0.0];
        }
        let [x, y] = self.rest[i];
        let line = self.line(x);
        let dx = x - self.cx;
        let across = smooth(1.0 - (dx / self.reach_x).abs());
        let down = fade_out(y, self.chin_full, self.chin_end);
        if m.press > 0.0 {
            // Closing what the portrait leaves open: the upper lip comes down by 30 % of the gap
            // at its column, the lower lip and the jaw rise by 70 %.
            let gap = self.gap(x);
            let (down_by, up_by) = (0.3 * m.press * gap, 0.7 * m.press * gap);
            let dy = match role {
                Role::UpperLip => down_by,
                Role::LowerLip => -up_by,
                Role::Skin if y < line => {
                    let band = 2.0 * self.lip_band;
                    down_by * smooth((y - (self.top.at(x) - band)) / band)
                }
                Role::Skin => -up_by * down,
                Role::Corner | Role::Fixed => 0.0,
            };
            return [0.0, dy];
        }
        let jaw = m.jaw * across * down;
        let lift = -m.lift * across;
        // Skin (and the corners) bend between the lifted upper lip and the dropped jaw.
        let up = (-((line - y) / self.lip_band).powi(2)).exp();
        let blend = smooth((y - line + self.lip_band) / (2.0 * self.lip_band));
        let joined = lift * up * (1.0 - blend) + jaw * blend;
        // The lips part as an ellipse: fully in the middle, not at all at the corners.
        let corner = (lift + jaw) / 2.0;
        let k = (1.0 - (dx / self.half).powi(2)).max(0.0).sqrt();
        let dy = match role {
            Role::UpperLip => corner + (lift - corner) * k,
            Role::LowerLip => corner + (jaw - corner) * k,
            _ => joined,
        };
        let near = across * smooth(1.0 - (y - line).abs() / (1.5 * self.lip_band));
        [dx * (m.widen - 1.0) * near, dy]
    }

    /// This frame's lower face, or `None` while the lips are at rest.
    pub(super) fn frame(
        &self,
        open: f32,
        shape: f32,
        g: &Global,
        src: &[u8],
        size: (usize, usize),
    ) -> Option<LipFrame> {
        let (w, h) = size;
        let motion = if open >= 0.01 {
            Motion {
                jaw: open * 0.5 * self.mw,
                lift: open * 0.22 * self.mw,
                widen: 1.0 + open * (0.10 * shape.max(0.0) - 0.12 * (-shape).max(0.0)),
                press: 0.0,
            }
        } else if open <= -0.01 && self.parted {
            Motion {
                jaw: 0.0,
                lift: 0.0,
                widen: 1.0,
                // Firmly: the lips meet at 77 % of the driver's press and stay together.
                press: (-1.3 * open).min(1.0),
            }
        } else {
            return None;
        };
        let moved: Vec<[f32; 2]> = (0..self.rest.len())
            .map(|i| {
                let [dx, dy] = self.displacement(i, &motion);
                g.output([self.rest[i][0] + dx, self.rest[i][1] + dy])
            })
            .collect();
        // The box: the fixed ring, in output pixels.
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for q in &moved {
            for a in 0..2 {
                lo[a] = lo[a].min(q[a]);
                hi[a] = hi[a].max(q[a]);
            }
        }
        let x0 = lo[0].floor().max(0.0) as usize;
        let y0 = lo[1].floor().max(0.0) as usize;
        let x1 = (hi[0].ceil().max(0.0) as usize + 1).min(w);
        let y1 = (hi[1].ceil().max(0.0) as usize + 1).min(h);
        if x0 >= x1 || y0 >= y1 {
            return None;
        }
        let bw = x1 - x0;
        let mut pixels = vec![Pixel::Still; bw * (y1 - y0)];
        for t in &self.triangles {
            let [a, b, c] = t.map(|i| moved[i as usize]);
            let [sa, sb, sc] = t.map(|i| self.source[i as usize]);
            let det = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
            if det.abs() < 1e-6 {
                continue;
            }
            let tx0 = a[0].min(b[0]).min(c[0]).ceil().max(x0 as f32) as usize;
            let tx1 = (a[0].max(b[0]).max(c[0]).floor() + 1.0).min(x1 as f32);
            let ty0 = a[1].min(b[1]).min(c[1]).ceil().max(y0 as f32) as usize;
            let ty1 = (a[1].max(b[1]).max(c[1]).floor() + 1.0).min(y1 as f32);
            let eps = -1e-4;
            for y in ty0..ty1.max(0.0) as usize {
                for x in tx0..tx1.max(0.0) as usize {
                    let (px, py) = (x as f32 - a[0], y as f32 - a[1]);
                    let l1 = (px * (c[1] - a[1]) - py * (c[0] - a[0])) / det;
                    let l2 = (py * (b[0] - a[0]) - px * (b[1] - a[1])) / det;
                    let l0 = 1.0 - l1 - l2;
                    if l0 < eps || l1 < eps || l2 < eps {
                        continue;
                    }
                    pixels[(y - y0) * bw + (x - x0)] = Pixel::From(
                        l0 * sa[0] + l1 * sb[0] + l2 * sc[0],
                        l0 * sa[1] + l1 * sb[1] + l2 * sc[1],
                    );
                }
            }
        }
        let mut frame = LipFrame {
            x0,
            y0,
            x1,
            y1,
            pixels,
        };
        self.paint_inside(&mut frame, &moved, g, src, size);
        Some(frame)
    }

    /// Draws what shows between the moved inner lips.
    fn paint_inside(
        &self,
        frame: &mut LipFrame,
        moved: &[[f32; 2]],
        g: &Global,
        src: &[u8],
        (w, h): (usize, usize),
    ) {
        let top = Curve::new(self.upper.iter().map(|i| moved[*i]).collect());
        let bottom = Curve::new(self.lower.iter().map(|i| moved[*i]).collect());
        let (left, right) = (top.first()[0], top.last()[0]);
        let (mid, half) = ((left + right) / 2.0, ((right - left) / 2.0).max(1.0));
        // Back to the rest column: along the upper contour, segment by segment.
        let rest_x = |x: f32| -> f32 {
            let k = self
                .upper
                .windows(2)
                .position(|s| x <= moved[s[1]][0])
                .unwrap_or(self.upper.len() - 2);
            let (a, b) = (self.upper[k], self.upper[k + 1]);
            let t = ((x - moved[a][0]) / (moved[b][0] - moved[a][0]).max(1e-3)).clamp(0.0, 1.0);
            self.rest[a][0] + (self.rest[b][0] - self.rest[a][0]) * t
        };
        let (edge, deep) = ([104.0, 46.0, 50.0], [30.0, 9.0, 12.0]);
        let tongue = [132.0, 56.0, 62.0];
        // Drawn teeth are lit like the skin of the chin.
        let skin = blend(
            src,
            Tap::at(self.cx, w, 3),
            Tap::at(self.bottom.at(self.cx) + 0.35 * self.mw, h, w * 3),
        );
        let luma = 0.3 * skin[0] as f32 + 0.59 * skin[1] as f32 + 0.11 * skin[2] as f32;
        let light = (luma / 170.0).clamp(0.55, 1.1);
        let xs = (left.ceil().max(frame.x0 as f32) as usize)
            ..(right.floor() + 1.0).min(frame.x1 as f32) as usize;
        for x in xs {
            let (t, b) = (top.at(x as f32), bottom.at(x as f32));
            if b - t < 0.5 {
                continue;
            }
            let u = rest_x(x as f32);
            let (t0, b0) = (self.top.at(u), self.bottom.at(u));
            // The upper teeth show more of a parted mouth than the lower ones.
            let gap = (b0 - t0).max(0.0);
            let (upper_zone, lower_zone) = (0.75 * gap, 0.25 * gap);
            let ex = (x as f32 - mid) / half;
            let ys = (t.ceil().max(frame.y0 as f32) as usize)
                ..(b.floor() + 1.0).min(frame.y1 as f32) as usize;
            for y in ys {
                let (dt, db) = (y as f32 - t, b - y as f32);
                if dt < 0.0 || db < 0.0 {
                    continue;
                }
                // The cavity: darker toward the back, the tongue low in a wide-open mouth.
                let ey = dt / (dt + db).max(1e-3);
                let core = smooth(1.0 - (ex * ex + (2.0 * ey - 1.0).powi(2)));
                let low = smooth((ey - 0.6) / 0.3)
                    * smooth(1.0 - ex.abs())
                    * smooth((b - t) / (0.3 * self.mw));
                let mut px = [0.0f32; 3];
                for c in 0..3 {
                    let cavity = edge[c] * (1.0 - core) + deep[c] * core;
                    px[c] = cavity * (1.0 - 0.6 * low) + tongue[c] * 0.6 * low;
                }
                // A portrait with its lips closed shows no teeth: drawn ones under the upper lip
                // (a tenth of the mouth's width tall in the middle, less toward the corners, the
                // same height however wide the mouth opens).
                let drawn = smooth((0.08 * self.mw - gap) / (0.04 * self.mw));
                if drawn > 0.0 {
                    let tall = 0.1 * self.mw * (1.0 - ex * ex).max(0.0).sqrt();
                    let cover = drawn * (1.0 - smooth((dt - tall + 0.75) / 1.5));
                    if cover > 0.0 {
                        // A faint line between teeth, the two front ones meeting in the middle.
                        let along = (x as f32 - mid) / (0.09 * self.mw);
                        let seam = 1.0 - 0.3 * smooth(1.0 - (along - along.round()).abs() / 0.12);
                        let shade = light
                            * seam
                            * (1.0 - 0.4 * ex * ex)
                            * (0.9 + 0.1 * smooth(dt / tall.max(1.0)));
                        for (c, white) in [228.0, 222.0, 206.0].iter().enumerate() {
                            px[c] = px[c] * (1.0 - cover) + white * shade * cover;
                        }
                    }
                }
                // The portrait's own teeth: the top of its gap under the upper lip, the bottom
                // over the lower lip, each at its own scale.
                let fade =
                    |d: f32, zone: f32| 1.0 - smooth((d - 0.7 * zone) / (0.3 * zone).max(0.75));
                let (wt, wb) = (fade(dt, upper_zone), fade(db, lower_zone));
                let (weight, sv) = if wt >= wb {
                    (wt, t0 + dt.min(upper_zone) * g.sy)
                } else {
                    (wb, b0 - db.min(lower_zone) * g.sy)
                };
                if weight > 0.0 {
                    let s = blend(src, Tap::at(u, w, 3), Tap::at(sv, h, w * 3));
                    for c in 0..3 {
                        px[c] = px[c] * (1.0 - weight) + s[c] as f32 * weight;
                    }
                }
                let i = (y - frame.y0) * (frame.x1 - frame.x0) + (x - frame.x0);
                frame.pixels[i] = Pixel::Paint(px.map(|v| v.clamp(0.0, 255.0) as u8));
            }
        }
    }
}
