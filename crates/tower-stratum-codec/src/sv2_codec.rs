//! One codec type for both transports.

use crate::{budget::BudgetCharge, error::CodecError, noise::NoiseCodec, plain::PlainCodec};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_core::frame::Frame;

/// Either transport of spec 3.2 / 4, so that one `Framed<IO, Sv2Codec>` type serves plaintext
/// and Noise connections alike. Every call delegates to the inner codec; see [`PlainCodec`] and
/// [`NoiseCodec`] for limits, buffering and errors.
#[derive(Debug)]
pub enum Sv2Codec {
    /// Plaintext frames (spec 3.2).
    Plain(PlainCodec),
    /// Noise NX transport frames (spec 4). Boxed: codec_sv2's state is much larger than a
    /// [`PlainCodec`].
    Noise(Box<NoiseCodec>),
}

impl Sv2Codec {
    /// Whether frames are encrypted (the [`Sv2Codec::Noise`] variant).
    pub fn is_noise(&self) -> bool {
        matches!(self, Sv2Codec::Noise(_))
    }

    /// The largest received payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        match self {
            Sv2Codec::Plain(c) => c.max_payload(),
            Sv2Codec::Noise(c) => c.max_payload(),
        }
    }

    /// Changes the largest received payload accepted, in bytes; see
    /// [`PlainCodec::set_max_payload`] and [`NoiseCodec::set_max_payload`].
    pub fn set_max_payload(&mut self, max_payload: usize) {
        match self {
            Sv2Codec::Plain(c) => c.set_max_payload(max_payload),
            Sv2Codec::Noise(c) => c.set_max_payload(max_payload),
        }
    }

    /// Charges unfinished frames to `charge` (see [`crate::PartialFrameBudget`]).
    pub fn set_budget(&mut self, charge: BudgetCharge) {
        match self {
            Sv2Codec::Plain(c) => c.set_budget(charge),
            Sv2Codec::Noise(c) => c.set_budget(charge),
        }
    }

    /// This codec, charging unfinished frames to `charge`.
    pub fn with_budget(mut self, charge: BudgetCharge) -> Self {
        self.set_budget(charge);
        self
    }

    /// Bytes the codec itself holds for the frame being received; see
    /// [`NoiseCodec::buffered_len`] and [`PlainCodec::buffered_len`].
    pub fn buffered_len(&self) -> usize {
        match self {
            Sv2Codec::Plain(c) => c.buffered_len(),
            Sv2Codec::Noise(c) => c.buffered_len(),
        }
    }
}

impl From<PlainCodec> for Sv2Codec {
    fn from(c: PlainCodec) -> Self {
        Sv2Codec::Plain(c)
    }
}

impl From<NoiseCodec> for Sv2Codec {
    fn from(c: NoiseCodec) -> Self {
        Sv2Codec::Noise(Box::new(c))
    }
}

impl Decoder for Sv2Codec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self {
            Sv2Codec::Plain(c) => c.decode(src),
            Sv2Codec::Noise(c) => c.decode(src),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self {
            Sv2Codec::Plain(c) => c.decode_eof(src),
            Sv2Codec::Noise(c) => c.decode_eof(src),
        }
    }
}

impl Encoder<Frame> for Sv2Codec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Sv2Codec::Plain(c) => c.encode(item, dst),
            Sv2Codec::Noise(c) => c.encode(item, dst),
        }
    }
}
