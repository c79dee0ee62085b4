//! The image service's HTTP side, what installing nodes talk to (`GET /trees/...`, the install
//! trees, is answered before this router by `trees.rs`):
//! - `GET /deploy/<token>/<file>`: the deploy's kickstart, preseed or cloud-init files;
//! - `POST /deploy/<token>/done` and `/failed`: the installed system's callback;
//! - `GET /healthz`.
//!
//! Callbacks are committed in groups: whatever arrives while one transaction runs goes into the
//! next, so a thousand nodes finishing at once cost a handful of transactions.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};
use xcat3_runtime::http::PeerAddr;
use xcat3_store::{CallbackError, CallbackReport, Store};
use xcat3_types::InstallMethod;

use crate::import::Layout;
use crate::metrics::ImageMetrics;
use crate::render::{self, Context};

/// Largest callbacks committed in one transaction.
const CALLBACKS_PER_COMMIT: usize = 1000;
/// Largest failure report kept from an installer.
const MAX_REPORT: usize = 4096;

type Pending = (
    CallbackReport,
    oneshot::Sender<Result<xcat3_store::Finished, CallbackError>>,
);

pub struct HttpState {
    pub store: Store,
    pub layout: Layout,
    pub base_url: String,
    pub metrics: ImageMetrics,
    /// Deploy files and callbacks only from the node's primary NIC address.
    pub source_check: bool,
    callbacks: mpsc::Sender<Pending>,
}

pub fn router(
    store: Store,
    layout: Layout,
    base_url: String,
    metrics: ImageMetrics,
    source_check: bool,
) -> Router {
    let (tx, rx) = mpsc::channel(4 * CALLBACKS_PER_COMMIT);
    tokio::spawn(commit_callbacks(store.clone(), rx, metrics.clone()));
    let state = Arc::new(HttpState {
        store,
        layout,
        base_url,
        metrics,
        source_check,
        callbacks: tx,
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/deploy/{token}/{file}", get(deploy_file))
        .route("/deploy/{token}/done", post(done))
        .route("/deploy/{token}/failed", post(failed))
        .with_state(state)
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, body).into_response()
}

/// The caller's address as the checks compare it (IPv4-mapped IPv6 as IPv4); `None` when the
/// check is off.
fn checked_source(state: &HttpState, peer: Option<Extension<PeerAddr>>) -> Option<String> {
    state.source_check.then(|| {
        peer.map_or_else(
            || "unknown".to_owned(),
            |Extension(PeerAddr(a))| a.ip().to_canonical().to_string(),
        )
    })
}

async fn deploy_file(
    State(state): State<Arc<HttpState>>,
    Path((token, file)): Path<(String, String)>,
    peer: Option<Extension<PeerAddr>>,
) -> Response {
    if !xcat3_types::is_hex32(&token) {
        return plain(StatusCode::NOT_FOUND, "no such deploy");
    }
    let source = checked_source(&state, peer);
    match render_for(&state, &token, &file, source.as_deref()).await {
        Ok(body) => ([("content-type", "text/plain; charset=utf-8")], body).into_response(),
        Err(r) => r,
    }
}

async fn render_for(
    state: &HttpState,
    token: &str,
    file: &str,
    source: Option<&str>,
) -> Result<String, Response> {
    use tracing::Instrument as _;
    let deploy = state
        .store
        .deploy_by_token(token)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            plain(
                StatusCode::NOT_FOUND,
                "no such deploy (finished, cancelled or never issued)",
            )
        })?;
    // The span joins the deploy's trace before it starts.
    let span = tracing::info_span!("deploy file", file, node = %deploy.node);
    xcat3_runtime::trace_context::continue_trace(&span, &deploy.start.trace_context);
    render_in(state, deploy, file, source)
        .instrument(span)
        .await
}

fn unavailable(e: xcat3_store::Error) -> Response {
    tracing::warn!(error = %e, "rendering a deploy file: database");
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "database unavailable; retry",
    )
}

async fn render_in(
    state: &HttpState,
    deploy: xcat3_store::DeployRecord,
    file: &str,
    source: Option<&str>,
) -> Result<String, Response> {
    let (nodes, image, networks, hash) = tokio::try_join!(
        state.store.get_nodes(std::slice::from_ref(&deploy.node)),
        state.store.get_osimage(&deploy.start.osimage),
        state.store.list_networks(),
        state.store.passwd_hash("system"),
    )
    .map_err(unavailable)?;
    let node = nodes
        .into_iter()
        .next()
        .ok_or_else(|| plain(StatusCode::NOT_FOUND, "the node is gone"))?
        .node;
    if let Some(source) = source {
        let own = node
            .primary_nic()
            .and_then(|n| n.ip)
            .map(|ip| ip.to_string());
        if own.as_deref() != Some(source) {
            tracing::warn!(node = %deploy.node, file, %source, "deploy file refused: not the node's address");
            state.metrics.deploy_files_refused.inc();
            return Err(plain(
                StatusCode::NOT_FOUND,
                "no such deploy (finished, cancelled or never issued)",
            ));
        }
    }
    let image = image.ok_or_else(|| plain(StatusCode::NOT_FOUND, "the osimage is gone"))?;
    let method: InstallMethod =
        image
            .install_method
            .parse()
            .map_err(|e: xcat3_types::FieldError| {
                plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?;
    if !method.files().contains(&file) {
        return Err(plain(
            StatusCode::NOT_FOUND,
            format!(
                "a {method} deploy has no file {file:?} (it has: {})",
                method.files().join(", ")
            ),
        ));
    }
    let ctx = Context::new(&node, &deploy, &image, &networks, &state.base_url, hash);
    let body = render::render(&state.layout.templates(), &ctx, file).map_err(|e| {
        tracing::warn!(node = %deploy.node, error = %e, "rendering a deploy file failed");
        plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?;
    tracing::info!(node = %deploy.node, file, osimage = %image.name, "deploy file served");
    state
        .metrics
        .deploy_files
        .get_or_create(&crate::metrics::FileLabel {
            file: file.to_owned(),
        })
        .inc();
    Ok(body)
}

async fn done(
    state: State<Arc<HttpState>>,
    Path(token): Path<String>,
    peer: Option<Extension<PeerAddr>>,
) -> Response {
    callback(state, token, peer, true, Bytes::new()).await
}

async fn failed(
    state: State<Arc<HttpState>>,
    Path(token): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    body: Bytes,
) -> Response {
    callback(state, token, peer, false, body).await
}

async fn callback(
    State(state): State<Arc<HttpState>>,
    token: String,
    peer: Option<Extension<PeerAddr>>,
    success: bool,
    body: Bytes,
) -> Response {
    let source = checked_source(&state, peer);
    if !xcat3_types::is_hex32(&token) {
        state.metrics.callback("unknown");
        return plain(
            StatusCode::NOT_FOUND,
            CallbackError::UnknownToken.to_string(),
        );
    }
    let tail = &body[body.len().saturating_sub(MAX_REPORT)..];
    let report = CallbackReport {
        token,
        success,
        message: String::from_utf8_lossy(tail).trim().to_owned(),
        source,
    };
    let (tx, rx) = oneshot::channel();
    if state.callbacks.send((report, tx)).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping; retry");
    }
    match rx.await {
        Ok(Ok(finished)) => {
            let what = if success { "deployed" } else { "deploy-failed" };
            let node = finished.node;
            let span = tracing::info_span!("install callback", %node, result = what);
            xcat3_runtime::trace_context::continue_trace(&span, &finished.trace_context);
            span.in_scope(|| tracing::info!(%node, result = what, "install callback"));
            state.metrics.callback(what);
            let took = xcat3_store::now_ms().saturating_sub(finished.started_at);
            state
                .metrics
                .deploy_durations
                .get_or_create(&crate::metrics::ResultLabel {
                    result: what.into(),
                })
                .observe(took as f64 / 1000.0);
            plain(StatusCode::OK, format!("{node}: {what}"))
        }
        Ok(Err(e @ CallbackError::UnknownToken)) => {
            state.metrics.callback("unknown");
            plain(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e @ CallbackError::WrongSource { .. })) => {
            tracing::warn!(error = %e, "install callback refused");
            state.metrics.callback("wrong-source");
            plain(
                StatusCode::NOT_FOUND,
                CallbackError::UnknownToken.to_string(),
            )
        }
        Ok(Err(e)) => {
            state.metrics.callback("refused");
            plain(StatusCode::CONFLICT, e.to_string())
        }
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable; retry",
        ),
    }
}

/// Commits callbacks in groups until every sender is gone.
async fn commit_callbacks(store: Store, mut rx: mpsc::Receiver<Pending>, metrics: ImageMetrics) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < CALLBACKS_PER_COMMIT {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let reports: Vec<CallbackReport> = batch.iter().map(|(r, _)| r.clone()).collect();
        metrics.callback_commits.inc();
        match store.finish_deploys("image-service", &reports).await {
            Ok(results) => {
                for ((_, answer), result) in batch.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                // Dropping the answers tells each caller to retry.
                tracing::warn!(error = %e, callbacks = batch.len(), "recording callbacks failed");
            }
        }
    }
}
