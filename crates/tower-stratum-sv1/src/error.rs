//! Errors: fatal framing errors ([`Sv1CodecError`]), per-line parse errors ([`Sv1ParseError`]),
//! and the Sv1 error object a peer sends or receives ([`Sv1Error`], [`ErrorCode`]).

use crate::id::Id;
use crate::message::Response;
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::{fmt, io};

/// Why the line codec stopped: the byte stream can no longer be split into lines.
///
/// Every decode error is fatal: the codec answers every later `decode` with
/// [`Sv1CodecError::Dead`], and the connection should be closed. (A line that is *framed* but
/// does not parse is not a codec error: the decoder yields it as an `Err(`[`Sv1ParseError`]`)`
/// item and keeps going; see [`Sv1Codec`](crate::Sv1Codec).)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Sv1CodecError {
    /// A received line is longer than the codec's maximum. Detected as soon as more than
    /// `max` bytes without a `\n` are buffered, so the codec never holds more than `max` bytes
    /// of one line (plus what one read appended). Fatal.
    #[error("line longer than the maximum of {max} bytes")]
    LineTooLong {
        /// The maximum line length in bytes (terminator excluded).
        max: usize,
    },
    /// An outbound item cannot be written as one line: a [`RawLine`](crate::RawLine) containing
    /// `\n`. Nothing was written; the codec stays usable.
    #[error("outbound line contains a newline")]
    NewlineInLine,
    /// An I/O error from the underlying transport (`tokio_util::codec` requires
    /// `From<io::Error>`).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The codec already returned a fatal decode error and processes no more bytes.
    #[error("codec is unusable after a previous fatal error")]
    Dead,
}

/// What was wrong with a line that was framed but could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Not JSON (or not UTF-8, or a JSON object with a duplicated key).
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Valid JSON, but not an object (a JSON-RPC batch array, a bare string, ...).
    #[error("not a JSON object")]
    NotAnObject,
    /// The `id` is a boolean, an array or an object.
    #[error("id is not a number, a string or null")]
    InvalidId,
    /// `method` is present but not a string.
    #[error("method is not a string")]
    InvalidMethod,
    /// An object with neither `method` (a request or notification) nor `result`/`error`
    /// (a response).
    #[error("neither a request nor a response")]
    NotAMessage,
    /// A known method whose `params` do not have the documented shape.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// A response `result` that does not have the shape the caller asked for (for example a
    /// `mining.subscribe` result without `extranonce2_size`).
    #[error("invalid result: {0}")]
    InvalidResult(String),
    /// A known method that only the other side sends (a client sending `mining.notify`, a
    /// server sending `mining.submit`).
    #[error("method is not sent in this direction")]
    WrongDirection,
}

/// A line that was framed but could not be parsed into a message.
///
/// Never fatal for the connection by itself: the codec yields it as an item and goes on with
/// the next line. What was recovered before the failure is kept, so a server can answer the
/// request: [`Sv1ParseError::reply`] gives the Sv1 error 20 response when there is a request id
/// to answer.
///
/// # Server mapping
///
/// | what failed | `id` / `method` | suggested server action |
/// |---|---|---|
/// | not JSON, not an object | `None` / `None` | nobody to answer: close (or ignore) |
/// | `id` of a wrong type | `None` / maybe | nobody to answer: close (or ignore) |
/// | a request's params ([`ParseErrorKind::InvalidParams`], [`ParseErrorKind::WrongDirection`]) | `Some` / `Some` | `[20, "Other/Unknown", null]` to that id ([`Sv1ParseError::reply`]) unless the id is `null` |
/// | a malformed response | `Some` / `None` | responses are never answered: ignore or close |
#[derive(Debug, thiserror::Error)]
#[error("{}{}{kind}", method.as_deref().map(|m| format!("{m}: ")).unwrap_or_default(), id.as_ref().map(|i| format!("(id {i}) ")).unwrap_or_default())]
pub struct Sv1ParseError {
    /// The request or response id, if the line was a JSON object with a valid `id` (or none,
    /// which reads as [`Id::Null`]).
    pub id: Option<Id>,
    /// The method name, if the line was a request or notification with a string `method`.
    pub method: Option<String>,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl Sv1ParseError {
    pub(crate) fn new(kind: ParseErrorKind) -> Self {
        Self {
            id: None,
            method: None,
            kind,
        }
    }

    pub(crate) fn params(reason: impl Into<String>) -> Self {
        Self::new(ParseErrorKind::InvalidParams(reason.into()))
    }

    pub(crate) fn result(reason: impl Into<String>) -> Self {
        Self::new(ParseErrorKind::InvalidResult(reason.into()))
    }

    pub(crate) fn at(mut self, id: &Id, method: Option<&str>) -> Self {
        self.id = Some(id.clone());
        self.method = method.map(str::to_owned);
        self
    }

    /// The response a server should send for this line: Sv1 error 20 (`[20, "Other/Unknown",
    /// null]`) to the request's id, echoed verbatim.
    ///
    /// `None` when there is no request to answer: the line was not a JSON object, its id was
    /// unusable, it was a response (responses are never answered), or it was a notification
    /// (`id` `null`). The caller then ignores the line or closes the connection (its policy).
    pub fn reply(&self) -> Option<Response> {
        match (&self.id, &self.method) {
            (Some(id), Some(_)) if !id.is_null() => {
                Some(Response::error(id.clone(), ErrorCode::Other))
            }
            _ => None,
        }
    }
}

/// The Sv1 share/request error codes (slush pool's Stratum document; also
/// `aiostratum_proxy/errors.py`, SRI `sv1_api::SubmitError`), with their canonical messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 20 "Other/Unknown": anything else, including a request that could not be parsed.
    Other,
    /// 21 "Job not found": unknown or stale job id (the share is stale).
    JobNotFound,
    /// 22 "Duplicate share".
    DuplicateShare,
    /// 23 "Low difficulty share": the share's hash does not meet the target of the
    /// difficulty in force.
    LowDifficultyShare,
    /// 24 "Unauthorized worker": `mining.submit` for a worker that was not authorized.
    UnauthorizedWorker,
    /// 25 "Not subscribed": a request that needs `mining.subscribe` first.
    NotSubscribed,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::Other,
        ErrorCode::JobNotFound,
        ErrorCode::DuplicateShare,
        ErrorCode::LowDifficultyShare,
        ErrorCode::UnauthorizedWorker,
        ErrorCode::NotSubscribed,
    ];

    /// The numeric code (20..=25).
    pub const fn code(self) -> i64 {
        match self {
            ErrorCode::Other => 20,
            ErrorCode::JobNotFound => 21,
            ErrorCode::DuplicateShare => 22,
            ErrorCode::LowDifficultyShare => 23,
            ErrorCode::UnauthorizedWorker => 24,
            ErrorCode::NotSubscribed => 25,
        }
    }

    /// The canonical message sent with the code.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::Other => "Other/Unknown",
            ErrorCode::JobNotFound => "Job not found",
            ErrorCode::DuplicateShare => "Duplicate share",
            ErrorCode::LowDifficultyShare => "Low difficulty share",
            ErrorCode::UnauthorizedWorker => "Unauthorized worker",
            ErrorCode::NotSubscribed => "Not subscribed",
        }
    }

    /// The code for a number, `None` outside 20..=25.
    pub const fn from_code(code: i64) -> Option<ErrorCode> {
        Some(match code {
            20 => ErrorCode::Other,
            21 => ErrorCode::JobNotFound,
            22 => ErrorCode::DuplicateShare,
            23 => ErrorCode::LowDifficultyShare,
            24 => ErrorCode::UnauthorizedWorker,
            25 => ErrorCode::NotSubscribed,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.message())
    }
}

/// The `error` member of an Sv1 response.
///
/// Emitted in the canonical Sv1 array form `[code, "message", data]` (`data` is `null` when
/// `None`). Parsed leniently from every form seen in the field:
///
/// - `[code, "message", data]` and `[code, "message"]` (slush, ckpool, NiceHash);
/// - a JSON-RPC 2.0 object `{"code": .., "message": .., "data": ..}`;
/// - a bare string `"Stale"`: code 20 ([`ErrorCode::Other`]) with that message;
/// - `"result": false` with a non-standard `"reject-reason": "..."` member (ckpool): code 20
///   with the reason as message;
/// - anything else non-null (a number, `true`, an object without a code): code 20 with the
///   JSON text as message.
///
/// So a code of 20 may mean "the peer gave no code".
#[derive(Clone, Debug, PartialEq)]
pub struct Sv1Error {
    /// The error code (20..=25 for the Sv1 codes, [`ErrorCode`]; any integer is kept).
    pub code: i64,
    /// The human-readable message.
    pub message: String,
    /// The third array element (the "traceback" in slush's document), if not `null`.
    pub data: Option<Value>,
}

impl Sv1Error {
    /// An error with a code and message, no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The [`ErrorCode`] of [`Sv1Error::code`], if it is one of the six.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }

    /// Reads an `error` member in any of the accepted forms; `None` for `null`.
    pub(crate) fn from_value(v: &Value) -> Option<Sv1Error> {
        let other = ErrorCode::Other.code();
        Some(match v {
            Value::Null => return None,
            Value::Array(a) => {
                let code = a.first().and_then(int_of).unwrap_or(other);
                let message = match a.get(1) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => ErrorCode::from_code(code)
                        .map(|c| c.message().to_owned())
                        .unwrap_or_default(),
                    Some(v) => v.to_string(),
                };
                let data = a.get(2).filter(|d| !d.is_null()).cloned();
                Sv1Error {
                    code,
                    message,
                    data,
                }
            }
            Value::Object(o) => {
                let code = o.get("code").and_then(int_of).unwrap_or(other);
                let message = match o.get("message") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ if o.contains_key("code") => ErrorCode::from_code(code)
                        .map(|c| c.message().to_owned())
                        .unwrap_or_default(),
                    _ => v.to_string(),
                };
                let data = o.get("data").filter(|d| !d.is_null()).cloned();
                Sv1Error {
                    code,
                    message,
                    data,
                }
            }
            Value::String(s) => Sv1Error::new(other, s.clone()),
            v => Sv1Error::new(other, v.to_string()),
        })
    }
}

/// An integer code from a JSON number (integral floats accepted) or a decimal string.
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl From<ErrorCode> for Sv1Error {
    fn from(c: ErrorCode) -> Self {
        Sv1Error::new(c.code(), c.message())
    }
}

impl fmt::Display for Sv1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for Sv1Error {}

impl Serialize for Sv1Error {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.code)?;
        t.serialize_element(&self.message)?;
        t.serialize_element(&self.data)?;
        t.end()
    }
}
