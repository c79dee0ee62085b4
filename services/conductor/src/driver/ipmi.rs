//! `mgt=ipmi`: IPMI 2.0 over LAN (lanplus) through `ipmitool`.
//!
//! Why `ipmitool` and not a native implementation: RMCP+ session set-up (RAKP with HMAC-SHA1 or
//! SHA256, cipher suites 3 and 17, Kg keys, AES-CBC) and the quirks of real BMCs are what
//! `ipmitool` has been hardened against for twenty years; a native client would be a large,
//! security-sensitive project for little gain, since a BMC answers in tens of milliseconds and a
//! process start costs a few. The conductor bounds how many run at once.
//!
//! Secrets never reach the command line (which any local user can read in /proc): the password
//! goes in `IPMI_PASSWORD` (`-E`) and the Kg key in `IPMI_KGKEY` (`-K`).

use std::process::Stdio;

use tokio::process::Command;
use xcat3_types::{Node, PowerState};

use super::{BootDevice, DriverError, PowerAction};

/// The IPMI driver: which `ipmitool` to run and how.
#[derive(Debug, Clone)]
pub struct Ipmi {
    pub ipmitool: String,
    /// Cipher suite (`-C`): 3 (SHA1/AES) is the most widely supported; 17 (SHA256) is stronger.
    pub cipher_suite: u8,
}

impl Default for Ipmi {
    fn default() -> Self {
        Self {
            ipmitool: "ipmitool".into(),
            cipher_suite: 3,
        }
    }
}

/// A failed session that took this long means the BMC never answered (see `run`).
const NO_ANSWER_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

impl Ipmi {
    async fn run(&self, node: &Node, args: &[&str]) -> Result<String, DriverError> {
        let c = &node.control;
        let address = c
            .get("bmc_address")
            .ok_or_else(|| DriverError::missing("control.bmc_address"))?;
        let mut cmd = Command::new(&self.ipmitool);
        cmd.args(["-I", "lanplus", "-H", address, "-C"])
            .arg(self.cipher_suite.to_string())
            .args(["-R", "2", "-N", "2"]);
        if let Some(port) = c.get("bmc_port") {
            cmd.args(["-p", port]);
        }
        if let Some(user) = c.get("bmc_username") {
            cmd.args(["-U", user]);
        }
        cmd.arg("-E")
            .env("IPMI_PASSWORD", c.get("bmc_password").unwrap_or(""));
        if let Some(kg) = c.get("bmc_kg_key") {
            cmd.arg("-K").env("IPMI_KGKEY", kg);
        }
        let started = std::time::Instant::now();
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| DriverError::Remote(format!("cannot run {}: {e}", self.ipmitool)))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            let text = format!("BMC {address}: {}", line.trim());
            // ipmitool says "Unable to establish ... session" both when nothing answers and when
            // the BMC refuses the credentials; only the first waits out every retry (about 10 s
            // with -R 2 -N 2), a refusal comes back at once.
            if err.contains("Unable to establish") && started.elapsed() >= NO_ANSWER_AFTER {
                Err(DriverError::Unreachable(text))
            } else {
                Err(DriverError::Remote(text))
            }
        }
    }

    async fn status(&self, node: &Node) -> Result<PowerState, DriverError> {
        let out = self.run(node, &["power", "status"]).await?;
        parse_power(&out)
            .ok_or_else(|| DriverError::Remote(format!("unexpected answer: {}", out.trim())))
    }

    pub async fn power(&self, node: &Node, action: PowerAction) -> Result<PowerState, DriverError> {
        let verb = match action {
            PowerAction::Status => return self.status(node).await,
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Reset => "reset",
            PowerAction::Cycle => "cycle",
            PowerAction::Boot => match self.status(node).await? {
                PowerState::On => "reset",
                _ => "on",
            },
        };
        self.run(node, &["power", verb]).await?;
        Ok(action.resulting_state())
    }

    pub async fn boot_device(
        &self,
        node: &Node,
        target: Option<BootDevice>,
    ) -> Result<BootDevice, DriverError> {
        match target {
            Some(dev) => {
                let word = match dev {
                    BootDevice::Net => "pxe",
                    BootDevice::Disk => "disk",
                    BootDevice::Cdrom => "cdrom",
                    BootDevice::Default => "none",
                };
                self.run(node, &["chassis", "bootdev", word]).await?;
                Ok(dev)
            }
            None => {
                let out = self
                    .run(node, &["chassis", "bootparam", "get", "5"])
                    .await?;
                Ok(parse_boot_device(&out))
            }
        }
    }
}

/// "Chassis Power is on" → On.
fn parse_power(out: &str) -> Option<PowerState> {
    let line = out.lines().find(|l| l.contains("Chassis Power is"))?;
    match line.rsplit(' ').next()?.trim() {
        "on" => Some(PowerState::On),
        "off" => Some(PowerState::Off),
        _ => None,
    }
}

/// The "Boot Device Selector" line of `chassis bootparam get 5`.
fn parse_boot_device(out: &str) -> BootDevice {
    let line = out
        .lines()
        .find(|l| l.contains("Boot Device Selector"))
        .unwrap_or("");
    if line.contains("PXE") {
        BootDevice::Net
    } else if line.contains("Hard-Drive") {
        BootDevice::Disk
    } else if line.contains("CD/DVD") {
        BootDevice::Cdrom
    } else {
        BootDevice::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipmitool_answers() {
        assert_eq!(parse_power("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_power("Chassis Power is off\n"), Some(PowerState::Off));
        assert_eq!(parse_power("garbage"), None);
        let bootparam = " Boot Flags :\n   - Boot Device Selector : Force PXE\n";
        assert_eq!(parse_boot_device(bootparam), BootDevice::Net);
        assert_eq!(
            parse_boot_device(" - Boot Device Selector : Force Boot from default Hard-Drive"),
            BootDevice::Disk
        );
        assert_eq!(
            parse_boot_device(" - Boot Device Selector : No override"),
            BootDevice::Default
        );
    }
}
