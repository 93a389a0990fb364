//! The audit trail (SPEC §6 "Audit"): each change an API key made to what a
//! venue runs on (inventory, devices, passages), by the key's name, never the
//! key itself.
//!
//! A record is plain data; the gateway makes one where it knows the caller,
//! and an audit sink (`presence_ports::AuditSink`) stores it: the `audit` topic (distributed) or a file in the data directory
//! (embedded).

use crate::decision::Status;
use crate::ids::{DeviceId, GateId, ScanId, UnixMillis, VenueId};
use crate::inventory::{InventoryRecord, NumberedRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most venues one inventory record lists by id; `venueCount` counts them all.
/// Keeps a record of an upload spanning thousands of venues small (one Kafka
/// message, one line of the file).
pub const MAX_LISTED_VENUES: usize = 100;

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// When the change was made: Unix ms, server time.
    pub at: UnixMillis,
    /// The `name` of the API key used (from the keys file); never the key.
    pub key_name: String,
    /// What was done; its `kind` names it.
    #[serde(flatten)]
    pub action: AuditAction,
}

/// What an audited request did. The JSON form is flat: `kind` and the fields
/// of the kind, in camelCase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum AuditAction {
    /// `POST /admin/v1/inventory`, applied or refused.
    Inventory {
        /// The venues the upload's records name (venues, and the venues of its
        /// events and gates), sorted, at most [`MAX_LISTED_VENUES`].
        venues: Vec<VenueId>,
        /// How many venues the records name, listed or not.
        venue_count: u64,
        /// Records applied (0 when refused).
        applied: u64,
        /// Bad lines that refused the upload (0 when applied).
        rejected: u64,
    },
    /// `POST device/init` that configured a device.
    DeviceInit {
        venue_id: VenueId,
        device_id: DeviceId,
        gate_id: GateId,
        gate_name: String,
        mac: String,
    },
    /// `POST ticket/annul`, allowed or refused (`status`).
    Annul {
        venue_id: VenueId,
        device_id: DeviceId,
        gate_id: GateId,
        /// The passage whose undoing was asked.
        annulled_scan_id: ScanId,
        /// The annulment's own scan id (`result.scanId` of the answer).
        scan_id: ScanId,
        status: Status,
    },
    /// `POST /admin/v1/devices/revoke`.
    Revoke {
        venue_id: VenueId,
        device_id: DeviceId,
    },
}

/// The venues an inventory upload's records name (venues, and the venues of
/// its events and gates; a ticket names its event only), taken before the
/// records are handed on to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedVenues {
    listed: Vec<VenueId>,
    count: u64,
}

impl UploadedVenues {
    pub fn of(records: &[NumberedRecord]) -> Self {
        let named: BTreeSet<&VenueId> = records
            .iter()
            .filter_map(|numbered| match &numbered.record {
                InventoryRecord::Venue(venue) => Some(&venue.id),
                InventoryRecord::Event(event) => Some(&event.venue_id),
                InventoryRecord::Gate(gate) => Some(&gate.venue_id),
                InventoryRecord::Ticket(_) => None,
            })
            .collect();
        Self {
            count: u64::try_from(named.len()).unwrap_or(u64::MAX),
            listed: named.into_iter().take(MAX_LISTED_VENUES).cloned().collect(),
        }
    }

    /// The upload's record: `applied` records, or `rejected` bad lines.
    pub fn uploaded(self, applied: u64, rejected: u64) -> AuditAction {
        AuditAction::Inventory {
            venues: self.listed,
            venue_count: self.count,
            applied,
            rejected,
        }
    }
}

impl AuditAction {
    /// Every `kind`, for metrics that show each from the start.
    pub const KINDS: [&'static str; 4] = ["inventory", "device_init", "annul", "revoke"];

    /// The `kind` as the JSON form and the metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inventory { .. } => "inventory",
            Self::DeviceInit { .. } => "device_init",
            Self::Annul { .. } => "annul",
            Self::Revoke { .. } => "revoke",
        }
    }

    /// The venues the change concerns, for a reader's summary.
    pub fn venues(&self) -> &[VenueId] {
        match self {
            Self::Inventory { venues, .. } => venues,
            Self::DeviceInit { venue_id, .. }
            | Self::Annul { venue_id, .. }
            | Self::Revoke { venue_id, .. } => std::slice::from_ref(venue_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::parse_ndjson;

    #[test]
    fn an_upload_names_the_venues_of_its_venues_events_and_gates_once_each() {
        let (records, errors) = parse_ndjson(concat!(
            r#"{"type":"venue","id":"V2","name":"Two"}"#,
            "\n",
            r#"{"type":"venue","id":"V1","name":"One"}"#,
            "\n",
            r#"{"type":"event","id":"E1","venueId":"V1","name":"Show","doorsOpen":1,"endsAt":2}"#,
            "\n",
            r#"{"type":"gate","venueId":"V3","name":"North"}"#,
            "\n",
        ));
        assert_eq!(errors.total(), 0, "{errors:?}");
        let action = UploadedVenues::of(&records).uploaded(4, 0);
        assert_eq!(
            action,
            AuditAction::Inventory {
                venues: vec![VenueId::new("V1"), VenueId::new("V2"), VenueId::new("V3")],
                venue_count: 3,
                applied: 4,
                rejected: 0,
            }
        );
    }

    #[test]
    fn a_record_is_flat_camel_case_json_with_its_kind() {
        let record = AuditRecord {
            at: 1_480_003_200_000,
            key_name: "north-gates".into(),
            action: AuditAction::DeviceInit {
                venue_id: VenueId::new("KovZpZAnAtJJ"),
                device_id: DeviceId::new(7),
                gate_id: GateId::new(2),
                gate_name: "Gate 2".into(),
                mac: "00:11:22:33:44:55".into(),
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"at":1480003200000,"keyName":"north-gates","kind":"device_init","venueId":"KovZpZAnAtJJ","deviceId":7,"gateId":2,"gateName":"Gate 2","mac":"00:11:22:33:44:55"}"#
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), record);
    }
}
