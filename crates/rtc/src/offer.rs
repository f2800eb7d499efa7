//! Reads a browser's offer before str0m sees it, to answer "what will this viewer receive and send" and to
//! turn an unusable offer into a sentence the browser developer can act on. str0m parses the full SDP later
//! and negotiates codecs; this scan only looks at m-sections, their mids, directions and codec names.

use crate::RtcError;

/// Which m-sections of an offer carry what, by mid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferPlan {
    /// The video section the browser receives on (offer direction recvonly or sendrecv).
    pub video: String,
    /// The audio section the browser receives the avatar's voice on (recvonly or sendrecv).
    pub audio: String,
    /// Audio sections the browser sends a microphone on (sendonly or sendrecv); may be empty.
    pub microphones: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Dir {
    /// The browser receives on this section.
    fn browser_receives(self) -> bool {
        matches!(self, Dir::SendRecv | Dir::RecvOnly)
    }

    fn browser_sends(self) -> bool {
        matches!(self, Dir::SendRecv | Dir::SendOnly)
    }
}

#[derive(Debug)]
struct Section {
    kind: String,
    rejected: bool,
    mid: Option<String>,
    dir: Dir,
    codecs: Vec<String>,
}

/// Scans `sdp` and picks the sections the server will use: the first receivable video section (which must
/// offer VP8), the first receivable audio section (which must offer Opus) and every audio section the
/// browser sends on (microphones, which must offer Opus).
pub(crate) fn plan_offer(sdp: &str) -> Result<OfferPlan, RtcError> {
    let sections = scan(sdp)?;
    let usable = |s: &&Section| !s.rejected && s.dir != Dir::Inactive;

    let video = sections
        .iter()
        .filter(usable)
        .find(|s| s.kind == "video" && s.dir.browser_receives())
        .ok_or_else(|| {
            RtcError::UnsupportedOffer(
                "it has no video section the browser receives; add a video transceiver with direction \
                 recvonly"
                    .into(),
            )
        })?;
    let video_mid = section_mid(video)?;
    require_codec(video, "VP8", "video")?;

    let audio = sections
        .iter()
        .filter(usable)
        .find(|s| s.kind == "audio" && s.dir.browser_receives())
        .ok_or_else(|| {
            RtcError::UnsupportedOffer(
                "it has no audio section the browser receives; add an audio transceiver with direction \
                 recvonly (or sendrecv to also send the microphone on it)"
                    .into(),
            )
        })?;
    let audio_mid = section_mid(audio)?;
    require_codec(audio, "opus", "audio")?;

    let mut microphones = Vec::new();
    for mic in sections
        .iter()
        .filter(usable)
        .filter(|s| s.kind == "audio" && s.dir.browser_sends())
    {
        require_codec(mic, "opus", "microphone audio")?;
        microphones.push(section_mid(mic)?);
    }

    Ok(OfferPlan {
        video: video_mid,
        audio: audio_mid,
        microphones,
    })
}

fn section_mid(s: &Section) -> Result<String, RtcError> {
    s.mid.clone().ok_or_else(|| {
        RtcError::UnsupportedOffer(format!(
            "its {} section has no a=mid line (the server needs BUNDLE with mids, as every browser sends)",
            s.kind
        ))
    })
}

fn require_codec(s: &Section, codec: &str, what: &str) -> Result<(), RtcError> {
    if s.codecs.iter().any(|c| c.eq_ignore_ascii_case(codec)) {
        return Ok(());
    }
    Err(RtcError::UnsupportedOffer(format!(
        "its {what} section (mid {}) offers no {codec} codec (offered: {}); the server only speaks {codec} there",
        s.mid.as_deref().unwrap_or("?"),
        if s.codecs.is_empty() {
            "none".to_string()
        } else {
            s.codecs.join(", ")
        }
    )))
}

fn scan(sdp: &str) -> Result<Vec<Section>, RtcError> {
    let mut lines = sdp.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some("v=0") => {}
        Some(_) | None => {
            return Err(RtcError::InvalidSdp(
                "it must start with the line v=0 (send the offer's SDP text, not JSON)".into(),
            ))
        }
    }

    let mut sections: Vec<Section> = Vec::new();
    // Until the first m= line, direction attributes apply to the session and are inherited (RFC 4566).
    let mut session_dir = Dir::SendRecv;
    let mut section_dir: Option<Dir> = None;
    for line in lines {
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(last) = sections.last_mut() {
                last.dir = section_dir.take().unwrap_or(session_dir);
            }
            let mut fields = m.split_whitespace();
            let kind = fields.next().unwrap_or_default().to_ascii_lowercase();
            let port = fields.next().unwrap_or_default();
            sections.push(Section {
                kind,
                rejected: port == "0",
                mid: None,
                dir: session_dir,
                codecs: Vec::new(),
            });
            continue;
        }
        let dir = match line {
            "a=sendrecv" => Some(Dir::SendRecv),
            "a=sendonly" => Some(Dir::SendOnly),
            "a=recvonly" => Some(Dir::RecvOnly),
            "a=inactive" => Some(Dir::Inactive),
            _ => None,
        };
        let Some(section) = sections.last_mut() else {
            if let Some(d) = dir {
                session_dir = d;
            }
            continue;
        };
        if let Some(d) = dir {
            section_dir = Some(d);
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid.trim().to_string());
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
            // a=rtpmap:96 VP8/90000
            if let Some(name) = rtpmap
                .split_whitespace()
                .nth(1)
                .and_then(|enc| enc.split('/').next())
            {
                if !section.codecs.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                    section.codecs.push(name.to_string());
                }
            }
        }
    }
    if let Some(last) = sections.last_mut() {
        last.dir = section_dir.unwrap_or(session_dir);
    }
    if sections.is_empty() {
        return Err(RtcError::InvalidSdp("it has no m= lines".into()));
    }
    Ok(sections)
}

/// Trickle ICE (RFC 8840): the `a=candidate:` lines of an `application/trickle-ice-sdpfrag` body, without
/// their `a=` prefix, in order. `Ok(empty)` for a fragment that only says `a=end-of-candidates`.
pub(crate) fn trickle_candidates(fragment: &str) -> Result<Vec<&str>, RtcError> {
    let mut candidates = Vec::new();
    let mut saw_end = false;
    let mut ufrag = None;
    for line in fragment.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                candidates.push(c);
            } else if c == "end-of-candidates" {
                saw_end = true;
            } else if let Some(u) = c.strip_prefix("ice-ufrag:") {
                ufrag = Some(u);
            }
        }
    }
    if candidates.is_empty() && !saw_end {
        return Err(RtcError::InvalidCandidate(match ufrag {
            Some(_) => {
                "it changes ICE credentials (an ICE restart), which this server does not support; \
                        send a new offer instead"
                    .into()
            }
            None => "it has no a=candidate or a=end-of-candidates lines".into(),
        }));
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape Chromium offers for `addTransceiver('video', {direction: 'recvonly'})` followed by
    /// `addTransceiver('audio', {direction: 'sendrecv'})` (trimmed to the lines that matter here).
    pub(crate) const CHROME_LIKE: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=recvonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=rtpmap:98 VP9/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn picks_video_audio_and_microphone_of_a_sendrecv_audio_offer() {
        let plan = plan_offer(CHROME_LIKE).unwrap();
        assert_eq!(
            plan,
            OfferPlan {
                video: "0".into(),
                audio: "1".into(),
                microphones: vec!["1".into()],
            }
        );
    }

    #[test]
    fn a_real_chromium_offer() {
        // Captured from headless Chromium 156: addTransceiver('video', recvonly) and the fake microphone
        // track with direction sendrecv.
        let plan = plan_offer(include_str!("testdata/chromium-156-offer.sdp")).unwrap();
        assert_eq!((plan.video.as_str(), plan.audio.as_str()), ("0", "1"));
        assert_eq!(plan.microphones, vec!["1".to_string()]);
    }

    #[test]
    fn separate_microphone_section() {
        let sdp = CHROME_LIKE.replace("a=sendrecv", "a=recvonly")
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n";
        let plan = plan_offer(&sdp).unwrap();
        assert_eq!(plan.audio, "1");
        assert_eq!(plan.microphones, vec!["2".to_string()]);
    }

    #[test]
    fn a_viewer_without_microphone_is_fine() {
        let sdp = CHROME_LIKE.replace("a=sendrecv", "a=recvonly");
        assert!(plan_offer(&sdp).unwrap().microphones.is_empty());
    }

    #[test]
    fn missing_direction_means_sendrecv() {
        let sdp = CHROME_LIKE.replace("a=sendrecv\r\n", "");
        assert_eq!(plan_offer(&sdp).unwrap().microphones, vec!["1".to_string()]);
    }

    #[test]
    fn rejects_offer_without_receivable_video() {
        let sdp = CHROME_LIKE.replace("a=recvonly", "a=sendonly");
        let err = plan_offer(&sdp).unwrap_err().to_string();
        assert!(
            err.contains("no video section the browser receives"),
            "{err}"
        );

        let sdp = CHROME_LIKE.replace("m=video 9", "m=video 0");
        assert!(plan_offer(&sdp).is_err());
    }

    #[test]
    fn rejects_video_without_vp8() {
        let sdp = CHROME_LIKE.replace("VP8/90000", "H264/90000");
        let err = plan_offer(&sdp).unwrap_err().to_string();
        assert!(
            err.contains("offers no VP8 codec (offered: H264, rtx, VP9)"),
            "{err}"
        );
    }

    #[test]
    fn rejects_offer_without_audio() {
        let sdp = CHROME_LIKE.split("m=audio").next().unwrap().to_string();
        let err = plan_offer(&sdp).unwrap_err().to_string();
        assert!(err.contains("no audio section"), "{err}");
    }

    #[test]
    fn rejects_garbage_with_a_sentence() {
        for garbage in [
            "",
            "hello",
            "{\"type\":\"offer\",\"sdp\":\"v=0\"}",
            "v=0\r\ns=-\r\n",
            "\u{0}\u{ff}",
        ] {
            let err = plan_offer(garbage).unwrap_err();
            assert!(matches!(err, RtcError::InvalidSdp(_)), "{garbage:?}: {err}");
        }
    }

    #[test]
    fn every_truncation_of_an_offer_is_an_error_or_a_plan_never_a_panic() {
        for n in 0..CHROME_LIKE.len() {
            let _ = plan_offer(&CHROME_LIKE[..n]);
        }
    }

    #[test]
    fn trickle_fragment() {
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1 1 udp 2113929471 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        assert_eq!(
            trickle_candidates(frag).unwrap(),
            vec!["candidate:1 1 udp 2113929471 127.0.0.1 5000 typ host"]
        );
        assert!(trickle_candidates("a=end-of-candidates")
            .unwrap()
            .is_empty());
        assert!(trickle_candidates("nonsense").is_err());
        let restart = trickle_candidates("a=ice-ufrag:new\r\na=ice-pwd:new\r\n").unwrap_err();
        assert!(restart.to_string().contains("ICE restart"));
    }
}
