//! The image service's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
#[derive(Clone, Default)]
pub struct ImageMetrics {
    /// ISO imports by result: imported, already, refused, failed.
    pub imports: Family<ResultLabel, Counter>,
    /// Install files rendered, by file (kickstart, preseed, user-data, meta-data).
    pub deploy_files: Family<FileLabel, Counter>,
    /// Install callbacks by result: deployed, deploy-failed, unknown, refused.
    pub callbacks: Family<ResultLabel, Counter>,
    /// Callback transactions (each commits a group of callbacks).
    pub callback_commits: Counter,
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
            "image_callbacks",
            "Install callbacks received, by result",
            m.callbacks.clone(),
        );
        metrics.register(
            "image_callback_commits",
            "Database transactions that recorded install callbacks (each holds a group)",
            m.callback_commits.clone(),
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
