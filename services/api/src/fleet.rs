//! Fleet gauges for dashboards and autoscaling, refreshed every few seconds: nodes by provision
//! and power state (one `GROUP BY` query), and how the nodes spread over the live conductors (the
//! node names hashed to shards, the shards to their owners): what an operator or an HPA scales
//! the conductors on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use xcat3_coord::{Coordinator, Snapshot, shard_of};
use xcat3_runtime::metrics::Metrics;
use xcat3_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    provision_state: String,
    power_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConductorLabel {
    /// A conductor's id, or "none" for nodes whose shard has no live owner.
    conductor: String,
}

/// The gauges this module keeps.
#[derive(Clone, Default)]
pub struct FleetGauges {
    nodes: Family<StateLabels, Gauge>,
    conductor_nodes: Family<ConductorLabel, Gauge>,
    conductors: Gauge,
    nodes_per_conductor: Gauge,
}

impl FleetGauges {
    pub fn register(metrics: &Metrics) -> Self {
        let g = Self::default();
        metrics.register(
            "nodes",
            "Nodes in the inventory by provision state and power state",
            g.nodes.clone(),
        );
        metrics.register(
            "conductor_nodes",
            "Nodes in the shards each live conductor owns (conductor=\"none\": no live owner)",
            g.conductor_nodes.clone(),
        );
        metrics.register("conductors", "Live conductors", g.conductors.clone());
        metrics.register(
            "nodes_per_conductor",
            "Nodes divided by live conductors, rounded up: the figure to scale conductors on",
            g.nodes_per_conductor.clone(),
        );
        g
    }
}

/// Nodes per owner of their shard.
fn spread(names: &[String], snapshot: &Snapshot) -> BTreeMap<String, i64> {
    let mut per_shard: BTreeMap<u32, i64> = BTreeMap::new();
    for n in names {
        *per_shard.entry(shard_of(n, snapshot.shards)).or_default() += 1;
    }
    let mut per_owner: BTreeMap<String, i64> =
        snapshot.members.iter().map(|m| (m.id.clone(), 0)).collect();
    for (shard, count) in per_shard {
        let owner = snapshot
            .owner(shard)
            .map_or_else(|| "none".to_owned(), |m| m.id.clone());
        *per_owner.entry(owner).or_default() += count;
    }
    per_owner
}

/// Keeps the gauges current every `interval` until `shutdown`.
/// Discovered machines not seen for this long are forgotten ...
const DISCOVERED_TTL_MS: i64 = 24 * 3_600_000;
/// ... and at most this many are kept (the least recently seen go first).
const DISCOVERED_KEEP: u64 = 100_000;
/// How often they are looked at.
const EXPIRY_EVERY: Duration = Duration::from_secs(60);

pub async fn run(
    store: Store,
    coordinator: Arc<dyn Coordinator>,
    gauges: FleetGauges,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    let mut last_expiry = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let expire_now =
            last_expiry.is_none_or(|t: tokio::time::Instant| t.elapsed() >= EXPIRY_EVERY);
        if expire_now
            && let Err(e) = store
                .expire_discovered(xcat3_store::now_ms() - DISCOVERED_TTL_MS, DISCOVERED_KEEP)
                .await
        {
            tracing::debug!(error = %e, "expiring discovered machines failed");
        }
        if expire_now {
            last_expiry = Some(tokio::time::Instant::now());
        }
        match store.node_state_counts().await {
            Ok(counts) => {
                // States that emptied read 0 rather than keeping their last count.
                gauges.nodes.clear();
                for (provision_state, power_state, n) in counts {
                    gauges
                        .nodes
                        .get_or_create(&StateLabels {
                            provision_state,
                            power_state,
                        })
                        .set(n);
                }
            }
            Err(e) => tracing::debug!(error = %e, "counting nodes failed"),
        }
        let (names, snapshot) = match tokio::try_join!(
            async { store.node_names().await.map_err(|e| e.to_string()) },
            async { coordinator.snapshot().await.map_err(|e| e.to_string()) },
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the spread of nodes failed");
                continue;
            }
        };
        let live = snapshot.members.len() as i64;
        gauges.conductors.set(live);
        let total = names.len() as i64;
        gauges.nodes_per_conductor.set(if live == 0 {
            total
        } else {
            (total + live - 1) / live
        });
        gauges.conductor_nodes.clear();
        for (conductor, n) in spread(&names, &snapshot) {
            gauges
                .conductor_nodes
                .get_or_create(&ConductorLabel { conductor })
                .set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xcat3_coord::Member;

    #[test]
    fn nodes_are_counted_under_the_owner_of_their_shard() {
        let member = |id: &str| Member {
            id: id.into(),
            host: "h".into(),
            addr: "a".into(),
        };
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
        // Two conductors own even and odd shards; shard 3 has no owner.
        let owners = (0..8u32)
            .filter(|s| *s != 3)
            .map(|s| (s, if s % 2 == 0 { "c0" } else { "c1" }.to_owned()))
            .collect();
        let snapshot = Snapshot {
            shards: 8,
            members: vec![member("c0"), member("c1")],
            owners,
        };
        let spread = spread(&names, &snapshot);
        assert_eq!(spread.values().sum::<i64>(), 1000);
        let orphans = names.iter().filter(|n| shard_of(n, 8) == 3).count() as i64;
        assert_eq!(spread["none"], orphans);
        assert!(spread["c0"] > 300 && spread["c1"] > 200, "{spread:?}");
    }
}
