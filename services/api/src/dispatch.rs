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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument as _;
use xcat3_coord::{Coordinator, Snapshot, shard_of};
use xcat3_proto::{internal, pb};
use xcat3_runtime::auth::Bearer;
use xcat3_types::Secret;

/// What to ask the conductors.
#[derive(Debug, Clone)]
pub enum Op {
    /// Action, and whether to answer "accepted" without waiting for the BMCs.
    Power(String, bool),
    BootDevice(String, bool),
    /// The names are filled in per conductor.
    Deploy(internal::DeployRequest),
    Undeploy,
}

impl Op {
    fn repeatable(&self) -> bool {
        match self {
            Op::Power(a, _) => matches!(a.as_str(), "on" | "off" | "status"),
            Op::BootDevice(..) | Op::Undeploy => true,
            // Nodes a failed conductor may have moved to deploying would be refused again.
            Op::Deploy(_) => false,
        }
    }
}

pub(crate) type Client =
    internal::conductor_client::ConductorClient<InterceptedService<Channel, Bearer>>;

/// The api's link to the conductors.
pub struct Dispatcher {
    coordinator: Arc<dyn Coordinator>,
    auth: Bearer,
    clients: Mutex<HashMap<String, Client>>,
    /// How long to wait for a shard without a live owner to be taken over before giving up.
    takeover_wait: Duration,
    /// With a CA, only conductors that prove their name over TLS are called (and get the token).
    tls: xcat3_runtime::tls::Tls,
    /// The name conductors' certificates must carry, if not the host of their address.
    tls_name: Option<String>,
}

fn error(name: &str, code: &str, reason: impl Into<String>) -> pb::NodeResult {
    pb::NodeResult {
        name: name.to_owned(),
        outcome: Some(pb::node_result::Outcome::Error(pb::ErrorDetail {
            code: code.into(),
            field: String::new(),
            reason: reason.into(),
        })),
    }
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
        let auth = Bearer::new(token);
        Self {
            coordinator,
            auth,
            clients: Mutex::default(),
            takeover_wait,
            tls,
            tls_name,
        }
    }

    pub fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.coordinator
    }

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

    /// Runs `op` on `names` (existing nodes), sending one result per name to `tx`.
    pub async fn run(&self, names: Vec<String>, op: Op, tx: mpsc::Sender<Vec<pb::NodeResult>>) {
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
                                .map(|n| error(n, "unavailable", e.clone()))
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
                        "unavailable",
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
                let client = self.client(&addr);
                let op = op.clone();
                let answers_tx = answers_tx.clone();
                calls.spawn(
                    async move {
                        let (retry, broke) = call(
                            client,
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
                            "internal",
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
    client: Result<Client, String>,
    addr: String,
    names: Vec<String>,
    op: Op,
    tx: mpsc::Sender<Vec<pb::NodeResult>>,
    retry_moved: bool,
    retry_failed: bool,
) -> (Vec<String>, bool) {
    let mut unanswered: HashSet<String> = names.iter().cloned().collect();
    let mut retry = Vec::new();
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            // Nothing was sent: the action did not run there.
            let reason = format!("{e}; not called, the action did not run");
            let results = names
                .iter()
                .map(|n| error(n, "unavailable", reason.clone()));
            let _ = tx.send(results.collect()).await;
            return (Vec::new(), false);
        }
    };
    let failure = {
        let started = match &op {
            Op::Power(action, no_wait) => {
                let req = internal::PowerRequest {
                    names,
                    action: action.clone(),
                    no_wait: *no_wait,
                };
                client.power(req).await
            }
            Op::BootDevice(device, no_wait) => {
                let req = internal::BootDeviceRequest {
                    names,
                    device: device.clone(),
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
        match started {
            Err(status) => Some(format!("{}: {}", addr, status.message())),
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            let mut forward = Vec::with_capacity(msg.results.len());
                            for r in msg.results {
                                if !unanswered.remove(&r.name) {
                                    continue; // never two results for one node
                                }
                                let moved = matches!(&r.outcome, Some(pb::node_result::Outcome::Error(e)) if e.code == "unavailable" && e.reason.starts_with("shard "));
                                if moved && retry_moved {
                                    retry.push(r.name);
                                } else {
                                    forward.push(r);
                                }
                            }
                            if !forward.is_empty() {
                                let _ = tx.send(forward).await;
                            }
                        }
                        Ok(None) => break None,
                        Err(status) => {
                            break Some(format!("conductor {addr} failed: {}", status.message()));
                        }
                    }
                }
            }
        }
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
                        .map(|n| error(n, "unavailable", msg.clone()))
                        .collect(),
                )
                .await;
        }
        None if !rest.is_empty() => {
            let _ = tx
                .send(
                    rest.iter()
                        .map(|n| error(n, "internal", format!("conductor {addr} gave no result")))
                        .collect(),
                )
                .await;
        }
        None => {}
    }
    (retry, broke)
}
