//! An inventory upload as the gateway and `presence inventory check` read it:
//! UTF-8, then line by line, then the references between lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_domain::inventory::{check_references, parse_ndjson};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let (records, errors) = parse_ndjson(text);
        let _ = check_references(&records, errors, |_| false);
    }
});
