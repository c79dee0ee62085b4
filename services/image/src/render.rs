//! The files an installer fetches for one deploy, rendered from templates (minijinja, strict: a
//! variable a template names but the context lacks fails the render instead of writing an empty
//! line into a kickstart).
//!
//! A template is looked up as `templates/<osimage>/<file>.j2`, then `templates/<file>.j2` under the
//! service's data directory, then the built-in one (`services/image/templates/`), so an operator
//! can override per image or for all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use xcat3_store::{DeployRecord, DeployStart};
use xcat3_types::{MacAddr, Network, Nic, Node, OsImage, deploy_url};

/// Built-in templates by file name.
fn builtin(file: &str) -> Option<&'static str> {
    Some(match file {
        "kickstart" => include_str!("../templates/kickstart.j2"),
        "preseed" => include_str!("../templates/preseed.j2"),
        "user-data" => include_str!("../templates/user-data.j2"),
        "meta-data" => include_str!("../templates/meta-data.j2"),
        _ => return None,
    })
}

#[derive(Debug, Serialize)]
pub struct NodeCtx {
    pub name: String,
    pub domain: String,
    pub fqdn: String,
    pub arch: String,
}

#[derive(Debug, Serialize)]
pub struct NicCtx {
    pub name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub netmask: Option<String>,
    pub gateway: Option<String>,
    pub nameservers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageCtx {
    pub name: String,
    pub distro: String,
    pub version: String,
    pub arch: String,
}

#[derive(Debug, Serialize)]
pub struct Callback {
    pub done: String,
    pub failed: String,
}

#[derive(Debug, Serialize)]
pub struct Mirror {
    pub host: String,
    pub directory: String,
}

/// Everything a template can use.
#[derive(Debug, Serialize)]
pub struct Context {
    pub node: NodeCtx,
    pub nic: NicCtx,
    pub image: ImageCtx,
    pub repo_url: String,
    pub mirror: Mirror,
    pub callback: Callback,
    pub root_password_hash: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    /// The node's `install_disk` label, like `/dev/sda`; empty: the installer's choice.
    pub disk: String,
}

impl Context {
    pub fn new(
        node: &Node,
        deploy: &DeployRecord,
        image: &OsImage,
        networks: &[Network],
        base_url: &str,
        root_password_hash: Option<String>,
    ) -> Context {
        let base = base_url.trim_end_matches('/');
        let primary = node.nics.iter().find(|n| n.primary).or(node.nics.first());
        let network = primary
            .and_then(|n| n.ip)
            .and_then(|ip| networks.iter().find(|net| net.contains(ip)));
        let domain = network.and_then(|n| n.domain.clone()).unwrap_or_default();
        let fqdn = if domain.is_empty() {
            node.name.clone()
        } else {
            format!("{}.{domain}", node.name)
        };
        let nic = NicCtx {
            name: primary.map(|n| n.name.clone()).unwrap_or_default(),
            mac: primary.map(|n| n.mac.to_string()).unwrap_or_default(),
            ip: primary.and_then(|n| n.ip).map(|i| i.to_string()),
            netmask: network.map(|n| n.netmask.to_string()),
            gateway: network.and_then(|n| n.gateway).map(|g| g.to_string()),
            nameservers: network
                .map(|n| n.nameservers.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
        };
        let host = base
            .split_once("://")
            .map_or(base, |(_, rest)| rest)
            .to_owned();
        let token = &deploy.start.token;
        Context {
            node: NodeCtx {
                name: node.name.clone(),
                domain,
                fqdn,
                arch: node.arch.to_string(),
            },
            nic,
            image: ImageCtx {
                name: image.name.clone(),
                distro: image.distro.clone(),
                version: image.version.clone(),
                arch: image.arch.clone(),
            },
            repo_url: format!("{base}/{}", image.repo_root),
            mirror: Mirror {
                host,
                directory: format!("/{}", image.repo_root),
            },
            callback: Callback {
                done: deploy_url(base, token, "done"),
                failed: deploy_url(base, token, "failed"),
            },
            root_password_hash,
            ssh_authorized_keys: deploy.start.ssh_keys.clone(),
            // Checked when the label is written; a value from before that rule is left out.
            disk: node
                .labels
                .get("install_disk")
                .filter(|d| xcat3_types::is_device_path(d))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no such file for this deploy: {0}")]
    UnknownFile(String),
    #[error("template {path}: {reason}")]
    Template { path: String, reason: String },
}

/// Renders `file` (`kickstart`, `preseed`, `user-data`, `meta-data`) for `ctx`.
pub fn render(templates: &Path, ctx: &Context, file: &str) -> Result<String, RenderError> {
    let candidates: [PathBuf; 2] = [
        templates.join(&ctx.image.name).join(format!("{file}.j2")),
        templates.join(format!("{file}.j2")),
    ];
    let (source, origin) = match candidates.iter().find(|p| p.is_file()) {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| RenderError::Template {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?,
            p.display().to_string(),
        ),
        None => (
            builtin(file)
                .ok_or_else(|| RenderError::UnknownFile(file.to_owned()))?
                .to_owned(),
            format!("built-in {file}.j2"),
        ),
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Operators' templates run with a budget: a loop cannot hang the service.
    env.set_fuel(Some(1_000_000));
    // Escaping for what values go into: a POSIX shell word, a kickstart argument. YAML gets
    // minijinja's own `tojson` (JSON is YAML).
    env.add_filter("shell_quote", shell_quote);
    env.add_filter("ks_quote", ks_quote);
    env.render_str(&source, minijinja::value::Serde(ctx))
        .map_err(|e| RenderError::Template {
            path: origin,
            reason: format!("{e:#}"),
        })
}

/// `value` as one POSIX shell word: single-quoted, with each `'` written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `value` as one kickstart argument: double-quoted, `\` and `"` escaped (pykickstart reads
/// its lines with shlex).
pub fn ks_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', r"\\").replace('"', r#"\""#))
}

/// A node with one NIC on a /24, deployed with `keys`, for tests and the fuzz targets.
#[doc(hidden)]
pub fn example_context(keys: Vec<String>, hash: Option<&str>) -> Context {
    let mut node = Node::new("n1");
    node.nics.push(Nic {
        name: "eth0".into(),
        mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
        ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
        primary: true,
    });
    node.labels.insert("install_disk".into(), "/dev/vda".into());
    let mut net = Network::new(
        "prov",
        Ipv4Addr::new(10, 0, 0, 0),
        Ipv4Addr::new(255, 255, 255, 0),
    );
    net.gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
    net.nameservers = vec![Ipv4Addr::new(10, 0, 0, 2)];
    net.domain = Some("cluster.example".into());
    let deploy = DeployRecord {
        node: "n1".into(),
        start: DeployStart {
            osimage: "rocky9.4-x86_64-install-compute".into(),
            token: "t0k".into(),
            deadline: 0,
            ssh_keys: keys,
            reboot: false,
            trace_context: String::new(),
        },
        started_at: 0,
    };
    let image = OsImage {
        name: "rocky9.4-x86_64-install-compute".into(),
        distro: "rocky".into(),
        version: "9.4".into(),
        arch: "x86_64".into(),
        install_method: "kickstart".into(),
        kernel: "trees/ab/images/pxeboot/vmlinuz".into(),
        initrd: "trees/ab/images/pxeboot/initrd.img".into(),
        repo_root: "trees/ab".into(),
        created_at: 0,
        source: "r.iso".into(),
        sha256: "ab".into(),
    };
    Context::new(
        &node,
        &deploy,
        &image,
        &[net],
        "http://10.0.0.1:8090/",
        hash.map(str::to_owned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(keys: Vec<String>, hash: Option<&str>) -> Context {
        example_context(keys, hash)
    }

    #[test]
    fn builtin_templates_use_the_nodes_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(
            vec!["ssh-ed25519 AAAAC3 op@site".into()],
            Some("$6$salt$hash"),
        );
        let ks = render(dir.path(), &ctx, "kickstart").unwrap();
        assert!(
            ks.contains("url --url=http://10.0.0.1:8090/trees/ab\n"),
            "{ks}"
        );
        assert!(ks.contains("network --bootproto=static --ip=10.0.0.5 --netmask=255.255.255.0 --gateway=10.0.0.1 --nameserver=10.0.0.2 --device=52:54:00:00:00:01 --hostname=n1.cluster.example --activate"), "{ks}");
        assert!(ks.contains("rootpw --iscrypted $6$salt$hash"), "{ks}");
        assert!(
            ks.contains("sshkey --username=root \"ssh-ed25519 AAAAC3 op@site\""),
            "{ks}"
        );
        assert!(ks.contains("ignoredisk --only-use=/dev/vda"), "{ks}");
        assert!(ks.contains("curl -fsS -X POST --retry 10 --retry-delay 5 --retry-all-errors http://10.0.0.1:8090/deploy/t0k/done"), "{ks}");
        let ps = render(dir.path(), &ctx, "preseed").unwrap();
        assert!(ps.contains("d-i mirror/http/hostname string 10.0.0.1:8090\nd-i mirror/http/directory string /trees/ab\n"), "{ps}");
        assert!(
            ps.contains("d-i passwd/root-password-crypted password $6$salt$hash"),
            "{ps}"
        );
        let ud = render(dir.path(), &ctx, "user-data").unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        assert_eq!(
            parsed["autoinstall"]["identity"]["hostname"].as_str(),
            Some("n1")
        );
        assert_eq!(
            parsed["autoinstall"]["ssh"]["authorized-keys"][0].as_str(),
            Some("ssh-ed25519 AAAAC3 op@site")
        );
        assert_eq!(
            parsed["autoinstall"]["storage"]["layout"]["match"]["path"].as_str(),
            Some("/dev/vda")
        );
    }

    #[test]
    fn without_a_password_root_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let ks = render(dir.path(), &context(vec![], None), "kickstart").unwrap();
        assert!(ks.contains("rootpw --lock"), "{ks}");
        let ud = render(dir.path(), &context(vec![], None), "user-data").unwrap();
        let _: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
    }

    #[test]
    fn operator_templates_override_and_strict_mode_names_the_missing_variable() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(vec![], None);
        std::fs::write(dir.path().join("kickstart.j2"), "site {{ node.name }}").unwrap();
        assert_eq!(render(dir.path(), &ctx, "kickstart").unwrap(), "site n1");
        let per_image = dir.path().join("rocky9.4-x86_64-install-compute");
        std::fs::create_dir(&per_image).unwrap();
        std::fs::write(per_image.join("kickstart.j2"), "image {{ image.version }}").unwrap();
        assert_eq!(render(dir.path(), &ctx, "kickstart").unwrap(), "image 9.4");
        std::fs::write(per_image.join("kickstart.j2"), "{{ node.rack }}").unwrap();
        let e = render(dir.path(), &ctx, "kickstart")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rack") || e.contains("undefined"), "{e}");
        assert!(matches!(
            render(dir.path(), &ctx, "grub.cfg"),
            Err(RenderError::UnknownFile(_))
        ));
    }

    /// Keys the api would refuse, rendered anyway: every template keeps each one a single value.
    #[test]
    fn hostile_values_stay_one_word_in_every_template() {
        let hostile = [
            "ssh-ed25519 AAAA O'Brien laptop; touch /target/pwned; echo '",
            "ssh-ed25519 AAAA say \"hi\" $(reboot) `id` \\n",
            "ssh-ed25519 AAAA line\u{2028}sep",
        ];
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(hostile.iter().map(|k| k.to_string()).collect(), None);
        let preseed = render(dir.path(), &ctx, "preseed").unwrap();
        let ks = render(dir.path(), &ctx, "kickstart").unwrap();
        let ud = render(dir.path(), &ctx, "user-data").unwrap();
        let echoes: Vec<&str> = preseed
            .lines()
            .filter_map(|l| l.trim().strip_prefix("echo "))
            .map(|l| l.split(" >> ").next().unwrap())
            .collect();
        let sshkeys: Vec<&str> = ks
            .lines()
            .filter_map(|l| l.strip_prefix("sshkey --username=root "))
            .collect();
        assert_eq!((echoes.len(), sshkeys.len()), (3, 3), "{preseed}\n{ks}");
        for (i, key) in hostile.iter().enumerate() {
            // The shell reads the preseed's word back as exactly the key ...
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", echoes[i]))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), *key);
            // ... and kickstart's shlex reads one argument, the key.
            let out = std::process::Command::new("python3")
                .arg("-c")
                .arg("import shlex,sys; w=shlex.split(sys.argv[1]); assert len(w)==1, w; print(w[0], end='')")
                .arg(sshkeys[i])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), *key);
        }
        let doc: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        let keys = &doc["autoinstall"]["ssh"]["authorized-keys"];
        for (i, key) in hostile.iter().enumerate() {
            assert_eq!(keys[i].as_str(), Some(*key));
        }
    }
}
