//! Every packet parser of the network agent on arbitrary bytes: the DHCP path (frame check,
//! decode, decision, encode), DNS queries and TFTP requests. None may panic.
//!
//! `bash scripts/fuzz.sh packets` (see fuzz/README.md).

#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use xcat3_network::State;
use xcat3_network::dhcp::answer::Settings;
use xcat3_network::dhcp::pool::Pool;
use xcat3_network::table::Table;

fn state() -> &'static Arc<State> {
    static STATE: OnceLock<Arc<State>> = OnceLock::new();
    STATE.get_or_init(|| State::for_tests(xcat3_network::fuzz_table(), Pool::in_memory(), Settings::default()))
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let local = [Ipv4Addr::new(10, 0, 0, 1)];
    let _ = xcat3_network::dhcp::handle(state(), data, &local, 67, &mut out);
    let _ = xcat3_network::dhcp::handle(state(), data, &local, 4011, &mut out);
    let table: Arc<Table> = state().table();
    let _ = xcat3_network::dns::answer(&table, data);
    let _ = xcat3_network::tftp::parse_request(data);
});
