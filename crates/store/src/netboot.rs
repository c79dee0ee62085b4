//! What the network agents answer: the boot table (networks and every NIC), the inventory
//! revision that tells when it changed, claims on blocks of the dynamic ranges, and machines
//! discovered by DHCP.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use xcat3_types::{IpRange, Network, ProvisionState};

use crate::entity::{discovered, dynamic_block, nic};
use crate::{KEYS_PER_QUERY, ROWS_PER_STATEMENT, Result, Store, corrupt, now_ms};

/// One NIC of a node, with what the agents need of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootHostRecord {
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    pub node: String,
    pub nic: String,
    pub primary: bool,
    pub arch: String,
    pub netboot: String,
    /// The image of the deploy in progress, else the node's own.
    pub osimage: Option<String>,
    pub provision_state: ProvisionState,
    /// The token of the deploy in progress: it addresses the node's install files.
    pub deploy_token: Option<String>,
}

/// The most blocks one claim takes (8,192 addresses of 16-address blocks): an agent's demand is
/// met in a few round trips without one agent taking a whole large range at once.
pub const MAX_BLOCKS_PER_CLAIM: usize = 512;

/// One committed inventory write: the revision it made and what it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryWrite {
    pub revision: i64,
    /// Nodes created or changed.
    pub nodes: Vec<String>,
    /// Nodes deleted.
    pub deleted: Vec<String>,
    /// Whether networks changed.
    pub networks: bool,
}

/// What an inventory write touched, given to [`Store::commit_inventory`].
pub(crate) enum Touched {
    /// Nodes created or changed.
    Nodes(Vec<String>),
    /// Nodes deleted.
    Deleted(Vec<String>),
    Networks,
}

/// Everything the agents answer from, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BootTable {
    pub revision: i64,
    pub networks: Vec<Network>,
    pub hosts: Vec<BootHostRecord>,
}

/// A block of a network's dynamic range claimed by one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub range: IpRange,
    pub expires_at: i64,
}

/// A machine that asked for an address and is not in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredRecord {
    pub mac: String,
    pub ip: String,
    pub network: String,
    pub agent: String,
    pub client_arch: i32,
    pub vendor_class: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

async fn read_revision<C: ConnectionTrait>(db: &C) -> Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT value FROM inventory_revision WHERE id = 1",
        ))
        .await?
        .ok_or_else(|| corrupt("inventory revision", "the row is missing"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// A row of [`boot_hosts`]' join, as [`crate::json_rows`] reads it.
#[derive(serde::Deserialize)]
struct BootHostJson(
    String,
    String,
    String,
    Option<String>,
    #[serde(deserialize_with = "crate::json_flag")] bool,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// The NICs with their nodes' boot attributes: all of them, or those of the `only` nodes. One
/// join read as aggregated JSON ([`crate::json_rows`]): it runs after inventory writes.
async fn boot_hosts<C: ConnectionTrait>(
    db: &C,
    only: Option<&[String]>,
) -> Result<Vec<BootHostRecord>> {
    const COLUMNS: &str = "nics.mac, nics.node, nics.name, nics.ip, nics.is_primary, nodes.arch, \
         nodes.netboot, COALESCE(deploys.osimage, nodes.osimage), nodes.provision_state, \
         deploys.token";
    const FROM: &str = "nics JOIN nodes ON nodes.name = nics.node \
         LEFT JOIN deploys ON deploys.node = nodes.name";
    let backend = db.get_database_backend();
    let mut rows: Vec<BootHostJson> = Vec::new();
    match only {
        None => rows = crate::json_rows(db, COLUMNS, FROM, Vec::new(), "boot table").await?,
        Some(names) => {
            for chunk in names.chunks(KEYS_PER_QUERY) {
                let marks = crate::bind_marks(backend, chunk.len());
                let values: Vec<sea_orm::Value> = chunk.iter().map(|n| n.clone().into()).collect();
                rows.extend(
                    crate::json_rows::<_, BootHostJson>(
                        db,
                        COLUMNS,
                        &format!("{FROM} WHERE nics.node IN ({marks})"),
                        values,
                        "boot table",
                    )
                    .await?,
                );
            }
        }
    }
    rows.into_iter()
        .map(|r| {
            let what = || format!("NIC {} of node {}", r.0, r.1);
            Ok(BootHostRecord {
                ip: r
                    .3
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| corrupt(what(), e))?,
                provision_state: r.8.parse().map_err(|e| corrupt(what(), e))?,
                mac: r.0,
                node: r.1,
                nic: r.2,
                primary: r.4,
                arch: r.5,
                netboot: r.6,
                osimage: r.7,
                deploy_token: r.9,
            })
        })
        .collect()
}

impl Store {
    /// Starts a write to the inventory (nodes, NICs, networks, boot actions), which ends with
    /// [`Store::commit_inventory`]. Inventory writes are serialised: SQLite's write lock does it
    /// (`BEGIN IMMEDIATE`); on PostgreSQL the revision row is locked first. So a write's checks,
    /// read inside its transaction, still hold when it commits (a network delete and a node create
    /// that uses it cannot both succeed), and every writer takes its locks in the same order.
    pub(crate) async fn begin_inventory_write(&self) -> Result<DatabaseTransaction> {
        let txn = self.begin_write().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared("SELECT value FROM inventory_revision WHERE id = 1 FOR UPDATE")
                .await?;
        }
        Ok(txn)
    }

    /// Commits an inventory write, raising the inventory revision in the same transaction, and
    /// tells this process's [`Store::subscribe_writes`] listeners what it touched and which
    /// revision it made.
    pub(crate) async fn commit_inventory(
        &self,
        txn: DatabaseTransaction,
        touched: Touched,
    ) -> Result<()> {
        /// Counts a commit in flight from before the revision moves until it is sent.
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.in_flight);
        let row = txn
            .query_one_raw(Statement::from_string(
                txn.get_database_backend(),
                "UPDATE inventory_revision SET value = value + 1 WHERE id = 1 RETURNING value",
            ))
            .await?
            .ok_or_else(|| corrupt("inventory revision", "the row is missing"))?;
        let revision: i64 = row.try_get_by_index(0)?;
        txn.commit().await?;
        let mut write = InventoryWrite {
            revision,
            nodes: Vec::new(),
            deleted: Vec::new(),
            networks: false,
        };
        match touched {
            Touched::Nodes(nodes) => write.nodes = nodes,
            Touched::Deleted(nodes) => write.deleted = nodes,
            Touched::Networks => write.networks = true,
        }
        // Nobody listening is fine.
        let _ = self.writes.send(std::sync::Arc::new(write));
        Ok(())
    }

    /// How many inventory writes of this process may have moved the revision without being
    /// sent to [`Store::subscribe_writes`] yet. Read after [`Store::inventory_revision`]: when
    /// it is 0, every write of this process up to that revision is waiting in the receivers.
    pub fn inventory_writes_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Every inventory write made through this store, after it committed (this process only;
    /// other processes' writes show in [`Store::inventory_revision`]).
    pub fn subscribe_writes(
        &self,
    ) -> tokio::sync::broadcast::Receiver<std::sync::Arc<InventoryWrite>> {
        self.writes.subscribe()
    }

    /// The inventory revision: it grows with every change to what the network agents answer.
    pub async fn inventory_revision(&self) -> Result<i64> {
        read_revision(&self.db).await
    }

    /// The networks and every NIC with its node's boot attributes, consistent with one revision.
    pub async fn boot_table(&self) -> Result<BootTable> {
        let txn = self.db.begin().await?;
        let revision = read_revision(&txn).await?;
        let networks = crate::networks::networks_in(&txn).await?;
        let hosts = boot_hosts(&txn, None).await?;
        txn.commit().await?;
        Ok(BootTable {
            revision,
            networks,
            hosts,
        })
    }

    /// The NICs of `nodes` (those that still exist), for patching a boot table after a write.
    pub async fn boot_hosts_of(&self, nodes: &[String]) -> Result<Vec<BootHostRecord>> {
        boot_hosts(&self.db, Some(nodes)).await
    }

    /// Renews every live block `agent` holds in `network`'s dynamic range until `ttl_ms` from now
    /// and, with `claim` (the addresses the agent expects to need), claims more free (or
    /// expired) blocks of `block_size` addresses: at least what the agent asked for, and at
    /// least as many as it holds (so a busy segment needs few round trips), within
    /// [`MAX_BLOCKS_PER_CLAIM`]. Returns the agent's live blocks.
    pub async fn agent_blocks(
        &self,
        agent: &str,
        network: &str,
        range: IpRange,
        block_size: u32,
        ttl_ms: i64,
        claim: Option<u64>,
    ) -> Result<Vec<Block>> {
        let now = now_ms();
        let expires = now + ttl_ms;
        let start = i64::from(u32::from(range.start));
        let end = i64::from(u32::from(range.end));
        let txn = self.begin_write().await?;
        let mine = Condition::all()
            .add(dynamic_block::Column::Network.eq(network))
            .add(dynamic_block::Column::Agent.eq(agent))
            .add(dynamic_block::Column::ExpiresAt.gt(now));
        dynamic_block::Entity::update_many()
            .col_expr(dynamic_block::Column::ExpiresAt, Expr::value(expires))
            .filter(mine.clone())
            .exec(&txn)
            .await?;
        if let Some(want) = claim {
            let rows: Vec<(i64, String, i64)> = dynamic_block::Entity::find()
                .select_only()
                .column(dynamic_block::Column::First)
                .column(dynamic_block::Column::Agent)
                .column(dynamic_block::Column::ExpiresAt)
                .filter(dynamic_block::Column::Network.eq(network))
                .into_tuple()
                .all(&txn)
                .await?;
            // Claims double what the agent holds (up to 64 blocks at once), so a busy segment
            // needs few round trips.
            let held = rows
                .iter()
                .filter(|(_, a, at)| a == agent && *at > now)
                .count();
            // A first claim in a large range takes a sixteenth of it (at most 8 blocks), so a
            // burst of new machines does not run dry while the next claim is on its way.
            let blocks_in_range =
                usize::try_from(range.len().div_ceil(u64::from(block_size))).unwrap_or(usize::MAX);
            let floor = (blocks_in_range / 16).clamp(1, 8);
            let asked =
                usize::try_from(want.div_ceil(u64::from(block_size.max(1)))).unwrap_or(usize::MAX);
            let mut wanted = held.clamp(floor, 64).max(asked).min(MAX_BLOCKS_PER_CLAIM);
            let taken: std::collections::HashMap<i64, i64> =
                rows.into_iter().map(|(f, _, at)| (f, at)).collect();
            let mut first = start;
            while first <= end {
                let last = (first + i64::from(block_size) - 1).min(end);
                if wanted == 0 {
                    break;
                }
                match taken.get(&first) {
                    None => {
                        dynamic_block::Entity::insert(dynamic_block::ActiveModel {
                            network: Set(network.to_owned()),
                            first: Set(first),
                            last: Set(last),
                            agent: Set(agent.to_owned()),
                            expires_at: Set(expires),
                        })
                        .exec_without_returning(&txn)
                        .await?;
                        wanted -= 1;
                    }
                    Some(at) if *at <= now => {
                        // An expired claim: take it over only if nobody renewed it meanwhile.
                        let res = dynamic_block::Entity::update_many()
                            .col_expr(dynamic_block::Column::Agent, Expr::value(agent))
                            .col_expr(dynamic_block::Column::Last, Expr::value(last))
                            .col_expr(dynamic_block::Column::ExpiresAt, Expr::value(expires))
                            .filter(dynamic_block::Column::Network.eq(network))
                            .filter(dynamic_block::Column::First.eq(first))
                            .filter(dynamic_block::Column::ExpiresAt.lte(now))
                            .exec(&txn)
                            .await?;
                        if res.rows_affected == 1 {
                            wanted -= 1;
                        }
                    }
                    Some(_) => {}
                }
                first = last + 1;
            }
        }
        let rows = dynamic_block::Entity::find()
            .filter(mine)
            .order_by_asc(dynamic_block::Column::First)
            .all(&txn)
            .await?;
        txn.commit().await?;
        let ip = |v: i64| {
            u32::try_from(v)
                .map(Ipv4Addr::from)
                .map_err(|e| corrupt(format!("dynamic block of {network}"), e))
        };
        rows.into_iter()
            .filter(|r| r.first >= start && r.last <= end)
            .map(|r| {
                Ok(Block {
                    range: IpRange {
                        start: ip(r.first)?,
                        end: ip(r.last)?,
                    },
                    expires_at: r.expires_at,
                })
            })
            .collect()
    }

    /// Records machines seen by the agents (by MAC: the latest sighting wins, the first is kept).
    pub async fn record_discovered(&self, machines: &[DiscoveredRecord]) -> Result<()> {
        let txn = self.begin_write().await?;
        for chunk in machines.chunks(ROWS_PER_STATEMENT) {
            let rows = chunk.iter().map(|m| discovered::ActiveModel {
                mac: Set(m.mac.clone()),
                ip: Set(m.ip.clone()),
                network: Set(m.network.clone()),
                agent: Set(m.agent.clone()),
                client_arch: Set(m.client_arch),
                vendor_class: Set(m.vendor_class.clone()),
                first_seen: Set(m.first_seen),
                last_seen: Set(m.last_seen),
            });
            discovered::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(discovered::Column::Mac)
                        .update_columns([
                            discovered::Column::Ip,
                            discovered::Column::Network,
                            discovered::Column::Agent,
                            discovered::Column::ClientArch,
                            discovered::Column::VendorClass,
                            discovered::Column::LastSeen,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Forgets machines not seen since `seen_before` (Unix ms), then the least recently seen
    /// beyond `keep`: anything on the provisioning network can make up MACs, so the table must
    /// not grow with them. Returns how many were forgotten.
    pub async fn expire_discovered(&self, seen_before: i64, keep: u64) -> Result<u64> {
        let txn = self.begin_write().await?;
        let mut gone = discovered::Entity::delete_many()
            .filter(discovered::Column::LastSeen.lt(seen_before))
            .exec(&txn)
            .await?
            .rows_affected;
        // The last_seen of the `keep`-th most recently seen machine; older ones go.
        let cutoff: Option<i64> = discovered::Entity::find()
            .select_only()
            .column(discovered::Column::LastSeen)
            .order_by_desc(discovered::Column::LastSeen)
            .offset(keep)
            .limit(1)
            .into_tuple()
            .one(&txn)
            .await?;
        if let Some(cutoff) = cutoff {
            gone += discovered::Entity::delete_many()
                .filter(discovered::Column::LastSeen.lte(cutoff))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(gone)
    }

    /// Discovered machines whose MAC no node has (yet), oldest first: one page of at most
    /// `limit` rows, starting after `after` (a previous page's next key), and the key to ask
    /// for the next page with (none after the last page).
    pub async fn list_discovered(
        &self,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<(Vec<DiscoveredRecord>, Option<(i64, String)>)> {
        let mut query = discovered::Entity::find();
        if let Some((first_seen, mac)) = after {
            query = query.filter(
                Condition::any()
                    .add(discovered::Column::FirstSeen.gt(first_seen))
                    .add(
                        Condition::all()
                            .add(discovered::Column::FirstSeen.eq(first_seen))
                            .add(discovered::Column::Mac.gt(mac)),
                    ),
            );
        }
        let rows = query
            .order_by_asc(discovered::Column::FirstSeen)
            .order_by_asc(discovered::Column::Mac)
            .limit(limit)
            .all(&self.db)
            .await?;
        let next = (rows.len() as u64 == limit)
            .then(|| rows.last().map(|r| (r.first_seen, r.mac.clone())))
            .flatten();
        let macs: Vec<String> = rows.iter().map(|r| r.mac.clone()).collect();
        let mut adopted = std::collections::HashSet::new();
        for chunk in macs.chunks(KEYS_PER_QUERY) {
            let found: Vec<String> = nic::Entity::find()
                .select_only()
                .column(nic::Column::Mac)
                .filter(nic::Column::Mac.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.db)
                .await?;
            adopted.extend(found);
        }
        let page = rows
            .into_iter()
            .filter(|r| !adopted.contains(&r.mac))
            .map(|m| DiscoveredRecord {
                mac: m.mac,
                ip: m.ip,
                network: m.network,
                agent: m.agent,
                client_arch: m.client_arch,
                vendor_class: m.vendor_class,
                first_seen: m.first_seen,
                last_seen: m.last_seen,
            })
            .collect();
        Ok((page, next))
    }
}
