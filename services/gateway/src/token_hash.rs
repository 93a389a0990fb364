//! The token's stand-in in logs and traces: a keyed hash.
//!
//! A barcode is often a dozen digits, so an unkeyed hash of it is reversed by
//! hashing every possible barcode. Keyed with a secret the logs never hold
//! (HMAC-SHA-256), the hash still follows one ticket through the logs but
//! tells nothing about the token to whoever reads them.

use crate::error::GatewayError;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

/// Shortest key file accepted, in bytes: a guessable key would make the
/// hashes reversible again.
const MIN_KEY_FILE_BYTES: usize = 16;

/// Bytes of the HMAC kept: 64 bits tell tickets apart in any night's logs.
const HASH_BYTES: usize = 8;

/// The key of [`TokenHashKey::hash`]. Never printed.
#[derive(Clone)]
pub struct TokenHashKey {
    key: [u8; 32],
    /// The HMAC with the key absorbed: each hash starts from a copy instead of
    /// keying anew, two SHA-256 blocks fewer per scan.
    keyed: Hmac<Sha256>,
}

impl PartialEq for TokenHashKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for TokenHashKey {}

impl TokenHashKey {
    fn new(key: [u8; 32]) -> Self {
        let Ok(keyed) = Hmac::<Sha256>::new_from_slice(&key) else {
            unreachable!("HMAC takes keys of any length")
        };
        Self { key, keyed }
    }

    /// A key drawn at random once per process: hashes match within this
    /// process's logs only. Deployments that follow a ticket across gateways or
    /// restarts give every instance the same key file instead.
    pub fn per_process() -> Self {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        Self::new(*KEY.get_or_init(|| {
            let mut key = [0; 32];
            // Without an operating-system random source nothing else in the
            // process is safe either; a zero key would be a reversible hash.
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut key).expect("the operating system's random source");
            key
        }))
    }

    /// The key from a file's contents (surrounding whitespace ignored), shared
    /// by every instance of a deployment.
    pub fn from_file(path: &Path) -> Result<Self, GatewayError> {
        let contents = std::fs::read(path).map_err(|source| GatewayError::TokenHashKeyFile {
            path: path.to_owned(),
            source,
        })?;
        let secret = contents.trim_ascii();
        if secret.len() < MIN_KEY_FILE_BYTES {
            return Err(GatewayError::TokenHashKeyTooShort {
                path: path.to_owned(),
                min_bytes: MIN_KEY_FILE_BYTES,
            });
        }
        Ok(Self::new(Sha256::digest(secret).into()))
    }

    /// 16 hex characters that are the same for the same token under this key.
    pub fn hash(&self, token: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(token.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..HASH_BYTES])
    }
}

impl fmt::Debug for TokenHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHashKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn a_hash_is_sixteen_hex_chars_stable_under_one_key() {
        let key = TokenHashKey::per_process();
        let hash = key.hash("721744537954");
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, TokenHashKey::per_process().hash("721744537954"));
        assert_ne!(hash, key.hash("721744537955"));
    }

    #[test]
    fn the_hash_is_hmac_sha256_of_the_token_under_the_key() {
        let key = TokenHashKey::from_file(key_file("a deployment secret key").path()).unwrap();
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&Sha256::digest(b"a deployment secret key")).unwrap();
        mac.update(b"721744537954");
        let expected = hex::encode(&mac.finalize().into_bytes()[..HASH_BYTES]);
        assert_eq!(key.hash("721744537954"), expected);
        assert_eq!(
            key.hash("721744537954"),
            expected,
            "the keyed state is not consumed"
        );
    }

    #[test]
    fn the_hash_is_keyed_so_a_dictionary_of_barcodes_does_not_reverse_it() {
        let token = "721744537954";
        let unkeyed = hex::encode(&Sha256::digest(token.as_bytes())[..HASH_BYTES]);
        let one = TokenHashKey::from_file(key_file("first deployment secret").path()).unwrap();
        let other = TokenHashKey::from_file(key_file("other deployment secret").path()).unwrap();
        assert_ne!(one.hash(token), unkeyed);
        assert_ne!(one.hash(token), other.hash(token));
        assert_ne!(one.hash(token), TokenHashKey::per_process().hash(token));
    }

    #[test]
    fn a_key_file_is_read_trimmed_and_must_not_be_guessable() {
        let plain = TokenHashKey::from_file(key_file("0123456789abcdef").path()).unwrap();
        let padded = TokenHashKey::from_file(key_file(" 0123456789abcdef\n").path()).unwrap();
        assert_eq!(plain, padded);
        let short = TokenHashKey::from_file(key_file("0123456789abcde\n").path()).unwrap_err();
        assert!(short.to_string().contains("at least 16 bytes"), "{short}");
        assert!(!short.to_string().contains("0123456789"), "{short}");
        let missing = TokenHashKey::from_file(Path::new("/nonexistent/key")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/key"),
            "{missing}"
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let key = TokenHashKey::from_file(key_file("a very secret deployment key").path()).unwrap();
        assert_eq!(format!("{key:?}"), "TokenHashKey(..)");
    }
}
