//! Rotating barcodes (SPEC §7): a ticket's rotation secret, the RFC 6238 codes
//! it yields, and how a scanned token names a ticket and a code.
//!
//! A rotating ticket's barcode is `<token>:<code>`, `code` the 6-digit TOTP
//! (HMAC-SHA1, RFC 6238) of the secret for the time step it is shown in. A
//! screenshot stops working once its step and the next have passed, which is
//! what makes it useless to pass on.

use crate::fields::FieldReader;
use crate::ids::UnixMillis;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::Sha1;
use std::fmt;
use std::ops::RangeInclusive;

/// How long one code is shown by default, in seconds (as SafeTix does).
pub const DEFAULT_STEP_SECONDS: u32 = 15;
/// The step lengths inventory may ask for, in seconds.
pub const STEP_SECONDS: RangeInclusive<u32> = 5..=60;
/// Shortest secret accepted, in bytes: 128 bits, RFC 4226's minimum.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest secret accepted, in bytes: one SHA-1 block; HMAC hashes a longer
/// key down to 20 bytes anyway.
pub const MAX_SECRET_BYTES: usize = 64;
/// Digits of a code.
pub const CODE_DIGITS: usize = 6;
/// Steps either side of the scan time's step whose codes are still accepted:
/// the phone's and the scanner's clocks, and the time the fan takes to walk up
/// while the code is shown, may be a step apart.
pub const STEPS_OF_GRACE: u64 = 1;

/// The INVALID_TICKET message for a rotating ticket scanned without a code
/// (its bare token, e.g. read off a printout or typed in).
pub const BARCODE_REQUIRED: &str = "Barcode required: open the ticket in the app";
/// The INVALID_TICKET message for a code not valid at the scan time (a
/// screenshot, or a phone whose clock is far off).
pub const BARCODE_EXPIRED: &str = "Barcode has expired";

/// A rotation secret. Never printed: `Debug` hides it, and it is written out
/// (base32) only where it is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RotationSecret(Vec<u8>);

impl fmt::Debug for RotationSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotationSecret(<redacted>)")
    }
}

/// Why a rotation secret was refused. The reason never quotes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must be base32 (RFC 4648: letters A-Z and digits 2-7, optional '=' padding)")]
    NotBase32,
    #[error("must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes once decoded")]
    Length,
}

impl RotationSecret {
    /// Reads a base32 secret (RFC 4648; either case, optional `=` padding,
    /// spaces ignored as authenticator apps print them).
    pub fn from_base32(text: &str) -> Result<Self, SecretError> {
        Self::from_bytes(base32_decode(text).ok_or(SecretError::NotBase32)?)
    }

    /// A secret of [`MIN_SECRET_BYTES`] to [`MAX_SECRET_BYTES`] raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self(bytes))
    }

    /// The secret in base32 (upper case, no padding), for storage only.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The RFC 4226 HOTP value of `counter`, to `digits` digits.
    fn hotp(&self, counter: u64, digits: u32) -> u32 {
        // HMAC takes a key of any length; the error case cannot happen.
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&self.0) else {
            return u32::MAX;
        };
        mac.update(&counter.to_be_bytes());
        let hash = mac.finalize().into_bytes();
        let offset = usize::from(hash[19] & 0x0f);
        let binary = u32::from_be_bytes([
            hash[offset] & 0x7f,
            hash[offset + 1],
            hash[offset + 2],
            hash[offset + 3],
        ]);
        binary % 10u32.pow(digits)
    }
}

impl Serialize for RotationSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base32())
    }
}

impl<'de> Deserialize<'de> for RotationSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_base32(&text).map_err(serde::de::Error::custom)
    }
}

/// A ticket's rotation: its secret and how long each code is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    pub secret: RotationSecret,
    pub step_seconds: u32,
}

impl Rotation {
    /// Reads an inventory `rotation` object: `secret` (required) and
    /// `stepSeconds` (default [`DEFAULT_STEP_SECONDS`]). Problems are reported on
    /// `reader`; the secret itself is never quoted.
    pub fn read(reader: &mut FieldReader<'_>) -> Option<Self> {
        let secret = reader.required_string("secret").and_then(|text| {
            RotationSecret::from_base32(&text)
                .map_err(|error| reader.reject("secret", error.to_string()))
                .ok()
        });
        let step_seconds = match reader.optional_positive("stepSeconds") {
            None => (!reader.has("stepSeconds")).then_some(DEFAULT_STEP_SECONDS),
            Some(step) => match u32::try_from(step) {
                Ok(step) if STEP_SECONDS.contains(&step) => Some(step),
                _ => {
                    reader.reject(
                        "stepSeconds",
                        format!(
                            "must be {} to {} seconds",
                            STEP_SECONDS.start(),
                            STEP_SECONDS.end()
                        ),
                    );
                    None
                }
            },
        };
        Some(Self {
            secret: secret?,
            step_seconds: step_seconds?,
        })
    }

    /// The time step `at` falls in.
    fn step_of(&self, at: UnixMillis) -> u64 {
        let step_ms = i64::from(self.step_seconds) * 1000;
        u64::try_from(at.max(0) / step_ms).unwrap_or(0)
    }

    /// The 6-digit code shown at `at`, zero-padded.
    pub fn code_at(&self, at: UnixMillis) -> String {
        format!(
            "{:0width$}",
            self.secret.hotp(self.step_of(at), CODE_DIGITS as u32),
            width = CODE_DIGITS
        )
    }

    /// Whether `code` (six digits) is the code of the step of `scan_time` or of
    /// the [`STEPS_OF_GRACE`] steps either side. The scan time's own step is
    /// tried first: an honest scan costs one HMAC.
    pub fn accepts(&self, code: &str, scan_time: UnixMillis) -> bool {
        let Some(code) = parse_code(code) else {
            return false;
        };
        let step = self.step_of(scan_time);
        let grace = (1..=STEPS_OF_GRACE).flat_map(|d| [step.checked_sub(d), step.checked_add(d)]);
        std::iter::once(Some(step))
            .chain(grace)
            .flatten()
            .any(|step| self.secret.hotp(step, CODE_DIGITS as u32) == code)
    }
}

fn parse_code(code: &str) -> Option<u32> {
    (code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse().ok())
        .flatten()
}

/// The barcode a rotating ticket shows at `at`: `<token>:<code>`.
pub fn barcode(token: &str, rotation: &Rotation, at: UnixMillis) -> String {
    format!("{token}:{}", rotation.code_at(at))
}

/// Splits a scanned `<prefix>:<6 digits>` into the prefix (a rotating ticket's
/// token, if any) and the code; `None` for any other shape.
pub fn split(scanned: &str) -> Option<(&str, &str)> {
    let (prefix, code) = scanned.rsplit_once(':')?;
    (!prefix.is_empty() && parse_code(code).is_some()).then_some((prefix, code))
}

/// The ticket token a scanned token shares with every other scan of its ticket,
/// known without reading the store: the prefix of `<prefix>:<6 digits>`, else
/// the token itself. It is what keeps one ticket's scans together where they
/// are ordered or serialised before the store is read (an offline upload's
/// per-ticket order, the scans topic's partition key).
///
/// Which ticket a scanned token names depends on the store (SPEC §7: a known
/// ticket as it is, else `<prefix>:<6 digits>` of a rotating ticket `prefix`),
/// but every ticket's scans get one key: a rotating ticket's token holds no
/// `:`, so its bare token and each of its barcodes give that token, and any
/// other ticket is only ever scanned as its own token. Two tickets may share a
/// key (a plain `A:123456` beside a rotating `A`); that only serialises scans
/// that could have gone side by side, never splits one ticket's scans.
pub fn ticket_key(scanned: &str) -> &str {
    split(scanned).map_or(scanned, |(prefix, _code)| prefix)
}

/// The code a scan of `ticket_token` carries: `None` when the scanned token is
/// the bare ticket token.
pub fn code_of<'a>(scanned: &'a str, ticket_token: &str) -> Option<&'a str> {
    scanned
        .strip_prefix(ticket_token)
        .and_then(|rest| rest.strip_prefix(':'))
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, either case, optional trailing `=` padding, spaces ignored.
/// `None` for any other character, padding inside the text, or trailing bits
/// that are not zero (a truncated or mistyped secret).
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b' ') {
        let value = match c.to_ascii_uppercase() {
            upper @ b'A'..=b'Z' => upper - b'A',
            digit @ b'2'..=b'7' => digit - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    (buffer == 0).then_some(bytes)
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 31) as usize],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        text.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 6238 appendix B's SHA-1 seed, "12345678901234567890", in base32.
    const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn rfc_rotation(step_seconds: u32) -> Rotation {
        Rotation {
            secret: RotationSecret::from_base32(RFC_SEED).unwrap(),
            step_seconds,
        }
    }

    #[test]
    fn rfc_6238_sha1_test_vectors() {
        // Appendix B: time (s) and the 8-digit TOTP for X = 30 s, T0 = 0.
        let vectors = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000_i64, 65_353_130),
        ];
        let rotation = rfc_rotation(30);
        for (seconds, eight_digits) in vectors {
            let step = rotation.step_of(seconds * 1000);
            assert_eq!(rotation.secret.hotp(step, 8), eight_digits, "T = {seconds}");
            // Six digits are the same dynamic truncation modulo 10^6: the last six.
            let six = format!("{:06}", eight_digits % 1_000_000);
            assert_eq!(rotation.code_at(seconds * 1000), six, "T = {seconds}");
        }
    }

    #[test]
    fn the_step_of_the_scan_and_one_either_side_pass() {
        let rotation = rfc_rotation(15);
        let shown_at = 1_700_000_000_000;
        let code = rotation.code_at(shown_at);
        for offset_s in [-15, -1, 0, 1, 14, 15, 16, 29] {
            let scan_time = shown_at - shown_at % 15_000 + offset_s * 1000;
            assert!(rotation.accepts(&code, scan_time), "{offset_s} s");
        }
        let step_start = shown_at - shown_at % 15_000;
        assert!(!rotation.accepts(&code, step_start + 30_000));
        assert!(!rotation.accepts(&code, step_start - 15_001));
        assert!(!rotation.accepts("12345", shown_at));
        assert!(!rotation.accepts("12345a", shown_at));
    }

    #[test]
    fn base32_round_trips_and_accepts_lower_case_padding_and_spaces() {
        let secret = RotationSecret::from_base32(RFC_SEED).unwrap();
        assert_eq!(secret.as_bytes(), b"12345678901234567890");
        assert_eq!(secret.to_base32(), RFC_SEED);
        let relaxed = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq";
        assert_eq!(RotationSecret::from_base32(relaxed).unwrap(), secret);
        // 17 bytes: 28 characters, padded to 32.
        let padded = format!("{}====", base32_encode(&[7u8; 17]));
        assert_eq!(
            RotationSecret::from_base32(&padded).unwrap().as_bytes(),
            [7u8; 17]
        );
        for bytes in [
            &[0u8][..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
        ] {
            assert_eq!(base32_decode(&base32_encode(bytes)).unwrap(), bytes);
        }
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_them() {
        assert_eq!(
            RotationSecret::from_base32("GEZDGNBVGY3TQOJQ"),
            Err(SecretError::Length),
            "10 bytes"
        );
        assert_eq!(
            RotationSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1"),
            Err(SecretError::NotBase32)
        );
        assert_eq!(
            RotationSecret::from_base32("GE=ZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            Err(SecretError::NotBase32)
        );
        let secret = RotationSecret::from_base32(RFC_SEED).unwrap();
        assert!(!format!("{secret:?}").contains(RFC_SEED));
        assert!(!format!("{:?}", rfc_rotation(15)).contains(RFC_SEED));
    }

    #[test]
    fn inventory_rotation_fields_are_checked() {
        let read = |value: serde_json::Value| {
            let mut reader = FieldReader::new(&value).unwrap();
            let rotation = Rotation::read(&mut reader);
            (rotation, reader.finish().map_err(|e| e.to_string()))
        };
        let (rotation, errors) = read(json!({"secret": RFC_SEED}));
        assert_eq!(errors, Ok(()));
        assert_eq!(rotation.unwrap().step_seconds, DEFAULT_STEP_SECONDS);
        let (_, errors) = read(json!({"secret": "not-base32", "stepSeconds": 61}));
        let errors = errors.unwrap_err();
        assert_eq!(
            errors,
            "secret must be base32 (RFC 4648: letters A-Z and digits 2-7, optional '=' padding); \
             stepSeconds must be 5 to 60 seconds"
        );
        let (_, errors) = read(json!({"stepSeconds": 4}));
        assert!(errors.unwrap_err().starts_with("secret is required"));
    }

    #[test]
    fn a_scanned_token_splits_into_ticket_token_and_code() {
        assert_eq!(split("T1:123456"), Some(("T1", "123456")));
        assert_eq!(split("a:b:000001"), Some(("a:b", "000001")));
        assert_eq!(split("T1:12345"), None);
        assert_eq!(split(":123456"), None);
        assert_eq!(split("T1"), None);
        assert_eq!(ticket_key("T1:123456"), "T1");
        assert_eq!(ticket_key("T1"), "T1");
        assert_eq!(ticket_key("a:b:000001"), "a:b");
        assert_eq!(ticket_key("a:b"), "a:b");
        assert_eq!(code_of("T1:123456", "T1"), Some("123456"));
        assert_eq!(code_of("T1", "T1"), None);
        let rotation = rfc_rotation(15);
        let barcode = barcode("T1", &rotation, 59_000);
        assert_eq!(
            split(&barcode),
            Some(("T1", rotation.code_at(59_000).as_str()))
        );
    }
}
