//! The install-tree server's request parsing: paths (percent-decoding, `..`) and byte ranges.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, head) = match data.split_first() {
        Some((s, rest)) => (u64::from(*s) * 1_000_003, rest),
        None => return,
    };
    xcat3_image::trees::check_request(head, size);
    xcat3_image::trees::check_request(head, u64::MAX);
});
