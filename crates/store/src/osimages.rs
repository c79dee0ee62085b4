//! OS images: what the image service imported, which nodes deploy.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

pub use xcat3_types::OsImage;

use crate::entity::{deploy, node, osimage};
use crate::{KEYS_PER_QUERY, Result, Store, now_ms};

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
}
