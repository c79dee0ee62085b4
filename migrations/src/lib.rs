//! The database schema of xcat3, as sea-orm migrations. One schema change per file, named
//! `m<YYYYMMDD>_<NNNNNN>_<what>.rs`; a released migration is never edited, only followed by another.
//! The store runs [`Migrator::up`] when it connects, on SQLite and PostgreSQL alike.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_initial;
mod m20261124_000002_conductors;
mod m20261130_000003_netboot;
mod m20261201_000004_deploy;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261124_000002_conductors::Migration),
            Box::new(m20261130_000003_netboot::Migration),
            Box::new(m20261201_000004_deploy::Migration),
        ]
    }
}
