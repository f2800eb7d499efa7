//! Local text-to-speech through espeak-ng: a process per utterance (off the actors), its WAV read
//! to the end (the header's length is bogus when streaming) and resampled to 16 kHz.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

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

/// Speaks `text` with `voice` (an espeak-ng voice name) into 16 kHz mono samples.
pub async fn synthesize(text: &str, voice: &str) -> Result<Vec<i16>, TtsError> {
    let mut child = Command::new("espeak-ng")
        // Text comes on stdin, so nothing a client writes can be read as an option.
        .args(["--stdout", "-v", voice, "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TtsError::Spawn(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| TtsError::Spawn("no stdin".into()))?;
    let input = text.replace(['\r', '\n'], " ");
    stdin
        .write_all(input.as_bytes())
        .await
        .map_err(|e| TtsError::Failed(e.to_string()))?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| TtsError::Failed("timed out".into()))?
        .map_err(|e| TtsError::Failed(e.to_string()))?;
    if !output.status.success() {
        return Err(TtsError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let (rate, samples) = parse_wav(&output.stdout)?;
        Ok(resample(&samples, rate, SAMPLE_RATE))
    })
    .await
    .map_err(|e| TtsError::Failed(e.to_string()))?
}

/// Mono s16 samples and their rate from a WAV; the data chunk is read to the end of the bytes.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), TtsError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(TtsError::BadAudio("not a WAV stream".into()));
    }
    let mut pos = 12;
    let mut rate = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = pos + 8;
        match id {
            b"fmt " => {
                if body + 16 > bytes.len() {
                    return Err(TtsError::BadAudio("short fmt chunk".into()));
                }
                let format = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
                let channels = u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]);
                let bits = u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]);
                if format != 1 || channels != 1 || bits != 16 {
                    return Err(TtsError::BadAudio(format!(
                        "format {format}, {channels} channels, {bits} bits"
                    )));
                }
                rate = Some(u32::from_le_bytes([
                    bytes[body + 4],
                    bytes[body + 5],
                    bytes[body + 6],
                    bytes[body + 7],
                ]));
                pos = body + len;
            }
            b"data" => {
                let rate = rate.ok_or_else(|| TtsError::BadAudio("data before fmt".into()))?;
                let samples = bytes[body..]
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                return Ok((rate, samples));
            }
            _ => pos = body + len + (len & 1),
        }
    }
    Err(TtsError::BadAudio("no data chunk".into()))
}

/// Linear-interpolation resampling; enough for speech going to a lip-sync renderer.
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let out_len = (samples.len() as u64 * to as u64 / from as u64) as usize;
    let step = from as f64 / to as f64;
    (0..out_len)
        .map(|i| {
            let x = i as f64 * step;
            let j = x as usize;
            let frac = x - j as f64;
            let a = samples[j.min(samples.len() - 1)] as f64;
            let b = samples[(j + 1).min(samples.len() - 1)] as f64;
            (a + (b - a) * frac).round() as i16
        })
        .collect()
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
                u32::MAX
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
    fn resamples_22050_to_16000() {
        let input: Vec<i16> = (0..22_050).map(|i| (i % 100) as i16).collect();
        assert_eq!(resample(&input, 22_050, 16_000).len(), 16_000);
        assert_eq!(resample(&[5, 5], 16_000, 16_000), vec![5, 5]);
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
