//! Deploying an OS image on the nodes of owned shards, and the deploy deadline.
//!
//! Per shard: check every node, move those that pass to `deploying` with a fresh callback token
//! (one fenced transaction, which also raises the inventory revision, so the network agents get
//! the install boot action), optionally set net boot and power-cycle, then `wait-callback`. The
//! installed system's callback reaches the image service, which ends the deploy; a deploy whose
//! deadline passes is failed here by [`Executor::fail_expired`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use xcat3_coord::{FencingToken, ShardId, shard_of};
use xcat3_store::{ChangeOutcome, DeployStart, Fence, OsImage, StateChange};
use xcat3_types::{ErrorCode, Network, Node, NodeOutcome, ProvisionEvent};

use crate::driver::{BootDevice, PowerAction};
use crate::tasks::KeyedTasks;
use crate::work::{Executor, err, ok};

/// What a deploy request asks for.
#[derive(Debug, Clone)]
pub struct DeployParams {
    /// None: each node's own osimage.
    pub osimage: Option<String>,
    pub reboot: bool,
    pub timeout: Duration,
    pub ssh_keys: Vec<String>,
}

/// Why `node` cannot be deployed with what is defined, as (field, reason).
fn check(
    node: &Node,
    image: Option<&str>,
    images: &HashMap<String, OsImage>,
    networks: &[Network],
    reboot: bool,
) -> Result<String, (&'static str, String)> {
    let Some(name) = image.or(node.osimage.as_deref()) else {
        return Err((
            "osimage",
            "no osimage: give --osimage or set the node's osimage attribute".into(),
        ));
    };
    let Some(image) = images.get(name) else {
        return Err(("osimage", format!("osimage {name:?} does not exist")));
    };
    if image.arch != node.arch.as_str() {
        return Err((
            "arch",
            format!(
                "osimage {name} is for {}, the node is {}",
                image.arch, node.arch
            ),
        ));
    }
    let Some(nic) = node.nics.iter().find(|n| n.primary) else {
        return Err(("nics", "the node has no NIC to boot from".into()));
    };
    let Some(ip) = nic.ip else {
        return Err((
            "nics",
            format!("NIC {} has no IP address to install with", nic.name),
        ));
    };
    if !networks.iter().any(|n| n.contains(ip)) {
        return Err((
            "nics",
            format!("NIC {}'s address {ip} is in no defined network", nic.name),
        ));
    }
    if reboot && node.mgt.is_none() {
        return Err((
            "mgt",
            "--reboot needs a power driver (mgt) on the node".into(),
        ));
    }
    Ok(name.to_owned())
}

fn refused(name: &str, outcome: ChangeOutcome) -> NodeOutcome {
    match outcome {
        ChangeOutcome::Refused(r) => err(
            name,
            ErrorCode::FailedPrecondition,
            "provision_state",
            r.to_string(),
        ),
        ChangeOutcome::NotFound => err(name, ErrorCode::NotFound, "name", "no such node"),
        ChangeOutcome::Done(s) => ok(name, s.as_str()),
    }
}

impl Executor {
    pub async fn deploy(
        self: &Arc<Self>,
        names: Vec<String>,
        params: DeployParams,
        tx: mpsc::Sender<Vec<NodeOutcome>>,
    ) {
        let params = Arc::new(params);
        self.by_shard(names, tx, move |me, shard, token, names| {
            let params = params.clone();
            async move { me.deploy_shard(shard, token, names, &params).await }
        })
        .await
    }

    pub async fn undeploy(
        self: &Arc<Self>,
        names: Vec<String>,
        tx: mpsc::Sender<Vec<NodeOutcome>>,
    ) {
        self.by_shard(names, tx, |me, shard, token, names| async move {
            let changes = same_change(&names, ProvisionEvent::Undeploy, "requested");
            match me.change_states(shard, token, &changes).await {
                Err(results) => results,
                Ok(outcomes) => names
                    .iter()
                    .zip(outcomes)
                    .map(|(n, o)| match o {
                        // Undeploying an available node leaves it as it is.
                        ChangeOutcome::Refused(r)
                            if r.from == xcat3_types::ProvisionState::Available =>
                        {
                            ok(n, "available")
                        }
                        o => refused(n, o),
                    })
                    .collect(),
            }
        })
        .await
    }

    /// Applies state changes to one shard's nodes with its fencing token; on failure, the
    /// per-node errors to answer with.
    async fn change_states(
        &self,
        shard: ShardId,
        token: FencingToken,
        changes: &[StateChange],
    ) -> Result<Vec<ChangeOutcome>, Vec<NodeOutcome>> {
        let fence = Fence {
            shard,
            token: token.0,
            conductor: &self.id,
        };
        self.store
            .change_states(Some(fence), &self.id, changes)
            .await
            .map_err(|e| {
                let (code, why) = match e {
                    xcat3_store::Error::Fenced { .. } => (
                        ErrorCode::Aborted,
                        format!("shard {shard} moved to another conductor; nothing was changed"),
                    ),
                    e => (ErrorCode::Unavailable, format!("recording the state: {e}")),
                };
                changes
                    .iter()
                    .map(|c| err(&c.node, code, "", why.clone()))
                    .collect()
            })
    }

    async fn deploy_shard(
        self: &Arc<Self>,
        shard: ShardId,
        token: FencingToken,
        names: Vec<String>,
        params: &DeployParams,
    ) -> Vec<NodeOutcome> {
        let unavailable = |e: &dyn std::fmt::Display| -> Vec<NodeOutcome> {
            names
                .iter()
                .map(|n| err(n, ErrorCode::Unavailable, "", format!("database: {e}")))
                .collect()
        };
        let (records, images, networks) = match tokio::try_join!(
            self.store.get_nodes(&names),
            self.store.list_osimages(),
            self.store.list_networks()
        ) {
            Ok(r) => r,
            Err(e) => return unavailable(&e),
        };
        let images: HashMap<String, OsImage> =
            images.into_iter().map(|i| (i.name.clone(), i)).collect();
        let mut nodes: HashMap<String, Node> = records
            .into_iter()
            .map(|r| (r.node.name.clone(), r.node))
            .collect();
        let deadline = xcat3_store::now_ms() + params.timeout.as_millis() as i64;
        let trace_context = xcat3_runtime::trace_context::current_traceparent();
        let mut results = Vec::with_capacity(names.len());
        let mut changes = Vec::new();
        for name in &names {
            let Some(node) = nodes.get(name) else {
                results.push(err(name, ErrorCode::NotFound, "name", "no such node"));
                continue;
            };
            match check(
                node,
                params.osimage.as_deref(),
                &images,
                &networks,
                params.reboot,
            ) {
                Err((field, reason)) => {
                    results.push(err(name, ErrorCode::FailedPrecondition, field, reason))
                }
                Ok(osimage) => changes.push(StateChange {
                    node: name.clone(),
                    event: ProvisionEvent::Deploy,
                    message: format!("osimage {osimage}"),
                    start: Some(DeployStart {
                        osimage,
                        token: xcat3_runtime::config::random_token(),
                        deadline,
                        ssh_keys: params.ssh_keys.clone(),
                        reboot: params.reboot,
                        trace_context: trace_context.clone(),
                    }),
                }),
            }
        }
        if changes.is_empty() {
            return results;
        }
        let outcomes = match self.change_states(shard, token, &changes).await {
            Ok(o) => o,
            Err(errors) => {
                results.extend(errors);
                return results;
            }
        };
        let mut started = Vec::new();
        for (change, outcome) in changes.into_iter().zip(outcomes) {
            match outcome {
                ChangeOutcome::Done(_) => started.push(change.node),
                o => results.push(refused(&change.node, o)),
            }
        }
        // The install boot action is published (the revision was raised with the state). Now
        // boot the nodes into it if asked.
        let mut next = Vec::with_capacity(started.len());
        if params.reboot {
            let mut calls = KeyedTasks::new();
            for name in started {
                let Some(node) = nodes.remove(&name) else {
                    continue;
                };
                let me = self.clone();
                calls.spawn(name, async move {
                    let outcome = me.boot_into_installer(&node).await;
                    (node.name, outcome)
                });
            }
            while let Some(joined) = calls.next().await {
                next.push(match joined {
                    Ok((name, Ok(()))) => {
                        published(name, "booting the installer (net boot, power boot)")
                    }
                    Ok((name, Err(e))) => fail(name, format!("booting the installer failed: {e}")),
                    // A failed task still ends its node's deploy, never leaves it deploying.
                    Err((name, e)) => {
                        tracing::error!(node = %name, error = %e, "booting the installer: the task failed");
                        fail(name, format!("booting the installer failed unexpectedly: {e}"))
                    }
                });
            }
        } else {
            next.extend(started.into_iter().map(|n| {
                published(
                    n,
                    "boot configuration published; power the node on to install",
                )
            }));
        }
        match self.change_states(shard, token, &next).await {
            Err(errors) => results.extend(errors),
            Ok(outcomes) => {
                for (change, outcome) in next.iter().zip(outcomes) {
                    results.push(match (change.event, outcome) {
                        (ProvisionEvent::Published, ChangeOutcome::Done(s)) => {
                            ok(&change.node, s.as_str())
                        }
                        (ProvisionEvent::Fail, ChangeOutcome::Done(_)) => err(
                            &change.node,
                            ErrorCode::Unavailable,
                            "mgt",
                            change.message.clone(),
                        ),
                        (_, o) => refused(&change.node, o),
                    });
                }
            }
        }
        results
    }

    /// Next boot from the network, then power on (or reset when on), within the driver limits.
    async fn boot_into_installer(&self, node: &Node) -> Result<(), crate::driver::DriverError> {
        let endpoint = crate::driver::Drivers::endpoint(node);
        self.limits
            .run(node.mgt, endpoint.as_deref(), async {
                self.drivers
                    .boot_device(node, Some(BootDevice::Net))
                    .await?;
                self.drivers
                    .power(node, PowerAction::Boot)
                    .await
                    .map(|_| ())
            })
            .await
    }

    /// Fails the deploys of owned nodes whose deadline passed.
    pub async fn fail_expired(self: &Arc<Self>) -> xcat3_store::Result<usize> {
        let owned = self.membership.owned();
        let names: Vec<String> = self
            .store
            .expired_deploys(xcat3_store::now_ms())
            .await?
            .into_iter()
            .filter(|n| owned.contains_key(&shard_of(n, self.shards)))
            .collect();
        let count = names.len();
        if count == 0 {
            return Ok(0);
        }
        let (tx, mut rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            me.by_shard(names, tx, |me, shard, token, names| async move {
                let changes = same_change(
                    &names,
                    ProvisionEvent::Timeout,
                    "no callback from the installed system before the deadline",
                );
                match me.change_states(shard, token, &changes).await {
                    Err(results) => results,
                    Ok(outcomes) => names
                        .iter()
                        .zip(outcomes)
                        .map(|(n, o)| refused(n, o))
                        .collect(),
                }
            })
            .await
        });
        while rx.recv().await.is_some() {}
        tracing::info!(nodes = count, "deploys timed out");
        Ok(count)
    }
}

/// The same event for every node of `names`.
fn same_change(names: &[String], event: ProvisionEvent, message: &str) -> Vec<StateChange> {
    names
        .iter()
        .map(|n| StateChange {
            node: n.clone(),
            event,
            message: message.into(),
            start: None,
        })
        .collect()
}

fn published(node: String, message: &str) -> StateChange {
    StateChange {
        node,
        event: ProvisionEvent::Published,
        message: message.into(),
        start: None,
    }
}

fn fail(node: String, message: String) -> StateChange {
    StateChange {
        node,
        event: ProvisionEvent::Fail,
        message,
        start: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xcat3_types::{MacAddr, Nic};

    fn image(arch: &str) -> HashMap<String, OsImage> {
        let i = OsImage {
            name: "rocky9.4-x86_64-install-compute".into(),
            distro: "rocky".into(),
            version: "9.4".into(),
            arch: arch.into(),
            install_method: "kickstart".into(),
            kernel: "k".into(),
            initrd: "i".into(),
            repo_root: "trees/x".into(),
            created_at: 0,
            source: "x.iso".into(),
            sha256: "00".into(),
        };
        HashMap::from([(i.name.clone(), i)])
    }

    fn node(ip: Option<&str>) -> Node {
        let mut n = Node::new("n1");
        n.nics.push(Nic {
            name: "eth0".into(),
            mac: "52:54:00:00:00:01".parse::<MacAddr>().unwrap(),
            ip: ip.map(|i| i.parse().unwrap()),
            primary: true,
        });
        n
    }

    fn nets() -> Vec<Network> {
        let n = Network::new(
            "prov",
            "10.0.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        );
        n.validate().unwrap();
        vec![n]
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        let images = image("x86_64");
        let name = "rocky9.4-x86_64-install-compute";
        let good = node(Some("10.0.0.5"));
        assert_eq!(
            check(&good, Some(name), &images, &nets(), false),
            Ok(name.to_owned())
        );
        assert_eq!(
            check(&good, None, &images, &nets(), false).unwrap_err().0,
            "osimage"
        );
        assert_eq!(
            check(&good, Some("nope"), &images, &nets(), false)
                .unwrap_err()
                .0,
            "osimage"
        );
        assert_eq!(
            check(&good, Some(name), &image("aarch64"), &nets(), false)
                .unwrap_err()
                .0,
            "arch"
        );
        assert_eq!(
            check(&node(None), Some(name), &images, &nets(), false)
                .unwrap_err()
                .0,
            "nics"
        );
        let outside = node(Some("192.168.1.5"));
        assert_eq!(
            check(&outside, Some(name), &images, &nets(), false)
                .unwrap_err()
                .0,
            "nics"
        );
        assert_eq!(
            check(&good, Some(name), &images, &nets(), true)
                .unwrap_err()
                .0,
            "mgt"
        );
    }

    #[test]
    fn tokens_are_unique_and_long() {
        let a = xcat3_runtime::config::random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, xcat3_runtime::config::random_token());
    }
}
