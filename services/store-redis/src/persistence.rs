//! Whether the Redis behind the store keeps what it answers: checked once at
//! start, so an operator running Redis without the persistence Presence needs
//! (`appendonly yes`, `appendfsync always`; docs/design.md) reads why in the log.

use redis::RedisError;
use redis::aio::ConnectionManager;
use std::collections::HashMap;

/// Logs a warning when Redis's persistence settings can lose answered scans.
/// Redis may refuse `CONFIG` (managed services rename it): then nothing is known,
/// and that is logged instead.
pub(crate) async fn check(conn: &mut ConnectionManager) {
    match warning(conn).await {
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => tracing::info!("redis syncs every write before answering"),
        Err(error) => {
            tracing::info!(%error, "redis persistence settings unknown (CONFIG GET refused)")
        }
    }
}

/// What is wrong with Redis's persistence settings, if anything.
pub(crate) async fn warning(conn: &mut ConnectionManager) -> Result<Option<String>, RedisError> {
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query_async(conn)
        .await?;
    Ok(judge(&config))
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
