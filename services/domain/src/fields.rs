//! Reading fields out of untrusted JSON objects, naming the field when it is wrong.
//!
//! Scanner apps send integers as JSON numbers or as strings of digits (the seed's own
//! example sends `"gateId": "1"`), so both are accepted wherever the SPEC says int.

use serde_json::{Map, Value};
use std::fmt;

/// Longest free-text field a scan or a device/init accepts (gate and device
/// names, serials, models, channel ids), in characters. Each is stored with the
/// device or carried with every decision, so the 64 KiB body limit alone would
/// let one request store 64 KiB; real labels fit in a few dozen characters.
pub const MAX_TEXT_CHARS: usize = 128;

/// One field that is missing or invalid, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

/// Every problem found in one request, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn single(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, problem)])
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn into_errors(self) -> Vec<FieldError> {
        self.0
    }

    /// The errors collected, if there are any.
    pub fn from_errors(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self(errors))
        }
    }

    /// Names of the offending fields, for responses and metrics.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// Collects field errors while a request is read, so one response names all of them.
#[derive(Debug)]
pub struct FieldReader<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> FieldReader<'a> {
    /// Starts reading `value`, which must be a JSON object.
    pub fn new(value: &'a Value) -> Result<Self, FieldErrors> {
        match value {
            Value::Object(object) => Ok(Self {
                object,
                errors: Vec::new(),
            }),
            _ => Err(FieldErrors::single("body", "must be a JSON object")),
        }
    }

    fn present(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|v| !v.is_null())
    }

    pub fn has(&self, field: &str) -> bool {
        self.present(field).is_some()
    }

    pub fn reject(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(FieldError::new(field, problem));
    }

    /// A required string that is not blank.
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        match self.optional_string(field) {
            Some(s) if s.trim().is_empty() => {
                self.reject(field, "must not be empty");
                None
            }
            Some(s) => Some(s),
            None if !self.has(field) => {
                self.reject(field, "is required");
                None
            }
            None => None,
        }
    }

    /// A required, non-blank free-text field of at most [`MAX_TEXT_CHARS`].
    pub fn required_text(&mut self, field: &str) -> Option<String> {
        let text = self.required_string(field)?;
        self.at_most_max_text(field, text)
    }

    /// An optional free-text field of at most [`MAX_TEXT_CHARS`].
    pub fn optional_text(&mut self, field: &str) -> Option<String> {
        let text = self.optional_string(field)?;
        self.at_most_max_text(field, text)
    }

    fn at_most_max_text(&mut self, field: &str, text: String) -> Option<String> {
        if text.chars().count() > MAX_TEXT_CHARS {
            self.reject(
                field,
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            );
            return None;
        }
        Some(text)
    }

    /// An optional string; absent and `null` are `None`.
    pub fn optional_string(&mut self, field: &str) -> Option<String> {
        match self.present(field)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.reject(field, "must be a string");
                None
            }
        }
    }

    /// A required positive integer (JSON integer or string of digits).
    pub fn required_positive(&mut self, field: &str) -> Option<u64> {
        if !self.has(field) {
            self.reject(field, "is required");
            return None;
        }
        self.optional_positive(field)
    }

    /// An optional positive integer (JSON integer or string of digits).
    pub fn optional_positive(&mut self, field: &str) -> Option<u64> {
        let value = self.present(field)?;
        match integer(value) {
            Some(n) if n > 0 => u64::try_from(n).ok(),
            Some(_) => {
                self.reject(field, "must be greater than 0");
                None
            }
            None => {
                self.reject(field, "must be an integer or a string of digits");
                None
            }
        }
    }

    /// An optional Unix-millisecond time (JSON integer or string of digits, ≥ 0).
    pub fn optional_millis(&mut self, field: &str) -> Option<i64> {
        let value = self.present(field)?;
        match integer(value) {
            Some(n) if n >= 0 => Some(n),
            Some(_) => {
                self.reject(field, "must not be negative");
                None
            }
            None => {
                self.reject(field, "must be an integer (Unix milliseconds)");
                None
            }
        }
    }

    /// A required Unix-millisecond time.
    pub fn required_millis(&mut self, field: &str) -> Option<i64> {
        if !self.has(field) {
            self.reject(field, "is required");
            return None;
        }
        self.optional_millis(field)
    }

    /// An optional boolean; absent and `null` are `None`.
    pub fn optional_bool(&mut self, field: &str) -> Option<bool> {
        match self.present(field)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.reject(field, "must be true or false");
                None
            }
        }
    }

    /// An optional list of non-empty strings; absent and `null` are empty.
    pub fn string_list(&mut self, field: &str) -> Vec<String> {
        let Some(value) = self.present(field) else {
            return Vec::new();
        };
        let items = match value {
            Value::Array(items) => items,
            _ => {
                self.reject(field, "must be a list of strings");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                _ => {
                    self.reject(field, "must contain only non-empty strings");
                    return Vec::new();
                }
            }
        }
        out
    }

    /// An optional JSON object, read by `read` with a reader of its own; its
    /// problems are named `field.inner` (e.g. `rotation.secret`). Absent and
    /// `null` are `None`.
    pub fn optional_object<T>(
        &mut self,
        field: &str,
        read: impl FnOnce(&mut FieldReader<'a>) -> Option<T>,
    ) -> Option<T> {
        let value = self.present(field)?;
        let Ok(mut inner) = FieldReader::new(value) else {
            self.reject(field, "must be a JSON object");
            return None;
        };
        let read = read(&mut inner);
        for error in inner.errors {
            self.errors.push(FieldError::new(
                format!("{field}.{}", error.field),
                error.problem,
            ));
        }
        read
    }

    /// Ends reading: every collected error, or none.
    pub fn finish(self) -> Result<(), FieldErrors> {
        FieldErrors::from_errors(self.errors)
    }
}

/// Largest whole number an `f64` holds exactly (2^53). JSON Schema counts `224.0`
/// and `2.24e2` as integers, and so do clients that keep numbers as floats; past
/// this bound such a number may no longer be the one that was written.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// A JSON integer (also written as a whole float), or a string of ASCII digits,
/// that fits in an `i64`.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT)
                .map(|f| f as i64)
        }),
        Value::String(s)
            if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_come_as_numbers_or_digit_strings() {
        assert_eq!(integer(&json!(224)), Some(224));
        assert_eq!(integer(&json!("224")), Some(224));
        assert_eq!(integer(&json!("22a")), None);
        assert_eq!(integer(&json!("-1")), None);
        assert_eq!(integer(&json!(" 1")), None);
        assert_eq!(integer(&json!(1.5)), None);
        assert_eq!(integer(&json!(224.0)), Some(224));
        assert_eq!(integer(&serde_json::from_str("2.24e2").unwrap()), Some(224));
        assert_eq!(integer(&json!(1e300)), None);
        assert_eq!(integer(&json!("99999999999999999999")), None);
        assert_eq!(integer(&json!(true)), None);
    }

    #[test]
    fn reader_collects_every_problem() {
        let body = json!({"a": 1, "b": "", "c": 0});
        let mut reader = FieldReader::new(&body).unwrap();
        assert_eq!(reader.required_string("a"), None);
        assert_eq!(reader.required_string("b"), None);
        assert_eq!(reader.required_positive("c"), None);
        assert_eq!(reader.required_positive("d"), None);
        let errors = reader.finish().err().map(|e| e.to_string());
        assert_eq!(
            errors.as_deref(),
            Some(
                "a must be a string; b must not be empty; c must be greater than 0; d is required"
            )
        );
    }

    #[test]
    fn text_fields_are_bounded_in_characters() {
        let longest = "é".repeat(MAX_TEXT_CHARS);
        let body = json!({"a": longest, "b": format!("{longest}x"), "c": format!("{longest}x")});
        let mut reader = FieldReader::new(&body).unwrap();
        assert_eq!(reader.required_text("a"), Some(longest));
        assert_eq!(reader.required_text("b"), None);
        assert_eq!(reader.optional_text("c"), None);
        assert_eq!(reader.optional_text("d"), None);
        let errors = reader.finish().err().map(|e| e.to_string());
        assert_eq!(
            errors.as_deref(),
            Some("b must be at most 128 characters; c must be at most 128 characters")
        );
    }

    #[test]
    fn non_objects_are_rejected_as_body() {
        let error = FieldReader::new(&json!([1])).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("body must be a JSON object"));
    }
}
