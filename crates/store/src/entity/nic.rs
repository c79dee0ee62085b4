use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nics")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub mac: String,
    pub node: String,
    pub name: String,
    pub ip: Option<String>,
    pub is_primary: bool,
    pub position: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
