//! Redfish BMC simulators in one process, for the container tests: `xcat3-bmcsim FIRST_PORT COUNT
//! [DELAY_MS]` serves systems on ports FIRST_PORT.. of every address, one port per simulated
//! BMC, each answer after DELAY_MS (default 20). Prints `ready` when all ports listen.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: xcat3-bmcsim FIRST_PORT COUNT [DELAY_MS]";
    let first: u16 = args
        .first()
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .parse()?;
    let count: u16 = args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let delay: u64 = args.get(2).map(|d| d.parse()).transpose()?.unwrap_or(20);
    let addrs: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::from(([0, 0, 0, 0], first + i)))
        .collect();
    xcat3_tests::bmcsim::serve(&addrs, Duration::from_millis(delay)).await?;
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}
