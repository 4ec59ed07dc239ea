//! The key-encryption key: private signing keys are sealed with it (AES-256-GCM) before
//! they touch the database, so the database alone never yields a signing key.

use std::path::Path;

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KekError {
    #[error("key-encryption key {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the system random number generator failed")]
    Random,
    #[error("a sealed signing key does not open with this key-encryption key (wrong KEK, or the row was altered)")]
    Open,
}

pub struct Kek(LessSafeKey);

impl Kek {
    /// Reads a 32-byte key: 32 raw bytes, or 64 hex digits (`openssl rand -hex 32`).
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        let err = |reason: String| KekError::File { path: path.display().to_string(), reason };
        let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let bytes = if raw.len() == 32 {
            raw
        } else {
            let text = std::str::from_utf8(&raw).map_err(|_| err("is neither 32 raw bytes nor 64 hex digits".into()))?;
            hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| err(format!("is {} bytes; expected 32 raw bytes or 64 hex digits (openssl rand -hex 32)", raw.len())))?
        };
        Self::from_bytes(&bytes).map_err(|_| err("is not a valid AES-256 key".into()))
    }

    /// A key that exists only in this process: for a single replica that keeps its
    /// signing keys in memory.
    pub fn ephemeral(rng: &SystemRandom) -> Result<Self, KekError> {
        let mut b = [0u8; 32];
        rng.fill(&mut b).map_err(|_| KekError::Random)?;
        Self::from_bytes(&b)
    }

    fn from_bytes(b: &[u8]) -> Result<Self, KekError> {
        Ok(Self(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, b).map_err(|_| KekError::Random)?)))
    }

    /// Seals `plain` bound to `label` (the key id): returns (nonce, ciphertext || tag).
    pub fn seal(&self, rng: &SystemRandom, label: &str, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KekError> {
        let mut n = [0u8; NONCE_LEN];
        rng.fill(&mut n).map_err(|_| KekError::Random)?;
        let mut buf = plain.to_vec();
        self.0.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(label.as_bytes()), &mut buf).map_err(|_| KekError::Random)?;
        Ok((n.to_vec(), buf))
    }

    pub fn open(&self, label: &str, nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        let n = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Open)?;
        let mut buf = sealed.to_vec();
        let plain = self.0.open_in_place(n, Aad::from(label.as_bytes()), &mut buf).map_err(|_| KekError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_kek_and_label() {
        let rng = SystemRandom::new();
        let (a, b) = (Kek::ephemeral(&rng).expect("kek"), Kek::ephemeral(&rng).expect("kek"));
        let (n, c) = a.seal(&rng, "kid1", b"private").expect("seal");
        assert!(!c.windows(7).any(|w| w == b"private"));
        assert_eq!(a.open("kid1", &n, &c).expect("open"), b"private");
        assert!(a.open("kid2", &n, &c).is_err(), "a row moved to another kid does not open");
        assert!(b.open("kid1", &n, &c).is_err(), "another KEK does not open it");
    }

    #[test]
    fn kek_files_are_32_raw_bytes_or_64_hex_digits() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("kek");
        std::fs::write(&p, [7u8; 32]).expect("write");
        assert!(Kek::from_file(&p).is_ok());
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).expect("write");
        assert!(Kek::from_file(&p).is_ok());
        std::fs::write(&p, "too short").expect("write");
        let e = Kek::from_file(&p).err().expect("refused").to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
