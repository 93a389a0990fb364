//! The JSON shapes of the public API: every envelope the gateway sends is built
//! from these types, and the OpenAPI document is generated from them, so the two
//! cannot drift apart. Request bodies are read by the domain parsers (which accept
//! more than a typed deserializer would, e.g. integers as digit strings); the
//! request types here document them and serve clients that build requests.

use presence_domain::{Device, LineError, Status, TicketPlace};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
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

/// The answer of a rejected inventory: nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryErrorEnvelope {
    pub result: ResultBody,
    pub message: LineErrorsMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineErrorsMessage {
    /// One entry per bad line; empty when the body as a whole is wrong (no records).
    pub errors: Vec<LineErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineErrorBody {
    /// Counted from 1.
    #[schema(minimum = 1)]
    pub line: u64,
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
    /// `alive`, `ready`, `unavailable` or `shutting_down`.
    pub status: String,
}

/// The body of `ticket/enter`, `ticket/exit` and `ticket/validate`. Read as JSON
/// whatever the Content-Type; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub channel_id: Option<String>,
    /// `Printed`, `iOS` or `Android`, case-insensitive.
    #[schema(example = "Printed")]
    pub device_os: String,
    pub gate_name: String,
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    pub venue_id: String,
    #[schema(schema_with = positive_integer)]
    pub device_id: u64,
    #[schema(schema_with = positive_integer)]
    pub gate_id: u64,
    /// Unix milliseconds.
    #[schema(schema_with = positive_integer)]
    pub scan_time: u64,
}

/// The body of `device/init`. `gateId` of an existing gate may replace
/// `gateName`; when both are sent, `gateName` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInitBody {
    pub venue_id: String,
    pub name: String,
    /// Six hex pairs separated by `:` or `-`.
    #[schema(example = "00:24:06:F0:F9:FB")]
    pub mac: String,
    /// An IPv4 or IPv6 address.
    #[schema(example = "192.168.1.1")]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub gate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = positive_integer)]
    pub gate_id: Option<u64>,
    pub serial: String,
    pub model: String,
}

/// The query of `GET device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// The venue the device is configured at (`venueId` is accepted instead).
    #[param(nullable = false)]
    pub venue: Option<String>,
    /// Same as `venue`; `venue` wins when both are sent.
    #[param(nullable = false)]
    pub venue_id: Option<String>,
    /// The device's MAC address; `:` or `-` separated, any case.
    #[param(nullable = false)]
    pub mac: Option<String>,
}

fn status_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Status::ALL.iter().map(|status| status.as_str())))
            .build(),
    )
}

/// Integers arrive as JSON numbers or as strings of digits (the seed sends both).
fn positive_integer() -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(1)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]{1,19}$")),
            )
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::{DeviceInitRequest, ScanRequest};

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

    #[test]
    fn result_omits_an_absent_scan_id() {
        let result = ResultBody::new(Status::Okay, "Okay");
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({"status": "OKAY", "message": "Okay"})
        );
    }
}
