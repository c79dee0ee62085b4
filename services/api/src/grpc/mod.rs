//! gRPC adapters: convert messages at the edge, call the core, convert back. No business logic.

pub mod conductors;
pub mod images;
pub mod netboot;
pub mod networks;
pub mod nodes;
pub mod osimages;
pub mod passwds;
pub mod registry;

use tonic::Status;
use xcat3_types::{ErrorCode, FieldError};

use crate::inventory::RequestError;

/// The one place where errors become gRPC statuses.
pub fn status(e: RequestError) -> Status {
    match e {
        RequestError::Noderange(e) => Status::invalid_argument(format!("noderange: {e}")),
        RequestError::Invalid(e) => field_status(&e),
        RequestError::Store(e) => store_status(&e),
        RequestError::Internal(e) => {
            tracing::error!(error = %e, "request work failed");
            Status::internal(e)
        }
    }
}

pub fn field_status(e: &FieldError) -> Status {
    let text = e.to_string();
    match e.code {
        ErrorCode::InvalidArgument => Status::invalid_argument(text),
        ErrorCode::NotFound => Status::not_found(text),
        ErrorCode::AlreadyExists => Status::already_exists(text),
        ErrorCode::FailedPrecondition => Status::failed_precondition(text),
        ErrorCode::Aborted => Status::aborted(text),
        ErrorCode::Unavailable | ErrorCode::NotOwner => Status::unavailable(text),
        ErrorCode::Internal => Status::internal(text),
    }
}

/// The status of a refusal by the api's core (a rule, or the database).
pub fn core_status(e: &crate::error::Error) -> Status {
    match e {
        crate::error::Error::Rule(e) => field_status(e),
        crate::error::Error::Store(e) => store_status(e),
    }
}

pub fn store_status(e: &xcat3_store::Error) -> Status {
    match e {
        xcat3_store::Error::Conflict(m) => Status::already_exists(format!("conflict: {m}")),
        xcat3_store::Error::Stale(_) => Status::aborted(e.to_string()),
        other => {
            tracing::error!(error = %other, "database request failed");
            Status::unavailable(format!("database unavailable: {other}"))
        }
    }
}
