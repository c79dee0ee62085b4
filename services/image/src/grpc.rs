//! `xcat3.v1.ImageService`: ISO import with progress.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use xcat3_proto::convert::osimage_to_pb;
use xcat3_proto::pb;

use crate::import::{ImportError, Progress};
use crate::importer::{ImportEvent, ImportRequest, Importer, Source};

pub struct ImageService {
    pub importer: Importer,
}

type Events = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ImportIsoProgress, Status>> + Send>,
>;

fn status(e: ImportError) -> Status {
    match e {
        ImportError::Invalid(m) => Status::invalid_argument(m),
        ImportError::Exists(m) => Status::already_exists(m),
        ImportError::Refused(m) => Status::failed_precondition(m),
        ImportError::Internal(m) => Status::internal(m),
        ImportError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

fn event_to_pb(e: ImportEvent) -> pb::import_iso_progress::Event {
    use pb::import_iso_progress::Event;
    match e {
        ImportEvent::Uploading => Event::Upload(pb::Upload {}),
        ImportEvent::Progress(Progress::Received { done, total }) => {
            Event::Received(pb::Bytes { done, total })
        }
        ImportEvent::Progress(Progress::Extracted { done, total }) => {
            Event::Extracted(pb::Bytes { done, total })
        }
        ImportEvent::Done(done) => Event::Done(pb::Done {
            osimages: done.osimages.into_iter().map(osimage_to_pb).collect(),
            already_imported: done.already,
            detected: done.detected,
        }),
    }
}

/// Feeds the chunks that follow the header to the importer; anything else ends the upload with
/// an error.
fn pump(
    mut inbound: Streaming<pb::ImportIsoRequest>,
) -> mpsc::Receiver<Result<Vec<u8>, ImportError>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(msg) = inbound.next().await {
            let chunk = match msg {
                Ok(pb::ImportIsoRequest {
                    part: Some(pb::import_iso_request::Part::Chunk(c)),
                }) => Ok(c),
                Ok(_) => Err(ImportError::Invalid(
                    "only chunks may follow the header".into(),
                )),
                Err(e) => Err(ImportError::Invalid(format!(
                    "the upload broke off: {}",
                    e.message()
                ))),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    rx
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for ImageService {
    type ImportIsoStream = Events;

    async fn import_iso(
        &self,
        request: Request<Streaming<pb::ImportIsoRequest>>,
    ) -> Result<Response<Events>, Status> {
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
        let source = if header.server_path.is_empty() {
            Source::Upload {
                size: header.size,
                sha256: header.sha256,
                chunks: pump(inbound),
            }
        } else {
            Source::ServerPath(PathBuf::from(header.server_path))
        };
        let request = ImportRequest {
            name: Some(header.name).filter(|n| !n.is_empty()),
            file_name: header.file_name,
            source,
        };
        let events = self.importer.run(request).map_err(status)?;
        Ok(Response::new(Box::pin(events.map(|e| {
            e.map(|e| pb::ImportIsoProgress {
                event: Some(event_to_pb(e)),
            })
            .map_err(status)
        }))))
    }
}
