//! The pages' files, embedded so the binary is self-contained (hand-written, no build step), and
//! livekit-client's bundle, which `make setup` fetches from npm and the server reads from disk.
//!
//! Pages name each file with `?v=<hash of its bytes>`: a request carrying the current hash may be
//! cached for good (`immutable`), any other is revalidated against the ETag, so a new build never
//! runs against an old script.

use std::path::Path;

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    hash: u64,
}

impl Asset {
    /// The version a page puts in the file's URL, and its ETag.
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// FNV-1a, at compile time: a file's hash is fixed with the binary.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../web/", $name)),
            hash: fnv1a(include_str!(concat!("../../web/", $name)).as_bytes()),
        }
    };
}

pub const STYLE: Asset = asset!("style.css", "text/css; charset=utf-8");
pub const ROOM_JS: Asset = asset!("room.js", "text/javascript; charset=utf-8");
pub const CONSOLE_JS: Asset = asset!("console.js", "text/javascript; charset=utf-8");
pub const DOCS_JS: Asset = asset!("docs.js", "text/javascript; charset=utf-8");

/// What `/static/{name}` serves from the binary.
pub const STATIC: [&Asset; 4] = [&STYLE, &ROOM_JS, &CONSOLE_JS, &DOCS_JS];

/// Page templates: `{{name}}` slots filled (HTML-escaped) by `pages`.
pub const ROOM_HTML: &str = include_str!("../../web/room.html");
pub const NOTICE_HTML: &str = include_str!("../../web/notice.html");
pub const CONSOLE_HTML: &str = include_str!("../../web/console.html");
pub const DOCS_HTML: &str = include_str!("../../web/docs.html");

pub fn find(name: &str) -> Option<&'static Asset> {
    STATIC.iter().copied().find(|a| a.name == name)
}

/// The URL path under which livekit-client is served.
pub const LIVEKIT_CLIENT: &str = "livekit-client.umd.js";

/// livekit-client's bundle on disk: its version (size and modification time) when it is there.
pub fn livekit_client_version(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Some(format!("{:x}-{:x}", meta.len(), modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_bytes() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(
            STYLE.version(),
            format!("{:016x}", fnv1a(STYLE.body.as_bytes()))
        );
        assert!(find("room.js").is_some());
        assert!(find("../Cargo.toml").is_none());
    }
}
