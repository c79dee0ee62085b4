//! `mgt=redfish`: DMTF Redfish over HTTPS. Power through `ComputerSystem.Reset`, state from the
//! system's `PowerState`, boot device through a one-time `BootSourceOverrideTarget`.
//!
//! Certificates are verified against the system's roots, or the node's `redfish_ca_file`; only
//! `redfish_insecure=true` turns verification off (an explicit, per-node opt-out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use xcat3_types::{Node, PowerState};

use super::{BootDevice, DriverError, PowerAction};

/// A TLS setting: skip verification, and the CA file to trust instead of the system's roots.
type TlsKey = (bool, Option<String>);

/// The Redfish driver, with one HTTP client per TLS setting (connections are reused).
#[derive(Clone, Default)]
pub struct Redfish {
    clients: Arc<Mutex<HashMap<TlsKey, Client>>>,
}

/// Where one node's system lives and how to log in.
struct Target<'a> {
    client: Client,
    base: String,
    user: &'a str,
    password: &'a str,
    address: &'a str,
}

fn remote(address: &str, what: impl std::fmt::Display) -> DriverError {
    DriverError::Remote(format!("BMC {address}: {what}"))
}

/// An error with its causes (reqwest's own message hides them: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Redfish {
    fn client(&self, insecure: bool, ca_file: Option<&str>) -> Result<Client, DriverError> {
        let key = (insecure, ca_file.map(String::from));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        // reqwest is built without a default crypto provider: use ring, as the rest of the tree.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(4)
            .tls_danger_accept_invalid_certs(insecure);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| DriverError::Config {
                field: "control.redfish_ca_file".into(),
                reason: format!("cannot read {path}: {e}"),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| DriverError::Config {
                field: "control.redfish_ca_file".into(),
                reason: format!("{path} is not a PEM certificate: {e}"),
            })?;
            builder = builder.tls_certs_only([cert]);
        }
        let client = builder
            .build()
            .map_err(|e| DriverError::Remote(format!("cannot set up HTTPS: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn target<'a>(&self, node: &'a Node) -> Result<Target<'a>, DriverError> {
        let c = &node.control;
        let address = c
            .get("bmc_address")
            .ok_or_else(|| DriverError::missing("control.bmc_address"))?;
        let scheme = c.get("redfish_scheme").unwrap_or("https");
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_owned()
        };
        let base = match c.get("bmc_port") {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(Target {
            client: self.client(
                c.get("redfish_insecure") == Some("true"),
                c.get("redfish_ca_file"),
            )?,
            base,
            user: c.get("bmc_username").unwrap_or(""),
            password: c.get("bmc_password").unwrap_or(""),
            address,
        })
    }

    async fn call(
        &self,
        t: &Target<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        let mut req = t
            .client
            .request(method, format!("{}{path}", t.base))
            .basic_auth(t.user, Some(t.password))
            .header("Accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| {
            let text = format!("BMC {}: {}", t.address, chain(&e));
            if e.is_connect() || e.is_timeout() {
                DriverError::Unreachable(text)
            } else {
                DriverError::Remote(text)
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/@Message.ExtendedInfo/0/Message")
                        .or(v.pointer("/error/message"))
                        .cloned()
                })
                .and_then(|m| m.as_str().map(String::from))
                .unwrap_or_default();
            let reason = status.canonical_reason().unwrap_or("");
            return Err(remote(
                t.address,
                format!("HTTP {} {reason} {detail}", status.as_u16()).trim_end(),
            ));
        }
        if text.is_empty() || status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| remote(t.address, format!("answer is not JSON: {e}")))
    }

    /// The node's system resource: `redfish_system`, or the first member of `/redfish/v1/Systems`.
    async fn system(&self, node: &Node, t: &Target<'_>) -> Result<String, DriverError> {
        if let Some(path) = node.control.get("redfish_system") {
            return Ok(path.to_owned());
        }
        let systems = self
            .call(t, Method::GET, "/redfish/v1/Systems", None)
            .await?;
        systems
            .pointer("/Members/0/@odata.id")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| remote(t.address, "no system under /redfish/v1/Systems"))
    }

    async fn reset(&self, t: &Target<'_>, system: &str, kind: &str) -> Result<(), DriverError> {
        let path = format!("{system}/Actions/ComputerSystem.Reset");
        self.call(t, Method::POST, &path, Some(json!({ "ResetType": kind })))
            .await
            .map(|_| ())
    }

    async fn state(&self, t: &Target<'_>, system: &str) -> Result<PowerState, DriverError> {
        let v = self.call(t, Method::GET, system, None).await?;
        match v.get("PowerState").and_then(Value::as_str) {
            Some("On") | Some("PoweringOn") => Ok(PowerState::On),
            Some("Off") | Some("PoweringOff") => Ok(PowerState::Off),
            other => Err(remote(
                t.address,
                format!("unexpected PowerState {other:?}"),
            )),
        }
    }

    pub async fn power(&self, node: &Node, action: PowerAction) -> Result<PowerState, DriverError> {
        let t = self.target(node)?;
        let system = self.system(node, &t).await?;
        match action {
            PowerAction::Status => return self.state(&t, &system).await,
            PowerAction::On => self.reset(&t, &system, "On").await?,
            PowerAction::Off => self.reset(&t, &system, "ForceOff").await?,
            PowerAction::Reset => self.reset(&t, &system, "ForceRestart").await?,
            PowerAction::Cycle => {
                // PowerCycle is optional in the schema; ForceOff then On works everywhere.
                self.reset(&t, &system, "ForceOff").await?;
                self.reset(&t, &system, "On").await?;
            }
            PowerAction::Boot => match self.state(&t, &system).await? {
                PowerState::On => self.reset(&t, &system, "ForceRestart").await?,
                _ => self.reset(&t, &system, "On").await?,
            },
        }
        Ok(action.resulting_state())
    }

    pub async fn boot_device(
        &self,
        node: &Node,
        target: Option<BootDevice>,
    ) -> Result<BootDevice, DriverError> {
        let t = self.target(node)?;
        let system = self.system(node, &t).await?;
        match target {
            Some(dev) => {
                let word = match dev {
                    BootDevice::Net => "Pxe",
                    BootDevice::Disk => "Hdd",
                    BootDevice::Cdrom => "Cd",
                    BootDevice::Default => "None",
                };
                let body = json!({ "Boot": { "BootSourceOverrideTarget": word, "BootSourceOverrideEnabled": "Once" } });
                self.call(&t, Method::PATCH, &system, Some(body)).await?;
                Ok(dev)
            }
            None => {
                let v = self.call(&t, Method::GET, &system, None).await?;
                Ok(
                    match v
                        .pointer("/Boot/BootSourceOverrideTarget")
                        .and_then(Value::as_str)
                    {
                        Some("Pxe") => BootDevice::Net,
                        Some("Hdd") => BootDevice::Disk,
                        Some("Cd") => BootDevice::Cdrom,
                        _ => BootDevice::Default,
                    },
                )
            }
        }
    }
}
