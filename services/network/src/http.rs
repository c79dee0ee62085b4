//! The boot HTTP server: per-NIC iPXE scripts (`/boot/<mac>.ipxe`) and the files of the TFTP root
//! (for UEFI HTTP boot and for iPXE fetching its binaries over HTTP).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Extension, Path as UrlPath, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use xcat3_runtime::http::PeerAddr;
use xcat3_types::MacAddr;

use crate::State;
use crate::metrics::ScriptLabel;
use crate::table::{BootAction, Host};
use crate::tftp::{FileCache, PathError, resolve};

#[derive(Clone)]
struct Ctx {
    state: Arc<State>,
    root: Arc<PathBuf>,
    cache: Arc<FileCache>,
    /// Installer scripts only to the host's reserved address.
    source_check: bool,
}

pub fn router(state: Arc<State>, root: PathBuf, source_check: bool) -> axum::Router {
    let ctx = Ctx {
        state,
        root: Arc::new(root),
        cache: Arc::new(FileCache::default()),
        source_check,
    };
    axum::Router::new()
        .route("/boot/{file}", get(script))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(get(file))
        .with_state(ctx)
}

/// The iPXE script of a host.
pub fn host_script(h: &Host) -> String {
    match &h.action {
        BootAction::LocalDisk => format!(
            "#!ipxe\n\
             echo xcat3: {node} boots from its local disk\n\
             iseq ${{platform}} efi && exit ||\n\
             sanboot --no-describe --drive 0x80 || exit\n",
            node = h.node
        ),
        BootAction::Install {
            osimage,
            kernel,
            initrds,
            cmdline,
        } => {
            let mut s = format!("#!ipxe\necho xcat3: installing {osimage} on {}\n", h.node);
            let names: Vec<String> = (0..initrds.len()).map(|i| format!("initrd{i}")).collect();
            let initrd_args: String = names.iter().map(|n| format!(" initrd={n}")).collect();
            s.push_str(&format!(
                "kernel --name kernel {kernel} {cmdline}{initrd_args}\n"
            ));
            for (url, name) in initrds.iter().zip(&names) {
                s.push_str(&format!("initrd --name {name} {url}\n"));
            }
            s.push_str("boot\n");
            s
        }
    }
}

/// The script for a machine the inventory does not know: say so, then ask again every minute, so
/// it boots as soon as an operator adopts it.
pub fn discovery_script(mac: MacAddr) -> String {
    format!(
        "#!ipxe\n\
         echo xcat3: {mac} is not in the inventory; it is listed by 'xcat3 discovered-list'\n\
         echo xcat3: create a node with this MAC to provision it; asking again in 60 s\n\
         sleep 60\n\
         chain --autofree --replace ${{0}}\n"
    )
}

/// The script for an installer request that did not come from the host's address: no token,
/// and ask again (the machine itself, once it has its address, gets the real one).
pub fn elsewhere_script(h: &Host, peer: std::net::IpAddr) -> String {
    let reserved = h.ip.map_or_else(|| "none".to_owned(), |ip| ip.to_string());
    format!(
        "#!ipxe
         echo xcat3: {node} is being installed; its installer is served only to its address {reserved}, not to {peer}
         echo xcat3: asking again in 10 s
         sleep 10
         chain --autofree --replace ${{0}}
",
        node = h.node
    )
}

/// Whether an installer script may go to `peer`: the host's reserved address only.
fn may_install(h: &Host, peer: std::net::IpAddr) -> bool {
    matches!((h.ip, peer.to_canonical()), (Some(ip), std::net::IpAddr::V4(p)) if ip == p)
}

async fn script(
    AxumState(ctx): AxumState<Ctx>,
    UrlPath(file): UrlPath<String>,
    peer: Option<Extension<PeerAddr>>,
) -> Response {
    let Some(mac) = file
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<MacAddr>().ok())
    else {
        return (StatusCode::NOT_FOUND, "expected /boot/<mac>.ipxe\n").into_response();
    };
    let table = ctx.state.table();
    let (kind, body) = match table.hosts.get(&mac) {
        Some(h) => {
            let peer = peer.map(|Extension(PeerAddr(a))| a.ip());
            let (kind, body) = match (&h.action, peer) {
                (BootAction::LocalDisk, _) => ("local", host_script(h)),
                (BootAction::Install { .. }, p)
                    if ctx.source_check && !p.is_some_and(|p| may_install(h, p)) =>
                {
                    let p = p.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                    tracing::warn!(mac = %mac, node = %h.node, peer = %p, "installer script refused: not the node's address");
                    ("refused", elsewhere_script(h, p))
                }
                (BootAction::Install { .. }, _) => ("install", host_script(h)),
            };
            tracing::info!(mac = %mac, node = %h.node, script = kind, "iPXE script served");
            (kind, body)
        }
        None => {
            tracing::info!(mac = %mac, script = "discovery", "iPXE script served");
            ("discovery", discovery_script(mac))
        }
    };
    ctx.state
        .metrics
        .http_scripts
        .get_or_create(&ScriptLabel {
            script: kind.into(),
        })
        .inc();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn file(AxumState(ctx): AxumState<Ctx>, uri: axum::http::Uri) -> Response {
    let name = uri.path().trim_start_matches('/').to_owned();
    let path = match resolve(&ctx.root, &name) {
        Ok(p) => p,
        Err(PathError::NotFound) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => return (StatusCode::FORBIDDEN, format!("{e}\n")).into_response(),
    };
    let cache = ctx.cache.clone();
    match tokio::task::spawn_blocking(move || cache.read(&path)).await {
        Ok(Ok(data)) => {
            ctx.state.metrics.http_bytes.inc_by(data.len() as u64);
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                axum::body::Bytes::from_owner(data),
            )
                .into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Host;

    fn host(action: BootAction) -> Host {
        Host {
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            ip: None,
            node: "n1".into(),
            nic: "eth0".into(),
            primary: true,
            arch: "x86_64".into(),
            netboot: "pxe".into(),
            action,
        }
    }

    #[test]
    fn install_script_boots_the_installer_with_every_initrd() {
        let s = host_script(&host(BootAction::Install {
            osimage: "rocky9-x86_64-install-compute".into(),
            kernel: "http://img/vmlinuz".into(),
            initrds: vec![
                "http://img/initrd.img".into(),
                "http://img/extra.cpio".into(),
            ],
            cmdline: "inst.ks=http://img/ks console=ttyS0".into(),
        }));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert!(lines.contains(&"kernel --name kernel http://img/vmlinuz inst.ks=http://img/ks console=ttyS0 initrd=initrd0 initrd=initrd1"), "{s}");
        assert!(
            lines.contains(&"initrd --name initrd0 http://img/initrd.img"),
            "{s}"
        );
        assert!(
            lines.contains(&"initrd --name initrd1 http://img/extra.cpio"),
            "{s}"
        );
        assert_eq!(lines.last(), Some(&"boot"));
    }

    #[test]
    fn local_boot_exits_on_uefi_and_boots_the_first_disk_on_bios() {
        let s = host_script(&host(BootAction::LocalDisk));
        assert!(s.contains("iseq ${platform} efi && exit"), "{s}");
        assert!(s.contains("sanboot --no-describe --drive 0x80"), "{s}");
        assert!(discovery_script(MacAddr([2, 0, 0, 0, 0, 9])).contains("02:00:00:00:00:09"));
    }
}
