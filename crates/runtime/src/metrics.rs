//! Prometheus metrics: a shared registry, a tower layer that counts and times every gRPC call,
//! and the `/metrics` endpoint.
//!
//! Per RPC: `xcat3_grpc_requests_total{service,method,code}` and
//! `xcat3_grpc_request_duration_seconds{service,method}`. The duration runs from the request's
//! arrival to the end of its answer, so a streamed answer is timed whole; the code is the
//! `grpc-status` the answer ended with (`Cancelled` when the client went away first).
//!
//! Labels come only from the methods the process's descriptor sets declare (plus health and
//! reflection); any other path, which anyone can send without a token, is counted once as
//! `service="other",method="other"`, so unauthenticated callers cannot grow the registry.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

fn duration_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

struct RpcMetrics {
    requests: Family<CallLabels, Counter>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

/// The process's metrics registry. Cheap to clone; services register their own metrics with
/// [`Metrics::register`].
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    rpc: Arc<RpcMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("xcat3");
        let rpc = RpcMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls by service, method and final code",
            rpc.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call duration, from request to the end of the answer",
            rpc.duration.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            rpc: Arc::new(rpc),
        }
    }

    /// Adds a metric (name without the `xcat3_` prefix).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// The layer that records every call passing through it, labelled by method when the method
    /// is one that `descriptor_sets` (encoded `FileDescriptorSet`s), health or reflection
    /// declare, and as `other` otherwise.
    pub fn layer(&self, descriptor_sets: &[&[u8]]) -> MetricsLayer {
        MetricsLayer {
            rpc: self.rpc.clone(),
            known: Arc::new(KnownMethods::from_descriptor_sets(descriptor_sets)),
        }
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = self.encode();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
        crate::http::serve(listener, app, shutdown).await;
        Ok(())
    }
}

/// The `/package.Service/Method` paths a process may label its metrics with.
#[derive(Debug, Default)]
pub struct KnownMethods {
    paths: HashSet<String>,
}

/// The label pair every unknown path is counted under.
pub const OTHER: &str = "other";

impl KnownMethods {
    /// The methods of every service in `sets`, plus gRPC health and reflection (v1, v1alpha).
    /// A set that does not decode adds nothing (its calls are counted as `other`).
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut paths: HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::warn!("a descriptor set does not decode; its calls count as 'other'");
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        let service = service.name();
                        let full = if package.is_empty() {
                            service.to_owned()
                        } else {
                            format!("{package}.{service}")
                        };
                        paths.insert(format!("/{full}/{}", method.name()));
                    }
                }
            }
        }
        KnownMethods { paths }
    }

    /// The (service, method) labels for a request path.
    fn labels(&self, path: &str) -> (String, String) {
        if self.paths.contains(path) {
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            let service = parts.next().unwrap_or_default().to_owned();
            let method = parts.next().unwrap_or_default().to_owned();
            (service, method)
        } else {
            (OTHER.to_owned(), OTHER.to_owned())
        }
    }
}

#[derive(Clone)]
pub struct MetricsLayer {
    rpc: Arc<RpcMetrics>,
    known: Arc<KnownMethods>,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            rpc: self.rpc.clone(),
            known: self.known.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    rpc: Arc<RpcMetrics>,
    known: Arc<KnownMethods>,
}

/// Records one call when its answer ends (or is dropped).
struct Recorder {
    rpc: Arc<RpcMetrics>,
    service: String,
    method: String,
    start: Instant,
    code: Option<String>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let code = self.code.take().unwrap_or_else(|| "Cancelled".into());
        self.rpc
            .requests
            .get_or_create(&CallLabels {
                service: self.service.clone(),
                method: self.method.clone(),
                code,
            })
            .inc();
        self.rpc
            .duration
            .get_or_create(&MethodLabels {
                service: std::mem::take(&mut self.service),
                method: std::mem::take(&mut self.method),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

fn code_name(headers: &http::HeaderMap) -> Option<String> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(value)))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (service, method) = self.known.labels(req.uri().path());
        let rpc = self.rpc.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let mut recorder = Recorder {
                rpc,
                service,
                method,
                start,
                code: None,
            };
            // A trailers-only answer (an error before any message) carries its status in the headers.
            recorder.code = code_name(response.headers());
            Ok(response.map(|inner| MeteredBody {
                inner,
                recorder: Some(recorder),
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call to the metrics when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let poll = this.inner.poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(rec) = this.recorder.as_mut()
                {
                    rec.code = code_name(trailers).or(rec.code.take());
                }
            }
            Poll::Ready(None) => {
                if let Some(mut rec) = this.recorder.take() {
                    rec.code.get_or_insert_with(|| "Ok".into());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut rec) = this.recorder.take() {
                    rec.code.get_or_insert_with(|| "Internal".into());
                }
            }
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_on_drop() {
        let m = Metrics::new();
        drop(Recorder {
            rpc: m.rpc.clone(),
            service: "xcat3.v1.NodeService".into(),
            method: "GetNodes".into(),
            start: Instant::now(),
            code: Some("Ok".into()),
        });
        let text = m.encode();
        assert!(
            text.contains(r#"xcat3_grpc_requests_total{service="xcat3.v1.NodeService",method="GetNodes",code="Ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("xcat3_grpc_request_duration_seconds_count"),
            "{text}"
        );
    }

    #[test]
    fn only_declared_methods_are_labels() {
        let known = KnownMethods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]);
        assert_eq!(
            known.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        for path in [
            "/grpc.health.v1.Health/Nope",
            "/random.Service/Method",
            "/",
            "",
            "/grpc.health.v1.Health/Check/extra",
        ] {
            assert_eq!(known.labels(path), (OTHER.into(), OTHER.into()), "{path}");
        }
        let garbage = KnownMethods::from_descriptor_sets(&[b"\xff\xff not a descriptor"]);
        assert_eq!(garbage.labels("/x/y"), (OTHER.into(), OTHER.into()));
    }
}
