//! The cluster's signing keys: at most three published at any time (current, next,
//! retired), shared by every collector replica through the database, sealed with the
//! key-encryption key ([`super::kek`]).
//!
//! Rotation promotes `next` (published one rotation period earlier, so verifiers that
//! cache the JWKS already know it) to `current` and creates a new `next`. The old
//! `current` becomes `retired` and stays published until every token it signed has
//! expired (`max_ttl` after its retirement). Because the rotation period is at least
//! `max_ttl`, the retired key is gone before the next rotation: the JWKS never holds more
//! than three keys, however many nodes or replicas there are.
//!
//! Every replica runs [`KeyStore::maintain`] in an IMMEDIATE transaction, so exactly one
//! of them rotates, and [`KeyStore::reload`] picks up what another replica did.

use std::{
    path::Path,
    sync::{Mutex, RwLock},
    time::Duration,
};

use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair},
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sigil_agent::issue::{
    jwt::{self, Claims, JwtError},
    keys::{Jwk, KeyError},
};
use thiserror::Error;

use super::kek::{Kek, KekError};

#[derive(Debug, Error)]
pub enum KeyStoreError {
    #[error("signing-key database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Kek(#[from] KekError),
    #[error("{0}")]
    Key(String),
    #[error("cannot rotate yet: {0}")]
    Blocked(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    public_key BLOB NOT NULL,
    -- AES-256-GCM(KEK, PKCS#8 private key), additional data = kid. Never the key itself.
    sealed_private BLOB NOT NULL,
    nonce BLOB NOT NULL,
    created INTEGER NOT NULL, activated INTEGER, retired INTEGER, expires INTEGER);";

/// One stored key (the private part sealed).
struct Row {
    kid: String,
    state: String,
    public: Vec<u8>,
    sealed: Vec<u8>,
    nonce: Vec<u8>,
}

/// The keys this replica uses, as last loaded from the database.
#[derive(Default)]
struct Ring {
    /// (kid, key pair) of the key that signs.
    current: Option<(String, EcdsaKeyPair)>,
    /// (kid, uncompressed point) of every published key, oldest first.
    published: Vec<(String, Vec<u8>)>,
}

pub struct KeyStore {
    conn: Mutex<Connection>,
    kek: Kek,
    rng: SystemRandom,
    ring: RwLock<Ring>,
    rotate_every: i64,
    max_ttl: i64,
}

fn now_unix() -> i64 {
    crate::store::sqlite::now_unix()
}

impl KeyStore {
    /// `db`: the shared database (keys sealed with `kek`); None keeps them in this
    /// process only (one replica; keys are lost on restart).
    pub fn open(db: Option<&Path>, kek: Kek, rotate_every: Duration, max_ttl: Duration) -> Result<Self, KeyStoreError> {
        if rotate_every < max_ttl {
            return Err(KeyStoreError::Key(format!(
                "the rotation period ({} s) must be at least the longest token lifetime ({} s), or a retired key would still be needed at the next rotation",
                rotate_every.as_secs(),
                max_ttl.as_secs()
            )));
        }
        let conn = match db {
            Some(p) => Connection::open(p)?,
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(Duration::from_secs(5))?;
        if db.is_some() {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.execute_batch(SCHEMA)?;
        let store = Self {
            conn: Mutex::new(conn),
            kek,
            rng: SystemRandom::new(),
            ring: RwLock::default(),
            rotate_every: rotate_every.as_secs() as i64,
            max_ttl: max_ttl.as_secs() as i64,
        };
        store.maintain(now_unix(), false)?;
        Ok(store)
    }

    pub fn max_ttl(&self) -> i64 {
        self.max_ttl
    }

    /// Creates a key pair and its sealed row.
    fn insert_new(&self, tx: &rusqlite::Transaction<'_>, state: &str, now: i64) -> Result<(), KeyStoreError> {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &self.rng).map_err(|e| KeyStoreError::Key(e.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &self.rng).map_err(|e| KeyStoreError::Key(e.to_string()))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = Jwk::from_public(&public, "sig").kid;
        let (nonce, sealed) = self.kek.seal(&self.rng, &kid, pkcs8.as_ref())?;
        let activated = (state == "current").then_some(now);
        tx.execute(
            "INSERT INTO signing_keys (kid, state, public_key, sealed_private, nonce, created, activated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![kid, state, public, sealed, nonce, now, activated],
        )?;
        Ok(())
    }

    /// Drops expired retired keys, creates missing ones, and rotates when due (or when
    /// `force`d). Returns true when the published set changed; reloads either way.
    pub fn maintain(&self, now: i64, force: bool) -> Result<bool, KeyStoreError> {
        let changed = {
            let mut conn = self.conn.lock().map_err(|_| KeyStoreError::Key("key store lock poisoned".into()))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut changed = tx.execute("DELETE FROM signing_keys WHERE state = 'retired' AND expires <= ?1", params![now])? > 0;
            let current: Option<(String, i64)> =
                tx.query_row("SELECT kid, activated FROM signing_keys WHERE state = 'current'", [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            let has_next = tx.query_row("SELECT count(*) FROM signing_keys WHERE state = 'next'", [], |r| r.get::<_, i64>(0))? > 0;
            let retired: Option<(String, i64)> = tx
                .query_row("SELECT kid, expires FROM signing_keys WHERE state = 'retired' ORDER BY expires DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match current {
                None => {
                    // First start: nothing was ever signed, so the first key may sign at once.
                    self.insert_new(&tx, "current", now)?;
                    changed = true;
                }
                Some((kid, activated)) if force || now - activated >= self.rotate_every => match retired {
                    Some((old, expires)) => {
                        if force {
                            return Err(KeyStoreError::Blocked(format!(
                                "retired key {old} still verifies tokens until {expires} (unix time); rotating now would publish four keys"
                            )));
                        }
                        tracing::warn!("rotation of {kid} waits until retired key {old} expires at {expires}");
                    }
                    None if has_next => {
                        tx.execute(
                            "UPDATE signing_keys SET state = 'retired', retired = ?2, expires = ?3 WHERE kid = ?1",
                            params![kid, now, now + self.max_ttl],
                        )?;
                        tx.execute("UPDATE signing_keys SET state = 'current', activated = ?1 WHERE state = 'next'", params![now])?;
                        tracing::info!("rotated signing keys: {kid} retired (published until {})", now + self.max_ttl);
                        self.insert_new(&tx, "next", now)?;
                        changed = true;
                    }
                    None => {}
                },
                Some(_) => {}
            }
            let has_next = tx.query_row("SELECT count(*) FROM signing_keys WHERE state = 'next'", [], |r| r.get::<_, i64>(0))? > 0;
            if !has_next {
                self.insert_new(&tx, "next", now)?;
                changed = true;
            }
            tx.commit()?;
            changed
        };
        let reloaded = self.reload()?;
        Ok(changed || reloaded)
    }

    /// Reads the key set from the database (another replica may have rotated); true
    /// when the published set changed.
    pub fn reload(&self) -> Result<bool, KeyStoreError> {
        let rows: Vec<Row> = {
            let conn = self.conn.lock().map_err(|_| KeyStoreError::Key("key store lock poisoned".into()))?;
            let mut st = conn.prepare(
                "SELECT kid, state, public_key, sealed_private, nonce FROM signing_keys
                 ORDER BY CASE state WHEN 'retired' THEN 0 WHEN 'current' THEN 1 ELSE 2 END, created",
            )?;
            st.query_map([], |r| Ok(Row { kid: r.get(0)?, state: r.get(1)?, public: r.get(2)?, sealed: r.get(3)?, nonce: r.get(4)? }))?
                .collect::<Result<_, _>>()?
        };
        let published: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.kid.clone(), r.public.clone())).collect();
        let mut ring = self.ring.write().map_err(|_| KeyStoreError::Key("key ring lock poisoned".into()))?;
        let current = rows.iter().find(|r| r.state == "current");
        if ring.current.as_ref().map(|c| &c.0) != current.map(|r| &r.kid) {
            ring.current = match current {
                Some(Row { kid, sealed, nonce, .. }) => {
                    let pkcs8 = self.kek.open(kid, nonce, sealed)?;
                    let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &self.rng)
                        .map_err(|e| KeyStoreError::Key(format!("sealed key {kid}: {e}")))?;
                    Some((kid.clone(), pair))
                }
                None => None,
            };
        }
        let changed = ring.published != published;
        ring.published = published;
        Ok(changed)
    }

    /// Signs `claims` with the current key; returns (token, kid).
    pub fn sign(&self, claims: &Claims) -> Result<(String, String), KeyStoreError> {
        let ring = self.ring.read().map_err(|_| KeyStoreError::Key("key ring lock poisoned".into()))?;
        let (kid, pair) = ring.current.as_ref().ok_or_else(|| KeyStoreError::Key("no current signing key".into()))?;
        let token = jwt::encode(kid, claims, |input| pair.sign(&self.rng, input).map(|s| s.as_ref().to_vec()).map_err(|e| KeyError::Sign(e.to_string())))
            .map_err(|e: JwtError| KeyStoreError::Key(e.to_string()))?;
        Ok((token, kid.clone()))
    }

    /// Every published key (retired, current, next) as a JWK.
    pub fn jwks(&self, use_: &'static str) -> Vec<Jwk> {
        let Ok(ring) = self.ring.read() else { return Vec::new() };
        ring.published.iter().map(|(_, p)| Jwk::from_public(p, use_)).collect()
    }

    /// The kid of the key that signs now.
    pub fn current_kid(&self) -> Option<String> {
        self.ring.read().ok()?.current.as_ref().map(|c| c.0.clone())
    }
}

impl sigil_agent::issue::jwt::PublicKeys for KeyStore {
    fn public_key(&self, kid: &str) -> Option<Vec<u8>> {
        let ring = self.ring.read().ok()?;
        ring.published.iter().find(|(k, _)| k == kid).map(|(_, p)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(db: &Path, kek: &Path, rotate: u64, ttl: u64) -> KeyStore {
        KeyStore::open(Some(db), Kek::from_file(kek).expect("kek"), Duration::from_secs(rotate), Duration::from_secs(ttl)).expect("open")
    }

    fn kek_file(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("kek");
        std::fs::write(&p, hex::encode([9u8; 32])).expect("kek");
        p
    }

    /// A database thief: copies the collector's database (and its WAL) and looks for the
    /// private keys in it.
    #[test]
    fn a_database_thief_finds_no_private_key_in_the_db_file() {
        let d = tempfile::tempdir().expect("tmp");
        let (db, kek) = (d.path().join("c.db"), kek_file(d.path()));
        let ks = store(&db, &kek, 100, 10);
        ks.maintain(now_unix() + 200, false).expect("rotate");
        let mut bytes = std::fs::read(&db).expect("db");
        bytes.extend(std::fs::read(d.path().join("c.db-wal")).unwrap_or_default());
        let k = Kek::from_file(&kek).expect("kek");
        let conn = Connection::open(&db).expect("db");
        let mut st = conn.prepare("SELECT kid, sealed_private, nonce FROM signing_keys").expect("prepare");
        let rows: Vec<(String, Vec<u8>, Vec<u8>)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("rows").map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 3, "current, next and retired");
        for (kid, sealed, nonce) in rows {
            let pkcs8 = k.open(&kid, &nonce, &sealed).expect("opens with the KEK");
            // ECPrivateKey: INTEGER 1, OCTET STRING (32 bytes of private scalar).
            let at = pkcs8.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("scalar") + 5;
            let scalar = &pkcs8[at..at + 32];
            for w in scalar.windows(12) {
                assert!(!bytes.windows(12).any(|b| b == w), "12 bytes of {kid}'s private key are in the database file");
            }
            assert!(!bytes.windows(pkcs8.len()).any(|b| b == pkcs8.as_slice()));
        }
    }

    #[test]
    fn rotation_publishes_next_first_keeps_retired_until_tokens_expire_and_never_exceeds_three() {
        let d = tempfile::tempdir().expect("tmp");
        let (db, kek) = (d.path().join("c.db"), kek_file(d.path()));
        let t0 = now_unix();
        let ks = store(&db, &kek, 100, 30);
        assert_eq!(ks.jwks("sig").len(), 2, "current and next");
        let first = ks.current_kid().expect("current");
        let next = ks.jwks("sig").into_iter().map(|j| j.kid).find(|k| *k != first).expect("next published");
        assert!(!ks.maintain(t0 + 99, false).expect("maintain"), "not due");
        assert!(ks.maintain(t0 + 102, false).expect("maintain"));
        assert_eq!(ks.current_kid().as_deref(), Some(next.as_str()), "the key published in advance signs now");
        let kids: Vec<String> = ks.jwks("sig").into_iter().map(|j| j.kid).collect();
        assert_eq!(kids.len(), 3);
        assert!(kids.contains(&first), "retired key still published");
        // A forced rotation while the retired key is still needed is refused.
        assert!(matches!(ks.maintain(t0 + 110, true), Err(KeyStoreError::Blocked(_))));
        ks.maintain(t0 + 133, false).expect("maintain");
        assert!(!ks.jwks("sig").iter().any(|j| j.kid == first), "gone once its tokens expired");
        for i in 2..10 {
            ks.maintain(t0 + 100 * i + 5, false).expect("maintain");
            assert!(ks.jwks("sig").len() <= 3);
        }
    }

    #[test]
    fn a_second_replica_serves_the_same_keys_and_signs_tokens_the_first_verifies() {
        let d = tempfile::tempdir().expect("tmp");
        let (db, kek) = (d.path().join("c.db"), kek_file(d.path()));
        let a = store(&db, &kek, 100, 30);
        let b = store(&db, &kek, 100, 30);
        assert_eq!(a.jwks("sig"), b.jwks("sig"));
        assert_eq!(a.current_kid(), b.current_kid());
        a.maintain(now_unix() + 100, true).expect("rotate on a");
        assert_ne!(a.current_kid(), b.current_kid(), "b has not looked yet");
        b.reload().expect("reload");
        assert_eq!(a.jwks("sig"), b.jwks("sig"));
        assert_eq!(a.current_kid(), b.current_kid());
        let claims = Claims {
            iss: "https://sigil.test".into(),
            sub: "spiffe://sigil.test/x".into(),
            aud: sigil_agent::issue::jwt::Audience::One("aud".into()),
            exp: now_unix() + 60,
            iat: now_unix(),
            jti: "j".into(),
            sigil_node: "n1".into(),
            sigil_exec_id: "e".into(),
            sigil_cgroup: "/".into(),
            sigil_pod_uid: None,
            sigil_container_id: None,
            sigil_binary_sha256: None,
            sigil_k8s_ns: None,
            sigil_k8s_sa: None,
            sigil_k8s_pod: None,
            sigil_run: None,
        };
        let (token, kid) = b.sign(&claims).expect("b signs");
        assert_eq!(Some(kid), a.current_kid());
        jwt::verify(&a, &token, "aud", now_unix()).expect("a verifies what b signed");
        // A different KEK cannot use the shared keys.
        let other = d.path().join("other");
        std::fs::write(&other, [1u8; 32]).expect("kek");
        let c = KeyStore::open(Some(&db), Kek::from_file(&other).expect("kek"), Duration::from_secs(100), Duration::from_secs(30));
        assert!(matches!(c, Err(KeyStoreError::Kek(KekError::Open))));
    }
}
