//! OS deployment: where an osimage came from (so importing the same ISO twice is a no-op), and one
//! row per node with a deploy in progress: its osimage, its callback token and its deadline.
//!
//! The token is what the node's install files and callback URLs are addressed by; it is removed
//! when the deploy ends, which makes it single-use.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Osimages {
    Table,
    Source,
    Sha256,
}

#[derive(DeriveIden)]
enum Deploys {
    Table,
    Node,
    Osimage,
    Token,
    Deadline,
    SshKeys,
    Reboot,
    StartedAt,
    TraceContext,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            string(Osimages::Source).default("").to_owned(),
            string(Osimages::Sha256).default("").to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Osimages::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("osimages_sha256")
                    .table(Osimages::Table)
                    .col(Osimages::Sha256)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deploys::Table)
                    .col(string(Deploys::Node).primary_key())
                    .col(string(Deploys::Osimage))
                    .col(string_uniq(Deploys::Token))
                    .col(big_integer(Deploys::Deadline))
                    .col(text(Deploys::SshKeys))
                    .col(boolean(Deploys::Reboot))
                    .col(big_integer(Deploys::StartedAt))
                    // The deploy request's W3C traceparent: the install files and the callback
                    // join its trace.
                    .col(string(Deploys::TraceContext).default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deploys_deadline")
                    .table(Deploys::Table)
                    .col(Deploys::Deadline)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Deploys::Table).to_owned())
            .await?;
        manager
            .drop_index(Index::drop().name("osimages_sha256").to_owned())
            .await?;
        for column in [Osimages::Source, Osimages::Sha256] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Osimages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
