//! The `xcat3` command-line client: parses the prototype's syntax, talks gRPC to the api, prints
//! tables, JSON or YAML. It never links the store or etcd, so it stays quick to build.
//!
//! - [`args`]: the clap command tree;
//! - [`client`]: server address, token and the gRPC channel;
//! - [`copycds`]: the `xcat3-copycds` command;
//! - [`doc`]: the YAML/JSON form of nodes (`create -f`, `export`, `import`, `-o yaml`);
//! - [`nodes`], [`networks`], [`osimages`], [`passwds`], [`services`]: the commands;
//! - [`output`]: tables, per-node results and the `Success: X Total: Y` summary.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod args;
pub mod client;
pub mod copycds;
pub mod doc;
pub mod networks;
pub mod nodes;
pub mod osimages;
pub mod output;
pub mod passwds;
pub mod services;
pub mod time;

use std::process::ExitCode;

use clap::Parser;

/// Runs the CLI: exit status 0 when everything succeeded, 1 when any node or the request failed,
/// 2 for usage errors (clap's own).
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xcat3: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", output::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: args::Cli) -> anyhow::Result<ExitCode> {
    let conn = client::Connection::from_args(&cli.conn)?;
    use args::Command as C;
    match cli.command {
        C::Create(a) => nodes::create(&conn, a).await,
        C::Import(a) => nodes::import(&conn, a).await,
        C::Update(a) => nodes::update(&conn, a).await,
        C::Delete(a) => nodes::delete(&conn, a).await,
        C::List(a) => nodes::list(&conn, a).await,
        C::Show(a) => nodes::show(&conn, a).await,
        C::Export(a) => nodes::export(&conn, a).await,
        C::NetworkCreate(a) => networks::network_create(&conn, a).await,
        C::NetworkUpdate(a) => networks::network_update(&conn, a).await,
        C::NetworkDelete(a) => networks::network_delete(&conn, a).await,
        C::NetworkList(a) => networks::network_list(&conn, a).await,
        C::NetworkShow(a) => networks::network_show(&conn, a).await,
        C::OsimageList(a) => osimages::osimage_list(&conn, a).await,
        C::OsimageShow(a) => osimages::osimage_show(&conn, a).await,
        C::PasswdCreate(a) => passwds::passwd_create(&conn, a).await,
        C::PasswdList(a) => passwds::passwd_list(&conn, a).await,
        C::PasswdDelete(a) => passwds::passwd_delete(&conn, a).await,
        C::ServiceList(a) => services::service_list(&conn, a).await,
        C::DiscoveredList(a) => networks::discovered_list(&conn, a).await,
        C::Power(a) => nodes::power(&conn, a).await,
        C::Bootdev(a) => nodes::bootdev(&conn, a).await,
        C::ConductorList(a) => services::conductor_list(&conn, a).await,
        C::Events(a) => nodes::events(&conn, a).await,
        C::Deploy(a) => nodes::deploy(&conn, a).await,
        C::Undeploy(a) => nodes::undeploy(&conn, a.noderange).await,
        C::OsimageDelete(a) => osimages::osimage_delete(&conn, a).await,
    }
}
