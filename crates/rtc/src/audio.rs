//! Audio glue: band-limited resampling (rubato) between the avatar's 16 kHz and WebRTC's 48 kHz, and Opus
//! (libopus through audiopus) at 20 ms frames.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::RtcError;

/// The avatar's and the microphone's sample rate at the API.
pub const API_RATE: u32 = 16_000;
/// Opus in WebRTC: 48 kHz RTP clock, 20 ms frames.
pub const OPUS_RATE: u32 = 48_000;
pub const OPUS_FRAME: usize = 960;
/// 20 ms at the API rate.
pub const API_FRAME: usize = 320;

/// Streaming mono resampler over rubato's sinc resampler, fed any number of samples at a time. Its startup
/// delay is trimmed, so output sample `k` is input sample `k * to / from`: the caller can time output from
/// input without knowing the filter.
pub struct MonoResampler {
    inner: Async<f32>,
    chunk: usize,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    trim: usize,
}

impl MonoResampler {
    /// `chunk` input samples are processed at a time (latency granularity).
    pub fn new(from_hz: u32, to_hz: u32, chunk: usize) -> Result<Self, RtcError> {
        if from_hz == 0 || to_hz == 0 || chunk == 0 {
            return Err(RtcError::Config(format!(
                "cannot resample {from_hz} Hz to {to_hz} Hz in chunks of {chunk}"
            )));
        }
        let g = gcd(from_hz, to_hz);
        // With an oversampling factor of to/gcd every output instant falls exactly on a precomputed sinc
        // phase, so "nearest" is exact polyphase filtering at one dot product per sample (rubato's docs).
        let exact_phases = (to_hz / g) as usize;
        let params = if exact_phases <= 512 {
            SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2)
                .oversampling_factor(exact_phases)
                .interpolation(SincInterpolationType::Nearest)
        } else {
            SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2)
        };
        let inner = Async::<f32>::new_sinc(
            to_hz as f64 / from_hz as f64,
            1.0,
            &params,
            chunk,
            1,
            FixedAsync::Input,
        )
        .map_err(|e| RtcError::Config(format!("resampler {from_hz}->{to_hz} Hz: {e}")))?;
        let trim = inner.output_delay();
        let scratch = vec![0.0; inner.output_frames_max()];
        Ok(MonoResampler {
            inner,
            chunk,
            pending: Vec::with_capacity(chunk * 2),
            scratch,
            trim,
        })
    }

    /// Appends the resampled form of `input` to `out` (as much as whole chunks allow; the rest waits).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.pending
            .extend(input.iter().map(|&s| s as f32 / 32768.0));
        let mut start = 0;
        while self.pending.len() - start >= self.chunk {
            let frames_out = self.scratch.len();
            let (Ok(inp), Ok(mut outp)) = (
                InterleavedSlice::new(&self.pending[start..start + self.chunk], 1, self.chunk),
                InterleavedSlice::new_mut(&mut self.scratch[..], 1, frames_out),
            ) else {
                // Both slices are sized from the resampler's own numbers; nothing to recover if not.
                self.pending.clear();
                return;
            };
            match self.inner.process_into_buffer(&inp, &mut outp, None) {
                Ok((used, produced)) => {
                    start += used;
                    let skip = self.trim.min(produced);
                    self.trim -= skip;
                    out.extend(
                        self.scratch[skip..produced]
                            .iter()
                            .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resampler failed; dropping its input");
                    self.pending.clear();
                    return;
                }
            }
        }
        self.pending.drain(..start);
    }

    /// Forgets buffered input and filter state, as at construction (used at a discontinuity).
    pub fn reset(&mut self) {
        self.inner.reset();
        self.pending.clear();
        self.trim = self.inner.output_delay();
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Opus encoder for the avatar's voice: 48 kHz mono, 20 ms frames, tuned for speech.
pub struct OpusEncoder {
    inner: Encoder,
    buf: Vec<u8>,
    lookahead: u32,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: i32) -> Result<Self, RtcError> {
        let mut inner = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)
            .map_err(|e| RtcError::Codec(format!("opus encoder: {e}")))?;
        inner
            .set_bitrate(Bitrate::BitsPerSecond(bitrate_bps))
            .map_err(|e| RtcError::Codec(format!("opus bitrate: {e}")))?;
        // Browsers offer useinbandfec=1: a lost packet can be rebuilt from the next one.
        inner
            .set_inband_fec(true)
            .and_then(|_| inner.set_packet_loss_perc(5))
            .map_err(|e| RtcError::Codec(format!("opus fec: {e}")))?;
        let lookahead = inner
            .lookahead()
            .map_err(|e| RtcError::Codec(format!("opus lookahead: {e}")))?;
        Ok(OpusEncoder {
            inner,
            buf: vec![0; 1500],
            lookahead,
        })
    }

    /// Samples (48 kHz) by which decoded audio lags the input: timing must account for it, or voice plays
    /// that much after the lips (6.5 ms for libopus in VoIP mode).
    pub fn lookahead(&self) -> u32 {
        self.lookahead
    }

    /// One 20 ms frame ([`OPUS_FRAME`] samples at 48 kHz) to one Opus packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, RtcError> {
        let n = self
            .inner
            .encode(pcm, &mut self.buf)
            .map_err(|e| RtcError::Codec(format!("opus encode: {e}")))?;
        Ok(self.buf[..n].to_vec())
    }
}

/// Opus decoder to 48 kHz mono (a stereo packet is downmixed by libopus).
pub struct OpusDecoder {
    inner: Decoder,
    buf: Vec<i16>,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, RtcError> {
        let inner = Decoder::new(SampleRate::Hz48000, Channels::Mono)
            .map_err(|e| RtcError::Codec(format!("opus decoder: {e}")))?;
        // 120 ms, the longest Opus packet.
        Ok(OpusDecoder {
            inner,
            buf: vec![0; 5760],
        })
    }

    /// Decodes one packet; `None` conceals one lost 20 ms frame.
    pub fn decode(&mut self, packet: Option<&[u8]>) -> Result<&[i16], RtcError> {
        let n = match packet {
            Some([]) => return Ok(&[]),
            Some(p) => self.inner.decode(Some(p), &mut self.buf[..], false),
            None => self
                .inner
                .decode(None::<&[u8]>, &mut self.buf[..OPUS_FRAME], false),
        }
        .map_err(|e| RtcError::Codec(format!("opus decode: {e}")))?;
        Ok(&self.buf[..n])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tone(rate: u32, hz: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin())
                    as i16
            })
            .collect()
    }

    pub(crate) fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    fn resample_all(from: u32, to: u32, chunk: usize, input: &[i16], feed: usize) -> Vec<i16> {
        let mut r = MonoResampler::new(from, to, chunk).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(feed) {
            r.process(piece, &mut out);
        }
        out
    }

    #[test]
    fn upsampling_keeps_length_level_and_timing() {
        let input = tone(16_000, 440.0, 10_000.0, 16_000);
        // Fed in odd pieces: the resampler buffers to its chunk size.
        let out = resample_all(16_000, 48_000, API_FRAME, &input, 77);
        // Everything but the last partial chunk and the trimmed delay has come out.
        assert!(out.len() > 47_000 && out.len() <= 48_000, "{}", out.len());
        let level = rms(&out[4800..out.len() - 4800]);
        assert!((level / rms(&input) - 1.0).abs() < 0.02, "{level}");
    }

    #[test]
    fn startup_delay_is_trimmed_both_ways() {
        // An impulse at input sample 3000 must come out at 3000 * to / from: callers time output by
        // counting. rubato's reported delay is within a couple of output samples (< 0.1 ms) of the true one.
        for (from, to, chunk) in [(16_000, 48_000, API_FRAME), (48_000, 16_000, OPUS_FRAME)] {
            let mut input = vec![0i16; from as usize / 2];
            input[3000] = 20_000;
            let out = resample_all(from, to, chunk, &input, chunk);
            let peak = (0..out.len())
                .max_by_key(|&i| out[i].unsigned_abs())
                .unwrap();
            let expected = 3000 * to as usize / from as usize;
            assert!(
                peak.abs_diff(expected) <= 2,
                "{from}->{to}: peak at {peak}, expected {expected}"
            );
        }
    }

    #[test]
    fn downsampling_is_band_limited() {
        // 1 kHz and 7 kHz pass to 16 kHz (Nyquist 8 kHz); 12 kHz must be filtered, not folded to 4 kHz.
        for (hz, passes) in [(1_000.0, true), (7_000.0, true), (12_000.0, false)] {
            let input = tone(48_000, hz, 10_000.0, 48_000);
            let out = resample_all(48_000, 16_000, OPUS_FRAME, &input, OPUS_FRAME);
            let level = rms(&out[1600..out.len() - 1600]) / rms(&input);
            if passes {
                assert!(level > 0.9, "{hz} Hz kept {level}");
            } else {
                assert!(level < 0.01, "{hz} Hz leaked {level}");
            }
        }
    }

    #[test]
    fn reset_restarts_cleanly() {
        let mut r = MonoResampler::new(16_000, 48_000, API_FRAME).unwrap();
        let mut out = Vec::new();
        r.process(&tone(16_000, 300.0, 8000.0, 1000), &mut out);
        r.reset();
        out.clear();
        r.process(&vec![0; API_FRAME], &mut out);
        assert!(out.iter().all(|&s| s == 0), "no state survives a reset");
    }

    #[test]
    fn opus_round_trip_keeps_energy() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let input = tone(48_000, 440.0, 8_000.0, 48_000);
        let mut out = Vec::new();
        for frame in input.chunks(OPUS_FRAME) {
            let pkt = enc.encode(frame).unwrap();
            assert!(!pkt.is_empty() && pkt.len() < 400);
            out.extend_from_slice(dec.decode(Some(&pkt)).unwrap());
        }
        assert_eq!(out.len(), input.len());
        let ratio = rms(&out[4800..]) / rms(&input[4800..]);
        assert!((ratio - 1.0).abs() < 0.15, "{ratio}");
        assert_eq!(dec.decode(None).unwrap().len(), OPUS_FRAME, "concealment");
        assert!(
            dec.decode(Some(&[])).unwrap().is_empty(),
            "empty packets are skipped"
        );
    }

    #[test]
    fn opus_rejects_a_wrong_frame_size() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        assert!(enc.encode(&[0; 100]).is_err());
    }
}
