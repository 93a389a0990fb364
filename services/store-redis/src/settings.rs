//! The Redis settings of the services that use the store (the validator, the
//! registry), with their environment twins. Secrets come from files or the
//! environment and are never shown: `--help` hides the environment's values,
//! and errors name the setting and the file, never their contents.

use crate::{ClientIdentity, RedisAccess, RedisOptions, RedisStore, RedisStoreError, RedisTarget};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// One Redis server's URL (`rediss://` for TLS); with `--redis-cluster`, a
    /// Redis Cluster's seed nodes' URLs, and with `--redis-sentinel-primary`
    /// the sentinels' URLs, separated by commas. A password in it is accepted,
    /// but `--redis-password-file` keeps it out of the environment.
    #[arg(
        long,
        env = "PRESENCE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Redis is a Redis Cluster, reached through the seed nodes `--redis-url` lists.
    #[arg(long, env = "PRESENCE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// The name Redis Sentinel monitors the primary under: the store asks the
    /// sentinels `--redis-url` lists for it, and again after a failover.
    #[arg(
        long,
        env = "PRESENCE_REDIS_SENTINEL_PRIMARY",
        conflicts_with = "redis_cluster"
    )]
    pub redis_sentinel_primary: Option<String>,
    /// The Redis ACL user to authenticate as (the `default` user without one).
    #[arg(long, env = "PRESENCE_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// A file holding the Redis password (one line; a trailing newline is
    /// ignored). Overrides a password in `--redis-url`.
    #[arg(long, env = "PRESENCE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates Redis's TLS certificate must chain to;
    /// the system's roots without it. Needs `rediss://` URLs.
    #[arg(long, env = "PRESENCE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to Redis, for a Redis that
    /// verifies clients (`tls-auth-clients yes`); with `--redis-key-file`.
    #[arg(long, env = "PRESENCE_REDIS_CERT_FILE", requires = "redis_key_file")]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM private key of `--redis-cert-file`.
    #[arg(long, env = "PRESENCE_REDIS_KEY_FILE", requires = "redis_cert_file")]
    pub redis_key_file: Option<PathBuf>,
    /// Replicas that must acknowledge a decision before it is answered (Redis
    /// `WAIT`): a failover then cannot lose an answered scan. 0 answers once
    /// the primary has it.
    #[arg(long, env = "PRESENCE_REDIS_MIN_REPLICAS", default_value_t = 0)]
    pub redis_min_replicas: u32,
    /// How long a decision waits for those replicas before the scan is
    /// answered 503 (its retry answers what was settled). Below the store's
    /// one-second response timeout.
    #[arg(long, env = "PRESENCE_REDIS_REPLICA_TIMEOUT_MS", default_value_t = 500)]
    pub redis_replica_timeout_ms: u64,
    /// How long a NOT_FOUND decision (and its stats marker) is remembered for
    /// retries, in ms; every other decision is remembered 24 hours.
    #[arg(long, env = "PRESENCE_NOT_FOUND_RETENTION_MS",
          default_value_t = presence_ports::DEFAULT_NOT_FOUND_RETENTION_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub not_found_retention_ms: u64,
}

impl RedisArgs {
    /// Where Redis is.
    pub fn target(&self) -> RedisTarget {
        RedisTarget::from_settings(
            &self.redis_url,
            self.redis_cluster,
            self.redis_sentinel_primary.as_deref(),
        )
    }

    /// The store's options: the defaults, with these credentials (read from
    /// their files) and replica settings.
    pub fn options(&self) -> Result<RedisOptions, RedisStoreError> {
        let password = self
            .redis_password_file
            .as_deref()
            .map(|path| read("--redis-password-file", path))
            .transpose()?
            .map(|bytes| {
                String::from_utf8(bytes)
                    .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|_| {
                        RedisStoreError::Options(
                            "the --redis-password-file is not UTF-8 text".to_owned(),
                        )
                    })
            })
            .transpose()?;
        let client_identity = match (&self.redis_cert_file, &self.redis_key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read("--redis-cert-file", cert)?,
                key_pem: read("--redis-key-file", key)?,
            }),
            _ => None,
        };
        Ok(RedisOptions {
            access: RedisAccess {
                username: self.redis_username.clone(),
                password,
                ca_pem: self
                    .redis_ca_file
                    .as_deref()
                    .map(|path| read("--redis-ca-file", path))
                    .transpose()?,
                client_identity,
            },
            min_replicas: self.redis_min_replicas,
            replica_timeout: Duration::from_millis(self.redis_replica_timeout_ms),
            not_found_retention: Duration::from_millis(self.not_found_retention_ms),
            ..RedisOptions::default()
        })
    }

    /// Connects the store as these settings say.
    pub async fn connect(&self) -> Result<Arc<RedisStore>, RedisStoreError> {
        RedisStore::connect_to(&self.target(), self.options()?).await
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, RedisStoreError> {
    std::fs::read(path).map_err(|source| RedisStoreError::File {
        setting,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        redis: RedisArgs,
    }

    #[test]
    fn the_password_file_is_read_without_its_newline() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n")?;
        let settings = Settings::try_parse_from([
            "test",
            "--redis-username",
            "presence",
            "--redis-password-file",
            file.to_str().unwrap_or_default(),
        ])?;
        let access = settings.redis.options()?.access;
        assert_eq!(access.username.as_deref(), Some("presence"));
        assert_eq!(access.password.as_deref(), Some("s3cret"));
        Ok(())
    }

    #[test]
    fn a_missing_file_is_named_with_its_setting() -> Result<(), Box<dyn std::error::Error>> {
        let settings =
            Settings::try_parse_from(["test", "--redis-ca-file", "/nonexistent/ca.pem"])?;
        let error = settings.redis.options().err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("--redis-ca-file") && e.contains("/nonexistent/ca.pem")),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn sentinel_and_cluster_exclude_each_other() {
        let both = Settings::try_parse_from([
            "test",
            "--redis-cluster",
            "--redis-sentinel-primary",
            "main",
        ]);
        assert!(both.is_err());
    }
}
