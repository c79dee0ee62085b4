use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub node: String,
    pub at: i64,
    pub kind: String,
    pub message: String,
    pub conductor: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
