//! Sending a many-node operation to the conductors that own the nodes' shards, in parallel, and
//! merging exactly one result per node.
//!
//! Names are grouped by the owner of their shard (read from the coordinator), one call goes to each
//! conductor, and results are forwarded as they stream in. A node whose shard has no live owner gets
//! a clear error. If a conductor fails mid-call (crash, network cut) or answers that ownership moved,
//! its unanswered nodes are sent again to the new owner once the shard has been taken over, for
//! operations that are safe to repeat (`status`, `on`, `off`, boot-device changes); for the others
//! (`reset`, `cycle`, `boot`) they get an error saying the action may or may not have run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt as _};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument as _;
use xcat3_coord::{Coordinator, Snapshot, shard_of};
use xcat3_proto::convert::{
    boot_device_to_internal, outcome_from_internal, power_action_to_internal,
};
use xcat3_proto::internal;
use xcat3_runtime::auth::Bearer;
use xcat3_types::{BootDevice, ErrorCode, NodeOutcome, PowerAction, Secret};

/// What to ask the conductors.
#[derive(Debug, Clone)]
pub enum Op {
    /// Action, and whether to answer "accepted" without waiting for the BMCs.
    Power(PowerAction, bool),
    /// The device to set (`None`: read it), and whether to answer "accepted" at once.
    BootDevice(Option<BootDevice>, bool),
    /// The names are filled in per conductor.
    Deploy(internal::DeployRequest),
    Undeploy,
}

impl Op {
    /// Whether the nodes of a conductor that failed mid-call may be sent to the new owner: the
    /// operation may have run already, so only if running it twice does no harm.
    fn repeatable(&self) -> bool {
        match self {
            Op::Power(a, _) => a.is_idempotent(),
            Op::BootDevice(..) | Op::Undeploy => true,
            // Nodes a failed conductor may have moved to deploying would be refused again.
            Op::Deploy(_) => false,
        }
    }
}

/// Outcomes a conductor streams back, batch by batch; an error item means the call broke.
pub type Outcomes = Pin<Box<dyn Stream<Item = Result<Vec<NodeOutcome>, String>> + Send>>;

/// Why a call to a conductor gave no stream.
#[derive(Debug)]
pub enum CallError {
    /// Nothing was sent (no client could be made): the action did not run there.
    NotSent(String),
    /// The call was refused or broke before answering: the action may or may not have run.
    Failed(String),
}

/// How the dispatcher reaches a conductor: gRPC ([`GrpcLink`]), or a scripted stand-in in the
/// unit tests of the dispatch rules.
#[tonic::async_trait]
pub trait ConductorLink: Send + Sync + 'static {
    async fn call(&self, addr: &str, names: Vec<String>, op: &Op) -> Result<Outcomes, CallError>;
}

pub(crate) type Client =
    internal::conductor_client::ConductorClient<InterceptedService<Channel, Bearer>>;

/// Conductors over gRPC, one lazily connected client per address.
pub struct GrpcLink {
    auth: Bearer,
    clients: Mutex<HashMap<String, Client>>,
    /// With a CA, only conductors that prove their name over TLS are called (and get the token).
    tls: xcat3_runtime::tls::Tls,
    /// The name conductors' certificates must carry, if not the host of their address.
    tls_name: Option<String>,
}

impl GrpcLink {
    pub(crate) fn client(&self, addr: &str) -> Result<Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .tls
            .endpoint(addr, self.tls_name.as_deref())
            .map_err(|e| format!("conductor {addr}: {e:#}"))?
            .connect_timeout(Duration::from_secs(3))
            .connect_lazy();
        let client = internal::conductor_client::ConductorClient::new(InterceptedService::new(
            channel,
            self.auth.clone(),
        ))
        .max_decoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES);
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }
}

#[tonic::async_trait]
impl ConductorLink for GrpcLink {
    async fn call(&self, addr: &str, names: Vec<String>, op: &Op) -> Result<Outcomes, CallError> {
        let mut client = self.client(addr).map_err(CallError::NotSent)?;
        let started = match op {
            Op::Power(action, no_wait) => {
                let req = internal::PowerRequest {
                    names,
                    action: power_action_to_internal(*action).into(),
                    no_wait: *no_wait,
                };
                client.power(req).await
            }
            Op::BootDevice(device, no_wait) => {
                let req = internal::BootDeviceRequest {
                    names,
                    device: boot_device_to_internal(*device).into(),
                    no_wait: *no_wait,
                };
                client.boot_device(req).await
            }
            Op::Deploy(req) => {
                let req = internal::DeployRequest {
                    names,
                    ..req.clone()
                };
                client.deploy(req).await
            }
            Op::Undeploy => client.undeploy(internal::UndeployRequest { names }).await,
        };
        let stream = started
            .map_err(|status| CallError::Failed(format!("{addr}: {}", status.message())))?
            .into_inner();
        let addr = addr.to_owned();
        Ok(Box::pin(stream.map(move |msg| {
            match msg {
                Ok(msg) => Ok(msg
                    .outcomes
                    .into_iter()
                    .map(outcome_from_internal)
                    .collect()),
                Err(status) => Err(format!("conductor {addr} failed: {}", status.message())),
            }
        })))
    }
}

/// The api's link to the conductors.
pub struct Dispatcher {
    coordinator: Arc<dyn Coordinator>,
    grpc: Arc<GrpcLink>,
    link: Arc<dyn ConductorLink>,
    /// How long to wait for a shard without a live owner to be taken over before giving up.
    takeover_wait: Duration,
}

fn error(name: &str, code: ErrorCode, reason: impl Into<String>) -> NodeOutcome {
    NodeOutcome::fail(name, code, reason)
}

impl Dispatcher {
    /// `token` is sent to the conductors (they accept the admin token), only over TLS to a
    /// verified conductor when `tls` has a CA.
    pub fn new(
        coordinator: Arc<dyn Coordinator>,
        token: Option<&Secret>,
        takeover_wait: Duration,
        tls: xcat3_runtime::tls::Tls,
        tls_name: Option<String>,
    ) -> Self {
        let grpc = Arc::new(GrpcLink {
            auth: Bearer::new(token),
            clients: Mutex::default(),
            tls,
            tls_name,
        });
        Self {
            coordinator,
            link: grpc.clone(),
            grpc,
            takeover_wait,
        }
    }

    /// A dispatcher that reaches the conductors through `link` instead of gRPC.
    pub fn with_link(
        coordinator: Arc<dyn Coordinator>,
        link: Arc<dyn ConductorLink>,
        takeover_wait: Duration,
    ) -> Self {
        let mut d = Self::new(coordinator, None, takeover_wait, Default::default(), None);
        d.link = link;
        d
    }

    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

    /// The gRPC client of the conductor at `addr` (for its status).
    pub(crate) fn client(&self, addr: &str) -> Result<Client, String> {
        self.grpc.client(addr)
    }

    /// Runs `op` on `names` (existing nodes), sending one result per name to `tx`.
    pub async fn run(&self, names: Vec<String>, op: Op, tx: mpsc::Sender<Vec<NodeOutcome>>) {
        let shards = self.coordinator.shards();
        let mut pending: Vec<String> = names;
        // Conductors whose call failed in this operation: presumed dead until their shards move.
        let mut failed: HashSet<String> = HashSet::new();
        let mut attempt = 0;
        let started = tokio::time::Instant::now();
        while !pending.is_empty() {
            attempt += 1;
            if attempt > 1 {
                // Ownership is moving (a conductor joined, left, or is still recording its
                // claims): give it a moment before asking again, 100 ms doubling to 800 ms.
                let backoff = 100u64 << (attempt - 2).min(3);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            // A conductor that refused nodes (ownership moved) did nothing: ask the new owner,
            // for as long as a takeover may take. One that failed mid-call may have acted: only
            // repeatable operations go again.
            let retry_moved = attempt < 3 || started.elapsed() < self.takeover_wait;
            let retry_failed = attempt == 1 && op.repeatable();
            let snapshot = match self.owned_snapshot(&pending, shards, &failed).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx
                        .send(
                            pending
                                .iter()
                                .map(|n| error(n, ErrorCode::Unavailable, e.clone()))
                                .collect(),
                        )
                        .await;
                    return;
                }
            };
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut orphans = Vec::new();
            for name in pending.drain(..) {
                let shard = shard_of(&name, shards);
                match snapshot.owner(shard) {
                    Some(m) => groups.entry(m.addr.clone()).or_default().push(name),
                    None => orphans.push(error(
                        &name,
                        ErrorCode::Unavailable,
                        format!("no live conductor owns shard {shard}"),
                    )),
                }
            }
            if !orphans.is_empty() {
                let _ = tx.send(orphans).await;
            }
            // The calls answer through `answers`, so that the names a call never answered (its
            // task panicked) still get a result here.
            let mut unanswered: HashSet<String> = groups.values().flatten().cloned().collect();
            let (answers_tx, mut answers) = mpsc::channel(16);
            let mut calls = JoinSet::new();
            for (addr, group) in groups {
                let link = self.link.clone();
                let op = op.clone();
                let answers_tx = answers_tx.clone();
                calls.spawn(
                    async move {
                        let (retry, broke) = call(
                            link.as_ref(),
                            addr.clone(),
                            group,
                            op,
                            answers_tx,
                            retry_moved,
                            retry_failed,
                        )
                        .await;
                        (addr, retry, broke)
                    }
                    .instrument(tracing::Span::current()),
                );
            }
            drop(answers_tx);
            let mut failed_task = None;
            loop {
                tokio::select! {
                    Some(results) = answers.recv() => {
                        for r in &results {
                            unanswered.remove(&r.name);
                        }
                        let _ = tx.send(results).await;
                    }
                    Some(joined) = calls.join_next() => match joined {
                        Ok((addr, retry, broke)) => {
                            for name in &retry {
                                unanswered.remove(name);
                            }
                            pending.extend(retry);
                            if broke {
                                failed.insert(addr);
                            }
                        }
                        Err(e) => failed_task = Some(e.to_string()),
                    },
                    else => break,
                }
            }
            if let Some(e) = failed_task
                && !unanswered.is_empty()
            {
                tracing::error!(error = %e, nodes = unanswered.len(), "a dispatch task failed");
                let results = unanswered
                    .iter()
                    .map(|n| {
                        error(
                            n,
                            ErrorCode::Internal,
                            format!("the api's call failed unexpectedly: {e}"),
                        )
                    })
                    .collect();
                let _ = tx.send(results).await;
            }
        }
    }

    /// The ownership snapshot. While conductors are running but some needed shard has no owner
    /// (a conductor just died or joined and the shards are moving), or is still owned by a
    /// conductor in `failed` (its call broke: it died, or is cut off, and its lease has not expired
    /// yet), waits for new owners, at most `takeover_wait`; with no conductor at all, answers at
    /// once.
    async fn owned_snapshot(
        &self,
        names: &[String],
        shards: u32,
        failed: &HashSet<String>,
    ) -> Result<Snapshot, String> {
        let needed: HashSet<u32> = names.iter().map(|n| shard_of(n, shards)).collect();
        let deadline = tokio::time::Instant::now() + self.takeover_wait;
        loop {
            let snapshot = self
                .coordinator
                .snapshot()
                .await
                .map_err(|e| format!("cannot read shard ownership: {e}"))?;
            let complete = needed.iter().all(|s| {
                snapshot
                    .owner(*s)
                    .is_some_and(|m| !failed.contains(&m.addr))
            });
            if complete || snapshot.members.is_empty() || tokio::time::Instant::now() > deadline {
                return Ok(snapshot);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One call to one conductor. Returns the names to try again elsewhere, and whether the call
/// broke (the conductor failed or could not be reached).
async fn call(
    link: &dyn ConductorLink,
    addr: String,
    names: Vec<String>,
    op: Op,
    tx: mpsc::Sender<Vec<NodeOutcome>>,
    retry_moved: bool,
    retry_failed: bool,
) -> (Vec<String>, bool) {
    let mut unanswered: HashSet<String> = names.iter().cloned().collect();
    let mut retry = Vec::new();
    let failure = match link.call(&addr, names, &op).await {
        Err(CallError::NotSent(e)) => {
            // Nothing was sent: the action did not run there.
            let reason = format!("{e}; not called, the action did not run");
            let mut results: Vec<NodeOutcome> = unanswered
                .drain()
                .map(|n| error(&n, ErrorCode::Unavailable, reason.clone()))
                .collect();
            results.sort_by(|a, b| a.name.cmp(&b.name));
            let _ = tx.send(results).await;
            return (Vec::new(), false);
        }
        Err(CallError::Failed(why)) => Some(why),
        Ok(mut stream) => loop {
            match stream.next().await {
                Some(Ok(outcomes)) => {
                    let mut forward = Vec::with_capacity(outcomes.len());
                    for o in outcomes {
                        if !unanswered.remove(&o.name) {
                            continue; // never two results for one node
                        }
                        if o.is_not_owner() && retry_moved {
                            retry.push(o.name);
                        } else {
                            forward.push(o);
                        }
                    }
                    if !forward.is_empty() {
                        let _ = tx.send(forward).await;
                    }
                }
                Some(Err(why)) => break Some(why),
                None => break None,
            }
        },
    };
    let mut rest: Vec<String> = unanswered.into_iter().collect();
    rest.sort();
    let broke = failure.is_some();
    match failure {
        Some(why) if retry_failed => {
            tracing::warn!(conductor = %addr, nodes = rest.len(), reason = %why, "conductor call failed; retrying on the new owners");
            retry.extend(rest);
        }
        Some(why) => {
            let msg = format!("{why}; the action may or may not have run");
            let _ = tx
                .send(
                    rest.iter()
                        .map(|n| error(n, ErrorCode::Unavailable, msg.clone()))
                        .collect(),
                )
                .await;
        }
        None if !rest.is_empty() => {
            let _ = tx
                .send(
                    rest.iter()
                        .map(|n| {
                            error(
                                n,
                                ErrorCode::Internal,
                                format!("conductor {addr} gave no result"),
                            )
                        })
                        .collect(),
                )
                .await;
        }
        None => {}
    }
    (retry, broke)
}

#[cfg(test)]
mod tests {
    //! The dispatch rules on domain types: a scripted ownership table and scripted conductors
    //! stand in for etcd and the conductor processes (which `tests/e2e/cluster.rs` runs for real).

    use super::*;
    use xcat3_coord::{BoxFuture, Member, Membership};

    const SHARDS: u32 = 4;

    /// Who owns every shard, changed by the scripted conductors as a takeover would.
    struct Owners(Mutex<Snapshot>);

    impl Owners {
        fn all_to(&self, members: &[&str], owner: &str) {
            let mut s = self.0.lock().unwrap();
            *s = Snapshot {
                shards: SHARDS,
                members: members
                    .iter()
                    .map(|id| Member {
                        id: (*id).into(),
                        host: (*id).into(),
                        addr: (*id).into(),
                    })
                    .collect(),
                owners: (0..SHARDS).map(|s| (s, owner.to_owned())).collect(),
            };
        }
    }

    impl Coordinator for Owners {
        fn shards(&self) -> u32 {
            SHARDS
        }
        fn join(
            &self,
            _: Member,
            _: tokio_util::sync::CancellationToken,
        ) -> BoxFuture<'_, xcat3_coord::Result<Membership>> {
            Box::pin(async { Err(xcat3_coord::Error::Config("no joining here".into())) })
        }
        fn snapshot(&self) -> BoxFuture<'_, xcat3_coord::Result<Snapshot>> {
            let s = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(s) })
        }
        fn raise_above(&self, _: i64) -> BoxFuture<'_, xcat3_coord::Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// What a scripted conductor answers to one call: batches, or a broken call.
    type Answer = Result<Vec<Result<Vec<NodeOutcome>, String>>, CallError>;

    /// Scripted conductors: `answer(addr, names)` decides; every call is recorded.
    struct Script<F> {
        answer: F,
        calls: Mutex<Vec<(String, Vec<String>)>>,
    }

    #[tonic::async_trait]
    impl<F: Fn(&str, &[String]) -> Answer + Send + Sync + 'static> ConductorLink for Script<F> {
        async fn call(
            &self,
            addr: &str,
            mut names: Vec<String>,
            _: &Op,
        ) -> Result<Outcomes, CallError> {
            names.sort();
            self.calls
                .lock()
                .unwrap()
                .push((addr.to_owned(), names.clone()));
            let batches = (self.answer)(addr, &names)?;
            Ok(Box::pin(tokio_stream::iter(batches)))
        }
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    /// Runs `op` on `names`; returns every outcome by name (panics on a second one) and the calls.
    async fn run<F>(
        owners: Arc<Owners>,
        answer: F,
        names: Vec<String>,
        op: Op,
        takeover_wait: Duration,
    ) -> (BTreeMap<String, NodeOutcome>, Vec<(String, Vec<String>)>)
    where
        F: Fn(&str, &[String]) -> Answer + Send + Sync + 'static,
    {
        let script = Arc::new(Script {
            answer,
            calls: Mutex::default(),
        });
        let d = Dispatcher::with_link(owners, script.clone(), takeover_wait);
        let (tx, mut rx) = mpsc::channel(16);
        let count = names.len();
        d.run(names, op, tx).await;
        let mut got = BTreeMap::new();
        while let Some(batch) = rx.recv().await {
            for o in batch {
                let name = o.name.clone();
                assert!(
                    got.insert(name.clone(), o).is_none(),
                    "{name} answered twice"
                );
            }
        }
        assert_eq!(got.len(), count, "one outcome per node: {got:?}");
        let calls = script.calls.lock().unwrap().clone();
        (got, calls)
    }

    fn status() -> Op {
        Op::Power(PowerAction::Status, false)
    }

    fn all_ok(names: &[String], what: &'static str) -> Vec<NodeOutcome> {
        names
            .iter()
            .map(|n| NodeOutcome::ok(n.clone(), what))
            .collect()
    }

    #[tokio::test]
    async fn nodes_a_conductor_no_longer_owns_go_to_the_new_owner() {
        let owners = Arc::new(Owners(Mutex::default()));
        owners.all_to(&["a", "b"], "a");
        let o = owners.clone();
        let (got, calls) = run(
            owners,
            move |addr, names| {
                if addr == "a" {
                    // a lost its shards to b: it did nothing.
                    o.all_to(&["a", "b"], "b");
                    let moved = names
                        .iter()
                        .map(|n| NodeOutcome::fail(n.clone(), ErrorCode::NotOwner, "moved"))
                        .collect();
                    Ok(vec![Ok(moved)])
                } else {
                    Ok(vec![Ok(all_ok(names, "on"))])
                }
            },
            names(20),
            status(),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            got.values().all(|o| o.result.as_deref() == Ok("on")),
            "{got:?}"
        );
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].0.as_str(), calls[1].0.as_str()), ("a", "b"));
        assert_eq!(calls[1].1.len(), 20);
    }

    #[tokio::test]
    async fn a_conductor_that_fails_midway_has_only_its_unanswered_nodes_repeated_if_safe() {
        for (op, repeated) in [
            (status(), true),
            (Op::Power(PowerAction::Reset, false), false),
        ] {
            let owners = Arc::new(Owners(Mutex::default()));
            owners.all_to(&["a", "b"], "a");
            let o = owners.clone();
            let (got, calls) = run(
                owners,
                move |addr, names| {
                    if addr == "a" {
                        // a answers n1, then dies; its lease expires and b takes over.
                        o.all_to(&["b"], "b");
                        Ok(vec![
                            Ok(all_ok(&names[..1], "on")),
                            Err("conductor a failed: broken pipe".into()),
                        ])
                    } else {
                        Ok(vec![Ok(all_ok(names, "on"))])
                    }
                },
                names(5),
                op.clone(),
                Duration::from_secs(5),
            )
            .await;
            assert_eq!(got["n1"].result.as_deref(), Ok("on"), "{op:?}");
            if repeated {
                assert_eq!(calls.len(), 2, "{op:?}");
                assert_eq!(calls[1].1, ["n2", "n3", "n4", "n5"]);
                assert!(got.values().all(|o| o.result.is_ok()), "{got:?}");
            } else {
                assert_eq!(calls.len(), 1, "a reset is never sent twice");
                let e = got["n2"].result.as_ref().unwrap_err();
                assert_eq!(e.code, ErrorCode::Unavailable);
                assert!(e.reason.contains("may or may not have run"), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn duplicate_stray_and_missing_answers_still_give_one_result_per_node() {
        let owners = Arc::new(Owners(Mutex::default()));
        owners.all_to(&["a"], "a");
        let (got, _) = run(
            owners,
            |_, _| {
                Ok(vec![
                    Ok(vec![
                        NodeOutcome::ok("n1", "on"),
                        NodeOutcome::fail("n1", ErrorCode::Internal, "second answer"),
                        NodeOutcome::ok("stranger", "on"),
                    ]),
                    Ok(vec![NodeOutcome::ok("n2", "off")]),
                ])
            },
            names(3),
            status(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(got["n1"].result.as_deref(), Ok("on"));
        assert_eq!(got["n2"].result.as_deref(), Ok("off"));
        let e = got["n3"].result.as_ref().unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.reason.contains("gave no result"), "{e}");
        assert!(!got.contains_key("stranger"));
    }

    #[tokio::test]
    async fn not_owner_is_the_answer_once_no_owner_takes_the_nodes_in_time() {
        let owners = Arc::new(Owners(Mutex::default()));
        owners.all_to(&["a"], "a");
        let (got, calls) = run(
            owners,
            |_, names| {
                let moved = names
                    .iter()
                    .map(|n| NodeOutcome::fail(n.clone(), ErrorCode::NotOwner, "moving"))
                    .collect();
                Ok(vec![Ok(moved)])
            },
            names(2),
            status(),
            Duration::ZERO,
        )
        .await;
        assert_eq!(calls.len(), 3, "asked again twice, then answered");
        assert!(got.values().all(|o| o.is_not_owner()));
    }

    #[tokio::test]
    async fn without_conductors_or_a_client_nothing_runs_and_each_node_says_why() {
        let owners = Arc::new(Owners(Mutex::default()));
        let (got, calls) = run(
            owners,
            |_, _| unreachable!("no conductor to call"),
            names(2),
            status(),
            Duration::from_secs(5),
        )
        .await;
        assert!(calls.is_empty());
        let e = got["n1"].result.as_ref().unwrap_err();
        assert!(e.reason.contains("no live conductor owns shard"), "{e}");

        let owners = Arc::new(Owners(Mutex::default()));
        owners.all_to(&["a"], "a");
        let (got, _) = run(
            owners,
            |_, _| Err(CallError::NotSent("no TLS client".into())),
            names(2),
            Op::Power(PowerAction::Cycle, false),
            Duration::from_secs(5),
        )
        .await;
        let e = got["n2"].result.as_ref().unwrap_err();
        assert!(e.reason.contains("the action did not run"), "{e}");
    }
}
