//! Identifiers. Newtypes keep a venue id from being passed where a token belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Unix time in milliseconds, as scanners and inventory send it.
pub type UnixMillis = i64;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A venue, as named by the ticketing system (e.g. `KovZpZAnAtJJ`).
    VenueId
);
string_id!(
    /// An event at a venue (e.g. `3F005062B2B4E313`).
    EventId
);
string_id!(
    /// The barcode or NFC token a scanner reads. Never logged in full.
    Token
);
string_id!(
    /// The id the gateway gives one scan request; decisions carry it so analytics can dedupe.
    ScanId
);

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub fn new(value: u64) -> Self {
                Self(value)
            }

            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

int_id!(
    /// A configured scanning device; positive, stable across re-init of one (venue, MAC).
    DeviceId
);
int_id!(
    /// A gate of a venue; positive, created on first use of a gate name.
    GateId
);
