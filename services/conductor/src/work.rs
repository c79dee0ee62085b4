//! Running an operation on many nodes: by shard, under the shard's guard, through the drivers
//! within the limits, then one fenced database write per shard, then the results.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{RwLock, mpsc};
use tracing::Instrument as _;
use xcat3_coord::{FencingToken, Membership, ShardId, shard_of};
use xcat3_store::{NodeUpdate, Store};
use xcat3_types::{ErrorCode, FieldError, Node, NodeOutcome, PowerState};

use crate::driver::{BootDevice, DriverError, Drivers, PowerAction};
use crate::limits::Limits;
use crate::tasks::KeyedTasks;

/// Shards whose claim is recorded in the database, with the token recorded.
pub type Claimed = Arc<RwLock<BTreeMap<ShardId, FencingToken>>>;

/// An operation on nodes.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    Power(PowerAction),
    /// `None`: read the boot device.
    BootDevice(Option<BootDevice>),
}

/// What an operation did to one node.
enum Done {
    Power(PowerState),
    BootDevice(BootDevice),
}

/// Runs operations on the nodes this conductor owns.
pub struct Executor {
    pub id: String,
    pub store: Store,
    pub membership: Membership,
    pub claimed: Claimed,
    pub drivers: Drivers,
    pub limits: Limits,
    pub shards: u32,
    pub metrics: crate::metrics::ConductorMetrics,
    /// Nodes whose last power status read failed and was recorded as an event: the next
    /// failures are not recorded again until a read succeeds (a dead BMC polled by the power
    /// sync every minute adds one event, not 1,440 a day).
    pub failing_status: std::sync::Mutex<std::collections::HashSet<String>>,
}

pub fn ok(name: &str, what: impl Into<std::borrow::Cow<'static, str>>) -> NodeOutcome {
    NodeOutcome::ok(name, what)
}

pub fn err(name: &str, code: ErrorCode, field: &str, reason: impl Into<String>) -> NodeOutcome {
    NodeOutcome::err(name, FieldError::new(code, field, reason))
}

impl Executor {
    /// Runs `op` on `names`, sending results shard by shard; exactly one result per name.
    pub async fn run(
        self: &Arc<Self>,
        names: Vec<String>,
        op: Operation,
        tx: mpsc::Sender<Vec<NodeOutcome>>,
    ) {
        self.by_shard(names, tx, move |me, shard, token, names| async move {
            me.run_owned(shard, token, &names, op).await
        })
        .await
    }

    /// Runs `work` for the names of each shard, in parallel, under the shard's guard and only if
    /// this conductor's claim on it is recorded (other names get "not owned; retry"), sending
    /// each shard's results to `tx`.
    pub(crate) async fn by_shard<F, Fut>(
        self: &Arc<Self>,
        names: Vec<String>,
        tx: mpsc::Sender<Vec<NodeOutcome>>,
        work: F,
    ) where
        F: Fn(Arc<Self>, ShardId, FencingToken, Vec<String>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = Vec<NodeOutcome>> + Send + 'static,
    {
        let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
        for name in names {
            by_shard
                .entry(shard_of(&name, self.shards))
                .or_default()
                .push(name);
        }
        let mut shards = KeyedTasks::new();
        for (shard, names) in by_shard {
            let me = self.clone();
            let work = work.clone();
            let task = {
                let names = names.clone();
                async move { me.on_shard(shard, names, work).await }
            };
            shards.spawn(names, task.instrument(tracing::Span::current()));
        }
        while let Some(joined) = shards.next().await {
            let results = match joined {
                Ok(results) => results,
                // A task that panicked still answers for each of its nodes.
                Err((names, e)) => names.iter().map(|n| panicked(n, &e)).collect(),
            };
            let _ = tx.send(results).await;
        }
    }

    async fn on_shard<F, Fut>(
        self: &Arc<Self>,
        shard: ShardId,
        names: Vec<String>,
        work: F,
    ) -> Vec<NodeOutcome>
    where
        F: Fn(Arc<Self>, ShardId, FencingToken, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Vec<NodeOutcome>>,
    {
        let moved = |why: &str| -> Vec<NodeOutcome> {
            names
                .iter()
                .map(|n| {
                    err(
                        n,
                        ErrorCode::NotOwner,
                        "",
                        format!("shard {shard} {why} conductor {}; retry", self.id),
                    )
                })
                .collect()
        };
        let Some(guard) = self.membership.acquire(shard).await else {
            return moved("is not owned by");
        };
        if self.claimed.read().await.get(&shard) != Some(&guard.token) {
            return moved("is still being taken over by");
        }
        let count = names.len() as i64;
        self.metrics.in_flight.inc_by(count);
        let results = work(self.clone(), shard, guard.token, names).await;
        self.metrics.in_flight.dec_by(count);
        drop(guard);
        results
    }

    async fn run_owned(
        self: &Arc<Self>,
        shard: ShardId,
        token: FencingToken,
        names: &[String],
        op: Operation,
    ) -> Vec<NodeOutcome> {
        let records = match self.store.get_nodes(names).await {
            Ok(r) => r,
            Err(e) => {
                return names
                    .iter()
                    .map(|n| err(n, ErrorCode::Unavailable, "", format!("database: {e}")))
                    .collect();
            }
        };
        let mut nodes: HashMap<String, Node> = records
            .into_iter()
            .map(|r| (r.node.name.clone(), r.node))
            .collect();
        let mut calls = KeyedTasks::new();
        let mut results: Vec<NodeOutcome> = Vec::with_capacity(names.len());
        for name in names {
            let Some(node) = nodes.remove(name) else {
                results.push(err(name, ErrorCode::NotFound, "name", "no such node"));
                continue;
            };
            let me = self.clone();
            calls.spawn(name.clone(), async move {
                let started = std::time::Instant::now();
                let endpoint = Drivers::endpoint(&node);
                let outcome = me
                    .limits
                    .run(node.mgt, endpoint.as_deref(), async {
                        match op {
                            Operation::Power(action) => {
                                me.drivers.power(&node, action).await.map(Done::Power)
                            }
                            Operation::BootDevice(target) => me
                                .drivers
                                .boot_device(&node, target)
                                .await
                                .map(Done::BootDevice),
                        }
                    })
                    .await;
                me.observe(&node, op, outcome.is_ok(), started.elapsed());
                (node, outcome)
            });
        }
        let mut updates = Vec::new();
        let mut done = Vec::new();
        while let Some(joined) = calls.next().await {
            let (node, outcome) = match joined {
                Ok(answer) => answer,
                Err((name, e)) => {
                    results.push(panicked(&name, &e));
                    continue;
                }
            };
            let reported = self.status_failure_reported(&node.name, op, &outcome);
            let (update, result) = record(&node, op, outcome, reported);
            updates.extend(update);
            done.push(result);
        }
        match self
            .store
            .conductor_write(shard, token.0, &self.id, &updates)
            .await
        {
            Ok(()) => results.extend(done),
            Err(e @ xcat3_store::Error::Fenced { .. }) => {
                tracing::warn!(shard, error = %e, "fenced: another conductor owns the shard now");
                results.extend(done.into_iter().map(|r| {
                    err(
                        &r.name,
                        ErrorCode::Aborted,
                        "",
                        format!("shard {shard} moved to another conductor while this ran; the result was not recorded"),
                    )
                }));
            }
            Err(e) => results.extend(done.into_iter().map(|r| {
                err(
                    &r.name,
                    ErrorCode::Unavailable,
                    "",
                    format!("recording the result: {e}"),
                )
            })),
        }
        results
    }
}

impl Executor {
    /// Whether this status failure was recorded already (and notes the ones recorded now).
    fn status_failure_reported(
        &self,
        name: &str,
        op: Operation,
        outcome: &Result<Done, DriverError>,
    ) -> bool {
        if !matches!(op, Operation::Power(PowerAction::Status)) {
            return false;
        }
        let mut failing = self
            .failing_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if outcome.is_ok() {
            failing.remove(name);
            false
        } else {
            !failing.insert(name.to_owned())
        }
    }

    /// Counts and times one driver operation.
    fn observe(&self, node: &Node, op: Operation, ok: bool, took: std::time::Duration) {
        use crate::metrics::{DriverLabels, OperationLabels};
        let driver = node.mgt.map_or("none", |m| m.as_str()).to_owned();
        let operation = match op {
            Operation::Power(a) => format!("power-{a}"),
            Operation::BootDevice(Some(_)) => "bootdev-set".to_owned(),
            Operation::BootDevice(None) => "bootdev-status".to_owned(),
        };
        let result = if ok { "ok" } else { "error" }.to_owned();
        self.metrics
            .durations
            .get_or_create(&DriverLabels {
                driver: driver.clone(),
                operation: operation.clone(),
            })
            .observe(took.as_secs_f64());
        self.metrics
            .operations
            .get_or_create(&OperationLabels {
                driver,
                operation,
                result,
            })
            .inc();
    }
}

/// The result for a node whose task failed without answering (a panic, or cancelled at shutdown).
pub(crate) fn panicked(name: &str, e: &tokio::task::JoinError) -> NodeOutcome {
    tracing::error!(node = name, error = %e, "an operation's task failed");
    let why = if e.is_panic() {
        "the operation failed unexpectedly (a bug: see the conductor's log)"
    } else {
        "the operation was cancelled"
    };
    err(name, ErrorCode::Internal, "", why)
}

/// The database update and the result for one node.
fn record(
    node: &Node,
    op: Operation,
    outcome: Result<Done, DriverError>,
    already_reported: bool,
) -> (Option<NodeUpdate>, NodeOutcome) {
    let name = &node.name;
    let event = |kind: &str, message: String| Some((kind.to_owned(), message));
    match (op, outcome) {
        (Operation::Power(action), Ok(Done::Power(state))) => {
            let changed = state != node.power_state;
            let event = match action {
                PowerAction::Status if changed => event(
                    "power-state",
                    format!("power is {state} (was {})", node.power_state),
                ),
                PowerAction::Status => None,
                _ => event("power", format!("power {action}: now {state}")),
            };
            let update = (changed || event.is_some()).then(|| NodeUpdate {
                node: name.clone(),
                power_state: changed.then_some(state),
                event,
            });
            (update, ok(name, state.as_str()))
        }
        (Operation::BootDevice(target), Ok(Done::BootDevice(dev))) => {
            let update = target.map(|_| NodeUpdate {
                node: name.clone(),
                power_state: None,
                event: event("boot-device", format!("next boot from {}", dev.as_str())),
            });
            (update, ok(name, dev.as_str()))
        }
        (_, Ok(_)) => (
            None,
            err(
                name,
                ErrorCode::Internal,
                "",
                "driver answered another operation",
            ),
        ),
        (op, Err(e)) => {
            let (code, field) = match &e {
                DriverError::Config { field, .. } => (ErrorCode::FailedPrecondition, field.clone()),
                DriverError::Remote(_) | DriverError::Unreachable(_) => {
                    (ErrorCode::Unavailable, String::new())
                }
            };
            let what = match op {
                Operation::Power(a) => format!("power {a}"),
                Operation::BootDevice(_) => "bootdev".to_owned(),
            };
            let reason = match &e {
                DriverError::Config { reason, .. } => reason.clone(),
                DriverError::Remote(m) | DriverError::Unreachable(m) => m.clone(),
            };
            // A failed status read makes the power state unknown; it is an event once per run of
            // failures. Failed actions are always events.
            let update = match op {
                Operation::Power(PowerAction::Status) => {
                    let changed = node.power_state != PowerState::Unknown;
                    let event = (!already_reported)
                        .then(|| event("error", format!("{what} failed: {e}")))
                        .flatten();
                    (changed || event.is_some()).then(|| NodeUpdate {
                        node: name.clone(),
                        power_state: changed.then_some(PowerState::Unknown),
                        event,
                    })
                }
                _ => Some(NodeUpdate {
                    node: name.clone(),
                    power_state: None,
                    event: event("error", format!("{what} failed: {e}")),
                }),
            };
            (update, err(name, code, &field, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;
    use xcat3_coord::{Coordinator, LocalCoordinator, Member};
    use xcat3_types::Mgt;

    const SHARDS: u32 = 4;

    /// An executor of one process owning every shard, on a SQLite store holding `nodes`; no
    /// shard's claim is recorded yet. A node with `mgt=ipmi` and no BMC address fails in the
    /// driver before any I/O, which is all the executor needs to record something.
    async fn executor(dir: &tempfile::TempDir, nodes: &[&str]) -> Arc<Executor> {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let nodes: Vec<Node> = nodes
            .iter()
            .map(|name| {
                let mut n = Node::new(*name);
                n.mgt = Some(Mgt::Ipmi);
                n
            })
            .collect();
        store.create_nodes(&nodes).await.unwrap();
        let member = Member {
            id: "c1".into(),
            host: "here".into(),
            addr: "http://127.0.0.1:1".into(),
        };
        let membership = LocalCoordinator::new(SHARDS)
            .join(member, CancellationToken::new())
            .await
            .unwrap();
        let metrics = xcat3_runtime::metrics::Metrics::new();
        Arc::new(Executor {
            id: "c1".into(),
            store,
            membership,
            claimed: Claimed::default(),
            drivers: Drivers {
                ipmi: Default::default(),
                redfish: Default::default(),
                kvm: Default::default(),
            },
            limits: Limits::new(Default::default()),
            shards: SHARDS,
            metrics: crate::metrics::ConductorMetrics::register(&metrics),
            failing_status: Default::default(),
        })
    }

    async fn power_on(ex: &Arc<Executor>, names: &[&str]) -> Vec<NodeOutcome> {
        let (tx, mut rx) = mpsc::channel(16);
        let names = names.iter().map(|n| (*n).to_owned()).collect();
        ex.run(names, Operation::Power(PowerAction::On), tx).await;
        let mut all = Vec::new();
        while let Some(batch) = rx.recv().await {
            all.extend(batch);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn code(o: &NodeOutcome) -> Option<ErrorCode> {
        o.result.as_ref().err().map(|e| e.code)
    }

    async fn events(ex: &Executor, name: &str) -> Vec<String> {
        let events = ex.store.node_events(&[name.into()], 10).await.unwrap();
        events.into_iter().map(|e| e.message).collect()
    }

    #[tokio::test]
    async fn work_runs_only_on_recorded_claims_and_fenced_results_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ex = executor(&dir, &["n1"]).await;
        let shard = shard_of("n1", SHARDS);
        let token = *ex.membership.owned().get(&shard).unwrap();

        // Owned, but the claim is not in the database yet: nothing runs, the api retries.
        let r = power_on(&ex, &["n1", "zz"]).await;
        assert_eq!(r.len(), 2);
        assert!(
            r.iter().all(|o| code(o) == Some(ErrorCode::NotOwner)),
            "{r:?}"
        );
        assert!(events(&ex, "n1").await.is_empty());

        // Claimed: the driver runs, its failure is the node's result and an event.
        for s in 0..SHARDS {
            assert!(ex.store.claim_shard(s, token.0, "c1").await.unwrap());
            ex.claimed.write().await.insert(s, token);
        }
        let r = power_on(&ex, &["n1", "zz"]).await;
        let err = r[0].result.as_ref().unwrap_err();
        assert_eq!(
            (err.code, err.field.as_str()),
            (ErrorCode::FailedPrecondition, "control.bmc_address")
        );
        assert_eq!(code(&r[1]), Some(ErrorCode::NotFound));
        assert_eq!(events(&ex, "n1").await.len(), 1);

        // Another conductor claims the shard with a newer token while this one still thinks it
        // owns it: the work runs, but its write is fenced and the node hears so.
        assert!(
            ex.store
                .claim_shard(shard, token.0 + 1, "c2")
                .await
                .unwrap()
        );
        let r = power_on(&ex, &["n1"]).await;
        let err = r[0].result.as_ref().unwrap_err();
        assert_eq!(err.code, ErrorCode::Aborted);
        assert!(err.reason.contains("moved to another conductor"), "{err}");
        assert_eq!(events(&ex, "n1").await.len(), 1, "nothing recorded");
    }

    fn node(state: PowerState) -> Node {
        let mut n = Node::new("n1");
        n.power_state = state;
        n
    }

    #[test]
    fn status_reads_record_only_changes_and_the_first_failure() {
        let status = Operation::Power(PowerAction::Status);
        let on = || Ok(Done::Power(PowerState::On));
        // Unchanged: nothing to write.
        let (update, result) = record(&node(PowerState::On), status, on(), false);
        assert!(update.is_none());
        assert_eq!(result.result.unwrap(), "on");
        // Changed: the new state and an event.
        let (update, _) = record(&node(PowerState::Off), status, on(), false);
        let update = update.unwrap();
        assert_eq!(update.power_state, Some(PowerState::On));
        assert_eq!(update.event.unwrap().0, "power-state");
        // A failed read makes the state unknown, with an event the first time only.
        let failed = || Err(DriverError::Unreachable("no answer".into()));
        let (update, result) = record(&node(PowerState::On), status, failed(), false);
        let update = update.unwrap();
        assert_eq!(update.power_state, Some(PowerState::Unknown));
        assert!(update.event.is_some());
        assert_eq!(code(&result), Some(ErrorCode::Unavailable));
        let (update, _) = record(&node(PowerState::Unknown), status, failed(), true);
        assert!(update.is_none(), "already unknown and reported");
        // Actions are always recorded, failed or not.
        let off = Operation::Power(PowerAction::Off);
        let (update, _) = record(
            &node(PowerState::Off),
            off,
            Ok(Done::Power(PowerState::Off)),
            false,
        );
        assert_eq!(update.unwrap().event.unwrap().0, "power");
        let (update, _) = record(&node(PowerState::On), off, failed(), true);
        assert_eq!(update.unwrap().event.unwrap().0, "error");
    }
}
