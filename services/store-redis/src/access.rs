//! How the store proves itself to Redis and Redis to the store: TLS
//! (`rediss://` URLs) checked against a CA file or the system's roots, an
//! optional client certificate (for Redis with `tls-auth-clients yes`), and an
//! ACL user and password. The same apply to a single server, every node of a
//! cluster and a Sentinel-managed primary.

use redis::{
    Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
    TlsCertificates,
};

/// The credentials and TLS material the store connects with. Its `Debug`
/// never shows the password nor the client key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// The ACL user (`AUTH username password`); without one, `AUTH password`
    /// authenticates as the `default` user.
    pub username: Option<String>,
    /// Overrides a password the URL holds.
    pub password: Option<String>,
    /// PEM certificates of the CAs that sign Redis's certificate; without them
    /// the system's roots are trusted (what managed Redis offerings need).
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM client certificate chain and its key, presented to Redis.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("client_identity", &self.client_identity)
            .finish()
    }
}

impl RedisAccess {
    /// Whether TLS material is configured (it needs `rediss://` URLs).
    pub(crate) fn has_tls_material(&self) -> bool {
        self.ca_pem.is_some() || self.client_identity.is_some()
    }

    /// The CA and client certificate, as the Redis client takes them.
    pub(crate) fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client_identity
                .as_ref()
                .map(|identity| ClientTlsConfig {
                    client_cert: identity.cert_pem.clone(),
                    client_key: identity.key_pem.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }

    /// A client for the node at `url` with these credentials and, for a
    /// `rediss://` URL, this TLS material.
    pub(crate) fn client(&self, url: &str) -> Result<Client, RedisError> {
        let info = self.with_credentials(url.into_connection_info()?);
        if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
            install_crypto_provider();
            Client::build_with_tls(info, self.certificates())
        } else if self.has_tls_material() {
            Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis CA file or client certificate needs a rediss:// URL",
            )))
        } else {
            Client::open(info)
        }
    }

    fn with_credentials(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info.set_redis_settings(settings)
    }
}

/// rustls is built with the ring provider only; installing it as the
/// process's default spares rustls from guessing. A second call (or another
/// library's provider) leaves the first in place.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_access() -> RedisAccess {
        RedisAccess {
            username: Some("presence".into()),
            password: Some("hunter2-secret".into()),
            ca_pem: Some(b"ca".to_vec()),
            client_identity: Some(ClientIdentity {
                cert_pem: b"cert".to_vec(),
                key_pem: b"private-key-secret".to_vec(),
            }),
        }
    }

    #[test]
    fn debug_hides_the_password_and_the_key() {
        let shown = format!("{:?}", secret_access());
        assert!(shown.contains("presence"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn the_password_setting_overrides_the_urls() {
        let access = RedisAccess {
            username: Some("presence".into()),
            password: Some("hunter2-secret".into()),
            ..RedisAccess::default()
        };
        let client = access
            .client("redis://user:from-url@127.0.0.1:6380/2")
            .map_err(|error| error.to_string());
        let info = client.as_ref().map(Client::get_connection_info);
        let settings = info.map(ConnectionInfo::redis_settings);
        assert_eq!(
            settings.map(|s| (s.username(), s.password(), s.db())),
            Ok((Some("presence"), Some("hunter2-secret"), 2))
        );
    }

    #[test]
    fn tls_material_needs_a_tls_url() {
        let refused = secret_access().client("redis://127.0.0.1:6379/0");
        assert!(
            refused.is_err_and(|error| error.to_string().contains("rediss://")),
            "a CA file with a redis:// URL must be refused"
        );
    }
}
