//! The coordinator of the all-in-one server: no etcd, one member owns every shard.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    BoxFuture, Coordinator, FencingToken, Member, Membership, Owned, Result, ShardLocks, Snapshot,
};

/// One process, every shard. The fencing token is the join time in milliseconds, but never at or
/// below the highest epoch the database holds (`floor`), so a restarted server's claims supersede
/// those its previous run recorded even when the clock stepped back (NTP, a restored VM).
pub struct LocalCoordinator {
    shards: u32,
    floor: AtomicI64,
    member: Arc<Mutex<Option<Member>>>,
}

impl LocalCoordinator {
    pub fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            floor: AtomicI64::new(0),
            member: Arc::default(),
        }
    }

    /// Tokens will be above `epoch` (the highest stored shard epoch).
    pub fn above(self, epoch: i64) -> Self {
        self.floor.fetch_max(epoch, Ordering::Relaxed);
        self
    }

    /// The token for a join at `now_ms`.
    fn token(&self, now_ms: i64) -> i64 {
        now_ms.max(self.floor.load(Ordering::Relaxed).saturating_add(1))
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
            let token = self.token(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as i64),
            );
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

    /// Applies to the next join (tokens are fixed for a membership's life).
    fn raise_above(&self, epoch: i64) -> BoxFuture<'_, Result<()>> {
        self.floor.fetch_max(epoch, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_fall_below_the_stored_epoch() {
        let c = LocalCoordinator::new(4);
        assert_eq!(c.token(1_000), 1_000);
        // The clock stepped back an hour below what the last run recorded.
        let c = LocalCoordinator::new(4).above(5_000_000);
        assert_eq!(c.token(1_400_000), 5_000_001);
        assert_eq!(c.token(9_000_000), 9_000_000);
        assert_eq!(LocalCoordinator::new(1).above(i64::MAX).token(0), i64::MAX);
    }
}
