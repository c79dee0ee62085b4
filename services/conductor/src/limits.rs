//! Bounds on driver calls, so one slow or dead BMC never stalls the others: a concurrency limit
//! per driver, one per endpoint (BMC or hypervisor address), and a timeout per operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use xcat3_types::Mgt;

use crate::driver::DriverError;

/// How much a conductor may do at once.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Operations in flight per driver on this conductor.
    pub per_driver: usize,
    /// Operations in flight per BMC address (1: BMCs are fragile) ...
    pub per_bmc: usize,
    /// ... and per hypervisor (many VMs share one).
    pub per_hypervisor: usize,
    /// Longest a single operation may take.
    pub timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_driver: 256,
            per_bmc: 1,
            per_hypervisor: 8,
            timeout: Duration::from_secs(30),
        }
    }
}

pub struct Limits {
    config: LimitsConfig,
    /// Where the time spent waiting for a slot is recorded.
    queue_wait: Option<prometheus_client::metrics::histogram::Histogram>,
    per_driver: HashMap<Mgt, Arc<Semaphore>>,
    per_endpoint: Mutex<HashMap<String, Arc<Endpoint>>>,
}

/// One BMC or hypervisor: its concurrency limit and the last time it did not answer.
struct Endpoint {
    slots: Semaphore,
    /// Whether the slots are one per BMC (fail-fast applies) or shared by a hypervisor's VMs.
    is_bmc: bool,
    unreachable: Mutex<Option<(Instant, String)>>,
}

impl Endpoint {
    /// Why an operation queued at `queued` need not try: the BMC did not answer an operation
    /// that ended after this one was queued.
    fn known_dead_since(&self, queued: Instant) -> Option<String> {
        let last = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((at, reason)) if *at >= queued => Some(reason.clone()),
            _ => None,
        }
    }

    fn record(&self, result: &Result<impl Sized, DriverError>) {
        if !self.is_bmc {
            return;
        }
        let mut last = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(DriverError::Unreachable(reason)) => *last = Some((Instant::now(), reason.clone())),
            Ok(_) => *last = None,
            Err(_) => {}
        }
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        let per_driver = [Mgt::Ipmi, Mgt::Redfish, Mgt::Kvm]
            .into_iter()
            .map(|m| (m, Arc::new(Semaphore::new(config.per_driver))))
            .collect();
        Self {
            config,
            queue_wait: None,
            per_driver,
            per_endpoint: Mutex::default(),
        }
    }

    /// Records every operation's wait for a slot in `histogram`.
    pub fn with_queue_wait(
        mut self,
        histogram: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        self.queue_wait = Some(histogram);
        self
    }

    fn endpoint(&self, mgt: Mgt, address: &str) -> Arc<Endpoint> {
        let is_bmc = mgt != Mgt::Kvm;
        let permits = if is_bmc {
            self.config.per_bmc
        } else {
            self.config.per_hypervisor
        };
        let mut map = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(format!("{mgt}/{address}"))
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    slots: Semaphore::new(permits.max(1)),
                    is_bmc,
                    unreachable: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Runs `op` within the limits of its driver and endpoint, and its timeout. An operation
    /// that waited for a BMC which meanwhile failed to answer another operation fails at once
    /// with that reason: ten nodes behind one dead BMC cost one timeout, not ten.
    pub async fn run<T>(
        &self,
        mgt: Option<Mgt>,
        endpoint: Option<&str>,
        op: impl std::future::Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        let queued = std::time::Instant::now();
        let _driver = match mgt.and_then(|m| self.per_driver.get(&m)) {
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|_| DriverError::Remote("conductor stopping".into()))?,
            ),
            None => None,
        };
        let endpoint_sem = match (mgt, endpoint) {
            (Some(m), Some(a)) => Some(self.endpoint(m, a)),
            _ => None,
        };
        let _endpoint = match &endpoint_sem {
            Some(e) => Some(
                e.slots
                    .acquire()
                    .await
                    .map_err(|_| DriverError::Remote("conductor stopping".into()))?,
            ),
            None => None,
        };
        if let Some(h) = &self.queue_wait {
            h.observe(queued.elapsed().as_secs_f64());
        }
        if let Some(reason) = endpoint_sem
            .as_ref()
            .and_then(|e| e.known_dead_since(queued))
        {
            return Err(DriverError::Unreachable(format!(
                "{reason} (not tried: the BMC did not answer the operation before this one)"
            )));
        }
        let result = match tokio::time::timeout(self.config.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Unreachable(format!(
                "no answer within {:?}",
                self.config.timeout
            ))),
        };
        if let Some(e) = &endpoint_sem {
            e.record(&result);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn limits() -> Arc<Limits> {
        Arc::new(Limits::new(LimitsConfig {
            timeout: Duration::from_millis(50),
            ..LimitsConfig::default()
        }))
    }

    /// Runs `n` operations at once on one endpoint; each one that is tried never answers.
    async fn queue_on_dead(limits: &Arc<Limits>, mgt: Mgt, n: usize) -> (usize, Vec<String>) {
        let tried = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (limits, tried) = (limits.clone(), tried.clone());
            tasks.push(tokio::spawn(async move {
                limits
                    .run(Some(mgt), Some("10.0.0.9:623"), async {
                        tried.fetch_add(1, SeqCst);
                        std::future::pending::<Result<(), DriverError>>().await
                    })
                    .await
            }));
        }
        let mut errors = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Err(DriverError::Unreachable(m)) => errors.push(m),
                other => panic!("{other:?}"),
            }
        }
        (tried.load(SeqCst), errors)
    }

    #[tokio::test]
    async fn operations_queued_behind_a_dead_bmc_fail_at_once() {
        let limits = limits();
        let (tried, errors) = queue_on_dead(&limits, Mgt::Ipmi, 10).await;
        assert_eq!(tried, 1, "only the first operation waited for the BMC");
        assert_eq!(errors.iter().filter(|e| e.contains("not tried")).count(), 9);
        // A later request tries the BMC again (it may be back).
        let answered = limits
            .run(Some(Mgt::Ipmi), Some("10.0.0.9:623"), async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(answered, 7);
    }

    #[tokio::test]
    async fn a_hypervisor_is_not_one_bmc() {
        // Eight VMs at a time on one hypervisor: each waits out its own timeout.
        let (tried, errors) = queue_on_dead(&limits(), Mgt::Kvm, 10).await;
        assert_eq!(tried, 10);
        assert!(errors.iter().all(|e| !e.contains("not tried")));
    }
}
