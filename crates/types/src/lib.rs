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
mod outcome;
mod power;
mod provision;
mod secret;
pub mod sshkey;

pub use control::{Control, ControlParam, PARAMS as CONTROL_PARAMS, is_secret};
pub use error::{ErrorCode, FieldError};
pub use mac::MacAddr;
pub use name::{validate_group_name, validate_hostname, validate_label_key};
pub use network::{IpRange, Network, home_network, netmask_prefix};
pub use node::{
    Arch, MAX_NICS, Mgt, Netboot, Nic, Node, PowerState, ProvisionState, is_device_path,
    is_line_breaking,
};
pub use osimage::{InstallMethod, OsImage, deploy_url, installer_boot};
pub use outcome::NodeOutcome;
pub use power::{BootDevice, PowerAction};
pub use provision::{ProvisionEvent, Refused};
pub use secret::{MASK, Secret};
pub use sshkey::{validate_key as validate_ssh_key, validate_keys as validate_ssh_keys};

/// Lowercase hexadecimal, two digits per byte (tokens, SHA-256 digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` is what [`hex`] makes of 32 bytes: a SHA-256 digest or a generated token.
pub fn is_hex32(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_of_32_bytes_is_recognised_and_nothing_else() {
        let h = super::hex(&[0xab; 32]);
        assert_eq!(&h[..4], "abab");
        assert!(super::is_hex32(&h));
        assert!(!super::is_hex32(&h.to_uppercase()));
        assert!(!super::is_hex32(&h[1..]));
        assert!(!super::is_hex32(&format!("{}g", &h[1..])));
    }
}
