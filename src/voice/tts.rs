//! Local text-to-speech through espeak-ng: a process per utterance (off the actors), its WAV read
//! to the end (the header's length is bogus when streaming) and resampled to 16 kHz.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::resample::resample;
use super::SAMPLE_RATE;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TtsError {
    #[error("espeak-ng could not be started ({0}); install it with `make setup`")]
    Spawn(String),
    #[error("espeak-ng failed: {0}")]
    Failed(String),
    #[error("espeak-ng produced no usable audio: {0}")]
    BadAudio(String),
}

/// Speaks `text` with `voice` (an espeak-ng voice name) into 16 kHz mono samples. The process
/// (fork, exec, the wait) and the decoding run on the blocking pool, never on an actor's thread.
pub async fn synthesize(text: &str, voice: &str) -> Result<Vec<i16>, TtsError> {
    let (text, voice) = (text.replace(['\r', '\n'], " "), voice.to_string());
    tokio::task::spawn_blocking(move || synthesize_blocking(&text, &voice))
        .await
        .map_err(|e| TtsError::Failed(e.to_string()))?
}

fn synthesize_blocking(text: &str, voice: &str) -> Result<Vec<i16>, TtsError> {
    let mut child = Command::new("espeak-ng")
        // Text comes on stdin, so nothing a client writes can be read as an option.
        .args(["--stdout", "-v", voice, "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TtsError::Spawn(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| TtsError::Spawn("no stdin".into()))?;
    let input = text.to_string();
    // Written and read from threads of their own: a long text must not deadlock on a full pipe.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| TtsError::Spawn("no stdout".into()))?;
    let reader = std::thread::spawn(move || {
        let mut wav = Vec::new();
        stdout.read_to_end(&mut wav).map(|_| wav)
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TtsError::Failed(format!("timed out after {TIMEOUT:?}")));
            }
            Err(e) => return Err(TtsError::Failed(e.to_string())),
        }
    };
    let _ = writer.join();
    let wav = reader
        .join()
        .map_err(|_| TtsError::Failed("reading its output crashed".into()))?
        .map_err(|e| TtsError::Failed(e.to_string()))?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(TtsError::Failed(stderr.trim().to_string()));
    }
    let (rate, samples) = parse_wav(&wav)?;
    Ok(resample(&samples, rate, SAMPLE_RATE))
}

/// A synthesis that takes longer is killed.
const TIMEOUT: Duration = Duration::from_secs(20);

type Key = (String, String);
type Slot = Arc<OnceCell<Result<Arc<[i16]>, TtsError>>>;
/// The slots by key, and the keys oldest first (for eviction).
type Entries = (HashMap<Key, Slot>, VecDeque<Key>);

/// Recent syntheses, shared by every session of a server: a `speak` fanned out to a thousand
/// sessions runs espeak-ng once, and the others wait for that one run (single flight).
#[derive(Clone, Default)]
pub struct TtsCache {
    inner: Arc<Mutex<Entries>>,
}

/// Texts kept; the oldest goes first.
const CACHE_ENTRIES: usize = 128;

impl TtsCache {
    pub async fn synthesize(&self, text: &str, voice: &str) -> Result<Arc<[i16]>, TtsError> {
        let key = (voice.to_string(), text.to_string());
        let slot = {
            // unwrap: the lock is never held across a panic (plain map operations).
            let mut guard = self.inner.lock().unwrap();
            let (map, order) = &mut *guard;
            match map.get(&key) {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Slot::default();
                    map.insert(key.clone(), slot.clone());
                    order.push_back(key.clone());
                    while order.len() > CACHE_ENTRIES {
                        if let Some(old) = order.pop_front() {
                            map.remove(&old);
                        }
                    }
                    slot
                }
            }
        };
        let result = slot
            .get_or_init(|| async { synthesize(text, voice).await.map(Arc::from) })
            .await
            .clone();
        if result.is_err() {
            // A failure is not remembered: the next try runs again.
            let mut guard = self.inner.lock().unwrap();
            if guard.0.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                guard.0.remove(&key);
                guard.1.retain(|k| k != &key);
            }
        }
        result
    }
}

/// Mono s16 samples and their rate from a WAV. espeak-ng streams its WAV with a placeholder data
/// length (0x7ffff000 bytes), so the samples are read until the bytes end rather than counted.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), TtsError> {
    let bad = |e: hound::Error| TtsError::BadAudio(e.to_string());
    let mut reader = hound::WavReader::new(bytes).map_err(bad)?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_rate == 0
    {
        return Err(TtsError::BadAudio(format!(
            "{:?} samples, {} channels, {} bits, {} Hz",
            spec.sample_format, spec.channels, spec.bits_per_sample, spec.sample_rate
        )));
    }
    let mut samples = Vec::new();
    for sample in reader.samples::<i16>() {
        match sample {
            Ok(sample) => samples.push(sample),
            // Reading from memory fails only where the bytes end (hound says so with an I/O
            // error), short of the length the header claims: that is the end of the speech.
            Err(hound::Error::IoError(_)) => break,
            Err(e) => return Err(bad(e)),
        }
    }
    Ok((spec.sample_rate, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: &[i16], bogus_len: bool) -> Vec<u8> {
        let mut out = b"RIFF\xff\xff\xff\xffWAVEfmt ".to_vec();
        out.extend(16u32.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(1u16.to_le_bytes());
        out.extend(rate.to_le_bytes());
        out.extend((rate * 2).to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(16u16.to_le_bytes());
        out.extend(b"data");
        out.extend(
            if bogus_len {
                // What espeak-ng writes when it streams (it cannot seek back to fix it).
                0x7fff_f000
            } else {
                samples.len() as u32 * 2
            }
            .to_le_bytes(),
        );
        for s in samples {
            out.extend(s.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_to_the_end_despite_a_bogus_length() {
        let (rate, samples) = parse_wav(&wav(22_050, &[1, -2, 3], true)).unwrap();
        assert_eq!((rate, samples), (22_050, vec![1, -2, 3]));
        assert!(parse_wav(b"nope").is_err());
    }

    #[test]
    fn reads_every_sample_of_a_real_espeak_stream() {
        let output = Command::new("espeak-ng")
            .args(["--stdout", "-v", "en", "Every sample counts."])
            .output()
            .expect("espeak-ng runs (`make setup` installs it)");
        assert!(output.status.success());
        let wav = output.stdout;
        let claimed = u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]) as usize;
        let (rate, samples) = parse_wav(&wav).unwrap();
        assert_eq!(rate, 22_050);
        // The canonical 44-byte header, then nothing but samples, far fewer than claimed.
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(samples.len(), (wav.len() - 44) / 2);
        assert!(claimed > wav.len(), "{claimed}");
        assert_eq!(
            samples[samples.len() - 1].to_le_bytes(),
            wav[wav.len() - 2..]
        );
    }

    #[actix_web::test]
    async fn espeak_speaks() {
        // `make setup` installs espeak-ng; without it this fails with the sentence that says so.
        let samples = synthesize("Hello there, this is a test.", "en")
            .await
            .unwrap();
        // About two seconds of speech, and not silence.
        assert!(samples.len() > SAMPLE_RATE as usize, "{}", samples.len());
        assert!(
            samples
                .iter()
                .map(|s| s.unsigned_abs() as u64)
                .max()
                .unwrap()
                > 1000
        );
    }
}
