//! Whether the Redis behind the store keeps what it answers: checked once at
//! start, so an operator running Redis without the persistence Presence needs
//! (`appendonly yes`, `appendfsync always`; docs/design.md) reads why in the log.
//! In a cluster every primary is asked: each keeps the states of its own slots.

use crate::connection::Connection;
use redis::RedisError;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use std::collections::{BTreeMap, HashMap};

/// Logs a warning when Redis's persistence settings can lose answered scans.
/// Redis may refuse `CONFIG` (managed services rename it): then nothing is known,
/// and that is logged instead.
pub(crate) async fn check(conn: &Connection) {
    match warning(conn).await {
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => tracing::info!("redis syncs every write before answering"),
        Err(error) => {
            tracing::info!(%error, "redis persistence settings unknown (CONFIG GET refused)")
        }
    }
}

/// What is wrong with Redis's persistence settings, if anything; in a cluster,
/// each primary's warning, named by its address.
pub(crate) async fn warning(conn: &Connection) -> Result<Option<String>, RedisError> {
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("append*");
    match conn {
        Connection::Server(_) | Connection::Sentinel(_) => {
            let config: HashMap<String, String> = get.query_async(&mut conn.clone()).await?;
            Ok(judge(&config))
        }
        Connection::Cluster(conn) => {
            // Without a response policy the answer maps each primary's address
            // to its reply (a primary's refusal fails the conversion below).
            let all_primaries = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let replies = conn.clone().route_command(get, all_primaries).await?;
            let by_node: BTreeMap<String, HashMap<String, String>> =
                redis::from_redis_value(replies)?;
            let warnings: Vec<String> = by_node
                .iter()
                .filter_map(|(node, config)| Some(format!("{node}: {}", judge(config)?)))
                .collect();
            Ok((!warnings.is_empty()).then(|| warnings.join("; ")))
        }
    }
}

/// What is wrong with these `CONFIG GET append*` values, if anything.
fn judge(config: &HashMap<String, String>) -> Option<String> {
    let setting = |name: &str| config.get(name).map(String::as_str).unwrap_or("unknown");
    if setting("appendonly") != "yes" {
        return Some(format!(
            "redis runs without its append-only file (appendonly {}): a Redis restart \
             forgets every ticket's state; run it with appendonly yes and appendfsync always",
            setting("appendonly")
        ));
    }
    if setting("appendfsync") != "always" {
        return Some(format!(
            "redis answers before syncing its append-only file (appendfsync {}): a crash \
             can lose the last seconds of answered scans and re-open their tickets; run it \
             with appendfsync always",
            setting("appendfsync")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(appendonly: &str, appendfsync: &str) -> HashMap<String, String> {
        HashMap::from([
            ("appendonly".to_owned(), appendonly.to_owned()),
            ("appendfsync".to_owned(), appendfsync.to_owned()),
        ])
    }

    #[test]
    fn only_a_synced_append_only_file_keeps_every_answer() {
        assert_eq!(judge(&config("yes", "always")), None);
        let off = judge(&config("no", "always")).unwrap_or_default();
        assert!(off.contains("appendonly no"), "{off}");
        let lazy = judge(&config("yes", "everysec")).unwrap_or_default();
        assert!(lazy.contains("appendfsync everysec"), "{lazy}");
        let unknown = judge(&HashMap::new()).unwrap_or_default();
        assert!(unknown.contains("appendonly unknown"), "{unknown}");
    }
}
