//! The agent's Prometheus metrics.

use dhcproto::v4::MessageType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use xcat3_runtime::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScriptLabel {
    pub script: String,
}

/// Counters of everything the agent answers.
#[derive(Clone, Default)]
pub struct AgentMetrics {
    dhcp_replies: Family<TypeLabel, Counter>,
    dhcp_ignored: Family<ReasonLabel, Counter>,
    pub dhcp_send_errors: Counter,
    pub tftp_transfers: Family<ReasonLabel, Counter>,
    pub tftp_bytes: Counter,
    pub http_scripts: Family<ScriptLabel, Counter>,
    pub http_bytes: Counter,
    pub table_revision: Gauge,
    pub table_hosts: Gauge,
    pub api_connected: Gauge,
    dns_queries: Counter,
}

impl AgentMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "dhcp_replies",
            "DHCP replies sent, by message type",
            m.dhcp_replies.clone(),
        );
        metrics.register(
            "dhcp_ignored",
            "DHCP requests not answered, by reason",
            m.dhcp_ignored.clone(),
        );
        metrics.register(
            "dhcp_send_errors",
            "DHCP replies that could not be sent",
            m.dhcp_send_errors.clone(),
        );
        metrics.register(
            "tftp_transfers",
            "TFTP read requests, by result",
            m.tftp_transfers.clone(),
        );
        metrics.register(
            "tftp_sent_bytes",
            "File bytes sent over TFTP",
            m.tftp_bytes.clone(),
        );
        metrics.register(
            "http_boot_scripts",
            "iPXE scripts served, by kind",
            m.http_scripts.clone(),
        );
        metrics.register(
            "http_boot_sent_bytes",
            "File bytes sent over the boot HTTP server",
            m.http_bytes.clone(),
        );
        metrics.register(
            "netboot_table_revision",
            "Inventory revision of the agent's boot table",
            m.table_revision.clone(),
        );
        metrics.register(
            "netboot_table_hosts",
            "NICs in the agent's boot table",
            m.table_hosts.clone(),
        );
        metrics.register(
            "netboot_api_connected",
            "1 while the agent follows the api's watch stream",
            m.api_connected.clone(),
        );
        metrics.register("dns_queries", "DNS queries answered", m.dns_queries.clone());
        // Series that dashboards graph start at 0 instead of appearing with the first event.
        for t in ["offer", "ack", "nak"] {
            let _ = m
                .dhcp_replies
                .get_or_create(&TypeLabel { r#type: t.into() });
        }
        let _ = m.dhcp_ignored.get_or_create(&ReasonLabel {
            reason: "malformed".into(),
        });
        for r in [
            "sent",
            "refused",
            "not found",
            "aborted by client",
            "failed",
        ] {
            let _ = m
                .tftp_transfers
                .get_or_create(&ReasonLabel { reason: r.into() });
        }
        for s in ["local", "install", "discovery"] {
            let _ = m
                .http_scripts
                .get_or_create(&ScriptLabel { script: s.into() });
        }
        m
    }

    pub fn dns_answered(&self) {
        self.dns_queries.inc();
    }

    pub fn dhcp_answered(&self, kind: MessageType) {
        let t = match kind {
            MessageType::Offer => "offer",
            MessageType::Ack => "ack",
            MessageType::Nak => "nak",
            _ => "other",
        };
        self.dhcp_replies
            .get_or_create(&TypeLabel { r#type: t.into() })
            .inc();
    }

    pub fn dhcp_ignored(&self, reason: &'static str) {
        self.dhcp_ignored
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}
