//! Mouth shapes from any voice, on the CPU: an acoustic tracker over a session's 16 kHz audio (the
//! frame's last 40 ms, no lookahead) that names one of a small set of visemes with an intensity,
//! and a driver that blends them into the renderer's jaw opening and lip shape, so shapes flow
//! into each other (coarticulation) and a closure still closes within a frame or two.
//!
//! The tracker reads four bands of a 512-point spectrum (realfft): the voicing and nasal murmur
//! (80–400 Hz), the first formant of open vowels (400–1000 Hz), the second formant (1–2.5 kHz) and
//! frication (2.5–7 kHz), against the speech's own recent level:
//! - far below that level, within speech: a closure (the silence of /p b/), or rest;
//! - murmur alone, a little below it: /m/ (lips closed, voice through the nose);
//! - frication alone, below it: lips to teeth (/f v/; the other fricatives look alike from the
//!   front);
//! - else a vowel or approximant: open (/a/: strong first formant), rounded (/o u w/: everything
//!   below 1 kHz), spread (/i/: weak first formant, strong upper bands) or mid.
//!
//! A steady sound (a hum, noise, a held note) is not speech: speech moves between these many times
//! a second. The driver damps any shape that has held still too long towards rest.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use super::audio::AudioWindow;
use crate::voice::SAMPLE_RATE;

/// The spectrum's size: 32 ms at 16 kHz.
const N_FFT: usize = 512;

/// The mouth shapes the tracker tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viseme {
    /// No voice: lips together, relaxed.
    Rest,
    /// /p b m/: lips pressed together.
    Closed,
    /// /a/: jaw open.
    Open,
    /// /e/, schwa: half open.
    Mid,
    /// /i/: lips spread, jaw nearly closed.
    Spread,
    /// /o u w/: lips rounded and pushed forward.
    Rounded,
    /// /f v/: lower lip to the upper teeth.
    LipTeeth,
}

impl Viseme {
    /// The renderer's (open -1 pressed .. 0 rest .. 1, shape -1 rounded .. 1 spread) this shape
    /// aims at, at full `intensity`.
    fn target(self, intensity: f32) -> (f32, f32) {
        match self {
            Viseme::Rest => (0.0, 0.0),
            // Pressed together, past the portrait's rest.
            Viseme::Closed => (-1.0, 0.0),
            Viseme::Open => (0.95 * intensity, 0.1),
            Viseme::Mid => (0.6 * intensity, 0.35),
            Viseme::Spread => (0.3 * intensity, 1.0),
            Viseme::Rounded => (0.45 * intensity, -1.0),
            // The lower lip up against the upper teeth.
            Viseme::LipTeeth => (-0.5, 0.4),
        }
    }
}

impl Viseme {
    /// The shape of a phoneme as espeak-ng names it in IPA (`p`, `ˈaɪ`, `tʃ`; `""` a pause), and
    /// how far the jaw goes for it (0..1). A diphthong takes the shape it starts with; stress and
    /// length marks change nothing.
    pub fn of_phoneme(ipa: &str) -> (Viseme, f32) {
        let mut sounds = ipa
            .chars()
            .filter(|c| !matches!(c, 'ˈ' | 'ˌ' | 'ː' | 'ˑ' | '̃' | '̩'));
        let Some(first) = sounds.next() else {
            return (Viseme::Closed, 0.0);
        };
        match first {
            'p' | 'b' | 'm' => (Viseme::Closed, 0.0),
            'f' | 'v' => (Viseme::LipTeeth, 1.0),
            'a' | 'ɑ' | 'æ' | 'ʌ' | 'ɐ' | 'ä' | 'ɶ' => (Viseme::Open, 1.0),
            // Open and rounded: the jaw does most of it.
            'ɒ' | 'ɔ' => (Viseme::Open, 0.8),
            'o' | 'ɵ' | 'ø' | 'œ' => (Viseme::Rounded, 0.8),
            'u' | 'ʊ' | 'y' | 'ʏ' | 'ɯ' | 'w' | 'ʍ' => (Viseme::Rounded, 0.55),
            'ɛ' | 'ɜ' | 'ɝ' => (Viseme::Mid, 0.95),
            'e' => (Viseme::Mid, 0.8),
            'ə' | 'ɚ' | 'ɘ' | 'ᵻ' | 'ɨ' => (Viseme::Mid, 0.6),
            'i' | 'ɪ' | 'j' => (Viseme::Spread, 0.9),
            // Lips pushed out over nearly closed teeth.
            'ʃ' | 'ʒ' => (Viseme::Rounded, 0.3),
            't' if sounds.next() == Some('ʃ') => (Viseme::Rounded, 0.3),
            'd' if sounds.next() == Some('ʒ') => (Viseme::Rounded, 0.3),
            // Teeth nearly together.
            's' | 'z' => (Viseme::Spread, 0.15),
            // The tongue shows between the teeth.
            'θ' | 'ð' => (Viseme::Mid, 0.2),
            // The tongue does these; the lips round a little.
            'ɹ' | 'r' | 'ɾ' => (Viseme::Rounded, 0.3),
            // The tongue does the rest (t d n l k g h): the jaw stays nearly closed.
            _ => (Viseme::Mid, 0.15),
        }
    }
}

/// What the text says over one frame's chunks of a voice whose text is known: a closure wins (a
/// /b/ may last less than a frame), else the latest phoneme's shape.
#[derive(Debug, Default, Clone)]
struct SaidShape(Option<(Viseme, f32)>);

impl SaidShape {
    fn hear(&mut self, ipa: &str) {
        if !matches!(self.0, Some((Viseme::Closed, _))) {
            self.0 = Some(Viseme::of_phoneme(ipa));
        }
    }

    /// The frame's shape, if any chunk said one; starts the next frame.
    fn take(&mut self) -> Option<(Viseme, f32)> {
        self.0.take()
    }
}

/// One session's mouth, frame by frame: the audio it heard, the text's shapes where the voice
/// knows its text, the acoustic tracker's otherwise, and the driver that blends them into the
/// renderer's jaw and lips. What a render worker runs, and what `lips_bench` measures.
#[derive(Default)]
pub struct Mouth {
    window: AudioWindow,
    tracker: VisemeTracker,
    said: SaidShape,
    driver: MouthDriver,
}

impl Mouth {
    /// One chunk of the frame's audio, with the phoneme its text names (`None`: no text).
    pub fn hear(&mut self, pcm: &[i16], phoneme: Option<&str>) {
        self.window.push(pcm);
        if let Some(ipa) = phoneme {
            self.said.hear(ipa);
        }
    }

    /// After the frame's chunks: its loudness (0..1) and the mouth it shows (open, shape);
    /// starts the next frame.
    pub fn frame(&mut self) -> (f32, f32, f32) {
        let loud = self.window.loudness();
        let heard = self.tracker.step(&self.window.frame());
        let (viseme, intensity) = self.said.take().unwrap_or(heard);
        self.window.tick();
        let (open, shape) = self.driver.step(viseme, intensity);
        (loud, open, shape)
    }

    /// The recent audio (for a lip-sync model's mel spectrogram).
    pub fn window(&self) -> &AudioWindow {
        &self.window
    }
}

/// The acoustic tracker of one session.
pub struct VisemeTracker {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    /// The speech's recent level (dB): follows peaks at once, falls 4 dB a second.
    level: f32,
    /// Frames since the last voiced frame: a silence this soon after speech is a closure.
    since_voice: u32,
}

impl Default for VisemeTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// Below this (dB of full scale) nothing is heard.
const SILENCE_DB: f32 = -48.0;

impl VisemeTracker {
    pub fn new() -> Self {
        let fft = RealFftPlanner::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (std::f32::consts::TAU * n as f32 / N_FFT as f32).cos())
            .collect();
        Self {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            level: SILENCE_DB,
            since_voice: u32::MAX,
        }
    }

    /// The shape of the frame whose audio ends `samples` (its last 40 ms; in -1..1), and how
    /// strongly (0..1).
    pub fn step(&mut self, samples: &[f32]) -> (Viseme, f32) {
        let energy = samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32;
        let db = 10.0 * energy.max(1e-10).log10();
        self.level = (self.level - 4.0 / 25.0).max(db).max(SILENCE_DB);
        let below = self.level - db;
        let recent = self.since_voice < 8;
        if db < SILENCE_DB || below > 18.0 {
            self.since_voice = self.since_voice.saturating_add(1);
            // Silence right after speech is a stop's closure; later it is rest.
            return (if recent { Viseme::Closed } else { Viseme::Rest }, 0.0);
        }
        let [murmur, first, second, friction] = self.bands(samples);
        let total = (murmur + first + second + friction).max(1e-12);
        let (murmur, first, second, friction) = (
            murmur / total,
            first / total,
            second / total,
            friction / total,
        );
        let intensity = ((20.0 - below) / 16.0).clamp(0.0, 1.0);
        if friction > 0.5 && below > 6.0 {
            self.since_voice = self.since_voice.saturating_add(1);
            return (Viseme::LipTeeth, intensity);
        }
        self.since_voice = 0;
        if murmur > 0.8 && friction < 0.02 && below > 5.0 {
            return (Viseme::Closed, intensity);
        }
        let shape = if first > 0.35 && first >= second {
            Viseme::Open
        } else if murmur + first > 0.85 && second + friction < 0.15 {
            Viseme::Rounded
        } else if first < 0.15 && second + friction > 0.2 {
            Viseme::Spread
        } else {
            Viseme::Mid
        };
        (shape, intensity)
    }

    /// Energy in the four bands of the last 32 ms.
    fn bands(&mut self, samples: &[f32]) -> [f32; 4] {
        let take = samples.len().min(N_FFT);
        self.input.fill(0.0);
        for (i, (x, w)) in samples[samples.len() - take..]
            .iter()
            .zip(&self.window[N_FFT - take..])
            .enumerate()
        {
            self.input[N_FFT - take + i] = x * w;
        }
        if self
            .fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .is_err()
        {
            return [0.0; 4];
        }
        let hz = SAMPLE_RATE as f32 / N_FFT as f32;
        let mut bands = [0.0f32; 4];
        for (k, c) in self.spectrum.iter().enumerate() {
            let f = k as f32 * hz;
            let band = match f {
                f if f < 80.0 => continue,
                f if f < 400.0 => 0,
                f if f < 1000.0 => 1,
                f if f < 2500.0 => 2,
                f if f < 7000.0 => 3,
                _ => continue,
            };
            bands[band] += c.norm_sqr();
        }
        bands
    }
}

/// Blends the tracker's shapes into the renderer's mouth: towards a closure fast (a /p/ closes
/// within a frame or two), opening a little slower, like a jaw; the lip shape at its own pace.
#[derive(Debug, Default, Clone)]
pub struct MouthDriver {
    pub open: f32,
    pub shape: f32,
    /// Frames the same shape has held: speech changes shape many times a second.
    held: u32,
    last: Option<Viseme>,
}

impl MouthDriver {
    pub fn step(&mut self, viseme: Viseme, intensity: f32) -> (f32, f32) {
        self.held = if self.last == Some(viseme) {
            self.held.saturating_add(1)
        } else {
            0
        };
        self.last = Some(viseme);
        let (mut open, shape) = viseme.target(intensity);
        // A shape held past a second (a hum, a held note, noise) fades to rest.
        if self.held > 25 {
            open *= (1.0 - (self.held - 25) as f32 / 25.0).max(0.0);
        }
        let rate = if open < self.open {
            if matches!(viseme, Viseme::Closed) {
                1.0
            } else {
                0.6
            }
        } else {
            0.8
        };
        self.open += (open - self.open) * rate;
        self.shape += (shape - self.shape) * 0.5;
        (self.open, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::tts::synthesize;

    /// 25 fps: the visemes and the mouth opening of each frame of `samples`.
    fn trace(samples: &[i16]) -> Vec<(Viseme, f32)> {
        let mut tracker = VisemeTracker::new();
        let mut driver = MouthDriver::default();
        let frame = SAMPLE_RATE as usize / 25;
        (frame..=samples.len())
            .step_by(frame)
            .map(|end| {
                let x: Vec<f32> = samples[end - frame..end]
                    .iter()
                    .map(|s| *s as f32 / 32768.0)
                    .collect();
                let (v, i) = tracker.step(&x);
                (v, driver.step(v, i).0)
            })
            .collect()
    }

    /// Dips of the opening to under 15 % of its maximum between two open stretches.
    fn closures(t: &[(Viseme, f32)]) -> usize {
        let max = t.iter().map(|(_, o)| *o).fold(0.0, f32::max);
        let open: Vec<bool> = t.iter().map(|(_, o)| *o > 0.5 * max).collect();
        let shut: Vec<bool> = t.iter().map(|(_, o)| *o < 0.15 * max).collect();
        let (first, last) = (
            open.iter().position(|o| *o).unwrap_or(0),
            open.iter().rposition(|o| *o).unwrap_or(0),
        );
        let mut dips = 0;
        let mut in_dip = false;
        for i in first..=last {
            if shut[i] && !in_dip {
                dips += 1;
            }
            if shut[i] {
                in_dip = true;
            } else if open[i] {
                in_dip = false;
            }
        }
        dips
    }

    #[actix_web::test]
    async fn the_lips_close_on_p_b_and_m() {
        for (text, bilabials) in [
            ("a ba ba ba ba", 4),
            ("apa apa apa", 3),
            ("a ma ma ma ma", 4),
            ("Peter bought a map of Rome, and we all were amazed.", 4),
        ] {
            let t = trace(&synthesize(text, "en").await.unwrap().samples);
            let found = closures(&t);
            assert!(found >= bilabials, "{text}: {found} closures, {t:?}");
        }
    }

    #[actix_web::test]
    async fn a_held_vowel_stays_open_and_shapes_differ() {
        let t = trace(&synthesize("aah", "en").await.unwrap().samples);
        assert_eq!(closures(&t), 0, "{t:?}");
        assert!(t.iter().any(|(v, _)| *v == Viseme::Open), "{t:?}");
        let t = trace(&synthesize("eee", "en").await.unwrap().samples);
        assert!(t.iter().any(|(v, _)| *v == Viseme::Spread), "{t:?}");
        let t = trace(&synthesize("ooh", "en").await.unwrap().samples);
        assert!(t.iter().any(|(v, _)| *v == Viseme::Rounded), "{t:?}");
    }

    #[test]
    fn silence_noise_and_a_held_note_do_not_flap_the_lips() {
        let n = SAMPLE_RATE as usize * 4;
        let silence = vec![0i16; n];
        assert!(trace(&silence)
            .iter()
            .all(|(v, o)| *v == Viseme::Rest && *o == 0.0));
        // White noise at speech level (a fixed generator, so the test is the same every run).
        let mut seed = 12345u32;
        let noise: Vec<i16> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((seed >> 16) as i16 as i32 / 8) as i16
            })
            .collect();
        // A held note: 220 Hz with its harmonics, like an instrument.
        let note: Vec<i16> = (0..n)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                let x: f32 = (1..6)
                    .map(|h| (std::f32::consts::TAU * 220.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                (x * 4000.0) as i16
            })
            .collect();
        for (name, sound) in [("noise", noise), ("note", note)] {
            let t = trace(&sound);
            let jumps = t
                .windows(2)
                .filter(|w| (w[1].1 - w[0].1).abs() > 0.1)
                .count();
            assert!(jumps <= 3, "{name}: the mouth jumped {jumps} times: {t:?}");
            let late = &t[t.len() / 2..];
            assert!(
                late.iter().all(|(_, o)| *o < 0.05),
                "{name}: still open after 2 s: {late:?}"
            );
        }
    }
}
