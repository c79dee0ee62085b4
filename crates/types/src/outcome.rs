//! The result for one node of a many-node operation, as every core produces it (inventory,
//! dispatch, the conductors' executor). Exactly one per node named by a request.

use std::borrow::Cow;

use crate::{ErrorCode, FieldError};

/// What happened to one node: what was done (`created`, `on`, `accepted`, ...) or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOutcome {
    pub name: String,
    pub result: Result<Cow<'static, str>, FieldError>,
}

impl NodeOutcome {
    pub fn ok(name: impl Into<String>, done: impl Into<Cow<'static, str>>) -> Self {
        NodeOutcome {
            name: name.into(),
            result: Ok(done.into()),
        }
    }

    pub fn err(name: impl Into<String>, error: FieldError) -> Self {
        NodeOutcome {
            name: name.into(),
            result: Err(error),
        }
    }

    /// An error about the node as a whole (no field).
    pub fn fail(name: impl Into<String>, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self::err(name, FieldError::whole(code, reason))
    }

    /// Whether the answer is "not the owner of this node's shard": nothing was done, ask the
    /// new owner.
    pub fn is_not_owner(&self) -> bool {
        matches!(&self.result, Err(e) if e.code == ErrorCode::NotOwner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_say_what_was_done_or_why_not() {
        assert_eq!(NodeOutcome::ok("n1", "on").result.as_deref(), Ok("on"));
        let moved = NodeOutcome::fail("n1", ErrorCode::NotOwner, "shard 3 moved");
        assert!(moved.is_not_owner());
        let down = NodeOutcome::fail("n1", ErrorCode::Unavailable, "shard 3 moved");
        assert!(!down.is_not_owner(), "the code decides, not the words");
    }
}
