//! The agent's side of `xcat3.internal.v1.NetbootConfig`: following the boot table, holding blocks
//! of the dynamic ranges, and reporting discovered machines. Each loop survives the api going away
//! and comes back by itself; meanwhile the agent answers from what it has.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use xcat3_proto::internal::{self, netboot_config_client::NetbootConfigClient};
use xcat3_runtime::auth::Bearer;
use xcat3_types::{IpRange, MacAddr, Secret};

use crate::dhcp::answer::Sighting;
use crate::table::Table;
use crate::{State, now_ms};

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often held blocks are renewed (claims last an hour).
const RENEW: Duration = Duration::from_secs(600);
/// How often discoveries are sent; a MAC is reported again only after [`REPORT_AGAIN`].
const REPORT_EVERY: Duration = Duration::from_secs(1);
const REPORT_AGAIN: Duration = Duration::from_secs(300);
/// Machines per report: the api's limit.
const REPORT_BATCH: usize = xcat3_proto::MAX_DISCOVERY_REPORT;
/// Machines waiting for a report at most.
const MAX_PENDING: usize = 100_000;

/// A client of the api's netboot service. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient(NetbootConfigClient<InterceptedService<Channel, Bearer>>);

impl ApiClient {
    /// `url` is `http://host:port`, or `unix:/path` for an api reached through a Unix socket (an
    /// agent in another network namespace of the same machine).
    /// With `tls` verifying servers, only an https:// api is called.
    pub fn new(
        url: &str,
        token: Option<&Secret>,
        tls: &xcat3_runtime::tls::Tls,
    ) -> anyhow::Result<Self> {
        let unix = url.strip_prefix("unix:").map(PathBuf::from);
        let endpoint = match unix {
            Some(_) => Endpoint::from_static("http://api.invalid"),
            None => tls.endpoint(url, None)?,
        }
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
        let channel = match unix {
            Some(path) => endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            })),
            None => endpoint.connect_lazy(),
        };
        Ok(ApiClient(
            NetbootConfigClient::with_interceptor(channel, Bearer::new(token))
                .max_decoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES),
        ))
    }
}

/// Follows the api's boot table: applies each update, publishes the new table to the servers
/// and saves it to `file`.
pub async fn follow(api: ApiClient, state: Arc<State>, file: PathBuf, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let request = internal::WatchRequest {
            agent_id: state.id.clone(),
        };
        let mut client = api.0.clone();
        let stream = tokio::select! {
            r = client.watch(request) => r,
            _ = shutdown.cancelled() => return,
        };
        match stream {
            Ok(response) => {
                let mut stream = response.into_inner();
                state.metrics.api_connected.set(1);
                let mut table = (*state.table()).clone();
                loop {
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = shutdown.cancelled() => return,
                    };
                    match next {
                        Ok(Some(update)) => {
                            backoff = Duration::from_millis(200);
                            let started = std::time::Instant::now();
                            if let Err(e) = table.apply(&update) {
                                tracing::error!(error = %e, "ignoring a bad boot update; asking for a snapshot");
                                break;
                            }
                            let snapshot = Arc::new(table.clone());
                            state.set_table(snapshot.clone());
                            tracing::debug!(
                                revision = table.revision,
                                hosts = table.hosts.len(),
                                apply_ms = started.elapsed().as_millis() as u64,
                                "boot table updated"
                            );
                            let file = file.clone();
                            let saved =
                                tokio::task::spawn_blocking(move || snapshot.save(&file)).await;
                            if let Ok(Err(e)) = saved {
                                tracing::warn!(error = %e, "saving the boot table failed");
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "the boot table stream broke; answering from the last table");
                            break;
                        }
                    }
                }
                state.metrics.api_connected.set(0);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the api; answering from the last table");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The networks that get proactive blocks: those with a dynamic range.
fn dynamic_networks(table: &Table) -> Vec<String> {
    table
        .networks
        .iter()
        .filter(|n| n.dynamic_range.is_some())
        .map(|n| n.name.clone())
        .collect()
}

/// How long an agent asks for no more blocks of a network after a claim brought none.
const QUIET_WHEN_USED_UP: Duration = Duration::from_secs(5);

/// Renews this agent's blocks, claims one for every network with a dynamic range that has none,
/// and more when a network runs out.
pub async fn keep_blocks(api: ApiClient, state: Arc<State>, shutdown: CancellationToken) {
    let mut held: HashMap<String, usize> = HashMap::new();
    let mut renew = tokio::time::interval(RENEW);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let renew_all = tokio::select! {
            _ = renew.tick() => true,
            _ = check.tick() => false,
            _ = state.blocks_wanted.notified() => false,
            _ = shutdown.cancelled() => return,
        };
        let wishes: HashMap<String, u64> = state
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_block_wishes(now_ms())
            .into_iter()
            .collect();
        let table = state.table();
        let mut work: Vec<(String, bool, u64)> = Vec::new();
        for net in dynamic_networks(&table) {
            let empty = held.get(&net).is_none_or(|n| *n == 0);
            let wished = wishes.get(&net).copied();
            if renew_all || empty || wished.is_some() {
                work.push((net, empty || wished.is_some(), wished.unwrap_or(0)));
            }
        }
        for (net, claim, want) in work {
            let mut client = api.0.clone();
            let request = internal::BlocksRequest {
                agent_id: state.id.clone(),
                network: net.clone(),
                claim,
                want_addresses: want,
            };
            match client.blocks(request).await {
                Ok(r) => {
                    let now = now_ms();
                    let blocks: Vec<(IpRange, i64)> = r
                        .into_inner()
                        .blocks
                        .iter()
                        .filter_map(|b| {
                            let start: Ipv4Addr = b.first.parse().ok()?;
                            let end: Ipv4Addr = b.last.parse().ok()?;
                            let valid = i64::try_from(b.valid_for_ms).ok()?;
                            Some((IpRange { start, end }, now + valid))
                        })
                        .collect();
                    let used_up = claim && blocks.len() <= held.get(&net).copied().unwrap_or(0);
                    held.insert(net.clone(), blocks.len());
                    let mut pool = state.pool.lock().unwrap_or_else(|p| p.into_inner());
                    pool.set_blocks(&net, blocks);
                    if used_up {
                        tracing::warn!(network = %net, "the dynamic range has no free block left");
                        pool.hold_wishes(&net, now + QUIET_WHEN_USED_UP.as_millis() as i64);
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    held.remove(&net);
                }
                Err(e) => {
                    tracing::debug!(network = %net, error = %e, "claiming dynamic blocks failed; keeping the ones held");
                }
            }
        }
    }
}

/// Sends machines that are not in the inventory to the api, each MAC at most once per
/// [`REPORT_AGAIN`].
pub async fn report_discovered(
    api: ApiClient,
    state: Arc<State>,
    mut rx: mpsc::Receiver<Sighting>,
    shutdown: CancellationToken,
) {
    let mut last_sent: HashMap<MacAddr, tokio::time::Instant> = HashMap::new();
    let mut pending: HashMap<MacAddr, internal::DiscoveredMachine> = HashMap::new();
    let mut tick = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            s = rx.recv() => {
                let Some(s) = s else { return };
                let fresh = last_sent.get(&s.mac).is_none_or(|t| t.elapsed() > REPORT_AGAIN);
                let ip_changed = pending.get(&s.mac).is_some_and(|p| p.ip != s.ip.map(|i| i.to_string()).unwrap_or_default());
                // While the api is away the queue is bounded; machines keep asking, so they come back.
                let room = pending.len() < MAX_PENDING || pending.contains_key(&s.mac);
                if room && (fresh || ip_changed) {
                    pending.insert(s.mac, internal::DiscoveredMachine {
                        mac: s.mac.to_string(),
                        ip: s.ip.map(|i| i.to_string()).unwrap_or_default(),
                        network: s.network,
                        client_arch: s.client_arch,
                        vendor_class: s.vendor_class,
                        seen_at: now_ms(),
                    });
                }
            }
            _ = tick.tick() => {
                if pending.is_empty() {
                    continue;
                }
                // The api takes at most REPORT_BATCH machines per report; the rest go next time.
                let batch: Vec<MacAddr> = pending.keys().take(REPORT_BATCH).copied().collect();
                let machines = batch.iter().filter_map(|m| pending.get(m).cloned()).collect();
                let mut client = api.0.clone();
                let request = internal::ReportDiscoveredRequest { agent_id: state.id.clone(), machines };
                match client.report_discovered(request).await {
                    Ok(_) => {
                        let now = tokio::time::Instant::now();
                        for mac in batch {
                            pending.remove(&mac);
                            last_sent.insert(mac, now);
                        }
                        last_sent.retain(|_, t| t.elapsed() < REPORT_AGAIN);
                    }
                    Err(e) => tracing::debug!(error = %e, "reporting discovered machines failed; will retry"),
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
