//! The node provisioning state machine: the one place that says which state change each event
//! makes, and from which states. The store applies a transition only to nodes still in one of the
//! event's source states (compare-and-set), so concurrent actors cannot undo each other.
//!
//! ```text
//!   available ─┐
//!   deployed  ─┼─deploy─▶ deploying ─published─▶ wait-callback ─callback─▶ deployed
//!   deploy-failed┘             │                     │  │
//!                        fail, timeout            fail  timeout
//!                              ▼                     ▼  ▼
//!                          deploy-failed ◀───────────┴──┘
//!   any of deploying, wait-callback, deployed, deploy-failed ─undeploy─▶ available
//!   enroll ─manage─▶ available
//! ```

use std::fmt;

use crate::ProvisionState::{self, *};

/// Something that moves a node through its provisioning life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProvisionEvent {
    /// An enrolled node is ready to be deployed.
    Manage,
    /// A deploy was requested and the node passed its checks.
    Deploy,
    /// The node's install boot configuration reached the network agents (and it was rebooted
    /// when asked): now it is the node's turn.
    Published,
    /// The installed system called back: the install succeeded.
    Callback,
    /// Preparing the deploy failed, or the installer reported failure.
    Fail,
    /// The callback did not come in time.
    Timeout,
    /// The operator cancelled or forgot a deploy.
    Undeploy,
}

impl ProvisionEvent {
    /// The states the event applies in.
    pub fn sources(self) -> &'static [ProvisionState] {
        match self {
            ProvisionEvent::Manage => &[Enroll],
            ProvisionEvent::Deploy => &[Available, Deployed, DeployFailed],
            ProvisionEvent::Published => &[Deploying],
            // From `deploying` too: the install boot action is live from the moment the node
            // enters `deploying`, so a conductor that died before `published` must not make the
            // finished install's callback bounce (and the node reinstall until its deadline).
            ProvisionEvent::Callback => &[Deploying, WaitCallback],
            ProvisionEvent::Fail => &[Deploying, WaitCallback],
            ProvisionEvent::Timeout => &[Deploying, WaitCallback],
            ProvisionEvent::Undeploy => &[Deploying, WaitCallback, Deployed, DeployFailed],
        }
    }

    /// The state the event leads to.
    pub fn target(self) -> ProvisionState {
        match self {
            ProvisionEvent::Manage | ProvisionEvent::Undeploy => Available,
            ProvisionEvent::Deploy => Deploying,
            ProvisionEvent::Published => WaitCallback,
            ProvisionEvent::Callback => Deployed,
            ProvisionEvent::Fail | ProvisionEvent::Timeout => DeployFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionEvent::Manage => "manage",
            ProvisionEvent::Deploy => "deploy",
            ProvisionEvent::Published => "published",
            ProvisionEvent::Callback => "callback",
            ProvisionEvent::Fail => "fail",
            ProvisionEvent::Timeout => "timeout",
            ProvisionEvent::Undeploy => "undeploy",
        }
    }

    /// The state after the event, or why the event does not apply in `from`.
    pub fn apply(self, from: ProvisionState) -> Result<ProvisionState, Refused> {
        if self.sources().contains(&from) {
            Ok(self.target())
        } else {
            Err(Refused { event: self, from })
        }
    }
}

impl fmt::Display for ProvisionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that does not apply in the node's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub event: ProvisionEvent,
    pub from: ProvisionState,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<&str> = self.event.sources().iter().map(|s| s.as_str()).collect();
        write!(
            f,
            "cannot {} a node in state {} (only from {})",
            self.event,
            self.from,
            allowed.join(", ")
        )?;
        if self.event == ProvisionEvent::Deploy && matches!(self.from, Deploying | WaitCallback) {
            f.write_str("; a deploy is in progress: undeploy it first")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [ProvisionEvent; 7] = [
        ProvisionEvent::Manage,
        ProvisionEvent::Deploy,
        ProvisionEvent::Published,
        ProvisionEvent::Callback,
        ProvisionEvent::Fail,
        ProvisionEvent::Timeout,
        ProvisionEvent::Undeploy,
    ];

    #[test]
    fn a_deploy_walks_to_deployed_and_back() {
        let mut s = Available;
        for e in [
            ProvisionEvent::Deploy,
            ProvisionEvent::Published,
            ProvisionEvent::Callback,
        ] {
            s = e.apply(s).unwrap();
        }
        assert_eq!(s, Deployed);
        // Redeploying a deployed node is allowed, and undeploy returns it to the pool.
        assert_eq!(ProvisionEvent::Deploy.apply(s), Ok(Deploying));
        assert_eq!(ProvisionEvent::Undeploy.apply(s), Ok(Available));
    }

    #[test]
    fn events_outside_their_sources_are_refused_with_the_reason() {
        let e = ProvisionEvent::Deploy.apply(WaitCallback).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot deploy a node in state wait-callback (only from available, deployed, \
             deploy-failed); a deploy is in progress: undeploy it first"
        );
        assert!(ProvisionEvent::Callback.apply(Deployed).is_err());
        assert_eq!(
            ProvisionEvent::Callback.apply(Deploying),
            Ok(Deployed),
            "a conductor that died before publishing does not strand the node"
        );
        assert!(ProvisionEvent::Timeout.apply(Deployed).is_err());
        assert!(ProvisionEvent::Undeploy.apply(Available).is_err());
    }

    #[test]
    fn every_state_is_reachable_and_every_non_enroll_state_can_return_to_available() {
        for state in ProvisionState::WORDS {
            let state: ProvisionState = state.parse().unwrap();
            let reachable = state == Enroll || EVENTS.iter().any(|e| e.target() == state);
            assert!(reachable, "{state} unreachable");
            if state != Available {
                let back = [ProvisionEvent::Undeploy, ProvisionEvent::Manage]
                    .iter()
                    .any(|e| e.apply(state) == Ok(Available));
                assert!(back, "no way back to available from {state}");
            }
        }
    }
}
