//! Reading positional params and result fields, with the leniency documented on each type.

use crate::error::Sv1ParseError;
use crate::hex;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::Value;

type R<T> = Result<T, Sv1ParseError>;

/// The params array; `null` reads as `[]`.
pub(crate) fn array(params: &Value) -> R<&[Value]> {
    match params {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(&[]),
        _ => Err(Sv1ParseError::params("params is not an array")),
    }
}

fn missing(name: &str) -> Sv1ParseError {
    Sv1ParseError::params(format!("missing {name}"))
}

fn wrong(name: &str, what: &str) -> Sv1ParseError {
    Sv1ParseError::params(format!("{name} is not {what}"))
}

/// A required string.
pub(crate) fn string(p: &[Value], i: usize, name: &str) -> R<String> {
    match p.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong(name, "a string")),
        None => Err(missing(name)),
    }
}

/// An optional string: absent or `null` is `None`.
pub(crate) fn opt_string(p: &[Value], i: usize, name: &str) -> R<Option<String>> {
    match p.get(i) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(wrong(name, "a string")),
    }
}

/// An opaque identifier (job id): a string, or an integer number taken as its decimal text.
pub(crate) fn ident(p: &[Value], i: usize, name: &str) -> R<String> {
    match p.get(i) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Some(_) => Err(wrong(name, "a string")),
        None => Err(missing(name)),
    }
}

/// A big-endian `u32` written as 1 to 8 hex digits (a JSON string; numbers are refused).
pub(crate) fn hex_u32(p: &[Value], i: usize, name: &str) -> R<u32> {
    match p.get(i) {
        Some(Value::String(s)) => hex::decode_u32(s).ok_or_else(|| wrong(name, "8 hex digits")),
        Some(_) => Err(wrong(name, "a hex string")),
        None => Err(missing(name)),
    }
}

/// Bytes written as an even number of hex digits.
pub(crate) fn hex_bytes(p: &[Value], i: usize, name: &str) -> R<Vec<u8>> {
    match p.get(i) {
        Some(Value::String(s)) => hex::decode(s).ok_or_else(|| wrong(name, "hex bytes")),
        Some(_) => Err(wrong(name, "a hex string")),
        None => Err(missing(name)),
    }
}

/// A positive finite number (difficulty): a JSON number, or a string holding a decimal number.
pub(crate) fn positive(v: Option<&Value>, name: &str) -> R<f64> {
    let d = match v {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
        None => return Err(missing(name)),
    };
    d.filter(|d| d.is_finite() && *d > 0.0)
        .ok_or_else(|| wrong(name, "a positive number"))
}

/// A non-negative integer: a JSON integer, or a string of decimal digits.
pub(crate) fn uint(v: Option<&Value>, name: &str) -> R<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| wrong(name, "an unsigned integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| wrong(name, "an unsigned integer")),
        Some(_) => Err(wrong(name, "an unsigned integer")),
        None => Err(missing(name)),
    }
}

/// A boolean; also `0`/`1` as numbers.
pub(crate) fn boolean(v: Option<&Value>, name: &str) -> R<bool> {
    match v {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(_) => Err(wrong(name, "a boolean")),
        None => Err(missing(name)),
    }
}

/// Serializes a difficulty: an integral value below 2^53 as a JSON integer (`1638`, as pools
/// write it; some firmware mishandles `1638.0`), anything else as the shortest float text.
#[derive(Clone, Copy)]
pub(crate) struct Difficulty(pub(crate) f64);

impl Serialize for Difficulty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.fract() == 0.0 && d.abs() < 9_007_199_254_740_992.0 {
            if d >= 0.0 {
                s.serialize_u64(d as u64)
            } else {
                s.serialize_i64(d as i64)
            }
        } else {
            s.serialize_f64(d)
        }
    }
}

/// Serializes a one-element params array.
pub(crate) struct One<T>(pub(crate) T);

impl<T: Serialize> Serialize for One<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(1))?;
        q.serialize_element(&self.0)?;
        q.end()
    }
}

/// Serializes `[]`.
pub(crate) struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_seq(Some(0))?.end()
    }
}
