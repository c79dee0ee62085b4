//! The importer, on domain types: one ISO import from start to end (an upload or a file on the
//! server, the hash, "imported before?", extraction, the osimage records), reported as a stream
//! of [`ImportEvent`]s ending with the result. The gRPC layer only converts messages.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use xcat3_store::Store;

use crate::import::{self, ImportError, Imported, Incoming, Layout, Progress};
use crate::metrics::ImageMetrics;

/// Where the ISO comes from.
pub enum Source {
    /// A file already on the image service's host (`xcat3-copycds --server-path`).
    ServerPath(PathBuf),
    /// Uploaded in chunks, `size` bytes whose SHA-256 is `sha256` (checked as they arrive). A
    /// chunk that is an error (the client broke the protocol) ends the upload with it.
    Upload {
        size: u64,
        sha256: String,
        chunks: mpsc::Receiver<Result<Vec<u8>, ImportError>>,
    },
}

/// One import asked for.
pub struct ImportRequest {
    /// The osimage name to give (else one is made from what the ISO is).
    pub name: Option<String>,
    /// The ISO's file name as the client knows it (a path is reduced to its last part).
    pub file_name: String,
    pub source: Source,
}

impl ImportRequest {
    /// The checks that need nothing but the request.
    pub fn check(&self) -> Result<(), ImportError> {
        if let Some(n) = &self.name {
            xcat3_types::validate_hostname(n)
                .map_err(|e| ImportError::Invalid(format!("name: {}", e.reason)))?;
        }
        if let Source::Upload { sha256, .. } = &self.source
            && !xcat3_types::is_hex32(sha256)
        {
            return Err(ImportError::Invalid(
                "sha256: 64 lowercase hex digits".into(),
            ));
        }
        Ok(())
    }
}

/// What an import reports as it goes.
#[derive(Debug)]
pub enum ImportEvent {
    /// The ISO is not known yet: send it (uploads only).
    Uploading,
    Progress(Progress),
    /// The last event of an import that succeeded.
    Done(Imported),
}

/// Runs imports, one at a time: the same ISO sent twice at once is imported once.
#[derive(Clone)]
pub struct Importer {
    pub store: Store,
    pub layout: Layout,
    pub metrics: ImageMetrics,
    pub importing: Arc<Mutex<()>>,
}

impl Importer {
    /// Checks `request` and runs it; the stream ends with `Done` or the error. The import goes
    /// on if the stream is dropped (an upload then ends short and is refused).
    pub fn run(
        &self,
        request: ImportRequest,
    ) -> Result<impl Stream<Item = Result<ImportEvent, ImportError>> + Send + 'static, ImportError>
    {
        request.check()?;
        let (out, rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = me.importing.lock().await;
            let (progress, mut progress_rx) = mpsc::channel::<Progress>(16);
            let forward = {
                let out = out.clone();
                tokio::spawn(async move {
                    while let Some(p) = progress_rx.recv().await {
                        let _ = out.send(Ok(ImportEvent::Progress(p))).await;
                    }
                })
            };
            let result = me.import(request, &progress, &out).await;
            drop(progress);
            let _ = forward.await;
            me.metrics.import(match &result {
                Ok(done) if done.already => "already",
                Ok(_) => "imported",
                Err(ImportError::Internal(_)) => "failed",
                Err(_) => "refused",
            });
            if let Err(e) = &result {
                tracing::warn!(error = %e, "ISO import refused");
            }
            let _ = out.send(result.map(ImportEvent::Done)).await;
        });
        Ok(ReceiverStream::new(rx))
    }

    async fn import(
        &self,
        request: ImportRequest,
        progress: &mpsc::Sender<Progress>,
        out: &mpsc::Sender<Result<ImportEvent, ImportError>>,
    ) -> Result<Imported, ImportError> {
        let incoming = Incoming::new(&self.layout);
        let (iso_path, sha256) = match request.source {
            Source::ServerPath(path) => {
                let (sha, _) = import::hash_file(&path, progress).await?;
                if let Some(done) = self.already_imported(&sha).await? {
                    return Ok(done);
                }
                (path, sha)
            }
            Source::Upload {
                size,
                sha256,
                chunks,
            } => {
                if let Some(done) = self.already_imported(&sha256).await? {
                    return Ok(done);
                }
                let _ = out.send(Ok(ImportEvent::Uploading)).await;
                import::receive(&incoming, size, &sha256, chunks, progress).await?;
                (incoming.path.clone(), sha256)
            }
        };
        let file_name = std::path::Path::new(&request.file_name)
            .file_name()
            .or_else(|| iso_path.file_name())
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        import::import(
            &self.store,
            &self.layout,
            iso_path,
            &sha256,
            &file_name,
            request.name,
            progress.clone(),
        )
        .await
    }

    /// The images of an ISO imported before, if it was.
    async fn already_imported(&self, sha256: &str) -> Result<Option<Imported>, ImportError> {
        let images = self
            .store
            .osimages_from(sha256)
            .await
            .map_err(|e| ImportError::Unavailable(e.to_string()))?;
        Ok((!images.is_empty()).then(|| Imported {
            detected: format!("already imported as {}", images[0].name),
            osimages: images,
            already: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(sha256: &str) -> Source {
        let (_tx, chunks) = mpsc::channel(1);
        Source::Upload {
            size: 1,
            sha256: sha256.into(),
            chunks,
        }
    }

    #[test]
    fn requests_are_checked_before_anything_runs() {
        let good = "ab".repeat(32);
        let request = |name: Option<&str>, source| ImportRequest {
            name: name.map(String::from),
            file_name: "r.iso".into(),
            source,
        };
        request(Some("rocky9"), upload(&good)).check().unwrap();
        request(None, Source::ServerPath("/srv/r.iso".into()))
            .check()
            .unwrap();
        for (r, want) in [
            (request(Some("bad name"), upload(&good)), "name:"),
            (request(None, upload("abc")), "sha256:"),
            (request(None, upload(&"AB".repeat(32))), "sha256:"),
        ] {
            let err = r.check().unwrap_err();
            assert!(
                matches!(&err, ImportError::Invalid(m) if m.starts_with(want)),
                "{err}"
            );
        }
    }
}
