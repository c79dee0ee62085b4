//! `xcat3.v1.PasswdService`: named credentials (crypt(3) hashes for installed systems).

use tonic::{Request, Response, Status};
use xcat3_proto::convert::timestamp;
use xcat3_proto::pb;
use xcat3_store::Store;

use super::store_status;

pub struct PasswdService {
    store: Store,
}

impl PasswdService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// Hashes `password` with crypt(3) SHA-512 or SHA-256, or accepts a ready `$6$`/`$5$` hash.
/// Returns the hash and the method.
pub fn crypt(password: &str, method: &str) -> Result<(String, &'static str), Status> {
    if let Some(rest) = password
        .strip_prefix("$6$")
        .or_else(|| password.strip_prefix("$5$"))
    {
        if rest.contains('$') && !password.contains(char::is_whitespace) {
            let method = if password.starts_with("$6$") {
                "sha512"
            } else {
                "sha256"
            };
            return Ok((password.to_owned(), method));
        }
        return Err(Status::invalid_argument(
            "password: looks like a crypt hash but is malformed",
        ));
    }
    let fail = |e| Status::internal(format!("hashing failed: {e:?}"));
    match method {
        "" | "sha512" => {
            let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(fail)?;
            Ok((
                sha_crypt::sha512_simple(password, &params).map_err(fail)?,
                "sha512",
            ))
        }
        "sha256" => {
            let params = sha_crypt::Sha256Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(fail)?;
            Ok((
                sha_crypt::sha256_simple(password, &params).map_err(fail)?,
                "sha256",
            ))
        }
        other => Err(Status::invalid_argument(format!(
            "crypt_method: {other:?} is not one of: sha512, sha256"
        ))),
    }
}

#[tonic::async_trait]
impl pb::passwd_service_server::PasswdService for PasswdService {
    async fn create_passwd(
        &self,
        request: Request<pb::CreatePasswdRequest>,
    ) -> Result<Response<pb::Passwd>, Status> {
        let req = request.into_inner();
        let key_ok = !req.key.is_empty()
            && req.key.len() <= 64
            && req
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !key_ok {
            return Err(Status::invalid_argument(format!(
                "key: {:?} is not a valid key (1-64 letters, digits, '_', '-' or '.')",
                req.key
            )));
        }
        if req.password.is_empty() {
            return Err(Status::invalid_argument("password: must not be empty"));
        }
        if req.username.len() > 64 || req.username.chars().any(|c| c.is_control() || c == ':') {
            return Err(Status::invalid_argument(
                "username: at most 64 characters, no ':' or control characters",
            ));
        }
        let password = req.password;
        let method = req.crypt_method;
        // Hashing takes ~10 ms of CPU by design: keep it off the async workers.
        let (hash, method) = tokio::task::spawn_blocking(move || crypt(&password, &method))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        match self
            .store
            .create_passwd(&req.key, &req.username, &hash, method)
            .await
        {
            Ok(r) => {
                tracing::info!(key = %r.key, "credential stored");
                Ok(Response::new(pb::Passwd {
                    key: r.key,
                    username: r.username,
                    crypt_method: r.crypt_method,
                    created_at: timestamp(r.created_at),
                }))
            }
            Err(xcat3_store::Error::Conflict(_)) => Err(Status::already_exists(format!(
                "key: {:?} exists already; delete it first",
                req.key
            ))),
            Err(e) => Err(store_status(&e)),
        }
    }

    async fn list_passwds(
        &self,
        _: Request<pb::ListPasswdsRequest>,
    ) -> Result<Response<pb::ListPasswdsResponse>, Status> {
        let rows = self
            .store
            .list_passwds()
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListPasswdsResponse {
            passwds: rows
                .into_iter()
                .map(|r| pb::Passwd {
                    key: r.key,
                    username: r.username,
                    crypt_method: r.crypt_method,
                    created_at: timestamp(r.created_at),
                })
                .collect(),
        }))
    }

    async fn delete_passwd(
        &self,
        request: Request<pb::PasswdRef>,
    ) -> Result<Response<pb::DeletePasswdResponse>, Status> {
        let key = request.into_inner().key;
        if self
            .store
            .delete_passwd(&key)
            .await
            .map_err(|e| store_status(&e))?
        {
            tracing::info!(key = %key, "credential deleted");
            Ok(Response::new(pb::DeletePasswdResponse {}))
        } else {
            Err(Status::not_found(format!("no credential with key {key:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_hashes_and_accepts_hashes() {
        let (h, m) = crypt("cluster", "").unwrap();
        assert!(h.starts_with("$6$") && m == "sha512");
        sha_crypt::sha512_check("cluster", &h).unwrap();
        let (h2, m2) = crypt(&h, "").unwrap();
        assert_eq!((h2.as_str(), m2), (h.as_str(), "sha512"));
        assert!(crypt("x", "md5").is_err());
        assert!(crypt("$6$nodollar", "").is_err());
        assert!(crypt("cluster", "sha256").unwrap().0.starts_with("$5$"));
    }
}
