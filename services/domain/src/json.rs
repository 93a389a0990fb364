//! Reading JSON text from outside: a key given twice in one object is refused
//! rather than silently decided by its last value (which of the two the sender
//! meant cannot be known), and a byte-order mark opening a body is not JSON.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// The UTF-8 encoding of U+FEFF, which editors on Windows put at the start of a
/// file.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a byte-order mark opening them.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes)
}

/// Parses JSON text whose objects, at any depth, name each key once. The error
/// of a repeated key is a data error (`serde_json::error::Category::Data`)
/// saying `key <name> appears more than once`, with its line and column.
pub fn parse_unique_keys(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes).map(|parsed| parsed.0)
}

/// A JSON value read with [`ValueWithUniqueKeys`].
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ValueWithUniqueKeys)
            .map(UniqueKeys)
    }
}

/// Builds a [`Value`] as serde_json's own visitor does, except for repeated keys.
struct ValueWithUniqueKeys;

impl<'de> Visitor<'de> for ValueWithUniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON text holds no NaN or infinity, so this is always a number.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(items.size_hint().unwrap_or(0).min(64));
        while let Some(UniqueKeys(value)) = items.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "key {} appears more than once",
                    crate::inventory::echo(&key)
                )));
            }
            let UniqueKeys(value) = entries.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::error::Category;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#;
        assert_eq!(
            parse_unique_keys(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn a_repeated_key_is_a_data_error_naming_it_at_any_depth() {
        for (text, key) in [
            (r#"{"token":"a","token":"b"}"#, "token"),
            (r#"{"outer":{"gateId":1,"gateId":2}}"#, "gateId"),
            (r#"[{"x":1},{"y":1,"y":1}]"#, "y"),
        ] {
            let error = parse_unique_keys(text.as_bytes()).unwrap_err();
            assert_eq!(error.classify(), Category::Data, "{text}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("key {key} appears more than once at line 1")),
                "{error}"
            );
        }
        assert!(parse_unique_keys(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn only_an_opening_byte_order_mark_is_stripped() {
        assert_eq!(strip_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(strip_bom(b" \xEF\xBB\xBF{}"), b" \xEF\xBB\xBF{}");
    }
}
