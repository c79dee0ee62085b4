use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "networks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub subnet: String,
    pub netmask: String,
    pub gateway: Option<String>,
    pub dynamic_range: Option<String>,
    /// Comma-separated addresses.
    pub nameservers: String,
    pub domain: Option<String>,
    pub mtu: Option<i32>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
