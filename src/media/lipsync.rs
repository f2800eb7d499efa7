//! A lip-sync model with the Wav2Lip signature, through onnxruntime (CUDA on a `cuda:N` device):
//! `mel` `[B,1,80,16]` (log-mel of the last 200 ms, see `audio::MelSpec`) and `face` `[B,6,96,96]`
//! (the face with its lower half blanked, then the reference face; RGB in 0..1) give `face`
//! `[B,3,96,96]`, the face with the mouth the audio calls for. The lower half of it is pasted back
//! over the face, feathered. Every speaking session on a device goes through one batched run per
//! frame tick.

use std::path::Path;

use ndarray::{Array4, ArrayView4};
use ort::session::Session;
use ort::value::TensorRef;

use super::audio::{MEL_BANDS, MEL_FRAMES};
use super::onnx::{Device, Onnx};
use super::render::Prepared;
use super::MediaError;

pub const FACE_SIDE: usize = 96;

/// Where the model's face square sits in a session's frame, and the reference it sees.
pub struct LipFace {
    pub x: f32,
    pub y: f32,
    pub side: f32,
    /// `[3][96][96]` RGB in 0..1.
    pub reference: Vec<f32>,
}

impl LipFace {
    /// The square around the prepared frame's face, and its 96×96 reference.
    pub fn of(prepared: &Prepared) -> Self {
        let f = &prepared.model().face;
        let side = f.w.max(f.h) * 1.05;
        let (x, y) = (f.x + f.w / 2.0 - side / 2.0, f.y + f.h / 2.0 - side / 2.0);
        let (w, h) = (prepared.width(), prepared.height());
        let src = prepared.base.as_slice().unwrap_or(&[]);
        let mut reference = vec![0.0f32; 3 * FACE_SIDE * FACE_SIDE];
        for j in 0..FACE_SIDE {
            for i in 0..FACE_SIDE {
                let u = (x + (i as f32 + 0.5) * side / FACE_SIDE as f32) as isize;
                let v = (y + (j as f32 + 0.5) * side / FACE_SIDE as f32) as isize;
                let u = u.clamp(0, w as isize - 1) as usize;
                let v = v.clamp(0, h as isize - 1) as usize;
                for c in 0..3 {
                    reference[(c * FACE_SIDE + j) * FACE_SIDE + i] =
                        src.get((v * w + u) * 3 + c).copied().unwrap_or(0) as f32 / 255.0;
                }
            }
        }
        Self {
            x,
            y,
            side,
            reference,
        }
    }

    /// Pastes the lower half of `face` (`[3][96][96]` in 0..1) into `dst`, feathered at its edges.
    pub fn paste(&self, face: &[f32], dst: &mut [u8], w: usize, h: usize) {
        let n = FACE_SIDE as f32;
        let x0 = self.x.max(0.0) as usize;
        let x1 = ((self.x + self.side) as usize).min(w);
        let y0 = (self.y + self.side / 2.0).max(0.0) as usize;
        let y1 = ((self.y + self.side) as usize).min(h);
        for py in y0..y1 {
            let fy = (py as f32 - self.y) / self.side * n;
            for px in x0..x1 {
                let fx = (px as f32 - self.x) / self.side * n;
                let (i, j) = (
                    (fx as usize).min(FACE_SIDE - 1),
                    (fy as usize).min(FACE_SIDE - 1),
                );
                // Feather: full weight in the middle, none at the square's sides and edges.
                let edge = (fx.min(n - fx) / 12.0)
                    .min((fy - n / 2.0) / 8.0)
                    .min((n - fy) / 8.0)
                    .clamp(0.0, 1.0);
                let o = (py * w + px) * 3;
                for c in 0..3 {
                    let v = face[(c * FACE_SIDE + j) * FACE_SIDE + i].clamp(0.0, 1.0) * 255.0;
                    dst[o + c] = (dst[o + c] as f32 * (1.0 - edge) + v * edge) as u8;
                }
            }
        }
    }
}

pub struct LipSync {
    session: Session,
    mel_input: String,
    face_input: String,
}

impl LipSync {
    /// Opens `model` on `device` and checks that it has the Wav2Lip signature.
    pub fn load(onnx: &Onnx, model: &Path, device: Device) -> Result<Self, MediaError> {
        let session = onnx.open(model, device, 1)?;
        let shape_of = |o: &ort::value::Outlet| {
            o.dtype()
                .tensor_shape()
                .map(|s| s.to_vec())
                .unwrap_or_default()
        };
        let mut mel_input = None;
        let mut face_input = None;
        for input in session.inputs() {
            match shape_of(input).as_slice() {
                [_, 1, 80, 16] => mel_input = Some(input.name().to_string()),
                [_, 6, 96, 96] => face_input = Some(input.name().to_string()),
                _ => {}
            }
        }
        let output_ok = session
            .outputs()
            .first()
            .is_some_and(|o| matches!(shape_of(o).as_slice(), [_, 3, 96, 96]));
        match (mel_input, face_input, output_ok, session.inputs().len()) {
            (Some(mel_input), Some(face_input), true, 2) => Ok(Self {
                session,
                mel_input,
                face_input,
            }),
            _ => Err(MediaError::Setup(format!(
                "{} does not have the Wav2Lip signature (mel [B,1,80,16] + face [B,6,96,96] -> \
                 face [B,3,96,96])",
                model.display()
            ))),
        }
    }

    /// One batched run: for each (mel `[80*16]`, face) pair, the generated face `[3*96*96]`.
    pub fn run(&mut self, batch: &[(&[f32], &LipFace)]) -> Result<Vec<Vec<f32>>, MediaError> {
        let b = batch.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let plane = FACE_SIDE * FACE_SIDE;
        let mut mel = Array4::<f32>::zeros((b, 1, MEL_BANDS, MEL_FRAMES));
        let mut face = Array4::<f32>::zeros((b, 6, FACE_SIDE, FACE_SIDE));
        {
            let mel = mel
                .as_slice_mut()
                .ok_or_else(|| MediaError::Model("mel buffer".into()))?;
            let face = face
                .as_slice_mut()
                .ok_or_else(|| MediaError::Model("face buffer".into()))?;
            for (k, (m, f)) in batch.iter().enumerate() {
                let m_len = MEL_BANDS * MEL_FRAMES;
                mel[k * m_len..(k + 1) * m_len].copy_from_slice(&m[..m_len]);
                let base = k * 6 * plane;
                // Channels 0..3: the face with its lower half blanked (what to fill in).
                for c in 0..3 {
                    let src = &f.reference[c * plane..(c + 1) * plane];
                    face[base + c * plane..base + c * plane + plane / 2]
                        .copy_from_slice(&src[..plane / 2]);
                    face[base + (3 + c) * plane..base + (4 + c) * plane].copy_from_slice(src);
                }
            }
        }
        let outputs = self
            .session
            .run(ort::inputs![
                self.mel_input.as_str() => TensorRef::from_array_view(&mel).map_err(model)?,
                self.face_input.as_str() => TensorRef::from_array_view(&face).map_err(model)?,
            ])
            .map_err(model)?;
        let out = outputs[0].try_extract_array::<f32>().map_err(model)?;
        let out: ArrayView4<f32> = out
            .into_dimensionality()
            .map_err(|e| MediaError::Model(format!("lip-sync output: {e}")))?;
        if out.dim() != (b, 3, FACE_SIDE, FACE_SIDE) {
            return Err(MediaError::Model(format!(
                "lip-sync output has shape {:?}",
                out.dim()
            )));
        }
        Ok((0..b)
            .map(|k| {
                out.slice(ndarray::s![k, .., .., ..])
                    .iter()
                    .copied()
                    .collect()
            })
            .collect())
    }
}

fn model(e: ort::Error) -> MediaError {
    MediaError::Model(format!("lip-sync model failed: {e}"))
}
