//! Stable, non-reversible names for secrets.
//!
//! A keyed HMAC rather than a plain hash: secrets such as AWS key ids or short API keys
//! have little entropy, and an unkeyed hash of them could be brute-forced or looked up
//! by anyone who sees the events. With a per-cluster key, fingerprints only correlate
//! uses within the cluster.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::detect::Secret;

/// Bytes of the MAC kept: 128 bits is ample to tell secrets apart, and shorter ids are
/// easier to read in dashboards.
const FINGERPRINT_BYTES: usize = 16;

pub struct Fingerprinter {
    key: hmac::Key,
}

impl Fingerprinter {
    /// `key` is the per-cluster fingerprint key.
    pub fn new(key: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    pub fn generate_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        // The OS RNG failing means the host cannot do any cryptography at all; there
        // is nothing sensible to fall back to.
        SystemRandom::new().fill(&mut key).expect("system random number generator failed");
        key
    }

    /// "hmac-sha256:" + the first 16 bytes of HMAC-SHA256(key, secret), lower hex.
    pub fn fingerprint(&self, secret: &Secret) -> String {
        let tag = hmac::sign(&self.key, secret.expose());
        let bytes = tag.as_ref().get(..FINGERPRINT_BYTES).unwrap_or_default();
        format!("hmac-sha256:{}", hex::encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_and_key_give_the_same_fingerprint() {
        let fp = Fingerprinter::new(b"cluster-key");
        let a = fp.fingerprint(&Secret::new(b"ghp_abc".to_vec()));
        let b = fp.fingerprint(&Secret::new(b"ghp_abc".to_vec()));
        assert_eq!(a, b);
        assert!(a.starts_with("hmac-sha256:"));
        let hex_part = a.trim_start_matches("hmac-sha256:");
        assert_eq!(hex_part.len(), 32);
        assert!(hex_part.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn different_key_or_secret_gives_a_different_fingerprint() {
        let secret = Secret::new(b"ghp_abc".to_vec());
        let a = Fingerprinter::new(b"key-one").fingerprint(&secret);
        let b = Fingerprinter::new(b"key-two").fingerprint(&secret);
        assert_ne!(a, b);
        let c = Fingerprinter::new(b"key-one").fingerprint(&Secret::new(b"ghp_abd".to_vec()));
        assert_ne!(a, c);
    }

    #[test]
    fn matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let fp = Fingerprinter::new(b"Jefe");
        let got = fp.fingerprint(&Secret::new(b"what do ya want for nothing?".to_vec()));
        assert_eq!(got, "hmac-sha256:5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn generated_keys_are_random() {
        let a = Fingerprinter::generate_key();
        let b = Fingerprinter::generate_key();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
