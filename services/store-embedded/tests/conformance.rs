//! The store contract, run against an embedded store in a fresh temporary directory.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a store that cannot open fails the check"
)]

use presence_ports::Stores;
use presence_ports::conformance::Fixture;
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use tempfile::TempDir;

/// The stores, and the directory their file lives in (removed when the check ends).
struct Embedded {
    stores: Stores,
    _dir: TempDir,
}

impl Fixture for Embedded {
    fn stores(&self) -> Stores {
        self.stores.clone()
    }
}

async fn fresh() -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    Embedded {
        stores: Stores::from_backend(store),
        _dir: dir,
    }
}

presence_ports::store_conformance_tests!(fresh());
