//! `xcat3.v1.PasswdService`: named credentials (crypt(3) hashes for installed systems).

use tonic::{Request, Response, Status};
use xcat3_proto::convert::timestamp;
use xcat3_proto::pb;
use xcat3_store::{PasswdRecord, Store};

use super::{core_status, field_status};
use crate::credentials::{Credentials, CryptMethod, NewCredential};

pub struct PasswdService {
    credentials: Credentials,
}

impl PasswdService {
    pub fn new(store: Store) -> Self {
        Self {
            credentials: Credentials::new(store),
        }
    }
}

fn to_pb(r: PasswdRecord) -> pb::Passwd {
    pb::Passwd {
        key: r.key,
        username: r.username,
        crypt_method: r.crypt_method,
        created_at: timestamp(r.created_at),
    }
}

#[tonic::async_trait]
impl pb::passwd_service_server::PasswdService for PasswdService {
    async fn create_passwd(
        &self,
        request: Request<pb::CreatePasswdRequest>,
    ) -> Result<Response<pb::Passwd>, Status> {
        let req = request.into_inner();
        let method = CryptMethod::parse(&req.crypt_method).map_err(|e| field_status(&e))?;
        let new = NewCredential {
            key: req.key,
            username: req.username,
            password: req.password,
            method,
        };
        let record = self
            .credentials
            .create(new)
            .await
            .map_err(|e| core_status(&e))?;
        tracing::info!(key = %record.key, "credential stored");
        Ok(Response::new(to_pb(record)))
    }

    async fn list_passwds(
        &self,
        _: Request<pb::ListPasswdsRequest>,
    ) -> Result<Response<pb::ListPasswdsResponse>, Status> {
        let records = self.credentials.list().await.map_err(|e| core_status(&e))?;
        Ok(Response::new(pb::ListPasswdsResponse {
            passwds: records.into_iter().map(to_pb).collect(),
        }))
    }

    async fn delete_passwd(
        &self,
        request: Request<pb::PasswdRef>,
    ) -> Result<Response<pb::DeletePasswdResponse>, Status> {
        let key = request.into_inner().key;
        self.credentials
            .delete(&key)
            .await
            .map_err(|e| core_status(&e))?;
        tracing::info!(key = %key, "credential deleted");
        Ok(Response::new(pb::DeletePasswdResponse {}))
    }
}
