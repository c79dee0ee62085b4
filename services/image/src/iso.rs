//! Reading an ISO 9660 image (with Rock Ridge or Joliet names) and extracting it into a directory,
//! with nothing from the image trusted: every name is checked before it becomes a path, symbolic
//! links may only point inside the tree, every extent must lie inside the image, and the tree
//! cannot be larger than the image allows.
//!
//! Blocking (std::fs); the service runs it on the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use hadris_iso::sync::IsoImage;
use hadris_iso::sync::read::DirEntry;

/// Most entries an image may hold; install DVDs have tens of thousands.
const MAX_ENTRIES: usize = 1_000_000;
/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 64;
/// Largest file read whole for detection.
const MAX_PROBE_BYTES: u64 = 1 << 20;

/// Why an image cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("not a readable ISO 9660 image: {0}")]
    NotIso(String),
    #[error("the image is damaged: {0}")]
    Corrupt(String),
    #[error("the image holds an unsafe name {name:?} in {dir:?}: refused, nothing imported")]
    UnsafeName { dir: String, name: String },
    #[error("the image is too large to import: {0}")]
    TooLarge(String),
    #[error("writing the tree: {0}")]
    Io(#[from] std::io::Error),
}

/// One entry of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// Extents as (byte offset in the image, length).
    File {
        size: u64,
        extents: Vec<(u64, u64)>,
    },
    Symlink(String),
}

/// An entry with its checked path inside the tree (`images/pxeboot/vmlinuz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
}

/// An opened image and the list of everything in it.
pub struct Iso {
    file: File,
    pub entries: Vec<Entry>,
    pub size: u64,
}

/// Checks one name from the image: something that can only ever be one path component.
fn check_name(dir: &str, name: &str) -> Result<(), IsoError> {
    let unsafe_name = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.len() > 255;
    if unsafe_name {
        return Err(IsoError::UnsafeName {
            dir: dir.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// A name as people see it: Rock Ridge or Joliet names as they are; plain ISO 9660 names without
/// the `;1` version and the trailing dot of extension-less names.
fn entry_name(entry: &DirEntry, plain: bool) -> String {
    let name: String = entry
        .display_name()
        .chars()
        .filter(|c| *c != '\0')
        .collect();
    if !plain
        || entry
            .rrip
            .as_ref()
            .is_some_and(|r| r.alternate_name.is_some())
    {
        return name;
    }
    let base = match name.rsplit_once(';') {
        Some((base, v)) if v.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => &name,
    };
    let base = base.strip_suffix('.').unwrap_or(base);
    base.to_ascii_lowercase()
}

/// Symbolic links followed while resolving one link before it counts as a loop (as Linux).
const MAX_LINK_HOPS: usize = 40;

/// Where a symlink at `path` pointing at `target` leads, resolved against the image's own
/// entries (`links`: every symlink of the image, by path) and never against the filesystem:
/// each component of the target that is itself a link is followed first, so `x/l/..` climbs from
/// where `l` really leads, not from `x/l`. `None` when the target leaves the tree, is absolute or
/// empty, or loops.
pub fn resolve_link(path: &str, target: &str, links: &HashMap<&str, &str>) -> Option<Vec<String>> {
    let mut hops = 0;
    let mut dir: Vec<String> = path.split('/').map(String::from).collect();
    dir.pop(); // the link's own name
    resolve_in(dir, target, links, &mut hops)
}

fn resolve_in(
    mut at: Vec<String>,
    target: &str,
    links: &HashMap<&str, &str>,
    hops: &mut usize,
) -> Option<Vec<String>> {
    if target.is_empty() || target.starts_with('/') {
        return None;
    }
    for part in Path::new(target).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::Normal(name) => {
                at.push(name.to_str()?.to_owned());
                let here = at.join("/");
                if let Some(next) = links.get(here.as_str()) {
                    *hops += 1;
                    if *hops > MAX_LINK_HOPS {
                        return None;
                    }
                    at.pop();
                    at = resolve_in(at, next, links, hops)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(at)
}

impl Iso {
    /// Opens the image and lists every entry, checking names and extents.
    pub fn open(path: &Path) -> Result<Iso, IsoError> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let image =
            IsoImage::open(file.try_clone()?).map_err(|e| IsoError::NotIso(e.to_string()))?;
        // The primary tree carries Rock Ridge (long names, symlinks); without it, Joliet has
        // better names than plain ISO 9660.
        let roots = image.root_dirs();
        let primary = roots
            .iter()
            .find(|r| !matches!(r.entry_type(), hadris_iso::file::EntryType::Joliet { .. }));
        let (root, plain) = match primary {
            Some(r) if image.supports_rrip() => (*r, false),
            _ => {
                let best = roots
                    .try_best_choice()
                    .ok_or_else(|| IsoError::NotIso("no directory tree".into()))?;
                let plain = !matches!(
                    best.entry_type(),
                    hadris_iso::file::EntryType::Joliet { .. }
                );
                (best, plain)
            }
        };
        let mut entries = Vec::new();
        let mut seen_dirs = HashSet::new();
        let mut stack = vec![(root.dir_ref(), String::new(), 0usize)];
        while let Some((dir_ref, dir_path, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(IsoError::Corrupt(format!(
                    "directories nested deeper than {MAX_DEPTH} at {dir_path:?}"
                )));
            }
            if !seen_dirs.insert(dir_ref.extent.0) {
                return Err(IsoError::Corrupt(format!(
                    "directory {dir_path:?} loops back on itself"
                )));
            }
            let dir = image.open_dir(dir_ref);
            let mut names = HashSet::new();
            for entry in dir.entries() {
                let entry = entry.map_err(|e| {
                    IsoError::Corrupt(format!("reading directory {dir_path:?}: {e}"))
                })?;
                if entry.is_special() {
                    continue;
                }
                if entry.rrip.as_ref().is_some_and(|r| r.is_relocated) {
                    continue; // reached through its CL entry
                }
                let name = entry_name(&entry, plain);
                check_name(&dir_path, &name)?;
                if !names.insert(name.clone()) {
                    // Multi-extent files repeat their name; the reader already merged them.
                    continue;
                }
                let path = if dir_path.is_empty() {
                    name
                } else {
                    format!("{dir_path}/{name}")
                };
                if entries.len() >= MAX_ENTRIES {
                    return Err(IsoError::TooLarge(format!(
                        "more than {MAX_ENTRIES} entries"
                    )));
                }
                let symlink = entry.rrip.as_ref().and_then(|r| r.symlink_target.clone());
                if let Some(target) = symlink {
                    entries.push(Entry {
                        path,
                        kind: Kind::Symlink(target),
                    });
                } else if entry.is_directory() {
                    let sub = entry
                        .as_dir_ref(&image)
                        .map_err(|e| IsoError::Corrupt(format!("directory {path:?}: {e}")))?;
                    entries.push(Entry {
                        path: path.clone(),
                        kind: Kind::Dir,
                    });
                    stack.push((sub, path, depth + 1));
                } else {
                    let mut extents = Vec::new();
                    for e in entry.extents() {
                        let offset = e.sector.0 as u64 * 2048;
                        let len = u64::from(e.length);
                        if offset.checked_add(len).is_none_or(|end| end > size) {
                            return Err(IsoError::Corrupt(format!(
                                "{path:?} claims bytes {offset}..{} of a {size}-byte image",
                                offset.saturating_add(len)
                            )));
                        }
                        extents.push((offset, len));
                    }
                    entries.push(Entry {
                        path,
                        kind: Kind::File {
                            size: entry.total_size(),
                            extents,
                        },
                    });
                }
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Iso {
            file,
            entries,
            size,
        })
    }

    /// Every path in the image.
    pub fn paths(&self) -> HashSet<String> {
        self.entries.iter().map(|e| e.path.clone()).collect()
    }

    /// Total bytes of the regular files.
    pub fn tree_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                Kind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// The small files among `wanted` that exist, read whole.
    pub fn read_small(&mut self, wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, IsoError> {
        let mut out = BTreeMap::new();
        for entry in &self.entries {
            if !wanted.contains(&entry.path.as_str()) {
                continue;
            }
            if let Kind::File { size, extents } = &entry.kind {
                if *size > MAX_PROBE_BYTES {
                    continue;
                }
                let mut buf = Vec::with_capacity(*size as usize);
                for (offset, len) in extents {
                    self.file.seek(SeekFrom::Start(*offset))?;
                    (&mut self.file).take(*len).read_to_end(&mut buf)?;
                }
                out.insert(entry.path.clone(), buf);
            }
        }
        Ok(out)
    }

    /// Extracts everything into `dest` (which must not exist yet), calling `progress` with the
    /// bytes written so far. Symbolic links leaving the tree are skipped; returns how many.
    pub fn extract(
        &mut self,
        dest: &Path,
        mut progress: impl FnMut(u64),
    ) -> Result<usize, IsoError> {
        // Shared extents are legal, but a tree much larger than its image is a bomb.
        let bytes = self.tree_bytes();
        if bytes > self.size.saturating_mul(2) {
            return Err(IsoError::TooLarge(format!(
                "its files add up to {bytes} bytes, more than twice the {}-byte image",
                self.size
            )));
        }
        std::fs::create_dir(dest)?;
        let mut written = 0u64;
        let mut skipped_links = 0;
        let links: HashMap<&str, &str> = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Symlink(to) => Some((e.path.as_str(), to.as_str())),
                _ => None,
            })
            .collect();
        let target = |path: &str| -> PathBuf {
            // Names were checked when listing: each component is a plain name.
            dest.join(path)
        };
        for entry in &self.entries {
            match &entry.kind {
                Kind::Dir => std::fs::create_dir_all(target(&entry.path))?,
                Kind::Symlink(to) => {
                    if resolve_link(&entry.path, to, &links).is_some() {
                        std::os::unix::fs::symlink(to, target(&entry.path))?;
                    } else {
                        tracing::warn!(path = %entry.path, target = %to, "symbolic link leaves the tree: skipped");
                        skipped_links += 1;
                    }
                }
                Kind::File { extents, .. } => {
                    let path = target(&entry.path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    for (offset, len) in extents {
                        self.file.seek(SeekFrom::Start(*offset))?;
                        let copied = std::io::copy(&mut (&mut self.file).take(*len), &mut out)?;
                        if copied != *len {
                            return Err(IsoError::Corrupt(format!(
                                "{:?} is cut short",
                                entry.path
                            )));
                        }
                        written += copied;
                        progress(written);
                    }
                    out.flush()?;
                }
            }
        }
        Ok(skipped_links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_paths_are_refused() {
        for bad in ["", ".", "..", "a/b", "..\\x", "nul\0"] {
            assert!(check_name("d", bad).is_err(), "{bad:?}");
        }
        for good in ["vmlinuz", "..hidden", ".treeinfo", "a b"] {
            assert!(check_name("d", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn links_may_only_point_inside_the_tree() {
        let none = HashMap::new();
        let inside = |path: &str, target: &str| resolve_link(path, target, &none).is_some();
        assert!(inside("ubuntu", "."));
        assert!(inside("dists/stable", "bookworm"));
        assert!(inside("a/b/c", "../x"));
        assert!(!inside("a", "../x"));
        assert!(!inside("a/b", "../../x"));
        assert!(!inside("a", "/etc/passwd"));
        assert!(!inside("a", ""));
    }

    #[test]
    fn links_are_resolved_through_the_image_s_own_links() {
        // `a/b/h/l` leads to the tree's root; `esc` climbs through it: lexically inside
        // (a/b/h/l/../../..), really three levels above the root.
        let links: HashMap<&str, &str> = [
            ("a/b/h/l", "../../.."),
            ("esc", "a/b/h/l/../../.."),
            ("ok", "a/b/h/l/x"),
        ]
        .into_iter()
        .collect();
        assert_eq!(resolve_link("a/b/h/l", "../../..", &links), Some(vec![]));
        assert_eq!(resolve_link("esc", "a/b/h/l/../../..", &links), None);
        assert_eq!(
            resolve_link("ok", "a/b/h/l/x", &links),
            Some(vec!["x".to_owned()])
        );
        // Loops end.
        let loops: HashMap<&str, &str> = [("p", "q"), ("q", "p")].into_iter().collect();
        assert_eq!(resolve_link("p", "q", &loops), None);
    }
}
