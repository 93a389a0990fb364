//! The store contract, run against a Redis store on a private redis-server.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a server or store that cannot start fails the check"
)]

use presence_ports::conformance::{Fixture, StatsFixture};
use presence_ports::{StatsStore, Stores};
use presence_store_redis::{RedisOptions, RedisStore};
use presence_tests::redis_server::RedisServer;
use std::sync::Arc;

/// The stores, and the server they live in (killed when the check ends).
struct Redis {
    store: Arc<RedisStore>,
    stores: Stores,
    _server: RedisServer,
}

impl Fixture for Redis {
    fn stores(&self) -> Stores {
        self.stores.clone()
    }
}

impl StatsFixture for Redis {
    fn stats(&self) -> Arc<dyn StatsStore> {
        self.store.clone()
    }
}

async fn fresh() -> Redis {
    let server = RedisServer::start().await.unwrap();
    let store = RedisStore::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    Redis {
        stores: Stores::from_backend(store.clone()),
        store,
        _server: server,
    }
}

presence_ports::store_conformance_tests!(fresh());
presence_ports::stats_conformance_tests!(fresh());
