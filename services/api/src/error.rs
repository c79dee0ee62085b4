//! Why an operation of the api's core (networks, credentials) did nothing: a rule refused it, or
//! the database failed. The gRPC layer turns each into a status (`grpc::core_status`).

use xcat3_types::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Rule(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] xcat3_store::Error),
}
