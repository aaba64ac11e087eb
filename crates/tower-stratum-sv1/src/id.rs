//! JSON-RPC request ids, preserved exactly.

use serde::{Serialize, Serializer};
use serde_json::{Number, Value};
use std::fmt;

/// A JSON-RPC request id exactly as the peer wrote it: a number, a string or `null`.
///
/// Sv1 peers use all three: most miners count integers from 0 or 1, the npm `stratum-client`
/// uses the method name as a string id (`"id":"mining.subscribe"`), and notifications carry
/// `null` (or no id at all, which parses as [`Id::Null`]). A reply must echo the request's id
/// verbatim, so this type keeps the JSON value: `Id::from(7)` serializes as `7`,
/// `Id::from("7")` as `"7"`, and the two are different ids. Ids are not unique on the wire
/// (a peer may reuse one); matching replies to requests is the caller's business.
///
/// Numbers keep serde_json's representation (unsigned, signed or float): `32769` and `-1`
/// round-trip exactly; a float id such as `1.5` is kept and echoed as a float (JSON-RPC says
/// ids SHOULD NOT be fractional; an exponent form like `1e3` is echoed as `1000.0`). Booleans,
/// arrays and objects are not ids: the line fails to parse with
/// [`ParseErrorKind::InvalidId`](crate::ParseErrorKind::InvalidId).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Id {
    /// `null`, or no `id` field: a notification, or a reply to an unidentifiable request.
    #[default]
    Null,
    /// A JSON number.
    Number(Number),
    /// A JSON string.
    String(String),
}

impl Id {
    /// The id as a `u64` when it is a non-negative integer number (not a string of digits).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// Whether this is [`Id::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Id::Null)
    }

    /// The id of a JSON value: `null`, a number or a string; `None` for anything else.
    pub fn from_value(v: &Value) -> Option<Id> {
        match v {
            Value::Null => Some(Id::Null),
            Value::Number(n) => Some(Id::Number(n.clone())),
            Value::String(s) => Some(Id::String(s.clone())),
            _ => None,
        }
    }

    /// The id as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Id::Null => Value::Null,
            Id::Number(n) => Value::Number(n.clone()),
            Id::String(s) => Value::String(s.clone()),
        }
    }
}

impl From<u64> for Id {
    fn from(v: u64) -> Self {
        Id::Number(v.into())
    }
}

impl From<u32> for Id {
    fn from(v: u32) -> Self {
        Id::Number(v.into())
    }
}

impl From<i64> for Id {
    fn from(v: i64) -> Self {
        Id::Number(v.into())
    }
}

impl From<&str> for Id {
    fn from(v: &str) -> Self {
        Id::String(v.to_owned())
    }
}

impl From<String> for Id {
    fn from(v: String) -> Self {
        Id::String(v)
    }
}

impl fmt::Display for Id {
    /// The id as JSON: `null`, `7`, `"abc"` (with JSON string escaping).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Null => f.write_str("null"),
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{}", Value::String(s.clone())),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Null => s.serialize_unit(),
            Id::Number(n) => n.serialize(s),
            Id::String(v) => s.serialize_str(v),
        }
    }
}
