//! Scanning devices: the device/init request, lookups, MAC and IP normalisation,
//! and how gate names are matched.

use crate::fields::{FieldErrors, FieldReader};
use crate::ids::{DeviceId, GateId, VenueId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;
use unicode_normalization::UnicodeNormalization;

/// A MAC address, stored upper-case with `:` separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mac(String);

impl Mac {
    /// Six hex pairs separated by `:` or `-` (one kind throughout).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let separator = if text.contains('-') { '-' } else { ':' };
        let pairs: Vec<&str> = text.split(separator).collect();
        let valid = pairs.len() == 6
            && pairs
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        valid.then(|| Self(pairs.join(":").to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name under which a gate is found: NFKC-normalised, trimmed and
/// lower-cased, so "Gate 2", " gate 2 ", "GATE 2" and the full-width
/// "Ｇａｔｅ　２" a phone keyboard may type are one gate. NFKC first, so that
/// compatibility spaces and letters become the plain ones before trimming and
/// lower-casing; lower-casing is Unicode's full mapping (`to_lowercase`), which
/// covers every script the names are likely to be in.
pub fn gate_key(name: &str) -> String {
    name.nfkc().collect::<String>().trim().to_lowercase()
}

/// How a device/init names its gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateRef {
    /// Created on first use at the venue.
    Name(String),
    /// Must be an existing gate of the venue.
    Id(GateId),
}

/// A valid device/init request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInitRequest {
    pub venue_id: VenueId,
    pub name: String,
    pub mac: Mac,
    pub ip: IpAddr,
    pub gate: GateRef,
    pub serial: String,
    pub model: String,
    /// The digest of a fresh secret the gateway drew for this init: stored as
    /// the device's secret when its venue requires one (SPEC §7), so that the
    /// secret itself never leaves the gateway that shows it. Not from the body.
    #[serde(default)]
    pub secret_candidate: Option<SecretDigest>,
}

impl DeviceInitRequest {
    /// Reads a request body. `gateName` wins over `gateId` when both are sent.
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut reader = FieldReader::new(body)?;
        let venue_id = reader.required_string("venueId");
        let name = reader.required_text("name");
        let mac = reader.required_string("mac").and_then(|text| {
            let mac = Mac::parse(&text);
            if mac.is_none() {
                reader.reject("mac", "must be six hex pairs separated by ':' or '-'");
            }
            mac
        });
        let ip = reader.required_string("ip").and_then(|text| {
            let ip = text.trim().parse::<IpAddr>().ok();
            if ip.is_none() {
                reader.reject("ip", "must be an IPv4 or IPv6 address");
            }
            ip
        });
        let named = reader.has("gateName");
        let gate_name = if named {
            reader.required_text("gateName")
        } else {
            None
        };
        // Read even when gateName wins, so that a malformed gateId is refused by
        // name instead of silently ignored.
        let gate_id = reader.optional_positive("gateId");
        let gate = match (gate_name, gate_id) {
            (Some(name), _) => Some(GateRef::Name(name.trim().to_owned())),
            (None, Some(id)) if !named => Some(GateRef::Id(GateId::new(id))),
            (None, _) => {
                if !named && !reader.has("gateId") {
                    reader.reject("gateName", "is required (or gateId of an existing gate)");
                }
                None
            }
        };
        let serial = reader.required_text("serial");
        let model = reader.required_text("model");
        reader.finish()?;
        match (venue_id, name, mac, ip, gate, serial, model) {
            (
                Some(venue_id),
                Some(name),
                Some(mac),
                Some(ip),
                Some(gate),
                Some(serial),
                Some(model),
            ) => Ok(Self {
                venue_id: VenueId::new(venue_id),
                name,
                mac,
                ip,
                gate,
                serial,
                model,
                secret_candidate: None,
            }),
            // `finish` reports every field that did not produce a value.
            _ => Err(FieldErrors::single("body", "is not a valid device request")),
        }
    }
}

/// A valid `POST /admin/v1/devices/revoke` body (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRevocation {
    pub venue_id: VenueId,
    pub device_id: DeviceId,
}

impl DeviceRevocation {
    /// Reads `{"venueId","deviceId"}`; `deviceId` as in a scan.
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut reader = FieldReader::new(body)?;
        let venue_id = reader.required_string("venueId");
        let device_id = reader.required_positive("deviceId");
        reader.finish()?;
        match (venue_id, device_id) {
            (Some(venue_id), Some(device_id)) => Ok(Self {
                venue_id: VenueId::new(venue_id),
                device_id: DeviceId::new(device_id),
            }),
            _ => Err(FieldErrors::single("body", "is not a valid revocation")),
        }
    }
}

/// A valid `GET device?venue=…&mac=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLookup {
    pub venue_id: VenueId,
    pub mac: Mac,
}

impl DeviceLookup {
    /// Reads the query parameters; `venueId` is accepted for `venue`.
    pub fn parse(
        venue: Option<&str>,
        venue_id: Option<&str>,
        mac: Option<&str>,
    ) -> Result<Self, FieldErrors> {
        let venue = venue.or(venue_id).map(str::trim).filter(|v| !v.is_empty());
        let mac_text = mac.map(str::trim).filter(|m| !m.is_empty());
        let parsed_mac = mac_text.and_then(Mac::parse);
        match (venue, mac_text, parsed_mac) {
            (Some(venue), Some(_), Some(mac)) => Ok(Self {
                venue_id: VenueId::new(venue),
                mac,
            }),
            (None, _, _) => Err(FieldErrors::single("venue", "is required")),
            (_, None, _) => Err(FieldErrors::single("mac", "is required")),
            (_, Some(_), None) => Err(FieldErrors::single(
                "mac",
                "must be six hex pairs separated by ':' or '-'",
            )),
        }
    }
}

/// A configured device, as device/init and device lookup return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub venue_id: VenueId,
    pub name: String,
    pub mac: Mac,
    pub ip: String,
    pub gate_id: GateId,
    pub gate_name: String,
    pub serial: String,
    pub model: String,
    /// Its credentials (SPEC §7). Stored with the device, so that the read rule
    /// 1 makes anyway finds them; never answered or published.
    #[serde(default)]
    pub access: DeviceAccess,
}

/// What a device proves itself with, and whether it may still scan (SPEC §7).
/// A device/init replaces it whole: a new secret (or none) and not revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAccess {
    /// The digest of the secret issued at its latest init, when its venue
    /// required one then.
    #[serde(default)]
    pub secret: Option<SecretDigest>,
    /// Revoked by an admin: every request of the device is 403 until a re-init.
    #[serde(default)]
    pub revoked: bool,
}

/// The request header a scanner sends its device secret in.
pub const DEVICE_SECRET_HEADER: &str = "X-Device-Secret";

/// The SHA-256 digest of a device secret: what is stored, what travels between
/// services, and what is compared, in constant time. A secret is random and
/// at least 128 bits, so a fast unsalted hash is enough to keep a stolen digest
/// from being turned back into it. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// The digest of a secret as a scanner sends it.
    pub fn of(secret: impl AsRef<[u8]>) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(secret.as_ref()).into())
    }

    /// A digest received from another service; `None` unless 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `presented` is this digest, in time independent of where they
    /// differ.
    pub fn matches(&self, presented: &SecretDigest) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&presented.0).into()
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

impl Serialize for SecretDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SecretDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text)
            .ok()
            .and_then(|bytes| Self::from_bytes(&bytes))
            .ok_or_else(|| serde::de::Error::custom("not a 32-byte hex digest"))
    }
}

impl Device {
    /// Whether the device may scan for `venue_id` at `gate_id` (rule 1).
    pub fn is_configured_at(&self, venue_id: &VenueId, gate_id: GateId) -> bool {
        &self.venue_id == venue_id && self.gate_id == gate_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"name": "Test device 2", "mac": "00:00:00:00:00:01", "ip": "192.168.1.1",
               "gateName": "Test Gate", "venueId": "2", "serial": "aBcDEFg12", "model": "Best Phone"})
    }

    #[test]
    fn macs_normalise_to_upper_case_colons() {
        assert_eq!(
            Mac::parse("00-24-06-f0-f9-fb").unwrap().as_str(),
            "00:24:06:F0:F9:FB"
        );
        assert_eq!(
            Mac::parse("00:24:06:f0:f9:fb").unwrap().as_str(),
            "00:24:06:F0:F9:FB"
        );
        for bad in [
            "",
            "00:24:06:F0:F9",
            "00:24:06:F0:F9:FB:00",
            "0:24:06:F0:F9:FB",
            "00:24:06:F0:F9:FG",
            "00-24:06-F0:F9-FB",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_the_seed_example() {
        let request = DeviceInitRequest::parse(&body()).unwrap();
        assert_eq!(request.gate, GateRef::Name("Test Gate".into()));
        assert_eq!(request.ip.to_string(), "192.168.1.1");
    }

    #[test]
    fn gate_id_may_replace_gate_name_and_name_wins_when_both() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("gateName");
        b["gateId"] = json!("1");
        assert_eq!(
            DeviceInitRequest::parse(&b).unwrap().gate,
            GateRef::Id(GateId::new(1))
        );
        b["gateName"] = json!(" North ");
        assert_eq!(
            DeviceInitRequest::parse(&b).unwrap().gate,
            GateRef::Name("North".into())
        );
        b["gateId"] = json!("abc");
        assert_eq!(
            DeviceInitRequest::parse(&b).unwrap_err().to_string(),
            "gateId must be an integer or a string of digits"
        );
    }

    #[test]
    fn names_bad_fields() {
        for (field, value, expected) in [
            (
                "mac",
                json!("nope"),
                "mac must be six hex pairs separated by ':' or '-'",
            ),
            (
                "ip",
                json!("300.1.1.1"),
                "ip must be an IPv4 or IPv6 address",
            ),
            ("serial", json!(""), "serial must not be empty"),
            (
                "serial",
                json!("s".repeat(129)),
                "serial must be at most 128 characters",
            ),
            (
                "name",
                json!("n".repeat(129)),
                "name must be at most 128 characters",
            ),
            (
                "model",
                json!("m".repeat(129)),
                "model must be at most 128 characters",
            ),
            (
                "gateName",
                json!("g".repeat(129)),
                "gateName must be at most 128 characters",
            ),
            ("model", json!(null), "model is required"),
        ] {
            let mut b = body();
            b[field] = value;
            assert_eq!(
                DeviceInitRequest::parse(&b).unwrap_err().to_string(),
                expected
            );
        }
        let mut b = body();
        b.as_object_mut().unwrap().remove("gateName");
        assert_eq!(
            DeviceInitRequest::parse(&b).unwrap_err().to_string(),
            "gateName is required (or gateId of an existing gate)"
        );
    }

    #[test]
    fn ipv6_is_accepted() {
        let mut b = body();
        b["ip"] = json!("fe80::1");
        assert!(DeviceInitRequest::parse(&b).is_ok());
    }

    #[test]
    fn lookup_accepts_venue_id_and_names_problems() {
        let lookup =
            DeviceLookup::parse(None, Some("KovZpZAFF17J"), Some("00:24:06:f0:f9:fb")).unwrap();
        assert_eq!(lookup.mac.as_str(), "00:24:06:F0:F9:FB");
        assert_eq!(
            DeviceLookup::parse(None, None, Some("00:24:06:F0:F9:FB"))
                .unwrap_err()
                .to_string(),
            "venue is required"
        );
        assert_eq!(
            DeviceLookup::parse(Some("V"), None, None)
                .unwrap_err()
                .to_string(),
            "mac is required"
        );
        assert!(DeviceLookup::parse(Some("V"), None, Some("zz")).is_err());
    }

    #[test]
    fn gate_names_match_trimmed_and_case_insensitively() {
        assert_eq!(gate_key(" Gate 2 "), gate_key("GATE 2"));
    }

    #[test]
    fn look_alike_gate_names_are_one_gate() {
        for look_alike in [
            "Ｇａｔｅ　２",
            "\u{3000}GATE 2\u{3000}",
            "Gate\u{00A0}2",
            "Gate ²",
        ] {
            assert_eq!(gate_key(look_alike), "gate 2", "{look_alike:?}");
        }
        assert_eq!(gate_key("ＮＯＲＴＨ"), gate_key("north"));
        assert_ne!(gate_key("Gate 2"), gate_key("Gate 3"));
    }
}
