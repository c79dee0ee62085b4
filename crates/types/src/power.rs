//! Power actions and boot devices: what `xcat3 power` and `xcat3 bootdev` ask of a node.

use std::fmt;
use std::str::FromStr;

use crate::PowerState;

/// A power action (`xcat3 power NODERANGE <action>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    Off,
    Reset,
    Cycle,
    Status,
    /// On if off, reset if on: "boot now" whatever the state.
    Boot,
}

impl PowerAction {
    pub const WORDS: &'static [&'static str] = &["on", "off", "reset", "cycle", "status", "boot"];

    /// The power state a node is in once the action has been carried out (`status` excepted:
    /// it reads the state instead).
    pub fn resulting_state(self) -> PowerState {
        if self == PowerAction::Off {
            PowerState::Off
        } else {
            PowerState::On
        }
    }

    /// Whether running it twice does no more harm than once (so it may be retried elsewhere).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            PowerAction::On | PowerAction::Off | PowerAction::Status
        )
    }
}

impl FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "on" => PowerAction::On,
            "off" => PowerAction::Off,
            "reset" => PowerAction::Reset,
            "cycle" => PowerAction::Cycle,
            "status" => PowerAction::Status,
            "boot" => PowerAction::Boot,
            _ => return Err(format!("{s:?} is not one of: {}", Self::WORDS.join(", "))),
        })
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Reset => "reset",
            PowerAction::Cycle => "cycle",
            PowerAction::Status => "status",
            PowerAction::Boot => "boot",
        };
        f.write_str(w)
    }
}

/// The next boot device (`xcat3 bootdev NODERANGE <device>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    Net,
    Disk,
    Cdrom,
    /// No override is set (the firmware's own order).
    Default,
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Net => "net",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Default => "default",
        }
    }

    /// Parses what a client may set: net, disk, cdrom.
    pub fn parse_target(s: &str) -> Result<BootDevice, String> {
        match s {
            "net" => Ok(BootDevice::Net),
            "disk" => Ok(BootDevice::Disk),
            "cdrom" => Ok(BootDevice::Cdrom),
            _ => Err(format!("{s:?} is not one of: net, disk, cdrom, status")),
        }
    }
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_back_and_only_some_may_be_repeated() {
        for w in PowerAction::WORDS {
            let a: PowerAction = w.parse().unwrap();
            assert_eq!(a.to_string(), *w);
        }
        assert!("sleep".parse::<PowerAction>().is_err());
        let repeatable: Vec<_> = PowerAction::WORDS
            .iter()
            .filter(|w| w.parse::<PowerAction>().unwrap().is_idempotent())
            .collect();
        assert_eq!(repeatable, [&"on", &"off", &"status"]);
        assert_eq!(BootDevice::parse_target("net"), Ok(BootDevice::Net));
        assert!(BootDevice::parse_target("default").is_err());
    }
}
