//! A set of tasks, each spawned for a key (a node, a shard's names), that reports the key of a
//! task that panicked or was cancelled, so every node still gets exactly one result.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};

pub struct KeyedTasks<K, T> {
    set: JoinSet<T>,
    keys: HashMap<Id, K>,
}

impl<K, T: Send + 'static> KeyedTasks<K, T> {
    pub fn new() -> Self {
        Self {
            set: JoinSet::new(),
            keys: HashMap::new(),
        }
    }

    /// Spawns `task` for `key`.
    pub fn spawn(&mut self, key: K, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.keys.insert(handle.id(), key);
    }

    /// The next task to end: its answer, or its key with why it gave none. `None` when all ended.
    pub async fn next(&mut self) -> Option<Result<T, (K, JoinError)>> {
        loop {
            match self.set.join_next_with_id().await? {
                Ok((id, answer)) => {
                    self.keys.remove(&id);
                    return Some(Ok(answer));
                }
                Err(e) => {
                    if let Some(key) = self.keys.remove(&e.id()) {
                        return Some(Err((key, e)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_gives_back_its_key() {
        let mut tasks = KeyedTasks::new();
        for i in 0..5u32 {
            tasks.spawn(i, async move {
                tokio::task::yield_now().await;
                assert_ne!(i, 3, "task 3 panics");
                i * 10
            });
        }
        let (mut answers, mut failed) = (Vec::new(), Vec::new());
        while let Some(r) = tasks.next().await {
            match r {
                Ok(v) => answers.push(v),
                Err((key, e)) => {
                    assert!(e.is_panic());
                    failed.push(key);
                }
            }
        }
        answers.sort_unstable();
        assert_eq!(answers, [0, 10, 20, 40]);
        assert_eq!(failed, [3]);
    }
}
