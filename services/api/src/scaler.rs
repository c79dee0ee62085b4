//! Optional conductor autoscaling on Kubernetes: every interval the api reads the node count and
//! sets the conductor Deployment's replicas to `ceil(nodes / nodes_per_conductor)`, within
//! `[min, max]`, through the Deployment's `scale` subresource (RBAC: `deployments/scale` get and
//! patch, granted by the chart). Shards move to new conductors by themselves; removed ones hand
//! theirs over on SIGTERM. Several api replicas may run it: they compute the same figure.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use xcat3_store::Store;

/// What to scale and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerConfig {
    /// The conductor Deployment.
    pub deployment: String,
    pub namespace: String,
    pub nodes_per_conductor: u64,
    pub min: i32,
    pub max: i32,
    pub interval: Duration,
}

/// The replicas for `nodes`: enough that none has more than `per` nodes, within `[min, max]`.
pub fn desired_replicas(nodes: u64, per: u64, min: i32, max: i32) -> i32 {
    let want = i32::try_from(nodes.div_ceil(per.max(1))).unwrap_or(i32::MAX);
    want.clamp(min.max(0), max.max(min.max(0)))
}

/// One look: reads the Deployment's scale and changes it if it differs from what `nodes` needs.
/// Returns `(was, now)` when it changed it.
pub async fn step(
    client: &kube::Client,
    config: &ScalerConfig,
    nodes: u64,
) -> Result<Option<(i32, i32)>, kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    let scale = api.get_scale(&config.deployment).await?;
    let current = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let desired = desired_replicas(nodes, config.nodes_per_conductor, config.min, config.max);
    if current == desired {
        return Ok(None);
    }
    let patch = serde_json::json!({ "spec": { "replicas": desired } });
    api.patch_scale(
        &config.deployment,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(Some((current, desired)))
}

/// Runs [`step`] every interval until `shutdown`; `desired` shows the last figure computed.
pub async fn run(
    client: kube::Client,
    config: ScalerConfig,
    store: Store,
    desired: Gauge,
    shutdown: CancellationToken,
) {
    tracing::info!(?config, "scaling the conductors from the node count");
    let mut tick = tokio::time::interval(config.interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let nodes = match store.node_state_counts().await {
            Ok(counts) => counts.iter().map(|(_, _, n)| *n).sum::<i64>().max(0) as u64,
            Err(e) => {
                tracing::warn!(error = %e, "scaler: counting nodes failed");
                continue;
            }
        };
        desired.set(i64::from(desired_replicas(
            nodes,
            config.nodes_per_conductor,
            config.min,
            config.max,
        )));
        match step(&client, &config, nodes).await {
            Ok(Some((was, now))) => {
                tracing::info!(nodes, was, now, deployment = %config.deployment, "conductors scaled")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, deployment = %config.deployment, "scaler: the Kubernetes API refused")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;

    fn config() -> ScalerConfig {
        ScalerConfig {
            deployment: "xcat3-conductor".into(),
            namespace: "xcat3".into(),
            nodes_per_conductor: 2000,
            min: 1,
            max: 8,
            interval: Duration::from_secs(30),
        }
    }

    fn scale(replicas: i32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "xcat3-conductor", "namespace": "xcat3"},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas},
        }))
        .unwrap()
    }

    #[test]
    fn replicas_follow_the_node_count_within_bounds() {
        assert_eq!(desired_replicas(0, 2000, 1, 8), 1);
        assert_eq!(desired_replicas(2000, 2000, 1, 8), 1);
        assert_eq!(desired_replicas(2001, 2000, 1, 8), 2);
        assert_eq!(desired_replicas(9_500, 2000, 1, 8), 5);
        assert_eq!(desired_replicas(1_000_000, 2000, 1, 8), 8);
        assert_eq!(
            desired_replicas(10, 0, 2, 8),
            8,
            "a zero ratio counts as one node each"
        );
        assert_eq!(
            desired_replicas(10, 2000, 3, 2),
            3,
            "max below min: min wins"
        );
    }

    /// Against a mocked Kubernetes API (no API server runs here): the scale is read, and patched
    /// only when it differs.
    #[tokio::test]
    async fn the_scale_subresource_is_read_and_patched_only_when_needed() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let path = "/apis/apps/v1/namespaces/xcat3/deployments/xcat3-conductor/scale";
        let apiserver = tokio::spawn(async move {
            // Round 1: 2 replicas, 9,500 nodes want 5.
            let (req, reply) = handle.next_request().await.expect("a GET");
            assert_eq!((req.method(), req.uri().path()), (&Method::GET, path));
            reply.send_response(Response::new(Body::from(scale(2))));
            let (req, reply) = handle.next_request().await.expect("a PATCH");
            assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, path));
            assert_eq!(
                req.headers()["content-type"],
                "application/merge-patch+json"
            );
            let body = req.into_body().collect_bytes().await.unwrap();
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patch, serde_json::json!({"spec": {"replicas": 5}}));
            reply.send_response(Response::new(Body::from(scale(5))));
            // Round 2: already 5: read only.
            let (req, reply) = handle.next_request().await.expect("a GET");
            assert_eq!(req.method(), Method::GET);
            reply.send_response(Response::new(Body::from(scale(5))));
            handle
        });
        assert_eq!(step(&client, &config(), 9_500).await.unwrap(), Some((2, 5)));
        assert_eq!(step(&client, &config(), 9_500).await.unwrap(), None);
        drop(client);
        let mut handle = apiserver.await.unwrap();
        assert!(
            handle.next_request().await.is_none(),
            "an unneeded PATCH was sent"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_not_a_panic() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        tokio::spawn(async move {
            let (_, reply) = handle.next_request().await.unwrap();
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "deployments.apps \"xcat3-conductor\" is forbidden",
                "reason": "Forbidden", "code": 403
            });
            let mut response = Response::new(Body::from(serde_json::to_vec(&status).unwrap()));
            *response.status_mut() = http::StatusCode::FORBIDDEN;
            reply.send_response(response);
        });
        let e = step(&client, &config(), 100).await.unwrap_err();
        assert!(e.to_string().contains("forbidden"), "{e}");
    }
}
