//! What the renderers hear: the last few hundred milliseconds of the session's 16 kHz PCM, and what
//! a frame needs from them: its loudness and its last 40 ms (for `visemes`, the built-in
//! renderer's mouth), and an 80-band log-mel spectrogram (Wav2Lip's conventions) for a lip-sync
//! model.

use std::collections::VecDeque;
use std::f32::consts::PI;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::voice::SAMPLE_RATE;

/// Samples kept: enough for a lip-sync model's 200 ms window.
const KEEP: usize = SAMPLE_RATE as usize * 2 / 5;
/// The window one video frame's mouth is driven by.
const FRAME_WINDOW: usize = SAMPLE_RATE as usize / 25;

/// The recent audio of one session, fed in real time as chunks play out.
#[derive(Debug, Default)]
pub struct AudioWindow {
    samples: VecDeque<i16>,
    /// Frames since audio last arrived: silence is the absence of chunks, not only quiet ones.
    idle_ticks: u32,
}

impl AudioWindow {
    pub fn push(&mut self, chunk: &[i16]) {
        self.samples.extend(chunk.iter().copied());
        let extra = self.samples.len().saturating_sub(KEEP);
        self.samples.drain(..extra);
        self.idle_ticks = 0;
    }

    /// Called once per frame after the frame's chunks are in.
    pub fn tick(&mut self) {
        self.idle_ticks = self.idle_ticks.saturating_add(1);
        // Two frames without audio: the voice stopped; what is kept is stale.
        if self.idle_ticks > 2 {
            self.samples.clear();
        }
    }

    /// The last `n` samples, zero-padded at the front when fewer are kept.
    pub fn last(&self, n: usize) -> Vec<f32> {
        let have = self.samples.len().min(n);
        let mut out = vec![0.0; n - have];
        out.extend(
            self.samples
                .range(self.samples.len() - have..)
                .map(|s| *s as f32 / 32768.0),
        );
        out
    }

    /// Loudness of the last frame's audio: 0 silent .. 1 loud speech.
    pub fn loudness(&self) -> f32 {
        let x = self.last(FRAME_WINDOW);
        let energy = x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32;
        let db = 10.0 * energy.max(1e-10).log10();
        ((db + 50.0) / 35.0).clamp(0.0, 1.0)
    }

    /// The last frame's audio (40 ms), for the viseme tracker.
    pub fn frame(&self) -> Vec<f32> {
        self.last(FRAME_WINDOW)
    }
}

/// Wav2Lip's mel settings: 16 kHz, 800-sample window, hop 200, 80 bands from 55 to 7600 Hz,
/// pre-emphasis 0.97, dB relative to 20, normalised symmetrically to [-4, 4]. The window is
/// zero-padded to a 1024-point FFT (Wav2Lip's librosa uses 800 points; the bands are built for
/// 1024, so the spectrogram is the same up to the bands' sampling).
pub struct MelSpec {
    filters: Vec<Vec<(usize, f32)>>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

pub const MEL_BANDS: usize = 80;
pub const MEL_FRAMES: usize = 16;
const N_FFT: usize = 1024;
const WIN: usize = 800;
const HOP: usize = 200;
/// The samples `MelSpec::compute` reads: 16 hops and one window.
pub const MEL_SAMPLES: usize = HOP * (MEL_FRAMES - 1) + WIN;

fn hz_to_mel(hz: f32) -> f32 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (10f32.powf(mel / 2595.0) - 1.0)
}

impl Default for MelSpec {
    fn default() -> Self {
        Self::new()
    }
}

impl MelSpec {
    pub fn new() -> Self {
        let bins = N_FFT / 2 + 1;
        let (lo, hi) = (hz_to_mel(55.0), hz_to_mel(7600.0));
        let points: Vec<f32> = (0..MEL_BANDS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (MEL_BANDS + 1) as f32))
            .collect();
        let bin_hz = SAMPLE_RATE as f32 / N_FFT as f32;
        let filters = (0..MEL_BANDS)
            .map(|m| {
                let (left, center, right) = (points[m], points[m + 1], points[m + 2]);
                let norm = 2.0 / (right - left); // Slaney area normalisation
                (0..bins)
                    .filter_map(|k| {
                        let f = k as f32 * bin_hz;
                        let w = if f > left && f <= center {
                            (f - left) / (center - left)
                        } else if f > center && f < right {
                            (right - f) / (right - center)
                        } else {
                            0.0
                        };
                        (w > 0.0).then_some((k, w * norm))
                    })
                    .collect()
            })
            .collect();
        let window = (0..WIN)
            .map(|n| 0.5 - 0.5 * (2.0 * PI * n as f32 / WIN as f32).cos())
            .collect();
        Self {
            filters,
            window,
            fft: RealFftPlanner::new().plan_fft_forward(N_FFT),
        }
    }

    /// `[80][16]` normalised log-mel of the last `MEL_SAMPLES` samples, row-major (band, frame).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let mut x = vec![0.0f32; MEL_SAMPLES];
        let take = samples.len().min(MEL_SAMPLES);
        x[MEL_SAMPLES - take..].copy_from_slice(&samples[samples.len() - take..]);
        for i in (1..x.len()).rev() {
            x[i] -= 0.97 * x[i - 1];
        }
        let mut out = vec![0.0f32; MEL_BANDS * MEL_FRAMES];
        let mut frame_in = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        for frame in 0..MEL_FRAMES {
            // The FFT uses its input as scratch: the padding is cleared every frame.
            frame_in[WIN..].fill(0.0);
            for (n, (value, w)) in frame_in[..WIN].iter_mut().zip(&self.window).enumerate() {
                *value = x[frame * HOP + n] * w;
            }
            self.fft
                .process_with_scratch(&mut frame_in, &mut spectrum, &mut scratch)
                // unwrap: every buffer came from the plan itself, so the lengths match.
                .unwrap();
            for (band, filter) in self.filters.iter().enumerate() {
                let mag: f32 = filter
                    .iter()
                    .map(|&(k, w)| w * spectrum[k].norm_sqr().sqrt())
                    .sum();
                let db = 20.0 * mag.max(1e-5).log10() - 20.0;
                let norm = 8.0 * ((db + 100.0) / 100.0) - 4.0;
                out[band * MEL_FRAMES + frame] = norm.clamp(-4.0, 4.0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, amplitude: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amplitude * 32767.0 * (2.0 * PI * freq * i as f32 / SAMPLE_RATE as f32).sin())
                    as i16
            })
            .collect()
    }

    /// Speech-like and fixed: three partials under a rising envelope (the first frames are
    /// quiet enough to reach the floor) and a little deterministic noise.
    fn fixed_signal() -> Vec<f32> {
        let mut seed: u32 = 0x1234_5678;
        (0..MEL_SAMPLES)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                let envelope = (i as f32 / MEL_SAMPLES as f32).powi(2);
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                envelope
                    * (0.3 * (2.0 * PI * 220.0 * t).sin()
                        + 0.2 * (2.0 * PI * 1250.0 * t).sin()
                        + 0.05 * (2.0 * PI * 3100.0 * t).sin())
                    + 0.002 * noise
            })
            .collect()
    }

    /// What the hand-written radix-2 FFT this module used before `realfft` computed from
    /// `fixed_signal`: rows are bands, columns frames.
    const BEFORE_REALFFT: &str = include_str!("testdata/mel_fixed_signal.txt");

    #[test]
    fn mel_matches_the_hand_written_fft_it_replaced() {
        let old: Vec<f32> = BEFORE_REALFFT
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(old.len(), MEL_BANDS * MEL_FRAMES);
        let new = MelSpec::new().compute(&fixed_signal());
        let worst = new
            .iter()
            .zip(&old)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Out of a range of 8: rounding differences between two FFTs, nothing more.
        assert!(worst < 1e-3, "largest difference {worst}");
        assert!(old.iter().any(|v| *v == -4.0) && old.iter().any(|v| *v > 0.0));
    }

    #[test]
    fn loudness_follows_the_audio_and_silence_is_silent() {
        let mut w = AudioWindow::default();
        assert_eq!(w.loudness(), 0.0);
        w.push(&tone(200.0, 0.3, 1600));
        assert!(w.loudness() > 0.7, "{}", w.loudness());
        assert_eq!(w.frame().len(), FRAME_WINDOW);
        w.push(&tone(200.0, 0.003, 1600));
        assert!(w.loudness() < 0.4, "{}", w.loudness());
        for _ in 0..3 {
            w.tick();
        }
        assert_eq!(w.loudness(), 0.0, "stale audio is dropped");
    }

    #[test]
    fn mel_puts_a_tone_in_its_band() {
        let mel = MelSpec::new();
        let x: Vec<f32> = tone(1000.0, 0.5, MEL_SAMPLES)
            .iter()
            .map(|s| *s as f32 / 32768.0)
            .collect();
        let out = mel.compute(&x);
        assert_eq!(out.len(), MEL_BANDS * MEL_FRAMES);
        let band_energy = |b: usize| out[b * MEL_FRAMES + 8];
        let loudest = (0..MEL_BANDS)
            .max_by(|a, b| band_energy(*a).total_cmp(&band_energy(*b)))
            .unwrap();
        let center = hz_to_mel(1000.0);
        let (lo, hi) = (hz_to_mel(55.0), hz_to_mel(7600.0));
        let expected = ((center - lo) / (hi - lo) * (MEL_BANDS + 1) as f32) as usize;
        assert!(loudest.abs_diff(expected) <= 2, "{loudest} vs {expected}");
        let silent = mel.compute(&vec![0.0; MEL_SAMPLES]);
        assert!(silent.iter().all(|v| *v == -4.0));
    }
}
