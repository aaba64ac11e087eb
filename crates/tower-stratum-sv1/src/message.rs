//! The JSON-RPC layer: one line is a request/notification ([`Request`]) or a [`Response`],
//! before any method-specific typing ([`Sv1Message`]).

use crate::error::{ErrorCode, ParseErrorKind, Sv1Error, Sv1ParseError};
use crate::id::Id;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A request or notification with its params kept as JSON: an Sv1 method this crate has no
/// type for (carried through unchanged, never an error), or any method before typing.
///
/// A notification is a request whose id is [`Id::Null`].
///
/// Wire form (canonical): `{"id":<id>,"method":"<method>","params":<params>}`. Absent or
/// `null` params read as `[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The request id, echoed by the response; [`Id::Null`] for a notification.
    pub id: Id,
    /// The method name, e.g. `"mining.submit"`.
    pub method: String,
    /// The params, normally a JSON array.
    pub params: Value,
}

/// A response to a request.
///
/// Wire form (canonical): `{"id":<id>,"result":<result>,"error":<error>}` with `error` as
/// `null` or `[code, "message", data]` ([`Sv1Error`]). On input every error form in
/// [`Sv1Error`]'s documentation is accepted, a missing `result` reads as `null`, a
/// `"jsonrpc"` member is ignored, and ckpool's `"result":false` with
/// `"reject-reason":"..."` becomes `error` = `[20, "...", null]` (with `result` kept `false`).
///
/// The shape of `result` depends on the request it answers, which only the caller knows (by
/// id): read it with [`Response::bool_result`] (`mining.authorize`, `mining.submit`,
/// `mining.extranonce.subscribe`), [`SubscribeResult::from_result`](crate::SubscribeResult::from_result)
/// or [`ConfigureResult::from_result`](crate::ConfigureResult::from_result).
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The id of the request answered, verbatim.
    pub id: Id,
    /// The result; `null` when the request failed.
    pub result: Value,
    /// The error, if the request failed.
    pub error: Option<Sv1Error>,
}

impl Response {
    /// A successful response: `{"id":id,"result":result,"error":null}`.
    pub fn ok(id: Id, result: impl Into<Value>) -> Self {
        Self {
            id,
            result: result.into(),
            error: None,
        }
    }

    /// A failed response: `{"id":id,"result":null,"error":[code,"message",null]}`. Takes an
    /// [`ErrorCode`] (canonical message) or an [`Sv1Error`].
    pub fn error(id: Id, error: impl Into<Sv1Error>) -> Self {
        Self {
            id,
            result: Value::Null,
            error: Some(error.into()),
        }
    }

    /// The answer to `mining.ping`: `{"id":id,"result":"pong","error":null}`.
    pub fn pong(id: Id) -> Self {
        Self::ok(id, "pong")
    }

    /// The verdict of a boolean request (`mining.authorize`, `mining.submit`,
    /// `mining.extranonce.subscribe`): `Ok(true)` when accepted (`result` is `true` and no
    /// error), `Err(error)` when the peer gave an error (in any accepted form, including a
    /// ckpool `reject-reason`), `Ok(false)` when rejected without a reason (`result` `false`,
    /// `null` or any non-boolean, and no error).
    pub fn bool_result(&self) -> Result<bool, &Sv1Error> {
        match &self.error {
            Some(e) => Err(e),
            None => Ok(self.result == Value::Bool(true)),
        }
    }
}

/// One Sv1 line at the JSON-RPC level, in either direction.
///
/// Use [`ClientMessage`](crate::ClientMessage) / [`ServerMessage`](crate::ServerMessage) for
/// typed messages; this type is for relays, logs and methods this crate does not type.
#[derive(Clone, Debug, PartialEq)]
pub enum Sv1Message {
    /// A request (id not `null`) or notification (id `null`).
    Request(Request),
    /// A response.
    Response(Response),
}

impl Sv1Message {
    /// Parses one line (without its terminator; surrounding whitespace allowed).
    ///
    /// A JSON object with a string `method` is a [`Request`]; one without `method` but with
    /// `result`, `error` or `reject-reason` is a [`Response`]. Unknown members are ignored.
    ///
    /// # Errors
    /// [`Sv1ParseError`] with [`ParseErrorKind::Json`], [`ParseErrorKind::NotAnObject`],
    /// [`ParseErrorKind::InvalidId`], [`ParseErrorKind::InvalidMethod`] or
    /// [`ParseErrorKind::NotAMessage`].
    pub fn parse_line(line: &[u8]) -> Result<Self, Sv1ParseError> {
        let env = Envelope::parse(line)?;
        let id = match Id::from_value(env.id.as_ref().unwrap_or(&Value::Null)) {
            Some(id) => id,
            None => return Err(Sv1ParseError::new(ParseErrorKind::InvalidId)),
        };
        match env.method {
            Some(Value::String(method)) => Ok(Sv1Message::Request(Request {
                id,
                method,
                params: match env.params {
                    None | Some(Value::Null) => Value::Array(Vec::new()),
                    Some(p) => p,
                },
            })),
            Some(Value::Null) | None => {
                if env.result.is_none() && env.error.is_none() && env.reject_reason.is_none() {
                    return Err(Sv1ParseError::new(ParseErrorKind::NotAMessage).at(&id, None));
                }
                let result = env.result.unwrap_or(Value::Null);
                let mut error = env.error.as_ref().and_then(Sv1Error::from_value);
                if error.is_none() && result != Value::Bool(true) {
                    if let Some(reason) = env.reject_reason.filter(|r| !r.is_null()) {
                        let message = match reason {
                            Value::String(s) => s,
                            v => v.to_string(),
                        };
                        error = Some(Sv1Error::new(ErrorCode::Other.code(), message));
                    }
                }
                Ok(Sv1Message::Response(Response { id, result, error }))
            }
            Some(_) => Err(Sv1ParseError::new(ParseErrorKind::InvalidMethod).at(&id, None)),
        }
    }
}

/// The members of a line's JSON object that matter; others (`jsonrpc`, ...) are skipped.
/// `Some(Value::Null)` = present and `null`; `None` = absent.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
    #[serde(default, rename = "reject-reason", deserialize_with = "present")]
    reject_reason: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Envelope {
    fn parse(line: &[u8]) -> Result<Envelope, Sv1ParseError> {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        // A derived struct also deserializes from a JSON array (positionally): only objects
        // are messages.
        match line.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            _ => {
                return Err(Sv1ParseError::new(
                    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                        Ok(_) => ParseErrorKind::NotAnObject,
                        Err(e) => ParseErrorKind::Json(e),
                    },
                ))
            }
        }
        serde_json::from_slice(line).map_err(|e| Sv1ParseError::new(ParseErrorKind::Json(e)))
    }
}

/// A request/notification on the wire: `{"id":..,"method":..,"params":..}`.
pub(crate) struct WireRequest<'a, P: Serialize + ?Sized> {
    pub(crate) id: &'a Id,
    pub(crate) method: &'a str,
    pub(crate) params: &'a P,
}

impl<P: Serialize + ?Sized> Serialize for WireRequest<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("method", self.method)?;
        m.serialize_entry("params", self.params)?;
        m.end()
    }
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRequest {
            id: &self.id,
            method: &self.method,
            params: &self.params,
        }
        .serialize(s)
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("result", &self.result)?;
        m.serialize_entry("error", &self.error)?;
        m.end()
    }
}

impl Serialize for Sv1Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Sv1Message::Request(r) => r.serialize(s),
            Sv1Message::Response(r) => r.serialize(s),
        }
    }
}
