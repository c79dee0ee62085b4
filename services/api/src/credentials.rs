//! Named credentials, on domain types: the crypt(3) hashes that installed systems get as their
//! passwords (`xcat3 passwd-create`). Only hashes are stored; a password never leaves this
//! module but as its hash.

use xcat3_store::{PasswdRecord, Store};
use xcat3_types::{ErrorCode, FieldError};

pub use crate::error::Error;

/// How a password is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptMethod {
    Sha512,
    Sha256,
}

impl CryptMethod {
    /// `""` (the default) or `sha512`, `sha256`.
    pub fn parse(word: &str) -> Result<Self, FieldError> {
        match word {
            "" | "sha512" => Ok(CryptMethod::Sha512),
            "sha256" => Ok(CryptMethod::Sha256),
            other => Err(FieldError::invalid(
                "crypt_method",
                format!("{other:?} is not one of: sha512, sha256"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CryptMethod::Sha512 => "sha512",
            CryptMethod::Sha256 => "sha256",
        }
    }
}

/// A credential to store.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub key: String,
    pub username: String,
    /// The password, or a ready `$6$`/`$5$` hash (kept as it is).
    pub password: String,
    pub method: CryptMethod,
}

impl NewCredential {
    /// The checks that need no database: a key of 1-64 letters, digits, `_`, `-` or `.`, a
    /// password, a username that fits a passwd line.
    pub fn check(&self) -> Result<(), FieldError> {
        let key_ok = !self.key.is_empty()
            && self.key.len() <= 64
            && self
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(FieldError::invalid(
                "key",
                format!(
                    "{:?} is not a valid key (1-64 letters, digits, '_', '-' or '.')",
                    self.key
                ),
            ));
        }
        if self.password.is_empty() {
            return Err(FieldError::invalid("password", "must not be empty"));
        }
        if self.username.len() > 64 || self.username.chars().any(|c| c.is_control() || c == ':') {
            return Err(FieldError::invalid(
                "username",
                "at most 64 characters, no ':' or control characters",
            ));
        }
        Ok(())
    }
}

/// The named credentials of the inventory.
#[derive(Clone)]
pub struct Credentials {
    store: Store,
}

impl Credentials {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Hashes and stores a credential; its key must be free.
    pub async fn create(&self, new: NewCredential) -> Result<PasswdRecord, Error> {
        new.check()?;
        let (password, method) = (new.password.clone(), new.method);
        // Hashing takes ~10 ms of CPU by design: keep it off the async workers.
        let (hash, method) = tokio::task::spawn_blocking(move || crypt(&password, method))
            .await
            .map_err(|e| FieldError::whole(ErrorCode::Internal, e.to_string()))??;
        match self
            .store
            .create_passwd(&new.key, &new.username, &hash, method.as_str())
            .await
        {
            Ok(record) => Ok(record),
            Err(xcat3_store::Error::Conflict(_)) => Err(FieldError::exists(
                "key",
                format!("{:?} exists already; delete it first", new.key),
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self) -> Result<Vec<PasswdRecord>, Error> {
        Ok(self.store.list_passwds().await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        if self.store.delete_passwd(key).await? {
            Ok(())
        } else {
            Err(FieldError::not_found("key", format!("no credential with key {key:?}")).into())
        }
    }
}

/// Hashes `password` with crypt(3) SHA-512 or SHA-256, or accepts a ready `$6$`/`$5$` hash (whose
/// method then wins over `method`). Returns the hash and its method.
pub fn crypt(password: &str, method: CryptMethod) -> Result<(String, CryptMethod), FieldError> {
    if let Some(rest) = password
        .strip_prefix("$6$")
        .or_else(|| password.strip_prefix("$5$"))
    {
        if rest.contains('$') && !password.contains(char::is_whitespace) {
            let method = if password.starts_with("$6$") {
                CryptMethod::Sha512
            } else {
                CryptMethod::Sha256
            };
            return Ok((password.to_owned(), method));
        }
        return Err(FieldError::invalid(
            "password",
            "looks like a crypt hash but is malformed",
        ));
    }
    let fail = |e| FieldError::whole(ErrorCode::Internal, format!("hashing failed: {e:?}"));
    let hash = match method {
        CryptMethod::Sha512 => {
            let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(fail)?;
            sha_crypt::sha512_simple(password, &params).map_err(fail)?
        }
        CryptMethod::Sha256 => {
            let params = sha_crypt::Sha256Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(fail)?;
            sha_crypt::sha256_simple(password, &params).map_err(fail)?
        }
    };
    Ok((hash, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_hashes_and_accepts_hashes() {
        let (h, m) = crypt("cluster", CryptMethod::Sha512).unwrap();
        assert!(h.starts_with("$6$") && m == CryptMethod::Sha512);
        sha_crypt::sha512_check("cluster", &h).unwrap();
        let (h2, m2) = crypt(&h, CryptMethod::Sha256).unwrap();
        assert_eq!((h2.as_str(), m2), (h.as_str(), CryptMethod::Sha512));
        assert_eq!(
            crypt("$6$nodollar", CryptMethod::Sha512).unwrap_err().field,
            "password"
        );
        let (h, _) = crypt("cluster", CryptMethod::Sha256).unwrap();
        assert!(h.starts_with("$5$"));
        assert_eq!(CryptMethod::parse("md5").unwrap_err().field, "crypt_method");
        assert_eq!(CryptMethod::parse("").unwrap(), CryptMethod::Sha512);
    }

    #[test]
    fn checks_name_the_field() {
        let good = NewCredential {
            key: "system".into(),
            username: "root".into(),
            password: "cluster".into(),
            method: CryptMethod::Sha512,
        };
        good.check().unwrap();
        for (change, field) in [
            (
                NewCredential {
                    key: String::new(),
                    ..good.clone()
                },
                "key",
            ),
            (
                NewCredential {
                    key: "a b".into(),
                    ..good.clone()
                },
                "key",
            ),
            (
                NewCredential {
                    key: "k".repeat(65),
                    ..good.clone()
                },
                "key",
            ),
            (
                NewCredential {
                    password: String::new(),
                    ..good.clone()
                },
                "password",
            ),
            (
                NewCredential {
                    username: "a:b".into(),
                    ..good.clone()
                },
                "username",
            ),
            (
                NewCredential {
                    username: "a\nb".into(),
                    ..good.clone()
                },
                "username",
            ),
        ] {
            assert_eq!(change.check().unwrap_err().field, field, "{change:?}");
        }
    }
}
