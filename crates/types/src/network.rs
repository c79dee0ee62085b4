use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::{FieldError, validate_hostname};

/// An inclusive range of IPv4 addresses written `a.b.c.d-e.f.g.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl IpRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }

    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.end)) - u64::from(u32::from(self.start)) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for IpRange {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let bad = || {
            FieldError::invalid(
                "dynamic_range",
                format!("{s:?} is not a range like 10.0.0.100-10.0.0.200"),
            )
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let end: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
        if start > end {
            return Err(FieldError::invalid(
                "dynamic_range",
                format!("{s:?} ends before it starts"),
            ));
        }
        Ok(IpRange { start, end })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The prefix length of a contiguous netmask (`255.255.255.0` is 24), or `None` if not contiguous.
pub fn netmask_prefix(mask: Ipv4Addr) -> Option<u32> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
}

/// Most nameservers a network may list: they go into every DHCP reply on it, and one DHCP option
/// holds at most 255 bytes (63 addresses).
pub const MAX_NAMESERVERS: usize = 16;

/// An IPv4 subnet the site provisions on, with what DHCP tells the nodes about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub subnet: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    /// Addresses handed to unknown machines; never given to a node as its static address.
    pub dynamic_range: Option<IpRange>,
    pub nameservers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u32>,
}

impl Network {
    /// A network with no gateway, range, nameservers, domain or MTU.
    pub fn new(name: impl Into<String>, subnet: Ipv4Addr, netmask: Ipv4Addr) -> Self {
        Self {
            name: name.into(),
            subnet,
            netmask,
            gateway: None,
            dynamic_range: None,
            nameservers: Vec::new(),
            domain: None,
            mtu: None,
        }
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask) == u32::from(self.subnet)
    }

    /// Whether `ip` can be a host's address here (inside, and neither network nor broadcast address).
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        let host = u32::from(ip) & !mask;
        self.contains(ip) && (mask >= 0xffff_fffe || (host != 0 && host != !mask))
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Network) -> bool {
        let mask = u32::from(self.netmask) & u32::from(other.netmask);
        u32::from(self.subnet) & mask == u32::from(other.subnet) & mask
    }

    /// Checks the network on its own: names, a contiguous netmask that matches the subnet, and a
    /// gateway and dynamic range inside it.
    pub fn validate(&self) -> Result<(), FieldError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(FieldError::invalid(
                "name",
                format!(
                    "{:?} is not a valid network name (1-63 letters, digits, '-', '_' or '.')",
                    self.name
                ),
            ));
        }
        if netmask_prefix(self.netmask).is_none() {
            return Err(FieldError::invalid(
                "netmask",
                format!("{} is not a contiguous netmask", self.netmask),
            ));
        }
        if u32::from(self.subnet) & !u32::from(self.netmask) != 0 {
            return Err(FieldError::invalid(
                "subnet",
                format!(
                    "{} has host bits set for netmask {}",
                    self.subnet, self.netmask
                ),
            ));
        }
        if let Some(gw) = self.gateway
            && !self.is_host_address(gw)
        {
            return Err(FieldError::invalid(
                "gateway",
                format!("{gw} is not a host address of {}", self.cidr()),
            ));
        }
        if let Some(range) = self.dynamic_range {
            if !self.is_host_address(range.start) || !self.is_host_address(range.end) {
                return Err(FieldError::invalid(
                    "dynamic_range",
                    format!("{range} is not inside {}", self.cidr()),
                ));
            }
            if let Some(gw) = self.gateway
                && range.contains(gw)
            {
                return Err(FieldError::invalid(
                    "dynamic_range",
                    format!("{range} contains the gateway {gw}"),
                ));
            }
        }
        if self.nameservers.len() > MAX_NAMESERVERS {
            return Err(FieldError::invalid(
                "nameservers",
                format!(
                    "{} given; at most {MAX_NAMESERVERS} (every DHCP reply on the network carries them)",
                    self.nameservers.len()
                ),
            ));
        }
        if let Some(domain) = &self.domain {
            validate_hostname(domain).map_err(|e| FieldError::invalid("domain", e.reason))?;
        }
        if let Some(mtu) = self.mtu
            && !(576..=9216).contains(&mtu)
        {
            return Err(FieldError::invalid(
                "mtu",
                format!("{mtu} is outside 576-9216"),
            ));
        }
        Ok(())
    }

    /// The subnet in CIDR notation, `10.0.0.0/8`.
    pub fn cidr(&self) -> String {
        format!(
            "{}/{}",
            self.subnet,
            netmask_prefix(self.netmask).unwrap_or(0)
        )
    }

    /// Why `ip`, an address inside this network, cannot be a node's static address: not a host
    /// address, inside the dynamic range, or the gateway. `None` if it can.
    pub fn refuses_static(&self, ip: Ipv4Addr) -> Option<String> {
        if !self.is_host_address(ip) {
            return Some(format!(
                "{ip} is not a host address of network {} ({})",
                self.name,
                self.cidr()
            ));
        }
        if let Some(range) = self.dynamic_range.filter(|r| r.contains(ip)) {
            return Some(format!(
                "{ip} is inside the dynamic range {range} of network {}",
                self.name
            ));
        }
        if self.gateway == Some(ip) {
            return Some(format!("{ip} is the gateway of network {}", self.name));
        }
        None
    }
}

/// The network a node's static address `ip` belongs to, or why none of `networks` will have it
/// (see [`Network::refuses_static`]). The one rule for NIC addresses: node writes check it, and
/// network updates and deletes keep it true for the addresses already given.
pub fn home_network(networks: &[Network], ip: Ipv4Addr) -> Result<&Network, String> {
    let net = networks.iter().find(|n| n.contains(ip)).ok_or_else(|| {
        format!("{ip} is outside every defined network (define one with `xcat3 network-create`)")
    })?;
    match net.refuses_static(ip) {
        Some(reason) => Err(reason),
        None => Ok(net),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c920() -> Network {
        let mut n = Network::new(
            "c920",
            "11.0.0.0".parse().unwrap(),
            "255.0.0.0".parse().unwrap(),
        );
        n.gateway = Some("11.0.0.101".parse().unwrap());
        n.dynamic_range = Some("11.4.40.111-11.4.40.113".parse().unwrap());
        n.nameservers = vec!["11.0.0.101".parse().unwrap()];
        n
    }

    #[test]
    fn the_readme_network_is_valid() {
        let n = c920();
        n.validate().unwrap();
        assert!(n.contains("11.5.102.60".parse().unwrap()));
        assert!(!n.contains("12.0.0.1".parse().unwrap()));
        assert_eq!(n.cidr(), "11.0.0.0/8");
        assert_eq!(n.dynamic_range.unwrap().len(), 3);
    }

    #[test]
    fn bad_networks_name_the_field() {
        let mut n = c920();
        n.netmask = "255.0.255.0".parse().unwrap();
        assert_eq!(n.validate().unwrap_err().field, "netmask");
        let mut n = c920();
        n.subnet = "11.0.0.1".parse().unwrap();
        assert_eq!(n.validate().unwrap_err().field, "subnet");
        let mut n = c920();
        n.gateway = Some("12.0.0.1".parse().unwrap());
        assert_eq!(n.validate().unwrap_err().field, "gateway");
        let mut n = c920();
        n.dynamic_range = Some("11.0.0.100-11.0.0.102".parse().unwrap());
        assert_eq!(n.validate().unwrap_err().field, "dynamic_range");
        assert!("11.0.0.9-11.0.0.1".parse::<IpRange>().is_err());
        assert!("11.0.0.9".parse::<IpRange>().is_err());
        let mut n = c920();
        n.mtu = Some(100);
        assert_eq!(n.validate().unwrap_err().field, "mtu");
        let mut n = c920();
        n.name = "a b".into();
        assert_eq!(n.validate().unwrap_err().field, "name");
        // More nameservers than one DHCP option can carry.
        let mut n = c920();
        n.nameservers = (1..=64).map(|i| Ipv4Addr::new(11, 0, 1, i)).collect();
        assert_eq!(n.validate().unwrap_err().field, "nameservers");
        n.nameservers.truncate(MAX_NAMESERVERS);
        n.validate().unwrap();
    }

    #[test]
    fn static_addresses_have_one_home() {
        let nets = [c920()];
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(home_network(&nets, ip("11.5.102.60")).unwrap().name, "c920");
        for (bad, why) in [
            ("12.0.0.1", "outside every defined network"),
            ("11.255.255.255", "not a host address"),
            ("11.4.40.112", "dynamic range"),
            ("11.0.0.101", "gateway"),
        ] {
            let err = home_network(&nets, ip(bad)).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn overlap_and_host_addresses() {
        let a = Network::new(
            "a",
            "10.0.0.0".parse().unwrap(),
            "255.255.0.0".parse().unwrap(),
        );
        let b = Network::new(
            "b",
            "10.0.5.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        );
        let c = Network::new(
            "c",
            "10.1.0.0".parse().unwrap(),
            "255.255.0.0".parse().unwrap(),
        );
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!b.is_host_address("10.0.5.0".parse().unwrap()));
        assert!(!b.is_host_address("10.0.5.255".parse().unwrap()));
        assert!(b.is_host_address("10.0.5.1".parse().unwrap()));
        assert_eq!(netmask_prefix("255.255.255.0".parse().unwrap()), Some(24));
        assert_eq!(netmask_prefix("0.0.0.0".parse().unwrap()), Some(0));
        assert_eq!(netmask_prefix("255.255.255.255".parse().unwrap()), Some(32));
    }
}
