//! A real OTLP/gRPC trace receiver on loopback that hands every exported span to the test.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver: its endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`, and what it received.
pub struct Receiver {
    pub endpoint: String,
    pub exports: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let (tx, exports) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Receiver { endpoint, exports }
    }

    /// The environment that makes a server export to this receiver quickly.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]
    }

    /// The spans received so far and until `done` says the collection is complete (or the time
    /// runs out), with the service name of each.
    pub async fn collect(
        &mut self,
        limit: std::time::Duration,
        mut done: impl FnMut(&[(String, Span)]) -> bool,
    ) -> Vec<(String, Span)> {
        let mut spans = Vec::new();
        let _ = tokio::time::timeout(limit, async {
            while let Some(export) = self.exports.recv().await {
                for rs in export.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        spans.push((service.clone(), span));
                    }
                }
                if done(&spans) {
                    return;
                }
            }
        })
        .await;
        spans
    }
}
