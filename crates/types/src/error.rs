use std::fmt;

/// The restricted set of error kinds the services report. The conversion layer
/// (`xcat3_proto::convert`) gives each its wire form; nothing else spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// A concurrent change got there first; retrying may succeed.
    Aborted,
    Unavailable,
    Internal,
    /// The conductor asked does not own the node's shard (now): it did nothing, and the api asks
    /// the new owner. Between the api and the conductors only; a client sees `Unavailable` if
    /// no owner answers in time.
    NotOwner,
}

/// What is wrong with one field of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: ErrorCode,
    /// Path of the field, for example `nics[0].mac` or `control.bmc_port`; empty for the whole resource.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(code: ErrorCode, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            code,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, field, reason)
    }

    pub fn exists(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, field, reason)
    }

    pub fn not_found(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, field, reason)
    }

    /// An error about the node as a whole (no field).
    pub fn whole(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self::new(code, "", reason)
    }

    /// Prefixes the field path: `mac` inside `nics[2]` becomes `nics[2].mac`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}
