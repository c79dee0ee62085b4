//! Recognising installation media from a few small files at the root of the tree. Pure: the
//! caller reads the files.
//!
//! - RHEL and its rebuilds (Rocky, Alma, CentOS, Fedora): `.treeinfo` (kernel and initrd paths
//!   per arch), else `.discinfo`;
//! - Ubuntu: `.disk/info`; `casper/` is the live server installer (autoinstall, 20.04+),
//!   `install/netboot/` the older debian-installer (preseed);
//! - Debian: `.disk/info` and `install.amd/` (or `install.a64/`, ...).

use std::collections::{BTreeMap, HashSet};

use xcat3_types::InstallMethod;

/// What an install medium is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Short lowercase name used in osimage names: `rhels`, `rocky`, `ubuntu`, ...
    pub distro: String,
    pub version: String,
    /// `x86_64`, `aarch64`, `ppc64le`, `s390x`.
    pub arch: String,
    pub method: InstallMethod,
    /// Paths inside the tree.
    pub kernel: String,
    pub initrd: String,
    /// For people: "Rocky Linux 9.4 x86_64 (.treeinfo)".
    pub description: String,
}

impl Detected {
    /// The osimage name xCAT would give it: `rocky9.4-x86_64-install-compute`.
    pub fn osimage_name(&self) -> String {
        format!(
            "{}{}-{}-install-compute",
            self.distro, self.version, self.arch
        )
    }
}

/// Files detection needs, read before anything is extracted.
pub const PROBE_FILES: &[&str] = &[".treeinfo", ".discinfo", ".disk/info"];

/// Why a medium was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error(
        "not a recognised installation medium: no .treeinfo, .discinfo or .disk/info \
         (supported: RHEL, Rocky, Alma, CentOS, Fedora, Ubuntu, Debian)"
    )]
    Unknown,
    #[error("{file}: {reason}")]
    Unreadable { file: &'static str, reason: String },
    #[error("{what} is not on the medium: {path}")]
    Missing { what: &'static str, path: String },
}

/// `amd64` → `x86_64` and so on; None for what we do not deploy.
fn normalise_arch(a: &str) -> Option<&'static str> {
    Some(match a {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        "ppc64le" | "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// The short name of a RHEL-family product.
fn rhel_family(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    Some(if n.starts_with("red hat enterprise linux") {
        "rhels"
    } else if n.starts_with("rocky") {
        "rocky"
    } else if n.starts_with("almalinux") || n.starts_with("alma") {
        "alma"
    } else if n.starts_with("centos stream") {
        "centos-stream"
    } else if n.starts_with("centos") {
        "centos"
    } else if n.starts_with("fedora") {
        "fedora"
    } else if n.starts_with("oracle linux") {
        "ol"
    } else {
        return None;
    })
}

/// A minimal INI reader: `[section]` and `key = value`.
fn ini(text: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.insert((section.clone(), k.trim().to_owned()), v.trim().to_owned());
        }
    }
    out
}

/// `22.04.3` → `22.04`; `9.4` → `9.4`; `12.5.0` → `12.5`.
fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn text(file: &'static str, bytes: &[u8]) -> Result<String, DetectError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DetectError::Unreadable {
        file,
        reason: "not UTF-8 text".into(),
    })
}

/// Recognises a medium from its probe files (path → contents) and the set of every path in it.
pub fn detect(
    probes: &BTreeMap<String, Vec<u8>>,
    paths: &HashSet<String>,
) -> Result<Detected, DetectError> {
    let d = detect_unchecked(probes, paths)?;
    // What the medium says ends up in the osimage name, and from there in iPXE scripts, template
    // paths and the CLI: only plain words.
    let word = |what: &'static str, value: &str| {
        let ok = (1..=32).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(())
        } else {
            Err(DetectError::Unreadable {
                file: "the medium's metadata",
                reason: format!(
                    "its {what} {value:?} is not 1-32 letters, digits, '.', '_' or '-'"
                ),
            })
        }
    };
    word("distribution", &d.distro)?;
    word("version", &d.version)?;
    word("architecture", &d.arch)?;
    Ok(d)
}

fn detect_unchecked(
    probes: &BTreeMap<String, Vec<u8>>,
    paths: &HashSet<String>,
) -> Result<Detected, DetectError> {
    let require = |what: &'static str, path: &str| -> Result<String, DetectError> {
        if paths.contains(path) {
            Ok(path.to_owned())
        } else {
            Err(DetectError::Missing {
                what,
                path: path.to_owned(),
            })
        }
    };
    if let Some(bytes) = probes.get(".treeinfo") {
        return treeinfo(&text(".treeinfo", bytes)?, &require);
    }
    if let Some(bytes) = probes.get(".discinfo") {
        return discinfo(&text(".discinfo", bytes)?, &require);
    }
    if let Some(bytes) = probes.get(".disk/info") {
        return disk_info(&text(".disk/info", bytes)?, paths, &require);
    }
    Err(DetectError::Unknown)
}

type Require<'a> = dyn Fn(&'static str, &str) -> Result<String, DetectError> + 'a;

fn treeinfo(text: &str, require: &Require) -> Result<Detected, DetectError> {
    let ini = ini(text);
    let get = |section: &str, key: &str| ini.get(&(section.to_owned(), key.to_owned())).cloned();
    let bad = |reason: &str| DetectError::Unreadable {
        file: ".treeinfo",
        reason: reason.to_owned(),
    };
    // productmd 1.x: [release] name/version and [tree] arch; older: [general] family/version/arch.
    let name = get("release", "name")
        .or_else(|| get("general", "family"))
        .ok_or_else(|| bad("no product name ([release] name or [general] family)"))?;
    let version = get("release", "version")
        .or_else(|| get("general", "version"))
        .ok_or_else(|| bad("no version"))?;
    let raw_arch = get("tree", "arch")
        .or_else(|| get("general", "arch"))
        .ok_or_else(|| bad("no arch"))?;
    let distro = rhel_family(&name).ok_or_else(|| bad(&format!("unknown product {name:?}")))?;
    let arch =
        normalise_arch(&raw_arch).ok_or_else(|| bad(&format!("unknown arch {raw_arch:?}")))?;
    let section = format!("images-{raw_arch}");
    let kernel = get(&section, "kernel").unwrap_or_else(|| "images/pxeboot/vmlinuz".into());
    let initrd = get(&section, "initrd").unwrap_or_else(|| "images/pxeboot/initrd.img".into());
    Ok(Detected {
        distro: distro.into(),
        version: version.clone(),
        arch: arch.into(),
        method: InstallMethod::Kickstart,
        kernel: require("the installer kernel", &kernel)?,
        initrd: require("the installer initrd", &initrd)?,
        description: format!("{name} {version} {arch} (.treeinfo)"),
    })
}

/// `.discinfo`: a timestamp, the release ("Red Hat Enterprise Linux 7.3" or just "7.3"), the arch.
fn discinfo(text: &str, require: &Require) -> Result<Detected, DetectError> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let bad = |reason: String| DetectError::Unreadable {
        file: ".discinfo",
        reason,
    };
    let release = lines.get(1).copied().unwrap_or_default();
    let raw_arch = lines.get(2).copied().unwrap_or_default();
    let (name, version) = match release.rsplit_once(' ') {
        Some((n, v)) => (n, v),
        None => ("Red Hat Enterprise Linux", release),
    };
    if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad(format!("no version in {release:?}")));
    }
    let distro = rhel_family(name).ok_or_else(|| bad(format!("unknown product {name:?}")))?;
    let arch = normalise_arch(raw_arch).ok_or_else(|| bad(format!("unknown arch {raw_arch:?}")))?;
    Ok(Detected {
        distro: distro.into(),
        version: version.into(),
        arch: arch.into(),
        method: InstallMethod::Kickstart,
        kernel: require("the installer kernel", "images/pxeboot/vmlinuz")?,
        initrd: require("the installer initrd", "images/pxeboot/initrd.img")?,
        description: format!("{name} {version} {arch} (.discinfo)"),
    })
}

/// `.disk/info` of Ubuntu and Debian media, like
/// `Ubuntu-Server 22.04.3 LTS "Jammy Jellyfish" - Release amd64 (20230810)` or
/// `Debian GNU/Linux 12.5.0 "Bookworm" - Official amd64 NETINST with firmware 20240210-11:27`.
fn disk_info(
    text: &str,
    paths: &HashSet<String>,
    require: &Require,
) -> Result<Detected, DetectError> {
    let line = text.lines().next().unwrap_or_default().trim();
    let bad = |reason: String| DetectError::Unreadable {
        file: ".disk/info",
        reason,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let raw_arch = words
        .iter()
        .find(|w| normalise_arch(w).is_some())
        .ok_or_else(|| bad(format!("no architecture in {line:?}")))?;
    let arch = normalise_arch(raw_arch).unwrap_or_default();
    let version = words
        .iter()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(|v| major_minor(v))
        .ok_or_else(|| bad(format!("no version in {line:?}")))?;
    let product = words.first().copied().unwrap_or_default();
    if product.to_ascii_lowercase().starts_with("ubuntu") {
        let (method, kernel, initrd) = if paths.contains("casper/vmlinuz") {
            (
                InstallMethod::Autoinstall,
                "casper/vmlinuz".to_owned(),
                "casper/initrd".to_owned(),
            )
        } else {
            let dir = format!("install/netboot/ubuntu-installer/{raw_arch}");
            (
                InstallMethod::Preseed,
                format!("{dir}/linux"),
                format!("{dir}/initrd.gz"),
            )
        };
        return Ok(Detected {
            distro: "ubuntu".into(),
            version: version.clone(),
            arch: arch.into(),
            method,
            kernel: require("the installer kernel", &kernel)?,
            initrd: require("the installer initrd", &initrd)?,
            description: format!("Ubuntu {version} {arch} ({method}, .disk/info)"),
        });
    }
    if line.starts_with("Debian") {
        // install.amd, install.a64, install.386, ...: the first that has a kernel.
        let dir = [
            "install.amd",
            "install.a64",
            "install.p64",
            "install.s390x",
            "install",
        ]
        .into_iter()
        .find(|d| paths.contains(&format!("{d}/vmlinuz")))
        .ok_or_else(|| DetectError::Missing {
            what: "the installer kernel",
            path: "install.amd/vmlinuz".into(),
        })?;
        return Ok(Detected {
            distro: "debian".into(),
            version: version.clone(),
            arch: arch.into(),
            method: InstallMethod::Preseed,
            kernel: require("the installer kernel", &format!("{dir}/vmlinuz"))?,
            initrd: require("the installer initrd", &format!("{dir}/initrd.gz"))?,
            description: format!("Debian {version} {arch} (.disk/info)"),
        });
    }
    Err(bad(format!("unknown product {product:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probe: (&str, &str), paths: &[&str]) -> Result<Detected, DetectError> {
        let probes = BTreeMap::from([(probe.0.to_owned(), probe.1.as_bytes().to_vec())]);
        let paths = paths.iter().map(|p| p.to_string()).collect();
        detect(&probes, &paths)
    }

    const PXE: &[&str] = &["images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"];

    #[test]
    fn rhel_family_from_treeinfo() {
        let t = "[header]\ntype = productmd.treeinfo\nversion = 1.2\n\n[release]\nname = Rocky Linux\nshort = Rocky\nversion = 9.4\n\n[tree]\narch = x86_64\n\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n";
        let d = run((".treeinfo", t), PXE).unwrap();
        assert_eq!(d.osimage_name(), "rocky9.4-x86_64-install-compute");
        assert_eq!(d.method, InstallMethod::Kickstart);
        assert_eq!(d.kernel, "images/pxeboot/vmlinuz");
        let old = "[general]\nfamily = Red Hat Enterprise Linux\nversion = 7.3\narch = x86_64\n";
        assert_eq!(
            run((".treeinfo", old), PXE).unwrap().osimage_name(),
            "rhels7.3-x86_64-install-compute"
        );
        let alma = "[release]\nname = AlmaLinux\nversion = 8.10\n[tree]\narch = aarch64\n";
        assert_eq!(
            run((".treeinfo", alma), PXE).unwrap().osimage_name(),
            "alma8.10-aarch64-install-compute"
        );
    }

    #[test]
    fn rhel_from_discinfo() {
        let d = run(
            (
                ".discinfo",
                "1478112233.123\nRed Hat Enterprise Linux 7.3\nx86_64\n1\n",
            ),
            PXE,
        )
        .unwrap();
        assert_eq!(d.osimage_name(), "rhels7.3-x86_64-install-compute");
        let c = run((".discinfo", "1\nCentOS Linux 7.9\nx86_64\n"), PXE).unwrap();
        assert_eq!(c.distro, "centos");
    }

    #[test]
    fn ubuntu_live_server_and_legacy_and_debian_from_disk_info() {
        let live = "Ubuntu-Server 22.04.3 LTS \"Jammy Jellyfish\" - Release amd64 (20230810)";
        let d = run((".disk/info", live), &["casper/vmlinuz", "casper/initrd"]).unwrap();
        assert_eq!(d.osimage_name(), "ubuntu22.04-x86_64-install-compute");
        assert_eq!(d.method, InstallMethod::Autoinstall);
        let old = "Ubuntu-Server 16.04.1 LTS \"Xenial Xerus\" - Release amd64 (20160719)";
        let d = run(
            (".disk/info", old),
            &[
                "install/netboot/ubuntu-installer/amd64/linux",
                "install/netboot/ubuntu-installer/amd64/initrd.gz",
            ],
        )
        .unwrap();
        assert_eq!(
            (d.method, d.version.as_str()),
            (InstallMethod::Preseed, "16.04")
        );
        let deb = "Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27";
        let d = run(
            (".disk/info", deb),
            &["install.amd/vmlinuz", "install.amd/initrd.gz"],
        )
        .unwrap();
        assert_eq!(d.osimage_name(), "debian12.5-x86_64-install-compute");
    }

    #[test]
    fn unknown_or_incomplete_media_are_refused_with_the_reason() {
        let probes = BTreeMap::new();
        assert_eq!(detect(&probes, &HashSet::new()), Err(DetectError::Unknown));
        let t = "[release]\nname = Rocky Linux\nversion = 9.4\n[tree]\narch = x86_64\n";
        let e = run((".treeinfo", t), &["images/pxeboot/vmlinuz"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the installer initrd is not on the medium: images/pxeboot/initrd.img"
        );
        let e = run(
            (
                ".treeinfo",
                "[release]\nname = Windows\nversion = 11\n[tree]\narch = x86_64\n",
            ),
            PXE,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown product"), "{e}");
        let e = run((".disk/info", "Slackware 15.0 amd64"), &[]).unwrap_err();
        assert!(e.to_string().contains("unknown product"), "{e}");
    }

    #[test]
    fn metadata_that_would_reach_scripts_is_refused() {
        for version in [
            "9.4 && chain http://127.0.0.1:9/pwn.ipxe &&",
            "9.4/../../x",
            "9.4\u{2028}x",
            "9.4;reboot",
            "123456789012345678901234567890123",
        ] {
            let t = format!(
                "[release]\nname = Rocky Linux\nversion = {version}\n[tree]\narch = x86_64\n"
            );
            let e = run((".treeinfo", &t), PXE).unwrap_err();
            assert!(e.to_string().contains("version"), "{version:?}: {e}");
        }
        let e = run(
            (
                ".treeinfo",
                "[release]\nname = Rocky Linux\nversion = 9.4\n[tree]\narch = x86_64 x\n",
            ),
            PXE,
        );
        assert!(e.is_err());
    }
}
