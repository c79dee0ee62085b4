//! Shard ownership in etcd.
//!
//! Keys, under a prefix (default `/xcat3`):
//! - `config/shards`: the shard count, written once by the first conductor (create-if-absent);
//!   a conductor configured with another count refuses to start;
//! - `members/<id>`: a [`Member`] as JSON, bound to the member's lease;
//! - `shards/<n>`: the id of the shard's owner, bound to the owner's lease and created only if
//!   absent, so etcd itself forbids two owners. Its create revision is the [`FencingToken`].
//!
//! Each member runs one loop: grant a lease, register, then reconcile whenever the prefix changes
//! (a watch) and every second: hand back shards whose target is another member (after the work
//! holding them is done), claim free shards whose target is this member. Keep-alives go every
//! TTL/3 and must be answered within TTL/3; if one is not, or any etcd call times out, the member
//! drops every shard at once (before the lease can expire on the server and another member could
//! claim them), then starts a new session with a new lease.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::{
    BoxFuture, Coordinator, Error, FencingToken, LeaseHealth, Member, Membership, Owned, Result,
    ShardId, ShardLocks, Snapshot, assign,
};

/// How to reach etcd and how the cluster is laid out there.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing slash.
    pub prefix: String,
    /// Lease time to live: a crashed member's shards are taken over after about this long.
    pub lease_ttl: Duration,
    /// Shard count used when this member creates the cluster.
    pub shards: u32,
    /// How long hand-over waits for work on a shard before releasing it anyway.
    pub handover_grace: Duration,
    /// etcd user and password, with etcd authentication on.
    pub credentials: Option<(String, xcat3_types::Secret)>,
    /// TLS to https:// endpoints.
    pub tls: Option<etcd_client::TlsOptions>,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/xcat3".into(),
            lease_ttl: Duration::from_secs(10),
            shards: crate::DEFAULT_SHARDS,
            handover_grace: Duration::from_secs(30),
            credentials: None,
            tls: None,
        }
    }

    fn members_prefix(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    fn shards_prefix(&self) -> String {
        format!("{}/shards/", self.prefix)
    }

    /// Added to every claim's create revision to make its fencing token. Raised (never lowered)
    /// when the database holds epochs this etcd's revisions have not reached: a new or restored
    /// etcd cluster.
    fn epoch_base_key(&self) -> String {
        format!("{}/config/epoch_base", self.prefix)
    }

    fn shard_key(&self, shard: ShardId) -> String {
        format!("{}/shards/{shard:05}", self.prefix)
    }

    /// Bound on any single etcd call.
    fn op_timeout(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(500))
    }
}

/// Shard ownership held in etcd.
pub struct EtcdCoordinator {
    client: Client,
    config: EtcdConfig,
    shards: u32,
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match timeout(limit, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Error::Etcd(etcd_client::Error::InvalidArgs(format!(
            "{what}: no answer within {limit:?}"
        )))),
    }
}

impl EtcdCoordinator {
    /// Connects, and reads (or, for a new cluster, writes) the shard count.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &config.credentials {
            // A simple token expires after etcd's --auth-token-ttl without use: get a new one.
            options = options
                .with_user(user.clone(), password.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.clone());
        }
        let mut client = bounded(
            Duration::from_secs(10),
            "connect",
            Client::connect(&config.endpoints, Some(options)),
        )
        .await?;
        let key = format!("{}/config/shards", config.prefix);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), config.shards.to_string(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = bounded(config.op_timeout(), "read shard count", client.txn(txn)).await?;
        let shards = if resp.succeeded() {
            config.shards
        } else {
            let mut stored = None;
            for op in resp.op_responses() {
                if let etcd_client::TxnOpResponse::Get(get) = op
                    && let Some(kv) = get.kvs().first()
                {
                    stored = kv.value_str().ok().and_then(|v| v.parse::<u32>().ok());
                }
            }
            let stored = stored.ok_or_else(|| Error::Corrupt(format!("{key} is not a number")))?;
            if stored != config.shards {
                return Err(Error::Config(format!(
                    "the cluster has {stored} shards but this conductor is configured with {}; the count is fixed when the cluster is created",
                    config.shards
                )));
            }
            stored
        };
        Ok(Self {
            client,
            config,
            shards,
        })
    }

    /// The epoch base (0 when unset), the revision it was read at, and its key's mod revision.
    async fn read_epoch_base(client: &mut Client, config: &EtcdConfig) -> Result<(i64, i64, i64)> {
        let key = config.epoch_base_key();
        let resp = bounded(
            config.op_timeout(),
            "read epoch base",
            client.get(key.clone(), None),
        )
        .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(match resp.kvs().first() {
            None => (0, revision, 0),
            Some(kv) => (
                parse_base(&key, kv.value_str().ok())?,
                revision,
                kv.mod_revision(),
            ),
        })
    }

    /// The epoch base and the snapshot.
    async fn read_snapshot(
        client: &mut Client,
        config: &EtcdConfig,
        shards: u32,
    ) -> Result<(Snapshot, BTreeMap<ShardId, (String, i64)>)> {
        let limit = config.op_timeout();
        let members = bounded(
            limit,
            "list members",
            client.get(
                config.members_prefix(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let members: Vec<Member> = members
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        let owners = bounded(
            limit,
            "list shards",
            client.get(
                config.shards_prefix(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let mut detail = BTreeMap::new();
        for kv in owners.kvs() {
            let key = kv.key_str().unwrap_or_default();
            let Some(shard) = key
                .rsplit('/')
                .next()
                .and_then(|n| n.parse::<ShardId>().ok())
            else {
                continue;
            };
            detail.insert(
                shard,
                (
                    kv.value_str().unwrap_or_default().to_owned(),
                    kv.create_revision(),
                ),
            );
        }
        let snapshot = Snapshot {
            shards,
            members,
            owners: detail
                .iter()
                .map(|(s, (owner, _))| (*s, owner.clone()))
                .collect(),
        };
        Ok((snapshot, detail))
    }
}

impl Coordinator for EtcdCoordinator {
    fn shards(&self) -> u32 {
        self.shards
    }

    fn join(
        &self,
        member: Member,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<Membership>> {
        Box::pin(async move {
            let (tx, rx) = watch::channel(Owned::new());
            let locks = ShardLocks::default();
            let lease = Arc::new(LeaseHealth::default());
            let session = Session {
                client: self.client.clone(),
                config: self.config.clone(),
                shards: self.shards,
                member,
                owned: tx,
                locks: locks.clone(),
                lease: lease.clone(),
            };
            let done = tokio::spawn(session.run(shutdown));
            Ok(Membership {
                owned: rx,
                locks,
                done: Arc::new(tokio::sync::Mutex::new(Some(done))),
                lease,
            })
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            Ok(Self::read_snapshot(&mut client, &self.config, self.shards)
                .await?
                .0)
        })
    }

    fn raise_above(&self, epoch: i64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let key = self.config.epoch_base_key();
            // A few rounds: another member may be raising it at the same time.
            for _ in 0..5 {
                let (base, revision, mod_revision) =
                    Self::read_epoch_base(&mut client, &self.config).await?;
                // Every later claim has a revision above `revision`.
                if base.saturating_add(revision) >= epoch {
                    return Ok(());
                }
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        mod_revision,
                    )])
                    .and_then([TxnOp::put(
                        key.clone(),
                        epoch.saturating_add(1).to_string(),
                        None,
                    )]);
                let resp = bounded(
                    self.config.op_timeout(),
                    "raise epoch base",
                    client.txn(txn),
                )
                .await?;
                if resp.succeeded() {
                    tracing::warn!(
                        base = epoch.saturating_add(1),
                        revision,
                        "etcd is behind the database's fencing epochs (a new or restored etcd cluster): fencing tokens now start above them"
                    );
                    return Ok(());
                }
            }
            Err(Error::Config(format!("{key} keeps changing; try again")))
        })
    }
}

/// One member's membership loop.
struct Session {
    client: Client,
    config: EtcdConfig,
    shards: u32,
    member: Member,
    owned: watch::Sender<Owned>,
    locks: ShardLocks,
    lease: Arc<LeaseHealth>,
}

/// Why a session ended.
enum End {
    Shutdown,
    Lost(String),
}

impl Session {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.session(&shutdown).await {
                End::Shutdown => break,
                End::Lost(why) => {
                    // Stop acting on every shard before anything else.
                    self.owned.send_replace(Owned::new());
                    self.lease
                        .losses
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(member = %self.member.id, reason = %why, "lost the lease; all shards dropped, rejoining");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.owned.send_replace(Owned::new());
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> End {
        let ttl = self.config.lease_ttl;
        let limit = self.config.op_timeout();
        let ttl_secs = ttl.as_secs().max(2) as i64;
        let mut client = self.client.clone();
        let lease = match bounded(limit, "grant lease", client.lease_grant(ttl_secs, None)).await {
            Ok(l) => l.id(),
            Err(e) => return End::Lost(e.to_string()),
        };
        let member_key = format!("{}{}", self.config.members_prefix(), self.member.id);
        let value = serde_json::to_string(&self.member).unwrap_or_default();
        if let Err(e) = bounded(
            limit,
            "register",
            client.put(member_key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        {
            return End::Lost(e.to_string());
        }
        let (mut keeper, mut keep_alive) =
            match bounded(limit, "keep-alive", client.lease_keep_alive(lease)).await {
                Ok(k) => k,
                Err(e) => return End::Lost(e.to_string()),
            };
        let mut changes = match bounded(
            limit,
            "watch",
            client.watch(
                self.config.prefix.clone(),
                Some(WatchOptions::new().with_prefix()),
            ),
        )
        .await
        {
            Ok(w) => w,
            Err(e) => return End::Lost(e.to_string()),
        };
        tracing::info!(member = %self.member.id, lease, "joined the cluster");
        self.lease.alive_now();
        let mut keep_alive_tick = tokio::time::interval(ttl / 3);
        let mut reconcile_tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_alive = Instant::now();
        // Hand-overs run beside the loop, so a shard with long-running work never delays the
        // keep-alives or the other shards.
        let mut releases: JoinSet<ShardId> = JoinSet::new();
        let mut releasing: HashSet<ShardId> = HashSet::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    let mine: Vec<ShardId> = self.owned.send_replace(Owned::new()).into_keys().collect();
                    for shard in mine {
                        self.release(&mut releases, &mut releasing, shard, lease);
                    }
                    if releases.is_empty() {
                        break;
                    }
                }
                Some(done) = releases.join_next(), if !releases.is_empty() => {
                    if let Ok(shard) = done {
                        releasing.remove(&shard);
                    }
                    if stopping && releases.is_empty() {
                        break;
                    }
                }
                _ = keep_alive_tick.tick() => {
                    let sent = Instant::now();
                    let ok = match timeout(limit, async {
                        keeper.keep_alive().await?;
                        keep_alive.message().await
                    }).await {
                        Ok(Ok(Some(resp))) => resp.ttl() > 0,
                        _ => false,
                    };
                    if ok {
                        last_alive = sent;
                        self.lease.alive_now();
                    } else if last_alive.elapsed() >= ttl * 2 / 3 {
                        return End::Lost("keep-alive not answered".into());
                    }
                }
                msg = changes.message(), if !stopping => {
                    match msg {
                        Ok(Some(_)) => {}
                        Ok(None) => return End::Lost("watch closed".into()),
                        Err(e) => return End::Lost(format!("watch: {e}")),
                    }
                    if let Err(e) = self.reconcile(&mut client, lease, &mut releases, &mut releasing).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = reconcile_tick.tick() => {
                    if last_alive.elapsed() >= ttl * 2 / 3 {
                        return End::Lost("no keep-alive answered within two thirds of the lease".into());
                    }
                    if !stopping
                        && let Err(e) = self.reconcile(&mut client, lease, &mut releases, &mut releasing).await
                    {
                        return End::Lost(e.to_string());
                    }
                }
            }
        }
        let _ = bounded(limit, "revoke lease", client.lease_revoke(lease)).await;
        tracing::info!(member = %self.member.id, "left the cluster");
        End::Shutdown
    }

    /// Brings this member's shards in line with the target assignment.
    async fn reconcile(
        &mut self,
        client: &mut Client,
        lease: i64,
        releases: &mut JoinSet<ShardId>,
        releasing: &mut HashSet<ShardId>,
    ) -> Result<()> {
        let limit = self.config.op_timeout();
        let (base, _, _) = EtcdCoordinator::read_epoch_base(client, &self.config).await?;
        let (snapshot, detail) =
            EtcdCoordinator::read_snapshot(client, &self.config, self.shards).await?;
        let ids: Vec<String> = snapshot.members.iter().map(|m| m.id.clone()).collect();
        let target = assign::target(&ids, self.shards);
        let me = &self.member.id;
        let mut owned = Owned::new();
        let mut release = Vec::new();
        for (shard, (owner, created)) in &detail {
            if owner != me {
                continue;
            }
            if target.get(shard) == Some(me) && !releasing.contains(shard) {
                owned.insert(*shard, FencingToken(base.saturating_add(*created)));
            } else {
                release.push(*shard);
            }
        }
        // Stop new work on shards being handed over before waiting for the old work.
        self.owned.send_replace(owned.clone());
        for shard in release {
            self.release(releases, releasing, shard, lease);
        }
        for (shard, _) in target
            .iter()
            .filter(|(s, m)| *m == me && !detail.contains_key(s))
        {
            let key = self.config.shard_key(*shard);
            // The base is read in the claim's own transaction, so the token is exact.
            let base_key = self.config.epoch_base_key();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(key, me.clone(), Some(PutOptions::new().with_lease(lease))),
                    TxnOp::get(base_key.clone(), None),
                ]);
            let resp = bounded(limit, "claim shard", client.txn(txn)).await?;
            if resp.succeeded()
                && let Some(header) = resp.header()
            {
                let mut base = 0;
                for op in resp.op_responses() {
                    if let etcd_client::TxnOpResponse::Get(get) = op
                        && let Some(kv) = get.kvs().first()
                    {
                        base = parse_base(&base_key, kv.value_str().ok())?;
                    }
                }
                owned.insert(*shard, FencingToken(base.saturating_add(header.revision())));
            }
        }
        if *self.owned.borrow() != owned {
            tracing::debug!(member = %me, shards = owned.len(), "ownership changed");
        }
        self.owned.send_replace(owned);
        Ok(())
    }

    /// Starts handing `shard` over: waits (at most the grace period) for work holding it, then
    /// deletes its key if it still belongs to this session's lease (a key claimed again by a later
    /// session of this member is left alone).
    fn release(
        &self,
        releases: &mut JoinSet<ShardId>,
        releasing: &mut HashSet<ShardId>,
        shard: ShardId,
        lease: i64,
    ) {
        if !releasing.insert(shard) {
            return;
        }
        let lock = self.locks.get(shard);
        let mut client = self.client.clone();
        let key = self.config.shard_key(shard);
        let (grace, limit) = (self.config.handover_grace, self.config.op_timeout());
        let member = self.member.id.clone();
        releases.spawn(async move {
            let _held = timeout(grace, lock.write_owned()).await.ok();
            let txn = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key, None)]);
            match bounded(limit, "release shard", client.txn(txn)).await {
                Ok(_) => tracing::debug!(member = %member, shard, "shard handed over"),
                Err(e) => tracing::warn!(member = %member, shard, error = %e, "releasing a shard failed; its lease will expire"),
            }
            shard
        });
    }
}

fn parse_base(key: &str, value: Option<&str>) -> Result<i64> {
    value
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|b| *b >= 0)
        .ok_or_else(|| Error::Corrupt(format!("{key} is not a non-negative number")))
}
