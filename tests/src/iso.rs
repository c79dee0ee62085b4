//! Installation ISOs for tests, built with xorriso (`scripts/install-deps.sh` installs it) in the
//! layouts of real media, with small stand-ins for kernels and initrds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `<dir>/<name>.iso` from `files` (path → contents) and `links` (path → target), with Rock
/// Ridge and Joliet like distribution media.
pub fn make_iso(
    dir: &Path,
    name: &str,
    files: &[(&str, &[u8])],
    links: &[(&str, &str)],
) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    for (path, contents) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().expect("a file path has a parent"))
            .expect("create the ISO tree");
        std::fs::write(p, contents).expect("write an ISO file");
    }
    for (path, target) in links {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().expect("a link path has a parent"))
            .expect("create the ISO tree");
        std::os::unix::fs::symlink(target, p).expect("create an ISO symlink");
    }
    let iso = dir.join(format!("{name}.iso"));
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-R", "-J", "-V", "TEST", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .expect("xorriso (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// A stand-in kernel: 300 kB of a recognisable pattern.
pub fn fake_kernel() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

pub const ROCKY_TREEINFO: &[u8] = b"[header]\ntype = productmd.treeinfo\nversion = 1.2\n\n\
[release]\nname = Rocky Linux\nshort = Rocky\nversion = 9.4\n\n[tree]\narch = x86_64\n\n\
[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n";

/// A Rocky Linux 9.4 x86_64 DVD's layout (kickstart).
pub fn rocky_iso(dir: &Path) -> PathBuf {
    let kernel = fake_kernel();
    make_iso(
        dir,
        "Rocky-9.4-x86_64-dvd",
        &[
            (".treeinfo", ROCKY_TREEINFO),
            (".discinfo", b"1715000000.0\nRocky Linux 9.4\nx86_64\n"),
            ("images/pxeboot/vmlinuz", &kernel),
            ("images/pxeboot/initrd.img", b"initrd"),
            ("BaseOS/repodata/repomd.xml", b"<repomd/>"),
        ],
        &[],
    )
}
