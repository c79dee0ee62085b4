//! Network boot: the inventory revision that network agents follow, claims on blocks of the
//! dynamic ranges, and machines discovered by DHCP.
//!
//! `inventory_revision` has one row. Every write that changes what a network agent answers (nodes,
//! NICs, networks, provision state) raises it in the same transaction, so an api can tell with one
//! read whether its boot table is stale, whichever api made the change.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum InventoryRevision {
    Table,
    Id,
    Value,
}

#[derive(DeriveIden)]
enum DynamicBlocks {
    Table,
    Network,
    First,
    Last,
    Agent,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Discovered {
    Table,
    Mac,
    Ip,
    Network,
    Agent,
    ClientArch,
    VendorClass,
    FirstSeen,
    LastSeen,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(InventoryRevision::Table)
                    .col(integer(InventoryRevision::Id).primary_key())
                    .col(big_integer(InventoryRevision::Value))
                    .to_owned(),
            )
            .await?;
        let seed = Query::insert()
            .into_table(InventoryRevision::Table)
            .columns([InventoryRevision::Id, InventoryRevision::Value])
            .values_panic([1.into(), 1.into()])
            .to_owned();
        manager.exec_stmt(seed).await?;
        manager
            .create_table(
                Table::create()
                    .table(DynamicBlocks::Table)
                    .col(string(DynamicBlocks::Network))
                    // Addresses as integers so blocks sort and compare.
                    .col(big_integer(DynamicBlocks::First))
                    .col(big_integer(DynamicBlocks::Last))
                    .col(string(DynamicBlocks::Agent))
                    .col(big_integer(DynamicBlocks::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(DynamicBlocks::Network)
                            .col(DynamicBlocks::First),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Discovered::Table)
                    .col(string(Discovered::Mac).primary_key())
                    .col(string(Discovered::Ip))
                    .col(string(Discovered::Network))
                    .col(string(Discovered::Agent))
                    .col(integer(Discovered::ClientArch))
                    .col(string(Discovered::VendorClass))
                    .col(big_integer(Discovered::FirstSeen))
                    .col(big_integer(Discovered::LastSeen))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            InventoryRevision::Table.into_iden(),
            DynamicBlocks::Table.into_iden(),
            Discovered::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
