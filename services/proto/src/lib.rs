//! The `presence.v1` protobuf messages carried on the Kafka topics, and their
//! conversions to and from domain types.
//!
//! Generated code stays behind [`pb`]; the rest of the workspace sees domain
//! types only. Decoding untrusted bytes goes through `TryFrom`, which names the
//! field that is missing or out of range.

use presence_domain::barcode::{DEFAULT_STEP_SECONDS, Rotation, RotationSecret, STEP_SECONDS};
use presence_domain::inventory::{
    Event, EventStatus, GateSpec, InventoryRecord, Ticket, TicketStatus, Venue,
};
use presence_domain::stats::{Counts, DeviceActivity, EventStats, GateStats};
use presence_domain::{
    AnnulRequest, AnnulledPassage, AuditAction, AuditRecord, Decision, DecisionEvent, Device,
    DeviceAccess, DeviceId, DeviceOs, EventId, GateId, Mac, ScanId, ScanKind, ScanRecord,
    ScanRequest, SecretDigest, Status, TicketPlace, TicketReport, Token, TokenState, VenueId,
    VenueStats,
};

/// Generated messages of package `presence.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/presence.v1.rs"));
}

/// The serialized `FileDescriptorSet` of `presence.v1`, for consumers that decode
/// without generated code (Flink, Spark, ksqlDB, `protoc --decode`).
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/presence_v1_descriptor.bin"));

/// A message that cannot become a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {field} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

fn required(field: &'static str, value: String) -> Result<String, ProtoError> {
    if value.is_empty() {
        Err(ProtoError::Missing(field))
    } else {
        Ok(value)
    }
}

fn positive(field: &'static str, value: u64) -> Result<u64, ProtoError> {
    if value == 0 {
        Err(ProtoError::Missing(field))
    } else {
        Ok(value)
    }
}

impl From<ScanKind> for pb::ScanKind {
    fn from(kind: ScanKind) -> Self {
        match kind {
            ScanKind::Enter => pb::ScanKind::Enter,
            ScanKind::Exit => pb::ScanKind::Exit,
            ScanKind::Validate => pb::ScanKind::Validate,
            ScanKind::Annul => pb::ScanKind::Annul,
        }
    }
}

fn scan_kind(value: i32) -> Result<ScanKind, ProtoError> {
    match pb::ScanKind::try_from(value) {
        Ok(pb::ScanKind::Enter) => Ok(ScanKind::Enter),
        Ok(pb::ScanKind::Exit) => Ok(ScanKind::Exit),
        Ok(pb::ScanKind::Validate) => Ok(ScanKind::Validate),
        Ok(pb::ScanKind::Annul) => Ok(ScanKind::Annul),
        Ok(pb::ScanKind::Unspecified) => Err(ProtoError::Missing("kind")),
        Err(_) => Err(ProtoError::Invalid {
            field: "kind",
            reason: "unknown scan kind",
        }),
    }
}

impl From<DeviceOs> for pb::DeviceOs {
    fn from(os: DeviceOs) -> Self {
        match os {
            DeviceOs::Printed => pb::DeviceOs::Printed,
            DeviceOs::Ios => pb::DeviceOs::Ios,
            DeviceOs::Android => pb::DeviceOs::Android,
        }
    }
}

fn device_os(value: i32) -> Result<DeviceOs, ProtoError> {
    match pb::DeviceOs::try_from(value) {
        Ok(pb::DeviceOs::Printed) => Ok(DeviceOs::Printed),
        Ok(pb::DeviceOs::Ios) => Ok(DeviceOs::Ios),
        Ok(pb::DeviceOs::Android) => Ok(DeviceOs::Android),
        Ok(pb::DeviceOs::Unspecified) => Err(ProtoError::Missing("device_os")),
        Err(_) => Err(ProtoError::Invalid {
            field: "device_os",
            reason: "unknown device OS",
        }),
    }
}

/// Decision statuses, and the two refusals of a scanner's credentials (which
/// travel in replies only); the other HTTP-level statuses never reach a topic.
fn status_to_pb(status: Status) -> pb::Status {
    match status {
        Status::Okay => pb::Status::Okay,
        Status::Exit => pb::Status::Exit,
        Status::InternalScan => pb::Status::InternalScan,
        Status::NotFound => pb::Status::NotFound,
        Status::BadRequest => pb::Status::BadRequest,
        Status::AlreadyEntered => pb::Status::AlreadyEntered,
        Status::InvalidTicket => pb::Status::InvalidTicket,
        Status::StartRestriction => pb::Status::StartRestriction,
        Status::EndRestriction => pb::Status::EndRestriction,
        Status::SectionRestriction => pb::Status::SectionRestriction,
        Status::EventRestriction => pb::Status::EventRestriction,
        Status::TooEarly => pb::Status::TooEarly,
        Status::TooLate => pb::Status::TooLate,
        // A scan's device refusals, in replies only.
        Status::Unauthorized => pb::Status::Unauthorized,
        Status::Forbidden => pb::Status::Forbidden,
        Status::MethodNotAllowed
        | Status::PayloadTooLarge
        | Status::RateLimited
        | Status::Unavailable
        | Status::Internal => pb::Status::Unspecified,
    }
}

fn status_from_pb(value: i32) -> Result<Status, ProtoError> {
    let status = pb::Status::try_from(value).map_err(|_| ProtoError::Invalid {
        field: "status",
        reason: "unknown status",
    })?;
    Status::ALL
        .into_iter()
        .find(|s| status_to_pb(*s) == status && status != pb::Status::Unspecified)
        .ok_or(ProtoError::Missing("status"))
}

fn rotation_from_pb(rotation: pb::TicketRotation) -> Result<Rotation, ProtoError> {
    let secret = RotationSecret::from_bytes(rotation.secret).map_err(|_| ProtoError::Invalid {
        field: "rotation.secret",
        reason: "must be 16 to 64 bytes",
    })?;
    let step_seconds = match rotation.step_seconds {
        0 => DEFAULT_STEP_SECONDS,
        step if STEP_SECONDS.contains(&step) => step,
        _ => {
            return Err(ProtoError::Invalid {
                field: "rotation.step_seconds",
                reason: "must be 5 to 60",
            });
        }
    };
    Ok(Rotation {
        secret,
        step_seconds,
    })
}

/// The digest of the device secret a scan carries: `bytes` is empty when none
/// was sent.
pub fn secret_digest_from_pb(bytes: &[u8]) -> Result<Option<SecretDigest>, ProtoError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    SecretDigest::from_bytes(bytes)
        .map(Some)
        .ok_or(ProtoError::Invalid {
            field: "device_secret_digest",
            reason: "must be 32 bytes",
        })
}

/// The status an offline scan's scanner showed, by name; empty for an online scan.
fn offline_shown(name: String) -> Result<Option<Status>, ProtoError> {
    if name.is_empty() {
        return Ok(None);
    }
    Status::parse(&name)
        .filter(|status| status.is_scan_decision())
        .map(Some)
        .ok_or(ProtoError::Invalid {
            field: "offline_shown",
            reason: "not a scan status",
        })
}

/// A scan request as the gateway publishes it, with the digest of the device
/// secret the scanner sent, if any, and `shown` for an offline scan.
pub fn scan_to_pb(
    scan_id: &ScanId,
    kind: ScanKind,
    request: &ScanRequest,
    device_secret: Option<&SecretDigest>,
    shown: Option<Status>,
) -> pb::ScanRequest {
    pb::ScanRequest {
        offline_shown: shown
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default(),
        scan_id: scan_id.to_string(),
        kind: pb::ScanKind::from(kind).into(),
        channel_id: request.channel_id.clone(),
        device_os: pb::DeviceOs::from(request.device_os).into(),
        gate_name: request.gate_name.clone(),
        token: request.token.to_string(),
        venue_id: request.venue_id.to_string(),
        device_id: request.device_id.get(),
        gate_id: request.gate_id.get(),
        scan_time: request.scan_time,
        device_secret_digest: device_secret.map_or_else(Vec::new, |d| d.as_bytes().to_vec()),
        annuls: String::new(),
    }
}

/// A scan request as the validator consumes it, and the status an offline
/// scan's scanner showed (the device secret's digest is read by
/// [`secret_digest_from_pb`]).
pub fn scan_from_pb(
    message: pb::ScanRequest,
) -> Result<(ScanId, ScanKind, ScanRequest, Option<Status>), ProtoError> {
    let shown = offline_shown(message.offline_shown)?;
    let request = ScanRequest {
        channel_id: message.channel_id,
        device_os: device_os(message.device_os)?,
        gate_name: required("gate_name", message.gate_name)?,
        token: Token::new(required("token", message.token)?),
        venue_id: VenueId::new(required("venue_id", message.venue_id)?),
        device_id: DeviceId::new(positive("device_id", message.device_id)?),
        gate_id: GateId::new(positive("gate_id", message.gate_id)?),
        scan_time: message.scan_time,
    };
    let kind = scan_kind(message.kind)?;
    if kind == ScanKind::Annul {
        return Err(ProtoError::Invalid {
            field: "kind",
            reason: "an annulment is not a scan",
        });
    }
    Ok((
        ScanId::new(required("scan_id", message.scan_id)?),
        kind,
        request,
        shown,
    ))
}

/// Whether a message of the `scans` topic is an annulment rather than a scan.
pub fn is_annulment(message: &pb::ScanRequest) -> bool {
    message.kind == i32::from(pb::ScanKind::Annul)
}

/// An annulment as the gateway publishes it on the `scans` topic: the
/// annulment's own id, the request, and the digest of the device secret sent.
pub fn annul_to_pb(
    scan_id: &ScanId,
    request: &AnnulRequest,
    device_secret: Option<&SecretDigest>,
) -> pb::ScanRequest {
    pb::ScanRequest {
        scan_id: scan_id.to_string(),
        kind: pb::ScanKind::Annul.into(),
        venue_id: request.venue_id.to_string(),
        device_id: request.device_id.get(),
        gate_id: request.gate_id.get(),
        device_secret_digest: device_secret.map_or_else(Vec::new, |d| d.as_bytes().to_vec()),
        annuls: request.scan_id.to_string(),
        ..Default::default()
    }
}

/// An annulment as the validator consumes it (the device secret's digest is
/// read by [`secret_digest_from_pb`]).
pub fn annul_from_pb(message: pb::ScanRequest) -> Result<(ScanId, AnnulRequest), ProtoError> {
    if !is_annulment(&message) {
        return Err(ProtoError::Invalid {
            field: "kind",
            reason: "not an annulment",
        });
    }
    Ok((
        ScanId::new(required("scan_id", message.scan_id)?),
        AnnulRequest {
            venue_id: VenueId::new(required("venue_id", message.venue_id)?),
            device_id: DeviceId::new(positive("device_id", message.device_id)?),
            gate_id: GateId::new(positive("gate_id", message.gate_id)?),
            scan_id: ScanId::new(required("annuls", message.annuls)?),
        },
    ))
}

fn annulled_to_pb(passage: &AnnulledPassage) -> pb::AnnulledPassage {
    pb::AnnulledPassage {
        kind: pb::ScanKind::from(passage.kind).into(),
        gate_id: passage.gate_id.get(),
        gate_name: passage.gate_name.clone(),
        decided_at: passage.decided_at,
        forced: passage.forced,
    }
}

fn annulled_from_pb(message: pb::AnnulledPassage) -> Result<AnnulledPassage, ProtoError> {
    Ok(AnnulledPassage {
        kind: scan_kind(message.kind)?,
        gate_id: GateId::new(positive("annulled.gate_id", message.gate_id)?),
        gate_name: message.gate_name,
        decided_at: message.decided_at,
        forced: message.forced,
    })
}

/// An optional id: empty on the wire when absent.
fn optional_scan_id(value: String) -> Option<ScanId> {
    (!value.is_empty()).then(|| ScanId::new(value))
}

impl From<&DecisionEvent> for pb::Decision {
    fn from(event: &DecisionEvent) -> Self {
        pb::Decision {
            scan_id: event.scan_id.to_string(),
            kind: pb::ScanKind::from(event.kind).into(),
            status: status_to_pb(event.decision.status).into(),
            message: event.decision.message.clone(),
            tickets: event
                .decision
                .tickets
                .iter()
                .map(|t| pb::TicketPlace {
                    place: t.place.clone(),
                    event_id: t.event_id.to_string(),
                })
                .collect(),
            token: event.token.to_string(),
            venue_id: event.venue_id.to_string(),
            gate_id: event.gate_id.get(),
            gate_name: event.gate_name.clone(),
            device_id: event.device_id.get(),
            device_os: event
                .device_os
                .map_or(pb::DeviceOs::Unspecified, pb::DeviceOs::from)
                .into(),
            channel_id: event.channel_id.clone(),
            scan_time: event.scan_time,
            decided_at: event.decided_at,
            offline: event.offline,
            forced: event.decision.forced,
            offline_shown: event
                .shown
                .map(|status| status.as_str().to_owned())
                .unwrap_or_default(),
            annuls: event
                .annuls
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            annulled: event.annulled.as_ref().map(annulled_to_pb),
        }
    }
}

impl TryFrom<pb::Decision> for DecisionEvent {
    type Error = ProtoError;

    /// An annulment's decision may have no token (its scan was not found)
    /// and has no device OS; a scan's has both.
    fn try_from(message: pb::Decision) -> Result<Self, ProtoError> {
        let kind = scan_kind(message.kind)?;
        let annulment = kind == ScanKind::Annul;
        Ok(DecisionEvent {
            scan_id: ScanId::new(required("scan_id", message.scan_id)?),
            kind,
            decision: Decision {
                status: status_from_pb(message.status)?,
                message: message.message,
                tickets: message
                    .tickets
                    .into_iter()
                    .map(|t| TicketPlace {
                        place: t.place,
                        event_id: EventId::new(t.event_id),
                    })
                    .collect(),
                forced: message.forced,
            },
            token: Token::new(if annulment {
                message.token
            } else {
                required("token", message.token)?
            }),
            venue_id: VenueId::new(required("venue_id", message.venue_id)?),
            gate_id: GateId::new(positive("gate_id", message.gate_id)?),
            gate_name: message.gate_name,
            device_id: DeviceId::new(positive("device_id", message.device_id)?),
            device_os: if annulment {
                None
            } else {
                Some(device_os(message.device_os)?)
            },
            channel_id: message.channel_id,
            scan_time: message.scan_time,
            decided_at: message.decided_at,
            offline: message.offline,
            shown: offline_shown(message.offline_shown)?,
            annuls: optional_scan_id(message.annuls),
            annulled: message.annulled.map(annulled_from_pb).transpose()?,
        })
    }
}

fn ticket_status_to_pb(status: TicketStatus) -> pb::TicketStatus {
    match status {
        TicketStatus::Valid => pb::TicketStatus::Valid,
        TicketStatus::Void => pb::TicketStatus::Void,
    }
}

fn ticket_status_from_pb(value: i32) -> Result<TicketStatus, ProtoError> {
    match pb::TicketStatus::try_from(value) {
        Ok(pb::TicketStatus::Unspecified | pb::TicketStatus::Valid) => Ok(TicketStatus::Valid),
        Ok(pb::TicketStatus::Void) => Ok(TicketStatus::Void),
        Err(_) => Err(ProtoError::Invalid {
            field: "status",
            reason: "unknown ticket status",
        }),
    }
}

impl From<&ScanRecord> for pb::ScanRecord {
    fn from(record: &ScanRecord) -> Self {
        pb::ScanRecord {
            scan_id: record.scan_id.to_string(),
            kind: pb::ScanKind::from(record.kind).into(),
            status: status_to_pb(record.status).into(),
            message: record.message.clone(),
            gate_id: record.gate_id.get(),
            gate_name: record.gate_name.clone(),
            device_id: record.device_id.get(),
            scan_time: record.scan_time,
            decided_at: record.decided_at,
            offline: record.offline,
            forced: record.forced,
            annuls: record
                .annuls
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::ScanRecord> for ScanRecord {
    type Error = ProtoError;

    fn try_from(message: pb::ScanRecord) -> Result<Self, ProtoError> {
        Ok(ScanRecord {
            scan_id: ScanId::new(required("scan_id", message.scan_id)?),
            kind: scan_kind(message.kind)?,
            status: status_from_pb(message.status)?,
            message: message.message,
            gate_id: GateId::new(positive("gate_id", message.gate_id)?),
            gate_name: message.gate_name,
            device_id: DeviceId::new(positive("device_id", message.device_id)?),
            scan_time: message.scan_time,
            decided_at: message.decided_at,
            offline: message.offline,
            forced: message.forced,
            // What a passage replaced stays in the store: a report shows none.
            replaced: None,
            annuls: optional_scan_id(message.annuls),
        })
    }
}

impl From<&TicketReport> for pb::TicketReport {
    fn from(report: &TicketReport) -> Self {
        pb::TicketReport {
            token: report.token.to_string(),
            event_id: report.event_id.to_string(),
            places: report.places.clone(),
            status: ticket_status_to_pb(report.status).into(),
            state: match report.state {
                TokenState::Never => pb::TokenState::Never,
                TokenState::In => pb::TokenState::In,
                TokenState::Out => pb::TokenState::Out,
            }
            .into(),
            scans: report.scans.iter().map(pb::ScanRecord::from).collect(),
        }
    }
}

impl TryFrom<pb::TicketReport> for TicketReport {
    type Error = ProtoError;

    fn try_from(message: pb::TicketReport) -> Result<Self, ProtoError> {
        let state = match pb::TokenState::try_from(message.state) {
            Ok(pb::TokenState::Never) => TokenState::Never,
            Ok(pb::TokenState::In) => TokenState::In,
            Ok(pb::TokenState::Out) => TokenState::Out,
            Ok(pb::TokenState::Unspecified) => return Err(ProtoError::Missing("state")),
            Err(_) => {
                return Err(ProtoError::Invalid {
                    field: "state",
                    reason: "unknown token state",
                });
            }
        };
        Ok(TicketReport {
            token: Token::new(required("token", message.token)?),
            event_id: EventId::new(required("event_id", message.event_id)?),
            places: message.places,
            status: ticket_status_from_pb(message.status)?,
            state,
            scans: message
                .scans
                .into_iter()
                .map(ScanRecord::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&Counts> for pb::StatsCounts {
    fn from(counts: &Counts) -> Self {
        pb::StatsCounts {
            entries: counts.entries,
            exits: counts.exits,
            denials: counts.denials.clone().into_iter().collect(),
            forced: counts.forced,
        }
    }
}

fn counts_from_pb(message: Option<pb::StatsCounts>) -> Counts {
    let message = message.unwrap_or_default();
    Counts {
        entries: message.entries,
        exits: message.exits,
        forced: message.forced,
        denials: message.denials.into_iter().collect(),
    }
}

impl From<&VenueStats> for pb::VenueStats {
    fn from(stats: &VenueStats) -> Self {
        pb::VenueStats {
            venue_id: stats.venue_id.to_string(),
            updated_at: stats.updated_at,
            totals: Some((&stats.totals).into()),
            gates: stats
                .gates
                .iter()
                .map(|gate| pb::GateStats {
                    gate_id: gate.gate_id.get(),
                    name: gate.name.clone(),
                    counts: Some((&gate.counts).into()),
                    entries_by_minute: gate
                        .entries_by_minute
                        .iter()
                        .map(|(minute, people)| (*minute, *people))
                        .collect(),
                })
                .collect(),
            events: stats
                .events
                .iter()
                .map(|event| pb::EventStats {
                    event_id: event.event_id.to_string(),
                    counts: Some((&event.counts).into()),
                })
                .collect(),
            devices: stats
                .devices
                .iter()
                .map(|device| pb::DeviceActivity {
                    device_id: device.device_id.get(),
                    gate_id: device.gate_id.get(),
                    last_scan_at: device.last_scan_at,
                })
                .collect(),
            doors_open: stats.doors_open,
        }
    }
}

impl TryFrom<pb::VenueStats> for VenueStats {
    type Error = ProtoError;

    fn try_from(message: pb::VenueStats) -> Result<Self, ProtoError> {
        Ok(VenueStats {
            venue_id: VenueId::new(required("venue_id", message.venue_id)?),
            updated_at: message.updated_at,
            totals: counts_from_pb(message.totals),
            gates: message
                .gates
                .into_iter()
                .map(|gate| {
                    Ok(GateStats {
                        gate_id: GateId::new(positive("gate_id", gate.gate_id)?),
                        name: gate.name,
                        counts: counts_from_pb(gate.counts),
                        entries_by_minute: gate.entries_by_minute.into_iter().collect(),
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
            events: message
                .events
                .into_iter()
                .map(|event| {
                    Ok(EventStats {
                        event_id: EventId::new(required("event_id", event.event_id)?),
                        counts: counts_from_pb(event.counts),
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
            devices: message
                .devices
                .into_iter()
                .map(|device| {
                    Ok(DeviceActivity {
                        device_id: DeviceId::new(positive("device_id", device.device_id)?),
                        gate_id: GateId::new(positive("gate_id", device.gate_id)?),
                        last_scan_at: device.last_scan_at,
                    })
                })
                .collect::<Result<_, ProtoError>>()?,
            doors_open: message.doors_open,
        })
    }
}

impl From<&Device> for pb::Device {
    fn from(device: &Device) -> Self {
        pb::Device {
            id: device.id.get(),
            venue_id: device.venue_id.to_string(),
            name: device.name.clone(),
            mac: device.mac.to_string(),
            ip: device.ip.clone(),
            gate_id: device.gate_id.get(),
            gate_name: device.gate_name.clone(),
            serial: device.serial.clone(),
            model: device.model.clone(),
        }
    }
}

impl TryFrom<pb::Device> for Device {
    type Error = ProtoError;

    fn try_from(message: pb::Device) -> Result<Self, ProtoError> {
        Ok(Device {
            id: DeviceId::new(positive("id", message.id)?),
            venue_id: VenueId::new(required("venue_id", message.venue_id)?),
            name: message.name,
            mac: Mac::parse(&message.mac).ok_or(ProtoError::Invalid {
                field: "mac",
                reason: "not a MAC address",
            })?,
            ip: message.ip,
            gate_id: GateId::new(positive("gate_id", message.gate_id)?),
            gate_name: message.gate_name,
            serial: message.serial,
            model: message.model,
            // Credentials are never on a topic: a device from one has none.
            access: DeviceAccess::default(),
        })
    }
}

impl From<&InventoryRecord> for pb::InventoryRecord {
    fn from(record: &InventoryRecord) -> Self {
        use pb::inventory_record::Record;
        let record = match record {
            InventoryRecord::Venue(v) => Record::Venue(pb::Venue {
                id: v.id.to_string(),
                name: v.name.clone(),
                require_device_secret: v.require_device_secret,
            }),
            InventoryRecord::Event(e) => Record::Event(pb::Event {
                id: e.id.to_string(),
                venue_id: e.venue_id.to_string(),
                name: e.name.clone(),
                doors_open: e.doors_open,
                ends_at: e.ends_at,
                status: match e.status {
                    EventStatus::Active => pb::EventStatus::Active,
                    EventStatus::Cancelled => pb::EventStatus::Cancelled,
                }
                .into(),
                allow_reentry: Some(e.allow_reentry),
            }),
            InventoryRecord::Gate(g) => Record::Gate(pb::Gate {
                venue_id: g.venue_id.to_string(),
                name: g.name.clone(),
                allowed_sections: g.allowed_sections.clone(),
                allowed_events: g.allowed_events.iter().map(ToString::to_string).collect(),
                open_from: g.open_from,
                open_until: g.open_until,
            }),
            InventoryRecord::Ticket(t) => Record::Ticket(pb::Ticket {
                token: t.token.to_string(),
                event_id: t.event_id.to_string(),
                places: t.places.clone(),
                status: ticket_status_to_pb(t.status).into(),
                valid_from: t.valid_from,
                valid_until: t.valid_until,
                rotation: t.rotation.as_ref().map(|r| pb::TicketRotation {
                    secret: r.secret.as_bytes().to_vec(),
                    step_seconds: r.step_seconds,
                }),
            }),
        };
        pb::InventoryRecord {
            record: Some(record),
        }
    }
}

impl TryFrom<pb::InventoryRecord> for InventoryRecord {
    type Error = ProtoError;

    /// Applies the same defaults as NDJSON inventory; the field rules of SPEC §3
    /// are checked again by whoever applies the record.
    fn try_from(message: pb::InventoryRecord) -> Result<Self, ProtoError> {
        use pb::inventory_record::Record;
        Ok(match message.record.ok_or(ProtoError::Missing("record"))? {
            Record::Venue(v) => InventoryRecord::Venue(Venue {
                id: VenueId::new(required("id", v.id)?),
                name: required("name", v.name)?,
                require_device_secret: v.require_device_secret,
            }),
            Record::Event(e) => {
                let id = required("id", e.id)?;
                InventoryRecord::Event(Event {
                    name: if e.name.is_empty() {
                        id.clone()
                    } else {
                        e.name
                    },
                    id: EventId::new(id),
                    venue_id: VenueId::new(required("venue_id", e.venue_id)?),
                    doors_open: e.doors_open,
                    ends_at: e.ends_at,
                    status: match pb::EventStatus::try_from(e.status) {
                        Ok(pb::EventStatus::Unspecified | pb::EventStatus::Active) => {
                            EventStatus::Active
                        }
                        Ok(pb::EventStatus::Cancelled) => EventStatus::Cancelled,
                        Err(_) => {
                            return Err(ProtoError::Invalid {
                                field: "status",
                                reason: "unknown event status",
                            });
                        }
                    },
                    allow_reentry: e.allow_reentry.unwrap_or(true),
                })
            }
            Record::Gate(g) => InventoryRecord::Gate(GateSpec {
                venue_id: VenueId::new(required("venue_id", g.venue_id)?),
                name: required("name", g.name)?.trim().to_owned(),
                allowed_sections: g.allowed_sections,
                allowed_events: g.allowed_events.into_iter().map(EventId::new).collect(),
                open_from: g.open_from,
                open_until: g.open_until,
            }),
            Record::Ticket(t) => InventoryRecord::Ticket(Ticket {
                token: Token::new(required("token", t.token)?),
                event_id: EventId::new(required("event_id", t.event_id)?),
                places: t.places,
                status: ticket_status_from_pb(t.status)?,
                valid_from: t.valid_from,
                valid_until: t.valid_until,
                rotation: t.rotation.map(rotation_from_pb).transpose()?,
            }),
        })
    }
}

impl From<&AuditRecord> for pb::AuditRecord {
    fn from(record: &AuditRecord) -> Self {
        use pb::audit_record::Action;
        let action = match &record.action {
            AuditAction::Inventory {
                venues,
                venue_count,
                applied,
                rejected,
            } => Action::Inventory(pb::AuditInventoryUpload {
                venues: venues.iter().map(ToString::to_string).collect(),
                venue_count: *venue_count,
                applied: *applied,
                rejected: *rejected,
            }),
            AuditAction::DeviceInit {
                venue_id,
                device_id,
                gate_id,
                gate_name,
                mac,
            } => Action::DeviceInit(pb::AuditDeviceInit {
                venue_id: venue_id.to_string(),
                device_id: device_id.get(),
                gate_id: gate_id.get(),
                gate_name: gate_name.clone(),
                mac: mac.clone(),
            }),
            AuditAction::Annul {
                venue_id,
                device_id,
                gate_id,
                annulled_scan_id,
                scan_id,
                status,
            } => Action::Annul(pb::AuditAnnulment {
                venue_id: venue_id.to_string(),
                device_id: device_id.get(),
                gate_id: gate_id.get(),
                annulled_scan_id: annulled_scan_id.to_string(),
                scan_id: scan_id.to_string(),
                status: status_to_pb(*status).into(),
            }),
            AuditAction::Revoke {
                venue_id,
                device_id,
            } => Action::Revoke(pb::AuditRevocation {
                venue_id: venue_id.to_string(),
                device_id: device_id.get(),
            }),
        };
        pb::AuditRecord {
            at: record.at,
            key_name: record.key_name.clone(),
            action: Some(action),
        }
    }
}

impl TryFrom<pb::AuditRecord> for AuditRecord {
    type Error = ProtoError;

    fn try_from(message: pb::AuditRecord) -> Result<Self, ProtoError> {
        use pb::audit_record::Action;
        let action = match message.action.ok_or(ProtoError::Missing("action"))? {
            Action::Inventory(upload) => AuditAction::Inventory {
                venues: upload.venues.into_iter().map(VenueId::new).collect(),
                venue_count: upload.venue_count,
                applied: upload.applied,
                rejected: upload.rejected,
            },
            Action::DeviceInit(init) => AuditAction::DeviceInit {
                venue_id: VenueId::new(required("venue_id", init.venue_id)?),
                device_id: DeviceId::new(positive("device_id", init.device_id)?),
                gate_id: GateId::new(positive("gate_id", init.gate_id)?),
                gate_name: init.gate_name,
                mac: init.mac,
            },
            Action::Annul(annul) => AuditAction::Annul {
                venue_id: VenueId::new(required("venue_id", annul.venue_id)?),
                device_id: DeviceId::new(positive("device_id", annul.device_id)?),
                gate_id: GateId::new(positive("gate_id", annul.gate_id)?),
                annulled_scan_id: ScanId::new(required(
                    "annulled_scan_id",
                    annul.annulled_scan_id,
                )?),
                scan_id: ScanId::new(required("scan_id", annul.scan_id)?),
                status: status_from_pb(annul.status)?,
            },
            Action::Revoke(revoke) => AuditAction::Revoke {
                venue_id: VenueId::new(required("venue_id", revoke.venue_id)?),
                device_id: DeviceId::new(positive("device_id", revoke.device_id)?),
            },
        };
        Ok(AuditRecord {
            at: message.at,
            key_name: required("key_name", message.key_name)?,
            action,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::inventory::parse_ndjson;
    use prost::Message;

    #[test]
    fn every_kind_of_audit_record_survives_the_topic() {
        let venue = || VenueId::new("KovZpZAnAtJJ");
        for action in [
            AuditAction::Inventory {
                venues: vec![venue()],
                venue_count: 1,
                applied: 3,
                rejected: 0,
            },
            AuditAction::DeviceInit {
                venue_id: venue(),
                device_id: DeviceId::new(7),
                gate_id: GateId::new(2),
                gate_name: "Gate 2".into(),
                mac: "00:11:22:33:44:55".into(),
            },
            AuditAction::Annul {
                venue_id: venue(),
                device_id: DeviceId::new(7),
                gate_id: GateId::new(2),
                annulled_scan_id: ScanId::new("s1"),
                scan_id: ScanId::new("s2"),
                status: Status::InvalidTicket,
            },
            AuditAction::Revoke {
                venue_id: venue(),
                device_id: DeviceId::new(7),
            },
        ] {
            let record = AuditRecord {
                at: 1_480_003_200_000,
                key_name: "ops".into(),
                action,
            };
            let bytes = pb::AuditRecord::from(&record).encode_to_vec();
            let decoded = AuditRecord::try_from(pb::AuditRecord::decode(bytes.as_slice()).unwrap());
            assert_eq!(decoded, Ok(record));
        }
        assert_eq!(
            AuditRecord::try_from(pb::AuditRecord::default()),
            Err(ProtoError::Missing("action"))
        );
    }

    fn scan() -> ScanRequest {
        ScanRequest {
            channel_id: Some("A".into()),
            device_os: DeviceOs::Ios,
            gate_name: "Gate 2".into(),
            token: Token::new("721744537954"),
            venue_id: VenueId::new("KovZpZAnAtJJ"),
            device_id: DeviceId::new(224),
            gate_id: GateId::new(274),
            scan_time: 1_480_003_200_001,
        }
    }

    #[test]
    fn scans_round_trip_through_bytes() {
        let digest = SecretDigest::of("s3cret");
        let bytes = scan_to_pb(
            &ScanId::new("s1"),
            ScanKind::Exit,
            &scan(),
            Some(&digest),
            None,
        )
        .encode_to_vec();
        let message = pb::ScanRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            secret_digest_from_pb(&message.device_secret_digest).unwrap(),
            Some(digest)
        );
        let decoded = scan_from_pb(message).unwrap();
        assert_eq!(decoded, (ScanId::new("s1"), ScanKind::Exit, scan(), None));
        let without = scan_to_pb(&ScanId::new("s1"), ScanKind::Exit, &scan(), None, None);
        assert_eq!(
            secret_digest_from_pb(&without.device_secret_digest),
            Ok(None)
        );
        assert!(secret_digest_from_pb(&[1, 2, 3]).is_err());
        for shown in [None, Some(Status::Okay), Some(Status::AlreadyEntered)] {
            let bytes = scan_to_pb(&ScanId::new("s1"), ScanKind::Exit, &scan(), None, shown)
                .encode_to_vec();
            let decoded = scan_from_pb(pb::ScanRequest::decode(bytes.as_slice()).unwrap()).unwrap();
            assert_eq!(decoded, (ScanId::new("s1"), ScanKind::Exit, scan(), shown));
        }
    }

    #[test]
    fn decisions_round_trip_for_every_decision_status() {
        for (status, offline) in Status::ALL
            .into_iter()
            .take(15)
            .flat_map(|status| [(status, false), (status, true)])
        {
            let request = scan();
            let event = DecisionEvent {
                scan_id: ScanId::new("s1"),
                kind: ScanKind::Enter,
                decision: Decision {
                    forced: offline,
                    ..Decision::new(
                        status,
                        "m",
                        vec![TicketPlace {
                            place: "PIT1:3:4".into(),
                            event_id: EventId::new("E"),
                        }],
                    )
                },
                token: request.token,
                venue_id: request.venue_id,
                gate_id: request.gate_id,
                gate_name: request.gate_name,
                device_id: request.device_id,
                device_os: Some(request.device_os),
                channel_id: None,
                scan_time: request.scan_time,
                decided_at: 1_480_003_200_002,
                offline,
                shown: offline.then_some(Status::Okay),
                annuls: None,
                annulled: None,
            };
            assert_eq!(
                DecisionEvent::try_from(pb::Decision::from(&event)).unwrap(),
                event
            );
        }
    }

    #[test]
    fn annulments_round_trip_and_are_no_scans() {
        let request = AnnulRequest {
            venue_id: VenueId::new("V"),
            device_id: DeviceId::new(3),
            gate_id: GateId::new(4),
            scan_id: ScanId::new("s0"),
        };
        let digest = SecretDigest::of("s3cret");
        let bytes = annul_to_pb(&ScanId::new("a1"), &request, Some(&digest)).encode_to_vec();
        let message = pb::ScanRequest::decode(bytes.as_slice()).unwrap();
        assert!(is_annulment(&message));
        assert_eq!(
            secret_digest_from_pb(&message.device_secret_digest).unwrap(),
            Some(digest)
        );
        assert_eq!(
            annul_from_pb(message.clone()).unwrap(),
            (ScanId::new("a1"), request)
        );
        assert!(scan_from_pb(message).is_err(), "an annulment is no scan");
        let annul_kind = pb::ScanRequest {
            kind: pb::ScanKind::Annul.into(),
            ..scan_to_pb(&ScanId::new("s"), ScanKind::Enter, &scan(), None, None)
        };
        assert!(matches!(
            scan_from_pb(annul_kind),
            Err(ProtoError::Invalid { field: "kind", .. })
        ));
        let scan_message = scan_to_pb(&ScanId::new("s"), ScanKind::Enter, &scan(), None, None);
        assert!(!is_annulment(&scan_message));
        assert!(annul_from_pb(scan_message).is_err());

        for (token, status, annulled) in [
            ("", Status::NotFound, None),
            (
                "T",
                Status::Okay,
                Some(AnnulledPassage {
                    kind: ScanKind::Exit,
                    gate_id: GateId::new(9),
                    gate_name: "North".into(),
                    decided_at: 17,
                    forced: true,
                }),
            ),
        ] {
            let event = DecisionEvent {
                scan_id: ScanId::new("a1"),
                kind: ScanKind::Annul,
                decision: Decision::new(status, "m", vec![]),
                token: Token::new(token),
                venue_id: VenueId::new("V"),
                gate_id: GateId::new(4),
                gate_name: "Gate 4".into(),
                device_id: DeviceId::new(3),
                device_os: None,
                channel_id: None,
                scan_time: 20,
                decided_at: 20,
                offline: false,
                shown: None,
                annuls: Some(ScanId::new("s0")),
                annulled,
            };
            assert_eq!(
                DecisionEvent::try_from(pb::Decision::from(&event)).unwrap(),
                event
            );
        }
    }

    #[test]
    fn inventory_round_trips() {
        let text = r#"{"type":"venue","id":"V","name":"Arena","requireDeviceSecret":true}
{"type":"event","id":"E","venueId":"V","doorsOpen":1,"endsAt":2,"status":"CANCELLED","allowReentry":false}
{"type":"gate","venueId":"V","name":"G","allowedSections":["PIT1"],"allowedEvents":["E"],"openFrom":5}
{"type":"ticket","token":"T","eventId":"E","places":["PIT1:1:1"],"status":"VOID","validUntil":9}
{"type":"ticket","token":"R","eventId":"E","places":["PIT1:1:2"],"rotation":{"secret":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","stepSeconds":30}}"#;
        let (records, errors) = parse_ndjson(text);
        assert!(errors.is_empty());
        for numbered in records {
            let bytes = pb::InventoryRecord::from(&numbered.record).encode_to_vec();
            let back =
                InventoryRecord::try_from(pb::InventoryRecord::decode(bytes.as_slice()).unwrap())
                    .unwrap();
            assert_eq!(back, numbered.record);
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_field() {
        assert_eq!(
            scan_from_pb(pb::ScanRequest::default()).unwrap_err(),
            ProtoError::Missing("device_os")
        );
        let bad_kind = pb::ScanRequest {
            kind: 99,
            ..scan_to_pb(&ScanId::new("s"), ScanKind::Enter, &scan(), None, None)
        };
        assert!(matches!(
            scan_from_pb(bad_kind),
            Err(ProtoError::Invalid { field: "kind", .. })
        ));
        assert_eq!(
            InventoryRecord::try_from(pb::InventoryRecord::default()).unwrap_err(),
            ProtoError::Missing("record")
        );
    }

    #[test]
    fn the_descriptor_set_names_every_file() {
        // A FileDescriptorSet holds each file name as a plain string.
        let text = String::from_utf8_lossy(DESCRIPTOR_SET);
        for file in ["scan", "decision", "device", "inventory", "rpc"] {
            assert!(
                text.contains(&format!("presence/v1/{file}.proto")),
                "{file}"
            );
        }
    }
}
