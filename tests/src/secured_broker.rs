//! A private broker that demands SASL over TLS of every client, as a managed
//! cluster (Strimzi, MSK, Confluent Cloud) does, for one test; optionally a
//! client certificate as well (mutual TLS, [`ClientCertificates::Required`]).
//!
//! tansu 0.6 authenticates with `--authentication` (SCRAM users made with
//! `tansu user create`; PLAIN is accepted with any password) but does not speak
//! TLS: `tansu broker --cert/--key` builds a TLS acceptor it never uses. So
//! stunnel, from Debian's `stunnel4` package, terminates TLS in front of it with
//! a server certificate signed by a CA made for the test, and the broker
//! advertises stunnel's address, so clients reconnect through it.
//!
//! The broker is durable (PostgreSQL, see [`Broker::start_durable`]): the users
//! are made while it still accepts anyone, then it restarts demanding
//! authentication.

use crate::broker::{Broker, READY_TIMEOUT};
use crate::pki::TestPki;
use crate::redis_server::on_a_free_port;
use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The settings that give a Kafka client its certificate and its key.
pub const CLIENT_CERTIFICATE_SETTINGS: [&str; 2] = [
    "PRESENCE_KAFKA_SSL_CERTIFICATE_FILE",
    "PRESENCE_KAFKA_SSL_KEY_FILE",
];

/// A SASL user of the broker.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    /// As Kafka spells it: `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`.
    pub mechanism: &'static str,
}

impl User {
    /// A user with a random password of its own.
    pub fn new(mechanism: &'static str) -> Self {
        Self {
            name: crate::unique("presence"),
            password: crate::unique("secret"),
            mechanism,
        }
    }
}

/// Whether the TLS terminator asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// TLS checks only the broker, as most managed clusters do.
    NotAsked,
    /// Mutual TLS: a client without a certificate signed by the test's CA is
    /// refused at the handshake (stunnel's `verifyChain` and `requireCert`).
    Required,
}

/// A broker reached only through TLS with SASL; killed (with its TLS
/// terminator) when dropped.
#[derive(Debug)]
pub struct SecuredBroker {
    broker: Broker,
    front: TlsFront,
}

/// What a secured broker has in front of it: the TLS terminator and the
/// certificates. Killed when dropped.
#[derive(Debug)]
pub struct TlsFront {
    terminator: Terminator,
    pki: Pki,
}

impl SecuredBroker {
    /// Starts the broker with `users` (PLAIN users need no making).
    pub async fn start(users: &[User], client_certificates: ClientCertificates) -> Result<Self> {
        let mut broker = Broker::start_durable().await?;
        for user in users.iter().filter(|user| user.mechanism != "PLAIN") {
            broker.create_scram_user(&user.name, &user.password, user.mechanism)?;
        }
        let pki = Pki::make()?;
        let terminator = Terminator::start(&pki, broker.port(), client_certificates).await?;
        broker.require_authentication(terminator.port).await?;
        Ok(Self {
            broker,
            front: TlsFront { terminator, pki },
        })
    }

    /// The broker behind the terminator, and the terminator.
    pub fn into_parts(self) -> (Broker, TlsFront) {
        (self.broker, self.front)
    }

    pub fn front(&self) -> &TlsFront {
        &self.front
    }

    /// What the broker and the terminator logged.
    pub fn log(&self) -> String {
        format!(
            "{}\n--- stunnel ---\n{}",
            self.broker.log(),
            fs::read_to_string(&self.front.terminator.log).unwrap_or_default()
        )
    }
}

impl TlsFront {
    /// `bootstrap.servers`: the TLS terminator.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.terminator.port)
    }

    /// The CA that signed the broker's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca
    }

    /// A CA that signed nothing the broker shows.
    pub fn other_ca_file(&self) -> &Path {
        &self.pki.other_ca
    }

    /// The security settings of a client of the broker: `user` over SASL_SSL,
    /// verifying the broker with `ca_file`; the password in a file, as in
    /// production.
    pub fn client_env(&self, user: &User, ca_file: &Path) -> Result<Vec<(String, String)>> {
        // A file per call: two settings of the same user may differ in password.
        let password_file = self.pki.files.dir().join(crate::unique("password"));
        fs::write(&password_file, format!("{}\n", user.password))
            .context("writing the password file")?;
        Ok([
            ("PRESENCE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
            ("PRESENCE_KAFKA_SASL_MECHANISM", user.mechanism.to_owned()),
            ("PRESENCE_KAFKA_SASL_USERNAME", user.name.clone()),
            (
                "PRESENCE_KAFKA_SASL_PASSWORD_FILE",
                password_file.display().to_string(),
            ),
            ("PRESENCE_KAFKA_SSL_CA_FILE", ca_file.display().to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect())
    }

    /// The settings of a client certificate signed by the test's CA, for a
    /// terminator that requires one ([`ClientCertificates::Required`]).
    pub fn client_certificate_env(&self) -> Vec<(String, String)> {
        CLIENT_CERTIFICATE_SETTINGS
            .into_iter()
            .zip([&self.pki.client_certificate, &self.pki.client_key])
            .map(|(key, path)| (key.to_owned(), path.display().to_string()))
            .collect()
    }
}

/// The test's certificates ([`TestPki`]), by what each is for.
#[derive(Debug)]
struct Pki {
    files: TestPki,
    ca: PathBuf,
    other_ca: PathBuf,
    server_certificate: PathBuf,
    server_key: PathBuf,
    client_certificate: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn make() -> Result<Self> {
        let files = TestPki::make("presence-pki-")?;
        Ok(Self {
            ca: files.path("ca.pem"),
            other_ca: files.path("other-ca.pem"),
            server_certificate: files.path("server.pem"),
            server_key: files.path("server.key"),
            client_certificate: files.path("client.pem"),
            client_key: files.path("client.key"),
            files,
        })
    }
}

/// stunnel: TLS on `port`, plain TCP to the broker.
#[derive(Debug)]
struct Terminator {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Terminator {
    async fn start(
        pki: &Pki,
        broker_port: u16,
        client_certificates: ClientCertificates,
    ) -> Result<Self> {
        let program = stunnel()?;
        let log = pki.files.dir().join("stunnel.log");
        let mut terminator = Self {
            port: 0,
            child: None,
            log,
        };
        on_a_free_port("stunnel", async |port| {
            terminator.port = port;
            terminator
                .launch(&program, pki, broker_port, client_certificates)
                .await
        })
        .await?;
        Ok(terminator)
    }

    async fn launch(
        &mut self,
        program: &Path,
        pki: &Pki,
        broker_port: u16,
        client_certificates: ClientCertificates,
    ) -> Result<()> {
        let config = pki.files.dir().join("stunnel.conf");
        let mut settings = format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{}\nconnect = 127.0.0.1:{broker_port}\ncert = {}\nkey = {}\n",
            self.port,
            pki.server_certificate.display(),
            pki.server_key.display()
        );
        if client_certificates == ClientCertificates::Required {
            settings.push_str(&format!(
                "verifyChain = yes\nrequireCert = yes\nCAfile = {}\n",
                pki.ca.display()
            ));
        }
        fs::write(&config, settings).context("writing stunnel's configuration")?;
        let log = File::create(&self.log).context("creating stunnel's log")?;
        let child = Command::new(program)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing stunnel's log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling stunnel")?
            {
                self.child = None;
                bail!(
                    "stunnel exited with {status}: {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("stunnel did not listen within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only when the child has already exited; `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `stunnel4` (Debian's name) or `stunnel` on `PATH`.
fn stunnel() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join("stunnel4"), dir.join("stunnel")])
        .find(|candidate| candidate.is_file())
        .context("stunnel not found: install Debian's stunnel4 package (scripts/test.sh does)")
}
