//! What a client (miner) sends and a server receives: [`ClientMessage`].

use crate::error::{ParseErrorKind, Sv1ParseError};
use crate::hex::{self, Hex, HexU32};
use crate::id::Id;
use crate::message::{Request, Response, Sv1Message, WireRequest};
use crate::method;
use crate::params::{self, Difficulty, Empty, One};
use crate::Target;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// `mining.subscribe(user_agent, session_id)`: the first request of a miner.
///
/// Params: `[]`, `[user_agent]`, `[user_agent, session_id]`; either may be `null`, and further
/// params (bOS+ sends `[agent, null, host, port]`) are ignored. The reply is a
/// [`SubscribeResult`](crate::SubscribeResult).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// The miner's software/version, e.g. `"bitaxe/BM1366/v2.2"`.
    pub user_agent: Option<String>,
    /// The second param: the extranonce1 (hex) or opaque session id of a previous session the
    /// miner wants to resume. A server MAY then issue the same extranonce1.
    pub session_id: Option<String>,
}

impl Subscribe {
    /// Reads the params of `mining.subscribe`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] when params is not an array or the user agent or
    /// session id is neither a string nor `null`.
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        Ok(Self {
            user_agent: params::opt_string(p, 0, "user agent")?,
            session_id: params::opt_string(p, 1, "session id")?,
        })
    }

    /// The session id read as a previous extranonce1 (hex, either case; an odd number of
    /// digits is left-padded with `0`, as SRI does: `"abc"` -> `0a bc`). `None` when absent or
    /// not hex.
    pub fn resume_extranonce1(&self) -> Option<Vec<u8>> {
        self.session_id.as_deref().and_then(hex::decode_padded)
    }
}

impl Serialize for Subscribe {
    /// `[]`, `[agent]` or `[agent|null, session_id]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = match (&self.user_agent, &self.session_id) {
            (_, Some(_)) => 2,
            (Some(_), None) => 1,
            (None, None) => 0,
        };
        let mut q = s.serialize_seq(Some(n))?;
        if n >= 1 {
            q.serialize_element(&self.user_agent)?;
        }
        if n == 2 {
            q.serialize_element(&self.session_id)?;
        }
        q.end()
    }
}

/// `mining.authorize(username, password)`. The reply is a boolean
/// ([`Response::bool_result`]).
///
/// Params: `[username]` or `[username, password]`; the password may be `null` or a number
/// (kept as its text).
#[derive(Clone, PartialEq, Eq)]
pub struct Authorize {
    /// The worker name, usually `account.worker` (or a Bitcoin address for solo pools).
    pub username: String,
    /// The password, if one was sent. Not shown by `Debug`.
    pub password: Option<String>,
}

impl std::fmt::Debug for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Authorize {
    /// Reads the params of `mining.authorize`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] without a string username, or with a password that is
    /// not a string, a number or `null`.
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        let username = params::string(p, 0, "username")?;
        let password = match p.get(1) {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => params::opt_string(p, 1, "password")?,
        };
        Ok(Self { username, password })
    }
}

impl Serialize for Authorize {
    /// `[username]` or `[username, password]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(None)?;
        q.serialize_element(&self.username)?;
        if let Some(p) = &self.password {
            q.serialize_element(p)?;
        }
        q.end()
    }
}

/// `mining.submit(worker_name, job_id, extranonce2, ntime, nonce[, version_bits])`: a share.
///
/// Params: five or six strings (further params are ignored). `extranonce2` is hex bytes (even
/// number of digits); `ntime`, `nonce` and `version_bits` are big-endian `u32`s written as hex
/// (up to 8 digits, either case, fewer digits left-padded; JSON numbers are refused, as no
/// miner sends them and their meaning would be ambiguous). `version_bits` may be `null`. The
/// job id may also be a JSON integer (kept as its decimal text). The reply is a boolean or an
/// error ([`Response::bool_result`], [`ErrorCode`](crate::ErrorCode) 21..=25).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    /// The authorized worker name the share is credited to.
    pub worker_name: String,
    /// The job id of the `mining.notify` the share is for (an opaque string).
    pub job_id: String,
    /// The miner's extranonce2, exactly `extranonce2_size` bytes, in coinbase order.
    pub extranonce2: Vec<u8>,
    /// The header `nTime` the miner used (seconds since the Unix epoch).
    pub ntime: u32,
    /// The header nonce.
    pub nonce: u32,
    /// BIP310 version rolling: the version bits the miner set. The header version is
    /// `(job_version & !mask) | (version_bits & mask)`
    /// ([`rolled_version`](crate::work::rolled_version)).
    pub version_bits: Option<u32>,
}

impl Submit {
    /// Reads the params of `mining.submit`.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] naming the first bad field.
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        Ok(Self {
            worker_name: params::string(p, 0, "worker name")?,
            job_id: params::ident(p, 1, "job id")?,
            extranonce2: params::hex_bytes(p, 2, "extranonce2")?,
            ntime: params::hex_u32(p, 3, "ntime")?,
            nonce: params::hex_u32(p, 4, "nonce")?,
            version_bits: match p.get(5) {
                None | Some(Value::Null) => None,
                Some(_) => Some(params::hex_u32(p, 5, "version bits")?),
            },
        })
    }
}

impl Serialize for Submit {
    /// `["worker","job","extranonce2 hex","ntime","nonce"(,"version_bits")]`, lower-case hex,
    /// `u32`s as 8 digits.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(5 + usize::from(self.version_bits.is_some())))?;
        q.serialize_element(&self.worker_name)?;
        q.serialize_element(&self.job_id)?;
        q.serialize_element(&Hex(&self.extranonce2))?;
        q.serialize_element(&HexU32(self.ntime))?;
        q.serialize_element(&HexU32(self.nonce))?;
        if let Some(v) = self.version_bits {
            q.serialize_element(&HexU32(v))?;
        }
        q.end()
    }
}

/// BIP310 `version-rolling` extension request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VersionRollingRequest {
    /// `version-rolling.mask`: the bits the miner would like to roll (hex on the wire);
    /// `None` if not sent. The server grants a subset.
    pub mask: Option<u32>,
    /// `version-rolling.min-bit-count`: the fewest bits the miner needs; `None` if absent.
    ///
    /// Accepted as a JSON number (S9, S19), or a string (cpuminer): a string of decimal digits
    /// is read as decimal (`"16"` -> 16, the BIP's integer), other hex strings as hex. SRI's
    /// sv1_api reads every string as hex (`"16"` -> 22). An unusable value reads as `None`
    /// rather than failing the whole `mining.configure`.
    pub min_bit_count: Option<u32>,
}

/// BIP310 `minimum-difficulty` extension request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MinimumDifficultyRequest {
    /// `minimum-difficulty.value`: the lowest difficulty the miner wants to be given; `None`
    /// if absent or not a positive number (the extension was still requested).
    pub value: Option<f64>,
}

/// BIP310 `info` extension: what the miner says about itself. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigureInfo {
    /// `info.connection-url`: the URL the miner was configured with.
    pub connection_url: Option<String>,
    /// `info.hw-version`.
    pub hw_version: Option<String>,
    /// `info.sw-version`.
    pub sw_version: Option<String>,
    /// `info.hw-id`.
    pub hw_id: Option<String>,
}

/// `mining.configure([extensions], {params})` (BIP310): negotiates extensions before
/// `mining.subscribe`.
///
/// An extension counts as requested when its name is in the list *or* one of its parameters
/// is present (some miners send the mask without listing `version-rolling`). The reply is a
/// [`ConfigureResult`](crate::ConfigureResult).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Configure {
    /// `version-rolling` (BIP310/BIP320).
    pub version_rolling: Option<VersionRollingRequest>,
    /// `minimum-difficulty`.
    pub minimum_difficulty: Option<MinimumDifficultyRequest>,
    /// `subscribe-extranonce`: the miner accepts `mining.set_extranonce`.
    pub subscribe_extranonce: bool,
    /// `info`.
    pub info: Option<ConfigureInfo>,
    /// Names of requested extensions this crate does not know, in the order sent.
    pub other_extensions: Vec<String>,
    /// Parameters not belonging to the known extensions, by name.
    pub other_params: Map<String, Value>,
}

const VR: &str = "version-rolling";
const VR_MASK: &str = "version-rolling.mask";
const VR_MIN_BITS: &str = "version-rolling.min-bit-count";
const MIN_DIFF: &str = "minimum-difficulty";
const MIN_DIFF_VALUE: &str = "minimum-difficulty.value";
const SUB_EN: &str = "subscribe-extranonce";
const INFO: &str = "info";
const INFO_KEYS: [&str; 4] = [
    "info.connection-url",
    "info.hw-version",
    "info.sw-version",
    "info.hw-id",
];

impl Configure {
    /// Reads the params of `mining.configure`: `[[names...], {params}]`; the params object
    /// may be absent or `null`. Non-string names are skipped.
    ///
    /// # Errors
    /// [`ParseErrorKind::InvalidParams`] when the first param is not an array, the second is
    /// neither an object nor `null`, or `version-rolling.mask` is not a hex `u32` (a string of
    /// 1 to 8 digits, or a JSON integer).
    pub fn from_params(params: &Value) -> Result<Self, Sv1ParseError> {
        let p = params::array(params)?;
        let names: Vec<&str> = match p.first() {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(Sv1ParseError::params("extension list is not an array")),
            None => return Err(Sv1ParseError::params("missing extension list")),
        };
        let empty = Map::new();
        let map = match p.get(1) {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => &empty,
            Some(_) => return Err(Sv1ParseError::params("extension params is not an object")),
        };
        let listed = |n: &str| names.contains(&n);

        let version_rolling =
            if listed(VR) || map.contains_key(VR_MASK) || map.contains_key(VR_MIN_BITS) {
                let mask =
                    match map.get(VR_MASK) {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(hex::decode_u32(s).ok_or_else(|| {
                            Sv1ParseError::params("version-rolling.mask is not 8 hex digits")
                        })?),
                        Some(Value::Number(n)) => {
                            Some(n.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(
                                || Sv1ParseError::params("version-rolling.mask is not a u32"),
                            )?)
                        }
                        Some(_) => {
                            return Err(Sv1ParseError::params(
                                "version-rolling.mask is not a hex string",
                            ))
                        }
                    };
                let min_bit_count = match map.get(VR_MIN_BITS) {
                    Some(Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
                    Some(Value::String(s)) => {
                        let s = s.trim();
                        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                            s.parse().ok()
                        } else {
                            hex::decode_u32(s.trim_start_matches("0x"))
                        }
                    }
                    _ => None,
                };
                Some(VersionRollingRequest {
                    mask,
                    min_bit_count,
                })
            } else {
                None
            };

        let minimum_difficulty =
            (listed(MIN_DIFF) || map.contains_key(MIN_DIFF_VALUE)).then(|| {
                MinimumDifficultyRequest {
                    value: params::positive(map.get(MIN_DIFF_VALUE), MIN_DIFF_VALUE).ok(),
                }
            });

        let info = (listed(INFO) || INFO_KEYS.iter().any(|k| map.contains_key(*k))).then(|| {
            let get = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
            ConfigureInfo {
                connection_url: get(INFO_KEYS[0]),
                hw_version: get(INFO_KEYS[1]),
                sw_version: get(INFO_KEYS[2]),
                hw_id: get(INFO_KEYS[3]),
            }
        });

        let mut other_extensions: Vec<String> = Vec::new();
        for n in &names {
            if ![VR, MIN_DIFF, SUB_EN, INFO].contains(n) && !other_extensions.iter().any(|o| o == n)
            {
                other_extensions.push((*n).to_owned());
            }
        }
        let other_params = map
            .iter()
            .filter(|(k, _)| {
                ![VR_MASK, VR_MIN_BITS, MIN_DIFF_VALUE].contains(&k.as_str())
                    && !INFO_KEYS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        Ok(Self {
            version_rolling,
            minimum_difficulty,
            subscribe_extranonce: listed(SUB_EN),
            info,
            other_extensions,
            other_params,
        })
    }

    /// A request for version rolling only, as miners send it.
    pub fn version_rolling(mask: u32, min_bit_count: Option<u32>) -> Self {
        Self {
            version_rolling: Some(VersionRollingRequest {
                mask: Some(mask),
                min_bit_count,
            }),
            ..Self::default()
        }
    }
}

struct ConfigureNames<'a>(&'a Configure);

impl Serialize for ConfigureNames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut q = s.serialize_seq(None)?;
        if c.version_rolling.is_some() {
            q.serialize_element(VR)?;
        }
        if c.minimum_difficulty.is_some() {
            q.serialize_element(MIN_DIFF)?;
        }
        if c.subscribe_extranonce {
            q.serialize_element(SUB_EN)?;
        }
        if c.info.is_some() {
            q.serialize_element(INFO)?;
        }
        for o in &c.other_extensions {
            q.serialize_element(o)?;
        }
        q.end()
    }
}

struct ConfigureParams<'a>(&'a Configure);

impl Serialize for ConfigureParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(vr) = &c.version_rolling {
            if let Some(mask) = vr.mask {
                m.serialize_entry(VR_MASK, &HexU32(mask))?;
            }
            if let Some(bits) = vr.min_bit_count {
                m.serialize_entry(VR_MIN_BITS, &bits)?;
            }
        }
        if let Some(MinimumDifficultyRequest { value: Some(v) }) = c.minimum_difficulty {
            m.serialize_entry(MIN_DIFF_VALUE, &Difficulty(v))?;
        }
        if let Some(info) = &c.info {
            let fields = [
                &info.connection_url,
                &info.hw_version,
                &info.sw_version,
                &info.hw_id,
            ];
            for (k, v) in INFO_KEYS.iter().zip(fields) {
                if let Some(v) = v {
                    m.serialize_entry(k, v)?;
                }
            }
        }
        for (k, v) in &c.other_params {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Configure {
    /// `[["version-rolling",...],{"version-rolling.mask":"1fffe000",...}]`: known extensions
    /// first in a fixed order, then the others; min-bit-count as a JSON number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(2))?;
        q.serialize_element(&ConfigureNames(self))?;
        q.serialize_element(&ConfigureParams(self))?;
        q.end()
    }
}

/// A line a client sends and a server receives, typed by method.
///
/// Requests carry the [`Id`] to echo in the [`Response`]. Methods this crate does not type are
/// carried through as [`ClientMessage::Unknown`], never an error. Server-to-client methods
/// (`mining.notify`, ...) fail with [`ParseErrorKind::WrongDirection`]: a server cannot
/// receive them.
///
/// Lenient input on top of [`Sv1Message::parse_line`]: ESP-Miner answers `mining.ping` with a
/// request-shaped `{"id":N,"method":"pong","params":[]}`; it (and `mining.pong`) is read as
/// the response `Response::pong(N)`.
///
/// Exhaustive on purpose: a dispatcher that matches every variant stops compiling when a
/// method is added.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// `mining.subscribe`.
    Subscribe(Id, Subscribe),
    /// `mining.authorize`.
    Authorize(Id, Authorize),
    /// `mining.submit`.
    Submit(Id, Submit),
    /// `mining.configure` (BIP310).
    Configure(Id, Configure),
    /// `mining.extranonce.subscribe` (NiceHash extension; params ignored): the miner accepts
    /// `mining.set_extranonce`. Reply: `true`.
    ExtranonceSubscribe(Id),
    /// `mining.suggest_difficulty(difficulty)`: the share difficulty the miner would like
    /// (a positive number; a decimal string is accepted).
    SuggestDifficulty(Id, f64),
    /// `mining.suggest_target(target)`: the share target the miner would like (64 hex digits,
    /// big-endian as written; fewer digits are left-padded).
    SuggestTarget(Id, Target),
    /// Any other method, with its params as JSON.
    Unknown(Request),
    /// A response to a server request (`client.get_version`, `mining.ping`).
    Response(Response),
}

impl ClientMessage {
    /// Parses one line (no terminator) sent by a client.
    ///
    /// # Errors
    /// Everything [`Sv1Message::parse_line`] returns, plus [`ParseErrorKind::InvalidParams`]
    /// for a known method with malformed params and [`ParseErrorKind::WrongDirection`]; these
    /// two carry the id and method ([`Sv1ParseError::reply`]).
    pub fn parse_line(line: &[u8]) -> Result<Self, Sv1ParseError> {
        Self::from_message(Sv1Message::parse_line(line)?)
    }

    /// Types an already parsed JSON-RPC message.
    ///
    /// # Errors
    /// As [`ClientMessage::parse_line`], after the JSON-RPC level.
    pub fn from_message(msg: Sv1Message) -> Result<Self, Sv1ParseError> {
        let r = match msg {
            Sv1Message::Response(r) => return Ok(ClientMessage::Response(r)),
            Sv1Message::Request(r) => r,
        };
        let known = method::CLIENT_TO_SERVER.contains(&r.method.as_str())
            || method::SERVER_TO_CLIENT.contains(&r.method.as_str())
            || r.method == "pong"
            || r.method == "mining.pong";
        if !known {
            return Ok(ClientMessage::Unknown(r));
        }
        let id = r.id.clone();
        let typed = (|| -> Result<Self, Sv1ParseError> {
            Ok(match r.method.as_str() {
                method::SUBSCRIBE => {
                    ClientMessage::Subscribe(id, Subscribe::from_params(&r.params)?)
                }
                method::AUTHORIZE => {
                    ClientMessage::Authorize(id, Authorize::from_params(&r.params)?)
                }
                method::SUBMIT => ClientMessage::Submit(id, Submit::from_params(&r.params)?),
                method::CONFIGURE => {
                    ClientMessage::Configure(id, Configure::from_params(&r.params)?)
                }
                method::EXTRANONCE_SUBSCRIBE => ClientMessage::ExtranonceSubscribe(id),
                method::SUGGEST_DIFFICULTY => ClientMessage::SuggestDifficulty(
                    id,
                    params::positive(params::array(&r.params)?.first(), "difficulty")?,
                ),
                method::SUGGEST_TARGET => {
                    let p = params::array(&r.params)?;
                    let s = params::string(p, 0, "target")?;
                    ClientMessage::SuggestTarget(id, parse_target(&s)?)
                }
                "pong" | "mining.pong" => ClientMessage::Response(Response::pong(id)),
                _ => return Err(Sv1ParseError::new(ParseErrorKind::WrongDirection)),
            })
        })();
        typed.map_err(|e| e.at(&r.id, Some(&r.method)))
    }

    /// The request's or response's id.
    pub fn id(&self) -> &Id {
        match self {
            ClientMessage::Subscribe(id, _)
            | ClientMessage::Authorize(id, _)
            | ClientMessage::Submit(id, _)
            | ClientMessage::Configure(id, _)
            | ClientMessage::ExtranonceSubscribe(id)
            | ClientMessage::SuggestDifficulty(id, _)
            | ClientMessage::SuggestTarget(id, _) => id,
            ClientMessage::Unknown(r) => &r.id,
            ClientMessage::Response(r) => &r.id,
        }
    }

    /// The method name; `None` for a response. For tracing spans.
    pub fn method(&self) -> Option<&str> {
        Some(match self {
            ClientMessage::Subscribe(..) => method::SUBSCRIBE,
            ClientMessage::Authorize(..) => method::AUTHORIZE,
            ClientMessage::Submit(..) => method::SUBMIT,
            ClientMessage::Configure(..) => method::CONFIGURE,
            ClientMessage::ExtranonceSubscribe(..) => method::EXTRANONCE_SUBSCRIBE,
            ClientMessage::SuggestDifficulty(..) => method::SUGGEST_DIFFICULTY,
            ClientMessage::SuggestTarget(..) => method::SUGGEST_TARGET,
            ClientMessage::Unknown(r) => &r.method,
            ClientMessage::Response(_) => return None,
        })
    }

    /// The canonical JSON text, without the `\n` terminator.
    pub fn to_json(&self) -> String {
        crate::codec::to_json(self)
    }
}

/// A 256-bit target from up to 64 hex digits, big-endian as written.
pub(crate) fn parse_target(s: &str) -> Result<Target, Sv1ParseError> {
    let bytes = hex::decode_padded(s)
        .filter(|b| b.len() <= 32)
        .ok_or_else(|| Sv1ParseError::params("target is not up to 64 hex digits"))?;
    let mut be = [0u8; 32];
    be[32 - bytes.len()..].copy_from_slice(&bytes);
    Ok(Target::from_be_bytes(be))
}

impl Serialize for ClientMessage {
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
        match self {
            ClientMessage::Subscribe(id, p) => req(s, id, method::SUBSCRIBE, p),
            ClientMessage::Authorize(id, p) => req(s, id, method::AUTHORIZE, p),
            ClientMessage::Submit(id, p) => req(s, id, method::SUBMIT, p),
            ClientMessage::Configure(id, p) => req(s, id, method::CONFIGURE, p),
            ClientMessage::ExtranonceSubscribe(id) => {
                req(s, id, method::EXTRANONCE_SUBSCRIBE, &Empty)
            }
            ClientMessage::SuggestDifficulty(id, d) => {
                req(s, id, method::SUGGEST_DIFFICULTY, &One(Difficulty(*d)))
            }
            ClientMessage::SuggestTarget(id, t) => {
                req(s, id, method::SUGGEST_TARGET, &One(Hex(&t.to_be_bytes())))
            }
            ClientMessage::Unknown(r) => r.serialize(s),
            ClientMessage::Response(r) => r.serialize(s),
        }
    }
}

impl From<Response> for ClientMessage {
    fn from(r: Response) -> Self {
        ClientMessage::Response(r)
    }
}
