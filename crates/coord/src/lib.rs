//! Shard ownership for conductors.
//!
//! Nodes live in a fixed number of shards ([`assign::shard_of`]); each shard is owned by at most
//! one conductor at any instant, and the owner proves it with a [`FencingToken`]. The
//! [`Coordinator`] trait has two implementations:
//!
//! - [`EtcdCoordinator`]: for a cluster. A conductor registers under an etcd lease and claims its
//!   target shards ([`assign::target`]) with create-if-absent transactions on keys bound to that
//!   lease. A crashed conductor's keys vanish when its lease expires, and the others take its
//!   shards. A conductor whose keep-alive fails drops every shard at once.
//! - [`LocalCoordinator`]: for the all-in-one server, without etcd: one member owns every shard.
//!
//! Invariant: this crate knows nothing of nodes, the database or gRPC services.

pub mod assign;
mod etcd;
mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, RwLock, watch};

pub use assign::{ShardId, shard_of};
pub use etcd::{EtcdConfig, EtcdCoordinator};
pub use local::LocalCoordinator;

/// Default number of shards of a new cluster.
pub const DEFAULT_SHARDS: u32 = 64;

/// Proof of ownership of a shard: the etcd revision at which the owner created the shard's key.
/// A later claim always has a larger token, so a database write carrying an older token can be
/// refused (see docs/inventory-and-dispatch.md, "Shards, leases and fencing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

/// A conductor as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Unique per process: `<host>-<pid>-<start>` or as configured.
    pub id: String,
    pub host: String,
    /// Where the api reaches its gRPC service (`http://10.0.0.5:3020`).
    pub addr: String,
}

/// Who owns what, as read from the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub shards: u32,
    pub members: Vec<Member>,
    /// Shard → id of its owner; shards without a live owner are absent.
    pub owners: BTreeMap<ShardId, String>,
}

impl Snapshot {
    /// The member owning `shard`, if any.
    pub fn owner(&self, shard: ShardId) -> Option<&Member> {
        let id = self.owners.get(&shard)?;
        self.members.iter().find(|m| &m.id == id)
    }
}

/// Errors of the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("stored value is unreadable: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where conductors register and claim shards, and where the api looks up owners.
pub trait Coordinator: Send + Sync + 'static {
    /// The number of shards of the cluster.
    fn shards(&self) -> u32;
    /// Joins as `member` and keeps this member's share of the shards until `shutdown` fires, then
    /// hands its shards back (waiting for work holding a [`ShardGuard`]) and leaves.
    fn join(
        &self,
        member: Member,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'_, Result<Membership>>;
    /// Who owns what now.
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot>>;
    /// Makes every fencing token handed out from now on larger than `epoch` (the highest the
    /// database holds), for a coordinator whose own counter is behind it: a new or restored etcd
    /// cluster, a clock stepped back. Does nothing when it is already ahead.
    fn raise_above(&self, epoch: i64) -> BoxFuture<'_, Result<()>>;
}

/// The shards this member owns, with their tokens.
pub type Owned = BTreeMap<ShardId, FencingToken>;

/// Per-shard locks: work holds a read lock while it acts on a shard's nodes; handing a shard
/// over takes the write lock, so it waits until that work is done.
#[derive(Clone, Default)]
pub(crate) struct ShardLocks(Arc<std::sync::Mutex<BTreeMap<ShardId, Arc<RwLock<()>>>>>);

impl ShardLocks {
    pub(crate) fn get(&self, shard: ShardId) -> Arc<RwLock<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(shard).or_default().clone()
    }
}

/// How a member's lease is doing, for metrics: when a keep-alive was last answered and how many
/// times the lease was lost. The local coordinator has no lease and leaves both at zero.
#[derive(Debug, Default)]
pub struct LeaseHealth {
    /// Unix ms of the last answered keep-alive (or of the grant); 0: never.
    pub last_alive_ms: std::sync::atomic::AtomicI64,
    pub losses: std::sync::atomic::AtomicU64,
}

impl LeaseHealth {
    pub(crate) fn alive_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_alive_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A member's live view of what it owns.
#[derive(Clone)]
pub struct Membership {
    pub(crate) owned: watch::Receiver<Owned>,
    pub(crate) locks: ShardLocks,
    pub(crate) done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    pub(crate) lease: Arc<LeaseHealth>,
}

/// Permission to act on a shard's nodes. While it is held, the shard is not handed over (it can
/// still be lost if the lease expires: then the token no longer passes the database check).
pub struct ShardGuard {
    pub shard: ShardId,
    pub token: FencingToken,
    _lock: OwnedRwLockReadGuard<()>,
}

impl Membership {
    /// The health of this member's lease.
    pub fn lease(&self) -> Arc<LeaseHealth> {
        self.lease.clone()
    }

    /// What this member owns right now; changes are announced on [`Membership::watch`].
    pub fn owned(&self) -> Owned {
        self.owned.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }

    /// Takes a guard on `shard` if this member owns it.
    pub async fn acquire(&self, shard: ShardId) -> Option<ShardGuard> {
        let lock = self.locks.get(shard).read_owned().await;
        // Checked after the lock, so a shard handed over while we waited is refused.
        let token = *self.owned.borrow().get(&shard)?;
        Some(ShardGuard {
            shard,
            token,
            _lock: lock,
        })
    }

    /// Stops the member at once, without handing over or revoking its lease: what a crash looks
    /// like to the rest of the cluster (its shards move when the lease expires). For tests.
    pub async fn abort(&self) {
        if let Some(handle) = self.done.lock().await.take() {
            handle.abort();
        }
    }

    /// Waits until the membership has ended (after `shutdown` and hand-over).
    pub async fn finished(&self) {
        if let Some(handle) = self.done.lock().await.take() {
            let _ = handle.await;
        }
    }
}

/// Command-line flags that choose and configure the coordinator.
#[derive(clap::Args, Debug, Clone)]
pub struct CoordArgs {
    /// etcd endpoints, comma-separated (http://10.0.0.1:2379,...). Without them: a single process
    /// with every shard (all-in-one).
    #[arg(long, env = "XCAT3_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, env = "XCAT3_ETCD_PREFIX", default_value = "/xcat3")]
    pub etcd_prefix: String,
    /// Number of shards; fixed when the cluster is created.
    #[arg(long, env = "XCAT3_SHARDS", default_value_t = DEFAULT_SHARDS)]
    pub shards: u32,
    /// Lease time to live in seconds: a crashed conductor's shards move after about this long.
    #[arg(long, env = "XCAT3_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// etcd user (with etcd authentication on); the password comes from --etcd-password-file
    /// or XCAT3_ETCD_PASSWORD.
    #[arg(long, env = "XCAT3_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, env = "XCAT3_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<std::path::PathBuf>,
    /// PEM CA that https:// etcd endpoints are verified against.
    #[arg(long, env = "XCAT3_ETCD_CA")]
    pub etcd_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for etcd (with --etcd-key), when etcd asks for one.
    #[arg(long, env = "XCAT3_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "XCAT3_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
}

impl CoordArgs {
    /// The etcd configuration (credentials and certificates read from their files), or `None`
    /// for the local coordinator.
    pub fn etcd(&self) -> Result<Option<EtcdConfig>> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .filter(|e| !e.is_empty())
            .cloned()
            .collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        let mut c = EtcdConfig::new(endpoints);
        c.prefix = self.etcd_prefix.trim_end_matches('/').to_owned();
        c.shards = self.shards;
        c.lease_ttl = std::time::Duration::from_secs(self.lease_ttl_secs.max(2));
        if let Some(user) = &self.etcd_user {
            let password = match &self.etcd_password_file {
                Some(path) => read_small(path, "etcd password")?.trim().to_owned(),
                None => std::env::var("XCAT3_ETCD_PASSWORD").map_err(|_| {
                    Error::Config(
                        "--etcd-user needs --etcd-password-file or XCAT3_ETCD_PASSWORD".into(),
                    )
                })?,
            };
            c.credentials = Some((user.clone(), xcat3_types::Secret::new(password)));
        }
        let tls = c.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls {
            let Some(ca) = &self.etcd_ca else {
                return Err(Error::Config(
                    "https:// etcd endpoints need --etcd-ca to verify them".into(),
                ));
            };
            let mut options = etcd_client::TlsOptions::new().ca_certificate(
                etcd_client::Certificate::from_pem(read_small(ca, "etcd CA")?),
            );
            if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
                options = options.identity(etcd_client::Identity::from_pem(
                    read_small(cert, "etcd client certificate")?,
                    read_small(key, "etcd client key")?,
                ));
            }
            c.tls = Some(options);
        } else if c.credentials.is_some() && !all_local(&c.endpoints) {
            tracing::warn!(
                "the etcd password goes over plain http:// to a remote etcd: use https:// endpoints"
            );
        }
        Ok(Some(c))
    }

    /// Connects the coordinator these flags describe.
    pub async fn connect(&self) -> Result<Arc<dyn Coordinator>> {
        Ok(match self.etcd()? {
            Some(config) => Arc::new(EtcdCoordinator::connect(config).await?),
            None => Arc::new(LocalCoordinator::new(self.shards)),
        })
    }
}

/// Whether every endpoint is on this machine (a password over plain http stays local).
fn all_local(endpoints: &[String]) -> bool {
    endpoints.iter().all(|e| {
        let host = e.split("://").nth(1).unwrap_or(e);
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
    })
}

/// A credential or certificate file: at most 1 MiB.
fn read_small(path: &std::path::Path, what: &str) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| Error::Config(format!("read the {what} from {}: {e}", path.display())))?;
    Ok(text)
}
