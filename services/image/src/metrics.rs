//! The image service's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use xcat3_runtime::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: String,
}

/// What the image service did.
#[derive(Clone)]
pub struct ImageMetrics {
    /// ISO imports by result: imported, already, refused, failed.
    pub imports: Family<ResultLabel, Counter>,
    /// Install files rendered, by file (kickstart, preseed, user-data, meta-data).
    pub deploy_files: Family<FileLabel, Counter>,
    /// Install-file requests refused because they did not come from the node's address.
    pub deploy_files_refused: Counter,
    /// Install callbacks by result: deployed, deploy-failed, unknown, refused.
    pub callbacks: Family<ResultLabel, Counter>,
    /// Callback transactions (each commits a group of callbacks).
    pub callback_commits: Counter,
    /// From the deploy request to the installed system's callback, by result.
    pub deploy_durations: Family<ResultLabel, Histogram, fn() -> Histogram>,
    /// Install-tree bytes sent (kernels, initrds, packages).
    pub tree_bytes: Counter,
}

fn deploy_histogram() -> Histogram {
    // 10 s .. ~5.7 h
    Histogram::new(exponential_buckets(10.0, 2.0, 12))
}

impl Default for ImageMetrics {
    fn default() -> Self {
        Self {
            imports: Family::default(),
            deploy_files: Family::default(),
            deploy_files_refused: Counter::default(),
            callbacks: Family::default(),
            callback_commits: Counter::default(),
            deploy_durations: Family::new_with_constructor(deploy_histogram as fn() -> Histogram),
            tree_bytes: Counter::default(),
        }
    }
}

impl ImageMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register("image_imports", "ISO imports, by result", m.imports.clone());
        metrics.register(
            "image_deploy_files",
            "Install files rendered for deploys, by file",
            m.deploy_files.clone(),
        );
        metrics.register(
            "image_deploy_files_refused",
            "Install-file requests refused: not from the node's address",
            m.deploy_files_refused.clone(),
        );
        metrics.register(
            "image_callbacks",
            "Install callbacks received, by result",
            m.callbacks.clone(),
        );
        metrics.register(
            "image_callback_commits",
            "Database transactions that recorded install callbacks (each holds a group)",
            m.callback_commits.clone(),
        );
        metrics.register(
            "deploy_duration_seconds",
            "From the deploy request to the installed system's callback, by result",
            m.deploy_durations.clone(),
        );
        metrics.register(
            "image_tree_sent_bytes",
            "Install-tree bytes sent to nodes",
            m.tree_bytes.clone(),
        );
        // Series the dashboards graph exist from the start.
        for r in ["imported", "already", "refused", "failed"] {
            let _ = m.imports.get_or_create(&ResultLabel { result: r.into() });
        }
        for file in ["kickstart", "preseed", "user-data", "meta-data"] {
            let _ = m
                .deploy_files
                .get_or_create(&FileLabel { file: file.into() });
        }
        for r in ["deployed", "deploy-failed"] {
            let _ = m
                .deploy_durations
                .get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["deployed", "deploy-failed", "unknown", "refused"] {
            let _ = m.callbacks.get_or_create(&ResultLabel { result: r.into() });
        }
        m
    }

    pub fn import(&self, result: &str) {
        self.imports
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn callback(&self, result: &str) {
        self.callbacks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }
}
