//! API keys: who may call, for which venues, and whether they may administer.
//!
//! Only SHA-256 digests of keys are kept; a presented key is hashed and its digest
//! looked up. Keys are never logged: a caller is known by the key's `name`. Each
//! key carries its own rate limit bucket, found by the same lookup.

use crate::error::GatewayError;
use crate::rate::{RateLimit, TokenBucket};
use presence_domain::VenueId;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

type KeyDigest = [u8; 32];

/// The key flags every binary with an HTTP API takes, with their environment twins.
#[derive(Clone, clap::Args)]
pub struct KeyArgs {
    /// One unrestricted admin API key (development).
    #[arg(long, env = "PRESENCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// TOML file of API keys (SHA-256 digests, venue limits, admin flag).
    #[arg(long, env = "PRESENCE_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for KeyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyArgs")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_keys_file", &self.api_keys_file)
            .finish()
    }
}

/// The keys the gateway accepts. Loaded once at start, immutable afterwards.
#[derive(Clone, Default)]
pub struct ApiKeys {
    by_digest: HashMap<KeyDigest, Caller>,
}

/// Who is calling: the grant of one API key.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    name: Arc<str>,
    /// `None`: every venue.
    venues: Option<Arc<BTreeSet<VenueId>>>,
    admin: bool,
    /// The key's own `rate` and `burst` from the keys file, if any.
    own_rate: OwnRate,
    /// Shared by every request of the key; `None`: not limited.
    bucket: Option<Arc<TokenBucket>>,
}

/// A key's own limit in the keys file; what it leaves out is the gateway's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OwnRate {
    rate: Option<u32>,
    burst: Option<u32>,
}

impl OwnRate {
    fn over(self, default: RateLimit) -> RateLimit {
        match self.rate {
            // The default burst suits the default rate, not this one: without its
            // own burst, the key gets twice its own rate.
            Some(per_second) => RateLimit {
                per_second,
                burst: self.burst,
            },
            None => RateLimit {
                per_second: default.per_second,
                burst: self.burst.or(default.burst),
            },
        }
    }
}

impl Caller {
    /// The key's label, safe for logs.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn may_use(&self, venue: &VenueId) -> bool {
        self.venues
            .as_ref()
            .is_none_or(|venues| venues.contains(venue))
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.admin
    }

    /// Takes one request from the key's budget, or says how long until there is
    /// room for one.
    pub(crate) fn admit(&self) -> Result<(), Duration> {
        self.bucket.as_ref().map_or(Ok(()), |bucket| bucket.admit())
    }
}

/// The keys file: a list of `[[keys]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: Option<String>,
    key: Option<String>,
    venues: Option<Vec<String>>,
    #[serde(default)]
    admin: bool,
    rate: Option<u32>,
    burst: Option<u32>,
}

impl ApiKeys {
    /// Reads the TOML keys file format:
    ///
    /// ```toml
    /// [[keys]]
    /// name = "north-gates"      # a label for logs, never the key
    /// sha256 = "<64 hex chars>" # SHA-256 of the key (or `key = "plain"` for development)
    /// venues = ["KovZpZAnAtJJ"] # optional; absent = every venue
    /// admin = false             # optional; admin keys may not be limited to venues
    /// rate = 500                # optional; requests a second (0: no limit)
    /// burst = 1000              # optional; requests at once, at least 1
    /// ```
    ///
    /// `rate` and `burst` replace the gateway's defaults for this key alone; a
    /// key with its own `rate` and no `burst` may burst twice its rate.
    pub fn from_toml_str(text: &str) -> Result<Self, GatewayError> {
        let file: KeysFile = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = error.message().trim_end().to_owned();
            GatewayError::KeysSyntax {
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })?;
        let mut keys = Self::default();
        for (index, entry) in file.keys.into_iter().enumerate() {
            let entry_number = index + 1;
            let invalid = |name: &str, problem: &str| GatewayError::InvalidKey {
                entry: entry_number,
                name: name.to_owned(),
                problem: problem.to_owned(),
            };
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(invalid("unnamed", "name must not be empty"));
            }
            let digest = match (entry.sha256.as_deref(), entry.key.as_deref()) {
                (Some(hex_digest), None) => parse_digest(hex_digest)
                    .ok_or_else(|| invalid(name, "sha256 must be 64 hexadecimal characters"))?,
                (None, Some(plain)) if !plain.is_empty() => digest_of(plain),
                (None, Some(_)) => return Err(invalid(name, "key must not be empty")),
                (Some(_), Some(_)) => {
                    return Err(invalid(name, "give either sha256 or key, not both"));
                }
                (None, None) => return Err(invalid(name, "sha256 (or key) is required")),
            };
            let venues = match entry.venues {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(invalid(
                        name,
                        "venues must not be empty (omit it to allow every venue)",
                    ));
                }
                Some(list) if list.iter().any(|v| v.trim().is_empty()) => {
                    return Err(invalid(name, "venues must not contain empty ids"));
                }
                Some(list) => Some(Arc::new(list.into_iter().map(VenueId::new).collect())),
            };
            if entry.burst == Some(0) {
                return Err(invalid(name, "burst must be at least 1"));
            }
            if entry.admin && venues.is_some() {
                // Inventory spans venues; a venue-limited admin would be a silent
                // way around the limit.
                return Err(invalid(name, "an admin key cannot be limited to venues"));
            }
            if let Some(existing) = keys.by_digest.get(&digest) {
                return Err(invalid(
                    name,
                    &format!("the same key is already listed as '{}'", existing.name),
                ));
            }
            keys.by_digest.insert(
                digest,
                Caller {
                    name: Arc::from(name),
                    venues,
                    admin: entry.admin,
                    own_rate: OwnRate {
                        rate: entry.rate,
                        burst: entry.burst,
                    },
                    bucket: None,
                },
            );
        }
        Ok(keys)
    }

    /// Reads a keys file (see [`ApiKeys::from_toml_str`]).
    pub fn from_toml_file(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::KeysFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|error| GatewayError::KeysFileContent {
            path: path.to_owned(),
            reason: error.to_string(),
        })
    }

    /// The keys of `--api-key` and `--api-keys-file`, file entries winning.
    pub fn from_args(args: &KeyArgs) -> Result<Self, GatewayError> {
        let single = args
            .api_key
            .as_deref()
            .map(Self::single_admin)
            .unwrap_or_default();
        match &args.api_keys_file {
            Some(path) => Ok(single.merge(Self::from_toml_file(path)?)),
            None => Ok(single),
        }
    }

    /// One unrestricted admin key, as `PRESENCE_API_KEY` gives for development.
    /// An empty key is never accepted, so `single_admin("")` admits nobody.
    pub fn single_admin(key: &str) -> Self {
        let mut keys = Self::default();
        keys.by_digest.insert(
            digest_of(key),
            Caller {
                name: Arc::from("PRESENCE_API_KEY"),
                venues: None,
                admin: true,
                own_rate: OwnRate::default(),
                bucket: None,
            },
        );
        keys
    }

    /// Both sets of keys; where both list the same key, `other`'s grant wins.
    pub fn merge(mut self, other: ApiKeys) -> Self {
        self.by_digest.extend(other.by_digest);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Gives every key a fresh bucket: its own limit from the keys file, else
    /// `default`.
    pub(crate) fn with_rate_limits(mut self, default: RateLimit) -> Self {
        for caller in self.by_digest.values_mut() {
            caller.bucket = caller.own_rate.over(default).bucket().map(Arc::new);
        }
        self
    }

    /// The grant of a presented key; `None` when it is empty or unknown.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<&Caller> {
        if presented.is_empty() {
            return None;
        }
        self.by_digest.get(&digest_of(presented))
    }
}

impl fmt::Debug for ApiKeys {
    /// Names only: digests are not secrets, but nobody needs them in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_digest.values().map(Caller::name).collect();
        names.sort_unstable();
        f.debug_struct("ApiKeys").field("names", &names).finish()
    }
}

fn digest_of(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_digest(text: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(key: &str) -> String {
        hex::encode(digest_of(key))
    }

    #[test]
    fn reads_digests_plain_keys_venues_and_admin() {
        let text = format!(
            r#"
            [[keys]]
            name = "north-gates"
            sha256 = "{}"
            venues = ["KovZpZAnAtJJ"]

            [[keys]]
            name = "ops"
            key = "dev-secret"
            admin = true
            "#,
            sha256_hex("gate-secret").to_uppercase()
        );
        let keys = ApiKeys::from_toml_str(&text).unwrap();
        let north = keys.authenticate("gate-secret").unwrap();
        assert_eq!(north.name(), "north-gates");
        assert!(north.may_use(&VenueId::new("KovZpZAnAtJJ")));
        assert!(!north.may_use(&VenueId::new("elsewhere")));
        assert!(!north.is_admin());
        let ops = keys.authenticate("dev-secret").unwrap();
        assert!(ops.is_admin());
        assert!(ops.may_use(&VenueId::new("anywhere")));
        assert!(keys.authenticate("other").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn rejects_bad_entries_naming_them() {
        let cases = [
            (
                "[[keys]]\nname = \"a\"\nsha256 = \"abc\"",
                "API key entry 1 (a): sha256 must be 64 hexadecimal characters",
            ),
            (
                &format!("[[keys]]\nname = \"a\"\nsha256 = \"{}\"", "g".repeat(64)),
                "API key entry 1 (a): sha256 must be 64 hexadecimal characters",
            ),
            (
                "[[keys]]\nname = \"a\"",
                "API key entry 1 (a): sha256 (or key) is required",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nvenues = []",
                "API key entry 1 (a): venues must not be empty (omit it to allow every venue)",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nvenues = [\"V\"]\nadmin = true",
                "API key entry 1 (a): an admin key cannot be limited to venues",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\n[[keys]]\nname = \"b\"\nkey = \"k\"",
                "API key entry 2 (b): the same key is already listed as 'a'",
            ),
            (
                "[[keys]]\nname = \" \"\nkey = \"k\"",
                "API key entry 1 (unnamed): name must not be empty",
            ),
            (
                "[[keys]]\nname = \"a\"\nkey = \"k\"\nrate = 5\nburst = 0",
                "API key entry 1 (a): burst must be at least 1",
            ),
        ];
        for (text, expected) in cases {
            let error = ApiKeys::from_toml_str(text).unwrap_err().to_string();
            assert_eq!(error, expected, "{text}");
        }
    }

    #[test]
    fn syntax_errors_give_the_line_but_not_the_text() {
        let text = "[[keys]]\nname = \"a\"\nkey = \"s3cret\"\nvenue = [\"V\"]\n";
        let error = ApiKeys::from_toml_str(text).unwrap_err().to_string();
        assert!(error.starts_with("API keys file: line 4: "), "{error}");
        assert!(error.contains("venue"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn single_admin_merge_and_debug() {
        let file = ApiKeys::from_toml_str("[[keys]]\nname = \"gates\"\nkey = \"k\"").unwrap();
        let keys = file.merge(ApiKeys::single_admin("dev"));
        assert!(keys.authenticate("dev").unwrap().is_admin());
        assert!(!keys.authenticate("k").unwrap().is_admin());
        let debug = format!("{keys:?}");
        assert_eq!(debug, r#"ApiKeys { names: ["PRESENCE_API_KEY", "gates"] }"#);
        assert!(ApiKeys::single_admin("").authenticate("").is_none());
        assert!(ApiKeys::default().is_empty());
        assert!(!keys.is_empty());
    }

    #[test]
    fn reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, "[[keys]]\nname = \"a\"\nkey = \"k\"").unwrap();
        assert!(
            ApiKeys::from_toml_file(&path)
                .unwrap()
                .authenticate("k")
                .is_some()
        );
        let missing = ApiKeys::from_toml_file(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, GatewayError::KeysFile { .. }));
    }

    #[test]
    fn keys_may_have_their_own_rate_and_burst() {
        let text = "[[keys]]\nname = \"partner\"\nkey = \"p\"\nrate = 0\n\
                    [[keys]]\nname = \"slow\"\nkey = \"s\"\nrate = 1\nburst = 2\n\
                    [[keys]]\nname = \"bursty\"\nkey = \"b\"\nburst = 3\n\
                    [[keys]]\nname = \"own\"\nkey = \"o\"\nrate = 2\n\
                    [[keys]]\nname = \"plain\"\nkey = \"d\"\n";
        let default = RateLimit {
            per_second: 1,
            burst: Some(1),
        };
        let keys = ApiKeys::from_toml_str(text)
            .unwrap()
            .merge(ApiKeys::single_admin("dev"))
            .with_rate_limits(default);
        // Ten at once, far quicker than the one token a second refills.
        let admitted = |key: &str| {
            let caller = keys.authenticate(key).unwrap().clone();
            (0..10).filter(|_| caller.admit().is_ok()).count()
        };
        assert_eq!(admitted("p"), 10, "rate 0: no limit");
        assert_eq!(admitted("s"), 2, "its own rate and burst");
        assert_eq!(admitted("b"), 3, "the default rate, its own burst");
        assert_eq!(admitted("o"), 4, "its own rate, twice that as burst");
        assert_eq!(admitted("d"), 1, "the defaults");
        assert_eq!(admitted("dev"), 1, "the defaults");
        // The clones share the key's bucket: it is still empty.
        let wait = keys.authenticate("d").unwrap().admit().unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let negative = "[[keys]]\nname = \"a\"\nkey = \"k\"\nrate = -1\n";
        let error = ApiKeys::from_toml_str(negative).unwrap_err().to_string();
        assert!(error.starts_with("API keys file: line 4: "), "{error}");
    }
}
