use std::collections::BTreeMap;
use std::fmt;

use crate::{FieldError, MASK, Mgt};

/// The kind of value a control parameter holds, which decides how it is checked and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Free text without control characters.
    Text,
    /// An IP address or hostname.
    Host,
    /// A TCP/UDP port, 1–65535.
    Port,
    /// An absolute path on the conductor.
    Path,
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// Stored, used by the conductor, never returned or logged.
    Secret,
}

/// One control parameter: its key, the drivers that use it and its kind.
#[derive(Debug, Clone, Copy)]
pub struct ControlParam {
    pub key: &'static str,
    pub drivers: &'static [Mgt],
    pub kind: ParamKind,
    pub help: &'static str,
}

const KVM: &[Mgt] = &[Mgt::Kvm];
const BMC: &[Mgt] = &[Mgt::Ipmi, Mgt::Redfish];
const IPMI: &[Mgt] = &[Mgt::Ipmi];
const REDFISH: &[Mgt] = &[Mgt::Redfish];

/// Every control parameter a node may carry.
pub const PARAMS: &[ControlParam] = &[
    ControlParam {
        key: "ssh_address",
        drivers: KVM,
        kind: ParamKind::Host,
        help: "hypervisor to ssh to",
    },
    ControlParam {
        key: "ssh_port",
        drivers: KVM,
        kind: ParamKind::Port,
        help: "ssh port (22)",
    },
    ControlParam {
        key: "ssh_username",
        drivers: KVM,
        kind: ParamKind::Text,
        help: "ssh user on the hypervisor",
    },
    ControlParam {
        key: "ssh_key_filename",
        drivers: KVM,
        kind: ParamKind::Path,
        help: "private key on the conductor",
    },
    ControlParam {
        key: "ssh_virt_type",
        drivers: KVM,
        kind: ParamKind::OneOf(&["virsh"]),
        help: "virtualisation tool",
    },
    ControlParam {
        key: "domain",
        drivers: KVM,
        kind: ParamKind::Text,
        help: "libvirt domain name (default: the node name)",
    },
    ControlParam {
        key: "bmc_address",
        drivers: BMC,
        kind: ParamKind::Host,
        help: "BMC address",
    },
    ControlParam {
        key: "bmc_port",
        drivers: BMC,
        kind: ParamKind::Port,
        help: "BMC port (623 for IPMI, 443 for Redfish)",
    },
    ControlParam {
        key: "bmc_username",
        drivers: BMC,
        kind: ParamKind::Text,
        help: "BMC user",
    },
    ControlParam {
        key: "bmc_password",
        drivers: BMC,
        kind: ParamKind::Secret,
        help: "BMC password (never shown)",
    },
    ControlParam {
        key: "bmc_kg_key",
        drivers: IPMI,
        kind: ParamKind::Secret,
        help: "IPMI 2.0 Kg key (never shown)",
    },
    ControlParam {
        key: "redfish_system",
        drivers: REDFISH,
        kind: ParamKind::Path,
        help: "system resource, /redfish/v1/Systems/<id> (default: the BMC's first system)",
    },
    ControlParam {
        key: "redfish_ca_file",
        drivers: REDFISH,
        kind: ParamKind::Path,
        help: "CA bundle (PEM) on the conductor that signs the BMC's certificate",
    },
    ControlParam {
        key: "redfish_insecure",
        drivers: REDFISH,
        kind: ParamKind::OneOf(&["true", "false"]),
        help: "true: do not verify the BMC's certificate (explicit opt-out)",
    },
    ControlParam {
        key: "redfish_scheme",
        drivers: REDFISH,
        kind: ParamKind::OneOf(&["https", "http"]),
        help: "https (default), or http for emulators",
    },
];

fn param(key: &str) -> Option<&'static ControlParam> {
    PARAMS.iter().find(|p| p.key == key)
}

/// Whether `key` names a secret control parameter.
pub fn is_secret(key: &str) -> bool {
    param(key).is_some_and(|p| p.kind == ParamKind::Secret)
}

/// The control parameters of one node (how the conductor reaches its BMC or hypervisor).
///
/// `Debug` masks secrets; there is no `Serialize`: the store asks for [`Control::entries`]
/// explicitly and the API for [`Control::masked`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Control(BTreeMap<String, String>);

impl Control {
    /// Builds control parameters from key/value pairs, checking each key and value.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, FieldError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut control = Control::default();
        for (k, v) in pairs {
            control.set(&k.into(), v.into())?;
        }
        Ok(control)
    }

    /// Rebuilds control parameters read back from the store, without checking them again (a rule
    /// made stricter later must not make stored nodes unreadable).
    pub fn from_stored(entries: BTreeMap<String, String>) -> Self {
        Control(entries)
    }

    /// Sets one parameter after checking its key and value; an empty value removes it.
    pub fn set(&mut self, key: &str, value: String) -> Result<(), FieldError> {
        let field = format!("control.{key}");
        let p = param(key).ok_or_else(|| {
            let known: Vec<&str> = PARAMS.iter().map(|p| p.key).collect();
            FieldError::invalid(
                &field,
                format!("unknown parameter; known: {}", known.join(", ")),
            )
        })?;
        if value.is_empty() {
            self.0.remove(key);
            return Ok(());
        }
        check_value(p, &value).map_err(|reason| FieldError::invalid(&field, reason))?;
        self.0.insert(key.to_owned(), value);
        Ok(())
    }

    /// The value of `key`, secrets included: for the conductor and the store only.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every parameter with its real value: for the store only.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every parameter, with secrets replaced by [`MASK`]: what the API returns.
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) {
                    MASK.to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks that every parameter belongs to the node's management driver.
    pub fn check_driver(&self, mgt: Option<Mgt>) -> Result<(), FieldError> {
        let Some(mgt) = mgt else { return Ok(()) };
        for key in self.0.keys() {
            let p = param(key).ok_or_else(|| {
                FieldError::invalid(format!("control.{key}"), "unknown parameter")
            })?;
            if !p.drivers.contains(&mgt) {
                return Err(FieldError::invalid(
                    format!("control.{key}"),
                    format!(
                        "not a parameter of mgt={mgt}; remove it (control/{key}=) or choose another mgt"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_value(p: &ControlParam, value: &str) -> Result<(), String> {
    if value.len() > 1024 {
        return Err("longer than 1024 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    match p.kind {
        ParamKind::Secret if value == MASK => Err(format!(
            "{MASK} is what the API shows in place of a secret, not a value: give the real one \
             (`xcat3 export --with-secrets` keeps secrets in a backup)"
        )),
        ParamKind::Text | ParamKind::Secret => Ok(()),
        ParamKind::Host => {
            if value.parse::<std::net::IpAddr>().is_ok() || crate::validate_hostname(value).is_ok()
            {
                Ok(())
            } else {
                Err(format!("{value:?} is neither an IP address nor a hostname"))
            }
        }
        ParamKind::Port => match value.parse::<u16>() {
            Ok(port) if port > 0 => Ok(()),
            _ => Err(format!("{value:?} is not a port number (1-65535)")),
        },
        ParamKind::Path => {
            if value.starts_with('/') && !value.split('/').any(|c| c == "..") {
                Ok(())
            } else {
                Err(format!("{value:?} must be an absolute path without '..'"))
            }
        }
        ParamKind::OneOf(words) => {
            if words.contains(&value) {
                Ok(())
            } else {
                Err(format!("{value:?} is not one of: {}", words.join(", ")))
            }
        }
    }
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_everywhere_but_entries() {
        let c = Control::from_pairs([("bmc_address", "10.0.0.1"), ("bmc_password", "hunter2")])
            .unwrap();
        assert_eq!(c.masked()["bmc_password"], MASK);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.get("bmc_password"), Some("hunter2"));
    }

    #[test]
    fn values_are_checked() {
        let mut c = Control::default();
        for (k, v) in [
            ("bmc_port", "0"),
            ("bmc_port", "70000"),
            ("bmc_address", "not a host"),
            ("ssh_key_filename", "id_rsa"),
            ("ssh_key_filename", "/root/../etc/shadow"),
            ("ssh_virt_type", "vbox"),
            ("nonsense", "1"),
            ("bmc_password", MASK),
            ("bmc_kg_key", MASK),
        ] {
            let e = c.set(k, v.into()).expect_err(k);
            assert_eq!(e.field, format!("control.{k}"));
        }
        c.set("ssh_address", "11.5.102.1".into()).unwrap();
        c.set("ssh_address", String::new()).unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn parameters_must_fit_the_driver() {
        let c = Control::from_pairs([("ssh_address", "h1")]).unwrap();
        c.check_driver(Some(Mgt::Kvm)).unwrap();
        let e = c.check_driver(Some(Mgt::Ipmi)).unwrap_err();
        assert!(e.reason.contains("mgt=ipmi"), "{e}");
        c.check_driver(None).unwrap();
    }
}
