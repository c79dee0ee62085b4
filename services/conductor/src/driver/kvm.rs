//! `mgt=kvm`: an existing libvirt VM, controlled by ssh to its hypervisor (`ssh_address`,
//! `ssh_username`, `ssh_key_filename`, `ssh_port`) running `virsh` on domain `domain` (default:
//! the node's name) — the prototype's ssh plugin.
//!
//! ssh goes through the system's OpenSSH client with a multiplexed master connection per
//! hypervisor and user (`openssh`, native mux), reused across operations. Host keys are checked
//! strictly against the conductor's known-hosts file; accepting unknown keys is an explicit
//! opt-out of the conductor (`--ssh-accept-unknown-host-keys`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;
use xcat3_types::{Node, PowerState};

use super::{BootDevice, DriverError, PowerAction};

/// How the conductor uses ssh.
#[derive(Debug, Clone, Default)]
pub struct KvmConfig {
    /// Known-hosts file to verify hypervisors against (default: ssh's own, ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Accept host keys that are not known (explicit opt-out of verification).
    pub accept_unknown_host_keys: bool,
}

/// The kvm driver, with its open ssh sessions.
#[derive(Clone, Default)]
pub struct Kvm {
    config: KvmConfig,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

fn remote(host: &str, what: impl std::fmt::Display) -> DriverError {
    DriverError::Remote(format!("hypervisor {host}: {what}"))
}

impl Kvm {
    pub fn new(config: KvmConfig) -> Self {
        Self {
            config,
            sessions: Arc::default(),
        }
    }

    /// An open session to the node's hypervisor, reusing a live one.
    async fn session(&self, node: &Node) -> Result<(Arc<Session>, String), DriverError> {
        let c = &node.control;
        if c.get("ssh_virt_type").is_some_and(|t| t != "virsh") {
            return Err(DriverError::Config {
                field: "control.ssh_virt_type".into(),
                reason: "only virsh is supported".into(),
            });
        }
        let host = c
            .get("ssh_address")
            .ok_or_else(|| DriverError::missing("control.ssh_address"))?;
        let user = c.get("ssh_username").unwrap_or("root");
        let port = c.get("ssh_port").unwrap_or("22");
        let key = c.get("ssh_key_filename");
        let id = format!("{user}@{host}:{port}:{}", key.unwrap_or(""));
        let mut sessions = self.sessions.lock().await;
        if let Some(s) = sessions.get(&id) {
            if s.check().await.is_ok() {
                return Ok((s.clone(), host.to_owned()));
            }
            sessions.remove(&id);
        }
        let mut b = SessionBuilder::default();
        b.user(user.to_owned())
            .port(port.parse().unwrap_or(22))
            .connect_timeout(std::time::Duration::from_secs(10))
            .server_alive_interval(std::time::Duration::from_secs(15))
            .known_hosts_check(if self.config.accept_unknown_host_keys {
                KnownHosts::Accept
            } else {
                KnownHosts::Strict
            });
        if let Some(path) = &self.config.known_hosts {
            b.user_known_hosts_file(path);
        }
        if let Some(k) = key {
            b.keyfile(k);
        }
        let session = Arc::new(b.connect_mux(host).await.map_err(|e| remote(host, e))?);
        sessions.insert(id, session.clone());
        Ok((session, host.to_owned()))
    }

    /// Runs `virsh <args>`; returns stdout, or the error virsh printed.
    async fn virsh(
        &self,
        node: &Node,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, DriverError> {
        let (session, host) = self.session(node).await?;
        let mut cmd = session.command("virsh");
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = if let Some(text) = input {
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().await.map_err(|e| remote(&host, e))?;
            if let Some(mut stdin) = child.stdin().take() {
                stdin
                    .write_all(text.as_bytes())
                    .await
                    .map_err(|e| remote(&host, e))?;
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| remote(&host, e))?
        } else {
            cmd.output().await.map_err(|e| remote(&host, e))?
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&output.stderr);
            let line = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("virsh failed");
            Err(remote(
                &host,
                format!("virsh {}: {}", args.first().unwrap_or(&""), line.trim()),
            ))
        }
    }

    fn domain(node: &Node) -> &str {
        node.control.get("domain").unwrap_or(&node.name)
    }

    async fn state(&self, node: &Node) -> Result<PowerState, DriverError> {
        let out = self
            .virsh(node, &["domstate", Self::domain(node)], None)
            .await?;
        Ok(if out.trim() == "shut off" {
            PowerState::Off
        } else {
            PowerState::On
        })
    }

    pub async fn power(&self, node: &Node, action: PowerAction) -> Result<PowerState, DriverError> {
        let dom = Self::domain(node);
        let current = self.state(node).await?;
        match (action, current) {
            (PowerAction::Status, state) => return Ok(state),
            (PowerAction::On, PowerState::On) | (PowerAction::Off, PowerState::Off) => {}
            (PowerAction::On, _) | (PowerAction::Boot, PowerState::Off) => {
                self.virsh(node, &["start", dom], None).await?;
            }
            (PowerAction::Off, _) => {
                self.virsh(node, &["destroy", dom], None).await?;
            }
            (PowerAction::Reset | PowerAction::Boot, PowerState::On) => {
                self.virsh(node, &["reset", dom], None).await?;
            }
            (PowerAction::Reset, _) => {
                return Err(remote(
                    node.control.get("ssh_address").unwrap_or(""),
                    "cannot reset a VM that is off",
                ));
            }
            (PowerAction::Cycle, state) => {
                if state == PowerState::On {
                    self.virsh(node, &["destroy", dom], None).await?;
                }
                self.virsh(node, &["start", dom], None).await?;
            }
            (PowerAction::Boot, PowerState::Unknown) => {
                self.virsh(node, &["start", dom], None).await?;
            }
        }
        Ok(action.resulting_state())
    }

    pub async fn boot_device(
        &self,
        node: &Node,
        target: Option<BootDevice>,
    ) -> Result<BootDevice, DriverError> {
        let dom = Self::domain(node);
        let xml = self
            .virsh(node, &["dumpxml", "--inactive", dom], None)
            .await?;
        let Some(dev) = target else {
            return Ok(first_boot_device(&xml));
        };
        let word = match dev {
            BootDevice::Net => "network",
            BootDevice::Disk => "hd",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Default => "hd",
        };
        let edited = set_boot_device(&xml, word).ok_or_else(|| DriverError::Config {
            field: "control.domain".into(),
            reason: format!("domain {dom} has no <os> section or uses per-device boot order; set the order in libvirt"),
        })?;
        self.virsh(node, &["define", "/dev/stdin"], Some(&edited))
            .await?;
        Ok(dev)
    }
}

/// The first `<boot dev='...'/>` of the domain's `<os>`.
fn first_boot_device(xml: &str) -> BootDevice {
    let Some(i) = xml.find("<boot dev=") else {
        return BootDevice::Default;
    };
    let rest = &xml[i + 10..];
    let value: String = rest
        .chars()
        .skip(1)
        .take_while(|c| *c != '\'' && *c != '"')
        .collect();
    match value.as_str() {
        "network" => BootDevice::Net,
        "hd" => BootDevice::Disk,
        "cdrom" => BootDevice::Cdrom,
        _ => BootDevice::Default,
    }
}

/// The domain XML with its `<os>` boot list replaced by the one device (None if it cannot be
/// done safely: no `<os>`, or `<boot order=...>` on devices, which libvirt forbids mixing).
fn set_boot_device(xml: &str, dev: &str) -> Option<String> {
    if xml.contains("<boot order=") {
        return None;
    }
    let os_end = xml.find("</os>")?;
    let (head, tail) = xml.split_at(os_end);
    let kept: Vec<&str> = head
        .lines()
        .filter(|l| !l.trim_start().starts_with("<boot dev="))
        .collect();
    Some(format!(
        "{}\n    <boot dev='{dev}'/>\n  {tail}",
        kept.join("\n").trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='qemu'>\n  <name>vm1</name>\n  <os>\n    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n    <boot dev='hd'/>\n    <boot dev='network'/>\n  </os>\n</domain>\n";

    #[test]
    fn boot_order_is_read_and_rewritten() {
        assert_eq!(first_boot_device(XML), BootDevice::Disk);
        let edited = set_boot_device(XML, "network").unwrap();
        assert_eq!(first_boot_device(&edited), BootDevice::Net);
        assert_eq!(edited.matches("<boot dev=").count(), 1);
        assert!(edited.contains("<type arch='x86_64'") && edited.trim_end().ends_with("</domain>"));
        assert!(
            set_boot_device(
                "<domain><devices><disk><boot order='1'/></disk></devices><os></os></domain>",
                "hd"
            )
            .is_none()
        );
    }
}
