//! Shard ownership against a real etcd (Debian's etcd-server): balance when scaling up and down,
//! takeover after a crash within the lease, a member cut off from etcd stopping at once, and a
//! checker that never sees two owners of one shard.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use xcat3_coord::{Coordinator, EtcdConfig, EtcdCoordinator, Member, Membership, Owned, assign};
use xcat3_tests::{TcpProxy, TestEtcd, wait_for};

const SHARDS: u32 = 64;
const TTL: Duration = Duration::from_secs(3);

fn config(endpoint: &str) -> EtcdConfig {
    let mut c = EtcdConfig::new(vec![endpoint.to_owned()]);
    c.lease_ttl = TTL;
    c.shards = SHARDS;
    c.handover_grace = Duration::from_secs(20);
    c
}

struct Conductor {
    id: String,
    membership: Membership,
    shutdown: CancellationToken,
}

async fn conductor(endpoint: &str, id: &str) -> Conductor {
    let coord = EtcdCoordinator::connect(config(endpoint)).await.unwrap();
    let shutdown = CancellationToken::new();
    let member = Member {
        id: id.into(),
        host: "test".into(),
        addr: format!("http://{id}"),
    };
    let membership = coord.join(member, shutdown.clone()).await.unwrap();
    Conductor {
        id: id.into(),
        membership,
        shutdown,
    }
}

/// A conductor's id and its live view of what it owns.
type View = (String, tokio::sync::watch::Receiver<Owned>);

/// Watches every conductor's own view, all the time, and records any shard two of them claim at once.
#[derive(Clone, Default)]
struct Checker {
    views: Arc<Mutex<Vec<View>>>,
    violations: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Checker {
    fn start() -> Checker {
        let c = Checker::default();
        let me = c.clone();
        tokio::spawn(async move {
            while !me.stop.is_cancelled() {
                let views = me.views.lock().unwrap().clone();
                let mut seen: BTreeMap<u32, String> = BTreeMap::new();
                for (id, rx) in &views {
                    for shard in rx.borrow().keys() {
                        if let Some(other) = seen.insert(*shard, id.clone()) {
                            me.violations
                                .lock()
                                .unwrap()
                                .push(format!("shard {shard}: {other} and {id}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        c
    }

    fn watch(&self, c: &Conductor) {
        self.views
            .lock()
            .unwrap()
            .push((c.id.clone(), c.membership.watch()));
    }

    fn assert_clean(&self) {
        self.stop.cancel();
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "two owners seen: {:?}", &v[..v.len().min(10)]);
    }
}

fn counts(cs: &[&Conductor]) -> Vec<usize> {
    cs.iter().map(|c| c.membership.owned().len()).collect()
}

/// Waits until the given conductors own every shard, each ⌊S/n⌋ or ⌈S/n⌉, matching the target.
async fn wait_balanced(cs: &[&Conductor], limit: Duration) {
    let ids: Vec<String> = cs.iter().map(|c| c.id.clone()).collect();
    let target = assign::target(&ids, SHARDS);
    wait_for(limit, "balanced ownership", || async {
        let all: HashSet<u32> = cs
            .iter()
            .flat_map(|c| c.membership.owned().into_keys())
            .collect();
        let matches = cs
            .iter()
            .all(|c| c.membership.owned().keys().all(|s| target[s] == c.id));
        (all.len() == SHARDS as usize && matches).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", counts(cs)));
    let n = cs.len();
    for c in cs {
        let got = c.membership.owned().len() as u32;
        assert!(
            got == SHARDS / n as u32 || got == SHARDS.div_ceil(n as u32),
            "{}: {got}",
            c.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_1_4_2_stays_balanced_with_one_owner_per_shard() {
    let etcd = TestEtcd::start().await.unwrap();
    let checker = Checker::start();
    let c0 = conductor(&etcd.endpoint, "c0").await;
    checker.watch(&c0);
    wait_balanced(&[&c0], Duration::from_secs(10)).await;

    let mut more = Vec::new();
    for id in ["c1", "c2", "c3"] {
        let c = conductor(&etcd.endpoint, id).await;
        checker.watch(&c);
        more.push(c);
    }
    wait_balanced(
        &[&c0, &more[0], &more[1], &more[2]],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        counts(&[&c0, &more[0], &more[1], &more[2]]),
        [16, 16, 16, 16]
    );

    // Scale down: two conductors told to stop hand their shards over and leave.
    let c3 = more.pop().unwrap();
    let c2 = more.pop().unwrap();
    c3.shutdown.cancel();
    c2.shutdown.cancel();
    c3.membership.finished().await;
    c2.membership.finished().await;
    assert!(c2.membership.owned().is_empty() && c3.membership.owned().is_empty());
    wait_balanced(&[&c0, &more[0]], Duration::from_secs(15)).await;

    // The cluster view agrees: two members, every shard owned by one of them.
    let view = EtcdCoordinator::connect(config(&etcd.endpoint))
        .await
        .unwrap()
        .snapshot()
        .await
        .unwrap();
    let mut members: Vec<&str> = view.members.iter().map(|m| m.id.as_str()).collect();
    members.sort();
    assert_eq!(members, ["c0", "c1"]);
    assert_eq!(view.owners.len(), SHARDS as usize);
    checker.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_member_is_replaced_within_the_lease() {
    let etcd = TestEtcd::start().await.unwrap();
    let checker = Checker::start();
    let a = conductor(&etcd.endpoint, "a").await;
    let b = conductor(&etcd.endpoint, "b").await;
    checker.watch(&a);
    checker.watch(&b);
    wait_balanced(&[&a, &b], Duration::from_secs(15)).await;
    // A crashed process has no view any more; stop watching it before it goes.
    checker.views.lock().unwrap().retain(|(id, _)| id != "b");
    let crashed = Instant::now();
    b.membership.abort().await; // no hand-over, no lease revocation: its keys live until the TTL
    wait_for(
        TTL + Duration::from_secs(2),
        "takeover after a crash",
        || async { (a.membership.owned().len() == SHARDS as usize).then_some(()) },
    )
    .await
    .unwrap();
    let took = crashed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    // Its last keep-alive was at most TTL/3 before the crash, so the lease ends 2/3 TTL after it at the earliest.
    assert!(
        took >= TTL / 2,
        "taken over before the lease could expire: {took:?}"
    );
    checker.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cut_off_from_etcd_stops_at_once() {
    let etcd = TestEtcd::start().await.unwrap();
    let target = etcd.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let checker = Checker::start();
    let cut = conductor(&format!("http://{}", proxy.addr), "cut").await;
    let other = conductor(&etcd.endpoint, "other").await;
    checker.watch(&cut);
    checker.watch(&other);
    wait_balanced(&[&cut, &other], Duration::from_secs(15)).await;
    let lease = cut.membership.lease();
    use std::sync::atomic::Ordering::Relaxed;
    assert!(
        lease.last_alive_ms.load(Relaxed) > 0,
        "no keep-alive recorded"
    );
    assert_eq!(lease.losses.load(Relaxed), 0);

    let t0 = Instant::now();
    proxy.cut();
    wait_for(TTL, "the cut-off member drops its shards", || async {
        cut.membership.owned().is_empty().then_some(())
    })
    .await
    .unwrap();
    let dropped = t0.elapsed();
    assert_eq!(
        lease.losses.load(Relaxed),
        1,
        "the loss is counted for the metrics"
    );
    wait_for(
        TTL + Duration::from_secs(3),
        "the other member takes over",
        || async { (other.membership.owned().len() == SHARDS as usize).then_some(()) },
    )
    .await
    .unwrap();
    let taken = t0.elapsed();
    assert!(
        dropped < taken,
        "dropped at {dropped:?}, taken over at {taken:?}"
    );
    checker.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_over_waits_for_running_work() {
    let etcd = TestEtcd::start().await.unwrap();
    let a = conductor(&etcd.endpoint, "a").await;
    wait_balanced(&[&a], Duration::from_secs(10)).await;
    let moving = *assign::target(&["a".to_string(), "b".to_string()], SHARDS)
        .iter()
        .find(|(_, m)| *m == "b")
        .unwrap()
        .0;
    let guard = a
        .membership
        .acquire(moving)
        .await
        .expect("a owns the shard");
    let b = conductor(&etcd.endpoint, "b").await;
    // Everything else moves; the shard with running work stays with a until the work ends.
    wait_for(
        Duration::from_secs(10),
        "all other shards moved",
        || async { (b.membership.owned().len() == SHARDS as usize / 2 - 1).then_some(()) },
    )
    .await
    .unwrap();
    assert!(!b.membership.owned().contains_key(&moving));
    assert!(
        a.membership.acquire(moving).await.is_none(),
        "no new work on a shard being handed over"
    );
    drop(guard);
    wait_balanced(&[&a, &b], Duration::from_secs(10)).await;
    let token_b = b.membership.owned()[&moving];
    assert!(token_b.0 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_count_is_fixed_at_creation() {
    let etcd = TestEtcd::start().await.unwrap();
    EtcdCoordinator::connect(config(&etcd.endpoint))
        .await
        .unwrap();
    let mut other = config(&etcd.endpoint);
    other.shards = 32;
    let err = EtcdCoordinator::connect(other)
        .await
        .err()
        .expect("a different shard count is refused");
    assert!(err.to_string().contains("64 shards"), "{err}");
}

/// A new (or restored) etcd cluster starts its revisions from 1, below the epochs the database
/// holds: after `raise_above`, every token is above them, and tokens still grow claim by claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_start_above_the_database_on_a_new_etcd_cluster() {
    let etcd = TestEtcd::start().await.unwrap();
    let stored = 1_000_000;
    let coord = EtcdCoordinator::connect(config(&etcd.endpoint))
        .await
        .unwrap();
    coord.raise_above(stored).await.unwrap();
    // Already ahead: nothing changes.
    coord.raise_above(10).await.unwrap();
    let a = conductor(&etcd.endpoint, "a").await;
    wait_for(Duration::from_secs(15), "a owns every shard", || async {
        (a.membership.owned().len() == SHARDS as usize).then_some(())
    })
    .await
    .unwrap();
    let first = a.membership.owned();
    assert!(
        first.values().all(|t| t.0 > stored && t.0 < stored + 1_000),
        "{first:?}"
    );
    // A second member takes some shards over with larger tokens than the first owner had.
    let b = conductor(&etcd.endpoint, "b").await;
    wait_balanced(&[&a, &b], Duration::from_secs(15)).await;
    for (shard, token) in b.membership.owned() {
        assert!(
            token > first[&shard],
            "shard {shard}: {token:?} <= {:?}",
            first[&shard]
        );
    }
    // Raised again while they run (the database got ahead): the owners' tokens follow.
    coord.raise_above(5_000_000).await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "tokens above the new floor",
        || async {
            let all = [a.membership.owned(), b.membership.owned()];
            all.iter()
                .all(|o| !o.is_empty() && o.values().all(|t| t.0 > 5_000_000))
                .then_some(())
        },
    )
    .await
    .unwrap();
}
