//! Named credentials (`xcat3 passwd`): their crypt hashes, sealed at rest.

use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};

use crate::entity::passwd;
use crate::{Result, Store, corrupt, now_ms};

/// The associated data a credential's sealed hash is bound to.
pub(crate) const PASSWD_FIELD: &str = "passwd.hash";

/// A named credential without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdRecord {
    pub key: String,
    pub username: String,
    pub crypt_method: String,
    pub created_at: i64,
}

impl Store {
    /// Stores a credential's hash under `key`; fails with a conflict if the key exists.
    pub async fn create_passwd(
        &self,
        key: &str,
        username: &str,
        hash: &str,
        crypt_method: &str,
    ) -> Result<PasswdRecord> {
        let now = now_ms();
        let txn = self.begin_write().await?;
        passwd::Entity::insert(passwd::ActiveModel {
            key: Set(key.to_owned()),
            username: Set(username.to_owned()),
            hash: Set(self.keys.seal(PASSWD_FIELD, hash)),
            crypt_method: Set(crypt_method.to_owned()),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(PasswdRecord {
            key: key.to_owned(),
            username: username.to_owned(),
            crypt_method: crypt_method.to_owned(),
            created_at: now,
        })
    }

    pub async fn list_passwds(&self) -> Result<Vec<PasswdRecord>> {
        let rows = passwd::Entity::find()
            .order_by_asc(passwd::Column::Key)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| PasswdRecord {
                key: m.key,
                username: m.username,
                crypt_method: m.crypt_method,
                created_at: m.created_at,
            })
            .collect())
    }

    /// The stored hash of a credential: for rendering install templates, never for the API.
    pub async fn passwd_hash(&self, key: &str) -> Result<Option<String>> {
        passwd::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await?
            .map(|m| {
                self.keys
                    .open(PASSWD_FIELD, &m.hash)
                    .map_err(|e| corrupt(format!("credential {key}"), e))
            })
            .transpose()
    }

    pub async fn delete_passwd(&self, key: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let res = passwd::Entity::delete_by_id(key.to_owned())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(res.rows_affected > 0)
    }
}
