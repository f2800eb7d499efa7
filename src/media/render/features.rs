//! The portrait's features the renderer moves, read once from its model when it is prepared (not
//! every frame): each eye's lids.

use crate::media::avatar::{AvatarModel, MeshState};
use crate::media::mesh::points;

/// One eye's upper lid, for blinks: the eye's opening is an upper and a lower arc between its
/// corners; blinking, the lash line slides down the upper arc to the lower one, and the lid's skin
/// above it (a band as tall as the eye's upper half, well below the brow) stretches with it. The
/// brow, the corners and everything under the lid stay still, so nothing smears.
pub(super) struct Lid {
    pub(super) cx: f32,
    pub(super) hw: f32,
    /// The corners' rows, left and right.
    corners: [f32; 2],
    /// How far the upper and lower arcs reach from the corners' line, at the middle.
    up: f32,
    down: f32,
}

impl Lid {
    /// From the mesh's corners and lids; without one, from the detector's eye centres.
    pub(super) fn of(model: &AvatarModel) -> Vec<Self> {
        if let Some(MeshState::Ok { points: mesh }) = &model.mesh {
            let lids: Option<Vec<Self>> = [points::LEFT_EYE, points::RIGHT_EYE]
                .iter()
                .map(|eye| {
                    let [a, b, upper, lower] = eye.map(|i| mesh.get(i).copied());
                    let (a, b, upper, lower) = (a?, b?, upper?, lower?);
                    let (l, r) = if a[0] <= b[0] { (a, b) } else { (b, a) };
                    let mid = (l[1] + r[1]) / 2.0;
                    let lid = Self {
                        cx: (l[0] + r[0]) / 2.0,
                        hw: (r[0] - l[0]) / 2.0,
                        corners: [l[1], r[1]],
                        up: mid - upper[1],
                        down: lower[1] - mid,
                    };
                    (lid.hw > 1.0 && lid.up > 0.5 && lid.down > 0.0).then_some(lid)
                })
                .collect();
            if let Some(lids) = lids {
                return lids;
            }
        }
        let lm = &model.landmarks;
        let ed = lm.eye_distance().max(4.0);
        [lm.left_eye, lm.right_eye]
            .iter()
            .map(|e| Self {
                cx: e[0],
                hw: 0.25 * ed,
                corners: [e[1], e[1]],
                up: 0.09 * ed,
                down: 0.07 * ed,
            })
            .collect()
    }

    /// The highest row a blink moves (the top of the lid's skin band).
    pub(super) fn top(&self) -> f32 {
        self.corners[0].min(self.corners[1]) - 2.2 * self.up - 1.0
    }

    /// The lowest row the lid reaches (the lower arc).
    pub(super) fn bottom(&self) -> f32 {
        self.corners[0].max(self.corners[1]) + self.down + 1.0
    }

    /// Where row `v` of column `u` was, `blink` (0 open .. 1 shut) of the way through a blink.
    #[inline]
    pub(super) fn source(&self, u: f32, v: f32, blink: f32) -> f32 {
        let ex = (u - self.cx) / self.hw;
        if ex.abs() >= 1.0 {
            return v;
        }
        let arc = (1.0 - ex * ex).sqrt();
        let line = self.corners[0] + (self.corners[1] - self.corners[0]) * (ex + 1.0) / 2.0;
        let (upper, lower) = (line - self.up * arc, line + self.down * arc);
        let skin = upper - 1.2 * self.up * arc - 1.0;
        let edge = upper + (lower - upper) * blink.clamp(0.0, 1.0);
        if v > skin && v < edge {
            skin + (v - skin) * (upper - skin) / (edge - skin)
        } else {
            v
        }
    }
}
