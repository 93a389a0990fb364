//! The registry as a Kafka service: device init, lookup, stats and ticket requests in,
//! answers out, every configured device published to the compacted `devices`
//! topic; and the `decisions` stream counted into the venues' stats
//! ([`DecisionCounter`], in a consumer group of its own).

use crate::{Registry, StatsView};
use async_trait::async_trait;
use presence_domain::{DecisionEvent, DeviceId, Tally, VenueId};
use presence_kafka::client;
use presence_kafka::producer::KafkaProducer;
use presence_kafka::replies::answer;
use presence_kafka::runner::{Disposition, Handler, HandlerError};
use presence_kafka::wire;
use presence_ports::{DeviceInitOutcome, StatsStore, StoreError};
use presence_proto::pb;
use presence_proto::pb::registry_request::Request;
use presence_proto::pb::reply::Outcome;
use prost::Message as _;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use std::sync::Arc;

fn retry(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(error.to_string())
}

fn poison(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Poison(error.to_string())
}

/// Handles the registry requests topic.
pub struct RegistryHandler {
    registry: Registry,
    stats: StatsView,
    producer: KafkaProducer,
    devices_topic: String,
}

impl std::fmt::Debug for RegistryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandler")
            .field("devices_topic", &self.devices_topic)
            .finish_non_exhaustive()
    }
}

impl RegistryHandler {
    pub fn new(
        registry: Registry,
        stats: StatsView,
        producer: KafkaProducer,
        devices_topic: String,
    ) -> Self {
        Self {
            registry,
            stats,
            producer,
            devices_topic,
        }
    }
}

#[async_trait]
impl Handler for RegistryHandler {
    async fn handle(&self, record: &OwnedMessage) -> Result<Disposition, HandlerError> {
        let request = pb::RegistryRequest::decode(record.payload().unwrap_or_default())
            .map_err(|error| poison(format!("not a RegistryRequest: {error}")))?
            .request
            .ok_or_else(|| poison("empty RegistryRequest"))?;
        let outcome = match request {
            Request::Init(init) => match self
                .registry
                .init(wire::device_init_from_pb(init).map_err(poison)?)
                .await
            {
                Ok(outcome) => {
                    if let DeviceInitOutcome::Configured(device)
                    | DeviceInitOutcome::ConfiguredWithSecret(device) = &outcome
                    {
                        // Published before the answer: whoever sees the answer can find the device.
                        let key = format!("{}|{}", device.venue_id, device.mac);
                        let payload = pb::Device::from(device).encode_to_vec();
                        client::send(
                            &self.producer,
                            &self.devices_topic,
                            key.as_bytes(),
                            &payload,
                            client::with_current_trace(OwnedHeaders::new()),
                        )
                        .await
                        .map_err(retry)?;
                    }
                    Outcome::Registry(wire::init_outcome_to_pb(&outcome))
                }
                Err(error) => Outcome::Unavailable(error.to_string()),
            },
            Request::Lookup(lookup) => match self
                .registry
                .lookup(&wire::lookup_from_pb(lookup).map_err(poison)?)
                .await
            {
                Ok(found) => Outcome::Registry(wire::lookup_outcome_to_pb(found.as_ref())),
                Err(error) => Outcome::Unavailable(error.to_string()),
            },
            Request::Revoke(revoke) => match self
                .registry
                .revoke(
                    &VenueId::new(revoke.venue_id),
                    DeviceId::new(revoke.device_id),
                )
                .await
            {
                Ok(found) => Outcome::Registry(wire::lookup_outcome_to_pb(found.as_ref())),
                Err(error) => Outcome::Unavailable(error.to_string()),
            },
            Request::Ticket(query) => {
                match self
                    .registry
                    .ticket(&wire::ticket_query_from_pb(query).map_err(poison)?)
                    .await
                {
                    Ok(found) => Outcome::Registry(wire::ticket_outcome_to_pb(found.as_ref())),
                    Err(error) => Outcome::Unavailable(error.to_string()),
                }
            }
            Request::Stats(query) => {
                match self.stats.venue_stats(&VenueId::new(query.venue_id)).await {
                    Ok(found) => Outcome::Registry(wire::stats_outcome_to_pb(found.as_ref())),
                    Err(error) => Outcome::Unavailable(error.to_string()),
                }
            }
        };
        answer(&self.producer, record, outcome)
            .await
            .map_err(retry)?;
        Ok(Disposition::Done)
    }
}

/// Counts the `decisions` stream into the venues' stats. A decision delivered
/// twice (same scan id) is counted once: the store dedupes.
pub struct DecisionCounter {
    stats: Arc<dyn StatsStore>,
}

impl std::fmt::Debug for DecisionCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCounter").finish_non_exhaustive()
    }
}

impl DecisionCounter {
    pub fn new(stats: Arc<dyn StatsStore>) -> Self {
        Self { stats }
    }
}

#[async_trait]
impl Handler for DecisionCounter {
    async fn handle(&self, record: &OwnedMessage) -> Result<Disposition, HandlerError> {
        let message = pb::Decision::decode(record.payload().unwrap_or_default())
            .map_err(|error| poison(format!("not a Decision: {error}")))?;
        let event = DecisionEvent::try_from(message).map_err(poison)?;
        if let Some(tally) = Tally::of(&event) {
            match self.stats.record(&tally).await {
                Ok(_) => {}
                Err(StoreError::Unavailable(reason)) => return Err(retry(reason)),
                // Counters this store did not write: retrying cannot help.
                Err(error @ StoreError::Corrupt(_)) => return Err(poison(error)),
            }
        }
        Ok(Disposition::Done)
    }
}
