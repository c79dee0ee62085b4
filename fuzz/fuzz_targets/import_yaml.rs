//! `xcat3 import` / `create -f`: a nodes file (YAML) parsed, converted to the wire and back as
//! the api does, and validated. Errors are fine; panics are not. A file cut into parts and parsed
//! part by part (as big files are) must give what the whole file gives.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = xcat3_cli::doc::parse_nodes(text);
    if let Some(parts) = xcat3_cli::doc::parse_in_parts(text, 3) {
        assert_eq!(whole.as_ref().ok(), Some(&parts), "parsed in parts: {text:?}");
    }
    let Ok(docs) = whole else {
        return;
    };
    for doc in docs {
        let wire = doc.into_pb();
        if let Ok(mut node) = xcat3_proto::convert::node_from_pb(&wire) {
            let _ = node.validate();
        }
    }
});
