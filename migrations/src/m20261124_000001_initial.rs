//! Nodes, NICs, networks, OS images, named credentials and the service registry.
//!
//! `nodes.revision` grows by one with every inventory change to a node; updates check it so two
//! concurrent updates cannot silently undo each other.
//!
//! Timestamps are Unix milliseconds (`BIGINT`), which both back ends store and compare the same
//! way. Structured columns (`control`, `labels`) hold JSON text.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Name,
    Groups,
    Mgt,
    Netboot,
    Arch,
    Control,
    Osimage,
    ProvisionState,
    PowerState,
    Labels,
    Revision,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Nics {
    Table,
    Mac,
    Node,
    Name,
    Ip,
    IsPrimary,
    Position,
}

#[derive(DeriveIden)]
enum Networks {
    Table,
    Name,
    Subnet,
    Netmask,
    Gateway,
    DynamicRange,
    Nameservers,
    Domain,
    Mtu,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Osimages {
    Table,
    Name,
    Distro,
    Version,
    Arch,
    InstallMethod,
    Kernel,
    Initrd,
    RepoRoot,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Passwds {
    Table,
    Key,
    Username,
    Hash,
    CryptMethod,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Services {
    Table,
    Id,
    Hostname,
    Kind,
    Version,
    StartedAt,
    HeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(string(Nodes::Name).primary_key())
                    .col(text(Nodes::Groups).default(""))
                    .col(string_null(Nodes::Mgt))
                    .col(string(Nodes::Netboot))
                    .col(string(Nodes::Arch))
                    .col(text(Nodes::Control))
                    .col(string_null(Nodes::Osimage))
                    .col(string(Nodes::ProvisionState))
                    .col(string(Nodes::PowerState))
                    .col(text(Nodes::Labels))
                    .col(big_integer(Nodes::Revision).default(1))
                    .col(big_integer(Nodes::CreatedAt))
                    .col(big_integer(Nodes::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Nics::Table)
                    .col(string(Nics::Mac).primary_key())
                    .col(string(Nics::Node))
                    .col(string(Nics::Name))
                    .col(string_null(Nics::Ip))
                    .col(boolean(Nics::IsPrimary))
                    .col(integer(Nics::Position))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_nics_node")
                            .from(Nics::Table, Nics::Node)
                            .to(Nodes::Table, Nodes::Name)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Lookups by MAC use the primary key; by IP and by node these indexes.
        manager
            .create_index(
                Index::create()
                    .name("idx_nics_ip")
                    .table(Nics::Table)
                    .col(Nics::Ip)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_nics_node_name")
                    .table(Nics::Table)
                    .col(Nics::Node)
                    .col(Nics::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_nodes_provision_state")
                    .table(Nodes::Table)
                    .col(Nodes::ProvisionState)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Networks::Table)
                    .col(string(Networks::Name).primary_key())
                    .col(string(Networks::Subnet))
                    .col(string(Networks::Netmask))
                    .col(string_null(Networks::Gateway))
                    .col(string_null(Networks::DynamicRange))
                    .col(text(Networks::Nameservers).default(""))
                    .col(string_null(Networks::Domain))
                    .col(integer_null(Networks::Mtu))
                    .col(big_integer(Networks::CreatedAt))
                    .col(big_integer(Networks::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Osimages::Table)
                    .col(string(Osimages::Name).primary_key())
                    .col(string(Osimages::Distro))
                    .col(string(Osimages::Version))
                    .col(string(Osimages::Arch))
                    .col(string(Osimages::InstallMethod))
                    .col(text(Osimages::Kernel))
                    .col(text(Osimages::Initrd))
                    .col(text(Osimages::RepoRoot))
                    .col(big_integer(Osimages::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Passwds::Table)
                    .col(string(Passwds::Key).primary_key())
                    .col(string(Passwds::Username).default(""))
                    .col(text(Passwds::Hash))
                    .col(string(Passwds::CryptMethod))
                    .col(big_integer(Passwds::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Services::Table)
                    .col(string(Services::Id).primary_key())
                    .col(string(Services::Hostname))
                    .col(string(Services::Kind))
                    .col(string(Services::Version))
                    .col(big_integer(Services::StartedAt))
                    .col(big_integer(Services::HeartbeatAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Services::Table.into_iden(),
            Passwds::Table.into_iden(),
            Osimages::Table.into_iden(),
            Networks::Table.into_iden(),
            Nics::Table.into_iden(),
            Nodes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
