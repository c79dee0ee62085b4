//! Shard ownership as the conductors report it: a checker that records any shard two conductors
//! held at the same moment, and a wait for balanced ownership. Used by the process cluster tests
//! and the container (cross-host) ones alike.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use xcat3_proto::pb;

use crate::{Auth, TestCluster};

/// Asks every conductor what it owns, over and over, and records any shard two of them held at
/// the same time. Conductors are named by id and gRPC URL ([`Checker::follow`]).
pub struct Checker {
    pub stop: tokio_util::sync::CancellationToken,
    pub violations: Arc<Mutex<Vec<String>>>,
    pub rounds: Arc<AtomicUsize>,
    addrs: Arc<Mutex<Vec<(String, String)>>>,
}

impl Checker {
    pub fn start() -> Checker {
        let c = Checker {
            stop: Default::default(),
            violations: Default::default(),
            rounds: Default::default(),
            addrs: Default::default(),
        };
        let (stop, violations, rounds, addrs) = (
            c.stop.clone(),
            c.violations.clone(),
            c.rounds.clone(),
            c.addrs.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let list = addrs.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // Two passes over the conductors, one after the other. Answers are not taken at the
                // same instant, so "X owns S" then "Y owns S" may just be a hand-over between the
                // two questions; but if X owns S in both passes and Y owns it in between (Y's
                // answer in pass 1 comes after X's in pass 1 and before X's in pass 2), both held
                // it at once.
                let mut passes: Vec<Vec<BTreeSet<u32>>> = Vec::new();
                for _ in 0..2 {
                    let mut pass = Vec::new();
                    for (_, addr) in &list {
                        pass.push(
                            TestCluster::owned_by(addr)
                                .await
                                .unwrap_or_default()
                                .into_iter()
                                .collect(),
                        );
                    }
                    passes.push(pass);
                }
                for i in 0..list.len() {
                    for j in i + 1..list.len() {
                        let x_then_y = passes[0][i]
                            .iter()
                            .filter(|s| passes[1][i].contains(s) && passes[0][j].contains(s));
                        let y_then_x = passes[0][j]
                            .iter()
                            .filter(|s| passes[1][j].contains(s) && passes[1][i].contains(s));
                        for shard in x_then_y.chain(y_then_x) {
                            violations
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("shard {shard}: {} and {}", list[i].0, list[j].0));
                        }
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        c
    }

    /// Checks these conductors (id, gRPC URL) from now on.
    pub fn follow(&self, conductors: &[(String, String)]) {
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = conductors.to_vec();
    }

    /// Stops checking; returns the rounds run and the violations seen.
    pub fn finish(&self) -> (usize, Vec<String>) {
        self.stop.cancel();
        (
            self.rounds.load(Ordering::Relaxed),
            self.violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

type Conductors =
    pb::conductor_service_client::ConductorServiceClient<InterceptedService<Channel, Auth>>;

/// Waits up to `limit` until exactly the conductors `ids` are live (as the api lists them) and
/// own every shard, each ⌊64/n⌋ or ⌈64/n⌉.
pub async fn wait_balanced(client: &Conductors, ids: &[&str], limit: Duration) {
    crate::wait_for(limit, "balanced ownership", || {
        let mut client = client.clone();
        async move {
            let list = client
                .list_conductors(pb::ListConductorsRequest {})
                .await
                .ok()?
                .into_inner();
            let mut live: Vec<&str> = list.conductors.iter().map(|c| c.id.as_str()).collect();
            live.sort();
            let n = ids.len() as u32;
            let fair = list.conductors.iter().all(|c| {
                c.shards.len() as u32 == 64 / n || c.shards.len() as u32 == 64_u32.div_ceil(n)
            });
            let total: usize = list.conductors.iter().map(|c| c.shards.len()).sum();
            (live == ids && fair && total == 64).then_some(())
        }
    })
    .await
    .unwrap();
}
