use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deploys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    pub osimage: String,
    #[sea_orm(unique)]
    pub token: String,
    pub deadline: i64,
    /// OpenSSH public keys, one per line.
    pub ssh_keys: String,
    pub reboot: bool,
    pub started_at: i64,
    pub trace_context: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
