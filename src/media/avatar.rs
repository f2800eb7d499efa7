//! The avatar asset ("the model" of an agent): the portrait cropped around its one face to the
//! agent's aspect ratio, with the face box, the five landmarks and the mouth region in the crop's
//! coordinates. It is everything the renderers need, stored as a PNG (the crop) and a JSON
//! description; `prepare` turns it into a session's base frame at the session's aspect ratio.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::face::Face;

/// Version of the JSON layout below: 2 added `mesh` (a model of version 1 gets it when a session
/// first prepares it).
pub const MODEL_VERSION: u32 = 2;
/// The face takes about this share of the frame's height.
const FACE_SHARE: f32 = 0.36;
/// The face's centre sits this far down the frame.
const FACE_CENTER_Y: f32 = 0.45;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    /// A point of the outer image in this rect's coordinates, scaled by `sx`, `sy`.
    fn map(&self, p: [f32; 2], sx: f32, sy: f32) -> [f32; 2] {
        [(p[0] - self.x) * sx, (p[1] - self.y) * sy]
    }

    /// A rect of the outer image in this rect's coordinates, scaled by `sx`, `sy`.
    fn map_rect(&self, r: &Rect, sx: f32, sy: f32) -> Rect {
        Rect {
            x: (r.x - self.x) * sx,
            y: (r.y - self.y) * sy,
            w: r.w * sx,
            h: r.h * sy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Landmarks {
    pub left_eye: [f32; 2],
    pub right_eye: [f32; 2],
    pub nose: [f32; 2],
    pub mouth_left: [f32; 2],
    pub mouth_right: [f32; 2],
}

impl Landmarks {
    fn from_points(p: [[f32; 2]; 5]) -> Self {
        Self {
            left_eye: p[0],
            right_eye: p[1],
            nose: p[2],
            mouth_left: p[3],
            mouth_right: p[4],
        }
    }

    fn points(&self) -> [[f32; 2]; 5] {
        [
            self.left_eye,
            self.right_eye,
            self.nose,
            self.mouth_left,
            self.mouth_right,
        ]
    }

    pub fn eye_distance(&self) -> f32 {
        dist(self.left_eye, self.right_eye)
    }

    pub fn mouth_center(&self) -> [f32; 2] {
        mid(self.mouth_left, self.mouth_right)
    }

    pub fn mouth_width(&self) -> f32 {
        dist(self.mouth_left, self.mouth_right)
    }
}

/// The mouth: where the renderers move lips and jaw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mouth {
    pub center: [f32; 2],
    pub width: f32,
    /// The region a renderer may change while speaking (lips, jaw, chin).
    pub region: Rect,
}

/// The mesh of an avatar, as its model (`model_url`) carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MeshState {
    /// 468 points `[x, y, z]` in the model's pixels (z: depth, in the same scale, nearer < 0).
    Ok { points: Vec<[f32; 3]> },
    /// The mesh model saw no face where the detector found one: the renderer uses the five
    /// landmarks.
    Unavailable { reason: String },
}

impl MeshState {
    pub fn points(&self) -> Option<&[[f32; 3]]> {
        match self {
            MeshState::Ok { points } => Some(points),
            MeshState::Unavailable { .. } => None,
        }
    }

    /// The same mesh with every point passed through `map` (x, y, and z scaled like x).
    pub fn mapped(&self, map: impl Fn([f32; 2]) -> [f32; 2], z_scale: f32) -> Self {
        match self {
            MeshState::Ok { points } => MeshState::Ok {
                points: points
                    .iter()
                    .map(|p| {
                        let [x, y] = map([p[0], p[1]]);
                        [x, y, p[2] * z_scale]
                    })
                    .collect(),
            },
            other => other.clone(),
        }
    }
}

/// The JSON half of the avatar asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvatarModel {
    pub version: u32,
    pub aspect_ratio: String,
    pub width: u32,
    pub height: u32,
    /// The crop's place in the source image.
    pub source_crop: Rect,
    pub face: Rect,
    pub face_score: f32,
    pub landmarks: Landmarks,
    pub mouth: Mouth,
    /// mediapipe's 468-point mesh of the face, or why there is none; absent in models made before
    /// it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshState>,
}

/// Width over height of `"W:H"`; `None` if it is not two positive numbers.
pub fn aspect(ratio: &str) -> Option<f32> {
    let (w, h) = ratio.split_once(':')?;
    let (w, h): (f32, f32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0.0 && h > 0.0 && w.is_finite() && h.is_finite()).then(|| w / h)
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

fn mid(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
}

/// The frame of aspect `ratio` (w/h) around `face`, as large as the face calls for and no larger
/// than `bounds` allow, the face centred across and a little above the middle.
pub fn fit(ratio: f32, face: &Rect, bounds: (f32, f32)) -> Rect {
    let (bw, bh) = bounds;
    let mut h = face.h / FACE_SHARE;
    let mut w = h * ratio;
    let shrink = (bw / w).min(bh / h).min(1.0);
    w *= shrink;
    h *= shrink;
    let cx = face.x + face.w / 2.0;
    let cy = face.y + face.h / 2.0;
    let x = (cx - w / 2.0).clamp(0.0, (bw - w).max(0.0));
    let y = (cy - h * FACE_CENTER_Y).clamp(0.0, (bh - h).max(0.0));
    Rect { x, y, w, h }
}

fn mouth_of(landmarks: &Landmarks, face: &Rect) -> Mouth {
    let center = landmarks.mouth_center();
    // A closed mouth's corners can be close together: never less than a quarter of the face.
    let width = landmarks.mouth_width().max(face.w * 0.25);
    let chin = face.y + face.h;
    let region = Rect {
        x: center[0] - width * 1.1,
        y: center[1] - width * 0.6,
        w: width * 2.2,
        h: (chin - center[1]).max(width * 0.6) + width * 0.9,
    };
    Mouth {
        center,
        width,
        region,
    }
}

/// Crops `image` around `face` to `ratio_text`, scaled so the longer side is at most `max_side`.
/// The model's `mesh` is left to the caller (`FaceMesher::mesh` on the crop, at `model.face`).
pub fn build(
    image: &RgbImage,
    face: &Face,
    ratio_text: &str,
    max_side: u32,
) -> (AvatarModel, RgbImage) {
    let ratio = aspect(ratio_text).unwrap_or(1.0);
    let face_rect = Rect {
        x: face.x,
        y: face.y,
        w: face.w,
        h: face.h,
    };
    let crop = fit(
        ratio,
        &face_rect,
        (image.width() as f32, image.height() as f32),
    );
    let (out, sx, sy) = resample(image, &crop, max_side);
    let landmarks = Landmarks::from_points(face.landmarks.map(|p| crop.map(p, sx, sy)));
    let face_in = crop.map_rect(&face_rect, sx, sy);
    let model = AvatarModel {
        version: MODEL_VERSION,
        aspect_ratio: ratio_text.to_string(),
        width: out.width(),
        height: out.height(),
        source_crop: crop,
        face: face_in,
        face_score: face.score,
        mouth: mouth_of(&landmarks, &face_in),
        landmarks,
        mesh: None,
    };
    (model, out)
}

/// `crop` of `image`, scaled so its longer side is `max_side` (down or up); the scale factors.
fn resample(image: &RgbImage, crop: &Rect, max_side: u32) -> (RgbImage, f32, f32) {
    let x = crop.x.floor().max(0.0) as u32;
    let y = crop.y.floor().max(0.0) as u32;
    let w = (crop.w.round() as u32).clamp(1, image.width() - x.min(image.width() - 1));
    let h = (crop.h.round() as u32).clamp(1, image.height() - y.min(image.height() - 1));
    let view = image::imageops::crop_imm(image, x, y, w, h).to_image();
    let s = max_side as f32 / w.max(h) as f32;
    let (ow, oh) = (
        ((w as f32 * s).round() as u32).max(1),
        ((h as f32 * s).round() as u32).max(1),
    );
    let out = image::imageops::resize(&view, ow, oh, image::imageops::FilterType::CatmullRom);
    (out, ow as f32 / w as f32, oh as f32 / h as f32)
}

/// A session's base frame: the avatar crop cut to the session's aspect ratio around the face,
/// scaled so the longer side is `max_side`, with the model's geometry in its coordinates.
pub fn prepare(
    model: &AvatarModel,
    crop: &RgbImage,
    ratio_text: &str,
    max_side: u32,
) -> (AvatarModel, RgbImage) {
    let ratio = aspect(ratio_text).unwrap_or(model.width as f32 / model.height as f32);
    let frame = fit(
        ratio,
        &model.face,
        (crop.width() as f32, crop.height() as f32),
    );
    let (out, sx, sy) = resample(crop, &frame, max_side);
    let landmarks = Landmarks::from_points(model.landmarks.points().map(|p| frame.map(p, sx, sy)));
    let face = frame.map_rect(&model.face, sx, sy);
    let prepared = AvatarModel {
        version: model.version,
        aspect_ratio: ratio_text.to_string(),
        width: out.width(),
        height: out.height(),
        source_crop: model.source_crop,
        face,
        face_score: model.face_score,
        mouth: mouth_of(&landmarks, &face),
        landmarks,
        mesh: model
            .mesh
            .as_ref()
            .map(|m| m.mapped(|p| frame.map(p, sx, sy), sx)),
    };
    (prepared, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_parse() {
        assert_eq!(aspect("16:9"), Some(16.0 / 9.0));
        assert_eq!(aspect("1:1"), Some(1.0));
        assert_eq!(aspect("0:1"), None);
        assert_eq!(aspect("wide"), None);
    }

    #[test]
    fn the_frame_holds_the_face_at_the_ratio_within_bounds() {
        let face = Rect {
            x: 200.0,
            y: 100.0,
            w: 80.0,
            h: 100.0,
        };
        for ratio in [16.0 / 9.0, 4.0 / 3.0, 1.0, 3.0 / 4.0] {
            let r = fit(ratio, &face, (512.0, 512.0));
            assert!((r.w / r.h - ratio).abs() < 1e-3, "{r:?}");
            assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.w <= 512.01 && r.y + r.h <= 512.01);
            assert!(r.x <= face.x && r.x + r.w >= face.x + face.w, "{r:?}");
            assert!(r.y <= face.y && r.y + r.h >= face.y + face.h, "{r:?}");
        }
    }

    #[test]
    fn build_maps_landmarks_into_the_crop() {
        let image = RgbImage::from_pixel(800, 600, image::Rgb([90, 80, 70]));
        let face = Face {
            x: 300.0,
            y: 200.0,
            w: 100.0,
            h: 120.0,
            score: 0.9,
            landmarks: [
                [325.0, 250.0],
                [375.0, 250.0],
                [350.0, 275.0],
                [330.0, 295.0],
                [370.0, 295.0],
            ],
        };
        let (model, crop) = build(&image, &face, "1:1", 512);
        assert_eq!((crop.width(), crop.height()), (512, 512));
        assert_eq!((model.width, model.height), (512, 512));
        let s = 512.0 / model.source_crop.w;
        let expect = (350.0 - model.source_crop.x) * s;
        assert!((model.landmarks.nose[0] - expect).abs() < 1.5, "{model:?}");
        assert!(model.mouth.region.w > model.mouth.width);
        let (prepared, base) = prepare(&model, &crop, "3:4", 512);
        assert_eq!(base.height(), 512);
        assert_eq!(base.width(), 384);
        assert!(prepared.landmarks.mouth_left[0] < prepared.landmarks.mouth_right[0]);
        assert_eq!(
            prepared.mesh, None,
            "a model without a mesh prepares without one"
        );

        // A mesh travels with the model: a point on the nose stays on the prepared nose.
        let mut meshed = model.clone();
        let nose = model.landmarks.nose;
        meshed.mesh = Some(MeshState::Ok {
            points: vec![[nose[0], nose[1], -10.0]; 468],
        });
        let (prepared, _) = prepare(&meshed, &crop, "3:4", 512);
        let point = prepared.mesh.as_ref().and_then(|m| m.points()).unwrap()[0];
        let at = prepared.landmarks.nose;
        assert!((point[0] - at[0]).abs() < 0.01 && (point[1] - at[1]).abs() < 0.01);
        assert!(point[2] < 0.0);
        // And through JSON, as `model_url` serves it and a session reads it back.
        let json = serde_json::to_string(&meshed).unwrap();
        let back: AvatarModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, meshed);
        let old = json.replace(
            &format!(",\"mesh\":{}", serde_json::to_string(&meshed.mesh).unwrap()),
            "",
        );
        let old: AvatarModel = serde_json::from_str(&old).unwrap();
        assert_eq!(old.mesh, None, "a model made before the mesh still reads");
    }
}
