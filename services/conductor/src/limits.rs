//! Bounds on driver calls, so one slow or dead BMC never stalls the others: a concurrency limit
//! per driver, one per endpoint (BMC or hypervisor address), and a timeout per operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
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

    fn endpoint(&self, mgt: Mgt, address: &str) -> Arc<Semaphore> {
        let permits = if mgt == Mgt::Kvm {
            self.config.per_hypervisor
        } else {
            self.config.per_bmc
        };
        let mut map = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(format!("{mgt}/{address}"))
            .or_insert_with(|| Arc::new(Semaphore::new(permits.max(1))))
            .clone()
    }

    /// Runs `op` within the limits of its driver and endpoint, and its timeout.
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
            Some(s) => Some(
                s.acquire()
                    .await
                    .map_err(|_| DriverError::Remote("conductor stopping".into()))?,
            ),
            None => None,
        };
        if let Some(h) = &self.queue_wait {
            h.observe(queued.elapsed().as_secs_f64());
        }
        match tokio::time::timeout(self.config.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Remote(format!(
                "no answer within {:?}",
                self.config.timeout
            ))),
        }
    }
}
