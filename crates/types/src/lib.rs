//! Domain types of xcat3 and their validation: node names, MAC addresses, NICs, control
//! parameters, networks and secrets. Pure: no I/O, no async, no database, no protobuf.
//!
//! Every check returns a [`FieldError`] that names the field (`nics[1].mac`) and says what is wrong
//! in words an operator can act on; the api turns it into a per-node result.

mod control;
mod error;
mod mac;
mod name;
mod network;
mod node;
mod osimage;
mod provision;
mod secret;

pub use control::{Control, ControlParam, PARAMS as CONTROL_PARAMS};
pub use error::{ErrorCode, FieldError};
pub use mac::MacAddr;
pub use name::{validate_group_name, validate_hostname, validate_label_key};
pub use network::{IpRange, Network, netmask_prefix};
pub use node::{Arch, Mgt, Netboot, Nic, Node, PowerState, ProvisionState};
pub use osimage::{InstallMethod, OsImage, deploy_url, installer_boot};
pub use provision::{ProvisionEvent, Refused};
pub use secret::{MASK, Secret};
