//! `xcat3-server ROLE`: one binary for every role, so a single machine runs the whole system with
//! `xcat3-server all-in-one` and a cluster runs one role per pod. Composition only: each service
//! is a library and owns its configuration.
//!
//! Roles today: `api`, and `all-in-one` (the api with SQLite under the data directory and, when no
//! token is configured, an admin token generated into `<data_dir>/admin.token`). The conductor,
//! network and image services join `all-in-one` as they land.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "xcat3 server: run one service, or all of them")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every service in one process, SQLite by default, no etcd.
    AllInOne(xcat3_api::cli::ApiArgs),
    /// The public gRPC api.
    Api(xcat3_api::cli::ApiArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().role {
        Role::AllInOne(args) => xcat3_api::cli::main(args, true),
        Role::Api(args) => xcat3_api::cli::main(args, false),
    }
}
