//! Fleet gauges for dashboards and autoscaling: nodes by provision and power state, read from the
//! store every few seconds (one `GROUP BY` query).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use xcat3_runtime::metrics::Metrics;
use xcat3_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    provision_state: String,
    power_state: String,
}

/// Updates `xcat3_nodes{provision_state, power_state}` every `interval` until `shutdown`.
pub async fn run(store: Store, metrics: Metrics, interval: Duration, shutdown: CancellationToken) {
    let nodes: Family<StateLabels, Gauge> = Family::default();
    metrics.register(
        "nodes",
        "Nodes in the inventory by provision state and power state",
        nodes.clone(),
    );
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.node_state_counts().await {
            Ok(counts) => {
                // States that emptied read 0 rather than keeping their last count.
                nodes.clear();
                for (provision_state, power_state, n) in counts {
                    nodes
                        .get_or_create(&StateLabels {
                            provision_state,
                            power_state,
                        })
                        .set(n);
                }
            }
            Err(e) => tracing::debug!(error = %e, "counting nodes failed"),
        }
    }
}
