//! Process plumbing shared by every xcat3 service, and nothing service-specific:
//!
//! - [`telemetry`]: `tracing` to stderr, plus OpenTelemetry OTLP export when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`metrics`]: a Prometheus registry, a tower layer that counts and times every RPC, and the
//!   `/metrics` HTTP endpoint;
//! - [`auth`]: the bearer-token tower layer (admin and read-only tokens);
//! - [`grpc`]: health and reflection services and the message-size limits;
//! - [`shutdown`]: SIGTERM/SIGINT handling;
//! - [`config`]: data directory, token files, generated tokens;
//! - [`tls`]: TLS for gRPC listeners and clients from PEM files.
//!
//! Invariant: this crate knows no xcat3 protocol; services hand it their descriptor sets.

pub mod auth;
pub mod config;
pub mod grpc;
pub mod http;
pub mod layered;
pub mod metrics;
pub mod process;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
