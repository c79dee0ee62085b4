//! Power drivers: how a conductor reaches a node's BMC or hypervisor, one module per `mgt`.
//!
//! Every call is bounded by the conductor (a timeout per operation, a concurrency limit per driver
//! and one per BMC address), so a driver only has to do the operation itself.

pub mod ipmi;
pub mod kvm;
pub mod redfish;

pub use xcat3_types::{BootDevice, PowerAction};
use xcat3_types::{Mgt, Node, PowerState};

/// Why a driver call failed; the message is shown to the operator as the node's error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node lacks what the driver needs (`control.bmc_address`, ...).
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// The BMC or hypervisor answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The BMC did not answer at all (no session, no connection, or the operation's timeout).
    /// Operations queued behind it on the same BMC fail at once with this reason.
    #[error("{0}")]
    Unreachable(String),
}

impl DriverError {
    pub fn missing(field: &str) -> Self {
        DriverError::Config {
            field: field.into(),
            reason: "required by this node's mgt; set it with `xcat3 update`".into(),
        }
    }
}

/// The drivers a conductor has, by `mgt`.
#[derive(Clone)]
pub struct Drivers {
    pub ipmi: ipmi::Ipmi,
    pub redfish: redfish::Redfish,
    pub kvm: kvm::Kvm,
}

impl Drivers {
    /// The endpoint whose concurrency is bounded for this node: its BMC (address and port) or
    /// hypervisor.
    pub fn endpoint(node: &Node) -> Option<String> {
        let c = &node.control;
        let (address, port) = match node.mgt? {
            Mgt::Ipmi | Mgt::Redfish => (c.get("bmc_address")?, c.get("bmc_port")),
            Mgt::Kvm => (c.get("ssh_address")?, c.get("ssh_port")),
        };
        Some(match port {
            Some(p) => format!("{address}:{p}"),
            None => address.to_owned(),
        })
    }

    pub async fn power(&self, node: &Node, action: PowerAction) -> Result<PowerState, DriverError> {
        match node.mgt {
            Some(Mgt::Ipmi) => self.ipmi.power(node, action).await,
            Some(Mgt::Redfish) => self.redfish.power(node, action).await,
            Some(Mgt::Kvm) => self.kvm.power(node, action).await,
            None => Err(unmanaged()),
        }
    }

    pub async fn boot_device(
        &self,
        node: &Node,
        target: Option<BootDevice>,
    ) -> Result<BootDevice, DriverError> {
        match node.mgt {
            Some(Mgt::Ipmi) => self.ipmi.boot_device(node, target).await,
            Some(Mgt::Redfish) => self.redfish.boot_device(node, target).await,
            Some(Mgt::Kvm) => self.kvm.boot_device(node, target).await,
            None => Err(unmanaged()),
        }
    }
}

fn unmanaged() -> DriverError {
    DriverError::Config {
        field: "mgt".into(),
        reason: "the node has no management driver; set mgt=ipmi|redfish|kvm".into(),
    }
}
