//! Where Kafka is, how to reach it securely, and what the topics are called.

use crate::security::{SASL_PASSWORD_ENV, Security, SecurityArgs, SecurityError};
use rdkafka::config::ClientConfig;
use std::time::Duration;

/// The Kafka flags every distributed binary takes, each with its environment twin.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    #[arg(
        long = "kafka-brokers",
        env = "PRESENCE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    #[arg(long, env = "PRESENCE_TOPIC_PREFIX", default_value = "presence.")]
    pub topic_prefix: String,
    /// Partitions of the topics this service creates when they are missing.
    #[arg(long, env = "PRESENCE_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of the topics this service creates.
    #[arg(long, env = "PRESENCE_REPLICATION", default_value_t = 1)]
    pub replication: i32,
    /// Partitions of the gateways' shared reply topic when a gateway creates
    /// it: the most gateways that each hold one (a gateway holding none is not
    /// ready).
    #[arg(
        long,
        env = "PRESENCE_REPLY_PARTITIONS",
        default_value_t = 12,
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub reply_partitions: i32,
    /// Longest a consumer fetch waits at the broker. Kafka answers as soon as
    /// records arrive, so this only paces idle consumers; a broker that holds
    /// empty fetches to the end (tansu) adds it to each hop of a scan, and needs
    /// a few milliseconds.
    #[arg(long, env = "PRESENCE_KAFKA_FETCH_WAIT_MS", default_value_t = 100)]
    pub fetch_wait_ms: u64,
    /// Create missing topics at start. Off for clusters whose topics are
    /// managed elsewhere (Strimzi, Terraform) and whose clients may not create
    /// topics: the service then checks they exist, and is not ready while one
    /// is missing.
    #[arg(
        long = "kafka-create-topics",
        env = "PRESENCE_KAFKA_CREATE_TOPICS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub create_topics: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl KafkaArgs {
    /// The checked settings; reads the SASL password (from its file, or
    /// `PRESENCE_KAFKA_SASL_PASSWORD`).
    pub fn settings(&self) -> Result<KafkaSettings, SecurityError> {
        let mut settings = KafkaSettings::new(&self.brokers, &self.topic_prefix);
        settings.partitions = self.partitions;
        settings.replication = self.replication;
        settings.reply_partitions = self.reply_partitions;
        settings.fetch_wait = Duration::from_millis(self.fetch_wait_ms);
        settings.create_topics = self.create_topics;
        settings.security = self
            .security
            .security(std::env::var(SASL_PASSWORD_ENV).ok())?;
        Ok(settings)
    }
}

/// Settings shared by every service that talks to Kafka (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `PRESENCE_KAFKA_BROKERS`.
    pub brokers: String,
    /// `PRESENCE_TOPIC_PREFIX`.
    pub topic_prefix: String,
    /// Partitions of `scans` and `decisions` when this service creates them; the
    /// most validator instances that can share the scan load.
    pub partitions: i32,
    /// Replication factor of topics this service creates (3 in production).
    pub replication: i32,
    /// Partitions of `replies` when a gateway creates it; the most gateways
    /// that can run at once.
    pub reply_partitions: i32,
    /// Names this process to the broker (the client id of its reply reader,
    /// listed among the gateways' group members); the pod name in Kubernetes.
    pub instance_id: String,
    /// How long a producer may take to get a record acknowledged.
    pub delivery_timeout: Duration,
    /// Longest a consumer's fetch waits at the broker for data.
    pub fetch_wait: Duration,
    /// Whether missing topics are created, or only reported.
    pub create_topics: bool,
    /// TLS, SASL and pass-through properties of every client.
    pub security: Security,
    /// This process's stable name in the consumer groups of its runner
    /// (Kafka's `group.instance.id`, static membership), or `None` for dynamic
    /// membership. Only the validator and the registry set it
    /// (`PRESENCE_INSTANCE_ID`).
    pub group_instance_id: Option<String>,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            partitions: 12,
            replication: 1,
            reply_partitions: 12,
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            delivery_timeout: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(10),
            create_topics: true,
            security: Security::plaintext(),
            group_instance_id: None,
        }
    }

    /// A client configuration: the brokers, `tuning` (the product's settings
    /// for one kind of client), then the security block and the pass-through
    /// properties. Every Kafka client is configured here.
    pub fn client_config(&self, tuning: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        // librdkafka doubles its wait between reconnects up to this (10 s by
        // default): after a broker blip of a few seconds the clients would come
        // back seconds after the broker. A second keeps the recovery close to
        // the broker's return at one connection attempt a second per client.
        config.set("reconnect.backoff.max.ms", "1000");
        for (name, value) in tuning {
            config.set(*name, *value);
        }
        self.security.apply(&mut config);
        config
    }

    pub fn topics(&self) -> Topics {
        Topics {
            prefix: self.topic_prefix.clone(),
        }
    }
}

/// Topic names under the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Scan requests, keyed by token.
    pub fn scans(&self) -> String {
        format!("{}scans", self.prefix)
    }

    /// Every decision, keyed by token: the analytics stream.
    pub fn decisions(&self) -> String {
        format!("{}decisions", self.prefix)
    }

    /// The audit trail (SPEC §6): one partition, so read in the order made.
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    /// Configured devices, compacted, keyed by venue and MAC.
    pub fn devices(&self) -> String {
        format!("{}devices", self.prefix)
    }

    /// Inventory chunks; one partition, so batches apply in the order sent.
    pub fn inventory(&self) -> String {
        format!("{}inventory", self.prefix)
    }

    /// Device init and lookup requests, keyed by venue.
    pub fn registry(&self) -> String {
        format!("{}registry", self.prefix)
    }

    /// Every gateway's answers; each gateway reads the partitions its group
    /// gives it ([`crate::replies`]), and names one of them in each request.
    pub fn replies(&self) -> String {
        format!("{}replies", self.prefix)
    }

    /// Where records that cannot be processed go, with the reason.
    pub fn dead_letters(&self, topic: &str) -> String {
        format!("{topic}.dlq")
    }
}
