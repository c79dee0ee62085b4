//! A Redfish BMC simulator for benchmarks: systems `/redfish/v1/Systems/<id>` on several loopback
//! ports, each answer after a fixed delay (a stand-in for a real BMC's latency). Power actions
//! flip the state; nothing else is modelled. Tests of the driver use sushy-tools instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone)]
struct Sim {
    delay: Duration,
    on: Arc<Mutex<HashMap<String, bool>>>,
}

async fn system(State(sim): State<Sim>, Path(id): Path<String>) -> Json<Value> {
    tokio::time::sleep(sim.delay).await;
    let on = sim
        .on
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .copied()
        .unwrap_or(false);
    Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "Id": id,
        "PowerState": if on { "On" } else { "Off" },
        "Boot": { "BootSourceOverrideTarget": "None" },
    }))
}

async fn reset(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> axum::http::StatusCode {
    tokio::time::sleep(sim.delay).await;
    let on = !matches!(
        body.get("ResetType").and_then(Value::as_str),
        Some("ForceOff" | "GracefulShutdown")
    );
    sim.on
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, on);
    axum::http::StatusCode::NO_CONTENT
}

/// Serves the simulator on `ports` new loopback ports; returns them.
pub async fn start(ports: usize, delay: Duration) -> anyhow::Result<Vec<u16>> {
    let addrs = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0)); ports];
    serve(&addrs, delay).await
}

/// Serves the simulator on each address (port 0: a new one); returns the ports.
pub async fn serve(addrs: &[std::net::SocketAddr], delay: Duration) -> anyhow::Result<Vec<u16>> {
    let sim = Sim {
        delay,
        on: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/redfish/v1/Systems/{id}", get(system))
        .route(
            "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .with_state(sim);
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        bound.push(listener.local_addr()?.port());
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    Ok(bound)
}
