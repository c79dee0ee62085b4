//! The coordinator of the all-in-one server: no etcd, one member owns every shard.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    BoxFuture, Coordinator, FencingToken, Member, Membership, Owned, Result, ShardLocks, Snapshot,
};

/// One process, every shard. The fencing token is the join time in milliseconds, so a restarted
/// server's claims supersede those its previous run recorded in the database.
pub struct LocalCoordinator {
    shards: u32,
    member: Arc<Mutex<Option<Member>>>,
}

impl LocalCoordinator {
    pub fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            member: Arc::default(),
        }
    }
}

impl Coordinator for LocalCoordinator {
    fn shards(&self) -> u32 {
        self.shards
    }

    fn join(
        &self,
        member: Member,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<Membership>> {
        Box::pin(async move {
            *self.member.lock().unwrap_or_else(|e| e.into_inner()) = Some(member);
            let token = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_millis() as i64);
            let all: Owned = (0..self.shards).map(|s| (s, FencingToken(token))).collect();
            let (tx, rx) = watch::channel(all);
            let locks = ShardLocks::default();
            let task_locks = locks.clone();
            let registered = self.member.clone();
            let shards = self.shards;
            let done = tokio::spawn(async move {
                shutdown.cancelled().await;
                tx.send_replace(Owned::new());
                for shard in 0..shards {
                    let _ = task_locks.get(shard).write().await;
                }
                *registered.lock().unwrap_or_else(|e| e.into_inner()) = None;
            });
            Ok(Membership {
                owned: rx,
                locks,
                done: Arc::new(tokio::sync::Mutex::new(Some(done))),
                lease: Arc::default(),
            })
        })
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot>> {
        Box::pin(async move {
            let member = self
                .member
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(match member {
                Some(m) => Snapshot {
                    shards: self.shards,
                    owners: (0..self.shards).map(|s| (s, m.id.clone())).collect(),
                    members: vec![m],
                },
                None => Snapshot {
                    shards: self.shards,
                    ..Default::default()
                },
            })
        })
    }
}
