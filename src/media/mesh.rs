//! The dense face mesh: mediapipe's face landmark model (468 points with the whole inner and outer
//! lip contours, the eyelids and the jaw line), which `make setup` converts from the pinned
//! mediapipe wheel to ONNX and checks against the TFLite runtime's own output. It runs through
//! onnxruntime like CenterFace, once per avatar: at generation, and for avatars made before it
//! existed when a session first prepares them.
//!
//! The model sees a square around the detected face (mediapipe's own region: the detection box
//! grown by half, upright), scaled to 192×192 RGB in 0..1, and gives 468 (x, y, z) in that
//! square's pixels and a face-presence logit. A portrait it does not see a face in (a profile, a
//! covered mouth) gets [`MeshState::Unavailable`], and the renderer keeps to the five landmarks.

use std::path::Path;
use std::sync::Mutex;

use image::RgbImage;
use ndarray::Array4;
use ort::session::Session;
use ort::value::TensorRef;

use super::avatar::{MeshState, Rect};
use super::onnx::{Device, Onnx};
use super::MediaError;

/// Points in the mesh.
pub const MESH_POINTS: usize = 468;
/// The side of the model's input square.
const SIDE: usize = 192;
/// mediapipe's region of interest: the detection box grown by this factor, as a square.
const ROI_SCALE: f32 = 1.5;
/// Face-presence probability under which the mesh is not trusted (mediapipe's own threshold).
const PRESENCE: f32 = 0.5;

/// Indices of the points the renderers use (mediapipe's canonical face mesh).
pub mod points {
    /// The middle of the upper lip's inner edge.
    pub const INNER_UPPER_LIP: usize = 13;
    /// The middle of the lower lip's inner edge.
    pub const INNER_LOWER_LIP: usize = 14;
    /// The middle of the upper lip's outer edge.
    pub const OUTER_UPPER_LIP: usize = 0;
    /// The middle of the lower lip's outer edge.
    pub const OUTER_LOWER_LIP: usize = 17;
    /// The mouth's corners, on the image's left and right.
    pub const MOUTH_LEFT: usize = 61;
    pub const MOUTH_RIGHT: usize = 291;
    /// The chin's lowest point.
    pub const CHIN: usize = 152;
    /// The upper lip's inner edge, from the image's left corner to its right (mediapipe's
    /// `lipsUpperInner`).
    pub const INNER_UPPER_CONTOUR: [usize; 11] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
    /// The lower lip's inner edge, the same way (`lipsLowerInner`).
    pub const INNER_LOWER_CONTOUR: [usize; 11] = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308];
    /// The lips' outer edges, the same way (`lipsUpperOuter`, and `lipsLowerOuter` with its left
    /// corner).
    pub const OUTER_UPPER_CONTOUR: [usize; 11] = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291];
    pub const OUTER_LOWER_CONTOUR: [usize; 11] =
        [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291];
    /// The eye on the image's left: outer and inner corner, upper and lower lid.
    pub const LEFT_EYE: [usize; 4] = [33, 133, 159, 145];
    /// The eye on the image's right: inner and outer corner, upper and lower lid.
    pub const RIGHT_EYE: [usize; 4] = [362, 263, 386, 374];
}

pub struct FaceMesher {
    /// `Session::run` needs `&mut`; a mesh is one short run, off the actors.
    session: Mutex<Session>,
}

impl FaceMesher {
    pub fn load(onnx: &Onnx, model: &Path) -> Result<Self, MediaError> {
        if !model.exists() {
            return Err(MediaError::Setup(format!(
                "the face mesh model {} is missing: run `make setup` (or set \
                 media.face_mesh_model / AVS_MEDIA__FACE_MESH_MODEL)",
                model.display()
            )));
        }
        let session = onnx.open(model, Device::Cpu, 1)?;
        let named = |names: Vec<&str>, want: &[&str]| names == want;
        if !named(
            session.inputs().iter().map(|i| i.name()).collect(),
            &["input"],
        ) || !named(
            session.outputs().iter().map(|o| o.name()).collect(),
            &["landmarks", "face_flag"],
        ) {
            return Err(MediaError::Setup(format!(
                "{} is not the face mesh `make setup` converts (input `input`, outputs \
                 `landmarks` and `face_flag`)",
                model.display()
            )));
        }
        let mesher = Self {
            session: Mutex::new(session),
        };
        // Fails now, at start, if the model does not run.
        mesher
            .run(&vec![0.0; SIDE * SIDE * 3])
            .map_err(|e| MediaError::Setup(format!("{} does not run: {e}", model.display())))?;
        Ok(mesher)
    }

    /// The mesh of the face `face` (a box in `image`'s pixels, from the detector). Blocking (a
    /// few milliseconds): call it off the actors.
    pub fn mesh(&self, image: &RgbImage, face: &Rect) -> Result<MeshState, MediaError> {
        let side = face.w.max(face.h) * ROI_SCALE;
        if !(side.is_finite() && side >= 8.0) || image.width() < 2 || image.height() < 2 {
            return Ok(MeshState::Unavailable {
                reason: "the face is too small for the mesh".into(),
            });
        }
        let (x0, y0) = (
            face.x + face.w / 2.0 - side / 2.0,
            face.y + face.h / 2.0 - side / 2.0,
        );
        let step = side / SIDE as f32;
        let input = square(image, x0, y0, step);
        let (flat, logit) = self.run(&input)?;
        let presence = 1.0 / (1.0 + (-logit).exp());
        if presence < PRESENCE {
            return Ok(MeshState::Unavailable {
                reason: format!("the mesh model sees no face there (presence {presence:.2})"),
            });
        }
        let points = flat
            .chunks_exact(3)
            .map(|p| [x0 + p[0] * step, y0 + p[1] * step, p[2] * step])
            .collect();
        Ok(MeshState::Ok { points })
    }

    /// [`Self::mesh`], with a model failure counted as no mesh: either way it is logged, and the
    /// avatar renders from its five landmarks.
    pub fn mesh_or_why(&self, image: &RgbImage, face: &Rect) -> MeshState {
        let state = self.mesh(image, face).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the face mesh model failed");
            MeshState::Unavailable {
                reason: "the face mesh model failed".into(),
            }
        });
        if let MeshState::Unavailable { reason } = &state {
            tracing::warn!(%reason, "no face mesh for this avatar: it renders from its five landmarks");
        }
        state
    }

    /// The model on one 192×192 RGB input (HWC, 0..1): the 1404 coordinates and the logit.
    fn run(&self, input: &[f32]) -> Result<(Vec<f32>, f32), MediaError> {
        let input = Array4::from_shape_vec((1, SIDE, SIDE, 3), input.to_vec())
            .map_err(|e| MediaError::Model(format!("face mesh input: {e}")))?;
        let tensor = TensorRef::from_array_view(&input).map_err(model_error)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| MediaError::Model("face mesh is poisoned".into()))?;
        let outputs = session.run(ort::inputs![tensor]).map_err(model_error)?;
        let (_, landmarks) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        let (_, flag) = outputs[1]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        if landmarks.len() != MESH_POINTS * 3 || flag.is_empty() {
            return Err(MediaError::Model(
                "face mesh output has the wrong shape".into(),
            ));
        }
        Ok((landmarks.to_vec(), flag[0]))
    }
}

/// The 192×192 square from (`x0`, `y0`), `step` image pixels a sample, bilinear, RGB in 0..1;
/// outside the image, its nearest edge.
fn square(image: &RgbImage, x0: f32, y0: f32, step: f32) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let src = image.as_raw();
    let mut out = Vec::with_capacity(SIDE * SIDE * 3);
    for j in 0..SIDE {
        let v = (y0 + (j as f32 + 0.5) * step - 0.5).clamp(0.0, (h - 1) as f32);
        let (r0, fy) = (v as usize, v.fract());
        let r1 = (r0 + 1).min(h - 1);
        for i in 0..SIDE {
            let u = (x0 + (i as f32 + 0.5) * step - 0.5).clamp(0.0, (w - 1) as f32);
            let (c0, fx) = (u as usize, u.fract());
            let c1 = (c0 + 1).min(w - 1);
            for c in 0..3 {
                let at = |r: usize, col: usize| src[(r * w + col) * 3 + c] as f32;
                let top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx;
                let bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx;
                out.push((top * (1.0 - fy) + bottom * fy) / 255.0);
            }
        }
    }
    out
}

fn model_error(e: ort::Error) -> MediaError {
    MediaError::Model(format!("face mesh failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_square_samples_the_image_and_holds_its_edges() {
        let image = RgbImage::from_fn(40, 20, |x, _| image::Rgb([(x * 6) as u8, 100, 255]));
        // One image pixel a sample from (10, 5): the red ramp is read back at its own values.
        let input = square(&image, 10.0, 5.0, 1.0);
        assert_eq!(input.len(), SIDE * SIDE * 3);
        assert!(
            (input[0] * 255.0 - 60.0).abs() < 0.5,
            "{}",
            input[0] * 255.0
        );
        assert!((input[3] * 255.0 - 66.0).abs() < 0.5);
        assert!((input[2] - 1.0).abs() < 1e-6);
        // Past the right edge: the last column's value.
        assert!((input[(SIDE - 1) * 3] * 255.0 - 234.0).abs() < 0.5);
    }

    #[test]
    fn a_mesh_maps_with_its_model_and_unavailable_stays_so() {
        let ok = MeshState::Ok {
            points: vec![[10.0, 20.0, -4.0]; MESH_POINTS],
        };
        let half = ok.mapped(|[x, y]| [x / 2.0, y / 2.0 - 1.0], 0.5);
        assert_eq!(half.points().unwrap()[0], [5.0, 9.0, -2.0]);
        let none = MeshState::Unavailable {
            reason: "profile".into(),
        };
        assert_eq!(none.mapped(|p| p, 2.0), none);
        let json = serde_json::to_value(&none).unwrap();
        assert_eq!(json["status"], "unavailable");
        assert_eq!(serde_json::to_value(&half).unwrap()["status"], "ok");
    }
}
