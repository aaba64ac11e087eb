//! Raw Sv2 frames (spec 3.2 "Framing"): a 6-byte header and a payload.

use bytes::{BufMut, Bytes, BytesMut};

/// Size in bytes of the plaintext Sv2 frame header: `extension_type` (U16 LE), `msg_type` (U8),
/// `msg_length` (U24 LE). Spec 3.2.
pub const HEADER_SIZE: usize = 6;

/// Largest payload a U24 `msg_length` can declare: 2^24 - 1 bytes.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// The `channel_msg` bit of `extension_type` (spec 3.2.1).
pub const CHANNEL_MSG_BIT: u16 = 0x8000;

/// One Sv2 frame, as read from or written to the wire after Noise (if any) is removed.
///
/// `payload` is reference counted, so one encoded frame can be queued to many connections
/// (a broadcast) without copying.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// `extension_type` as on the wire, including the `channel_msg` bit (bit 15).
    pub extension_type: u16,
    /// `msg_type` (spec 8, "Message Types").
    pub msg_type: u8,
    /// The payload, `msg_length` bytes.
    pub payload: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field(
                "extension_type",
                &format_args!("{:#06x}", self.extension_type),
            )
            .field("msg_type", &format_args!("{:#04x}", self.msg_type))
            .field("len", &self.payload.len())
            .finish()
    }
}

impl Frame {
    /// The extension type without the `channel_msg` bit (0 for core protocol messages).
    pub fn extension(&self) -> u16 {
        self.extension_type & !CHANNEL_MSG_BIT
    }

    /// Whether the `channel_msg` bit is set (the payload then starts with a U32 `channel_id`).
    pub fn channel_msg(&self) -> bool {
        self.extension_type & CHANNEL_MSG_BIT != 0
    }

    /// Total encoded length: header plus payload, in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }

    /// Writes the 6-byte header and the payload into `dst`.
    ///
    /// The payload length must fit a U24; [`Frame`]s built by this crate always do.
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        write_header(dst, self.extension_type, self.msg_type, self.payload.len());
        dst.put_slice(&self.payload);
    }
}

/// Writes a plaintext Sv2 header: `extension_type` LE, `msg_type`, `msg_length` as U24 LE.
pub fn write_header(dst: &mut BytesMut, extension_type: u16, msg_type: u8, len: usize) {
    dst.put_u16_le(extension_type);
    dst.put_u8(msg_type);
    let len = (len.min(MAX_PAYLOAD_LEN) as u32).to_le_bytes();
    dst.put_slice(&len[..3]);
}

/// A parsed plaintext header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// `extension_type` including the `channel_msg` bit.
    pub extension_type: u16,
    /// `msg_type`.
    pub msg_type: u8,
    /// Declared payload length in bytes.
    pub msg_length: usize,
}

impl FrameHeader {
    /// Parses the first [`HEADER_SIZE`] bytes of `src`; `None` if fewer are available.
    pub fn parse(src: &[u8]) -> Option<Self> {
        let h = src.get(..HEADER_SIZE)?;
        Some(Self {
            extension_type: u16::from_le_bytes([h[0], h[1]]),
            msg_type: h[2],
            msg_length: u32::from_le_bytes([h[3], h[4], h[5], 0]) as usize,
        })
    }
}
