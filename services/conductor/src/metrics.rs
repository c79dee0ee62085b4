//! What a conductor exposes on `/metrics` besides the per-RPC figures: what it owns, how busy it
//! is (what an autoscaler would scale on), and every driver operation by outcome and duration.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use xcat3_runtime::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// ipmi | redfish | kvm | none
    pub driver: String,
    /// power-on, power-status, bootdev-set, ...
    pub operation: String,
    /// ok | error
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverLabels {
    pub driver: String,
    pub operation: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The conductor's own metrics, registered in the process's registry.
#[derive(Clone)]
pub struct ConductorMetrics {
    pub owned_shards: Gauge,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub shard_claims: Counter,
    pub operations: Family<OperationLabels, Counter>,
    pub durations: Family<DriverLabels, Histogram, fn() -> Histogram>,
    /// How long operations waited for a free slot (per-driver and per-endpoint limits).
    pub queue_wait: Histogram,
    /// Seconds since the coordinator's lease keep-alive was last answered (0: no lease).
    pub lease_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Times the lease was lost (all shards dropped, then rejoined).
    pub lease_losses: Counter,
}

impl ConductorMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = ConductorMetrics {
            owned_shards: Gauge::default(),
            in_flight: Gauge::default(),
            shard_claims: Counter::default(),
            operations: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            queue_wait: duration_histogram(),
            lease_age: Gauge::default(),
            lease_losses: Counter::default(),
        };
        metrics.register(
            "conductor_owned_shards",
            "Shards this conductor owns",
            m.owned_shards.clone(),
        );
        metrics.register(
            "conductor_in_flight_nodes",
            "Nodes with an operation running on this conductor",
            m.in_flight.clone(),
        );
        metrics.register(
            "conductor_shard_claims",
            "Shards claimed (initial claims and takeovers)",
            m.shard_claims.clone(),
        );
        metrics.register(
            "driver_operations",
            "Driver operations by driver, operation and result",
            m.operations.clone(),
        );
        metrics.register(
            "conductor_lease_age_seconds",
            "Seconds since etcd last answered this conductor's lease keep-alive (0: no lease)",
            m.lease_age.clone(),
        );
        metrics.register(
            "conductor_lease_losses",
            "Times this conductor lost its lease (its shards were dropped and taken over)",
            m.lease_losses.clone(),
        );
        metrics.register(
            "conductor_queue_wait_seconds",
            "Time driver operations waited for a free slot under the concurrency limits",
            m.queue_wait.clone(),
        );
        metrics.register(
            "driver_operation_duration_seconds",
            "Driver operation duration, limits and timeout included",
            m.durations.clone(),
        );
        m
    }
}
