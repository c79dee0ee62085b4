//! Conversions between `pb` messages and domain types. `*_from_pb` validates what it can and names
//! the field; `*_to_pb` never fails and never exposes a secret.

use std::net::Ipv4Addr;

use xcat3_types::{
    BootDevice, Control, ErrorCode, FieldError, IpRange, Network, Nic, Node, NodeOutcome, OsImage,
    PowerAction,
};

use crate::{internal, pb};

/// Unix time in milliseconds to a protobuf timestamp (0 = unset).
pub fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms != 0).then(|| prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, FieldError> {
    s.trim()
        .parse()
        .map_err(|_| FieldError::invalid(field, format!("{s:?} is not an IPv4 address")))
}

fn opt_ipv4(field: &str, s: &str) -> Result<Option<Ipv4Addr>, FieldError> {
    if s.is_empty() {
        Ok(None)
    } else {
        ipv4(field, s).map(Some)
    }
}

/// A NIC from the wire; `index` names it in errors and gives the default name `eth<index>`.
pub fn nic_from_pb(index: usize, nic: &pb::Nic) -> Result<Nic, FieldError> {
    let at = |f: &str| format!("nics[{index}].{f}");
    if nic.mac.is_empty() {
        return Err(FieldError::invalid(at("mac"), "a NIC needs a MAC address"));
    }
    let mac = nic
        .mac
        .parse()
        .map_err(|e: FieldError| FieldError::invalid(at("mac"), e.reason))?;
    Ok(Nic {
        name: if nic.name.is_empty() {
            format!("eth{index}")
        } else {
            nic.name.clone()
        },
        mac,
        ip: opt_ipv4(&at("ip"), &nic.ip)?,
        primary: nic.primary,
    })
}

/// A node as a client asks for it to be created. Defaults fill empty fields; output-only fields
/// must be empty. The result is not yet validated against itself ([`Node::validate`]) or the
/// inventory.
pub fn node_from_pb(node: &pb::Node) -> Result<Node, FieldError> {
    if !node.provision_state.is_empty() {
        return Err(FieldError::invalid(
            "provision_state",
            "is set by the conductors, not by clients",
        ));
    }
    if !node.power_state.is_empty() {
        return Err(FieldError::invalid(
            "power_state",
            "is read from the BMC, not set by clients",
        ));
    }
    let mut n = Node::new(node.name.clone());
    n.groups = node.groups.clone();
    if !node.mgt.is_empty() {
        n.mgt = Some(node.mgt.parse()?);
    }
    if !node.netboot.is_empty() {
        n.netboot = node.netboot.parse()?;
    }
    if !node.arch.is_empty() {
        n.arch = node.arch.parse()?;
    }
    n.control = Control::from_pairs(node.control.iter().map(|(k, v)| (k.clone(), v.clone())))?;
    n.nics = node
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| nic_from_pb(i, nic))
        .collect::<Result<_, _>>()?;
    n.osimage = (!node.osimage.is_empty()).then(|| node.osimage.clone());
    n.labels = node
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(n)
}

/// A node for the wire, with secrets masked.
pub fn node_to_pb(node: &Node, created_ms: i64, updated_ms: i64) -> pb::Node {
    node_with_control(node, node.control.masked(), created_ms, updated_ms)
}

fn node_with_control(
    node: &Node,
    control: std::collections::BTreeMap<String, String>,
    created_ms: i64,
    updated_ms: i64,
) -> pb::Node {
    pb::Node {
        name: node.name.clone(),
        groups: node.groups.clone(),
        mgt: node.mgt.map(|m| m.to_string()).unwrap_or_default(),
        netboot: node.netboot.to_string(),
        arch: node.arch.to_string(),
        control: control.into_iter().collect(),
        nics: node
            .nics
            .iter()
            .map(|n| pb::Nic {
                name: n.name.clone(),
                mac: n.mac.to_string(),
                ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                primary: n.primary,
            })
            .collect(),
        osimage: node.osimage.clone().unwrap_or_default(),
        provision_state: node.provision_state.to_string(),
        power_state: node.power_state.to_string(),
        labels: node
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_at: timestamp(created_ms),
        updated_at: timestamp(updated_ms),
        conductor: String::new(),
    }
}

/// A node for the wire with its secrets in clear: only for `ExportNodes`, which only the admin
/// token may call.
pub fn node_with_secrets_to_pb(node: &Node, created_ms: i64, updated_ms: i64) -> pb::Node {
    let control = node
        .control
        .entries()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    node_with_control(node, control, created_ms, updated_ms)
}

/// A network from the wire, checked on its own ([`Network::validate`]).
pub fn network_from_pb(n: &pb::Network) -> Result<Network, FieldError> {
    if n.subnet.is_empty() {
        return Err(FieldError::invalid("subnet", "is required"));
    }
    if n.netmask.is_empty() {
        return Err(FieldError::invalid("netmask", "is required"));
    }
    let mut net = Network::new(
        n.name.clone(),
        ipv4("subnet", &n.subnet)?,
        ipv4("netmask", &n.netmask)?,
    );
    net.gateway = opt_ipv4("gateway", &n.gateway)?;
    net.dynamic_range = if n.dynamic_range.is_empty() {
        None
    } else {
        Some(n.dynamic_range.parse::<IpRange>()?)
    };
    net.nameservers = n
        .nameservers
        .iter()
        .enumerate()
        .map(|(i, s)| ipv4(&format!("nameservers[{i}]"), s))
        .collect::<Result<_, _>>()?;
    net.domain = (!n.domain.is_empty()).then(|| n.domain.clone());
    net.mtu = (n.mtu != 0).then_some(n.mtu);
    net.validate()?;
    Ok(net)
}

pub fn network_to_pb(n: &Network) -> pb::Network {
    pb::Network {
        name: n.name.clone(),
        subnet: n.subnet.to_string(),
        netmask: n.netmask.to_string(),
        gateway: n.gateway.map(|g| g.to_string()).unwrap_or_default(),
        dynamic_range: n.dynamic_range.map(|r| r.to_string()).unwrap_or_default(),
        nameservers: n.nameservers.iter().map(ToString::to_string).collect(),
        domain: n.domain.clone().unwrap_or_default(),
        mtu: n.mtu.unwrap_or(0),
    }
}

/// The public name of an error code (`already_exists`). A conductor's "not the owner" never
/// reaches a client as such: when no owner answers in time the node is unavailable.
pub fn code_to_pb(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::NotFound => "not_found",
        ErrorCode::AlreadyExists => "already_exists",
        ErrorCode::FailedPrecondition => "failed_precondition",
        ErrorCode::Aborted => "aborted",
        ErrorCode::Unavailable | ErrorCode::NotOwner => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

/// A per-node error for the wire.
pub fn error_to_pb(e: &FieldError) -> pb::ErrorDetail {
    pb::ErrorDetail {
        code: code_to_pb(e.code).to_owned(),
        field: e.field.clone(),
        reason: e.reason.clone(),
    }
}

/// A per-node result for the public wire (its `index`, the node's place in the request, is left
/// to the caller that knows the request).
pub fn outcome_to_pb(o: NodeOutcome) -> pb::NodeResult {
    pb::NodeResult {
        index: 0,
        name: o.name,
        outcome: Some(match o.result {
            Ok(done) => pb::node_result::Outcome::Ok(done.into_owned()),
            Err(e) => pb::node_result::Outcome::Error(error_to_pb(&e)),
        }),
    }
}

fn code_to_internal(code: ErrorCode) -> internal::Code {
    match code {
        ErrorCode::InvalidArgument => internal::Code::InvalidArgument,
        ErrorCode::NotFound => internal::Code::NotFound,
        ErrorCode::AlreadyExists => internal::Code::AlreadyExists,
        ErrorCode::FailedPrecondition => internal::Code::FailedPrecondition,
        ErrorCode::Aborted => internal::Code::Aborted,
        ErrorCode::Unavailable => internal::Code::Unavailable,
        ErrorCode::Internal => internal::Code::Internal,
        ErrorCode::NotOwner => internal::Code::NotOwner,
    }
}

fn code_from_internal(code: internal::Code) -> Option<ErrorCode> {
    Some(match code {
        internal::Code::Unspecified => return None,
        internal::Code::InvalidArgument => ErrorCode::InvalidArgument,
        internal::Code::NotFound => ErrorCode::NotFound,
        internal::Code::AlreadyExists => ErrorCode::AlreadyExists,
        internal::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        internal::Code::Aborted => ErrorCode::Aborted,
        internal::Code::Unavailable => ErrorCode::Unavailable,
        internal::Code::Internal => ErrorCode::Internal,
        internal::Code::NotOwner => ErrorCode::NotOwner,
    })
}

/// A conductor's outcome for the api.
pub fn outcome_to_internal(o: NodeOutcome) -> internal::NodeOutcome {
    internal::NodeOutcome {
        name: o.name,
        result: Some(match o.result {
            Ok(done) => internal::node_outcome::Result::Ok(done.into_owned()),
            Err(e) => internal::node_outcome::Result::Error(internal::Error {
                code: code_to_internal(e.code).into(),
                field: e.field,
                reason: e.reason,
            }),
        }),
    }
}

/// A conductor's outcome as the api reads it. One the api cannot read (a code from a newer
/// conductor, no result) is an internal error for that node, never a success.
pub fn outcome_from_internal(o: internal::NodeOutcome) -> NodeOutcome {
    let result = match o.result {
        Some(internal::node_outcome::Result::Ok(done)) => Ok(done.into()),
        Some(internal::node_outcome::Result::Error(e)) => {
            match internal::Code::try_from(e.code)
                .ok()
                .and_then(code_from_internal)
            {
                Some(code) => Err(FieldError::new(code, e.field, e.reason)),
                None => Err(FieldError::whole(
                    ErrorCode::Internal,
                    format!(
                        "the conductor answered an unknown error code {}: {}",
                        e.code, e.reason
                    ),
                )),
            }
        }
        None => Err(FieldError::whole(
            ErrorCode::Internal,
            "the conductor answered without a result",
        )),
    };
    NodeOutcome {
        name: o.name,
        result,
    }
}

pub fn power_action_to_internal(a: PowerAction) -> internal::PowerAction {
    match a {
        PowerAction::On => internal::PowerAction::On,
        PowerAction::Off => internal::PowerAction::Off,
        PowerAction::Reset => internal::PowerAction::Reset,
        PowerAction::Cycle => internal::PowerAction::Cycle,
        PowerAction::Status => internal::PowerAction::Status,
        PowerAction::Boot => internal::PowerAction::Boot,
    }
}

pub fn power_action_from_internal(a: i32) -> Result<PowerAction, FieldError> {
    Ok(match internal::PowerAction::try_from(a) {
        Ok(internal::PowerAction::On) => PowerAction::On,
        Ok(internal::PowerAction::Off) => PowerAction::Off,
        Ok(internal::PowerAction::Reset) => PowerAction::Reset,
        Ok(internal::PowerAction::Cycle) => PowerAction::Cycle,
        Ok(internal::PowerAction::Status) => PowerAction::Status,
        Ok(internal::PowerAction::Boot) => PowerAction::Boot,
        Ok(internal::PowerAction::Unspecified) | Err(_) => {
            return Err(FieldError::invalid(
                "action",
                format!("unknown power action {a}"),
            ));
        }
    })
}

/// A boot device to set, or `None` to read it.
pub fn boot_device_to_internal(d: Option<BootDevice>) -> internal::BootDevice {
    match d {
        None | Some(BootDevice::Default) => internal::BootDevice::Status,
        Some(BootDevice::Net) => internal::BootDevice::Net,
        Some(BootDevice::Disk) => internal::BootDevice::Disk,
        Some(BootDevice::Cdrom) => internal::BootDevice::Cdrom,
    }
}

pub fn boot_device_from_internal(d: i32) -> Result<Option<BootDevice>, FieldError> {
    Ok(match internal::BootDevice::try_from(d) {
        Ok(internal::BootDevice::Status) => None,
        Ok(internal::BootDevice::Net) => Some(BootDevice::Net),
        Ok(internal::BootDevice::Disk) => Some(BootDevice::Disk),
        Ok(internal::BootDevice::Cdrom) => Some(BootDevice::Cdrom),
        Ok(internal::BootDevice::Unspecified) | Err(_) => {
            return Err(FieldError::invalid(
                "device",
                format!("unknown boot device {d}"),
            ));
        }
    })
}

pub fn osimage_to_pb(i: OsImage) -> pb::OsImage {
    pb::OsImage {
        name: i.name,
        distro: i.distro,
        version: i.version,
        arch: i.arch,
        install_method: i.install_method,
        kernel: i.kernel,
        initrd: i.initrd,
        repo_root: i.repo_root,
        created_at: timestamp(i.created_at),
        source: i.source,
        sha256: i.sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trip_masks_secrets() {
        let mut pb_node = pb::Node {
            name: "n1".into(),
            mgt: "ipmi".into(),
            ..Default::default()
        };
        pb_node
            .control
            .insert("bmc_password".into(), "hunter2".into());
        pb_node.nics.push(pb::Nic {
            mac: "52:54:00:00:00:01".into(),
            ..Default::default()
        });
        let node = node_from_pb(&pb_node).unwrap();
        assert_eq!(node.nics[0].name, "eth0");
        let back = node_to_pb(&node, 1500, 0);
        assert_eq!(back.control["bmc_password"], "******");
        assert_eq!(back.created_at.unwrap().nanos, 500_000_000);
        assert!(back.updated_at.is_none());
        let full = node_with_secrets_to_pb(&node, 1500, 0);
        assert_eq!(full.control["bmc_password"], "hunter2");
        // The mask itself is refused as a secret: a masked backup cannot store it.
        pb_node
            .control
            .insert("bmc_password".into(), "******".into());
        let e = node_from_pb(&pb_node).unwrap_err();
        assert!(e.to_string().contains("--with-secrets"), "{e}");
    }

    #[test]
    fn outcomes_cross_the_internal_wire_with_their_code() {
        let moved = NodeOutcome::fail("n1", ErrorCode::NotOwner, "shard 3 moved");
        let back = outcome_from_internal(outcome_to_internal(moved.clone()));
        assert_eq!(back, moved);
        assert_eq!(
            outcome_from_internal(outcome_to_internal(NodeOutcome::ok("n1", "on")))
                .result
                .as_deref(),
            Ok("on")
        );
        // Not the owner is "unavailable" to a client.
        let public = outcome_to_pb(moved);
        assert!(
            matches!(public.outcome, Some(pb::node_result::Outcome::Error(e)) if e.code == "unavailable")
        );
        // What the api cannot read is an error, never a success.
        let odd = internal::NodeOutcome {
            name: "n1".into(),
            result: Some(internal::node_outcome::Result::Error(internal::Error {
                code: 99,
                field: String::new(),
                reason: "?".into(),
            })),
        };
        assert_eq!(
            outcome_from_internal(odd).result.unwrap_err().code,
            ErrorCode::Internal
        );
        let empty = internal::NodeOutcome {
            name: "n1".into(),
            result: None,
        };
        assert!(outcome_from_internal(empty).result.is_err());
        for a in PowerAction::WORDS {
            let a: PowerAction = a.parse().unwrap();
            assert_eq!(
                power_action_from_internal(power_action_to_internal(a).into()),
                Ok(a)
            );
        }
        assert!(power_action_from_internal(0).is_err());
        for d in [
            None,
            Some(BootDevice::Net),
            Some(BootDevice::Disk),
            Some(BootDevice::Cdrom),
        ] {
            assert_eq!(
                boot_device_from_internal(boot_device_to_internal(d).into()),
                Ok(d)
            );
        }
        assert!(boot_device_from_internal(17).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = pb::Node {
            name: "n1".into(),
            nics: vec![
                pb::Nic::default(),
                pb::Nic {
                    mac: "zz".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(node_from_pb(&bad).unwrap_err().field, "nics[0].mac");
        let bad = pb::Node {
            name: "n1".into(),
            nics: vec![pb::Nic {
                mac: "52:54:00:00:00:01".into(),
                ip: "1.2.3".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(node_from_pb(&bad).unwrap_err().field, "nics[0].ip");
        let bad = pb::Node {
            name: "n1".into(),
            power_state: "on".into(),
            ..Default::default()
        };
        assert_eq!(node_from_pb(&bad).unwrap_err().field, "power_state");
        let bad = pb::Node {
            name: "n1".into(),
            arch: "sparc".into(),
            ..Default::default()
        };
        assert_eq!(node_from_pb(&bad).unwrap_err().field, "arch");
    }
}
