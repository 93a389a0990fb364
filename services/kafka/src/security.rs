//! How every Kafka client of every binary authenticates and encrypts: one
//! settings block ([`SecurityArgs`]) turned into librdkafka properties in one
//! place ([`Security::apply`]).
//!
//! Secrets come only from files or the environment, never from a flag's value
//! (which `ps` shows), and are held in [`Secret`], which prints as `<redacted>`.
//! Everything is checked when a binary starts, with errors that name the setting
//! and never carry a secret.

use clap::ValueEnum;
use rdkafka::config::ClientConfig;
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that may hold the SASL password itself (for
/// platforms that inject secrets as variables); a file is preferred.
pub const SASL_PASSWORD_ENV: &str = "PRESENCE_KAFKA_SASL_PASSWORD";

/// Properties the product depends on or that have a setting of their own; a
/// pass-through property may not set them.
const RESERVED_PROPERTIES: [&str; 14] = [
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "enable.idempotence",
    "acks",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

/// Fragments of property names that carry a secret inline (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`): a
/// pass-through value would be one more place a secret is written down.
const SECRET_PROPERTY_FRAGMENTS: [&str; 3] = ["password", "secret", ".pem"];

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Protocol {
    fn property(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// The name the flag takes and errors show.
    fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// `sasl.mechanism`: the ones librdkafka implements itself (no Kerberos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn property(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The security flags every Kafka client takes, with their environment twins.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// How clients reach the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or
    /// SASL_SSL (SASL over TLS).
    #[arg(
        long = "kafka-security-protocol",
        env = "PRESENCE_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t
    )]
    pub protocol: Protocol,
    /// SASL mechanism, required with a SASL protocol.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "PRESENCE_KAFKA_SASL_MECHANISM",
        value_enum,
        ignore_case = true
    )]
    pub mechanism: Option<Mechanism>,
    #[arg(long = "kafka-sasl-username", env = "PRESENCE_KAFKA_SASL_USERNAME")]
    pub username: Option<String>,
    /// File holding the SASL password (trailing newline ignored). The password
    /// may instead be in the environment variable PRESENCE_KAFKA_SASL_PASSWORD;
    /// it is never taken as a flag.
    #[arg(
        long = "kafka-sasl-password-file",
        env = "PRESENCE_KAFKA_SASL_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the brokers' certificates;
    /// without it, the system's CA certificates (a public CA's brokers).
    #[arg(long = "kafka-ssl-ca-file", env = "PRESENCE_KAFKA_SSL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by
    /// certificate (mutual TLS); needs --kafka-ssl-key-file.
    #[arg(
        long = "kafka-ssl-certificate-file",
        env = "PRESENCE_KAFKA_SSL_CERTIFICATE_FILE"
    )]
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of the client certificate (unencrypted).
    #[arg(long = "kafka-ssl-key-file", env = "PRESENCE_KAFKA_SSL_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Other librdkafka properties, `name=value`, comma-separated in the
    /// environment variable. They cannot set the properties above, the ones the
    /// product depends on (acks, enable.idempotence, group.id, offset commits)
    /// nor secrets.
    #[arg(
        long = "kafka-property",
        env = "PRESENCE_KAFKA_PROPERTIES",
        value_name = "NAME=VALUE",
        value_delimiter = ','
    )]
    pub properties: Vec<String>,
}

/// A secret: compares, but prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that hands it to librdkafka.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A checked security block: what [`Security::apply`] puts in every client's
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    protocol: Protocol,
    sasl: Option<Sasl>,
    ca_file: Option<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sasl {
    mechanism: Mechanism,
    username: String,
    password: Secret,
}

/// A security setting that cannot work. The messages name the setting, never
/// a secret's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error(
        "security protocol {protocol} uses SASL: set PRESENCE_KAFKA_SASL_MECHANISM, PRESENCE_KAFKA_SASL_USERNAME and PRESENCE_KAFKA_SASL_PASSWORD_FILE (missing: {missing})"
    )]
    SaslIncomplete { protocol: Protocol, missing: String },
    #[error(
        "{setting} is set but the security protocol {protocol} does not use it (choose {needs})"
    )]
    Unused {
        setting: &'static str,
        protocol: Protocol,
        needs: &'static str,
    },
    #[error(
        "the SASL password is given twice: PRESENCE_KAFKA_SASL_PASSWORD_FILE and PRESENCE_KAFKA_SASL_PASSWORD; keep one"
    )]
    PasswordTwice,
    #[error("{setting}: cannot read {path}: {reason}")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{setting}: {path} is empty")]
    Empty {
        setting: &'static str,
        path: PathBuf,
    },
    #[error(
        "a client certificate needs its key and the key its certificate: set both PRESENCE_KAFKA_SSL_CERTIFICATE_FILE and PRESENCE_KAFKA_SSL_KEY_FILE"
    )]
    CertificateWithoutKey,
    #[error("Kafka property {0:?} is not of the form name=value")]
    PropertySyntax(String),
    #[error(
        "Kafka property {0} cannot be set through PRESENCE_KAFKA_PROPERTIES: it has a setting of its own, or the product depends on its value"
    )]
    PropertyReserved(String),
    #[error(
        "Kafka property {0} holds a secret, which must not be written in PRESENCE_KAFKA_PROPERTIES; use the settings that read files"
    )]
    PropertySecret(String),
}

impl SecurityArgs {
    /// Checks the block and reads the password; `password_env` is the value of
    /// [`SASL_PASSWORD_ENV`], if set.
    pub fn security(&self, password_env: Option<String>) -> Result<Security, SecurityError> {
        let protocol = self.protocol;
        let sasl = if protocol.uses_sasl() {
            let password = self.password(password_env)?;
            let missing: Vec<&str> = [
                ("mechanism", self.mechanism.is_none()),
                ("username", self.username.is_none()),
                ("password", password.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            match (self.mechanism, self.username.clone(), password) {
                (Some(mechanism), Some(username), Some(password)) => Some(Sasl {
                    mechanism,
                    username,
                    password,
                }),
                _ => {
                    return Err(SecurityError::SaslIncomplete {
                        protocol,
                        missing: missing.join(", "),
                    });
                }
            }
        } else {
            let given = [
                ("PRESENCE_KAFKA_SASL_MECHANISM", self.mechanism.is_some()),
                ("PRESENCE_KAFKA_SASL_USERNAME", self.username.is_some()),
                (
                    "PRESENCE_KAFKA_SASL_PASSWORD_FILE",
                    self.password_file.is_some(),
                ),
                (SASL_PASSWORD_ENV, password_env.is_some()),
            ];
            if let Some((setting, _)) = given.into_iter().find(|(_, set)| *set) {
                return Err(SecurityError::Unused {
                    setting,
                    protocol,
                    needs: "SASL_PLAINTEXT or SASL_SSL",
                });
            }
            None
        };
        let tls_files = [
            ("PRESENCE_KAFKA_SSL_CA_FILE", &self.ca_file),
            (
                "PRESENCE_KAFKA_SSL_CERTIFICATE_FILE",
                &self.certificate_file,
            ),
            ("PRESENCE_KAFKA_SSL_KEY_FILE", &self.key_file),
        ];
        for (setting, file) in tls_files {
            if let Some(path) = file {
                if !protocol.uses_tls() {
                    return Err(SecurityError::Unused {
                        setting,
                        protocol,
                        needs: "SSL or SASL_SSL",
                    });
                }
                read_nonempty(setting, path)?;
            }
        }
        let client_certificate = match (&self.certificate_file, &self.key_file) {
            (Some(certificate), Some(key)) => Some((certificate.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(SecurityError::CertificateWithoutKey),
        };
        Ok(Security {
            protocol,
            sasl,
            ca_file: self.ca_file.clone(),
            client_certificate,
            properties: parse_properties(&self.properties)?,
        })
    }

    fn password(&self, from_env: Option<String>) -> Result<Option<Secret>, SecurityError> {
        match (&self.password_file, from_env) {
            (Some(_), Some(_)) => Err(SecurityError::PasswordTwice),
            (Some(path), None) => {
                let text = read_nonempty("PRESENCE_KAFKA_SASL_PASSWORD_FILE", path)?;
                Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
            }
            (None, Some(password)) if !password.is_empty() => Ok(Some(Secret::new(password))),
            (None, _) => Ok(None),
        }
    }
}

/// Reads `path` for `setting`, which must not be empty. The error says why the
/// file cannot be used, never what it holds.
fn read_nonempty(setting: &'static str, path: &Path) -> Result<String, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|error| SecurityError::Unreadable {
        setting,
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    if text.trim().is_empty() {
        return Err(SecurityError::Empty {
            setting,
            path: path.to_owned(),
        });
    }
    Ok(text)
}

fn parse_properties(properties: &[String]) -> Result<Vec<(String, String)>, SecurityError> {
    properties
        .iter()
        .filter(|property| !property.trim().is_empty())
        .map(|property| {
            let Some((name, value)) = property.split_once('=') else {
                return Err(SecurityError::PropertySyntax(property.clone()));
            };
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(SecurityError::PropertySyntax(property.clone()));
            }
            if RESERVED_PROPERTIES.contains(&name.as_str()) {
                return Err(SecurityError::PropertyReserved(name));
            }
            if SECRET_PROPERTY_FRAGMENTS
                .iter()
                .any(|fragment| name.contains(fragment))
            {
                return Err(SecurityError::PropertySecret(name));
            }
            Ok((name, value.trim().to_owned()))
        })
        .collect()
}

impl Security {
    /// Plaintext, no SASL, no extra properties: a local broker.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Sets the security properties, then the pass-through ones, on `config`.
    /// Called last when a client is configured, so that a pass-through property
    /// (e.g. `linger.ms`) overrides the product's tuning.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.property());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.property())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        match &self.ca_file {
            Some(path) => {
                config.set("ssl.ca.location", path.to_string_lossy());
            }
            // The system's CA certificates wherever the distribution keeps them
            // (the runtime image has no OpenSSL configuration pointing at them).
            None if self.protocol.uses_tls() => {
                config.set("ssl.ca.location", "probe");
            }
            None => {}
        }
        if let Some((certificate, key)) = &self.client_certificate {
            config
                .set("ssl.certificate.location", certificate.to_string_lossy())
                .set("ssl.key.location", key.to_string_lossy());
        }
        for (name, value) in &self.properties {
            config.set(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const PASSWORD: &str = "correct horse battery staple";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn sasl_ssl(password_file: &Path) -> SecurityArgs {
        SecurityArgs {
            protocol: Protocol::SaslSsl,
            mechanism: Some(Mechanism::ScramSha512),
            username: Some("presence".into()),
            password_file: Some(password_file.to_owned()),
            ..SecurityArgs::default()
        }
    }

    fn configured(security: &Security) -> ClientConfig {
        let mut config = ClientConfig::new();
        security.apply(&mut config);
        config
    }

    #[test]
    fn sasl_over_tls_sets_every_property_and_prints_no_password() {
        let password = file(&format!("{PASSWORD}\n"));
        let ca = file("-----BEGIN CERTIFICATE-----\n");
        let args = SecurityArgs {
            ca_file: Some(ca.path().to_owned()),
            properties: vec!["linger.ms=5".into(), " client.rack = a ".into()],
            ..sasl_ssl(password.path())
        };
        let security = args.security(None).unwrap();
        let config = configured(&security);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("presence"));
        assert_eq!(
            config.get("sasl.password"),
            Some(PASSWORD),
            "the newline ending the file is not part of the password"
        );
        assert_eq!(
            config.get("ssl.ca.location"),
            ca.path().to_str(),
            "the CA file"
        );
        assert_eq!(config.get("linger.ms"), Some("5"));
        assert_eq!(config.get("client.rack"), Some("a"));
        let printed = format!("{security:?}");
        assert!(!printed.contains(PASSWORD), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn the_password_may_come_from_the_environment_but_not_twice() {
        let args = SecurityArgs {
            password_file: None,
            ..sasl_ssl(Path::new("unused"))
        };
        let config = configured(&args.security(Some(PASSWORD.into())).unwrap());
        assert_eq!(config.get("sasl.password"), Some(PASSWORD));
        let password = file(PASSWORD);
        assert_eq!(
            sasl_ssl(password.path()).security(Some(PASSWORD.into())),
            Err(SecurityError::PasswordTwice)
        );
    }

    #[test]
    fn plaintext_is_the_default_and_sets_no_secret() {
        let config = configured(&SecurityArgs::default().security(None).unwrap());
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.password"), None);
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_refused_without_the_secret() {
        let password = file(PASSWORD);
        let refused = |args: SecurityArgs, env: Option<&str>| {
            let error = args.security(env.map(str::to_owned)).unwrap_err();
            assert!(!error.to_string().contains(PASSWORD), "{error}");
            error
        };
        let no_mechanism = SecurityArgs {
            mechanism: None,
            ..sasl_ssl(password.path())
        };
        assert!(
            refused(no_mechanism, None)
                .to_string()
                .contains("missing: mechanism")
        );
        let no_password = SecurityArgs {
            password_file: None,
            ..sasl_ssl(password.path())
        };
        assert!(
            refused(no_password, Some(""))
                .to_string()
                .contains("missing: password")
        );
        let sasl_without_sasl_protocol = SecurityArgs {
            protocol: Protocol::Ssl,
            ..sasl_ssl(password.path())
        };
        assert!(matches!(
            refused(sasl_without_sasl_protocol, None),
            SecurityError::Unused { .. }
        ));
        let password_in_env_for_plaintext = SecurityArgs::default();
        assert!(matches!(
            refused(password_in_env_for_plaintext, Some(PASSWORD)),
            SecurityError::Unused {
                setting: SASL_PASSWORD_ENV,
                ..
            }
        ));
        let ca_without_tls = SecurityArgs {
            protocol: Protocol::SaslPlaintext,
            ca_file: Some(password.path().to_owned()),
            ..sasl_ssl(password.path())
        };
        assert!(matches!(
            refused(ca_without_tls, None),
            SecurityError::Unused {
                setting: "PRESENCE_KAFKA_SSL_CA_FILE",
                ..
            }
        ));
        let certificate_without_key = SecurityArgs {
            certificate_file: Some(password.path().to_owned()),
            ..sasl_ssl(password.path())
        };
        assert_eq!(
            refused(certificate_without_key, None),
            SecurityError::CertificateWithoutKey
        );
        let missing_file = sasl_ssl(Path::new("/nonexistent/kafka-password"));
        assert!(
            refused(missing_file, None)
                .to_string()
                .starts_with("PRESENCE_KAFKA_SASL_PASSWORD_FILE: cannot read /nonexistent")
        );
        let empty = file("\n");
        assert!(matches!(
            refused(sasl_ssl(empty.path()), None),
            SecurityError::Empty { .. }
        ));
    }

    #[test]
    fn pass_through_properties_cannot_override_the_product_or_carry_secrets() {
        let with = |property: &str| {
            SecurityArgs {
                properties: vec![property.into()],
                ..SecurityArgs::default()
            }
            .security(None)
        };
        assert_eq!(
            with("acks=1"),
            Err(SecurityError::PropertyReserved("acks".into()))
        );
        assert_eq!(
            with("Enable.Idempotence=false"),
            Err(SecurityError::PropertyReserved("enable.idempotence".into()))
        );
        assert_eq!(
            with("sasl.password=x"),
            Err(SecurityError::PropertySecret("sasl.password".into()))
        );
        assert_eq!(
            with("ssl.key.pem=x"),
            Err(SecurityError::PropertySecret("ssl.key.pem".into()))
        );
        assert_eq!(
            with("linger.ms"),
            Err(SecurityError::PropertySyntax("linger.ms".into()))
        );
        assert!(with("").is_ok(), "an empty variable sets nothing");
    }

    #[test]
    fn protocols_and_mechanisms_read_as_kafka_spells_them() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            security: SecurityArgs,
        }
        let cli = Cli::try_parse_from([
            "cli",
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-256",
        ])
        .unwrap();
        assert_eq!(cli.security.protocol, Protocol::SaslSsl);
        assert_eq!(cli.security.mechanism, Some(Mechanism::ScramSha256));
    }
}
