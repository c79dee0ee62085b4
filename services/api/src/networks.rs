//! Networks, on domain types: their rules and their writes. A network may not overlap another; an
//! update must leave every NIC address it contained a home (see [`home_network`]: a host address,
//! outside the dynamic range, not the gateway); a network in use by NICs cannot be deleted. The
//! rules run inside the store's write transaction ([`Store::write_network`]), so no node write can
//! come between a check and its write.

use std::net::Ipv4Addr;

use xcat3_store::{NetworkView, NetworkWrite, Store};
use xcat3_types::{ErrorCode, FieldError, IpRange, Network, home_network};

pub use crate::error::Error;

/// The networks of the inventory.
#[derive(Clone)]
pub struct Networks {
    store: Store,
}

impl Networks {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn get(&self, name: &str) -> Result<Network, Error> {
        self.store
            .get_network(name)
            .await?
            .ok_or_else(|| not_found(name).into())
    }

    pub async fn list(&self) -> Result<Vec<Network>, Error> {
        Ok(self.store.list_networks().await?)
    }

    /// Adds a network that is valid on its own and overlaps no other.
    pub async fn create(&self, net: Network) -> Result<Network, Error> {
        net.validate()?;
        let write = self
            .store
            .write_network(false, |view| {
                check_create(&view.networks, &net)?;
                Ok::<_, Error>((NetworkWrite::Create(net.clone()), ()))
            })
            .await;
        match write {
            Ok(_) => Ok(net),
            // Only a writer outside this rule (another version of the api) gets here.
            Err(Error::Store(xcat3_store::Error::Conflict(_))) => Err(exists(&net.name).into()),
            Err(e) => Err(e),
        }
    }

    /// Applies `path=value` changes (see [`apply`]) to a network, checked against the other
    /// networks and the NIC addresses inside it.
    pub async fn update(&self, name: &str, changes: &[(String, String)]) -> Result<Network, Error> {
        self.store
            .write_network(true, |view| {
                let old = find(view, name)?;
                let mut new = old.clone();
                for (path, value) in changes {
                    apply(&mut new, path, value)?;
                }
                new.validate()?;
                check_update(view, old, &new)?;
                Ok::<_, Error>((NetworkWrite::Replace(new.clone()), new))
            })
            .await
    }

    /// Deletes a network no NIC address uses.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.store
            .write_network(true, |view| {
                let net = find(view, name)?;
                check_unused(view, net)?;
                Ok::<_, Error>((NetworkWrite::Delete(name.to_owned()), ()))
            })
            .await
    }
}

fn not_found(name: &str) -> FieldError {
    FieldError::not_found("name", format!("no network named {name:?}"))
}

fn exists(name: &str) -> FieldError {
    FieldError::exists("name", format!("network {name:?} exists already"))
}

fn find<'v>(view: &'v NetworkView, name: &str) -> Result<&'v Network, FieldError> {
    view.networks
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| not_found(name))
}

/// A new network needs a free name and a subnet no other network shares.
pub fn check_create(networks: &[Network], net: &Network) -> Result<(), FieldError> {
    if networks.iter().any(|n| n.name == net.name) {
        return Err(exists(&net.name));
    }
    check_overlaps(networks, net)
}

fn check_overlaps(networks: &[Network], net: &Network) -> Result<(), FieldError> {
    match networks
        .iter()
        .find(|o| o.name != net.name && o.overlaps(net))
    {
        Some(o) => Err(FieldError::exists(
            "subnet",
            format!("{} overlaps network {} ({})", net.cidr(), o.name, o.cidr()),
        )),
        None => Ok(()),
    }
}

/// The changed network `new` may not overlap another, and every NIC address inside `old` must
/// keep a home in it.
pub fn check_update(view: &NetworkView, old: &Network, new: &Network) -> Result<(), FieldError> {
    check_overlaps(&view.networks, new)?;
    for (ip, node) in view
        .nic_addresses
        .iter()
        .filter(|(ip, _)| old.contains(*ip))
    {
        if !new.contains(*ip) {
            return Err(FieldError::new(
                ErrorCode::FailedPrecondition,
                "",
                format!(
                    "node {node} uses {ip}, which would fall outside {}; change its address first",
                    new.cidr()
                ),
            ));
        }
        if let Err(reason) = home_network(std::slice::from_ref(new), *ip) {
            return Err(FieldError::new(
                ErrorCode::FailedPrecondition,
                "",
                format!("node {node} uses {ip}: after this change {reason}"),
            ));
        }
    }
    Ok(())
}

/// A network can go only when no NIC address is inside it.
pub fn check_unused(view: &NetworkView, net: &Network) -> Result<(), FieldError> {
    let mut users = view
        .nic_addresses
        .iter()
        .filter(|(ip, _)| net.contains(*ip));
    let Some((ip, node)) = users.next() else {
        return Ok(());
    };
    Err(FieldError::new(
        ErrorCode::FailedPrecondition,
        "",
        format!(
            "network {} is in use by {} NIC(s), for example node {node} ({ip})",
            net.name,
            1 + users.count()
        ),
    ))
}

/// Applies one `path=value` change to a network; an empty value clears an optional field.
pub fn apply(net: &mut Network, path: &str, value: &str) -> Result<(), FieldError> {
    let ip = |v: &str| {
        v.parse::<Ipv4Addr>()
            .map_err(|_| FieldError::invalid(path, format!("{v:?} is not an IPv4 address")))
    };
    let optional = (!value.is_empty()).then_some(value);
    match path {
        "subnet" => net.subnet = ip(value)?,
        "netmask" => net.netmask = ip(value)?,
        "gateway" => net.gateway = optional.map(ip).transpose()?,
        "dynamic_range" => net.dynamic_range = optional.map(str::parse::<IpRange>).transpose()?,
        "nameservers" => {
            net.nameservers = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(ip)
                .collect::<Result<_, _>>()?
        }
        "domain" => net.domain = optional.map(String::from),
        "mtu" => {
            net.mtu = optional
                .map(|v| {
                    v.parse()
                        .map_err(|_| FieldError::invalid("mtu", format!("{v:?} is not a number")))
                })
                .transpose()?
        }
        "name" => return Err(FieldError::invalid("name", "networks cannot be renamed")),
        other => {
            return Err(FieldError::invalid(
                other,
                "unknown attribute; use subnet, netmask, gateway, dynamic_range, nameservers, domain, mtu",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(name: &str, cidr: &str) -> Network {
        let (subnet, prefix) = cidr.split_once('/').unwrap();
        let bits: u32 = prefix.parse().unwrap();
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        Network::new(name, ip(subnet), Ipv4Addr::from(mask))
    }

    fn view(networks: Vec<Network>, nics: &[(&str, &str)]) -> NetworkView {
        NetworkView {
            networks,
            nic_addresses: nics.iter().map(|(a, n)| (ip(a), (*n).to_owned())).collect(),
        }
    }

    #[test]
    fn create_refuses_a_taken_name_and_an_overlap() {
        let nets = vec![net("prov", "10.0.0.0/16")];
        assert_eq!(
            check_create(&nets, &net("prov", "10.9.0.0/16"))
                .unwrap_err()
                .code,
            ErrorCode::AlreadyExists
        );
        let err = check_create(&nets, &net("inner", "10.0.5.0/24")).unwrap_err();
        assert_eq!(err.field, "subnet");
        assert!(err.reason.contains("overlaps network prov"), "{err}");
        check_create(&nets, &net("bmc", "10.1.0.0/16")).unwrap();
    }

    #[test]
    fn update_keeps_every_nic_address_at_home() {
        let old = net("prov", "10.0.0.0/16");
        let v = view(
            vec![old.clone(), net("bmc", "10.1.0.0/16")],
            &[("10.0.3.7", "cn1"), ("10.1.0.9", "cn2")],
        );
        // Narrowing so that cn1 falls outside.
        let mut new = old.clone();
        apply(&mut new, "netmask", "255.255.254.0").unwrap();
        let err = check_update(&v, &old, &new).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.reason.contains("cn1"), "{err}");
        // A dynamic range over cn1's address, and cn1's address as the gateway.
        for (path, value, why) in [
            ("dynamic_range", "10.0.3.1-10.0.3.100", "dynamic range"),
            ("gateway", "10.0.3.7", "gateway"),
        ] {
            let mut new = old.clone();
            apply(&mut new, path, value).unwrap();
            let err = check_update(&v, &old, &new).unwrap_err();
            assert!(err.reason.contains(why), "{path}: {err}");
        }
        // Growing into the other network.
        let mut new = old.clone();
        apply(&mut new, "netmask", "255.254.0.0").unwrap();
        assert_eq!(check_update(&v, &old, &new).unwrap_err().field, "subnet");
        // Harmless changes pass; cn2's address is not this network's business.
        let mut new = old.clone();
        apply(&mut new, "dynamic_range", "10.0.200.1-10.0.200.250").unwrap();
        apply(&mut new, "mtu", "9000").unwrap();
        check_update(&v, &old, &new).unwrap();
    }

    #[test]
    fn delete_refuses_a_network_in_use() {
        let prov = net("prov", "10.0.0.0/16");
        let v = view(
            vec![prov.clone()],
            &[("10.0.3.7", "cn1"), ("10.0.3.8", "cn2")],
        );
        let err = check_unused(&v, &prov).unwrap_err();
        assert!(err.reason.contains("2 NIC(s)"), "{err}");
        let empty = view(vec![prov.clone()], &[("10.1.3.7", "cn1")]);
        check_unused(&empty, &prov).unwrap();
    }

    #[test]
    fn apply_parses_and_clears() {
        let mut n = net("prov", "10.0.0.0/16");
        apply(&mut n, "gateway", "10.0.0.1").unwrap();
        apply(&mut n, "nameservers", "10.0.0.2, 10.0.0.3").unwrap();
        apply(&mut n, "domain", "cluster").unwrap();
        assert_eq!(n.gateway, Some(ip("10.0.0.1")));
        assert_eq!(n.nameservers.len(), 2);
        apply(&mut n, "gateway", "").unwrap();
        apply(&mut n, "domain", "").unwrap();
        assert_eq!((n.gateway, n.domain.as_deref()), (None, None));
        assert_eq!(apply(&mut n, "gateway", "x").unwrap_err().field, "gateway");
        assert_eq!(apply(&mut n, "mtu", "big").unwrap_err().field, "mtu");
        assert_eq!(apply(&mut n, "name", "b").unwrap_err().field, "name");
        assert_eq!(apply(&mut n, "colour", "b").unwrap_err().field, "colour");
    }
}
