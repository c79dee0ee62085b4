//! A stand-in for the one part of a Kubernetes API server the api uses: the `scale` subresource of
//! one Deployment, over HTTPS with a certificate from a test CA, behind a bearer token. No API
//! server can run here, so this is the one mock of the container tests (as the brief allows); the
//! client talking to it is the real one (kube-rs in-cluster configuration, from the service
//! account files and `KUBERNETES_SERVICE_HOST`/`PORT`). Each accepted change of the replicas is
//! reported, so the test's kubelet can start or stop the pods as a Deployment controller would.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::TestCa;

/// The server: Python's http.server with ssl (Debian's python3), answering GET and PATCH of
/// `/apis/apps/v1/namespaces/NS/deployments/NAME/scale` and printing `replicas N` per change.
const SERVER: &str = r#"
import json, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
cert, key, host, port, ns, name, token, replicas = sys.argv[1:9]
state = {"replicas": int(replicas)}
path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def scale(self):
        n = state["replicas"]
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": n}, "status": {"replicas": n}}
    def check(self):
        if self.headers.get("Authorization") != f"Bearer {token}":
            self.reply(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "Unauthorized", "code": 401, "message": "Unauthorized"})
            return False
        if self.path.split("?")[0] != path:
            self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404, "message": self.path})
            return False
        return True
    def do_GET(self):
        if self.check(): self.reply(200, self.scale())
    def do_PATCH(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.check(): return
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self.reply(415, {"kind": "Status", "code": 415, "message": "content type"})
        state["replicas"] = int(json.loads(body)["spec"]["replicas"])
        print(f"replicas {state['replicas']}", flush=True)
        self.reply(200, self.scale())
server = ThreadingHTTPServer((host, int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

/// The running stand-in.
pub struct KubeApi {
    _ca: TestCa,
    _child: Child,
    /// Each change of the Deployment's replicas, as the api asked it.
    pub changes: mpsc::UnboundedReceiver<usize>,
    /// The service account directory to mount in pods (`token`, `ca.crt`, `namespace`).
    pub service_account: PathBuf,
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT` for the pods.
    pub host: String,
    pub port: u16,
}

impl KubeApi {
    /// Serves Deployment `namespace/name` with `replicas` on `host:port` (an address of this
    /// machine the pods reach: the cluster network's gateway), with files in `dir`.
    pub async fn start(
        dir: &Path,
        host: &str,
        port: u16,
        namespace: &str,
        name: &str,
        replicas: usize,
    ) -> anyhow::Result<KubeApi> {
        let ca = TestCa::new()?;
        let (cert, key) = ca.issue(
            "kubernetes",
            &format!("IP:{host},DNS:kubernetes.default.svc"),
        )?;
        let token = "kube-service-account-token-0123456789";
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::copy(ca.ca(), sa.join("ca.crt"))?;
        std::fs::write(sa.join("token"), token)?;
        std::fs::write(sa.join("namespace"), namespace)?;
        // Readable by the pods' users, as a projected service account volume is.
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["ca.crt", "token", "namespace"] {
            std::fs::set_permissions(sa.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::set_permissions(&sa, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(&cert)
            .arg(&key)
            .args([host, &port.to_string(), namespace, name, token])
            .arg(replicas.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("run python3")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines
            .next_line()
            .await?
            .context("the Kubernetes stand-in exited")?;
        anyhow::ensure!(first == "ready", "the Kubernetes stand-in said {first:?}");
        let (tx, changes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("replicas ").and_then(|n| n.parse().ok()) {
                    let _ = tx.send(n);
                }
            }
        });
        Ok(KubeApi {
            _ca: ca,
            _child: child,
            changes,
            service_account: sa,
            host: host.to_owned(),
            port,
        })
    }
}
