//! What the store's test binaries share: the access a [`TlsRedis`] gives its
//! ACL user.

use presence_store_redis::{ClientIdentity, RedisAccess};
use presence_tests::redis_secure::{TlsFiles, USERNAME};

/// The ACL user's password, the test CA and the client certificate of `files`.
pub fn tls_access(files: &TlsFiles) -> RedisAccess {
    let read = |name: &str| std::fs::read(files.path(name)).unwrap();
    RedisAccess {
        username: Some(USERNAME.to_owned()),
        password: Some(
            std::fs::read_to_string(files.password_file())
                .unwrap()
                .trim_end()
                .to_owned(),
        ),
        ca_pem: Some(read("ca.pem")),
        client_identity: Some(ClientIdentity {
            cert_pem: read("client.pem"),
            key_pem: read("client.key"),
        }),
    }
}
