//! What a server (pool) sends and a client receives: [`ServerMessage`], and the typed results
//! of client requests ([`SubscribeResult`], [`ConfigureResult`]).

use crate::error::{ParseErrorKind, Sv1ParseError};
use crate::hex::{self, Hex, HexU32};
use crate::id::Id;
use crate::message::{Request, Response, Sv1Message, WireRequest};
use crate::method;
use crate::params::{self, Difficulty, Empty, One};
use crate::work::PrevHash;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// `mining.notify`: a job.
///
/// Params: `[job_id, prevhash, coinb1, coinb2, [merkle_branch...], version, nbits, ntime,
/// clean_jobs]`. Lenient input: more than 9 params are accepted and `clean_jobs` is then the
/// **last** one (some pools insert a field before it); `clean_jobs` may be `0`/`1`; hex in
/// either case; a numeric job id is kept as its decimal text.
///
/// Byte orders: `prev_hash` is stored in header order ([`PrevHash`] converts from the
/// word-swapped Stratum text); `coinb1`/`coinb2` are raw transaction bytes; each merkle branch
/// node is 32 bytes in internal (hash) order, written on the wire as-is; `version`, `nbits`,
/// `ntime` are `u32`s written as 8 big-endian hex digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// The job id, echoed by `mining.submit` (opaque; not necessarily hex).
    pub job_id: String,
    /// The previous block hash.
    pub prev_hash: PrevHash,
    /// Coinbase transaction bytes before extranonce1 (non-witness serialization).
    pub coinb1: Vec<u8>,
    /// Coinbase transaction bytes after extranonce2.
    pub coinb2: Vec<u8>,
    /// The merkle path from the coinbase to the root, deepest first, internal byte order.
    pub merkle_branch: Vec<[u8; 32]>,
    /// The block version (before version rolling).
    pub version: u32,
    /// The compact network target (`nBits`).
    pub nbits: u32,
    /// The job's `nTime` (seconds since the Unix epoch).
    pub ntime: u32,
    /// Whether the miner must drop earlier jobs (their shares are stale).
    pub clean_jobs: bool,
}

impl Notify {
    /// Reads the params of `mining.notify`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] with fewer than 9 params or a malformed field.
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        if p.len() < 9 {
            return Err(Sv1ParseError::params(format!(
                "mining.notify needs 9 params, got {}",
                p.len()
            )));
        }
        let prev_hash = PrevHash::from_stratum_hex(&params::string(p, 1, "prevhash")?)
            .ok_or_else(|| Sv1ParseError::params("prevhash is not 64 hex digits"))?;
        let merkle_branch = match &p[4] {
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().and_then(hex::decode_32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Sv1ParseError::params("merkle branch node is not 64 hex digits"))?,
            _ => return Err(Sv1ParseError::params("merkle branch is not an array")),
        };
        Ok(Self {
            job_id: params::ident(p, 0, "job id")?,
            prev_hash,
            coinb1: params::hex_bytes(p, 2, "coinb1")?,
            coinb2: params::hex_bytes(p, 3, "coinb2")?,
            merkle_branch,
            version: params::hex_u32(p, 5, "version")?,
            nbits: params::hex_u32(p, 6, "nbits")?,
            ntime: params::hex_u32(p, 7, "ntime")?,
            clean_jobs: params::boolean(p.last(), "clean_jobs")?,
        })
    }
}

struct Branches<'a>(&'a [[u8; 32]]);

impl Serialize for Branches<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0 {
            q.serialize_element(&Hex(b))?;
        }
        q.end()
    }
}

impl Serialize for Notify {
    /// The 9 canonical params, lower-case hex.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(9))?;
        q.serialize_element(&self.job_id)?;
        q.serialize_element(&self.prev_hash)?;
        q.serialize_element(&Hex(&self.coinb1))?;
        q.serialize_element(&Hex(&self.coinb2))?;
        q.serialize_element(&Branches(&self.merkle_branch))?;
        q.serialize_element(&HexU32(self.version))?;
        q.serialize_element(&HexU32(self.nbits))?;
        q.serialize_element(&HexU32(self.ntime))?;
        q.serialize_element(&self.clean_jobs)?;
        q.end()
    }
}

/// `mining.set_extranonce(extranonce1, extranonce2_size)` (NiceHash extension): new
/// extranonce1 for jobs from the next `mining.notify` on. Only for miners that sent
/// `mining.extranonce.subscribe` (or `subscribe-extranonce` in `mining.configure`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetExtranonce {
    /// The new extranonce1 (hex on the wire, even number of digits).
    pub extranonce1: Vec<u8>,
    /// The new extranonce2 size in bytes.
    pub extranonce2_size: usize,
}

impl SetExtranonce {
    /// Reads the params of `mining.set_extranonce`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] unless `[hex string, unsigned integer]`.
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        Ok(Self {
            extranonce1: params::hex_bytes(p, 0, "extranonce1")?,
            extranonce2_size: usize_of(params::uint(p.get(1), "extranonce2_size")?)?,
        })
    }
}

fn usize_of(v: u64) -> Result<usize, Sv1ParseError> {
    usize::try_from(v).map_err(|_| Sv1ParseError::params("extranonce2_size too large"))
}

impl Serialize for SetExtranonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(2))?;
        q.serialize_element(&Hex(&self.extranonce1))?;
        q.serialize_element(&self.extranonce2_size)?;
        q.end()
    }
}

/// `client.reconnect(host, port, wait_secs)`: reconnect, to another host/port if given, after
/// `wait_secs` seconds if given. `[]` means the same host and port at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconnect {
    /// The host to connect to; `None`: the current one.
    pub host: Option<String>,
    /// The TCP port; `None`: the current one. A JSON number or a decimal string on input.
    pub port: Option<u16>,
    /// Seconds to wait before reconnecting.
    pub wait_secs: Option<u64>,
}

impl Reconnect {
    /// Reads the params of `client.reconnect`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] when the host is not a string or `null`, or the port
    /// or wait time is not an unsigned integer in range (or `null`).
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        let opt_uint = |i: usize, name: &str| match p.get(i) {
            None | Some(Value::Null) => Ok(None),
            v => params::uint(v, name).map(Some),
        };
        let port = opt_uint(1, "port")?
            .map(|v| u16::try_from(v).map_err(|_| Sv1ParseError::params("port out of range")))
            .transpose()?;
        Ok(Self {
            host: params::opt_string(p, 0, "host")?,
            port,
            wait_secs: opt_uint(2, "wait time")?,
        })
    }
}

impl Serialize for Reconnect {
    /// `[]`, `[host, port]` or `[host, port, wait]` (unknown leading fields as `null`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = if self.wait_secs.is_some() {
            3
        } else if self.port.is_some() || self.host.is_some() {
            2
        } else {
            0
        };
        let mut q = s.serialize_seq(Some(n))?;
        if n >= 2 {
            q.serialize_element(&self.host)?;
            q.serialize_element(&self.port)?;
        }
        if n == 3 {
            q.serialize_element(&self.wait_secs)?;
        }
        q.end()
    }
}

/// The result of `mining.subscribe`: `[[[method, subscription_id]...], extranonce1,
/// extranonce2_size]`.
///
/// Lenient input: the non-standard flat form `[[method, subscription_id], extranonce1,
/// extranonce2_size]` (seen from some pools), a `null` subscription list, subscription ids that
/// are numbers, and subscription entries of other shapes (skipped). `extranonce2_size` is
/// required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeResult {
    /// `(method, subscription id)` pairs, e.g. `("mining.notify", "ae6812eb4cd7735a")`. Ids are
    /// opaque (f2pool uses the method names).
    pub subscriptions: Vec<(String, String)>,
    /// The connection's extranonce1 (hex on the wire), placed after `coinb1`.
    pub extranonce1: Vec<u8>,
    /// The number of extranonce2 bytes the miner rolls.
    pub extranonce2_size: usize,
}

impl SubscribeResult {
    /// Reads a `mining.subscribe` response's `result`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidResult`] when it is not an array of at least 3 elements (for
    /// example without `extranonce2_size`), extranonce1 is not hex, or the size is not an
    /// unsigned integer.
    pub fn from_result(result: &Value) -> Result<Self, Sv1ParseError> {
        let a = match result {
            Value::Array(a) => a,
            _ => return Err(Sv1ParseError::result("subscribe result is not an array")),
        };
        if a.len() < 3 {
            return Err(Sv1ParseError::result(
                "subscribe result needs [subscriptions, extranonce1, extranonce2_size]",
            ));
        }
        fn text(v: &Value) -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        fn pair(v: &Value) -> Option<(String, String)> {
            match v.as_array()?.as_slice() {
                [m, id, ..] => Some((text(m)?, text(id)?)),
                _ => None,
            }
        }
        let subscriptions = match &a[0] {
            Value::Array(list) if list.first().is_some_and(Value::is_string) => {
                pair(&a[0]).into_iter().collect()
            }
            Value::Array(list) => list.iter().filter_map(pair).collect(),
            _ => Vec::new(),
        };
        let extranonce1 = a[1]
            .as_str()
            .and_then(hex::decode)
            .ok_or_else(|| Sv1ParseError::result("extranonce1 is not hex"))?;
        let extranonce2_size = params::uint(Some(&a[2]), "extranonce2_size")
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| Sv1ParseError::result("extranonce2_size is not an unsigned integer"))?;
        Ok(Self {
            subscriptions,
            extranonce1,
            extranonce2_size,
        })
    }

    /// The canonical `result` value.
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::Array(
                self.subscriptions
                    .iter()
                    .map(|(m, id)| Value::Array(vec![m.clone().into(), id.clone().into()]))
                    .collect(),
            ),
            Value::String(hex::encode(&self.extranonce1)),
            Value::from(self.extranonce2_size),
        ])
    }
}

/// A BIP310 per-extension answer in a `mining.configure` result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionResult {
    /// `true`: the extension is enabled.
    Accepted,
    /// `false`: not enabled.
    Rejected,
    /// A string: not enabled, with the server's reason.
    Error(String),
}

impl ExtensionResult {
    fn from_value(v: &Value) -> Self {
        match v {
            Value::Bool(true) => ExtensionResult::Accepted,
            Value::Bool(false) | Value::Null => ExtensionResult::Rejected,
            Value::String(s) => ExtensionResult::Error(s.clone()),
            v => ExtensionResult::Error(v.to_string()),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            ExtensionResult::Accepted => Value::Bool(true),
            ExtensionResult::Rejected => Value::Bool(false),
            ExtensionResult::Error(s) => Value::String(s.clone()),
        }
    }
}

/// The result of `mining.configure` (BIP310): one entry per extension the server answers.
///
/// Wire form: `{"version-rolling":true,"version-rolling.mask":"1fffe000",
/// "minimum-difficulty":false,...}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigureResult {
    /// `version-rolling`.
    pub version_rolling: Option<ExtensionResult>,
    /// `version-rolling.mask`: the granted mask (hex on the wire).
    pub version_rolling_mask: Option<u32>,
    /// `version-rolling.min-bit-count`, if the server echoes it.
    pub version_rolling_min_bit_count: Option<u32>,
    /// `minimum-difficulty`.
    pub minimum_difficulty: Option<ExtensionResult>,
    /// `subscribe-extranonce`.
    pub subscribe_extranonce: Option<ExtensionResult>,
    /// `info`.
    pub info: Option<ExtensionResult>,
    /// Every other member, by name.
    pub other: Map<String, Value>,
}

impl ConfigureResult {
    /// Reads a `mining.configure` response's `result`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidResult`] when it is not an object or the mask is not a hex
    /// `u32`.
    pub fn from_result(result: &Value) -> Result<Self, Sv1ParseError> {
        let m = result
            .as_object()
            .ok_or_else(|| Sv1ParseError::result("configure result is not an object"))?;
        let ext = |k: &str| m.get(k).map(ExtensionResult::from_value);
        let version_rolling_mask = match m.get("version-rolling.mask") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                hex::decode_u32(s)
                    .ok_or_else(|| Sv1ParseError::result("version-rolling.mask is not hex"))?,
            ),
            Some(_) => {
                return Err(Sv1ParseError::result(
                    "version-rolling.mask is not a string",
                ))
            }
        };
        let version_rolling_min_bit_count = m
            .get("version-rolling.min-bit-count")
            .and_then(|v| params::uint(Some(v), "min-bit-count").ok())
            .and_then(|v| u32::try_from(v).ok());
        let known = [
            "version-rolling",
            "version-rolling.mask",
            "version-rolling.min-bit-count",
            "minimum-difficulty",
            "subscribe-extranonce",
            "info",
        ];
        Ok(Self {
            version_rolling: ext("version-rolling"),
            version_rolling_mask,
            version_rolling_min_bit_count,
            minimum_difficulty: ext("minimum-difficulty"),
            subscribe_extranonce: ext("subscribe-extranonce"),
            info: ext("info"),
            other: m
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The granted version-rolling mask: `Some(mask)` when `version-rolling` is `true` and a
    /// mask is given; `None` otherwise (not requested, refused, or no mask).
    pub fn granted_version_rolling_mask(&self) -> Option<u32> {
        match self.version_rolling {
            Some(ExtensionResult::Accepted) => self.version_rolling_mask,
            _ => None,
        }
    }

    /// The canonical `result` value.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(v) = &self.version_rolling {
            m.insert("version-rolling".into(), v.to_value());
        }
        if let Some(mask) = self.version_rolling_mask {
            m.insert(
                "version-rolling.mask".into(),
                hex::encode(&mask.to_be_bytes()).into(),
            );
        }
        if let Some(bits) = self.version_rolling_min_bit_count {
            m.insert("version-rolling.min-bit-count".into(), bits.into());
        }
        if let Some(v) = &self.minimum_difficulty {
            m.insert("minimum-difficulty".into(), v.to_value());
        }
        if let Some(v) = &self.subscribe_extranonce {
            m.insert("subscribe-extranonce".into(), v.to_value());
        }
        if let Some(v) = &self.info {
            m.insert("info".into(), v.to_value());
        }
        for (k, v) in &self.other {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A line a server sends and a client receives, typed by method.
///
/// Notifications (`mining.notify` ... `client.show_message`) are emitted with `"id":null`;
/// on input their id is ignored (ESP-Miner's tests show pools sending `"id":1` on
/// `mining.set_version_mask`). `client.get_version` and `mining.ping` are requests the client
/// must answer with the same id. Methods this crate does not type are carried through as
/// [`ServerMessage::Unknown`]; client-to-server methods fail with
/// [`ParseErrorKind::WrongDirection`].
///
/// Exhaustive on purpose: a dispatcher that matches every variant stops compiling when a
/// method is added.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// `mining.notify`.
    Notify(Notify),
    /// `mining.set_difficulty(difficulty)`: the share difficulty for the next jobs (a positive
    /// number relative to [`DIFF1_TARGET`](crate::work::DIFF1_TARGET), integer or fractional).
    SetDifficulty(f64),
    /// `mining.set_extranonce`.
    SetExtranonce(SetExtranonce),
    /// `mining.set_version_mask(mask)`: a new version-rolling mask (8 hex digits).
    SetVersionMask(u32),
    /// `client.reconnect`.
    Reconnect(Reconnect),
    /// `client.show_message(text)`: a human-readable message for the operator.
    ShowMessage(String),
    /// `client.get_version()`: answer with `Response::ok(id, "agent/version")`.
    GetVersion(Id),
    /// `mining.ping()` (non-standard keepalive): answer with [`Response::pong`].
    Ping(Id),
    /// Any other method, with its params as JSON.
    Unknown(Request),
    /// A response to a client request.
    Response(Response),
}

impl ServerMessage {
    /// Parses one line (no terminator) sent by a server.
    ///
    /// # Errors
    /// Everything [`Sv1Message::parse_line`] returns, plus [`ParseErrorKind::InvalidParams`]
    /// and [`ParseErrorKind::WrongDirection`] (with the id and method).
    pub fn parse_line(line: &[u8]) -> Result<Self, Sv1ParseError> {
        Self::from_message(Sv1Message::parse_line(line)?)
    }

    /// Types an already parsed JSON-RPC message.
    ///
    /// # Errors
    /// As [`ServerMessage::parse_line`], after the JSON-RPC level.
    pub fn from_message(msg: Sv1Message) -> Result<Self, Sv1ParseError> {
        let r = match msg {
            Sv1Message::Response(r) => return Ok(ServerMessage::Response(r)),
            Sv1Message::Request(r) => r,
        };
        let m = r.method.as_str();
        if !method::SERVER_TO_CLIENT.contains(&m) && !method::CLIENT_TO_SERVER.contains(&m) {
            return Ok(ServerMessage::Unknown(r));
        }
        let typed = (|| -> Result<Self, Sv1ParseError> {
            Ok(match m {
                method::NOTIFY => ServerMessage::Notify(Notify::from_params(&r.params)?),
                method::SET_DIFFICULTY => ServerMessage::SetDifficulty(params::positive(
                    params::array(&r.params)?.first(),
                    "difficulty",
                )?),
                method::SET_EXTRANONCE => {
                    ServerMessage::SetExtranonce(SetExtranonce::from_params(&r.params)?)
                }
                method::SET_VERSION_MASK => ServerMessage::SetVersionMask(params::hex_u32(
                    params::array(&r.params)?,
                    0,
                    "version mask",
                )?),
                method::RECONNECT => ServerMessage::Reconnect(Reconnect::from_params(&r.params)?),
                method::SHOW_MESSAGE => ServerMessage::ShowMessage(params::string(
                    params::array(&r.params)?,
                    0,
                    "message",
                )?),
                method::GET_VERSION => ServerMessage::GetVersion(r.id.clone()),
                method::PING => ServerMessage::Ping(r.id.clone()),
                _ => return Err(Sv1ParseError::new(ParseErrorKind::WrongDirection)),
            })
        })();
        typed.map_err(|e| e.at(&r.id, Some(&r.method)))
    }

    /// The id: the request's or response's, [`Id::Null`] for a notification.
    pub fn id(&self) -> &Id {
        const NULL: &Id = &Id::Null;
        match self {
            ServerMessage::GetVersion(id) | ServerMessage::Ping(id) => id,
            ServerMessage::Unknown(r) => &r.id,
            ServerMessage::Response(r) => &r.id,
            _ => NULL,
        }
    }

    /// The method name; `None` for a response. For tracing spans.
    pub fn method(&self) -> Option<&str> {
        Some(match self {
            ServerMessage::Notify(_) => method::NOTIFY,
            ServerMessage::SetDifficulty(_) => method::SET_DIFFICULTY,
            ServerMessage::SetExtranonce(_) => method::SET_EXTRANONCE,
            ServerMessage::SetVersionMask(_) => method::SET_VERSION_MASK,
            ServerMessage::Reconnect(_) => method::RECONNECT,
            ServerMessage::ShowMessage(_) => method::SHOW_MESSAGE,
            ServerMessage::GetVersion(_) => method::GET_VERSION,
            ServerMessage::Ping(_) => method::PING,
            ServerMessage::Unknown(r) => &r.method,
            ServerMessage::Response(_) => return None,
        })
    }

    /// The canonical JSON text, without the `\n` terminator.
    pub fn to_json(&self) -> String {
        crate::codec::to_json(self)
    }
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn req<S: Serializer, P: Serialize>(
            s: S,
            id: &Id,
            m: &str,
            p: &P,
        ) -> Result<S::Ok, S::Error> {
            WireRequest {
                id,
                method: m,
                params: p,
            }
            .serialize(s)
        }
        let null = &Id::Null;
        match self {
            ServerMessage::Notify(n) => req(s, null, method::NOTIFY, n),
            ServerMessage::SetDifficulty(d) => {
                req(s, null, method::SET_DIFFICULTY, &One(Difficulty(*d)))
            }
            ServerMessage::SetExtranonce(e) => req(s, null, method::SET_EXTRANONCE, e),
            ServerMessage::SetVersionMask(m) => {
                req(s, null, method::SET_VERSION_MASK, &One(HexU32(*m)))
            }
            ServerMessage::Reconnect(r) => req(s, null, method::RECONNECT, r),
            ServerMessage::ShowMessage(t) => req(s, null, method::SHOW_MESSAGE, &One(t)),
            ServerMessage::GetVersion(id) => req(s, id, method::GET_VERSION, &Empty),
            ServerMessage::Ping(id) => req(s, id, method::PING, &Empty),
            ServerMessage::Unknown(r) => r.serialize(s),
            ServerMessage::Response(r) => r.serialize(s),
        }
    }
}

impl From<Response> for ServerMessage {
    fn from(r: Response) -> Self {
        ServerMessage::Response(r)
    }
}

impl From<Notify> for ServerMessage {
    fn from(n: Notify) -> Self {
        ServerMessage::Notify(n)
    }
}
