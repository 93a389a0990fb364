//! The store contract, run against a Redis store on a private redis-server, and
//! again (`cluster::`) on a private three-node Redis Cluster, over TLS as an
//! ACL user (`tls::`), and with a replica confirming every commit
//! (`replicated::`).
#![allow(
    clippy::unwrap_used,
    reason = "test setup: a server or store that cannot start fails the check"
)]

mod support;

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
    on_with(redis, target, RedisOptions::default()).await
}

/// The stores on `target` with `options`, and the NOT_FOUND retention every
/// conformance fixture gives its stores.
async fn on_with<R>(redis: R, target: RedisTarget, options: RedisOptions) -> Redis<R> {
    let options = RedisOptions {
        not_found_retention: presence_ports::conformance::NOT_FOUND_RETENTION,
        ..options
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

/// Over TLS (a CA the test made, a client certificate) as an ACL user with a
/// password: the contract holds whatever the connection is wrapped in.
mod tls {
    use super::*;
    use presence_tests::redis_secure::TlsRedis;

    async fn fresh() -> Redis<TlsRedis> {
        let redis = TlsRedis::start().await.unwrap();
        let options = RedisOptions {
            access: crate::support::tls_access(redis.files()),
            ..RedisOptions::default()
        };
        let target = RedisTarget::Server(redis.url());
        on_with(redis, target, options).await
    }

    presence_ports::store_conformance_tests!(fresh());
}

/// With a replica that must confirm every commit (`WAIT 1`): the contract
/// holds, and each answer waited for the replica.
mod replicated {
    use super::*;
    use presence_tests::redis_secure::start_replicated;

    async fn fresh() -> Redis<(RedisServer, RedisServer)> {
        let (primary, replica) = start_replicated().await.unwrap();
        // Generous waits: tests run side by side on a busy machine, and a
        // replica that answers late fails the commit (correctly) as unavailable.
        let options = RedisOptions {
            min_replicas: 1,
            replica_timeout: std::time::Duration::from_secs(4),
            response_timeout: std::time::Duration::from_secs(5),
            ..RedisOptions::default()
        };
        let target = RedisTarget::Server(primary.url());
        on_with((primary, replica), target, options).await
    }

    presence_ports::store_conformance_tests!(fresh());
}
