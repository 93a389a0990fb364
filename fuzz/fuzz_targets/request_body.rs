//! A scan, device/init or inventory-record body as the gateway reads it: bytes,
//! then JSON, then each parser. Any panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_domain::{DeviceInitRequest, InventoryRecord, ScanRequest};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = ScanRequest::parse(&value);
        let _ = DeviceInitRequest::parse(&value);
        let _ = InventoryRecord::parse(&value);
    }
});
