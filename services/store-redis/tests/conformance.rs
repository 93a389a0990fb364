//! The store contract, run against a Redis store on a private redis-server, and
//! again (`cluster::`) on a private three-node Redis Cluster.
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a server or store that cannot start fails the check"
)]

use presence_ports::conformance::{Fixture, StatsFixture};
use presence_ports::{StatsStore, Stores};
use presence_store_redis::{RedisOptions, RedisStore, RedisTarget};
use presence_tests::redis_server::{RedisCluster, RedisServer};
use std::sync::Arc;

/// The stores, and the Redis they live in (killed when the check ends).
struct Redis<R> {
    store: Arc<RedisStore>,
    stores: Stores,
    _redis: R,
}

impl<R> Fixture for Redis<R> {
    fn stores(&self) -> Stores {
        self.stores.clone()
    }
}

impl<R> StatsFixture for Redis<R> {
    fn stats(&self) -> Arc<dyn StatsStore> {
        self.store.clone()
    }
}

async fn on<R>(redis: R, target: RedisTarget) -> Redis<R> {
    let options = RedisOptions {
        not_found_retention: presence_ports::conformance::NOT_FOUND_RETENTION,
        ..RedisOptions::default()
    };
    let store = RedisStore::connect_to(&target, options).await.unwrap();
    Redis {
        stores: Stores::from_backend(store.clone()),
        store,
        _redis: redis,
    }
}

async fn fresh() -> Redis<RedisServer> {
    let server = RedisServer::start().await.unwrap();
    let url = server.url();
    on(server, RedisTarget::Server(url)).await
}

presence_ports::store_conformance_tests!(fresh());
presence_ports::stats_conformance_tests!(fresh());

mod cluster {
    use super::*;

    async fn fresh() -> Redis<RedisCluster> {
        let cluster = RedisCluster::start().await.unwrap();
        let seeds = cluster.urls();
        on(cluster, RedisTarget::Cluster(seeds)).await
    }

    presence_ports::store_conformance_tests!(fresh());
    presence_ports::stats_conformance_tests!(fresh());
}
