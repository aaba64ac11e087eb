//! Stratum V1 (Bitcoin dialect) JSON-RPC: a bounded line codec, typed messages per direction,
//! and the Sv1 share math.
//!
//! - [`Sv1Codec`]: a [`tokio_util::codec`] line codec with a maximum line length, in direction
//!   flavours [`Sv1ServerCodec`] (decodes [`ClientMessage`], encodes [`ServerMessage`]),
//!   [`Sv1ClientCodec`], [`Sv1MessageCodec`] (untyped [`Sv1Message`]) and [`Sv1LineCodec`]
//!   ([`RawLine`]).
//! - Typed messages, one enum per direction so a server cannot even represent receiving
//!   `mining.notify`: [`ClientMessage`] (`mining.subscribe`, `mining.authorize`,
//!   `mining.submit`, `mining.configure`, `mining.extranonce.subscribe`,
//!   `mining.suggest_difficulty`, `mining.suggest_target`, responses) and [`ServerMessage`]
//!   (`mining.notify`, `mining.set_difficulty`, `mining.set_extranonce`,
//!   `mining.set_version_mask`, `client.reconnect`, `client.show_message`,
//!   `client.get_version`, `mining.ping`, responses). Unknown methods are carried through as
//!   a [`Request`] with raw params.
//! - Typed results of client requests: [`SubscribeResult`], [`ConfigureResult`],
//!   [`Response::bool_result`]; errors as [`Sv1Error`] and [`ErrorCode`] (20..=25).
//! - The sans-IO server side of a connection: [`Sv1ServerSession`] (the order of the Sv1
//!   handshake, setup and inactivity deadlines) and the handler trait [`Sv1ServerHandler`]
//!   (one method per Sv1 method) with what it returns, [`Sv1Actions`]. The tokio runtime that
//!   drives them is `tower_stratum_service::sv1` (the same connection runtime as Sv2).
//! - [`work`]: coinbase, merkle root, header (prevhash word-swap, version rolling), hash, share
//!   difficulty, difficulty <-> target.
//!
//! # Lenient in, canonical out
//!
//! Accepted on input: ids that are integers (0 included), strings or `null` (kept exactly in
//! [`Id`] and echoed verbatim; duplicates are the caller's business); a `"jsonrpc":"2.0"`
//! member; errors as `[code, "msg", data]`, `[code, "msg"]`, a JSON-RPC object, a bare string,
//! or `"result":false` with `"reject-reason"`; the flat non-standard subscribe result; a
//! `mining.notify` with extra params (`clean_jobs` is the last); `min-bit-count` as a number,
//! a string or absent; upper/lower-case hex; hex `u32`s shorter than 8 digits; ESP-Miner's
//! request-shaped `pong`; `\r\n` line ends, blank lines, a UTF-8 BOM.
//!
//! Emitted: `{"id":..,"method":..,"params":[..]}` requests (notifications with `"id":null`),
//! `{"id":..,"result":..,"error":..}` responses with errors as `[code, "msg", null]`,
//! lower-case hex, `u32`s as 8 hex digits, integral difficulties as JSON integers.
//!
//! Never a panic on any input: a line that does not parse is an [`Sv1ParseError`] (with the id
//! and method when they could be read; [`Sv1ParseError::reply`] gives the error-20 response a
//! server sends), and only an oversize line stops the codec.
//!
//! # Example
//!
//! A server reading a miner's lines and answering them:
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//! use tower_stratum_sv1::{ClientMessage, ErrorCode, Id, Response, ServerMessage, Sv1ServerCodec};
//!
//! let mut codec = Sv1ServerCodec::default();
//! let mut input = BytesMut::from(
//!     "{\"id\":\"a\",\"method\":\"mining.submit\",\"params\":[\"w\",\"1\",\"00000000\",\"504e86ed\",\"b2957c02\"]}\r\n\
//!      {\"id\":7,\"method\":\"mining.submit\",\"params\":[\"w\",\"1\",\"ab\",-1,0]}\n",
//! );
//! let mut out = BytesMut::new();
//! while let Some(item) = codec.decode(&mut input)? {
//!     let reply = match item {
//!         Ok(ClientMessage::Submit(id, submit)) => {
//!             assert_eq!(submit.ntime, 0x504e86ed);
//!             Response::error(id, ErrorCode::JobNotFound)
//!         }
//!         Ok(other) => Response::error(other.id().clone(), ErrorCode::Other),
//!         // Malformed params: error 20 to the request's id.
//!         Err(bad) => bad.reply().expect("a request with an id"),
//!     };
//!     codec.encode(ServerMessage::Response(reply), &mut out)?;
//! }
//! assert_eq!(
//!     out,
//!     "{\"id\":\"a\",\"result\":null,\"error\":[21,\"Job not found\",null]}\n\
//!      {\"id\":7,\"result\":null,\"error\":[20,\"Other/Unknown\",null]}\n"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Reuse of SRI's `sv1_api`
//!
//! `sv1_api` (stratum-core's `sv1` feature) is not a dependency: its messages carry `u64` ids
//! (string ids are rejected), its parsing path has `expect`s, and its byte types are
//! `binary_sv2` containers. Its decisions were followed where they fit: the error code table and
//! messages, the accepted error forms (3- and 2-element arrays, objects), left-padding short
//! hex `u32`s and odd-length extranonce1 hex, the subscribe param shapes (bOS+'s
//! `[agent, null, host, port]`), and `min-bit-count` as number, string or absent (except that a
//! decimal string is read as decimal; see [`VersionRollingRequest::min_bit_count`]).

mod client_to_server;
mod codec;
mod error;
mod handler;
mod hex;
mod id;
mod message;
mod params;
mod server_to_client;
mod session;
pub mod work;

pub use client_to_server::{
    Authorize, ClientMessage, Configure, ConfigureInfo, MinimumDifficultyRequest, Submit,
    Subscribe, VersionRollingRequest,
};
pub use codec::{
    DecodeLine, RawLine, Sv1ClientCodec, Sv1Codec, Sv1LineCodec, Sv1MessageCodec, Sv1ServerCodec,
    DEFAULT_MAX_LINE_LENGTH,
};
pub use error::{ErrorCode, ParseErrorKind, Sv1CodecError, Sv1Error, Sv1ParseError};
pub use handler::{
    configure_refused, dispatch, not_supported, NullSv1ServerHandler, Sv1Action, Sv1Actions,
    Sv1CloseReason, Sv1ConnectionContext, Sv1InboundMessage, Sv1ServerHandler, Sv1Timer,
    METHOD_NOT_SUPPORTED,
};
pub use id::Id;
pub use message::{Request, Response, Sv1Message};
pub use server_to_client::{
    ConfigureResult, ExtensionResult, Notify, Reconnect, ServerMessage, SetExtranonce,
    SubscribeResult,
};
pub use session::{
    Sv1Inbound, Sv1ServerSession, Sv1SessionConfig, ALREADY_SUBSCRIBED, TOO_MANY_PENDING,
    TOO_MANY_WORKERS,
};
pub use tower_stratum_core::stratum_core::bitcoin::Target;
pub use work::PrevHash;

/// The Sv1 method names.
pub mod method {
    /// `mining.subscribe` (client -> server).
    pub const SUBSCRIBE: &str = "mining.subscribe";
    /// `mining.authorize` (client -> server).
    pub const AUTHORIZE: &str = "mining.authorize";
    /// `mining.submit` (client -> server).
    pub const SUBMIT: &str = "mining.submit";
    /// `mining.configure` (client -> server, BIP310).
    pub const CONFIGURE: &str = "mining.configure";
    /// `mining.extranonce.subscribe` (client -> server).
    pub const EXTRANONCE_SUBSCRIBE: &str = "mining.extranonce.subscribe";
    /// `mining.suggest_difficulty` (client -> server).
    pub const SUGGEST_DIFFICULTY: &str = "mining.suggest_difficulty";
    /// `mining.suggest_target` (client -> server).
    pub const SUGGEST_TARGET: &str = "mining.suggest_target";
    /// `mining.notify` (server -> client).
    pub const NOTIFY: &str = "mining.notify";
    /// `mining.set_difficulty` (server -> client).
    pub const SET_DIFFICULTY: &str = "mining.set_difficulty";
    /// `mining.set_extranonce` (server -> client).
    pub const SET_EXTRANONCE: &str = "mining.set_extranonce";
    /// `mining.set_version_mask` (server -> client).
    pub const SET_VERSION_MASK: &str = "mining.set_version_mask";
    /// `client.reconnect` (server -> client).
    pub const RECONNECT: &str = "client.reconnect";
    /// `client.show_message` (server -> client).
    pub const SHOW_MESSAGE: &str = "client.show_message";
    /// `client.get_version` (server -> client request).
    pub const GET_VERSION: &str = "client.get_version";
    /// `mining.ping` (server -> client request, non-standard).
    pub const PING: &str = "mining.ping";

    /// The methods [`ClientMessage`](crate::ClientMessage) types.
    pub const CLIENT_TO_SERVER: [&str; 7] = [
        SUBSCRIBE,
        AUTHORIZE,
        SUBMIT,
        CONFIGURE,
        EXTRANONCE_SUBSCRIBE,
        SUGGEST_DIFFICULTY,
        SUGGEST_TARGET,
    ];
    /// The methods [`ServerMessage`](crate::ServerMessage) types.
    pub const SERVER_TO_CLIENT: [&str; 8] = [
        NOTIFY,
        SET_DIFFICULTY,
        SET_EXTRANONCE,
        SET_VERSION_MASK,
        RECONNECT,
        SHOW_MESSAGE,
        GET_VERSION,
        PING,
    ];
}
