//! Plaintext Sv2 framing (spec 3.2).

use crate::budget::BudgetCharge;
use crate::error::CodecError;
use bytes::{Buf, BytesMut};
use std::io;
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_core::frame::{Frame, FrameHeader, HEADER_SIZE, MAX_PAYLOAD_LEN};

/// A [`tokio_util::codec`] codec for plaintext Sv2 frames (spec 3.2 "Framing"): a 6-byte header
/// (`extension_type` U16 LE, `msg_type` U8, `msg_length` U24 LE) followed by `msg_length` payload
/// bytes.
///
/// Decoding:
///
/// - the declared `msg_length` is checked against `max_payload` as soon as the 6 header bytes
///   are in, **before** anything is reserved; a larger one fails with
///   [`CodecError::FrameTooLarge`];
/// - `Ok(None)` means more bytes are needed; the read buffer is then reserved for at most
///   [`READ_CHUNK`] more bytes (and never past the end of the already checked frame): a frame's
///   bytes are buffered as they arrive, so a header declaring megabytes reserves nothing more;
/// - with a budget ([`Self::set_budget`]), the bytes of an unfinished frame beyond the
///   budget's allowance are charged to it each time the decoder waits, and a refused charge
///   fails with [`CodecError::BudgetExhausted`];
/// - the payload is split off the read buffer without copying ([`Frame::payload`] shares the
///   read buffer's allocation);
/// - after an error every later `decode` returns [`CodecError::Dead`]; a stream that ends inside
///   a frame fails with [`CodecError::Io`] of kind [`io::ErrorKind::UnexpectedEof`].
///
/// Encoding writes the header and payload (one copy of the payload into the write buffer). A
/// payload over [`MAX_PAYLOAD_LEN`] (2^24 - 1 bytes, the U24 limit) fails with
/// [`CodecError::FrameTooLarge`] and writes nothing; the maximum for *received* frames
/// (`max_payload`) does not apply to sending, as the peer's limit is its own.
#[derive(Debug)]
pub struct PlainCodec {
    max_payload: usize,
    dead: bool,
    budget: Option<BudgetCharge>,
}

/// The most a decoder reserves ahead of the bytes it has received, in bytes (64 KiB): a frame
/// larger than this is buffered a read at a time as it arrives.
pub const READ_CHUNK: usize = 64 * 1024;

impl PlainCodec {
    /// A codec accepting received payloads of at most `max_payload` bytes (values above
    /// [`MAX_PAYLOAD_LEN`] behave as [`MAX_PAYLOAD_LEN`]: a U24 cannot declare more).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
            dead: false,
            budget: None,
        }
    }

    /// Changes the largest received payload accepted, in bytes (capped at [`MAX_PAYLOAD_LEN`]),
    /// for frames whose header has not been checked yet.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload.min(MAX_PAYLOAD_LEN);
    }

    /// Charges the bytes of unfinished frames to `charge` from now on (see
    /// [`PartialFrameBudget`](crate::PartialFrameBudget)).
    pub fn set_budget(&mut self, charge: BudgetCharge) {
        self.budget = Some(charge);
    }

    fn fail(&mut self, e: CodecError) -> CodecError {
        self.dead = true;
        self.budget = None;
        e
    }

    /// Charges `held` bytes of an unfinished frame to the budget, if any.
    fn hold(&mut self, held: usize) -> Result<(), CodecError> {
        let Some(charge) = self.budget.as_mut() else {
            return Ok(());
        };
        match charge.set_held(held) {
            Ok(()) => Ok(()),
            Err(r) => Err(self.fail(CodecError::BudgetExhausted {
                held: r.held,
                used: r.used,
                limit: r.limit,
            })),
        }
    }

    /// The largest received payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes this codec holds itself: always 0, since a plaintext frame is buffered in the
    /// caller's read buffer (`src`) until complete. Present for symmetry with
    /// [`NoiseCodec::buffered_len`](crate::NoiseCodec::buffered_len).
    pub fn buffered_len(&self) -> usize {
        0
    }

    /// The largest number of bytes the decoder makes the read buffer hold for one frame:
    /// header plus `max_payload`, in bytes.
    pub fn max_frame_len(&self) -> usize {
        HEADER_SIZE + self.max_payload
    }
}

impl Decoder for PlainCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if self.dead {
            return Err(CodecError::Dead);
        }
        let Some(header) = FrameHeader::parse(src) else {
            self.hold(src.len())?;
            return Ok(None);
        };
        if header.msg_length > self.max_payload {
            return Err(self.fail(CodecError::FrameTooLarge {
                declared: header.msg_length,
                max: self.max_payload,
            }));
        }
        let total = HEADER_SIZE + header.msg_length;
        if src.len() < total {
            self.hold(src.len())?;
            // Bounded by the check above (at most HEADER_SIZE + max_payload bytes in all), and
            // at most one chunk ahead of what has arrived.
            src.reserve((total - src.len()).min(READ_CHUNK));
            return Ok(None);
        }
        self.hold(0)?;
        let mut frame = src.split_to(total);
        frame.advance(HEADER_SIZE);
        Ok(Some(Frame {
            extension_type: header.extension_type,
            msg_type: header.msg_type,
            payload: frame.freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(self.fail(eof_mid_frame(src.len()))),
        }
    }
}

impl Encoder<Frame> for PlainCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        check_encodable(&item)?;
        item.write_to(dst);
        Ok(())
    }
}

/// Rejects a frame whose payload a U24 `msg_length` cannot declare.
pub(crate) fn check_encodable(item: &Frame) -> Result<(), CodecError> {
    if item.payload.len() > MAX_PAYLOAD_LEN {
        return Err(CodecError::FrameTooLarge {
            declared: item.payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    Ok(())
}

pub(crate) fn eof_mid_frame(buffered: usize) -> CodecError {
    CodecError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("stream ended inside a frame ({buffered} bytes of it received)"),
    ))
}
