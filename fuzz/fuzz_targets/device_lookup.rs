//! `GET device?venue=…&venueId=…&mac=…`: the input's lines are the three
//! parameters (a missing line is a missing parameter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_domain::{DeviceLookup, Mac};

fuzz_target!(|text: &str| {
    let mut lines = text.split('\n');
    let (venue, venue_id, mac) = (lines.next(), lines.next(), lines.next());
    let _ = DeviceLookup::parse(venue, venue_id, mac);
    let _ = Mac::parse(text);
});
