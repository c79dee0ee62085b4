//! Conductors: the shard table that fences stale owners, and the per-node event history.
//!
//! `shards.epoch` holds the fencing token of the shard's latest owner (the etcd revision of its
//! claim). A conductor raises it when it claims the shard (never lowers it), and every write it
//! makes for a node of the shard checks that the epoch is still its own token.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Shards {
    Table,
    Id,
    Epoch,
    Owner,
}

#[derive(DeriveIden)]
enum NodeEvents {
    Table,
    Id,
    Node,
    At,
    Kind,
    Message,
    Conductor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Shards::Table)
                    .col(integer(Shards::Id).primary_key())
                    .col(big_integer(Shards::Epoch))
                    .col(string(Shards::Owner))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NodeEvents::Table)
                    .col(big_pk_auto(NodeEvents::Id))
                    .col(string(NodeEvents::Node))
                    .col(big_integer(NodeEvents::At))
                    .col(string(NodeEvents::Kind))
                    .col(text(NodeEvents::Message))
                    .col(string(NodeEvents::Conductor))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_node_events_node")
                    .table(NodeEvents::Table)
                    .col(NodeEvents::Node)
                    .col(NodeEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NodeEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Shards::Table).to_owned())
            .await
    }
}
