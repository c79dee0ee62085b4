use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "discovered")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub mac: String,
    pub ip: String,
    pub network: String,
    pub agent: String,
    pub client_arch: i32,
    pub vendor_class: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
