//! What an outgoing datagram carries, and how a datagram is told apart (for the RTP counters).

use std::net::SocketAddr;

/// What an outgoing datagram carries, for the RTP counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketKind {
    Video,
    Audio,
    /// STUN, DTLS, RTCP, or RTP of a payload type we did not negotiate.
    Other,
}

#[derive(Debug)]
pub(crate) struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    pub kind: PacketKind,
}

/// Classifies a datagram as RFC 7983 demultiplexes it: RTP or RTCP by the first byte (128..=191), RTCP if the
/// second byte is an RTCP packet type (RFC 5761: 192..=223), else RTP whose payload type picks the kind.
pub(crate) fn classify(datagram: &[u8], video_pts: &[u8], audio_pts: &[u8]) -> PacketKind {
    let (Some(&b0), Some(&b1)) = (datagram.first(), datagram.get(1)) else {
        return PacketKind::Other;
    };
    if !(128..=191).contains(&b0) || (192..=223).contains(&b1) {
        return PacketKind::Other;
    }
    let pt = b1 & 0x7f;
    if video_pts.contains(&pt) {
        PacketKind::Video
    } else if audio_pts.contains(&pt) {
        PacketKind::Audio
    } else {
        PacketKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_rfc7983_and_payload_type() {
        let rtp = |pt: u8| vec![0x80, pt, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(classify(&rtp(96), &[96, 97], &[111]), PacketKind::Video);
        assert_eq!(
            classify(&rtp(97 | 0x80), &[96, 97], &[111]),
            PacketKind::Video,
            "marker bit"
        );
        assert_eq!(classify(&rtp(111), &[96, 97], &[111]), PacketKind::Audio);
        assert_eq!(classify(&rtp(100), &[96, 97], &[111]), PacketKind::Other);
        // RTCP sender report (PT 200) and receiver report (201).
        assert_eq!(
            classify(&[0x80, 200, 0, 6], &[72], &[73]),
            PacketKind::Other
        );
        assert_eq!(classify(&[0x81, 201, 0, 7], &[73], &[]), PacketKind::Other);
        // STUN (first byte 0..3) and DTLS (20..63).
        assert_eq!(classify(&[0, 1, 0, 0], &[0, 1], &[]), PacketKind::Other);
        assert_eq!(classify(&[22, 254, 253], &[], &[]), PacketKind::Other);
        assert_eq!(classify(&[], &[], &[]), PacketKind::Other);
    }
}
