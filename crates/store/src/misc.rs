//! OS images, named credentials and the service registry.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

pub use xcat3_types::OsImage;

use crate::entity::{deploy, node, osimage, passwd, service};

/// The associated data a credential's sealed hash is bound to.
pub(crate) const PASSWD_FIELD: &str = "passwd.hash";
use crate::{KEYS_PER_QUERY, Result, Store, corrupt, now_ms};

impl From<osimage::Model> for OsImage {
    fn from(m: osimage::Model) -> Self {
        OsImage {
            name: m.name,
            distro: m.distro,
            version: m.version,
            arch: m.arch,
            install_method: m.install_method,
            kernel: m.kernel,
            initrd: m.initrd,
            repo_root: m.repo_root,
            created_at: m.created_at,
            source: m.source,
            sha256: m.sha256,
        }
    }
}

/// What [`Store::delete_osimage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsImageDeletion {
    Deleted,
    NotFound,
    /// Up to five nodes that refer to the image or are being deployed with it.
    InUse(Vec<String>),
}

/// A named credential without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdRecord {
    pub key: String,
    pub username: String,
    pub crypt_method: String,
    pub created_at: i64,
}

/// One running (or recently running) service process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: String,
    pub hostname: String,
    pub kind: String,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Store {
    /// Adds an OS image (the image service's job; here for it and for tests).
    pub async fn create_osimage(&self, image: &OsImage) -> Result<()> {
        let txn = self.begin_write().await?;
        osimage::Entity::insert(osimage::ActiveModel {
            name: Set(image.name.clone()),
            distro: Set(image.distro.clone()),
            version: Set(image.version.clone()),
            arch: Set(image.arch.clone()),
            install_method: Set(image.install_method.clone()),
            kernel: Set(image.kernel.clone()),
            initrd: Set(image.initrd.clone()),
            repo_root: Set(image.repo_root.clone()),
            created_at: Set(now_ms()),
            source: Set(image.source.clone()),
            sha256: Set(image.sha256.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn list_osimages(&self) -> Result<Vec<OsImage>> {
        let rows = osimage::Entity::find()
            .order_by_asc(osimage::Column::Name)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(OsImage::from).collect())
    }

    pub async fn get_osimage(&self, name: &str) -> Result<Option<OsImage>> {
        Ok(osimage::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(OsImage::from))
    }

    /// The images imported from the ISO with this SHA-256.
    pub async fn osimages_from(&self, sha256: &str) -> Result<Vec<OsImage>> {
        let rows = osimage::Entity::find()
            .filter(osimage::Column::Sha256.eq(sha256))
            .order_by_asc(osimage::Column::Name)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(OsImage::from).collect())
    }

    /// Deletes an image unless a node refers to it or a deploy is using it; says which, then.
    pub async fn delete_osimage(&self, name: &str) -> Result<OsImageDeletion> {
        let txn = self.begin_write().await?;
        let users: Vec<String> = node::Entity::find()
            .select_only()
            .column(node::Column::Name)
            .filter(node::Column::Osimage.eq(name))
            .limit(5)
            .into_tuple()
            .all(&txn)
            .await?;
        let deploying: Vec<String> = deploy::Entity::find()
            .select_only()
            .column(deploy::Column::Node)
            .filter(deploy::Column::Osimage.eq(name))
            .limit(5)
            .into_tuple()
            .all(&txn)
            .await?;
        let in_use: Vec<String> = users.into_iter().chain(deploying).collect();
        if !in_use.is_empty() {
            txn.rollback().await?;
            return Ok(OsImageDeletion::InUse(in_use));
        }
        let deleted = osimage::Entity::delete_by_id(name.to_owned())
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(if deleted == 0 {
            OsImageDeletion::NotFound
        } else {
            OsImageDeletion::Deleted
        })
    }

    /// Of `names`, those that are OS images.
    pub async fn existing_osimages(&self, names: &[String]) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for chunk in names.chunks(KEYS_PER_QUERY) {
            let rows: Vec<String> = osimage::Entity::find()
                .select_only()
                .column(osimage::Column::Name)
                .filter(osimage::Column::Name.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.db)
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

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

    /// Records (or refreshes) a service process's heartbeat.
    pub async fn heartbeat(&self, s: &ServiceRecord) -> Result<()> {
        service::Entity::insert(service::ActiveModel {
            id: Set(s.id.clone()),
            hostname: Set(s.hostname.clone()),
            kind: Set(s.kind.clone()),
            version: Set(s.version.clone()),
            started_at: Set(s.started_at),
            heartbeat_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(service::Column::Id)
                .update_column(service::Column::HeartbeatAt)
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// Removes a service on clean shutdown, and entries whose heartbeat is older than `stale_before`.
    pub async fn unregister_service(&self, id: &str, stale_before: i64) -> Result<()> {
        service::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(service::Column::Id.eq(id))
                    .add(service::Column::HeartbeatAt.lt(stale_before)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rows = service::Entity::find()
            .order_by_asc(service::Column::Kind)
            .order_by_asc(service::Column::Hostname)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| ServiceRecord {
                id: m.id,
                hostname: m.hostname,
                kind: m.kind,
                version: m.version,
                started_at: m.started_at,
                heartbeat_at: m.heartbeat_at,
            })
            .collect())
    }
}
