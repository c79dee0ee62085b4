//! OS image commands (`osimage-list`, `osimage-show`, `osimage-delete`).

use std::process::ExitCode;

use serde::Serialize;
use xcat3_proto::pb;

use crate::args::{Format, NameArg, NameOutputArgs, OutputArgs};
use crate::client::Connection;
use crate::output;

#[derive(Serialize)]
struct OsImageDoc {
    name: String,
    distro: String,
    version: String,
    arch: String,
    install_method: String,
    kernel: String,
    initrd: String,
    repo_root: String,
}

fn print_osimages(format: Format, images: Vec<pb::OsImage>) -> anyhow::Result<()> {
    let docs: Vec<OsImageDoc> = images
        .into_iter()
        .map(|i| OsImageDoc {
            name: i.name,
            distro: i.distro,
            version: i.version,
            arch: i.arch,
            install_method: i.install_method,
            kernel: i.kernel,
            initrd: i.initrd,
            repo_root: i.repo_root,
        })
        .collect();
    output::records(
        format,
        &["NAME", "DISTRO", "VERSION", "ARCH", "METHOD"],
        &docs,
        |i| {
            vec![
                i.name.clone(),
                i.distro.clone(),
                i.version.clone(),
                i.arch.clone(),
                i.install_method.clone(),
            ]
        },
    )
}

pub async fn osimage_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let reply = conn
        .osimages()
        .await?
        .list_os_images(pb::ListOsImagesRequest {})
        .await?;
    print_osimages(a.format, reply.into_inner().osimages)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn osimage_show(conn: &Connection, a: NameOutputArgs) -> anyhow::Result<ExitCode> {
    let image = conn
        .osimages()
        .await?
        .get_os_image(pb::OsImageRef { name: a.name })
        .await?;
    print_osimages(a.output.format.for_one(), vec![image.into_inner()])?;
    Ok(ExitCode::SUCCESS)
}

pub async fn osimage_delete(conn: &Connection, a: NameArg) -> anyhow::Result<ExitCode> {
    conn.osimages()
        .await?
        .delete_os_image(pb::OsImageRef {
            name: a.name.clone(),
        })
        .await?;
    println!("osimage {} deleted", a.name);
    Ok(ExitCode::SUCCESS)
}
