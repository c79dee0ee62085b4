//! A kubelet for `helm template` output, on Docker: every Deployment, StatefulSet and DaemonSet
//! of the rendered chart runs as containers with exactly what its pod spec says, so that a flag
//! that does not exist, a path that is not writable under a read-only root, a Secret file the
//! user cannot read or a missing capability fails here, not on a user's cluster.
//!
//! What it does as the kubelet does:
//! - command/args (replacing the image's entrypoint/cmd) with `$(VAR)` expanded from the env;
//! - env: values, `secretKeyRef`, `configMapKeyRef`, and the downward API (`metadata.name`,
//!   `metadata.namespace`, `status.podIP`, `status.hostIP`, `spec.nodeName`);
//! - security: runAsUser/runAsGroup/runAsNonRoot (refused for a root image user), fsGroup (as a
//!   supplementary group and on volumes), readOnlyRootFilesystem, dropped and added capabilities,
//!   allowPrivilegeEscalation, seccomp (RuntimeDefault, or unconfined when unset);
//! - volumes: emptyDir (0777), Secrets and ConfigMaps as read-only files with their modes and
//!   owned by root, group fsGroup with 0440 added when fsGroup is set (as kubelet does, so a 0400
//!   Secret without fsGroup is unreadable to a non-root user), PVCs and volumeClaimTemplates as
//!   Docker volumes that start empty, root-owned 0755 (as most provisioners make them) and get
//!   fsGroup applied at each mount, hostPath on the node's directory;
//! - resources.limits as CPU and memory limits, terminationGracePeriodSeconds as the stop timeout,
//!   restartPolicy Always;
//! - Services as network aliases on one Docker network (with `<pod>.<service>` for a
//!   StatefulSet's headless Service); a Service whose port differs from its target port is refused,
//!   as an alias cannot remap ports;
//! - hostNetwork pods share the network namespace of their node (a container on the cluster
//!   network, named `ip netns` for the test to plug a provisioning segment into);
//! - probes (gRPC health, HTTP GET, TCP, exec) from outside the container, as the kubelet does.
//!
//! Anything else in a pod spec (init containers, a second container, subPath, hostPort, ...) is
//! refused, so nothing is silently left out. No Kubernetes API server runs: Services get no
//! cluster IP and no service-link variables.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_yaml::Value;

use crate::docker::{Scope, docker, logs, pid, test_image};
use crate::netns::Netns;

/// The namespace every rendered object is taken to be in.
pub const NAMESPACE: &str = "default";

/// One running pod (one container).
pub struct Pod {
    pub name: String,
    /// The Deployment, StatefulSet or DaemonSet it belongs to.
    pub workload: String,
    pub kind: String,
    /// Docker container name.
    pub container: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    spec: Value,
}

/// A node for hostNetwork pods: a container on the cluster network whose network namespace is
/// named for the test (`netns`), so it can be plugged into a provisioning segment.
pub struct Node {
    pub name: String,
    pub container: String,
    pub ip: String,
    pub netns: Netns,
}

/// The rendered chart's workloads on Docker.
pub struct Kubelet {
    pub scope: Scope,
    pub network: String,
    prefix: String,
    next_ip: u8,
    objects: Vec<Value>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    dir: tempfile::TempDir,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    /// Extra environment for every pod (the mock API server's address for in-cluster clients).
    pub extra_env: BTreeMap<String, String>,
    /// Files for pods that mount the service account token (automountServiceAccountToken).
    pub service_account: Option<PathBuf>,
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn seq_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).ok()?.trim().to_owned(),
                    };
                    Some((k.as_str()?.to_owned(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses keys of `v` outside `known`: what this kubelet does not run must not pass silently.
fn only_keys(v: &Value, known: &[&str], what: &str) -> anyhow::Result<()> {
    if let Some(m) = v.as_mapping() {
        for k in m.keys() {
            let k = k.as_str().unwrap_or("?");
            ensure!(
                known.contains(&k),
                "{what}: `{k}` is not run by the test kubelet"
            );
        }
    }
    Ok(())
}

fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .context("not base64")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Kubernetes quantities for limits: CPU ("2", "500m") and memory ("512Mi", "1G").
fn cpus(q: &str) -> anyhow::Result<String> {
    Ok(match q.strip_suffix('m') {
        Some(milli) => format!("{:.3}", milli.parse::<f64>()? / 1000.0),
        None => q.parse::<f64>()?.to_string(),
    })
}

fn bytes(q: &str) -> anyhow::Result<u64> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, unit) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>()? * unit);
        }
    }
    Ok(q.parse()?)
}

/// `$(VAR)` expanded from `env` (unknown references stay as written; `$$(` escapes), as the kubelet
/// does for command, args and env values.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl Kubelet {
    /// Takes the rendered objects (plus any the test creates beside the chart, such as Secrets
    /// named by `existingSecret`), makes the cluster network and `nodes` nodes.
    pub fn new(test: &str, objects: Vec<Value>, nodes: usize) -> anyhow::Result<Kubelet> {
        let scope = Scope::new(test);
        let (network, prefix) = scope.network("cluster")?;
        let mut k = Kubelet {
            scope,
            network,
            prefix,
            next_ip: 10,
            objects,
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            dir: tempfile::Builder::new().prefix("xcat3-kubelet").tempdir()?,
            pods: Vec::new(),
            nodes: Vec::new(),
            extra_env: BTreeMap::new(),
            service_account: None,
        };
        // The directory holds Secret files for bind mounts (which do not need their parents to
        // be traversable inside the container): only root may enter it.
        std::fs::set_permissions(k.dir.path(), std::fs::Permissions::from_mode(0o700))?;
        for o in &k.objects {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match str_of(o, "kind") {
                Some("Secret") => {
                    let mut data = BTreeMap::new();
                    for (key, v) in string_map(o.get("data")) {
                        data.insert(key, base64_decode(&v)?);
                    }
                    for (key, v) in string_map(o.get("stringData")) {
                        data.insert(key, v.into_bytes());
                    }
                    k.secrets.insert(name, data);
                }
                Some("ConfigMap") => {
                    let data = string_map(o.get("data"))
                        .into_iter()
                        .map(|(key, v)| (key, v.into_bytes()))
                        .collect();
                    k.config_maps.insert(name, data);
                }
                _ => {}
            }
        }
        for i in 0..nodes {
            k.add_node(&format!("node-{i}"))?;
        }
        Ok(k)
    }

    /// A value of a Secret (the chart's or one the test added).
    pub fn secret(&self, name: &str, key: &str) -> Option<String> {
        let v = self.secrets.get(name)?.get(key)?;
        Some(String::from_utf8_lossy(v).into_owned())
    }

    /// An unused address on the cluster network (for containers the test adds beside the pods).
    pub fn allocate_ip(&mut self) -> String {
        let ip = format!("{}.{}", self.prefix, self.next_ip);
        self.next_ip += 1;
        ip
    }

    /// The cluster network's gateway: this host, as the containers see it.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn add_node(&mut self, name: &str) -> anyhow::Result<()> {
        let container = self.scope.name(name);
        let ip = self.allocate_ip();
        let args: Vec<String> = [
            "--hostname",
            name,
            "--network",
            &self.network,
            "--ip",
            &ip,
            &test_image("base"),
            "sleep",
            "infinity",
        ]
        .map(String::from)
        .to_vec();
        self.scope.run(&container, &args, &BTreeMap::new())?;
        let netns = Netns::attach(name, pid(&container)?)?;
        self.nodes.push(Node {
            name: name.to_owned(),
            container,
            ip,
            netns,
        });
        Ok(())
    }

    /// The rendered objects of `kind`.
    pub fn objects(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| str_of(o, "kind") == Some(kind))
            .collect()
    }

    /// Starts every Deployment, StatefulSet and DaemonSet with its replicas (a DaemonSet: one pod
    /// per node).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let workloads: Vec<Value> = self
            .objects
            .iter()
            .filter(|o| {
                matches!(
                    str_of(o, "kind"),
                    Some("Deployment" | "StatefulSet" | "DaemonSet")
                )
            })
            .cloned()
            .collect();
        for w in &workloads {
            let replicas = match str_of(w, "kind") {
                Some("DaemonSet") => self.nodes.len() as i64,
                _ => int_of(&w["spec"], "replicas").unwrap_or(1),
            };
            for ordinal in 0..replicas {
                self.start_pod(w, ordinal as usize)?;
            }
        }
        Ok(())
    }

    /// The workload named `name`.
    pub fn workload(&self, name: &str) -> anyhow::Result<Value> {
        self.objects
            .iter()
            .find(|o| {
                matches!(
                    str_of(o, "kind"),
                    Some("Deployment" | "StatefulSet" | "DaemonSet")
                ) && o["metadata"]["name"].as_str() == Some(name)
            })
            .cloned()
            .with_context(|| format!("no workload {name}"))
    }

    /// Scales a Deployment to `replicas` pods (as its controller would: new pods started, the
    /// newest stopped with their grace period).
    pub fn scale(&mut self, name: &str, replicas: usize) -> anyhow::Result<()> {
        let w = self.workload(name)?;
        let mut running: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].workload == name)
            .collect();
        let mut ordinal = self.pods.iter().filter(|p| p.workload == name).count();
        while running.len() < replicas {
            self.start_pod(&w, ordinal)?;
            running.push(self.pods.len() - 1);
            ordinal += 1;
        }
        while running.len() > replicas {
            let i = running.pop().context("no pod")?;
            let pod = self.pods.remove(i);
            docker(&["stop", &pod.container])?;
            docker(&["rm", "-v", &pod.container])?;
        }
        Ok(())
    }

    /// Starts pod `ordinal` of workload `w`.
    pub fn start_pod(&mut self, w: &Value, ordinal: usize) -> anyhow::Result<()> {
        let kind = str_of(w, "kind").unwrap_or_default().to_owned();
        let workload = w["metadata"]["name"]
            .as_str()
            .context("workload name")?
            .to_owned();
        let template = &w["spec"]["template"];
        let spec = template["spec"].clone();
        let labels = string_map(template["metadata"].get("labels"));
        let what = format!("{kind} {workload}");
        only_keys(
            &spec,
            &[
                "containers",
                "automountServiceAccountToken",
                "serviceAccountName",
                "terminationGracePeriodSeconds",
                "securityContext",
                "volumes",
                "hostNetwork",
                "dnsPolicy",
                "nodeSelector",
                "tolerations",
            ],
            &what,
        )?;
        let containers = seq_of(&spec, "containers");
        ensure!(
            containers.len() == 1,
            "{what}: one container per pod is what the test kubelet runs"
        );
        let c = &containers[0];
        only_keys(
            c,
            &[
                "name",
                "image",
                "imagePullPolicy",
                "command",
                "args",
                "env",
                "ports",
                "readinessProbe",
                "livenessProbe",
                "resources",
                "securityContext",
                "volumeMounts",
            ],
            &what,
        )?;
        let (name, node) = match kind.as_str() {
            "StatefulSet" => (format!("{workload}-{ordinal}"), None),
            "DaemonSet" => (format!("{workload}-n{ordinal}x7k"), Some(ordinal)),
            _ => (format!("{workload}-5d8f9c7b6a-p{ordinal}q4z"), None),
        };
        let host_network = spec["hostNetwork"].as_bool().unwrap_or(false);
        let node_index = node.unwrap_or(0);
        let ip = if host_network {
            self.nodes
                .get(node_index)
                .context("a hostNetwork pod needs a node")?
                .ip
                .clone()
        } else {
            self.allocate_ip()
        };
        let node_name = self
            .nodes
            .get(node_index)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "node-0".into());
        let host_ip = self
            .nodes
            .get(node_index)
            .map(|n| n.ip.clone())
            .unwrap_or_else(|| self.gateway());
        let container = self.scope.name(&name);
        let image = str_of(c, "image").context("image")?.to_owned();
        ensure!(
            str_of(c, "imagePullPolicy") != Some("Always"),
            "{what}: imagePullPolicy Always pulls, and a cluster with imported images has no registry"
        );
        let image_user = docker(&["image", "inspect", "-f", "{{.Config.User}}", &image])
            .with_context(|| format!("{what}: image {image} is not here"))?
            .trim()
            .to_owned();

        // The environment, in order, each value expanded with those before it.
        let mut env = BTreeMap::new();
        let mut env_order = Vec::new();
        for e in seq_of(c, "env") {
            let key = str_of(e, "name").context("env name")?.to_owned();
            let value = if let Some(v) = str_of(e, "value") {
                expand(v, &env)
            } else if let Some(from) = e.get("valueFrom") {
                self.value_from(from, &name, &ip, &host_ip, &node_name)
                    .with_context(|| format!("{what}: env {key}"))?
            } else {
                String::new()
            };
            env.insert(key.clone(), value);
            env_order.push(key);
        }
        for (k, v) in &self.extra_env {
            env.entry(k.clone()).or_insert_with(|| v.clone());
            env_order.push(k.clone());
        }
        let command: Vec<String> = seq_of(c, "command")
            .iter()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &env))
            .collect();
        let args: Vec<String> = seq_of(c, "args")
            .iter()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &env))
            .collect();

        let mut run: Vec<String> = vec!["--restart".into(), "always".into()];
        if host_network {
            ensure!(
                str_of(&spec, "dnsPolicy") == Some("ClusterFirstWithHostNet"),
                "{what}: a hostNetwork pod resolves Service names only with dnsPolicy ClusterFirstWithHostNet"
            );
            run.extend([
                "--network".into(),
                format!("container:{}", self.nodes[node_index].container),
            ]);
        } else {
            run.extend([
                "--hostname".into(),
                name.clone(),
                "--network".into(),
                self.network.clone(),
                "--ip".into(),
                ip.clone(),
            ]);
            for alias in self.aliases(&labels, &name, &spec, w, c)? {
                run.extend(["--network-alias".into(), alias]);
            }
        }
        for key in &env_order {
            run.extend(["-e".into(), key.clone()]);
        }

        // Security context: the container's fields over the pod's.
        let psc = spec.get("securityContext").cloned().unwrap_or(Value::Null);
        let csc = c.get("securityContext").cloned().unwrap_or(Value::Null);
        only_keys(
            &psc,
            &[
                "fsGroup",
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "supplementalGroups",
                "seccompProfile",
            ],
            &what,
        )?;
        only_keys(
            &csc,
            &[
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "capabilities",
                "seccompProfile",
            ],
            &what,
        )?;
        let pick = |key: &str| csc.get(key).or_else(|| psc.get(key)).cloned();
        let user = pick("runAsUser").and_then(|v| v.as_i64());
        let group = pick("runAsGroup").and_then(|v| v.as_i64());
        let fs_group = int_of(&psc, "fsGroup");
        let image_uid = image_user.split(':').next().unwrap_or("").to_owned();
        if pick("runAsNonRoot").and_then(|v| v.as_bool()) == Some(true) {
            match user {
                Some(0) => bail!("{what}: runAsNonRoot with runAsUser 0"),
                Some(_) => {}
                None => {
                    let uid: i64 = image_uid.parse().map_err(|_| {
                        anyhow::anyhow!("{what}: image has non-numeric user ({image_user}), cannot verify user is non-root")
                    })?;
                    ensure!(
                        uid != 0,
                        "{what}: container has runAsNonRoot and image will run as root"
                    );
                }
            }
        }
        match (user, group) {
            (Some(u), Some(g)) => run.extend(["--user".into(), format!("{u}:{g}")]),
            (Some(u), None) => run.extend(["--user".into(), u.to_string()]),
            (None, Some(g)) => run.extend([
                "--user".into(),
                format!(
                    "{}:{g}",
                    if image_uid.is_empty() {
                        "0"
                    } else {
                        &image_uid
                    }
                ),
            ]),
            (None, None) => {}
        }
        if let Some(g) = fs_group {
            run.extend(["--group-add".into(), g.to_string()]);
        }
        for g in seq_of(&psc, "supplementalGroups") {
            run.extend(["--group-add".into(), g.as_i64().unwrap_or(0).to_string()]);
        }
        if csc["allowPrivilegeEscalation"].as_bool() == Some(false) {
            run.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if csc["readOnlyRootFilesystem"].as_bool() == Some(true) {
            run.push("--read-only".into());
        }
        for cap in seq_of(&csc["capabilities"], "drop")
            .iter()
            .filter_map(Value::as_str)
        {
            run.extend(["--cap-drop".into(), cap.to_owned()]);
        }
        for cap in seq_of(&csc["capabilities"], "add")
            .iter()
            .filter_map(Value::as_str)
        {
            run.extend(["--cap-add".into(), cap.to_owned()]);
        }
        match pick("seccompProfile").and_then(|p| str_of(&p, "type").map(str::to_owned)) {
            Some(t) if t == "RuntimeDefault" => {}
            Some(t) => bail!("{what}: seccomp profile {t} is not run by the test kubelet"),
            None => run.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        }
        if let Some(limits) = c["resources"].get("limits") {
            if let Some(cpu) = str_of(limits, "cpu") {
                run.extend(["--cpus".into(), cpus(cpu)?]);
            }
            if let Some(mem) = str_of(limits, "memory") {
                run.extend(["--memory".into(), bytes(mem)?.to_string()]);
            }
        }
        if let Some(grace) = int_of(&spec, "terminationGracePeriodSeconds") {
            run.extend(["--stop-timeout".into(), grace.to_string()]);
        }
        for p in seq_of(c, "ports") {
            only_keys(p, &["name", "containerPort", "protocol"], &what)?;
        }

        // Volumes.
        let volumes: BTreeMap<String, Value> = seq_of(&spec, "volumes")
            .iter()
            .filter_map(|v| Some((str_of(v, "name")?.to_owned(), v.clone())))
            .collect();
        let claim_templates: Vec<String> = seq_of(&w["spec"], "volumeClaimTemplates")
            .iter()
            .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        for m in seq_of(c, "volumeMounts") {
            only_keys(m, &["name", "mountPath", "readOnly"], &what)?;
            let vname = str_of(m, "name").context("volumeMount name")?;
            let path = str_of(m, "mountPath").context("mountPath")?;
            let ro = if m["readOnly"].as_bool() == Some(true) {
                ",readonly"
            } else {
                ""
            };
            let mount = if claim_templates.iter().any(|t| t == vname) {
                let volume = self.claim(&format!("{vname}-{name}"), fs_group)?;
                format!("type=volume,src={volume},dst={path},volume-nocopy{ro}")
            } else {
                let v = volumes
                    .get(vname)
                    .with_context(|| format!("{what}: volumeMount {vname} has no volume"))?;
                self.volume_mount(v, path, ro, fs_group, &name, node_index)
                    .with_context(|| format!("{what}: volume {vname}"))?
            };
            run.extend(["--mount".into(), mount]);
        }
        if let (true, Some(sa)) = (
            spec["automountServiceAccountToken"].as_bool() != Some(false),
            &self.service_account,
        ) {
            run.extend([
                "--mount".into(),
                format!(
                    "type=bind,src={},dst=/var/run/secrets/kubernetes.io/serviceaccount,readonly",
                    sa.display()
                ),
            ]);
        }

        if let Some((entrypoint, rest)) = command.split_first() {
            run.extend(["--entrypoint".into(), entrypoint.clone(), image.clone()]);
            run.extend(rest.iter().cloned());
        } else {
            run.push(image.clone());
        }
        run.extend(args);
        self.scope.run(&container, &run, &env)?;
        self.pods.push(Pod {
            name,
            workload,
            kind,
            container,
            ip,
            labels,
            spec: c.clone(),
        });
        Ok(())
    }

    /// A `valueFrom` of the env.
    fn value_from(
        &self,
        from: &Value,
        pod: &str,
        ip: &str,
        host_ip: &str,
        node: &str,
    ) -> anyhow::Result<String> {
        if let Some(r) = from.get("fieldRef") {
            return Ok(match str_of(r, "fieldPath") {
                Some("metadata.name") => pod.to_owned(),
                Some("metadata.namespace") => NAMESPACE.to_owned(),
                Some("status.podIP") => ip.to_owned(),
                Some("status.hostIP") => host_ip.to_owned(),
                Some("spec.nodeName") => node.to_owned(),
                other => bail!("fieldRef {other:?} is not run by the test kubelet"),
            });
        }
        let (store, r, what) = if let Some(r) = from.get("secretKeyRef") {
            (&self.secrets, r, "Secret")
        } else if let Some(r) = from.get("configMapKeyRef") {
            (&self.config_maps, r, "ConfigMap")
        } else {
            bail!("valueFrom {from:?} is not run by the test kubelet");
        };
        let name = str_of(r, "name").context("name")?;
        let key = str_of(r, "key").context("key")?;
        let value = store
            .get(name)
            .with_context(|| format!("{what} {name} does not exist"))?
            .get(key)
            .with_context(|| format!("{what} {name} has no key {key}"))?;
        Ok(String::from_utf8_lossy(value).into_owned())
    }

    /// The `--mount` for one pod volume at `path`.
    fn volume_mount(
        &self,
        v: &Value,
        path: &str,
        ro: &str,
        fs_group: Option<i64>,
        pod: &str,
        node: usize,
    ) -> anyhow::Result<String> {
        let vname = str_of(v, "name").unwrap_or_default();
        if let Some(empty) = v.get("emptyDir") {
            if str_of(empty, "medium") == Some("Memory") {
                return Ok(format!("type=tmpfs,dst={path},tmpfs-mode=01777"));
            }
            // A fresh directory, 0777 as the kubelet makes it: not Docker's tmpfs, which takes
            // the mode of the image's directory underneath.
            let volume = self.volume(&format!("empty-{pod}-{vname}"), 0o777, fs_group)?;
            return Ok(format!("type=volume,src={volume},dst={path},volume-nocopy"));
        }
        for (key, store, default_mode) in [
            ("secret", &self.secrets, 0o644),
            ("configMap", &self.config_maps, 0o644),
        ] {
            let Some(source) = v.get(key) else {
                continue;
            };
            let name = str_of(
                source,
                if key == "secret" {
                    "secretName"
                } else {
                    "name"
                },
            )
            .context("source name")?;
            let data = store
                .get(name)
                .with_context(|| format!("{key} {name} does not exist"))?;
            let mode = int_of(source, "defaultMode").unwrap_or(default_mode) as u32;
            let dir = self.dir.path().join(pod).join(vname);
            std::fs::create_dir_all(&dir)?;
            let items = seq_of(source, "items");
            let files: Vec<(String, String, u32)> = if items.is_empty() {
                data.keys().map(|k| (k.clone(), k.clone(), mode)).collect()
            } else {
                items
                    .iter()
                    .map(|i| {
                        Ok((
                            str_of(i, "key").context("item key")?.to_owned(),
                            str_of(i, "path").context("item path")?.to_owned(),
                            int_of(i, "mode").map(|m| m as u32).unwrap_or(mode),
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            for (k, p, mode) in files {
                let content = data
                    .get(&k)
                    .with_context(|| format!("{key} {name} has no key {k}"))?;
                let file = dir.join(&p);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&file, content)?;
                // As kubelet's SetVolumeOwnership for a read-only volume: group fsGroup, 0440 added.
                let mode = match fs_group {
                    Some(g) => {
                        std::os::unix::fs::chown(&file, Some(0), Some(g as u32))?;
                        mode | 0o440
                    }
                    None => mode,
                };
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
            }
            set_dir_owner(&dir, fs_group)?;
            return Ok(format!(
                "type=bind,src={},dst={path},readonly",
                dir.display()
            ));
        }
        if let Some(claim) = v.get("persistentVolumeClaim") {
            let claim = str_of(claim, "claimName").context("claimName")?;
            ensure!(
                self.objects("PersistentVolumeClaim")
                    .iter()
                    .any(|c| c["metadata"]["name"].as_str() == Some(claim)),
                "PersistentVolumeClaim {claim} is not in the chart"
            );
            let volume = self.claim(claim, fs_group)?;
            return Ok(format!(
                "type=volume,src={volume},dst={path},volume-nocopy{ro}"
            ));
        }
        if let Some(host) = v.get("hostPath") {
            let p = str_of(host, "path").context("hostPath path")?;
            let dir = self
                .dir
                .path()
                .join("nodes")
                .join(node.to_string())
                .join(p.trim_start_matches('/'));
            match str_of(host, "type") {
                Some("DirectoryOrCreate") => {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                }
                Some("Directory") => ensure!(dir.is_dir(), "hostPath {p} does not exist"),
                other => bail!("hostPath type {other:?} is not run by the test kubelet"),
            }
            return Ok(format!("type=bind,src={},dst={path}{ro}", dir.display()));
        }
        bail!("volume {vname}: its type is not run by the test kubelet")
    }

    /// The Docker volume behind a claim: created empty, root-owned 0755 (as most provisioners
    /// make a new volume), with fsGroup applied at each mount as kubelet does (group, g+rwX,
    /// setgid directories).
    fn claim(&self, claim: &str, fs_group: Option<i64>) -> anyhow::Result<String> {
        self.volume(&format!("pvc-{claim}"), 0o755, fs_group)
    }

    /// Docker volume `name`, root-owned with `mode` when new, then given to `fs_group` as the
    /// kubelet's SetVolumeOwnership does (group, g+rwX, setgid directories).
    fn volume(&self, name: &str, mode: u32, fs_group: Option<i64>) -> anyhow::Result<String> {
        let (volume, new) = self.scope.volume(name)?;
        let mut script = Vec::new();
        if new {
            script.push(format!("chown 0:0 /v && chmod {mode:04o} /v"));
        }
        if let Some(g) = fs_group {
            script.push(format!(
                "chgrp -R {g} /v && chmod -R g+rwX /v && find /v -type d -exec chmod g+s {{}} +"
            ));
        }
        if script.is_empty() {
            return Ok(volume);
        }
        let script = script.join(" && ");
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--mount",
            &format!("type=volume,src={volume},dst=/v,volume-nocopy"),
            &test_image("base"),
            "sh",
            "-c",
            &script,
        ])?;
        Ok(volume)
    }

    /// Network aliases of a pod: every Service selecting it, and `<pod>.<service>` under a
    /// StatefulSet's Service. A Service port that is not its target port is refused.
    fn aliases(
        &self,
        labels: &BTreeMap<String, String>,
        pod: &str,
        _spec: &Value,
        w: &Value,
        c: &Value,
    ) -> anyhow::Result<Vec<String>> {
        let mut aliases = Vec::new();
        let ports: BTreeMap<String, i64> = seq_of(c, "ports")
            .iter()
            .filter_map(|p| Some((str_of(p, "name")?.to_owned(), int_of(p, "containerPort")?)))
            .collect();
        for s in self.objects("Service") {
            let selector = string_map(s["spec"].get("selector"));
            if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            let svc = s["metadata"]["name"].as_str().context("Service name")?;
            for p in seq_of(&s["spec"], "ports") {
                let port = int_of(p, "port").context("Service port")?;
                let target = match p.get("targetPort") {
                    None => port,
                    Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
                    Some(Value::String(name)) => *ports.get(name).with_context(|| {
                        format!("Service {svc} targets port {name}, which the pod does not name")
                    })?,
                    Some(other) => bail!("Service {svc}: targetPort {other:?}"),
                };
                ensure!(
                    port == target,
                    "Service {svc} maps port {port} to {target}: a network alias cannot remap ports"
                );
            }
            aliases.push(svc.to_owned());
            aliases.push(format!("{svc}.{NAMESPACE}.svc.cluster.local"));
            if str_of(&w["spec"], "serviceName") == Some(svc) {
                aliases.push(format!("{pod}.{svc}"));
                aliases.push(format!("{pod}.{svc}.{NAMESPACE}.svc.cluster.local"));
            }
        }
        Ok(aliases)
    }

    /// The pods of a workload whose name ends with `suffix` (e.g. "-api").
    pub fn pods_of(&self, suffix: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.workload.ends_with(suffix))
            .collect()
    }

    /// Waits until every pod's readiness probe passes (the kubelet's probes, from outside), then
    /// runs each liveness probe once. Fails with the pod's logs.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for pod in &self.pods {
            loop {
                // A container that keeps exiting is in CrashLoopBackOff: no need to wait longer.
                let restarts: u32 = docker(&["inspect", "-f", "{{.RestartCount}}", &pod.container])
                    .ok()
                    .and_then(|r| r.trim().parse().ok())
                    .unwrap_or(0);
                match self.probe(pod, "readinessProbe").await {
                    Ok(()) => break,
                    Err(_) if Instant::now() < deadline && restarts < 10 => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => bail!(
                        "{} is not ready: {e:#}\nevery pod:\n{}restarts: {}\n{}",
                        pod.name,
                        self.pods
                            .iter()
                            .map(|p| format!(
                                "  {}: {}    {}\n",
                                p.name,
                                tail(&logs(&p.container), 300).replace('\n', "\n    "),
                                docker(&[
                                    "inspect",
                                    "-f",
                                    "{{.RestartCount}} restarts, {{.State.Status}}, exit {{.State.ExitCode}}",
                                    &p.container
                                ])
                                .unwrap_or_default()
                            ))
                            .collect::<String>(),
                        docker(&[
                            "inspect",
                            "-f",
                            "{{.RestartCount}} {{.State.Status}} exit {{.State.ExitCode}}",
                            &pod.container
                        ])
                        .unwrap_or_default(),
                        tail(&logs(&pod.container), 4000)
                    ),
                }
            }
            self.probe(pod, "livenessProbe").await.with_context(|| {
                format!(
                    "{}: liveness\n{}",
                    pod.name,
                    tail(&logs(&pod.container), 4000)
                )
            })?;
        }
        Ok(())
    }

    /// Runs one probe of a pod (`readinessProbe` or `livenessProbe`); a pod without it passes.
    pub async fn probe(&self, pod: &Pod, which: &str) -> anyhow::Result<()> {
        let Some(p) = pod.spec.get(which) else {
            return Ok(());
        };
        let timeout = Duration::from_secs(int_of(p, "timeoutSeconds").unwrap_or(1) as u64);
        let port = |v: &Value| -> anyhow::Result<i64> {
            match v.get("port") {
                Some(Value::Number(n)) => n.as_i64().context("port"),
                Some(Value::String(name)) => seq_of(&pod.spec, "ports")
                    .iter()
                    .find(|q| str_of(q, "name") == Some(name))
                    .and_then(|q| int_of(q, "containerPort"))
                    .with_context(|| format!("probe port {name} is not named by the container")),
                _ => bail!("probe without a port"),
            }
        };
        if let Some(g) = p.get("grpc") {
            let addr = format!("http://{}:{}", pod.ip, port(g)?);
            let service = str_of(g, "service").unwrap_or_default().to_owned();
            return tokio::time::timeout(timeout, grpc_health(&addr, &service))
                .await
                .context("gRPC health check timed out")?;
        }
        if let Some(h) = p.get("httpGet") {
            let path = str_of(h, "path").unwrap_or("/");
            let addr = format!("{}:{}", pod.ip, port(h)?);
            let status = tokio::time::timeout(timeout, http_status(&addr, path))
                .await
                .context("HTTP probe timed out")??;
            ensure!((200..400).contains(&status), "HTTP GET {path}: {status}");
            return Ok(());
        }
        if let Some(t) = p.get("tcpSocket") {
            let addr = format!("{}:{}", pod.ip, port(t)?);
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
                .await
                .context("TCP probe timed out")??;
            return Ok(());
        }
        if let Some(e) = p.get("exec") {
            let mut args = vec!["exec".to_owned(), pod.container.clone()];
            args.extend(
                seq_of(e, "command")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args)?;
            return Ok(());
        }
        bail!(
            "{which} of {}: its handler is not run by the test kubelet",
            pod.name
        )
    }
}

fn set_dir_owner(dir: &Path, fs_group: Option<i64>) -> anyhow::Result<()> {
    let mut mode = 0o755;
    if let Some(g) = fs_group {
        std::os::unix::fs::chown(dir, Some(0), Some(g as u32))?;
        mode |= 0o2750;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The last `n` bytes of `s`.
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A gRPC health check of `service` at `addr` (plaintext, as the kubelet's gRPC probe).
pub async fn grpc_health(addr: &str, service: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner()
        .status;
    ensure!(
        status == ServingStatus::Serving as i32,
        "gRPC health of {service:?}: status {status}"
    );
    Ok(())
}

/// The status code of `GET path` at `addr` (HTTP/1.1, as the kubelet's HTTP probe).
pub async fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = vec![0u8; 64];
    let n = s.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}
