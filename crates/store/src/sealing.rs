//! Encryption of the secrets the database holds (BMC passwords and keys in node control
//! parameters, credential hashes), so a copied database or backup leaks none of them.
//!
//! A sealed value is `xcat3:sealed:v1:<key id>:<hex(nonce ‖ ciphertext ‖ tag)>`: AES-256-GCM with
//! a random 96-bit nonce, the field's name (`control.bmc_password`, `passwd.hash`) as associated
//! data so a value cannot be moved to another field, and the key id (the first 8 hex digits of the
//! key's SHA-256) so a process holding several keys picks the right one. Values written before a
//! key was configured stay readable as they are; [`crate::Store::reseal_secrets`] seals them (and
//! moves values sealed with a previous key to the current one: key rotation).

use std::fmt;
use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

const PREFIX: &str = "xcat3:sealed:v1:";

/// A key: 32 bytes.
pub type KeyBytes = [u8; 32];

struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn new(bytes: &KeyBytes) -> Key {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Key {
            id: hex(&digest.as_ref()[..4]),
            key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes make an AES-256 key"),
            ),
        }
    }
}

/// The keys a process seals and opens secrets with. Cheap to clone; `Debug` shows key ids only.
#[derive(Clone, Default)]
pub struct SealingKeys(Arc<Keys>);

#[derive(Default)]
struct Keys {
    /// Seals new values; also opens.
    current: Option<Key>,
    /// Open values only (while they are being resealed with the current key).
    previous: Vec<Key>,
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKeys")
            .field("current", &self.0.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.0.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a stored secret could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "it is sealed with key {0}, which this process does not have (--secrets-key-file, --secrets-previous-key-files)"
    )]
    UnknownKey(String),
    #[error("it is not a well-formed sealed value")]
    Malformed,
    #[error("it does not decrypt with key {0}: altered, or moved from another field")]
    Forged(String),
}

impl SealingKeys {
    /// `current` seals; it and `previous` open. Without `current` values are stored as given.
    pub fn new(current: Option<&KeyBytes>, previous: &[KeyBytes]) -> SealingKeys {
        SealingKeys(Arc::new(Keys {
            current: current.map(Key::new),
            previous: previous.iter().map(Key::new).collect(),
        }))
    }

    /// Reads the key files (each 64 hex digits): `current` seals, all of them open.
    pub fn from_files(
        current: Option<&std::path::Path>,
        previous: &[std::path::PathBuf],
    ) -> Result<SealingKeys, String> {
        let read = |path: &std::path::Path| -> Result<KeyBytes, String> {
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(4096).read_to_string(&mut text))
                .map_err(|e| format!("read the secrets key {}: {e}", path.display()))?;
            parse_key(&text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let current = current.map(read).transpose()?;
        let previous = previous
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        if current.is_none() && !previous.is_empty() {
            return Err("previous secrets keys need a current one (--secrets-key-file)".into());
        }
        Ok(SealingKeys::new(current.as_ref(), &previous))
    }

    /// Whether new values are sealed.
    pub fn seals(&self) -> bool {
        self.0.current.is_some()
    }

    /// `plain` sealed with the current key, bound to `field`; as given when there is no key.
    pub fn seal(&self, field: &str, plain: &str) -> String {
        let Some(key) = &self.0.current else {
            return plain.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut data = plain.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(field.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any value under 64 GiB");
        let mut out = String::with_capacity(PREFIX.len() + 9 + 2 * (NONCE_LEN + data.len()));
        out.push_str(PREFIX);
        out.push_str(&key.id);
        out.push(':');
        out.push_str(&hex(&nonce));
        out.push_str(&hex(&data));
        out
    }

    /// The plain value of `stored` (sealed for `field`, or stored as given before sealing).
    pub fn open(&self, field: &str, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest.split_once(':').ok_or(SealError::Malformed)?;
        let key = self
            .0
            .current
            .iter()
            .chain(&self.0.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let mut data = unhex(body).ok_or(SealError::Malformed)?;
        if data.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let nonce = Nonce::try_assume_unique_for_key(&data[..NONCE_LEN])
            .map_err(|_| SealError::Malformed)?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(field.as_bytes()), &mut data[NONCE_LEN..])
            .map_err(|_| SealError::Forged(id.to_owned()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    }

    /// `stored` sealed again with the current key, or `None` when it already is (see
    /// [`SealingKeys::is_current`]).
    pub fn reseal(&self, field: &str, stored: &str) -> Result<Option<String>, SealError> {
        if self.is_current(stored) {
            return Ok(None);
        }
        Ok(Some(self.seal(field, &self.open(field, stored)?)))
    }

    /// Whether `stored` is what [`SealingKeys::seal`] would write now: sealed with the current
    /// key (or, without one, stored as given).
    pub fn is_current(&self, stored: &str) -> bool {
        match (&self.0.current, stored.strip_prefix(PREFIX)) {
            (None, rest) => rest.is_none(),
            (Some(key), Some(rest)) => rest.split_once(':').is_some_and(|(id, _)| id == key.id),
            (Some(_), None) => false,
        }
    }
}

/// What [`crate::Store::reseal_secrets`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Nodes whose control secrets were rewritten.
    pub nodes: usize,
    /// Credentials whose hash was rewritten.
    pub credentials: usize,
}

impl crate::Store {
    /// Rewrites every stored secret that is not sealed with the current key: values stored
    /// before a key was configured, and values sealed with a previous key (rotation). Each row
    /// is written only if it did not change meanwhile (compare-and-set on the stored text), so
    /// it can run while the services run; run it again until it reports nothing left.
    pub async fn reseal_secrets(&self) -> crate::Result<Resealed> {
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

        use crate::entity::{node, passwd};
        let mut done = Resealed::default();
        let mut after = String::new();
        loop {
            let rows: Vec<(String, String)> = node::Entity::find()
                .select_only()
                .column(node::Column::Name)
                .column(node::Column::Control)
                .filter(node::Column::Name.gt(after.clone()))
                .order_by_asc(node::Column::Name)
                .limit(1000)
                .into_tuple()
                .all(&self.db)
                .await?;
            let Some((last, _)) = rows.last() else { break };
            after = last.clone();
            for (name, stored) in rows {
                let Some(resealed) =
                    crate::nodes::reseal_control(&stored, &self.keys, &|| format!("node {name}"))?
                else {
                    continue;
                };
                let txn = self.begin_write().await?;
                let res = node::Entity::update_many()
                    .col_expr(node::Column::Control, Expr::value(resealed))
                    .filter(node::Column::Name.eq(name.as_str()))
                    .filter(node::Column::Control.eq(stored))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
                done.nodes += res.rows_affected as usize;
            }
        }
        let rows: Vec<(String, String)> = passwd::Entity::find()
            .select_only()
            .column(passwd::Column::Key)
            .column(passwd::Column::Hash)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (key, stored) in rows {
            let Some(resealed) = self
                .keys
                .reseal(crate::passwds::PASSWD_FIELD, &stored)
                .map_err(|e| crate::corrupt(format!("credential {key}"), e))?
            else {
                continue;
            };
            let txn = self.begin_write().await?;
            let res = passwd::Entity::update_many()
                .col_expr(passwd::Column::Hash, Expr::value(resealed))
                .filter(passwd::Column::Key.eq(key.as_str()))
                .filter(passwd::Column::Hash.eq(stored))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            done.credentials += res.rows_affected as usize;
        }
        Ok(done)
    }
}

/// Reads a key: 64 hex digits (`openssl rand -hex 32`), surrounding white space ignored.
pub fn parse_key(text: &str) -> Result<KeyBytes, String> {
    let text = text.trim();
    let bytes = unhex(text)
        .filter(|b| b.len() == 32)
        .ok_or("a secrets key is 64 hex digits (make one with: openssl rand -hex 32)")?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: KeyBytes = [7; 32];
    const K2: KeyBytes = [9; 32];

    #[test]
    fn sealed_values_open_only_with_their_key_and_field() {
        let keys = SealingKeys::new(Some(&K1), &[]);
        let sealed = keys.seal("control.bmc_password", "hunter2");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            keys.seal("control.bmc_password", "hunter2"),
            "random nonce"
        );
        assert_eq!(
            keys.open("control.bmc_password", &sealed).unwrap(),
            "hunter2"
        );
        // Moved to another field, or altered: refused.
        assert!(matches!(
            keys.open("passwd.hash", &sealed),
            Err(SealError::Forged(_))
        ));
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(
            keys.open("control.bmc_password", &altered),
            Err(SealError::Forged(_))
        ));
        // Without the key: a clear error, never the ciphertext as a password.
        let other = SealingKeys::new(Some(&K2), &[]);
        assert!(matches!(
            other.open("control.bmc_password", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        assert!(matches!(
            SealingKeys::default().open("control.bmc_password", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        for bad in [
            "xcat3:sealed:v1:",
            "xcat3:sealed:v1:abcd",
            "xcat3:sealed:v1:abcd:zz",
            "xcat3:sealed:v1:abcd:00",
        ] {
            assert!(keys.open("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_reads_old_values_and_knows_what_to_reseal() {
        let old = SealingKeys::new(Some(&K1), &[]);
        let sealed_old = old.seal("f", "secret");
        let rotated = SealingKeys::new(Some(&K2), &[K1]);
        assert_eq!(rotated.open("f", &sealed_old).unwrap(), "secret");
        assert!(!rotated.is_current(&sealed_old));
        assert!(!rotated.is_current("plain value"));
        assert!(rotated.is_current(&rotated.seal("f", "secret")));
        // Plain values written before any key still read as they are.
        assert_eq!(rotated.open("f", "plain").unwrap(), "plain");
        let none = SealingKeys::default();
        assert_eq!(none.seal("f", "plain"), "plain");
        assert!(none.is_current("plain") && !none.is_current(&sealed_old));
        assert!(!format!("{rotated:?}").contains("7, 7"));
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert_eq!(
            parse_key(&format!("{}\n", "ab".repeat(32))).unwrap(),
            [0xab; 32]
        );
        for bad in [
            "",
            "abc",
            &"ab".repeat(31),
            &"zz".repeat(32),
            &"ab".repeat(33),
        ] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
