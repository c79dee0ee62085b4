//! A simulated IPMI BMC: OpenIPMI's ipmi_sim.

use crate::*;

/// The chassis-control program ipmi_sim runs for power and boot requests: keeps the state in files.
const CHASSIS_CONTROL: &str = r#"#!/bin/sh
# <mc> get parm... | <mc> set parm value...
dir=$(dirname "$0")/state
mkdir -p "$dir"
shift
op=$1; shift
echo "$op $*" >> "$dir/calls.log"
case $op in
  get) for p in "$@"; do
         case $p in
           power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
           boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
           *) echo "Invalid parameter: $p"; exit 1;;
         esac
       done;;
  set) while [ $# -gt 0 ]; do
         p=$1; v=$2; shift 2
         case $p in
           power) echo "$v" > "$dir/power";;
           reset) echo "$v" >> "$dir/resets";;
           boot) echo "$v" > "$dir/boot";;
           *) ;;
         esac
       done;;
esac
"#;

/// A BMC simulator: OpenIPMI's `ipmi_sim` (Debian `openipmi`) on a free loopback UDP port,
/// user `admin` / password [`TestBmc::PASSWORD`], killed when dropped.
pub struct TestBmc {
    _child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TestBmc {
    pub const PASSWORD: &'static str = "bmc-secret-4242";

    pub async fn start() -> anyhow::Result<TestBmc> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new().prefix("xcat3-bmc").tempdir()?;
        let port = {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
            sock.local_addr()?.port()
        };
        let control = dir.path().join("chassis-control.sh");
        std::fs::write(&control, CHASSIS_CONTROL)?;
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(
            dir.path().join("lan.conf"),
            format!(
                "name \"xcat3bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    \
                 allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    \
                 allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    \
                 guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  \
                 user 2 true \"admin\" \"{}\" admin 10 none md2 md5 straight\n",
                control.display(),
                Self::PASSWORD
            ),
        )?;
        std::fs::write(
            dir.path().join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )?;
        std::fs::create_dir_all(dir.path().join("sim"))?;
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("bmc.emu"))
            .arg("-s")
            .arg(dir.path().join("sim"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start ipmi_sim (scripts/install-deps.sh installs Debian's openipmi)")?;
        let bmc = TestBmc {
            _child: child,
            port,
            dir,
        };
        wait_for(Duration::from_secs(10), "ipmi_sim answering", || async {
            let out = Command::new("ipmitool")
                .args([
                    "-I",
                    "lanplus",
                    "-C",
                    "3",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "admin",
                    "-P",
                ])
                .arg(Self::PASSWORD)
                .args(["-R", "1", "-N", "1", "power", "status"])
                .output()
                .await
                .ok()?;
            out.status.success().then_some(())
        })
        .await?;
        Ok(bmc)
    }

    /// The power state the simulated chassis is in (true: on).
    pub fn is_on(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("state/power")).is_ok_and(|s| s.trim() == "1")
    }

    /// The boot device last set (`pxe`, `default`, ...).
    pub fn boot(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/boot"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// `control` parameters that point a node at this BMC.
    pub fn control(&self) -> String {
        format!(
            "bmc_address=127.0.0.1,bmc_port={},bmc_username=admin,bmc_password={}",
            self.port,
            Self::PASSWORD
        )
    }
}
