//! Plaintext Sv2 framing (spec 3.2).

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
/// - `Ok(None)` means more bytes are needed; the read buffer is then reserved up to the end of the
///   (already checked) frame, never further;
/// - the payload is split off the read buffer without copying ([`Frame::payload`] shares the
///   read buffer's allocation);
/// - after an error every later `decode` returns [`CodecError::Dead`]; a stream that ends inside
///   a frame fails with [`CodecError::Io`] of kind [`io::ErrorKind::UnexpectedEof`].
///
/// Encoding writes the header and payload (one copy of the payload into the write buffer). A
/// payload over [`MAX_PAYLOAD_LEN`] (2^24 - 1 bytes, the U24 limit) fails with
/// [`CodecError::FrameTooLarge`] and writes nothing; the maximum for *received* frames
/// (`max_payload`) does not apply to sending, as the peer's limit is its own.
#[derive(Debug, Clone)]
pub struct PlainCodec {
    max_payload: usize,
    dead: bool,
}

impl PlainCodec {
    /// A codec accepting received payloads of at most `max_payload` bytes (values above
    /// [`MAX_PAYLOAD_LEN`] behave as [`MAX_PAYLOAD_LEN`]: a U24 cannot declare more).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
            dead: false,
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
            return Ok(None);
        };
        if header.msg_length > self.max_payload {
            self.dead = true;
            return Err(CodecError::FrameTooLarge {
                declared: header.msg_length,
                max: self.max_payload,
            });
        }
        let total = HEADER_SIZE + header.msg_length;
        if src.len() < total {
            // Bounded by the check above: at most HEADER_SIZE + max_payload bytes.
            src.reserve(total - src.len());
            return Ok(None);
        }
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
            None => {
                self.dead = true;
                Err(eof_mid_frame(src.len()))
            }
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
