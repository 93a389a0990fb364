//! The JSON shapes of the public API: every envelope the gateway sends is built
//! from these types, and the OpenAPI document is generated from them, so the two
//! cannot drift apart. Request bodies are read by the domain parsers (which accept
//! more than a typed deserializer would, e.g. integers as digit strings); the
//! request types here document them and serve clients that build requests.

use presence_domain::fields::MAX_TEXT_CHARS;
use presence_domain::stats::{BOARD_MINUTES, Counts, MINUTE_MS, minute_of};
use presence_domain::{
    Device, LineError, ScanKind, ScanRecord, Status, TicketPlace, TicketReport, TicketStatus,
    VenueStats,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::{IntoParams, ToSchema};

/// `result` of every envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultBody {
    #[schema(schema_with = status_schema)]
    pub status: Status,
    pub message: String,
    /// Ticket endpoints only, once the request was handed to the validator: the id
    /// of this request, as the decision stream and the logs carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scan_id: Option<String>,
}

impl ResultBody {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            scan_id: None,
        }
    }
}

/// An answer without a `message` object (errors outside the ticket endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub result: ResultBody,
}

/// An error answer of `device/init` and `GET device`: `message` is present and
/// empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceErrorEnvelope {
    pub result: ResultBody,
    pub message: EmptyMessage,
}

/// `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmptyMessage {}

/// The answer of `ticket/enter`, `ticket/exit` and `ticket/validate`, errors
/// included: `message.tickets` is always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketEnvelope {
    pub result: ResultBody,
    pub message: TicketsMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketsMessage {
    /// The places the ticket admits; empty when no ticket applies.
    pub tickets: Vec<TicketPlaceBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketPlaceBody {
    /// `Section:Row:Seat`.
    #[schema(example = "PIT1:3:4")]
    pub place: String,
    #[schema(example = "3F005062B2B4E313")]
    pub event_id: String,
}

impl From<&TicketPlace> for TicketPlaceBody {
    fn from(place: &TicketPlace) -> Self {
        Self {
            place: place.place.clone(),
            event_id: place.event_id.as_str().to_owned(),
        }
    }
}

/// The answer of `device/init` and of a found device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceEnvelope {
    pub result: ResultBody,
    pub message: DeviceBody,
}

/// The body of `POST /admin/v1/devices/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"venueId": "KovZpZAnAtJJ", "deviceId": 224}))]
pub struct DeviceRevokeBody {
    #[schema(schema_with = not_blank)]
    pub venue_id: String,
    /// A device of that venue, as device/init numbered it.
    #[schema(minimum = 1)]
    pub device_id: u64,
}

/// The device secret header of a scan, an offline upload or an annulment
/// (SPEC §7).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct DeviceSecretHeader {
    /// The `deviceSecret` device/init answered, at a venue that requires device
    /// secrets; ignored elsewhere.
    #[serde(rename = "X-Device-Secret")]
    pub device_secret: Option<String>,
}

/// A configured device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBody {
    #[schema(minimum = 1)]
    pub id: u64,
    pub venue_id: String,
    pub name: String,
    /// Upper-case, `:`-separated.
    #[schema(example = "00:24:06:F0:F9:FB")]
    pub mac: String,
    pub ip: String,
    #[schema(minimum = 1)]
    pub gate_id: u64,
    pub gate_name: String,
    pub serial: String,
    pub model: String,
    /// Only in the answer to a device/init at a venue that requires device
    /// secrets, and only there: send it as `X-Device-Secret` with every scan.
    /// A re-init issues a new one and the old one stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 32)]
    pub device_secret: Option<String>,
}

impl From<&Device> for DeviceBody {
    fn from(device: &Device) -> Self {
        Self {
            id: device.id.get(),
            venue_id: device.venue_id.as_str().to_owned(),
            name: device.name.clone(),
            mac: device.mac.as_str().to_owned(),
            ip: device.ip.clone(),
            gate_id: device.gate_id.get(),
            gate_name: device.gate_name.clone(),
            serial: device.serial.clone(),
            model: device.model.clone(),
            device_secret: None,
        }
    }
}

/// The answer of `GET venues/{venueId}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsEnvelope {
    pub result: ResultBody,
    pub message: VenueStatsBody,
}

/// The live view of a venue, counted from the decisions stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VenueStatsBody {
    pub venue_id: String,
    /// Unix ms of the latest decision counted; null before the first.
    #[schema(example = 1_480_003_200_042_i64)]
    pub updated_at: Option<i64>,
    pub totals: CountsBody,
    /// Gates with at least one counted scan, by gateId.
    pub gates: Vec<GateStatsBody>,
    /// Events with at least one counted scan of their tickets, by eventId.
    pub events: Vec<EventStatsBody>,
}

/// Counts of the venue, a gate or an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CountsBody {
    /// People admitted (OKAY enters; a group ticket counts each place).
    pub entries: u64,
    /// People let out (EXIT), counted the same way.
    pub exits: u64,
    /// entries − exits. A gate or event people left through more than they
    /// came in by is negative.
    pub occupancy: i64,
    /// Refused enter and exit scans by status, e.g. `{"NOT_FOUND": 2}`.
    /// Validate scans and BAD_REQUEST are not counted.
    pub denials: BTreeMap<String, u64>,
    /// People let through by forced offline passages: the scanner allowed
    /// them offline and the rules refuse them (e.g. a ticket used twice).
    /// Also counted in `entries` or `exits`.
    pub forced: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatsBody {
    #[schema(minimum = 1)]
    pub gate_id: u64,
    /// The gate name its scanners last sent.
    pub name: String,
    #[serde(flatten)]
    pub counts: CountsBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventStatsBody {
    pub event_id: String,
    #[serde(flatten)]
    pub counts: CountsBody,
}

impl From<&Counts> for CountsBody {
    fn from(counts: &Counts) -> Self {
        Self {
            entries: counts.entries,
            exits: counts.exits,
            occupancy: counts.occupancy(),
            denials: counts.denials.clone(),
            forced: counts.forced,
        }
    }
}

impl From<&VenueStats> for VenueStatsBody {
    fn from(stats: &VenueStats) -> Self {
        Self {
            venue_id: stats.venue_id.as_str().to_owned(),
            updated_at: stats.updated_at,
            totals: (&stats.totals).into(),
            gates: stats
                .gates
                .iter()
                .map(|gate| GateStatsBody {
                    gate_id: gate.gate_id.get(),
                    name: gate.name.clone(),
                    counts: (&gate.counts).into(),
                })
                .collect(),
            events: stats
                .events
                .iter()
                .map(|event| EventStatsBody {
                    event_id: event.event_id.as_str().to_owned(),
                    counts: (&event.counts).into(),
                })
                .collect(),
        }
    }
}

/// The answer of an applied inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryAppliedEnvelope {
    pub result: ResultBody,
    pub message: AppliedMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppliedMessage {
    /// How many records were applied.
    pub applied: u64,
}

/// What an inventory upload may be, before sending one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryLimitsEnvelope {
    pub result: ResultBody,
    pub message: InventoryLimitsMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryLimitsMessage {
    /// The largest body `POST /admin/v1/inventory` accepts, in bytes (413
    /// beyond): the server's `PRESENCE_MAX_INVENTORY_BYTES`.
    pub max_bytes: u64,
}

/// The answer of a rejected inventory: nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryErrorEnvelope {
    pub result: ResultBody,
    pub message: LineErrorsMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineErrorsMessage {
    /// The first bad lines (at most 100), in line order; empty when the body as a
    /// whole is wrong (no records).
    #[schema(max_items = 100)]
    pub errors: Vec<LineErrorBody>,
    /// How many lines are bad, listed in `errors` or not.
    #[serde(rename = "errorCount")]
    pub error_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineErrorBody {
    /// Counted from 1.
    #[schema(minimum = 1)]
    pub line: u64,
    /// Every problem of the line, joined with `; `; at most 500 characters, and
    /// input it quotes at most 64.
    #[schema(max_length = 500)]
    pub error: String,
}

impl From<&LineError> for LineErrorBody {
    fn from(error: &LineError) -> Self {
        Self {
            line: u64::try_from(error.line).unwrap_or(u64::MAX),
            error: error.error.clone(),
        }
    }
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `alive`, `ready`, `degraded` (ready, a dependency not answering for
    /// less than the grace), `unavailable` or `shutting_down`.
    pub status: String,
}

/// The body of `ticket/enter`, `ticket/exit` and `ticket/validate`. Read as JSON
/// whatever the Content-Type; unknown fields are ignored. Strings the SPEC requires
/// must hold more than white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"deviceOs": "Printed", "gateName": "Gate 2", "token": "721744537954",
    "venueId": "KovZpZAnAtJJ", "deviceId": 1, "gateId": 1, "scanTime": 1_480_003_200_000_u64}))]
pub struct ScanBody {
    /// Absent or `null` when the scanner has none; at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_bounded_text)]
    pub channel_id: Option<String>,
    /// `Printed`, `iOS` or `Android`, case-insensitive.
    #[schema(schema_with = device_os_schema)]
    pub device_os: String,
    /// At most 128 characters; the answer and the stats show the gate's stored name.
    #[schema(schema_with = text)]
    pub gate_name: String,
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    #[schema(schema_with = not_blank)]
    pub venue_id: String,
    #[schema(schema_with = positive_integer)]
    pub device_id: u64,
    #[schema(schema_with = positive_integer)]
    pub gate_id: u64,
    /// Unix milliseconds, at most a day (`PRESENCE_MAX_SCAN_AHEAD_MS`) ahead of
    /// the server's clock.
    #[schema(schema_with = positive_integer)]
    pub scan_time: u64,
}

/// The body of `ticket/annul`. Read as JSON whatever the Content-Type;
/// unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"venueId": "KovZpZAnAtJJ", "deviceId": 1, "gateId": 1,
    "scanId": "0190f1d2-5b7a-7c3e-9a41-2f6d8e0b1c55"}))]
pub struct AnnulBody {
    #[schema(schema_with = not_blank)]
    pub venue_id: String,
    /// The device asking; configured at this venue and gate.
    #[schema(schema_with = positive_integer)]
    pub device_id: u64,
    #[schema(schema_with = positive_integer)]
    pub gate_id: u64,
    /// The passage to undo: the `result.scanId` its scan was answered with.
    /// At most 64 letters, digits and `-`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$")]
    pub scan_id: String,
}

/// The body of `ticket/offline`: the scanner's fields once, and its scans.
/// Read as JSON whatever the Content-Type; at most 1 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"venueId": "KovZpZAnAtJJ", "deviceId": 1, "gateId": 1, "gateName": "Gate 2",
    "deviceOs": "Printed", "scans": [{"kind": "enter", "token": "721744537954",
    "scanTime": 1_480_003_200_000_u64, "shown": "OKAY"}]}))]
pub struct OfflineBody {
    #[schema(schema_with = not_blank)]
    pub venue_id: String,
    #[schema(schema_with = positive_integer)]
    pub device_id: u64,
    #[schema(schema_with = positive_integer)]
    pub gate_id: u64,
    /// At most 128 characters.
    #[schema(schema_with = text)]
    pub gate_name: String,
    #[schema(schema_with = device_os_schema)]
    pub device_os: String,
    /// 1 to 1000 scans; each ticket's are applied in scanTime order (ties: body order).
    #[schema(min_items = 1, max_items = 1000)]
    pub scans: Vec<OfflineScanBody>,
}

/// One scan made offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfflineScanBody {
    #[schema(schema_with = scan_kind_schema)]
    pub kind: String,
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    /// Unix milliseconds, at most a day ahead of the server's clock.
    #[schema(schema_with = positive_integer)]
    pub scan_time: u64,
    /// The status the scanner displayed offline. OKAY to an enter or EXIT to
    /// an exit means the holder went through: that passage is applied even if
    /// the rules now refuse it (`forced`).
    #[schema(schema_with = scan_status_schema)]
    pub shown: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_bounded_text)]
    pub channel_id: Option<String>,
}

/// The answer of `ticket/offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OfflineEnvelope {
    pub result: ResultBody,
    pub message: OfflineMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OfflineMessage {
    /// One result per uploaded scan, in body order.
    pub scans: Vec<OfflineResultBody>,
}

/// What became of one uploaded scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfflineResultBody {
    /// The id the decision carries; a scan recorded before (a re-upload)
    /// carries its first id.
    pub scan_id: String,
    pub token: String,
    #[schema(schema_with = scan_kind_schema)]
    pub kind: String,
    pub scan_time: i64,
    /// What the rules say, judged with this scan's own scanTime.
    #[schema(schema_with = status_schema)]
    pub status: Status,
    pub message: String,
    /// The passage was applied although `status` refuses it.
    pub forced: bool,
    pub tickets: Vec<TicketPlaceBody>,
}

/// The answer of `GET ticket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TicketLookupEnvelope {
    pub result: ResultBody,
    pub message: TicketReportBody,
}

/// A ticket, where its holder is, and its latest scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketReportBody {
    pub token: String,
    pub event_id: String,
    pub places: Vec<String>,
    /// `VALID` or `VOID`.
    #[schema(schema_with = ticket_status_schema)]
    pub status: String,
    /// `NEVER`, `IN` or `OUT`.
    #[schema(schema_with = token_state_schema)]
    pub state: String,
    /// Newest first, at most `limit`.
    pub scans: Vec<ScanRecordBody>,
}

impl From<&TicketReport> for TicketReportBody {
    fn from(report: &TicketReport) -> Self {
        Self {
            token: report.token.as_str().to_owned(),
            event_id: report.event_id.as_str().to_owned(),
            places: report.places.clone(),
            status: match report.status {
                TicketStatus::Valid => "VALID",
                TicketStatus::Void => "VOID",
            }
            .to_owned(),
            state: report.state.as_str().to_owned(),
            scans: report
                .scans
                .iter()
                .map(|record| ScanRecordBody::of(record, report))
                .collect(),
        }
    }
}

/// One scan decided about the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanRecordBody {
    pub scan_id: String,
    #[schema(schema_with = recorded_kind_schema)]
    pub kind: String,
    #[schema(schema_with = status_schema)]
    pub status: Status,
    pub message: String,
    pub gate_id: u64,
    pub gate_name: String,
    pub device_id: u64,
    /// Unix milliseconds, as the scanner sent it.
    pub scan_time: i64,
    /// Unix milliseconds, when it was decided.
    pub decided_at: i64,
    /// Uploaded by `ticket/offline`.
    pub offline: bool,
    /// An offline passage applied although `status` refuses it.
    pub forced: bool,
    /// A passage undone by a later annulment (listed too, kind `annul`).
    pub annulled: bool,
    /// For an annulment: the scan id of the passage it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annuls: Option<String>,
}

impl ScanRecordBody {
    fn of(record: &ScanRecord, report: &TicketReport) -> Self {
        Self {
            scan_id: record.scan_id.as_str().to_owned(),
            kind: record.kind.as_str().to_owned(),
            status: record.status,
            message: record.message.clone(),
            gate_id: record.gate_id.get(),
            gate_name: record.gate_name.clone(),
            device_id: record.device_id.get(),
            scan_time: record.scan_time,
            decided_at: record.decided_at,
            offline: record.offline,
            forced: record.forced,
            annulled: report.is_annulled(&record.scan_id),
            annuls: record.annuls.as_ref().map(|id| id.as_str().to_owned()),
        }
    }
}

/// The query of `GET ticket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketLookupQuery {
    pub venue_id: Option<String>,
    pub token: Option<String>,
    pub limit: Option<String>,
}

/// Written out for the same reason as [`DeviceQuery`]'s.
impl IntoParams for TicketLookupQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_parameter(
                "venueId",
                true,
                "The venue asking; a ticket of another venue's event is not found.",
                not_blank().examples(["KovZpZAnAtJJ"]),
            ),
            query_parameter(
                "token",
                true,
                "The ticket's token.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(256))
                    .examples(["721744537954"]),
            ),
            query_parameter(
                "limit",
                false,
                "How many of the newest scans to list: 1 to 500, default 50.",
                string_matching("^0*([1-9][0-9]?|[1-4][0-9]{2}|500)$".to_owned()),
            ),
        ]
    }
}

/// The body of `device/init`. `gateId` of an existing gate may replace
/// `gateName`; when both are sent, `gateName` wins. Strings must hold more than
/// white space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"venueId": "KovZpZAnAtJJ", "name": "East 1", "mac": "00:24:06:F0:F9:FB",
    "ip": "192.168.1.1", "gateName": "Gate 2", "serial": "aBcDEFg12", "model": "Janam XT2"}))]
pub struct DeviceInitBody {
    #[schema(schema_with = not_blank)]
    pub venue_id: String,
    #[schema(schema_with = text)]
    pub name: String,
    /// Six hex pairs separated by `:` or `-` (one kind throughout).
    #[schema(schema_with = mac_schema)]
    pub mac: String,
    /// An IPv4 or IPv6 address.
    #[schema(schema_with = ip_schema)]
    pub ip: String,
    /// Created at the venue on first use; required unless `gateId` is sent.
    /// Matched after NFKC normalisation, trimming and case folding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_text)]
    pub gate_name: Option<String>,
    /// An existing gate of the venue, used when `gateName` is absent or `null`
    /// (and refused when malformed either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_positive_integer)]
    pub gate_id: Option<u64>,
    #[schema(schema_with = text)]
    pub serial: String,
    #[schema(schema_with = text)]
    pub model: String,
}

/// One query parameter of a hand-written [`IntoParams`].
fn query_parameter(
    name: &str,
    required: bool,
    description: &str,
    schema: ObjectBuilder,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The query of `GET device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceQuery {
    /// The venue the device is configured at.
    pub venue: Option<String>,
    /// Accepted instead of `venue` (the original API's name); `venue` wins when
    /// both are sent.
    pub venue_id: Option<String>,
    /// The device's MAC address; `:` or `-` separated, any case.
    pub mac: Option<String>,
}

/// Written out rather than derived: the derive drops a parameter's description
/// and `required` once its schema is custom.
impl IntoParams for DeviceQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            // Documented as required although `venueId` may stand in for it:
            // OpenAPI cannot say "this parameter or that one".
            query_parameter(
                "venue",
                true,
                "The venue the device is configured at (`venueId` is accepted instead).",
                not_blank().examples(["KovZpZAnAtJJ"]),
            ),
            query_parameter(
                "venueId",
                false,
                "Accepted instead of `venue`, the original API's name; `venue` wins when both are sent.",
                ObjectBuilder::new().schema_type(Type::String),
            ),
            query_parameter(
                "mac",
                true,
                "The device's MAC address: six hex pairs separated by `:` or `-`, any case.",
                mac_schema(),
            ),
        ]
    }
}

fn status_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Status::ALL.iter().map(|status| status.as_str())))
            .build(),
    )
}

fn enum_schema(values: &[&str]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
}

fn scan_kind_schema() -> ObjectBuilder {
    enum_schema(&ScanKind::ALL.map(ScanKind::as_str))
}

/// The kinds a ticket's history lists: the scans and annulments.
fn recorded_kind_schema() -> ObjectBuilder {
    enum_schema(&ScanKind::RECORDED.map(ScanKind::as_str))
}

/// The statuses a scan may be answered with.
fn scan_status_schema() -> ObjectBuilder {
    let statuses: Vec<&str> = Status::ALL
        .into_iter()
        .filter(|status| status.is_scan_decision())
        .map(Status::as_str)
        .collect();
    enum_schema(&statuses)
}

fn ticket_status_schema() -> ObjectBuilder {
    enum_schema(&["VALID", "VOID"])
}

fn token_state_schema() -> ObjectBuilder {
    enum_schema(&["NEVER", "IN", "OUT"])
}

/// What the server trims (Rust's `char::is_whitespace`, Unicode White_Space),
/// spelled out because regex dialects disagree on `\s` (Python's also takes
/// U+001C..U+001F, which are not trimmed).
const WHITE_SPACE: &str =
    r"\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

fn string_matching(pattern: String) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// A required string: anything but white space alone (the server trims to check).
fn not_blank() -> ObjectBuilder {
    string_matching(format!("[^{WHITE_SPACE}]"))
}

/// A free-text field: not blank, at most `MAX_TEXT_CHARS` characters.
fn text() -> ObjectBuilder {
    not_blank().max_length(Some(MAX_TEXT_CHARS))
}

/// An optional free-text field that may be blank (`channelId`).
fn optional_bounded_text() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(MAX_TEXT_CHARS))
}

/// An optional free-text field: absent and `null` mean "not sent".
fn optional_text() -> ObjectBuilder {
    text().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

fn device_os_schema() -> ObjectBuilder {
    string_matching(
        "^([Pp][Rr][Ii][Nn][Tt][Ee][Dd]|[Ii][Oo][Ss]|[Aa][Nn][Dd][Rr][Oo][Ii][Dd])$".to_owned(),
    )
    .description(Some("`Printed`, `iOS` or `Android`, case-insensitive."))
    .examples(["Printed"])
}

/// Six hex pairs, all `:` or all `-`, surrounding white space trimmed.
fn mac_schema() -> ObjectBuilder {
    let pairs = |separator: char| {
        format!(
            "^[{WHITE_SPACE}]*([0-9A-Fa-f]{{2}}{separator}){{5}}[0-9A-Fa-f]{{2}}[{WHITE_SPACE}]*$"
        )
    };
    string_matching(format!("{}|{}", pairs(':'), pairs('-')))
        .description(Some(
            "Six hex pairs separated by `:` or `-` (one kind throughout), any case.",
        ))
        .examples(["00:24:06:F0:F9:FB"])
}

fn ip_schema() -> Schema {
    let format = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(format(KnownFormat::Ipv4))
            .item(format(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address."))
            .examples(["192.168.1.1"])
            .build(),
    )
}

/// Integers arrive as JSON numbers or as strings of digits (the seed sends both):
/// at least 1, at most 2^63-1. The string pattern stops at 18 significant digits,
/// past any Unix-millisecond time (longer ones up to 2^63-1 are read too); a whole
/// number written as a float (`224.0`) is read up to 2^53.
fn positive_integer_items() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(i64::MAX)),
        )
        .item(string_matching("^0*[1-9][0-9]{0,17}$".to_owned()).max_length(Some(19)))
}

fn positive_integer() -> Schema {
    Schema::OneOf(positive_integer_items().build())
}

/// What device/init needs besides its fields: a `gateName` or a `gateId` that is
/// not `null` (the derive cannot say "one of two"; `docs` adds this to the body).
pub(crate) fn device_gate_required() -> Schema {
    let given =
        |field: &str, schema: Schema| ObjectBuilder::new().required(field).property(field, schema);
    Schema::AnyOf(
        AnyOfBuilder::new()
            .item(given("gateName", Schema::Object(not_blank().build())))
            .item(given("gateId", positive_integer()))
            .build(),
    )
}

/// An optional integer: absent and `null` mean "not sent".
fn optional_positive_integer() -> Schema {
    Schema::OneOf(
        positive_integer_items()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::{DeviceInitRequest, DeviceLookup, ScanRequest};

    #[test]
    fn documented_request_bodies_are_accepted_by_the_parsers() {
        let scan = ScanBody {
            channel_id: None,
            device_os: "iOS".into(),
            gate_name: "Gate 2".into(),
            token: "721744537954".into(),
            venue_id: "KovZpZAnAtJJ".into(),
            device_id: 224,
            gate_id: 274,
            scan_time: 1_480_003_200_001,
        };
        let value = serde_json::to_value(&scan).unwrap();
        assert!(value.get("channelId").is_none());
        assert!(ScanRequest::parse(&value).is_ok(), "{value}");
        let init = DeviceInitBody {
            venue_id: "KovZpZAnAtJJ".into(),
            name: "East 1".into(),
            mac: "00:24:06:F0:F9:FB".into(),
            ip: "192.168.1.1".into(),
            gate_name: None,
            gate_id: Some(2),
            serial: "aBcDEFg12".into(),
            model: "Janam XT2".into(),
        };
        let value = serde_json::to_value(&init).unwrap();
        assert!(DeviceInitRequest::parse(&value).is_ok(), "{value}");
    }

    /// scripts/schemathesis.sh scans these against its inventory: they must parse.
    #[test]
    fn the_documents_examples_are_accepted_by_the_parsers() {
        let document = serde_json::to_value(crate::docs::openapi()).unwrap();
        let schemas = &document["components"]["schemas"];
        let scan = &schemas["ScanBody"]["example"];
        assert!(ScanRequest::parse(scan).is_ok(), "{scan}");
        let init = &schemas["DeviceInitBody"]["allOf"][0]["example"];
        assert!(DeviceInitRequest::parse(init).is_ok(), "{init}");
        let lookup = &document["paths"]["/presence/v1/device"]["get"]["parameters"];
        let example = |name: &str| {
            lookup
                .as_array()
                .and_then(|parameters| parameters.iter().find(|p| p["name"] == name))
                .and_then(|parameter| parameter["schema"]["examples"][0].as_str())
        };
        assert!(DeviceLookup::parse(example("venue"), None, example("mac")).is_ok());
    }

    #[test]
    fn result_omits_an_absent_scan_id() {
        let result = ResultBody::new(Status::Okay, "Okay");
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({"status": "OKAY", "message": "Okay"})
        );
    }
}

/// One event of `GET venues/{venueId}/live`: the venue board's whole state, so
/// a board that reconnects (after a network drop or a gateway restart) is
/// exact again with the first event it gets, never counting anything twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardSnapshot {
    pub venue_id: String,
    /// Unix ms of the latest decision counted; null before the first.
    pub updated_at: Option<i64>,
    /// This gateway's clock when the snapshot was sent, Unix ms: the page
    /// shows scanners' ages against it, not against the viewer's clock.
    pub server_time: i64,
    /// Whether one of the venue's scanned events has its doors open now.
    pub doors_open: bool,
    /// How long a scanner may be silent during open doors before it is
    /// flagged, in ms (2 minutes unless configured).
    pub silent_after_ms: u64,
    /// Start (Unix ms) of the oldest minute of every gate's
    /// `entriesPerMinute`; the last value is the current minute.
    pub first_minute: i64,
    pub totals: CountsBody,
    /// Gates with at least one counted scan, by gateId.
    pub gates: Vec<BoardGate>,
    /// Scanners with at least one counted scan, by deviceId.
    pub scanners: Vec<BoardScanner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardGate {
    #[schema(minimum = 1)]
    pub gate_id: u64,
    pub name: String,
    #[serde(flatten)]
    pub counts: CountsBody,
    /// People admitted in each of the last 30 minutes, oldest first.
    pub entries_per_minute: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardScanner {
    #[schema(minimum = 1)]
    pub device_id: u64,
    #[schema(minimum = 1)]
    pub gate_id: u64,
    /// Unix ms of its latest counted scan (validate scans are not counted).
    pub last_scan_at: i64,
    /// Silent for longer than `silentAfterMs` while doors are open.
    pub silent: bool,
}

impl BoardSnapshot {
    /// The board's view of `stats` at `now`.
    pub fn new(stats: &VenueStats, now: i64, silent_after_ms: u64) -> Self {
        let silent_ms = i64::try_from(silent_after_ms).unwrap_or(i64::MAX);
        let silent = stats.silent_devices(now, silent_ms);
        let current = minute_of(now);
        let first_minute = current - (BOARD_MINUTES - 1) * MINUTE_MS;
        Self {
            venue_id: stats.venue_id.as_str().to_owned(),
            updated_at: stats.updated_at,
            server_time: now,
            doors_open: stats.doors_open,
            silent_after_ms,
            first_minute,
            totals: (&stats.totals).into(),
            gates: stats
                .gates
                .iter()
                .map(|gate| BoardGate {
                    gate_id: gate.gate_id.get(),
                    name: gate.name.clone(),
                    counts: (&gate.counts).into(),
                    entries_per_minute: (0..BOARD_MINUTES)
                        .map(|n| {
                            let minute = first_minute + n * MINUTE_MS;
                            gate.entries_by_minute.get(&minute).copied().unwrap_or(0)
                        })
                        .collect(),
                })
                .collect(),
            scanners: stats
                .devices
                .iter()
                .map(|device| BoardScanner {
                    device_id: device.device_id.get(),
                    gate_id: device.gate_id.get(),
                    last_scan_at: device.last_scan_at,
                    silent: silent.contains(&device.device_id),
                })
                .collect(),
        }
    }

    /// Whether `other` shows the same board: everything but the send time.
    pub fn shows_the_same_as(&self, other: &Self) -> bool {
        Self {
            server_time: other.server_time,
            ..self.clone()
        } == *other
    }
}
