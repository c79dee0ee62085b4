//! `xcat3-conductor`: one conductor process (see `xcat3-server` for several services in one).

#[derive(clap::Parser)]
#[command(version, about = "xcat3 conductor")]
struct Args {
    #[command(flatten)]
    conductor: xcat3_conductor::cli::ConductorArgs,
    #[command(flatten)]
    coord: xcat3_coord::CoordArgs,
    #[command(flatten)]
    tls: xcat3_runtime::tls::TlsArgs,
    #[command(flatten)]
    file: xcat3_runtime::layered::ConfigFile,
}

/// mimalloc: after four 100,000-node operations the all-in-one server held 455 MB, against
/// 978 MB with glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Args = xcat3_runtime::layered::parse();
    xcat3_conductor::cli::main(args.conductor, args.coord, args.tls)
}
