//! W3C trace context across gRPC calls, so one operation is one trace over the services: a client
//! puts the current span's context into the request (`traceparent`, by [`inject`], which the
//! [`crate::auth::Bearer`] interceptor calls), and a server starts its request span as the child
//! of what it received ([`server_span`], the servers' `trace_fn`).

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        if let (Ok(key), Ok(value)) = (key, value.parse()) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's trace context to an outgoing request's metadata.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// The span of one incoming gRPC request: a child of the caller's trace when the request carries
/// one, a new trace otherwise.
pub fn server_span<B>(req: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("grpc", otel.name = %req.uri().path(), otel.kind = "server");
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    // Without an exporter the span has no OpenTelemetry data to attach a parent to: fine.
    let _ = span.set_parent(parent);
    span
}

/// The current span's trace context as a `traceparent` value, to store with work that continues
/// elsewhere (empty when there is none).
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of a stored `traceparent` (see [`current_traceparent`]).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
}
