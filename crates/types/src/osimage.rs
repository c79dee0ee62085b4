//! OS images and how a node boots into their installer: the kernel command line per install
//! method and where a deploy's files live on the image service.
//!
//! URL layout of the image service (all relative to its base URL, like `http://10.0.0.1:8090`):
//! - `/<repo_root>/...`: an install tree (`trees/<id>/...`), with byte ranges;
//! - `/deploy/<token>/<file>`: the files rendered for one deploy (`kickstart`, `preseed`,
//!   `user-data`, `meta-data`), valid while the deploy is in progress;
//! - `/deploy/<token>/done` and `/deploy/<token>/failed` (POST): the installed system's callback.

use std::fmt;
use std::str::FromStr;

use crate::FieldError;

/// An operating-system image that nodes can be deployed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsImage {
    /// Like `rocky9.4-x86_64-install-compute`.
    pub name: String,
    /// `rhels`, `rocky`, `alma`, `centos-stream`, `ubuntu`, `debian`, ...
    pub distro: String,
    pub version: String,
    pub arch: String,
    /// A word of [`InstallMethod`].
    pub install_method: String,
    /// Paths relative to the image service's base URL.
    pub kernel: String,
    pub initrd: String,
    /// The install tree, like `trees/3f2a9c…`.
    pub repo_root: String,
    pub created_at: i64,
    /// The ISO's file name.
    pub source: String,
    /// The ISO's SHA-256, hex.
    pub sha256: String,
}

/// How an installer is told what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallMethod {
    /// Anaconda (RHEL and its rebuilds).
    Kickstart,
    /// debian-installer (Debian, Ubuntu before 20.04).
    Preseed,
    /// Subiquity (Ubuntu 20.04 and later): cloud-init `user-data` with an `autoinstall` section.
    Autoinstall,
}

impl InstallMethod {
    pub const WORDS: &'static [&'static str] = &["kickstart", "preseed", "autoinstall"];

    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Kickstart => "kickstart",
            InstallMethod::Preseed => "preseed",
            InstallMethod::Autoinstall => "autoinstall",
        }
    }

    /// The files the image service renders for a deploy with this method.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            InstallMethod::Kickstart => &["kickstart"],
            InstallMethod::Preseed => &["preseed"],
            InstallMethod::Autoinstall => &["user-data", "meta-data"],
        }
    }
}

impl fmt::Display for InstallMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstallMethod {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        match s {
            "kickstart" => Ok(InstallMethod::Kickstart),
            "preseed" => Ok(InstallMethod::Preseed),
            "autoinstall" => Ok(InstallMethod::Autoinstall),
            _ => Err(FieldError::invalid(
                "install_method",
                format!("{s:?} is not one of: {}", Self::WORDS.join(", ")),
            )),
        }
    }
}

/// The URL of a deploy's file (or callback) on the image service at `base`.
pub fn deploy_url(base: &str, token: &str, file: &str) -> String {
    format!("{}/deploy/{token}/{file}", base.trim_end_matches('/'))
}

/// What the network boot loads to install `image` on node `hostname` for the deploy `token`:
/// (kernel URL, initrd URLs, kernel command line).
pub fn installer_boot(
    image: &OsImage,
    base: &str,
    token: &str,
    hostname: &str,
) -> Result<(String, Vec<String>, String), FieldError> {
    let base = base.trim_end_matches('/');
    let method: InstallMethod = image.install_method.parse()?;
    let repo = format!("{base}/{}", image.repo_root);
    let console = "console=tty0 console=ttyS0,115200n8";
    let cmdline = match method {
        InstallMethod::Kickstart => format!(
            "inst.ks={} inst.repo={repo} ip=dhcp inst.text {console}",
            deploy_url(base, token, "kickstart")
        ),
        InstallMethod::Preseed => format!(
            "auto=true priority=critical url={} hostname={hostname} domain= \
             netcfg/choose_interface=auto locale=en_US.UTF-8 keymap=us {console}",
            deploy_url(base, token, "preseed")
        ),
        // Subiquity loads the live system from the ISO itself and its answers from the NoCloud
        // datasource at the deploy's URL (`user-data`, `meta-data`).
        InstallMethod::Autoinstall => format!(
            "ip=dhcp url={repo}.iso autoinstall ds=nocloud-net;s={} {console}",
            deploy_url(base, token, "")
        ),
    };
    Ok((
        format!("{base}/{}", image.kernel),
        vec![format!("{base}/{}", image.initrd)],
        cmdline,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(method: &str) -> OsImage {
        OsImage {
            name: "x".into(),
            distro: "rocky".into(),
            version: "9.4".into(),
            arch: "x86_64".into(),
            install_method: method.into(),
            kernel: "trees/ab/images/pxeboot/vmlinuz".into(),
            initrd: "trees/ab/images/pxeboot/initrd.img".into(),
            repo_root: "trees/ab".into(),
            created_at: 0,
            source: "x.iso".into(),
            sha256: "ab".into(),
        }
    }

    #[test]
    fn each_method_points_its_installer_at_the_deploys_files() {
        let base = "http://10.0.0.1:8090/";
        let (k, i, c) = installer_boot(&image("kickstart"), base, "t0k", "n1").unwrap();
        assert_eq!(k, "http://10.0.0.1:8090/trees/ab/images/pxeboot/vmlinuz");
        assert_eq!(
            i,
            ["http://10.0.0.1:8090/trees/ab/images/pxeboot/initrd.img"]
        );
        assert!(c.starts_with("inst.ks=http://10.0.0.1:8090/deploy/t0k/kickstart inst.repo=http://10.0.0.1:8090/trees/ab "), "{c}");
        let (_, _, c) = installer_boot(&image("preseed"), base, "t0k", "n1").unwrap();
        assert!(
            c.contains("url=http://10.0.0.1:8090/deploy/t0k/preseed hostname=n1"),
            "{c}"
        );
        let (_, _, c) = installer_boot(&image("autoinstall"), base, "t0k", "n1").unwrap();
        assert!(c.contains("url=http://10.0.0.1:8090/trees/ab.iso autoinstall ds=nocloud-net;s=http://10.0.0.1:8090/deploy/t0k/ "), "{c}");
        assert!(installer_boot(&image("floppy"), base, "t", "n").is_err());
    }
}
