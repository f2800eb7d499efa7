//! ElevenLabs' character timing of the agent's speech (`audio_event.alignment`, as its SDKs read
//! it: `chars`, `char_start_times_ms` and `char_durations_ms`, each time from the start of that
//! event's audio), read as the phoneme timeline the renderer shapes the mouth from: each letter,
//! or a spelling that is one sound (`ph`, `th`, `sh`, `ch`, `oo`…), becomes the IPA of the sound it
//! usually writes, starting where ElevenLabs says that letter is spoken.
//!
//! ```text
//! chars ["m","a","p"] at 0, 90, 210 ms → [p@0 "m", p@1440 "a", p@3360 "p"] (16 kHz samples)
//! ```
//!
//! Spelling is a guide, not a pronunciation: the rules are those of English and the Latin
//! alphabet's common vowels (a silent final `e` keeps the shape before it). What matters for the
//! lips is right in most languages written so: `p b m` close them, `f v` put the lower lip to the
//! teeth, `o u w` round them. Text the rules cannot read (another script, mostly digits) gives no
//! timeline, and the mouth follows the sound instead. Between words a short space keeps the shape
//! going; a long one, or punctuation, is a pause.

use std::sync::Arc;

use serde_json::Value;

use crate::voice::tts::Phoneme;
use crate::voice::SAMPLE_RATE;

/// A space at least this long (ms) is a pause; a shorter one is the join between two words.
const PAUSE_MS: f64 = 120.0;

/// More characters than this in one event's alignment is not an alignment of its audio.
const MAX_CHARS: usize = 10_000;

/// One character of the alignment: what it is, when it starts and how long it lasts (ms).
#[derive(Debug, Clone, PartialEq)]
struct Timed {
    text: String,
    start_ms: f64,
    duration_ms: f64,
}

/// The phoneme timeline of an `audio_event.alignment` over `samples` 16 kHz samples of its audio:
/// `Ok(None)` when its text is not one the spelling rules read; `Err` names what is malformed.
pub fn timeline(alignment: &Value, samples: usize) -> Result<Option<Arc<[Phoneme]>>, String> {
    let timed = parse(alignment)?;
    Ok(read(&timed, samples))
}

fn parse(alignment: &Value) -> Result<Vec<Timed>, String> {
    let list = |field: &str| {
        alignment
            .get(field)
            .and_then(Value::as_array)
            .ok_or(format!("alignment.{field} is not an array"))
    };
    let (chars, starts, durations) = (
        list("chars")?,
        list("char_start_times_ms")?,
        list("char_durations_ms")?,
    );
    if chars.len() > MAX_CHARS {
        return Err(format!(
            "alignment.chars has {} entries, more than {MAX_CHARS}",
            chars.len()
        ));
    }
    for (field, times) in [
        ("char_start_times_ms", starts),
        ("char_durations_ms", durations),
    ] {
        if times.len() != chars.len() {
            return Err(format!(
                "alignment.{field} has {} entries for {} chars",
                times.len(),
                chars.len()
            ));
        }
    }
    let time = |field: &str, i: usize, value: &Value| {
        value
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or(format!(
                "alignment.{field}[{i}] is not a non-negative number"
            ))
    };
    chars
        .iter()
        .zip(starts.iter().zip(durations))
        .enumerate()
        .map(|(i, (text, (start, duration)))| {
            Ok(Timed {
                text: text
                    .as_str()
                    .ok_or(format!("alignment.chars[{i}] is not a string"))?
                    .to_lowercase(),
                start_ms: time("char_start_times_ms", i, start)?,
                duration_ms: time("char_durations_ms", i, duration)?,
            })
        })
        .collect()
}

/// The sound the spelling at `texts[i]` usually writes (IPA, as espeak-ng names it, which
/// [`crate::media::visemes`] reads) and how many characters it takes; `None` for a character
/// that is no sound of its own (a silent final e) or one the rules cannot read. English vowels
/// follow the syllable: short before two consonants or a final one (`hat` a, `hop` ɒ, `cup` ʌ),
/// long before a consonant and a silent final e (`made` eɪ, `fine` aɪ, `rose` oʊ).
fn sound(texts: &[&str], i: usize) -> (Option<&'static str>, usize) {
    let at = |n: usize| texts.get(i + n).copied().filter(|t| is_letter(t));
    let is = |n: usize, text: &str| at(n) == Some(text);
    let consonant = |n: usize| at(n).is_some_and(|t| !is_vowel(t));
    let ends = |n: usize| at(n).is_none();
    for (spelling, ipa) in [
        ("igh", "aɪ"),
        ("ph", "f"),
        ("th", "θ"),
        ("sh", "ʃ"),
        ("ch", "tʃ"),
        ("wh", "w"),
        ("ck", "k"),
        ("qu", "kw"),
        ("oo", "u"),
        ("ee", "i"),
        ("ea", "i"),
        ("ou", "aʊ"),
        ("ow", "oʊ"),
        ("oa", "oʊ"),
        ("ai", "eɪ"),
        ("ay", "eɪ"),
        ("oi", "ɔɪ"),
        ("oy", "ɔɪ"),
        ("au", "ɔ"),
        ("aw", "ɔ"),
        ("ar", "ɑ"),
        ("or", "ɔ"),
        ("er", "ɜ"),
        ("ir", "ɜ"),
        ("ur", "ɜ"),
    ] {
        // The spellings are ASCII: a letter each byte.
        let written = spelling
            .chars()
            .enumerate()
            .all(|(n, l)| is(n, l.encode_utf8(&mut [0; 4])));
        // A vowel and r before another vowel are two sounds (very, iron).
        let r_before_vowel = spelling.ends_with('r') && at(2).is_some_and(is_vowel);
        if written && !r_before_vowel {
            return (Some(ipa), spelling.len());
        }
    }
    let this = texts[i];
    // After the vowel: a consonant then a silent final e (made), or a closed syllable (hat).
    let magic_e = consonant(1) && is(2, "e") && ends(3);
    let closed = consonant(1) && (ends(2) || consonant(2));
    let ipa = match this {
        "p" => "p",
        "b" => "b",
        "m" => "m",
        "f" | "v" => "f",
        "w" => "w",
        // A silent final e after a vowel and a consonant keeps the shape before it; "the" and
        // "me" say it.
        "e" if ends(1)
            && i > 1
            && is_letter(texts[i - 1])
            && !is_vowel(texts[i - 1])
            && is_vowel(texts[i - 2]) =>
        {
            return (None, 1)
        }
        "a" if magic_e => "eɪ",
        "i" if magic_e => "aɪ",
        "o" if magic_e => "oʊ",
        "u" if magic_e => "u",
        "a" if closed => "a",
        "e" if closed => "ɛ",
        "i" if closed => "ɪ",
        "o" if closed => "ɒ",
        "u" if closed => "ʌ",
        "y" if i == 0 || !texts[i - 1].chars().all(char::is_alphabetic) => "j",
        "y" => "i",
        "j" => "dʒ",
        // A c is soft before e, i and y (city), hard elsewhere (cup).
        "c" if !(is(1, "e") || is(1, "i") || is(1, "y")) => "k",
        "s" | "z" | "c" | "x" | "ç" | "ß" => "s",
        "r" => "ɹ",
        "t" => "t",
        "d" => "d",
        "n" | "ñ" => "n",
        "l" => "l",
        "k" | "g" | "q" => "k",
        "h" => "h",
        // Any other vowel, accented ones too, says its own sound.
        _ => match vowel(this) {
            Some(vowel) => vowel,
            None => return (None, 1),
        },
    };
    (Some(ipa), 1)
}

fn is_letter(text: &str) -> bool {
    text.chars().next().is_some_and(char::is_alphabetic)
}

/// The vowel a letter writes, accents aside (`é` is an e); `None` for a consonant.
fn vowel(text: &str) -> Option<&'static str> {
    Some(match text {
        "a" | "à" | "á" | "â" | "ä" | "ã" | "å" | "æ" => "a",
        "o" | "ò" | "ó" | "ô" | "ö" | "õ" | "ø" | "œ" => "o",
        "u" | "ù" | "ú" | "û" | "ü" => "u",
        "e" | "è" | "é" | "ê" | "ë" => "e",
        "i" | "ì" | "í" | "î" | "ï" => "i",
        _ => return None,
    })
}

fn is_vowel(text: &str) -> bool {
    text == "y" || vowel(text).is_some()
}

fn read(timed: &[Timed], samples: usize) -> Option<Arc<[Phoneme]>> {
    let texts: Vec<&str> = timed.iter().map(|t| t.text.as_str()).collect();
    let at = |ms: f64| ((ms * f64::from(SAMPLE_RATE) / 1000.0) as usize).min(samples);
    let (mut letters, mut read_letters) = (0, 0);
    let mut phonemes = Vec::new();
    let mut i = 0;
    while i < timed.len() {
        let text = texts[i];
        let taken = if text.chars().all(char::is_whitespace) {
            if timed[i].duration_ms >= PAUSE_MS {
                phonemes.push(Phoneme {
                    at: at(timed[i].start_ms),
                    ipa: Arc::from(""),
                });
            }
            1
        } else if !is_letter(text) {
            // Punctuation is a pause; a digit is said as words the spelling does not show.
            if !text.chars().any(char::is_numeric) {
                phonemes.push(Phoneme {
                    at: at(timed[i].start_ms),
                    ipa: Arc::from(""),
                });
            }
            1
        } else {
            let (ipa, taken) = sound(&texts, i);
            letters += taken;
            match ipa {
                Some(ipa) => {
                    read_letters += taken;
                    phonemes.push(Phoneme {
                        at: at(timed[i].start_ms),
                        ipa: Arc::from(ipa),
                    });
                }
                // A silent e counts as read.
                None if texts[i] == "e" => read_letters += 1,
                None => {}
            }
            taken
        };
        i += taken;
    }
    // Mostly another script (or nothing to read): the sound knows better than a guess.
    if letters == 0 || read_letters * 2 < letters {
        return None;
    }
    // Characters come in order; a provider's rounding must not make the timeline go back.
    for k in 1..phonemes.len() {
        phonemes[k].at = phonemes[k].at.max(phonemes[k - 1].at);
    }
    Some(phonemes.into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn aligned(text: &str, ms_each: f64) -> Value {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let starts: Vec<f64> = (0..chars.len()).map(|i| i as f64 * ms_each).collect();
        json!({
            "chars": chars,
            "char_start_times_ms": starts,
            "char_durations_ms": vec![ms_each; chars.len()],
        })
    }

    fn said(text: &str, ms_each: f64) -> Vec<(usize, String)> {
        timeline(&aligned(text, ms_each), usize::MAX)
            .unwrap()
            .unwrap()
            .iter()
            .map(|p| (p.at, p.ipa.to_string()))
            .collect()
    }

    #[test]
    fn letters_become_the_sounds_they_write_where_they_are_spoken() {
        assert_eq!(
            said("map", 50.0),
            [(0, "m".into()), (800, "a".into()), (1600, "p".into())]
        );
        let ipa: Vec<String> = said("Phone the shop, Bob", 40.0)
            .into_iter()
            .map(|(_, ipa)| ipa)
            .collect();
        // ph th sh are one sound each; the final e of "phone" is silent and makes its o long,
        // "shop" and "Bob" are closed syllables; the comma is a pause, the short spaces are not.
        assert_eq!(
            ipa,
            ["f", "oʊ", "n", "θ", "e", "ʃ", "ɒ", "p", "", "b", "ɒ", "b"]
        );
        // A word of two letters says its e.
        assert_eq!(said("me", 40.0).last().unwrap().1, "e");
    }

    #[test]
    fn english_vowels_follow_the_syllable() {
        let words = |text: &str| -> Vec<String> {
            said(text, 40.0).into_iter().map(|(_, ipa)| ipa).collect()
        };
        // Long before a consonant and a silent e; short in a closed syllable.
        assert_eq!(words("made"), ["m", "eɪ", "d"]);
        assert_eq!(words("fine"), ["f", "aɪ", "n"]);
        assert_eq!(words("cup"), ["k", "ʌ", "p"]);
        assert_eq!(words("night"), ["n", "aɪ", "t"]);
        // A vowel and r before a vowel are two sounds; before a consonant, one.
        assert_eq!(words("very"), ["f", "e", "ɹ", "i"]);
        assert_eq!(words("dark"), ["d", "ɑ", "k"]);
        // Accented vowels keep their own sound.
        assert_eq!(words("café"), ["k", "a", "f", "e"]);
    }

    #[test]
    fn a_long_space_is_a_pause_and_times_never_go_back() {
        let alignment = json!({
            "chars": ["a", " ", "b", "o"],
            "char_start_times_ms": [0, 100, 400, 390],
            "char_durations_ms": [100, 300, 50, 60],
        });
        let said: Vec<(usize, String)> = timeline(&alignment, 10_000)
            .unwrap()
            .unwrap()
            .iter()
            .map(|p| (p.at, p.ipa.to_string()))
            .collect();
        assert_eq!(
            said,
            [
                (0, "a".into()),
                (1600, "".into()),
                (6400, "b".into()),
                (6400, "o".into())
            ]
        );
        // Times past the audio are clamped to its end.
        let late = timeline(&aligned("mom", 1000.0), 100).unwrap().unwrap();
        assert!(late.iter().all(|p| p.at <= 100), "{late:?}");
    }

    #[test]
    fn another_script_gives_no_timeline_and_the_sound_leads() {
        assert!(timeline(&aligned("Привет мир", 40.0), 10_000)
            .unwrap()
            .is_none());
        assert!(timeline(&aligned("1984", 40.0), 10_000).unwrap().is_none());
        assert!(timeline(&aligned("", 40.0), 10_000).unwrap().is_none());
    }

    #[test]
    fn a_malformed_alignment_says_which_field() {
        for (alignment, field) in [
            (
                json!({"chars": ["a"], "char_start_times_ms": [0]}),
                "char_durations_ms",
            ),
            (
                json!({"chars": ["a", "b"], "char_start_times_ms": [0], "char_durations_ms": [1, 1]}),
                "char_start_times_ms has 1 entries for 2",
            ),
            (
                json!({"chars": ["a"], "char_start_times_ms": [-5], "char_durations_ms": [1]}),
                "char_start_times_ms[0]",
            ),
            (
                json!({"chars": [7], "char_start_times_ms": [0], "char_durations_ms": [1]}),
                "chars[0]",
            ),
            (json!("abc"), "chars"),
        ] {
            let error = timeline(&alignment, 100).unwrap_err();
            assert!(error.contains(field), "{error} lacks {field}");
        }
    }
}
