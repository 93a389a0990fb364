//! The store contract, run against an embedded store in a fresh temporary directory.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a store that cannot open fails the check"
)]

use presence_ports::conformance::{Fixture, StatsFixture};
use presence_ports::{StatsStore, Stores};
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use std::sync::Arc;
use tempfile::TempDir;

/// The stores, and the directory their file lives in (removed when the check ends).
struct Embedded {
    store: Arc<EmbeddedStore>,
    stores: Stores,
    _dir: TempDir,
}

impl Fixture for Embedded {
    fn stores(&self) -> Stores {
        self.stores.clone()
    }
}

impl StatsFixture for Embedded {
    fn stats(&self) -> Arc<dyn StatsStore> {
        self.store.clone()
    }
}

async fn fresh() -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        not_found_retention: presence_ports::conformance::NOT_FOUND_RETENTION,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    Embedded {
        stores: Stores::from_backend(store.clone()),
        store,
        _dir: dir,
    }
}

presence_ports::store_conformance_tests!(fresh());
presence_ports::stats_conformance_tests!(fresh());
