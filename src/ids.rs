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
    fn custom_agent_ids() {
        assert!(is_valid_custom_agent_id("A91XMB7113"));
        assert!(is_valid_custom_agent_id("my-agent_1"));
        assert!(!is_valid_custom_agent_id("ab"));
        assert!(!is_valid_custom_agent_id("has space"));
        assert!(!is_valid_custom_agent_id(&"x".repeat(65)));
        assert!(!is_valid_custom_agent_id("generate"));
    }
}
