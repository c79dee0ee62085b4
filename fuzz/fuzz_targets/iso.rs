//! The ISO reader on arbitrary images: listing (names, extents, directory loops), detection and
//! extraction. Never a panic, and no extracted symbolic link resolves outside the tree.

#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()) else {
        return;
    };
    let path = dir.path().join("in.iso");
    let Ok(mut f) = std::fs::File::create(&path) else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let Ok(mut iso) = xcat3_image::iso::Iso::open(&path) else {
        return;
    };
    let dest = dir.path().join("tree");
    if iso.extract(&dest, &mut |_| {}).is_err() {
        return;
    }
    let root = dest.canonicalize().expect("the tree exists");
    let mut stack = vec![dest.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_symlink() {
                if let Ok(real) = p.canonicalize() {
                    assert!(real.starts_with(&root), "{} -> {}", p.display(), real.display());
                }
            } else if t.is_dir() {
                stack.push(p);
            }
        }
    }
});
