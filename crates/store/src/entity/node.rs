use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Comma-separated group names.
    pub groups: String,
    pub mgt: Option<String>,
    pub netboot: String,
    pub arch: String,
    /// JSON object of control parameters, secrets included.
    pub control: String,
    pub osimage: Option<String>,
    pub provision_state: String,
    pub power_state: String,
    /// JSON object of labels.
    pub labels: String,
    /// Grows by one with every inventory change (optimistic concurrency for updates).
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
