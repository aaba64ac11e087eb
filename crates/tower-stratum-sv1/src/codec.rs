//! The `tokio_util::codec` line codec.

use crate::client_to_server::ClientMessage;
use crate::error::{Sv1CodecError, Sv1ParseError};
use crate::message::Sv1Message;
use crate::server_to_client::ServerMessage;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// The default maximum line length, in bytes: 64 KiB. A `mining.notify` with 13 merkle
/// branches is about 1.5 KB; coinbases paying many outputs make it longer, rarely above 20 KB.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;

/// A line exactly as received: the bytes before the `\n` (a trailing `\r` removed), not
/// checked for JSON or UTF-8. Encoding one writes it followed by `\n`.
///
/// For relays and `--dump-protocol` style logs, and to send a line encoded once (a
/// `mining.notify` broadcast) to many connections: every [`Sv1Codec`] encodes `RawLine`s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawLine(pub Bytes);

impl RawLine {
    /// The canonical encoding of `msg` (without terminator) as a `RawLine`.
    pub fn encode<T: Serialize>(msg: &T) -> RawLine {
        RawLine(Bytes::from(to_json(msg)))
    }
}

/// A type the codec yields for each line: parsed from the line's bytes (terminator removed).
pub trait DecodeLine: Sized {
    /// Parses one line.
    ///
    /// # Errors
    /// [`Sv1ParseError`] when the line is not a valid message of this type.
    fn decode_line(line: Bytes) -> Result<Self, Sv1ParseError>;
}

impl DecodeLine for RawLine {
    /// Never fails.
    fn decode_line(line: Bytes) -> Result<Self, Sv1ParseError> {
        Ok(RawLine(line))
    }
}

impl DecodeLine for Sv1Message {
    fn decode_line(line: Bytes) -> Result<Self, Sv1ParseError> {
        Sv1Message::parse_line(&line)
    }
}

impl DecodeLine for ClientMessage {
    fn decode_line(line: Bytes) -> Result<Self, Sv1ParseError> {
        ClientMessage::parse_line(&line)
    }
}

impl DecodeLine for ServerMessage {
    fn decode_line(line: Bytes) -> Result<Self, Sv1ParseError> {
        ServerMessage::parse_line(&line)
    }
}

/// A [`tokio_util::codec`] codec for Sv1's newline-delimited JSON-RPC, decoding `In` and
/// encoding `Out` (and [`RawLine`]s).
///
/// Use the direction aliases: [`Sv1ServerCodec`] (a server: decodes [`ClientMessage`],
/// encodes [`ServerMessage`]), [`Sv1ClientCodec`] (the reverse), [`Sv1MessageCodec`]
/// (untyped [`Sv1Message`] both ways) and [`Sv1LineCodec`] (raw lines).
///
/// # Decoding
///
/// - Lines end with `\n`; a `\r` before it is removed. Lines that are empty or only
///   whitespace are skipped.
/// - `Ok(None)`: no complete line yet (more bytes needed).
/// - `Ok(Some(Ok(msg)))`: a message. `Ok(Some(Err(e)))`: a complete line that does not parse
///   ([`Sv1ParseError`], carrying what could be recovered, e.g. the id to answer with error
///   20 via [`Sv1ParseError::reply`]). A bad line is **not** a decoder error, because
///   `tokio_util`'s `FramedRead` ends the stream after a decoder error; the caller decides
///   whether to answer, ignore or close.
/// - `Err(`[`Sv1CodecError::LineTooLong`]`)`: more than `max_line_length` bytes arrived
///   without a `\n` (the limit counts the bytes before the `\n`, a `\r` included). It is
///   raised as soon as the buffer holds `max_line_length + 1` bytes of the line, so the read
///   buffer never holds more than `max_line_length` bytes of an unfinished line between
///   calls (plus what one read appends). Fatal: every later call returns
///   [`Sv1CodecError::Dead`].
/// - At end of stream, an unterminated last line is parsed as a line.
/// - Scanning is incremental: each byte is searched for `\n` once.
///
/// # Encoding
///
/// Writes the canonical JSON (`{"id":..,"method":..,"params":..}` /
/// `{"id":..,"result":..,"error":..}`, errors as `[code, "message", data]`, lower-case hex)
/// followed by `\n`. Never fails for typed messages; a [`RawLine`] containing `\n` fails with
/// [`Sv1CodecError::NewlineInLine`] and writes nothing.
pub struct Sv1Codec<In, Out> {
    max_line_length: usize,
    /// Bytes of the unfinished line already searched for `\n`.
    next_index: usize,
    dead: bool,
    _direction: PhantomData<fn(Out) -> In>,
}

/// The server side: decodes what clients send, encodes what servers send.
pub type Sv1ServerCodec = Sv1Codec<ClientMessage, ServerMessage>;
/// The client side: decodes what servers send, encodes what clients send.
pub type Sv1ClientCodec = Sv1Codec<ServerMessage, ClientMessage>;
/// Untyped JSON-RPC messages, either direction.
pub type Sv1MessageCodec = Sv1Codec<Sv1Message, Sv1Message>;
/// Raw lines, no JSON parsing.
pub type Sv1LineCodec = Sv1Codec<RawLine, RawLine>;

impl<In, Out> Sv1Codec<In, Out> {
    /// A codec refusing received lines longer than `max_line_length` bytes (before the `\n`).
    pub fn new(max_line_length: usize) -> Self {
        Self {
            max_line_length,
            next_index: 0,
            dead: false,
            _direction: PhantomData,
        }
    }

    /// The maximum received line length, in bytes.
    pub fn max_line_length(&self) -> usize {
        self.max_line_length
    }

    /// Removes the next complete line from `src`, skipping blank lines. `Ok(None)` when no
    /// complete line is buffered.
    fn next_line(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Sv1CodecError> {
        if self.dead {
            return Err(Sv1CodecError::Dead);
        }
        loop {
            // A '\n' at index <= max ends a line of at most max bytes.
            let limit = src.len().min(self.max_line_length.saturating_add(1));
            let start = self.next_index.min(limit);
            match memchr::memchr(b'\n', &src[start..limit]) {
                Some(off) => {
                    let nl = start + off;
                    let mut line = src.split_to(nl + 1);
                    self.next_index = 0;
                    line.truncate(nl);
                    if line.last() == Some(&b'\r') {
                        line.truncate(nl - 1);
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(line.freeze()));
                }
                None if src.len() > self.max_line_length => {
                    self.dead = true;
                    return Err(Sv1CodecError::LineTooLong {
                        max: self.max_line_length,
                    });
                }
                None => {
                    self.next_index = src.len();
                    return Ok(None);
                }
            }
        }
    }
}

impl<In, Out> Default for Sv1Codec<In, Out> {
    /// [`DEFAULT_MAX_LINE_LENGTH`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_LENGTH)
    }
}

impl<In, Out> Clone for Sv1Codec<In, Out> {
    fn clone(&self) -> Self {
        Self {
            max_line_length: self.max_line_length,
            next_index: self.next_index,
            dead: self.dead,
            _direction: PhantomData,
        }
    }
}

impl<In, Out> fmt::Debug for Sv1Codec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sv1Codec")
            .field("in", &std::any::type_name::<In>())
            .field("out", &std::any::type_name::<Out>())
            .field("max_line_length", &self.max_line_length)
            .field("dead", &self.dead)
            .finish()
    }
}

impl<In: DecodeLine, Out> Decoder for Sv1Codec<In, Out> {
    type Item = Result<In, Sv1ParseError>;
    type Error = Sv1CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Sv1CodecError> {
        Ok(self.next_line(src)?.map(In::decode_line))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Sv1CodecError> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        // No '\n' left: the rest (at most max_line_length bytes) is the last line.
        let rest = src.split();
        self.next_index = 0;
        let mut line = rest;
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Ok(Some(In::decode_line(line.freeze())))
    }
}

/// The canonical JSON of a message, without terminator. Our `Serialize` impls cannot fail
/// (string keys only, writing to memory), so the empty-string fallback is never taken.
pub(crate) fn to_json<T: Serialize + ?Sized>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

fn write_json<T: Serialize>(msg: &T, dst: &mut BytesMut) -> Result<(), Sv1CodecError> {
    let start = dst.len();
    let mut w = dst.writer();
    if let Err(e) = serde_json::to_writer(&mut w, msg) {
        w.into_inner().truncate(start);
        return Err(Sv1CodecError::Io(std::io::Error::other(e)));
    }
    dst.put_u8(b'\n');
    Ok(())
}

impl<In, Out> Encoder<RawLine> for Sv1Codec<In, Out> {
    type Error = Sv1CodecError;

    fn encode(&mut self, item: RawLine, dst: &mut BytesMut) -> Result<(), Sv1CodecError> {
        if memchr::memchr(b'\n', &item.0).is_some() {
            return Err(Sv1CodecError::NewlineInLine);
        }
        dst.reserve(item.0.len() + 1);
        dst.put_slice(&item.0);
        dst.put_u8(b'\n');
        Ok(())
    }
}

impl Encoder<ServerMessage> for Sv1ServerCodec {
    type Error = Sv1CodecError;

    fn encode(&mut self, item: ServerMessage, dst: &mut BytesMut) -> Result<(), Sv1CodecError> {
        write_json(&item, dst)
    }
}

impl Encoder<ClientMessage> for Sv1ClientCodec {
    type Error = Sv1CodecError;

    fn encode(&mut self, item: ClientMessage, dst: &mut BytesMut) -> Result<(), Sv1CodecError> {
        write_json(&item, dst)
    }
}

impl Encoder<Sv1Message> for Sv1MessageCodec {
    type Error = Sv1CodecError;

    fn encode(&mut self, item: Sv1Message, dst: &mut BytesMut) -> Result<(), Sv1CodecError> {
        write_json(&item, dst)
    }
}
