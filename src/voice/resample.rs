//! Band-limited resampling to the voices' format, on rubato's synchronous FFT resampler: whole
//! clips ([`resample`], for local TTS) and streams ([`Resampler`], for a user's microphone arriving
//! from WebRTC or LiveKit at 48 kHz, on its way to a voice agent's recogniser). Linear
//! interpolation would fold everything above the new Nyquist frequency back into the speech band;
//! a recogniser hears that.
//!
//! ```text
//! let mut mic = Resampler::new(48_000, SAMPLE_RATE, 2)?;
//! for chunk in mic.push(&interleaved_opus_pcm) { bridge.user_audio(&chunk)?; } // 20 ms each
//! ```

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use super::CHUNK_MS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot resample {from_hz} Hz to {to_hz} Hz: sample rates must be positive")]
    Rate { from_hz: u32, to_hz: u32 },
    #[error("cannot resample audio with no channels")]
    NoChannels,
}

/// A stream of interleaved s16 frames at any rate, mono or more channels, turned into mono
/// `to_hz` chunks of 20 ms. State carries across calls, so how the input is cut changes nothing in
/// the output: it is fed to rubato in blocks of its own size, whatever the caller's sizes.
///
/// Latency: the input is gathered into blocks of about 20 ms (exactly 20 ms at 48, 44.1, 32, 24,
/// 16 and 8 kHz; at a rate sharing only a small common divisor with `to_hz` a block is longer, up
/// to a second), and the filter delays by half an output block; the delay is trimmed from the
/// start, so the output lines up with the input.
pub struct Resampler {
    channels: usize,
    /// Output samples per chunk handed out.
    chunk: usize,
    /// `None` when the rates are equal: downmixing and chunking only.
    fft: Option<Fft<f32>>,
    /// A frame cut between two calls (stereo's left sample without its right).
    partial_frame: Vec<i16>,
    /// Mono input waiting for a whole rubato block.
    pending_in: Vec<f32>,
    /// Output of the filter's startup, still to drop.
    to_trim: usize,
    /// Mono output waiting for a whole chunk.
    pending_out: Vec<i16>,
    /// rubato's output block, reused.
    block_out: Vec<f32>,
    /// Rates, and whole input frames taken so far: what [`flush`](Self::flush) must give out.
    from_hz: u32,
    to_hz: u32,
    frames_in: u64,
    samples_out: u64,
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32, channels_in: usize) -> Result<Self, ResampleError> {
        if from_hz == 0 || to_hz == 0 {
            return Err(ResampleError::Rate { from_hz, to_hz });
        }
        if channels_in == 0 {
            return Err(ResampleError::NoChannels);
        }
        let chunk = (to_hz as u64 * CHUNK_MS / 1000).max(1) as usize;
        let fft = if from_hz == to_hz {
            None
        } else {
            let block = (from_hz as u64 * CHUNK_MS / 1000).max(1) as usize;
            let fft = Fft::new(from_hz as usize, to_hz as usize, block, 1, FixedSync::Both)
                .map_err(|_| ResampleError::Rate { from_hz, to_hz })?;
            Some(fft)
        };
        let (to_trim, block_out) = match &fft {
            Some(fft) => (fft.output_delay(), vec![0.0; fft.output_frames_max()]),
            None => (0, Vec::new()),
        };
        Ok(Self {
            channels: channels_in,
            chunk,
            fft,
            partial_frame: Vec::new(),
            pending_in: Vec::new(),
            to_trim,
            pending_out: Vec::new(),
            block_out,
            from_hz,
            to_hz,
            frames_in: 0,
            samples_out: 0,
        })
    }

    /// The end of the stream: what the filter still holds comes out (it is fed silence until the
    /// output has the input's length), the last chunk padded with silence to a whole chunk. The
    /// resampler starts over afterwards.
    pub fn flush(&mut self) -> Vec<Vec<i16>> {
        self.partial_frame.clear();
        let expected = self.frames_in * u64::from(self.to_hz) / u64::from(self.from_hz);
        let owed = |r: &Self| expected.saturating_sub(r.samples_out + r.pending_out.len() as u64);
        let silence =
            vec![0i16; self.channels * (self.from_hz as usize * CHUNK_MS as usize / 1000).max(1)];
        // Each round pushes at least one block through; the delay is a few blocks at most.
        let mut rounds = 0;
        while owed(self) > 0 && self.fft.is_some() && rounds < 64 {
            self.take_frames(&silence);
            rounds += 1;
        }
        let keep = (expected.saturating_sub(self.samples_out) as usize).min(self.pending_out.len());
        self.pending_out.truncate(keep);
        let mut chunks: Vec<Vec<i16>> = self
            .pending_out
            .chunks(self.chunk)
            .map(<[i16]>::to_vec)
            .collect();
        if let Some(last) = chunks.last_mut() {
            last.resize(self.chunk, 0);
        }
        let reset = Self::new(self.from_hz, self.to_hz, self.channels);
        // unwrap-free: the same arguments made this one.
        if let Ok(fresh) = reset {
            *self = fresh;
        }
        chunks
    }

    /// Samples per chunk that [`push`](Self::push) hands out (20 ms at the output rate).
    pub fn chunk_samples(&self) -> usize {
        self.chunk
    }

    /// Takes interleaved frames (a trailing part of a frame is kept for the next call) and returns
    /// the mono chunks that are complete now.
    pub fn push(&mut self, interleaved: &[i16]) -> Vec<Vec<i16>> {
        let mut input = interleaved;
        if !self.partial_frame.is_empty() {
            let missing = (self.channels - self.partial_frame.len()).min(input.len());
            self.partial_frame.extend_from_slice(&input[..missing]);
            input = &input[missing..];
            if self.partial_frame.len() == self.channels {
                let frame = std::mem::take(&mut self.partial_frame);
                self.take_frames(&frame);
            }
        }
        let whole = input.len() - input.len() % self.channels;
        self.take_frames(&input[..whole]);
        self.partial_frame.extend_from_slice(&input[whole..]);

        let ready = self.pending_out.len() / self.chunk * self.chunk;
        self.samples_out += ready as u64;
        let chunks = self.pending_out[..ready]
            .chunks_exact(self.chunk)
            .map(<[i16]>::to_vec)
            .collect();
        self.pending_out.drain(..ready);
        chunks
    }

    /// Downmixes whole frames and resamples every full block.
    fn take_frames(&mut self, frames: &[i16]) {
        self.frames_in += (frames.len() / self.channels) as u64;
        let scale = 1.0 / (32768.0 * self.channels as f32);
        let mono = frames
            .chunks_exact(self.channels)
            .map(|frame| frame.iter().map(|&s| f32::from(s)).sum::<f32>() * scale);
        let Some(fft) = &mut self.fft else {
            self.pending_out.extend(mono.map(to_i16));
            return;
        };
        self.pending_in.extend(mono);
        let mut used = 0;
        while self.pending_in.len() - used >= fft.input_frames_next() {
            let take = fft.input_frames_next();
            let block = &self.pending_in[used..used + take];
            let capacity = self.block_out.len();
            // unwrap: both adapters are exactly as long as their slices, one channel each.
            let input = InterleavedSlice::new(block, 1, take).unwrap();
            let mut output = InterleavedSlice::new_mut(&mut self.block_out, 1, capacity).unwrap();
            let (read, written) = fft
                .process_into_buffer(&input, &mut output, None)
                // unwrap: the blocks are the sizes the resampler asked for, and it has one channel.
                .unwrap();
            used += read;
            let trim = self.to_trim.min(written);
            self.to_trim -= trim;
            self.pending_out
                .extend(self.block_out[trim..written].iter().copied().map(to_i16));
        }
        self.pending_in.drain(..used);
    }
}

/// Resamples a whole mono clip from `from_hz` to `to_hz`: the filter's delay is trimmed and its
/// tail flushed, so the result is `len · to / from` samples, aligned with the input. A zero rate
/// has no audio to give and returns nothing.
pub fn resample(samples: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == to_hz || samples.is_empty() {
        return samples.to_vec();
    }
    let Ok(mut fft) = Fft::<f32>::new(from_hz as usize, to_hz as usize, 1024, 1, FixedSync::Both)
    else {
        return Vec::new();
    };
    let input: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
    // unwrap: the adapter is exactly as long as the slice, one channel.
    let adapter = InterleavedSlice::new(&input, 1, input.len()).unwrap();
    let Ok(output) = fft.process_all(&adapter, input.len(), None) else {
        // Unreachable with a buffer rubato sized itself; no audio rather than a panic.
        return Vec::new();
    };
    let expected = (samples.len() as u64 * to_hz as u64 / from_hz as u64) as usize;
    let mut output = output.take_data();
    output.truncate(expected);
    output.into_iter().map(to_i16).collect()
}

fn to_i16(sample: f32) -> i16 {
    (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn tone(rate: u32, hz: f32, amplitude: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| amplitude * (2.0 * PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    fn pcm(samples: &[f32]) -> Vec<i16> {
        samples.iter().map(|&s| to_i16(s)).collect()
    }

    /// Amplitude and frequency of a steady tone: peak of the middle, and zero crossings.
    fn measure(samples: &[i16], rate: u32) -> (f32, f32) {
        let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
        let peak = middle.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0) as f32 / 32768.0;
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count() as f32;
        (peak, crossings / 2.0 / (middle.len() as f32 / rate as f32))
    }

    fn stream(resampler: &mut Resampler, input: &[i16], piece: usize) -> Vec<i16> {
        input
            .chunks(piece)
            .flat_map(|c| resampler.push(c))
            .inspect(|chunk| assert_eq!(chunk.len(), 320))
            .flatten()
            .collect()
    }

    #[test]
    fn a_tone_keeps_its_frequency_and_amplitude() {
        for (rate, channels) in [
            (48_000, 1),
            (44_100, 1),
            (24_000, 1),
            (8_000, 1),
            (16_000, 1),
        ] {
            let input = pcm(&tone(rate, 440.0, 0.5, 1.0));
            let mut resampler = Resampler::new(rate, 16_000, channels).unwrap();
            let out = stream(&mut resampler, &input, 960);
            // All of it but what is still in the filter (under 100 ms).
            assert!(
                out.len() > 14_000 && out.len() <= 16_000,
                "{rate}: {}",
                out.len()
            );
            let (peak, hz) = measure(&out, 16_000);
            assert!((peak - 0.5).abs() < 0.02, "{rate}: peak {peak}");
            assert!((hz - 440.0).abs() < 3.0, "{rate}: {hz} Hz");
        }
    }

    #[test]
    fn what_16_khz_cannot_carry_is_filtered_out_not_folded_back() {
        // 11 kHz at 48 kHz: linear interpolation would fold it to 5 kHz at nearly full level.
        let input = pcm(&tone(48_000, 11_000.0, 0.5, 0.5));
        let out = stream(&mut Resampler::new(48_000, 16_000, 1).unwrap(), &input, 480);
        let (peak, _) = measure(&out, 16_000);
        assert!(peak < 0.01, "{peak}");
    }

    #[test]
    fn stereo_is_downmixed_to_the_mean_of_its_channels() {
        let left = tone(48_000, 440.0, 0.6, 0.5);
        let interleaved: Vec<i16> = left
            .iter()
            .flat_map(|&l| [to_i16(l), to_i16(-l / 3.0)])
            .collect();
        let out = stream(
            &mut Resampler::new(48_000, 16_000, 2).unwrap(),
            &interleaved,
            1920,
        );
        let (peak, hz) = measure(&out, 16_000);
        // (0.6 - 0.2) / 2
        assert!((peak - 0.2).abs() < 0.01, "{peak}");
        assert!((hz - 440.0).abs() < 3.0, "{hz}");

        // Equal rates: downmix and chunking only, exactly.
        let mut same = Resampler::new(16_000, 16_000, 2).unwrap();
        let frames: Vec<i16> = (0..640).flat_map(|i| [i as i16, i as i16 + 2]).collect();
        let out: Vec<i16> = same.push(&frames).concat();
        assert_eq!(out, (0..640).map(|i| i as i16 + 1).collect::<Vec<_>>());
    }

    #[test]
    fn chunk_boundaries_change_nothing_and_do_not_click() {
        let input: Vec<i16> = tone(48_000, 1000.0, 0.5, 0.5)
            .iter()
            .flat_map(|&s| [to_i16(s), to_i16(s)])
            .collect();
        let whole = stream(
            &mut Resampler::new(48_000, 16_000, 2).unwrap(),
            &input,
            input.len(),
        );
        // Odd sizes cut frames in half and blocks anywhere.
        for piece in [1, 7, 333, 1001] {
            let cut = stream(
                &mut Resampler::new(48_000, 16_000, 2).unwrap(),
                &input,
                piece,
            );
            assert_eq!(cut, whole, "pieces of {piece}");
        }
        // A 1 kHz sine at 16 kHz moves at most 2π·1000/16000·0.5 ≈ 0.2 of full scale a sample; a
        // seam would jump further.
        let steady = &whole[400..];
        let jump = steady
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).unsigned_abs())
            .max()
            .unwrap();
        assert!(jump < 7000, "{jump}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Resampler::new(0, 16_000, 1).is_err());
        assert!(Resampler::new(48_000, 0, 1).is_err());
        assert_eq!(
            Resampler::new(48_000, 16_000, 0).err(),
            Some(ResampleError::NoChannels)
        );
    }

    #[test]
    fn resamples_22050_to_16000() {
        let input: Vec<i16> = (0..22_050).map(|i| (i % 100) as i16).collect();
        assert_eq!(resample(&input, 22_050, 16_000).len(), 16_000);
        assert_eq!(resample(&[5, 5], 16_000, 16_000), vec![5, 5]);
    }

    #[test]
    fn a_clip_keeps_its_tone_and_its_alignment() {
        let input = pcm(&tone(22_050, 300.0, 0.5, 1.0));
        let out = resample(&input, 22_050, 16_000);
        let (peak, hz) = measure(&out, 16_000);
        assert!((peak - 0.5).abs() < 0.02, "{peak}");
        assert!((hz - 300.0).abs() < 2.0, "{hz}");
        // The delay is trimmed: away from the clip's edges, the output is the same sine sampled
        // at 16 kHz, within half a sample (a sample off would be off by up to 0.06 of full scale).
        let ideal = pcm(&tone(16_000, 300.0, 0.5, 1.0));
        let worst = (1000..15_000)
            .map(|k| (f32::from(out[k]) - f32::from(ideal[k])).abs() / 32768.0)
            .fold(0.0, f32::max);
        let half_a_sample = 0.5 * 2.0 * PI * 300.0 / 16_000.0 * 0.5;
        assert!(worst < half_a_sample, "{worst}");
    }

    #[test]
    fn a_flushed_stream_gives_out_all_of_its_audio_and_starts_over() {
        for (rate, channels) in [(24_000u32, 1usize), (48_000, 2), (16_000, 1), (22_050, 1)] {
            let mono = pcm(&tone(rate, 300.0, 0.5, 0.51));
            let input: Vec<i16> = mono
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, channels))
                .collect();
            let mut r = Resampler::new(rate, 16_000, channels).unwrap();
            // Cut oddly, a frame split between two pushes.
            let mut out: Vec<i16> = Vec::new();
            for piece in input.chunks(777) {
                out.extend(r.push(piece).concat());
            }
            let flushed = r.flush();
            assert!(flushed.iter().all(|c| c.len() == 320), "{rate}");
            out.extend(flushed.concat());
            let expected = mono.len() * 16_000 / rate as usize;
            assert_eq!(
                out.len(),
                expected.div_ceil(320) * 320,
                "{rate} Hz x{channels}"
            );
            let (peak, hz) = measure(&out[..expected], 16_000);
            assert!(
                (peak - 0.5).abs() < 0.03 && (hz - 300.0).abs() < 3.0,
                "{rate}: {peak} {hz}"
            );
            // Nothing of this stream leaks into the next.
            assert!(r.flush().is_empty());
        }
    }
}
