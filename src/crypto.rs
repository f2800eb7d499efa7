//! Secrets at rest and signatures: API-key secrets are stored as a SHA-256 digest (for look-up) and
//! sealed with the master key (so VideoSDK-style JWTs signed with the secret can be verified).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key must be 32 bytes of hex")]
    BadMasterKey,
    #[error("sealed value is corrupt or was sealed with another master key")]
    Unseal,
}

/// The server's master key: seals stored secrets, and keys local room tokens.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim()).map_err(|_| CryptoError::BadMasterKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self(bytes))
    }

    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plain: &str) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // unwrap: encryption with a valid key and a 12-byte nonce cannot fail.
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        STANDARD.encode(out)
    }

    pub fn unseal(&self, sealed: &str) -> Result<String, CryptoError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| CryptoError::Unseal)?;
        if bytes.len() < 12 {
            return Err(CryptoError::Unseal);
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(&bytes[..12]), &bytes[12..])
            .map_err(|_| CryptoError::Unseal)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Unseal)
    }

    /// A key derived for one purpose, so the master key itself never signs anything.
    pub fn derive(&self, purpose: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac_sha256(&self.0, purpose.as_bytes()))
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_base64(data: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(data))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // unwrap: HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `x-webhook-signature` value: `t=<unix>,v1=<hex hmac-sha256(secret, t + "." + body)>`.
pub fn webhook_signature(secret: &str, unix: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{unix}.{body}").as_bytes());
    format!("t={unix},v1={}", hex::encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_wrong_key() {
        let k = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let sealed = k.seal("s3cret");
        assert_ne!(sealed, "s3cret");
        assert_eq!(k.unseal(&sealed).unwrap(), "s3cret");
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert!(other.unseal(&sealed).is_err());
        assert!(k.unseal("garbage").is_err());
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex("zz").is_err());
    }

    #[test]
    fn webhook_signature_matches_hmac() {
        let sig = webhook_signature("sec", 1700000000, "{}");
        let expected = hex::encode(hmac_sha256(b"sec", b"1700000000.{}"));
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }
}
