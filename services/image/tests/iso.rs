//! ISO reading and extraction against images built by xorriso (scripts/install-deps.sh installs
//! it) in the layouts of real install media, plus damaged and hostile ones.

use std::collections::BTreeMap;
use std::path::Path;

use xcat3_image::detect::{PROBE_FILES, detect};
use xcat3_image::iso::{Iso, IsoError};
use xcat3_tests::iso::{ROCKY_TREEINFO, fake_kernel as kernel, make_iso};

#[test]
fn a_rocky_layout_is_recognised_and_extracted_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let treeinfo = ROCKY_TREEINFO;
    let long =
        "BaseOS/Packages/a-package-name-much-longer-than-iso9660-allows-1.2.3-4.el9.x86_64.rpm";
    let iso = make_iso(
        dir.path(),
        "rocky",
        &[
            (".treeinfo", treeinfo),
            (".discinfo", b"1\nRocky Linux 9.4\nx86_64\n"),
            ("images/pxeboot/vmlinuz", &k),
            ("images/pxeboot/initrd.img", b"initrd"),
            (long, b"rpm"),
        ],
        &[("BaseOS/repodata-link", "../images")],
    );
    let mut image = Iso::open(&iso).unwrap();
    let probes = image.read_small(PROBE_FILES).unwrap();
    let d = detect(&probes, &image.paths()).unwrap();
    assert_eq!(d.osimage_name(), "rocky9.4-x86_64-install-compute");
    let out = dir.path().join("out");
    let skipped = image.extract(&out, |_| {}).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(
        std::fs::read(out.join("images/pxeboot/vmlinuz")).unwrap(),
        k
    );
    assert_eq!(std::fs::read(out.join(long)).unwrap(), b"rpm");
    assert_eq!(
        std::fs::read_link(out.join("BaseOS/repodata-link")).unwrap(),
        Path::new("../images")
    );
}

#[test]
fn ubuntu_and_debian_layouts_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let ubuntu = make_iso(
        dir.path(),
        "ubuntu",
        &[
            (
                ".disk/info",
                b"Ubuntu-Server 22.04.3 LTS \"Jammy Jellyfish\" - Release amd64 (20230810)",
            ),
            ("casper/vmlinuz", b"k"),
            ("casper/initrd", b"i"),
        ],
        &[("ubuntu", ".")],
    );
    let debian = make_iso(
        dir.path(),
        "debian",
        &[
            (".disk/info", b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27"),
            ("install.amd/vmlinuz", b"k"),
            ("install.amd/initrd.gz", b"i"),
        ],
        &[("debian", ".")],
    );
    let mut names = BTreeMap::new();
    for iso in [ubuntu, debian] {
        let mut image = Iso::open(&iso).unwrap();
        let d = detect(&image.read_small(PROBE_FILES).unwrap(), &image.paths()).unwrap();
        names.insert(d.osimage_name(), d.method.to_string());
    }
    assert_eq!(
        names,
        BTreeMap::from([
            (
                "debian12.5-x86_64-install-compute".to_owned(),
                "preseed".to_owned()
            ),
            (
                "ubuntu22.04-x86_64-install-compute".to_owned(),
                "autoinstall".to_owned()
            ),
        ])
    );
}

#[test]
fn damaged_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.iso");
    std::fs::write(&junk, vec![0x5au8; 200_000]).unwrap();
    assert!(matches!(Iso::open(&junk), Err(IsoError::NotIso(_))));
    // A real image cut in half: the directory points past the end.
    let k = kernel();
    let iso = make_iso(dir.path(), "cut", &[("a/vmlinuz", &k), ("b/more", &k)], &[]);
    let bytes = std::fs::read(&iso).unwrap();
    let cut = dir.path().join("cut-short.iso");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = match Iso::open(&cut) {
        Err(e) => e.to_string(),
        Ok(mut image) => image
            .extract(&dir.path().join("cut-out"), |_| {})
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string()),
    };
    assert!(!e.is_empty(), "a truncated image was extracted");
}

#[test]
fn hostile_names_and_links_cannot_escape_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    // Links out of the tree are skipped, the rest is extracted.
    let iso = make_iso(
        dir.path(),
        "links",
        &[("ok/file", b"x")],
        &[
            ("ok/etc", "/etc"),
            ("ok/up", "../../.."),
            ("ok/fine", "file"),
        ],
    );
    let mut image = Iso::open(&iso).unwrap();
    let out = dir.path().join("links-out");
    assert_eq!(image.extract(&out, |_| {}).unwrap(), 2);
    assert!(std::fs::symlink_metadata(out.join("ok/etc")).is_err());
    assert!(std::fs::symlink_metadata(out.join("ok/up")).is_err());
    assert_eq!(std::fs::read(out.join("ok/fine")).unwrap(), b"x");

    // A name rewritten to ".." in every directory record (ISO 9660, Rock Ridge and Joliet).
    let iso = make_iso(dir.path(), "dots", &[("qz/payload", b"owned")], &[]);
    let mut bytes = std::fs::read(&iso).unwrap();
    let patterns: [(&[u8], &[u8]); 3] = [(b"qz", b".."), (b"QZ", b".."), (b"\0q\0z", b"\0.\0.")];
    for (from, to) in patterns {
        let mut i = 0;
        while i + from.len() <= bytes.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to);
            }
            i += 1;
        }
    }
    let hostile = dir.path().join("dots-hostile.iso");
    std::fs::write(&hostile, &bytes).unwrap();
    let e = Iso::open(&hostile).err().expect("a '..' name was accepted");
    assert!(e.to_string().contains("unsafe name"), "{e}");
}
