//! Prefixed identifiers. Ids that act as credentials (link ids, API secrets) carry at least 128 bits
//! of randomness from the OS generator.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// `len` alphanumeric characters: log2(62) ≈ 5.95 bits each.
pub fn random_token(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn account_id() -> String {
    format!("acct_{}", random_token(20))
}
pub fn key_id() -> String {
    format!("key_{}", random_token(20))
}
pub fn api_secret() -> String {
    format!("avs_sk_{}", random_token(40))
}
pub fn agent_id() -> String {
    format!("agnt_{}", random_token(20))
}
/// A link id is a bearer credential: 24 characters ≈ 143 bits.
pub fn link_id() -> String {
    format!("lnk_{}", random_token(24))
}
pub fn session_id() -> String {
    format!("sess_{}", random_token(24))
}
pub fn asset_id() -> String {
    format!("asset_{}", random_token(20))
}
pub fn delivery_id() -> String {
    format!("whd_{}", random_token(20))
}
pub fn webhook_secret() -> String {
    format!("whsec_{}", random_token(32))
}

/// An identifier a client gave: checked for shape before anything looks it up, so a malformed one
/// costs no database read and reads back in errors as given.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id if `raw` has the shape of one; `None` names no such object.
            pub fn parse(raw: &str) -> Option<Self> {
                let check: fn(&str) -> bool = $check;
                check(raw).then(|| Self(raw.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn prefixed(raw: &str, prefix: &str, max: usize) -> bool {
    raw.len() <= max
        && raw
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

id_type!(
    /// `sess_…`.
    SessionId,
    |raw| prefixed(raw, "sess_", 64)
);
id_type!(
    /// `lnk_…`: a bearer credential.
    LinkId,
    |raw| prefixed(raw, "lnk_", 64)
);
id_type!(
    /// `agnt_…`, or a custom id given to generate.
    AgentId,
    |raw| prefixed(raw, "agnt_", 64) || is_valid_custom_agent_id(raw)
);

/// A custom agent id given to generate: `[A-Za-z0-9_-]{3,64}`.
pub fn is_valid_custom_agent_id(id: &str) -> bool {
    // `/v1/agent/generate` and `/v1/agent/status/…` are routes, not agents.
    !matches!(id, "generate" | "status")
        && (3..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = link_id();
        assert!(a.starts_with("lnk_") && a.len() == 28);
        assert_ne!(a, link_id());
    }

    #[test]
    fn parsed_ids_have_their_shape() {
        assert!(LinkId::parse(&link_id()).is_some());
        assert!(LinkId::parse("lnk_").is_none());
        assert!(LinkId::parse("sess_abc").is_none());
        assert!(LinkId::parse(&format!("lnk_{}", "a".repeat(61))).is_none());
        assert!(SessionId::parse(&session_id()).is_some());
        assert!(SessionId::parse("sess_a/b").is_none());
        assert!(AgentId::parse("my-agent_1").is_some());
        assert!(AgentId::parse(&agent_id()).is_some());
        assert!(AgentId::parse("a b").is_none());
    }

    #[test]
    fn custom_agent_ids() {
        assert!(is_valid_custom_agent_id("A91XMB7113"));
        assert!(is_valid_custom_agent_id("my-agent_1"));
        assert!(!is_valid_custom_agent_id("ab"));
        assert!(!is_valid_custom_agent_id("has space"));
        assert!(!is_valid_custom_agent_id(&"x".repeat(65)));
        assert!(!is_valid_custom_agent_id("generate"));
    }
}
