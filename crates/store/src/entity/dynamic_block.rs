use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dynamic_blocks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub network: String,
    /// First address of the block, as an integer.
    #[sea_orm(primary_key, auto_increment = false)]
    pub first: i64,
    pub last: i64,
    pub agent: String,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
