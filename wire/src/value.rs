//! Conversions between the spec's field types and Avro values.

use apache_avro::types::Value;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::DecodeError;

/// An amount of money in integer minor units (e.g. cents); never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_mul(self, factor: i64) -> Option<Money> {
        self.0.checked_mul(factor).map(Money)
    }
}

/// W3C trace context, carried with every event so one trace spans the whole saga.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Conversion between a Rust value and an Avro value, per field type. `at`
/// names the field in errors.
pub trait AvroValue: Sized {
    fn to_avro(&self) -> Value;
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError>;
}

fn mismatch(at: &'static str, expected: &'static str, found: &Value) -> DecodeError {
    DecodeError::Mismatch { at, expected, found: format!("{found:?}") }
}

impl AvroValue for Uuid {
    fn to_avro(&self) -> Value {
        Value::Uuid(*self)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Uuid(u) => Ok(u),
            Value::String(ref s) => Uuid::parse_str(s).map_err(|_| mismatch(at, "uuid", &value)),
            other => Err(mismatch(at, "uuid", &other)),
        }
    }
}

impl AvroValue for String {
    fn to_avro(&self) -> Value {
        Value::String(self.clone())
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch(at, "string", &other)),
        }
    }
}

impl AvroValue for bool {
    fn to_avro(&self) -> Value {
        Value::Boolean(*self)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(mismatch(at, "boolean", &other)),
        }
    }
}

impl AvroValue for i32 {
    fn to_avro(&self) -> Value {
        Value::Int(*self)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(mismatch(at, "int", &other)),
        }
    }
}

impl AvroValue for i64 {
    fn to_avro(&self) -> Value {
        Value::Long(*self)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Long(i) => Ok(i),
            // Schema resolution may promote an int writer to a long reader.
            Value::Int(i) => Ok(i64::from(i)),
            other => Err(mismatch(at, "long", &other)),
        }
    }
}

impl AvroValue for f64 {
    fn to_avro(&self) -> Value {
        Value::Double(*self)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Double(d) => Ok(d),
            // Schema resolution may promote an int, long or float writer to a double reader.
            Value::Int(i) => Ok(f64::from(i)),
            Value::Float(f) => Ok(f64::from(f)),
            Value::Long(i) => Ok(i as f64),
            other => Err(mismatch(at, "double", &other)),
        }
    }
}

impl AvroValue for Money {
    fn to_avro(&self) -> Value {
        Value::Long(self.0)
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        i64::from_avro(value, at).map(Money)
    }
}

impl AvroValue for DateTime<Utc> {
    fn to_avro(&self) -> Value {
        Value::TimestampMicros(self.timestamp_micros())
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::TimestampMicros(us) | Value::Long(us) => {
                DateTime::from_timestamp_micros(us).ok_or_else(|| mismatch(at, "timestamp in range", &value))
            }
            other => Err(mismatch(at, "timestamp-micros", &other)),
        }
    }
}

impl<T: AvroValue> AvroValue for Vec<T> {
    fn to_avro(&self) -> Value {
        Value::Array(self.iter().map(AvroValue::to_avro).collect())
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Array(items) => items.into_iter().map(|v| T::from_avro(v, at)).collect(),
            other => Err(mismatch(at, "array", &other)),
        }
    }
}

impl<T: AvroValue> AvroValue for Option<T> {
    fn to_avro(&self) -> Value {
        // Optional fields are the union ["null", T].
        match self {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v.to_avro())),
        }
    }
    fn from_avro(value: Value, at: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                v => T::from_avro(v, at).map(Some),
            },
            v => T::from_avro(v, at).map(Some),
        }
    }
}

/// Removes a named field from a decoded record.
pub fn take_field(
    fields: &mut Vec<(String, Value)>,
    record: &'static str,
    field: &'static str,
) -> Result<Value, DecodeError> {
    match fields.iter().position(|(n, _)| n == field) {
        Some(i) => Ok(fields.swap_remove(i).1),
        None => Err(DecodeError::MissingField { record, field }),
    }
}

/// The fields of a decoded record.
pub fn record_fields(value: Value, record: &'static str) -> Result<Vec<(String, Value)>, DecodeError> {
    match value {
        Value::Record(fields) => Ok(fields),
        other => Err(mismatch(record, "record", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_its_avro_value() {
        let id = Uuid::now_v7();
        assert_eq!(Uuid::from_avro(id.to_avro(), "id").ok(), Some(id));
        assert_eq!(Uuid::from_avro(Value::String(id.to_string()), "id").ok(), Some(id));
        assert_eq!(Money::from_avro(Money(-125).to_avro(), "m").ok(), Some(Money(-125)));
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("in range");
        assert_eq!(DateTime::<Utc>::from_avro(at.to_avro(), "at").ok(), Some(at));
        let list = vec![Some(3i64), None];
        assert_eq!(Vec::<Option<i64>>::from_avro(list.to_avro(), "l").ok(), Some(list));
    }

    #[test]
    fn resolution_promotions_are_accepted() {
        assert_eq!(i64::from_avro(Value::Int(7), "n").ok(), Some(7));
        assert_eq!(f64::from_avro(Value::Long(7), "n").ok(), Some(7.0));
        assert_eq!(f64::from_avro(Value::Float(0.5), "n").ok(), Some(0.5));
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let error = i32::from_avro(Value::String("x".into()), "quantity").expect_err("a string is no int");
        assert!(error.to_string().contains("`quantity`"), "{error}");
        let mut fields = vec![("a".to_string(), Value::Null)];
        assert!(matches!(take_field(&mut fields, "R", "b"), Err(DecodeError::MissingField { field: "b", .. })));
        assert!(take_field(&mut fields, "R", "a").is_ok());
    }
}
