//! Lip benchmark (issue 23): how well the rendered lips say the words. Twenty sentences, kept out
//! of any tuning, are spoken by espeak-ng; each is played through the renderer's two mouth paths
//! frame by frame as a session plays it (20 ms chunks, a frame every 40 ms):
//! - text: the phonemes espeak-ng says it spoke (the path of `speak`);
//! - aligned: the sentence's characters timed as an aligning voice (ElevenLabs) times them, read
//!   by the agent path's spelling rules (`voice::elevenlabs::alignment`). The timing is a forced
//!   aligner's: each word's letters matched in order to the phonemes espeak spoke in it;
//! - sound: the acoustic viseme tracker on the same audio, no text (the path of any other voice).
//!
//! Every frame is rendered, and the face mesh model (the same mediapipe model generation uses)
//! measures the inner-lip gap on the rendered frame. Against espeak-ng's own phoneme timeline:
//! - the correlation of the gap with the phoneme's openness (below);
//! - lips closed (gap under 15 % of its maximum) at the middle of /p b m/;
//! - the gap at the middle of open vowels (at least 60 % of its maximum);
//! - opening onsets: where the gap, rising after a /p b m/, crosses 30 % of its maximum, against
//!   the onset of the vowel that follows.
//!
//! Openness is phonetics, not the renderer's own table: open vowels 1, mid vowels 0.6, close
//! vowels and glides 0.3, /f v/ 0.1, /p b m/ and pauses 0, other consonants 0.2.
//!
//! ```text
//! make bench-lips                     # or:
//! cargo run --release --example lips_bench -- [--assets .setup] [--sheet PNG] [--tune]
//! ```
//!
//! `--tune` scores the tuning texts instead (issue 23's sentence and the unit tests'), which is
//! what any change to the shapes may be judged on; the held-out scores are the ones reported.
//!
//! `--sheet PNG` draws the mouth of issue 23's sentence, every second frame, three times: the
//! renderer before issue 23 (grey bar: the loudness driver, the warp around the landmarks), the
//! sound path (blue) and the text path (green) through the face mesh, so anyone can look
//! (`load-tests/lip_sheet.png`). `--stills DIR` writes the mouth at `open` −1, −0.5, 0, 0.5 and 1,
//! three times its size. `--portraits` scores the six faces of `.setup/images/group.jpg` too (their
//! stills in `DIR/face1` … with `--stills`).

use std::path::PathBuf;

use avatar_supervisor::media::avatar::{self, MeshState};
use avatar_supervisor::media::face::FaceDetector;
use avatar_supervisor::media::mesh::{points, FaceMesher};
use avatar_supervisor::media::onnx::Onnx;
use avatar_supervisor::media::render::{render_into, FrameParams, Prepared};
use avatar_supervisor::media::visemes::{Mouth, Viseme};
use avatar_supervisor::voice::elevenlabs::alignment;
use avatar_supervisor::voice::tts::{synthesize, Phoneme, Speech};
use avatar_supervisor::voice::{CHUNK_SAMPLES, SAMPLE_RATE};

/// Held out: never used to tune the tracker, the phoneme shapes or the driver (Harvard sentences).
const SENTENCES: [&str; 20] = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
];

/// What tuning may look at (`--tune`): issue 23's sentence and the unit tests' texts. The scores
/// that count are the held-out ones.
const TUNING: [&str; 6] = [
    "Peter bought a map of Rome, and we all were amazed.",
    "Hello there, this is a test.",
    "a ba ba ba ba",
    "apa apa apa",
    "a ma ma ma ma",
    "Every sample counts.",
];

/// The sentence of the frame sheet (issue 23's own, used in tuning).
const SHEET_SENTENCE: &str = "Peter bought a map of Rome, and we all were amazed.";

/// Samples a frame lasts (25 fps).
const FRAME: usize = SAMPLE_RATE as usize / 25;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A phoneme's sound, its stress and length marks dropped.
fn sound(ipa: &str) -> String {
    ipa.chars()
        .filter(|c| !matches!(c, 'ˈ' | 'ˌ' | 'ː'))
        .collect()
}

fn is_bilabial(ipa: &str) -> bool {
    matches!(sound(ipa).chars().next(), Some('p' | 'b' | 'm'))
}

fn is_open_vowel(ipa: &str) -> bool {
    matches!(
        sound(ipa).chars().next(),
        Some('a' | 'ɑ' | 'æ' | 'ʌ' | 'ɒ' | 'ɐ')
    )
}

fn is_vowel(ipa: &str) -> bool {
    matches!(
        sound(ipa).chars().next(),
        Some(
            'a' | 'ɑ'
                | 'æ'
                | 'ʌ'
                | 'ɒ'
                | 'ɐ'
                | 'ɔ'
                | 'o'
                | 'ɛ'
                | 'ɜ'
                | 'e'
                | 'ə'
                | 'ɚ'
                | 'i'
                | 'ɪ'
                | 'u'
                | 'ʊ'
                | 'ᵻ'
        )
    )
}

/// How open the mouth is for a phoneme, by phonetics (see the module's text).
fn openness(ipa: &str) -> f32 {
    let s = sound(ipa);
    match s.chars().next() {
        None => 0.0,
        Some('p' | 'b' | 'm') => 0.0,
        Some('f' | 'v') => 0.1,
        Some('a' | 'ɑ' | 'æ' | 'ʌ' | 'ɒ' | 'ɐ' | 'ɔ') => 1.0,
        Some('ɛ' | 'ɜ' | 'e' | 'ə' | 'ɚ' | 'o' | 'ᵻ') => 0.6,
        Some('i' | 'ɪ' | 'u' | 'ʊ' | 'j' | 'w') => 0.3,
        Some(_) => 0.2,
    }
}

/// One rendered frame: the sample heard while it shows, and the mouth it was drawn with.
struct Drawn {
    at: usize,
    open: f32,
    shape: f32,
}

/// The mouth of every frame of `speech` (and half a second of silence after), as a render
/// worker drives it: the frame's two chunks, the shape `said` names where there is a timeline,
/// else the sound's.
fn drive(speech: &Speech, said: Option<&[Phoneme]>) -> Vec<Drawn> {
    let samples = &speech.samples;
    let mut mouth = Mouth::default();
    let mut out = Vec::new();
    let total = samples.len() + SAMPLE_RATE as usize / 2;
    for end in (FRAME..=total).step_by(FRAME) {
        for start in [end - FRAME, end - FRAME + CHUNK_SAMPLES] {
            if start >= samples.len() {
                continue;
            }
            let stop = (start + CHUNK_SAMPLES).min(samples.len());
            let phoneme = said.map(|said| Speech::chunk_phoneme(said, start, stop));
            mouth.hear(&samples[start..stop], phoneme.as_deref());
        }
        let (_, open, shape) = mouth.frame();
        // The frame shows while the middle of its last chunk is heard.
        out.push(Drawn {
            at: end - CHUNK_SAMPLES / 2,
            open,
            shape,
        });
    }
    out
}

/// The inner-lip gap of each frame, measured by the face mesh on the rendered frame (pixels; NaN
/// where the mesh model sees no face).
fn gaps(prepared: &Prepared, src: &[u8], mesher: &FaceMesher, frames: &[Drawn]) -> Vec<f32> {
    let (w, h) = (prepared.width(), prepared.height());
    let mut out = vec![0u8; w * h * 3];
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = FrameParams {
                t: i as f32 / 25.0,
                open: f.open,
                shape: f.shape,
                blink: 0.0,
            };
            render_into(prepared, src, &p, &mut out);
            let image = image::RgbImage::from_raw(w as u32, h as u32, out.clone()).expect("frame");
            match mesher.mesh_or_why(&image, &prepared.model().face) {
                MeshState::Ok { points: p } => {
                    let (a, b) = (p[points::INNER_UPPER_LIP], p[points::INNER_LOWER_LIP]);
                    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
                }
                // The caller says how many frames lost the face.
                MeshState::Unavailable { .. } => f32::NAN,
            }
        })
        .collect()
}

fn pearson(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len() as f32;
    let (mx, my) = (x.iter().sum::<f32>() / n, y.iter().sum::<f32>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    sxy / (sxx * syy).sqrt().max(1e-9)
}

/// One path's frames over every sentence: (speech, frames, gaps).
type Run<'a> = Vec<(&'a Speech, Vec<Drawn>, Vec<f32>)>;

fn score(name: &str, run: &Run) {
    let max = run
        .iter()
        .flat_map(|(_, _, g)| g.iter().copied())
        .fold(0.0f32, f32::max);
    let (mut gap_all, mut open_all) = (Vec::new(), Vec::new());
    let (mut closures, mut bilabials, mut opens, mut open_vowels) = (0, 0, 0, 0);
    let mut onsets: Vec<f32> = Vec::new();
    for (speech, frames, gaps) in run {
        let ph = &speech.phonemes;
        for (f, g) in frames.iter().zip(gaps) {
            gap_all.push(*g);
            open_all.push(openness(&Speech::phoneme_at(ph, f.at)));
        }
        let nearest = |sample: usize| {
            frames
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| f.at.abs_diff(sample))
                .map_or(0, |(i, _)| i)
        };
        for k in 0..ph.len() {
            let end = ph.get(k + 1).map_or(speech.samples.len(), |p| p.at);
            let mid = (ph[k].at + end) / 2;
            if is_bilabial(&ph[k].ipa) {
                bilabials += 1;
                if gaps[nearest(mid)] < 0.15 * max {
                    closures += 1;
                }
                // The vowel after it: where the gap, rising from the closure, crosses 30 %.
                if let Some(next) = ph.get(k + 1).filter(|p| is_vowel(&p.ipa)) {
                    let from = nearest(mid);
                    let level = 0.3 * max;
                    if let Some(i) =
                        (from + 1..gaps.len()).find(|&i| gaps[i] >= level && gaps[i - 1] < level)
                    {
                        let (a, b) = (gaps[i - 1], gaps[i]);
                        let (ta, tb) = (frames[i - 1].at as f32, frames[i].at as f32);
                        let cross = ta + (tb - ta) * (level - a) / (b - a).max(1e-6);
                        onsets.push((cross - next.at as f32) * 1000.0 / SAMPLE_RATE as f32);
                    }
                }
            }
            if is_open_vowel(&ph[k].ipa) {
                open_vowels += 1;
                if gaps[nearest(mid)] >= 0.6 * max {
                    opens += 1;
                }
            }
        }
    }
    let mut abs: Vec<f32> = onsets.iter().map(|d| d.abs()).collect();
    abs.sort_by(f32::total_cmp);
    let within = abs.iter().filter(|d| **d <= 40.0).count();
    let mut signed = onsets.clone();
    signed.sort_by(f32::total_cmp);
    println!(
        "{name}: correlation {:.2} over {} frames; closed at {closures}/{bilabials} /p b m/ ({:.0} %); \
         open at {opens}/{open_vowels} open vowels ({:.0} %); opening onsets: median {:+.0} ms, \
         |median| {:.0} ms, {within}/{} within 40 ms; max gap {max:.1} px",
        pearson(&gap_all, &open_all),
        gap_all.len(),
        100.0 * closures as f32 / bilabials.max(1) as f32,
        100.0 * opens as f32 / open_vowels.max(1) as f32,
        signed.get(signed.len() / 2).copied().unwrap_or(f32::NAN),
        abs.get(abs.len() / 2).copied().unwrap_or(f32::NAN),
        abs.len(),
    );
}

fn main() {
    let assets = PathBuf::from(arg("--assets").unwrap_or_else(|| ".setup".into()));
    let onnx =
        Onnx::load(Some(assets.join("libonnxruntime.so"))).expect("onnxruntime (make setup)");
    let detector = FaceDetector::load(&onnx, &assets.join("models/centerface.onnx"), 0.5)
        .expect("face model (make setup)");
    let mesher = FaceMesher::load(&onnx, &assets.join("models/face_landmark.onnx"))
        .expect("face mesh model (make setup)");
    let portrait = image::open(assets.join("images/astronaut.png"))
        .expect("astronaut.png (make setup)")
        .to_rgb8();
    let face = detector.detect(&portrait).expect("detect").remove(0);
    let (mut model, crop) = avatar::build(&portrait, &face, "1:1", 512);
    // As generation does: the mesh of the crop, which shapes the lips.
    model.mesh = Some(mesher.mesh_or_why(&crop, &model.face));
    let (model, base) = avatar::prepare(&model, &crop, "1:1", 512);
    let mut bare = model.clone();
    bare.mesh = None;
    let before = Prepared::new(bare, base.clone());
    let prepared = Prepared::new(model, base);
    let src = prepared.base.as_slice().expect("contiguous").to_vec();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let speak = |text: &str| {
        runtime
            .block_on(synthesize(text, "en"))
            .expect("espeak-ng (make setup)")
    };

    if let Some(path) = arg("--sheet") {
        lip_sheet(&prepared, &before, &src, &speak(SHEET_SENTENCE), &path);
    }

    let tune = std::env::args().any(|a| a == "--tune");
    let texts: &[&str] = if tune { &TUNING } else { &SENTENCES };
    let speeches: Vec<(&str, Speech)> = texts.iter().map(|s| (*s, speak(s))).collect();
    let scale = openings();
    if let Some(dir) = arg("--stills") {
        stills(&prepared, &src, &scale, &dir);
    }
    let label = if tune { "tuning" } else { "held-out" };
    report(
        &prepared,
        &mesher,
        &speeches,
        &format!("the astronaut, {label}"),
    );
    if std::env::args().any(|a| a == "--portraits") {
        let group = image::open(assets.join("images/group.jpg"))
            .expect("group.jpg (make setup)")
            .to_rgb8();
        let mut faces = detector.detect(&group).expect("detect");
        faces.sort_by(|a, b| a.x.total_cmp(&b.x));
        for (k, face) in faces.iter().enumerate() {
            let (mut model, crop) = avatar::build(&group, face, "1:1", 512);
            let label = format!(
                "group.jpg face {} of {} ({:.0} px wide in the photo)",
                k + 1,
                faces.len(),
                face.w
            );
            match mesher.mesh_or_why(&crop, &model.face) {
                mesh @ MeshState::Ok { .. } => model.mesh = Some(mesh),
                MeshState::Unavailable { reason } => {
                    println!("{label}: no face mesh ({reason}): the landmark warp, not scored");
                    continue;
                }
            }
            let (model, base) = avatar::prepare(&model, &crop, "1:1", 512);
            let prepared = Prepared::new(model, base);
            if let Some(dir) = arg("--stills") {
                let dir = format!("{dir}/face{}", k + 1);
                std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
                stills(
                    &prepared,
                    prepared.base.as_slice().expect("contiguous"),
                    &scale,
                    &dir,
                );
            }
            report(&prepared, &mesher, &speeches, &label);
        }
    }
}

/// The mouth at `open` −1, −0.5, 0, 0.5 and 1, neutral in shape.
fn openings() -> Vec<Drawn> {
    [-1.0, -0.5, 0.0, 0.5, 1.0]
        .into_iter()
        .map(|open| Drawn {
            at: 0,
            open,
            shape: 0.0,
        })
        .collect()
}

enum Path {
    Text,
    Aligned,
    Sound,
}

/// The phoneme timeline an ElevenLabs-like alignment of `text` as `speech` says it gives, read by
/// the agent path's spelling rules. The character timing is what a forced aligner gives: within
/// each word (espeak's word events), its letters are matched in order to the phonemes spoken
/// there ([`match_letters`]); a letter starts at its phoneme (letters sharing one split it), a
/// phoneme no letter writes belongs to the letter before, and the spaces and punctuation after a
/// word start where its last phoneme ends (a pause, if espeak made one there).
fn aligned(text: &str, speech: &Speech) -> Vec<Phoneme> {
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let (mut starts, mut durations) = (vec![0.0; chars.len()], vec![0.0; chars.len()]);
    let ms = |sample: usize| sample as f64 * 1000.0 / f64::from(SAMPLE_RATE);
    let ph = &speech.phonemes;
    let words = &speech.words;
    for (k, word) in words.iter().enumerate() {
        let next = words.get(k + 1);
        let span_end = next.map_or(speech.samples.len(), |n| n.at);
        let to = next.map_or(chars.len(), |n| n.chars.start).min(chars.len());
        let from = word.chars.start.min(to);
        // The word's sounds, and where they end (the next phoneme, a pause or the next word).
        let first = ph.partition_point(|p| p.at < word.at);
        let last = ph.partition_point(|p| p.at < span_end);
        let spoken: Vec<&Phoneme> = ph[first..last]
            .iter()
            .filter(|p| !p.ipa.is_empty())
            .collect();
        // The phoneme after the word's last sound (a pause, or the next word's first).
        let sounds_end = (first..last)
            .rfind(|&i| !ph[i].ipa.is_empty())
            .map_or(span_end, |i| {
                ph.get(i + 1).map_or(span_end, |p| p.at).min(span_end)
            });
        let letters: Vec<usize> = (from..to)
            .filter(|&i| chars[i].chars().all(char::is_alphabetic))
            .collect();
        let mut tail = ms(span_end);
        if !spoken.is_empty() && !letters.is_empty() {
            let matched = match_letters(
                &letters
                    .iter()
                    .map(|&i| chars[i].as_str())
                    .collect::<Vec<_>>(),
                &spoken.iter().map(|p| &*p.ipa).collect::<Vec<_>>(),
            );
            for (n, &i) in letters.iter().enumerate() {
                let j = matched[n];
                // Letters sharing a phoneme split it; unwritten phonemes after it go with it.
                let sharing: Vec<usize> = (0..letters.len()).filter(|&m| matched[m] == j).collect();
                let until = matched.get(n + 1).copied().filter(|&next| next != j);
                let (t0, t1) = (
                    ms(spoken[j].at),
                    until.map_or_else(|| ms(sounds_end), |next| ms(spoken[next].at)),
                );
                let share = (t1 - t0).max(0.0) / sharing.len() as f64;
                let rank = sharing.iter().position(|&m| m == n).unwrap_or(0);
                starts[i] = t0 + rank as f64 * share;
                durations[i] = if until.is_some() || rank + 1 < sharing.len() {
                    share
                } else {
                    (ms(sounds_end) - starts[i]).max(0.0)
                };
            }
            tail = ms(sounds_end);
        }
        for i in (from..to).filter(|i| !letters.contains(i)) {
            starts[i] = tail;
            durations[i] = (ms(span_end) - tail).max(0.0);
        }
    }
    let alignment = serde_json::json!({
        "chars": chars,
        "char_start_times_ms": starts,
        "char_durations_ms": durations,
    });
    alignment::timeline(&alignment, speech.samples.len())
        .expect("a well-formed alignment")
        .map_or_else(Vec::new, |said| said.to_vec())
}

/// A forced aligner's match of a word's letters to its spoken phonemes, in order: for each letter
/// the phoneme it is spoken in. Matching a letter to a phoneme of the same mouth shape costs
/// nothing, a vowel letter to another vowel (a consonant to another consonant) 0.4, else 1; an
/// unwritten phoneme 0.7, and a silent letter (sharing the phoneme before) 0.7 where it has that
/// phoneme's shape, else 0.9.
fn match_letters(letters: &[&str], phonemes: &[&str]) -> Vec<usize> {
    let (k, m) = (letters.len(), phonemes.len());
    let shape = |ipa: &str| Viseme::of_phoneme(ipa).0;
    let vowel_letter = |l: &str| matches!(l, "a" | "e" | "i" | "o" | "u" | "y");
    let like = |letter: &str, phoneme: &str| {
        if shape(letter) == shape(phoneme) {
            0.0
        } else if vowel_letter(letter) == is_vowel(phoneme) {
            // Vowel letters write vowels, consonants consonants.
            0.4
        } else {
            1.0
        }
    };
    let mut cost = vec![vec![f32::INFINITY; m + 1]; k + 1];
    // 0: matched, 1: silent letter, 2: unwritten phoneme.
    let mut step = vec![vec![0u8; m + 1]; k + 1];
    cost[0][0] = 0.0;
    for i in 0..=k {
        for j in 0..=m {
            if i > 0 && j > 0 {
                let c = cost[i - 1][j - 1] + like(letters[i - 1], phonemes[j - 1]);
                if c < cost[i][j] {
                    (cost[i][j], step[i][j]) = (c, 0);
                }
                let silent = if shape(letters[i - 1]) == shape(phonemes[j - 1]) {
                    0.7
                } else {
                    0.9
                };
                let c = cost[i - 1][j] + silent;
                if c < cost[i][j] {
                    (cost[i][j], step[i][j]) = (c, 1);
                }
            }
            if j > 0 {
                let c = cost[i][j - 1] + 0.7;
                if c < cost[i][j] {
                    (cost[i][j], step[i][j]) = (c, 2);
                }
            }
        }
    }
    let mut matched = vec![0; k];
    let (mut i, mut j) = (k, m);
    while i > 0 {
        match step[i][j] {
            0 => {
                matched[i - 1] = j - 1;
                (i, j) = (i - 1, j - 1);
            }
            1 => {
                matched[i - 1] = j - 1;
                i -= 1;
            }
            _ => j -= 1,
        }
    }
    matched
}

/// Scores one portrait's lips over `speeches`, all three paths, and prints them under `label`.
fn report(prepared: &Prepared, mesher: &FaceMesher, speeches: &[(&str, Speech)], label: &str) {
    let src = prepared.base.as_slice().expect("contiguous");
    let scale = openings();
    let scale: Vec<String> = gaps(prepared, src, mesher, &scale)
        .iter()
        .zip(&scale)
        .map(|(g, d)| format!("{:+.1}: {g:.1} px", d.open))
        .collect();
    println!(
        "{label}: {} sentences, {:.1} s of speech; the gap at `open` {}",
        speeches.len(),
        speeches.iter().map(|(_, s)| s.samples.len()).sum::<usize>() as f32 / SAMPLE_RATE as f32,
        scale.join(", ")
    );
    for (name, path) in [
        ("text path (espeak phonemes)", Path::Text),
        ("aligned path (characters, spelling rules)", Path::Aligned),
        ("sound path (audio alone)", Path::Sound),
    ] {
        let run: Run = speeches
            .iter()
            .map(|(text, s)| {
                let aligned = aligned(text, s);
                let said = match path {
                    Path::Text => Some(&s.phonemes[..]),
                    Path::Aligned => Some(&aligned[..]),
                    Path::Sound => None,
                };
                let frames = drive(s, said);
                let g = gaps(prepared, src, mesher, &frames);
                (s, frames, g)
            })
            .collect();
        let lost = run
            .iter()
            .flat_map(|(_, _, g)| g.iter().filter(|g| g.is_nan()))
            .count();
        if lost > 0 {
            println!("  {name}: the face mesh lost the face on {lost} rendered frames, not scored");
            continue;
        }
        score(&format!("  {name}"), &run);
    }
}

/// Mouth crops of every second frame of `speech`: the loudness driver the renderer had before
/// the visemes, the sound path, the text path; a row each, 13 frames a row.
/// The lower face at each of `frames`' openings, three times its size, one PNG each in `dir`.
fn stills(prepared: &Prepared, src: &[u8], frames: &[Drawn], dir: &str) {
    let (w, h) = (prepared.width(), prepared.height());
    let r = prepared.model().mouth.region;
    let mut out = vec![0u8; w * h * 3];
    for f in frames {
        let p = FrameParams {
            open: f.open,
            shape: f.shape,
            ..Default::default()
        };
        render_into(prepared, src, &p, &mut out);
        let frame = image::RgbImage::from_raw(w as u32, h as u32, out.clone()).expect("frame");
        let (x, y) = (r.x.max(0.0) as u32, r.y.max(0.0) as u32);
        let mouth = image::imageops::crop_imm(&frame, x, y, r.w as u32, r.h as u32).to_image();
        let big = image::imageops::resize(
            &mouth,
            3 * mouth.width(),
            3 * mouth.height(),
            image::imageops::FilterType::CatmullRom,
        );
        let path = format!("{dir}/open{:+.1}.png", f.open);
        big.save(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

fn lip_sheet(prepared: &Prepared, before: &Prepared, src: &[u8], speech: &Speech, path: &str) {
    let (w, h) = (prepared.width(), prepared.height());
    let r = prepared.model().mouth.region;
    let (cx, cy) = (r.x.max(0.0) as usize, r.y.max(0.0) as usize);
    let (cw, ch) = ((r.w as usize).min(w - cx), (r.h as usize).min(h - cy));
    let samples = &speech.samples;
    // The driver before the visemes: loudness opens, zero crossings spread or round.
    let (mut old_open, mut old_shape) = (0.0f32, 0.0f32);
    let old: Vec<(f32, f32)> = (FRAME..=samples.len())
        .step_by(FRAME)
        .map(|end| {
            let x: Vec<f32> = samples[end - FRAME..end]
                .iter()
                .map(|s| *s as f32 / 32768.0)
                .collect();
            let energy = x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32;
            let loud = ((10.0 * energy.max(1e-10).log10() + 50.0) / 35.0).clamp(0.0, 1.0);
            let crossings = x
                .windows(2)
                .filter(|p| (p[0] >= 0.0) != (p[1] >= 0.0))
                .count() as f32
                / x.len() as f32;
            let bright = ((crossings - 0.08) / 0.12).clamp(-1.0, 1.0);
            let target = loud.powf(0.8);
            old_open += (target - old_open) * if target > old_open { 0.7 } else { 0.45 };
            old_shape += (bright - old_shape) * 0.5;
            (old_open, old_shape)
        })
        .collect();
    /// A row's mouths (open, shape) and its bar's colour.
    type Row = (Vec<(f32, f32)>, [u8; 3]);
    let pick = |frames: Vec<Drawn>| frames.into_iter().map(|f| (f.open, f.shape)).collect();
    let rows: [Row; 3] = [
        (old, [150, 150, 150]),
        (pick(drive(speech, None)), [40, 110, 200]),
        (pick(drive(speech, Some(&speech.phonemes))), [40, 170, 60]),
    ];
    let count = rows[0].0.len().div_ceil(2);
    let (per_row, bar) = (13, 4);
    let bands = count.div_ceil(per_row);
    let (sw, sh) = (per_row * cw, bands * 3 * (ch + bar));
    let mut sheet = image::RgbImage::from_pixel(sw as u32, sh as u32, image::Rgb([255, 255, 255]));
    let mut out = vec![0u8; w * h * 3];
    for (n, (mouths, color)) in rows.iter().enumerate() {
        for k in 0..count {
            let Some(&(open, shape)) = mouths.get(2 * k) else {
                continue;
            };
            let p = FrameParams {
                t: 2.0 * k as f32 / 25.0,
                open,
                shape,
                blink: 0.0,
            };
            // The first row is the renderer before issue 23 too: no mesh, the landmark warp.
            render_into(if n == 0 { before } else { prepared }, src, &p, &mut out);
            let (col, band) = (k % per_row, k / per_row);
            let top = band * 3 * (ch + bar) + n * (ch + bar);
            for y in 0..bar {
                for x in 0..cw {
                    sheet.put_pixel((col * cw + x) as u32, (top + y) as u32, image::Rgb(*color));
                }
            }
            for y in 0..ch {
                for x in 0..cw {
                    let i = ((cy + y) * w + cx + x) * 3;
                    sheet.put_pixel(
                        (col * cw + x) as u32,
                        (top + bar + y) as u32,
                        image::Rgb([out[i], out[i + 1], out[i + 2]]),
                    );
                }
            }
        }
    }
    sheet.save(path).expect("save the sheet");
    println!("lip sheet: {count} frames of \"{SHEET_SENTENCE}\" written to {path}");
}
