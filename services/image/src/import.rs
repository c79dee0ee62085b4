//! Importing an ISO: received (or read from a local path) into `incoming/`, checked against its
//! SHA-256, recognised, extracted into `trees/.partial-<id>` and renamed to `trees/<id>` only when
//! complete, then recorded as an osimage. Anything that fails removes what it made: there is never
//! a half-imported image.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use xcat3_store::Store;
use xcat3_types::{InstallMethod, OsImage};

use crate::detect::{self, PROBE_FILES};
use crate::iso::Iso;

/// A step of an import, for the client's progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Received { done: u64, total: u64 },
    Extracted { done: u64, total: u64 },
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Internal(String),
    /// The database did not answer.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub osimages: Vec<OsImage>,
    pub already: bool,
    pub detected: String,
}

/// Where the image service keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn trees(&self) -> PathBuf {
        self.root.join("trees")
    }
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }
    pub fn templates(&self) -> PathBuf {
        self.root.join("templates")
    }

    /// Creates the directories and removes what an interrupted import left.
    pub fn prepare(&self) -> std::io::Result<()> {
        for d in [self.trees(), self.incoming(), self.templates()] {
            std::fs::create_dir_all(d)?;
        }
        for entry in std::fs::read_dir(self.incoming())? {
            let _ = std::fs::remove_file(entry?.path());
        }
        for entry in std::fs::read_dir(self.trees())? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".partial-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

/// A tree's id: the start of its ISO's SHA-256.
pub fn tree_id(sha256: &str) -> &str {
    &sha256[..sha256.len().min(16)]
}

/// Where an upload lands, removed on drop unless kept.
pub struct Incoming {
    pub path: PathBuf,
    keep: bool,
}

impl Incoming {
    pub fn new(layout: &Layout) -> Incoming {
        let name = format!("{}-{}.iso", std::process::id(), rand::random::<u64>());
        Incoming {
            path: layout.incoming().join(name),
            keep: false,
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Receives an upload's chunks into `incoming`, hashing as they come; checks size and hash.
pub async fn receive(
    incoming: &Incoming,
    size: u64,
    sha256: &str,
    mut chunks: mpsc::Receiver<Result<Vec<u8>, ImportError>>,
    progress: &mpsc::Sender<Progress>,
) -> Result<(), ImportError> {
    let io = |e: std::io::Error| ImportError::Internal(format!("storing the upload: {e}"));
    let mut file = tokio::fs::File::create(&incoming.path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut last_report = 0u64;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        done += chunk.len() as u64;
        if done > size {
            return Err(ImportError::Invalid(format!(
                "received more than the announced {size} bytes"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
        if done - last_report >= 8 << 20 || done == size {
            last_report = done;
            let _ = progress
                .send(Progress::Received { done, total: size })
                .await;
        }
    }
    file.flush().await.map_err(io)?;
    if done != size {
        return Err(ImportError::Invalid(format!(
            "the upload stopped after {done} of {size} bytes; nothing imported"
        )));
    }
    let got = xcat3_types::hex(&hasher.finalize());
    if got != sha256 {
        return Err(ImportError::Invalid(format!(
            "the received bytes have SHA-256 {got}, not the announced {sha256}; nothing imported"
        )));
    }
    Ok(())
}

/// SHA-256 of a local file, reporting progress.
pub async fn hash_file(
    path: &Path,
    progress: &mpsc::Sender<Progress>,
) -> Result<(String, u64), ImportError> {
    let path = path.to_owned();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let io = |e: std::io::Error| ImportError::Invalid(format!("{}: {e}", path.display()));
        // Only regular files: a FIFO would block the open (and the one-at-a-time import lock)
        // forever, /dev/zero would never end.
        let not_a_file = || {
            ImportError::Invalid(format!(
                "{}: not a regular file (devices, FIFOs and directories are refused)",
                path.display()
            ))
        };
        if !std::fs::metadata(&path).map_err(io)?.is_file() {
            return Err(not_a_file());
        }
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_a_file());
        }
        let total = meta.len();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            if done % (64 << 20) < n as u64 {
                let _ = progress.blocking_send(Progress::Received { done, total });
            }
        }
        let _ = progress.blocking_send(Progress::Received { done, total });
        Ok((xcat3_types::hex(&hasher.finalize()), total))
    })
    .await
    .map_err(|e| ImportError::Internal(e.to_string()))?
}

/// Recognises and extracts the ISO at `iso_path` and records its osimage.
pub async fn import(
    store: &Store,
    layout: &Layout,
    iso_path: PathBuf,
    sha256: &str,
    file_name: &str,
    name: Option<String>,
    progress: mpsc::Sender<Progress>,
) -> Result<Imported, ImportError> {
    let id = tree_id(sha256).to_owned();
    let partial = layout.trees().join(format!(".partial-{id}"));
    let final_dir = layout.trees().join(&id);
    let _ = std::fs::remove_dir_all(&partial);
    let source_iso = iso_path.clone();
    let work = {
        let partial = partial.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ImportError> {
            let refused = |e: crate::iso::IsoError| ImportError::Refused(e.to_string());
            let mut iso = Iso::open(&iso_path).map_err(refused)?;
            let probes = iso.read_small(PROBE_FILES).map_err(refused)?;
            let detected = detect::detect(&probes, &iso.paths())
                .map_err(|e| ImportError::Refused(e.to_string()))?;
            let total = iso.tree_bytes();
            let mut last = 0u64;
            let skipped = iso
                .extract(&partial, |done| {
                    if done - last >= 16 << 20 || done == total {
                        last = done;
                        let _ = progress.blocking_send(Progress::Extracted { done, total });
                    }
                })
                .map_err(refused)?;
            Ok((detected, skipped))
        })
    };
    let outcome = work
        .await
        .map_err(|e| ImportError::Internal(e.to_string()))
        .and_then(|r| r);
    let (detected, skipped_links) = match outcome {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    let name = name.unwrap_or_else(|| detected.osimage_name());
    let image = OsImage {
        name: name.clone(),
        distro: detected.distro.clone(),
        version: detected.version.clone(),
        arch: detected.arch.clone(),
        install_method: detected.method.to_string(),
        kernel: format!("trees/{id}/{}", detected.kernel),
        initrd: format!("trees/{id}/{}", detected.initrd),
        repo_root: format!("trees/{id}"),
        created_at: 0,
        source: file_name.to_owned(),
        sha256: sha256.to_owned(),
    };
    let placed = (|| -> std::io::Result<()> {
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)?;
        }
        std::fs::rename(&partial, &final_dir)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(ImportError::Internal(format!("placing the tree: {e}")));
    }
    if let Err(e) = store.create_osimage(&image).await {
        let _ = std::fs::remove_dir_all(&final_dir);
        return Err(match e {
            xcat3_store::Error::Conflict(_) => ImportError::Exists(format!(
                "an osimage named {name} already exists (from another ISO); choose another with --name"
            )),
            e => ImportError::Internal(format!("recording the osimage: {e}")),
        });
    }
    if detected.method == InstallMethod::Autoinstall {
        // Subiquity loads the live system from the ISO itself (`url=<tree>.iso`).
        let iso_copy = layout.trees().join(format!("{id}.iso"));
        let kept = std::fs::hard_link(&source_iso, &iso_copy)
            .or_else(|_| std::fs::copy(&source_iso, &iso_copy).map(|_| ()));
        if let Err(e) = kept {
            tracing::warn!(error = %e, "keeping the ISO for the live installer failed");
        }
    }
    let mut description = detected.description.clone();
    if skipped_links > 0 {
        description.push_str(&format!(
            "; {skipped_links} symbolic link(s) pointing outside the tree skipped"
        ));
    }
    let created = store
        .get_osimage(&name)
        .await
        .map_err(|e| ImportError::Internal(e.to_string()))?
        .unwrap_or(image);
    tracing::info!(osimage = %created.name, detected = %description, "ISO imported");
    Ok(Imported {
        osimages: vec![created],
        already: false,
        detected: description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_paths_must_be_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let (progress, _rx) = mpsc::channel(16);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let e = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                hash_file(path, &progress),
            )
            .await
            .expect("refused at once, not blocked")
            .unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let file = dir.path().join("x.iso");
        std::fs::write(&file, b"abc").unwrap();
        let (sha, size) = hash_file(&file, &progress).await.unwrap();
        assert_eq!(size, 3);
        assert_eq!(sha.len(), 64);
    }
}
