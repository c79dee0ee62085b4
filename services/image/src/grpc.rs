//! `xcat3.v1.ImageService`: ISO import with progress.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use xcat3_proto::convert::osimage_to_pb;
use xcat3_proto::pb;
use xcat3_store::Store;

use crate::import::{self, ImportError, Imported, Incoming, Layout, Progress};

pub struct ImageService {
    pub store: Store,
    pub layout: Layout,
    pub metrics: crate::metrics::ImageMetrics,
    /// One import at a time: the same ISO sent twice at once is imported once.
    pub importing: Arc<Mutex<()>>,
}

type Events = ReceiverStream<Result<pb::ImportIsoProgress, Status>>;

fn status(e: ImportError) -> Status {
    match e {
        ImportError::Invalid(m) => Status::invalid_argument(m),
        ImportError::Exists(m) => Status::already_exists(m),
        ImportError::Refused(m) => Status::failed_precondition(m),
        ImportError::Internal(m) => Status::internal(m),
    }
}

fn event(e: pb::import_iso_progress::Event) -> Result<pb::ImportIsoProgress, Status> {
    Ok(pb::ImportIsoProgress { event: Some(e) })
}

fn progress_event(p: Progress) -> pb::import_iso_progress::Event {
    use pb::import_iso_progress::Event;
    match p {
        Progress::Received { done, total } => Event::Received(pb::Bytes { done, total }),
        Progress::Extracted { done, total } => Event::Extracted(pb::Bytes { done, total }),
    }
}

/// The images of an ISO imported before, if it was.
async fn already_imported(store: &Store, sha256: &str) -> Result<Option<Imported>, Status> {
    let images = store
        .osimages_from(sha256)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok((!images.is_empty()).then(|| Imported {
        detected: format!("already imported as {}", images[0].name),
        osimages: images,
        already: true,
    }))
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for ImageService {
    type ImportIsoStream = Events;

    async fn import_iso(
        &self,
        request: Request<Streaming<pb::ImportIsoRequest>>,
    ) -> Result<Response<Events>, Status> {
        use pb::import_iso_progress::Event;
        let mut inbound = request.into_inner();
        let header = match inbound.next().await {
            Some(Ok(pb::ImportIsoRequest {
                part: Some(pb::import_iso_request::Part::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let name = Some(header.name.clone()).filter(|n| !n.is_empty());
        if let Some(n) = &name {
            xcat3_types::validate_hostname(n)
                .map_err(|e| Status::invalid_argument(format!("name: {}", e.reason)))?;
        }
        let file_name = std::path::Path::new(&header.file_name)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let server_path =
            Some(PathBuf::from(&header.server_path)).filter(|p| !p.as_os_str().is_empty());
        if server_path.is_none() && !xcat3_types::is_hex32(&header.sha256) {
            return Err(Status::invalid_argument("sha256: 64 lowercase hex digits"));
        }
        let (out, out_rx) = mpsc::channel(16);
        let store = self.store.clone();
        let layout = self.layout.clone();
        let importing = self.importing.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _one_at_a_time = importing.lock().await;
            let (progress, mut progress_rx) = mpsc::channel::<Progress>(16);
            let forward = {
                let out = out.clone();
                tokio::spawn(async move {
                    while let Some(p) = progress_rx.recv().await {
                        let _ = out.send(event(progress_event(p))).await;
                    }
                })
            };
            let result: Result<Imported, Status> = async {
                let incoming = Incoming::new(&layout);
                let (iso_path, sha256) = match &server_path {
                    Some(path) => {
                        let (sha, _) = import::hash_file(path, &progress).await.map_err(status)?;
                        if let Some(done) = already_imported(&store, &sha).await? {
                            return Ok(done);
                        }
                        (path.clone(), sha)
                    }
                    None => {
                        if let Some(done) = already_imported(&store, &header.sha256).await? {
                            return Ok(done);
                        }
                        let _ = out.send(event(Event::Upload(pb::Upload {}))).await;
                        let (chunks_tx, chunks_rx) = mpsc::channel(8);
                        let pump = tokio::spawn(async move {
                            while let Some(msg) = inbound.next().await {
                                match msg {
                                    Ok(pb::ImportIsoRequest {
                                        part: Some(pb::import_iso_request::Part::Chunk(c)),
                                    }) => {
                                        if chunks_tx.send(c).await.is_err() {
                                            break;
                                        }
                                    }
                                    Ok(_) => {
                                        return Err(Status::invalid_argument(
                                            "only chunks may follow the header",
                                        ));
                                    }
                                    Err(e) => return Err(e),
                                }
                            }
                            Ok(())
                        });
                        let received = import::receive(
                            &incoming,
                            header.size,
                            &header.sha256,
                            chunks_rx,
                            &progress,
                        )
                        .await;
                        match pump.await {
                            Ok(Err(e)) => return Err(e),
                            Err(e) => return Err(Status::internal(e.to_string())),
                            Ok(Ok(())) => {}
                        }
                        received.map_err(status)?;
                        (incoming.path.clone(), header.sha256.clone())
                    }
                };
                let file_name = if file_name.is_empty() {
                    iso_path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    file_name
                };
                import::import(
                    &store,
                    &layout,
                    iso_path,
                    &sha256,
                    &file_name,
                    name,
                    progress.clone(),
                )
                .await
                .map_err(status)
            }
            .await;
            drop(progress);
            let _ = forward.await;
            metrics.import(match &result {
                Ok(done) if done.already => "already",
                Ok(_) => "imported",
                Err(e) if e.code() == tonic::Code::Internal => "failed",
                Err(_) => "refused",
            });
            let last = match result {
                Ok(done) => event(Event::Done(pb::Done {
                    osimages: done.osimages.into_iter().map(osimage_to_pb).collect(),
                    already_imported: done.already,
                    detected: done.detected,
                })),
                Err(e) => {
                    tracing::warn!(error = %e.message(), "ISO import refused");
                    Err(e)
                }
            };
            let _ = out.send(last).await;
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}
