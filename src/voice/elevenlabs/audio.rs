//! The agent's audio formats: decoding what it sends to 16 kHz, encoding user audio to what it
//! expects. Linear resampling, continuous across chunks (see the module doc of `elevenlabs`).

use crate::voice::SAMPLE_RATE;

/// ElevenLabs' `*_audio_format` values this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AudioFormat {
    /// `pcm_<rate>`: s16le mono.
    Pcm(u32),
    /// `ulaw_8000`: G.711 µ-law at 8 kHz.
    Ulaw8000,
}

impl AudioFormat {
    pub(super) fn parse(name: &str) -> Option<Self> {
        if name == "ulaw_8000" {
            return Some(AudioFormat::Ulaw8000);
        }
        let rate: u32 = name.strip_prefix("pcm_")?.parse().ok()?;
        (4_000..=192_000)
            .contains(&rate)
            .then_some(AudioFormat::Pcm(rate))
    }

    fn rate(self) -> u32 {
        match self {
            AudioFormat::Pcm(rate) => rate,
            AudioFormat::Ulaw8000 => 8_000,
        }
    }
}

/// Agent audio in its format → 16 kHz samples.
pub(super) struct Decoder {
    format: Option<AudioFormat>,
    resampler: Resampler,
}

impl Decoder {
    pub(super) fn new(format: AudioFormat) -> Self {
        Self {
            format: Some(format),
            resampler: Resampler::new(format.rate(), SAMPLE_RATE),
        }
    }

    pub(super) fn unsupported() -> Self {
        Self {
            format: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
        }
    }

    pub(super) fn reset(&mut self) {
        self.resampler.reset();
    }

    /// `None` when the format is unsupported (already reported once).
    pub(super) fn decode(&mut self, bytes: &[u8]) -> Option<Vec<i16>> {
        let samples: Vec<i16> = match self.format? {
            AudioFormat::Pcm(_) => {
                if !bytes.len().is_multiple_of(2) {
                    tracing::debug!(len = bytes.len(), "odd PCM chunk; last byte dropped");
                }
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect()
            }
            AudioFormat::Ulaw8000 => bytes.iter().map(|&b| ulaw_to_linear(b)).collect(),
        };
        Some(self.resampler.process(&samples))
    }
}

/// 16 kHz user samples → the agent's input format.
pub(super) struct Encoder {
    format: Option<AudioFormat>,
    resampler: Resampler,
}

impl Encoder {
    pub(super) fn new(format: AudioFormat) -> Self {
        Self {
            format: Some(format),
            resampler: Resampler::new(SAMPLE_RATE, format.rate()),
        }
    }

    pub(super) fn unsupported() -> Self {
        Self {
            format: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
        }
    }

    pub(super) fn encode(&mut self, pcm: &[i16]) -> Option<Vec<u8>> {
        let format = self.format?;
        let samples = self.resampler.process(pcm);
        Some(match format {
            AudioFormat::Pcm(_) => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            AudioFormat::Ulaw8000 => samples.iter().map(|&s| linear_to_ulaw(s)).collect(),
        })
    }
}

/// Linear-interpolation resampling of a stream that comes in chunks: positions are exact
/// integers (in 1/`to` of an input sample), and the last sample of a chunk is kept to interpolate
/// into the next, so chunking changes nothing.
struct Resampler {
    from: u32,
    to: u32,
    /// The previous chunk's last sample, index 0 of the next virtual buffer.
    prev: Option<i16>,
    /// The next output's position in the virtual buffer, in 1/`to` units.
    pos: u64,
}

impl Resampler {
    fn new(from: u32, to: u32) -> Self {
        Self {
            from,
            to,
            prev: None,
            pos: 0,
        }
    }

    fn reset(&mut self) {
        self.prev = None;
        self.pos = 0;
    }

    fn process(&mut self, input: &[i16]) -> Vec<i16> {
        if self.from == self.to || input.is_empty() {
            return input.to_vec();
        }
        let offset = usize::from(self.prev.is_some());
        let len = input.len() + offset;
        let at = |i: usize| -> i64 {
            if i < offset {
                self.prev.map_or(0, i64::from)
            } else {
                i64::from(input[i - offset])
            }
        };
        let to = u64::from(self.to);
        let mut out = Vec::with_capacity(input.len() * self.to as usize / self.from as usize + 1);
        while ((self.pos / to) as usize) + 1 < len {
            let i = (self.pos / to) as usize;
            let frac = (self.pos % to) as i64;
            let to = to as i64;
            let num = at(i) * (to - frac) + at(i + 1) * frac;
            // Round half away from zero, in integers.
            let value = if num >= 0 {
                (num + to / 2) / to
            } else {
                (num - to / 2) / to
            };
            out.push(value.clamp(i16::MIN as i64, i16::MAX as i64) as i16);
            self.pos += u64::from(self.from);
        }
        self.prev = input.last().copied();
        self.pos -= (len as u64 - 1) * to;
        out
    }
}

/// G.711 µ-law to linear.
fn ulaw_to_linear(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

/// Linear to G.711 µ-law.
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    let biased = magnitude.min(CLIP) + BIAS;
    // The highest set bit is between 7 and 14 here.
    let exponent = (15 - (biased as u16).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (biased >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_formats() {
        assert_eq!(
            AudioFormat::parse("pcm_16000"),
            Some(AudioFormat::Pcm(16_000))
        );
        assert_eq!(
            AudioFormat::parse("pcm_44100"),
            Some(AudioFormat::Pcm(44_100))
        );
        assert_eq!(AudioFormat::parse("ulaw_8000"), Some(AudioFormat::Ulaw8000));
        for bad in ["mp3_44100_128", "pcm_", "pcm_0", "pcm_x", "ulaw_16000", ""] {
            assert_eq!(AudioFormat::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resampling_is_continuous_across_chunks() {
        // A ramp at 24 kHz is a ramp at 16 kHz: output k sits at input 1.5k.
        let ramp: Vec<i16> = (0..480).map(|i| i * 3).collect();
        let whole = Resampler::new(24_000, 16_000).process(&ramp);
        assert_eq!(&whole[..4], &[0, 5, 9, 14]); // 4.5 rounds away from zero
        let mut chunked = Resampler::new(24_000, 16_000);
        let pieces: Vec<i16> = ramp.chunks(7).flat_map(|c| chunked.process(c)).collect();
        assert_eq!(pieces, whole);
        assert!((318..=320).contains(&whole.len()), "{}", whole.len());
        // Upsampling 8 → 16 kHz doubles, interpolating midpoints.
        assert_eq!(
            Resampler::new(8_000, 16_000).process(&[0, 100, -100]),
            vec![0, 50, 100, 0]
        );
        assert_eq!(Resampler::new(16_000, 16_000).process(&[1, 2]), vec![1, 2]);
    }

    #[test]
    fn ulaw_round_trips_the_g711_table() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(ulaw_to_linear(0xf0), 120);
        for byte in 0..=255u8 {
            let linear = ulaw_to_linear(byte);
            // 0x7f is µ-law's negative zero: it comes back as 0xff.
            let expected = if byte == 0x7f { 0xff } else { byte };
            assert_eq!(
                linear_to_ulaw(linear),
                expected,
                "byte {byte:#x} → {linear}"
            );
        }
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }
}
