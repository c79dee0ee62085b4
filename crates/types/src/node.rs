use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::{
    Control, FieldError, MacAddr, validate_group_name, validate_hostname, validate_label_key,
};

/// Declares a string-backed enum with `as_str`, `Display`, `FromStr` and the list of its words.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every accepted word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(FieldError::invalid(
                        $what,
                        format!("{s:?} is not one of: {}", Self::WORDS.join(", ")),
                    )),
                }
            }
        }
    };
}

word_enum!(
    /// How the conductor controls a node's power.
    Mgt, "mgt" { Kvm = "kvm", Ipmi = "ipmi", Redfish = "redfish" }
);
word_enum!(
    /// How the node boots from the network.
    Netboot, "netboot" { Pxe = "pxe", Ipxe = "ipxe", UefiHttp = "uefi-http" }
);
word_enum!(
    /// CPU architecture of the node.
    Arch, "arch" { X86_64 = "x86_64", Aarch64 = "aarch64", Ppc64le = "ppc64le" }
);
word_enum!(
    /// Where the node is in its provisioning life cycle. Only conductors change it.
    ProvisionState, "provision_state" {
        Enroll = "enroll",
        Available = "available",
        Deploying = "deploying",
        WaitCallback = "wait-callback",
        Deployed = "deployed",
        DeployFailed = "deploy-failed",
    }
);
word_enum!(
    /// Last known power state, as reported by the BMC or hypervisor.
    PowerState, "power_state" { Unknown = "unknown", On = "on", Off = "off" }
);

/// One network interface of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name on the node, such as `eth0`.
    pub name: String,
    pub mac: MacAddr,
    /// Static address handed out by DHCP; `None` for a NIC without a reservation.
    pub ip: Option<Ipv4Addr>,
    /// The NIC the node boots from; exactly one NIC of a node is primary.
    pub primary: bool,
}

/// A machine in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub groups: Vec<String>,
    pub mgt: Option<Mgt>,
    pub netboot: Netboot,
    pub arch: Arch,
    pub control: Control,
    pub nics: Vec<Nic>,
    pub osimage: Option<String>,
    pub provision_state: ProvisionState,
    pub power_state: PowerState,
    pub labels: BTreeMap<String, String>,
}

/// Most NICs one node may have.
pub const MAX_NICS: usize = 64;
/// Most groups one node may be in.
pub const MAX_GROUPS: usize = 256;
/// Most labels one node may carry.
pub const MAX_LABELS: usize = 256;

/// Whether `c` may end a line for some parser (YAML, JavaScript, Unicode-aware shells): control
/// characters, NEL, and the Unicode line and paragraph separators.
pub fn is_line_breaking(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `v` is a plain device path like `/dev/sda` or `/dev/disk/by-id/wwn-0x5000:1`: it
/// goes into installer files (kickstart, preseed, autoinstall) as it is.
pub fn is_device_path(v: &str) -> bool {
    v.strip_prefix("/dev/").is_some_and(|rest| {
        !rest.is_empty()
            && v.len() <= 128
            && !rest.split('/').any(|c| c.is_empty() || c == "..")
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
    })
}

fn at_most(field: &str, what: &str, len: usize, max: usize) -> Result<(), FieldError> {
    if len > max {
        return Err(FieldError::invalid(
            field,
            format!("{len} {what}: a node has at most {max}"),
        ));
    }
    Ok(())
}

impl Node {
    /// A node with only a name and the defaults (pxe, x86_64, available, power unknown).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            groups: Vec::new(),
            mgt: None,
            netboot: Netboot::Pxe,
            arch: Arch::X86_64,
            control: Control::default(),
            nics: Vec::new(),
            osimage: None,
            provision_state: ProvisionState::Available,
            power_state: PowerState::Unknown,
            labels: BTreeMap::new(),
        }
    }

    /// Checks how many groups, NICs and labels the node has (part of [`Node::validate`]; alone,
    /// for a template before it is copied for every node of a request).
    pub fn check_sizes(&self) -> Result<(), FieldError> {
        at_most("groups", "groups", self.groups.len(), MAX_GROUPS)?;
        at_most("nics", "NICs", self.nics.len(), MAX_NICS)?;
        at_most("labels", "labels", self.labels.len(), MAX_LABELS)
    }

    /// Checks everything that can be checked without the rest of the inventory, and makes the
    /// first NIC primary when none is marked.
    pub fn validate(&mut self) -> Result<(), FieldError> {
        validate_hostname(&self.name)?;
        self.check_sizes()?;
        let mut seen_groups = HashSet::new();
        for g in &self.groups {
            validate_group_name(g)?;
            if !seen_groups.insert(g) {
                return Err(FieldError::invalid(
                    "groups",
                    format!("{g:?} is listed twice"),
                ));
            }
        }
        self.control.check_driver(self.mgt)?;
        let (mut names, mut macs, mut ips) = (HashSet::new(), HashSet::new(), HashSet::new());
        for (i, nic) in self.nics.iter().enumerate() {
            let at = |f: &str| format!("nics[{i}].{f}");
            let name_ok = !nic.name.is_empty()
                && nic.name.len() <= 15
                && nic
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !name_ok {
                return Err(FieldError::invalid(
                    at("name"),
                    format!(
                        "{:?} is not an interface name (1-15 letters, digits, '.', '_' or '-')",
                        nic.name
                    ),
                ));
            }
            if !names.insert(nic.name.as_str()) {
                return Err(FieldError::invalid(
                    at("name"),
                    format!("{:?} is used twice on this node", nic.name),
                ));
            }
            if !macs.insert(nic.mac) {
                return Err(FieldError::invalid(
                    at("mac"),
                    format!("{} is used twice on this node", nic.mac),
                ));
            }
            if let Some(ip) = nic.ip {
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback()
                {
                    return Err(FieldError::invalid(
                        at("ip"),
                        format!("{ip} cannot be a node's address"),
                    ));
                }
                if !ips.insert(ip) {
                    return Err(FieldError::invalid(
                        at("ip"),
                        format!("{ip} is used twice on this node"),
                    ));
                }
            }
        }
        match self.nics.iter().filter(|n| n.primary).count() {
            0 => {
                if let Some(first) = self.nics.first_mut() {
                    first.primary = true;
                }
            }
            1 => {}
            _ => {
                return Err(FieldError::invalid(
                    "nics",
                    "more than one NIC is marked primary",
                ));
            }
        }
        for (k, v) in &self.labels {
            validate_label_key(k)?;
            if k == "install_disk" && !is_device_path(v) {
                return Err(FieldError::invalid(
                    "labels.install_disk",
                    format!(
                        "{v:?} is not a device path (/dev/ followed by letters, digits, '.', '_', \
                         '-', ':' or '/')"
                    ),
                ));
            }
            if v.len() > 256 || v.chars().any(is_line_breaking) {
                return Err(FieldError::invalid(
                    format!("labels.{k}"),
                    "values are at most 256 characters without control characters or line \
                     separators",
                ));
            }
        }
        if let Some(image) = &self.osimage
            && image.is_empty()
        {
            self.osimage = None;
        }
        Ok(())
    }

    /// The NIC the node boots from.
    pub fn primary_nic(&self) -> Option<&Nic> {
        self.nics.iter().find(|n| n.primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, ip: Option<&str>) -> Nic {
        Nic {
            name: name.into(),
            mac: mac.parse().unwrap(),
            ip: ip.map(|i| i.parse().unwrap()),
            primary: false,
        }
    }

    #[test]
    fn words_round_trip_and_reject_unknown() {
        for w in Mgt::WORDS {
            assert_eq!(w.parse::<Mgt>().unwrap().as_str(), *w);
        }
        let e = "xen".parse::<Mgt>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "mgt: \"xen\" is not one of: kvm, ipmi, redfish"
        );
        assert_eq!("uefi-http".parse::<Netboot>().unwrap(), Netboot::UefiHttp);
        assert_eq!(
            "wait-callback".parse::<ProvisionState>().unwrap(),
            ProvisionState::WaitCallback
        );
    }

    #[test]
    fn first_nic_becomes_primary() {
        let mut n = Node::new("n1");
        n.nics = vec![
            nic("eth0", "52:54:00:00:00:01", None),
            nic("eth1", "52:54:00:00:00:02", None),
        ];
        n.validate().unwrap();
        assert_eq!(n.primary_nic().unwrap().name, "eth0");
    }

    #[test]
    fn duplicates_inside_a_node_are_named() {
        let mut n = Node::new("n1");
        n.nics = vec![
            nic("eth0", "52:54:00:00:00:01", None),
            nic("eth1", "52:54:00:00:00:01", None),
        ];
        assert_eq!(n.validate().unwrap_err().field, "nics[1].mac");
        n.nics = vec![
            nic("eth0", "52:54:00:00:00:01", Some("10.0.0.1")),
            nic("eth1", "52:54:00:00:00:02", Some("10.0.0.1")),
        ];
        assert_eq!(n.validate().unwrap_err().field, "nics[1].ip");
        n.nics[1].ip = None;
        n.nics[0].primary = true;
        n.nics[1].primary = true;
        assert_eq!(n.validate().unwrap_err().field, "nics");
    }

    #[test]
    fn names_groups_labels() {
        assert_eq!(Node::new("bad name").validate().unwrap_err().field, "name");
        let mut n = Node::new("n1");
        n.groups = vec!["a".into(), "a".into()];
        assert_eq!(n.validate().unwrap_err().field, "groups");
        let mut n = Node::new("n1");
        n.labels.insert("bad key".into(), "v".into());
        assert!(n.validate().unwrap_err().field.starts_with("labels."));
        for bad in [
            "sda",
            "/dev/",
            "/dev/sda b",
            "/dev/../etc",
            "/dev/sda;reboot",
            "/dev//sda",
        ] {
            let mut n = Node::new("n1");
            n.labels.insert("install_disk".into(), bad.into());
            assert_eq!(
                n.validate().unwrap_err().field,
                "labels.install_disk",
                "{bad}"
            );
        }
        let mut n = Node::new("n1");
        n.labels.insert(
            "install_disk".into(),
            "/dev/disk/by-id/wwn-0x5000c5:1".into(),
        );
        n.validate().unwrap();
        for sep in ["\u{2028}", "\u{2029}", "\u{85}", "\r"] {
            let mut n = Node::new("n1");
            n.labels.insert("room".into(), format!("b2{sep}x"));
            assert_eq!(n.validate().unwrap_err().field, "labels.room");
        }
    }

    #[test]
    fn nics_groups_and_labels_are_counted() {
        let mut n = Node::new("n1");
        n.nics = (0..=MAX_NICS)
            .map(|i| nic(&format!("eth{i}"), &format!("52:54:00:00:01:{i:02x}"), None))
            .collect();
        let e = n.validate().unwrap_err();
        assert_eq!(e.field, "nics");
        assert!(e.reason.contains("at most 64"), "{e}");
        n.nics.pop();
        n.validate().unwrap();

        let mut n = Node::new("n1");
        n.groups = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(n.validate().unwrap_err().field, "groups");
        n.groups.pop();
        n.validate().unwrap();

        let mut n = Node::new("n1");
        n.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(n.validate().unwrap_err().field, "labels");
        n.labels.pop_first();
        n.validate().unwrap();
    }
}
