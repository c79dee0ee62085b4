//! The noderange grammar on arbitrary text against a small inventory: never a panic (overflow
//! checks are on), never more names than the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xcat3_noderange::{Universe, expand_with_limit};

struct Inv;

impl Universe for Inv {
    fn all_nodes(&self) -> Vec<String> {
        (1..=50).map(|i| format!("cn{i}")).collect()
    }
    fn group(&self, name: &str) -> Option<Vec<String>> {
        match name {
            "compute" => Some((1..=30).map(|i| format!("cn{i}")).collect()),
            "gpu" => Some((20..=50).map(|i| format!("cn{i}")).collect()),
            _ => None,
        }
    }
    fn has_node(&self, name: &str) -> bool {
        name.strip_prefix("cn")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=50).contains(&n))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(names) = expand_with_limit(text, &Inv, 1000) {
        assert!(names.len() <= 1000);
    }
});
