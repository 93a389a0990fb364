//! The validator's decide path: [`Validator::decide`] on a real store, each
//! decision encoded for the decisions stream as the Kafka sink encodes it.

use crate::plan::{GATE_NAME, PlannedScan, Scanner, VENUE};
use async_trait::async_trait;
use presence_domain::{DecisionEvent, DeviceOs, ScanId, ScanRequest, Status, Token, VenueId};
use presence_ports::{DecisionSink, ScanCommand, TransportError};
use presence_proto::pb;
use presence_validator::Validator;
use prost::Message as _;
use std::sync::{Mutex, PoisonError};

/// Encodes every decision as the `decisions` record the validator produces
/// (`presence_kafka::sink`), and keeps the records in order: what a broker
/// would have received.
#[derive(Debug, Default)]
pub struct EncodedDecisions {
    records: Mutex<Vec<Vec<u8>>>,
}

impl EncodedDecisions {
    pub fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl DecisionSink for EncodedDecisions {
    async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError> {
        let record = pb::Decision::from(&event).encode_to_vec();
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
        Ok(())
    }
}

/// The commands the gateway would hand the validator for `scans`, each with
/// a scan id shaped like the gateway's (a UUID) and unique to the scan.
pub fn commands(scans: &[PlannedScan], scanner: Scanner, first_index: usize) -> Vec<ScanCommand> {
    scans
        .iter()
        .enumerate()
        .map(|(offset, scan)| ScanCommand {
            scan_id: ScanId::new(format!(
                "00000000-0000-7000-8000-{:012}",
                first_index + offset
            )),
            kind: scan.kind,
            request: ScanRequest {
                channel_id: None,
                device_os: DeviceOs::Printed,
                gate_name: GATE_NAME.to_owned(),
                token: Token::new(scan.token.clone()),
                venue_id: VenueId::new(VENUE),
                device_id: scanner.device_id,
                gate_id: scanner.gate_id,
                scan_time: scan.scan_time,
            },
            device_secret: None,
            shown: None,
        })
        .collect()
}

/// Decides every command in turn, one after the other; the statuses in order.
pub async fn decide_all(
    validator: &Validator,
    commands: &[ScanCommand],
) -> anyhow::Result<Vec<Status>> {
    let mut statuses = Vec::with_capacity(commands.len());
    for command in commands {
        statuses.push(validator.decide(command).await?.decision.status);
    }
    Ok(statuses)
}
