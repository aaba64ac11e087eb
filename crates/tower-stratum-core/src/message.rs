//! Owned Sv2 messages and their conversion to and from [`Frame`]s.
//!
//! Message structs are SRI's lifetime-free `…Owned` types from `stratum-core` 0.6.0, so a
//! message can cross tasks and tower boundaries.

use crate::extensions::{TlvFields, EXTENSIONS_NEGOTIATION};
use crate::frame::{Frame, CHANNEL_MSG_BIT, MAX_PAYLOAD_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
pub use stratum_core::parsers_sv2::{
    CommonMessagesOwned, JobDeclarationOwned, MiningOwned, TemplateDistributionOwned,
};
use stratum_core::{
    binary_sv2::{self, GetSize},
    parsers_sv2::{
        CommonMessages, IsSv2Message, JobDeclaration, Mining, ParserError, TemplateDistribution,
    },
};

/// The three Sv2 subprotocols a connection can be set up for (spec 3.6.1 `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subprotocol {
    /// Mining Protocol (`protocol = 0`, spec 5).
    Mining,
    /// Job Declaration Protocol (`protocol = 1`, spec 6).
    JobDeclaration,
    /// Template Distribution Protocol (`protocol = 2`, spec 7).
    TemplateDistribution,
}

/// One value per subprotocol: the shape of every per-subprotocol setting (inactivity timeouts,
/// client endpoints, what a server supports), indexed by [`Subprotocol`]:
///
/// ```
/// use std::time::Duration;
/// use tower_stratum_core::{PerSubprotocol, Subprotocol};
///
/// let mut timeouts = PerSubprotocol::splat(Some(Duration::from_secs(900)));
/// timeouts[Subprotocol::TemplateDistribution] = None;
/// assert_eq!(timeouts.mining, Some(Duration::from_secs(900)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PerSubprotocol<T> {
    /// Mining Protocol.
    pub mining: T,
    /// Job Declaration Protocol.
    pub job_declaration: T,
    /// Template Distribution Protocol.
    pub template_distribution: T,
}

impl<T> PerSubprotocol<T> {
    /// The three values, in [`Subprotocol::ALL`] order.
    pub const fn new(mining: T, job_declaration: T, template_distribution: T) -> Self {
        Self {
            mining,
            job_declaration,
            template_distribution,
        }
    }

    /// `value` for every subprotocol.
    pub fn splat(value: T) -> Self
    where
        T: Clone,
    {
        Self::new(value.clone(), value.clone(), value)
    }

    /// `f(p)` for every subprotocol `p`.
    pub fn from_fn(mut f: impl FnMut(Subprotocol) -> T) -> Self {
        Self::new(
            f(Subprotocol::Mining),
            f(Subprotocol::JobDeclaration),
            f(Subprotocol::TemplateDistribution),
        )
    }

    /// The value for `p`.
    pub fn get(&self, p: Subprotocol) -> &T {
        match p {
            Subprotocol::Mining => &self.mining,
            Subprotocol::JobDeclaration => &self.job_declaration,
            Subprotocol::TemplateDistribution => &self.template_distribution,
        }
    }

    /// The value for `p`, mutably.
    pub fn get_mut(&mut self, p: Subprotocol) -> &mut T {
        match p {
            Subprotocol::Mining => &mut self.mining,
            Subprotocol::JobDeclaration => &mut self.job_declaration,
            Subprotocol::TemplateDistribution => &mut self.template_distribution,
        }
    }

    /// `f(p, value)` for every subprotocol.
    pub fn map<U>(self, mut f: impl FnMut(Subprotocol, T) -> U) -> PerSubprotocol<U> {
        PerSubprotocol::new(
            f(Subprotocol::Mining, self.mining),
            f(Subprotocol::JobDeclaration, self.job_declaration),
            f(
                Subprotocol::TemplateDistribution,
                self.template_distribution,
            ),
        )
    }

    /// `(subprotocol, value)` pairs in [`Subprotocol::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Subprotocol, &T)> {
        Subprotocol::ALL.into_iter().map(move |p| (p, self.get(p)))
    }
}

impl<T> std::ops::Index<Subprotocol> for PerSubprotocol<T> {
    type Output = T;
    fn index(&self, p: Subprotocol) -> &T {
        self.get(p)
    }
}

impl<T> std::ops::IndexMut<Subprotocol> for PerSubprotocol<T> {
    fn index_mut(&mut self, p: Subprotocol) -> &mut T {
        self.get_mut(p)
    }
}

impl Subprotocol {
    /// All three, in `protocol` discriminant order.
    pub const ALL: [Subprotocol; 3] = [
        Subprotocol::Mining,
        Subprotocol::JobDeclaration,
        Subprotocol::TemplateDistribution,
    ];

    /// The `SetupConnection.protocol` discriminant (0, 1 or 2).
    pub fn discriminant(self) -> u8 {
        match self {
            Subprotocol::Mining => 0,
            Subprotocol::JobDeclaration => 1,
            Subprotocol::TemplateDistribution => 2,
        }
    }

    /// Inverse of [`Self::discriminant`].
    pub fn from_discriminant(d: u8) -> Option<Self> {
        Self::ALL.get(d as usize).copied()
    }

    /// Index 0..3 (the discriminant). Per-subprotocol settings are [`PerSubprotocol`]s,
    /// indexed by the subprotocol itself.
    pub fn index(self) -> usize {
        self.discriminant() as usize
    }

    /// Which subprotocol a core (`extension_type == 0`) message type belongs to; `None` for
    /// common messages (0x00-0x04) and unassigned types. Spec 8.
    pub fn of_msg_type(msg_type: u8) -> Option<Self> {
        match msg_type {
            0x10..=0x25 => Some(Subprotocol::Mining),
            0x50..=0x60 => Some(Subprotocol::JobDeclaration),
            0x70..=0x76 => Some(Subprotocol::TemplateDistribution),
            _ => None,
        }
    }

    /// Converts to SRI's `Protocol`.
    pub fn to_sri(self) -> stratum_core::common_messages_sv2::Protocol {
        use stratum_core::common_messages_sv2::Protocol;
        match self {
            Subprotocol::Mining => Protocol::MiningProtocol,
            Subprotocol::JobDeclaration => Protocol::JobDeclarationProtocol,
            Subprotocol::TemplateDistribution => Protocol::TemplateDistributionProtocol,
        }
    }

    /// Converts from SRI's `Protocol`.
    pub fn from_sri(p: stratum_core::common_messages_sv2::Protocol) -> Self {
        use stratum_core::common_messages_sv2::Protocol;
        match p {
            Protocol::MiningProtocol => Subprotocol::Mining,
            Protocol::JobDeclarationProtocol => Subprotocol::JobDeclaration,
            Protocol::TemplateDistributionProtocol => Subprotocol::TemplateDistribution,
        }
    }
}

impl fmt::Display for Subprotocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subprotocol::Mining => "mining",
            Subprotocol::JobDeclaration => "job-declaration",
            Subprotocol::TemplateDistribution => "template-distribution",
        })
    }
}

/// A message of a protocol extension (`extension_type != 0`, spec 3.4), kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionMessage {
    /// Extension identifier, without the `channel_msg` bit.
    pub extension_type: u16,
    /// `msg_type` within the extension.
    pub msg_type: u8,
    /// Whether `channel_msg` is set; then `payload` starts with the U32 LE `channel_id`.
    pub channel_msg: bool,
    /// The payload, unmodified (spec 3.4.1: relayed messages MUST NOT be otherwise modified).
    pub payload: Bytes,
}

impl ExtensionMessage {
    /// The `channel_id` in the first four payload bytes, when `channel_msg` is set.
    pub fn channel_id(&self) -> Option<u32> {
        if !self.channel_msg {
            return None;
        }
        let b = self.payload.get(..4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Any Sv2 message, owned.
#[derive(Debug, Clone)]
pub enum Sv2Message {
    /// Common messages (spec 3.6): SetupConnection and friends.
    Common(CommonMessagesOwned),
    /// Mining Protocol (spec 5).
    Mining(MiningOwned),
    /// Job Declaration Protocol (spec 6).
    JobDeclaration(JobDeclarationOwned),
    /// Template Distribution Protocol (spec 7).
    TemplateDistribution(TemplateDistributionOwned),
    /// A protocol-extension message, raw (spec 3.4).
    Extension(ExtensionMessage),
    /// A message followed by TLV fields of negotiated extensions (spec 3.4.3). Received: the
    /// session wraps a core message this way only when the connection negotiated an extension
    /// and the payload carries fields of it; the dispatcher passes them to the handler methods
    /// that take TLVs (`handle_submit_shares_extended_with_tlvs`) and drops them for the
    /// others. Sent: build it with [`Sv2Message::with_tlvs`]; the frame header stays the
    /// inner message's (spec 3.4.1: TLV fields never change `extension_type`).
    WithTlvs(Box<MessageWithTlvs>),
}

/// A message and the TLV fields appended after its own fields (spec 3.4.3). See
/// [`Sv2Message::WithTlvs`].
#[derive(Debug, Clone)]
pub struct MessageWithTlvs {
    /// The message (never itself a `WithTlvs`).
    pub message: Sv2Message,
    /// The fields, encoded.
    pub tlvs: TlvFields,
}

/// Why a [`Frame`] could not be turned into a [`Sv2Message`] or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The `msg_type` is not a known message of the subprotocol it was parsed as.
    #[error("unknown message type {msg_type:#04x}")]
    UnknownMessageType {
        /// The offending `msg_type`.
        msg_type: u8,
    },
    /// The payload does not deserialize as the message its `msg_type` names.
    #[error("malformed {name} payload: {detail}")]
    Malformed {
        /// Spec name of the message.
        name: &'static str,
        /// Parser detail.
        detail: String,
    },
    /// The message does not fit in a frame (payload over 2^24 - 1 bytes) or failed to serialize.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

fn parse_err(msg_type: u8, e: ParserError) -> MessageError {
    match e {
        ParserError::UnexpectedMessage(t) => MessageError::UnknownMessageType { msg_type: t },
        other => MessageError::Malformed {
            name: message_name(0, msg_type),
            detail: format!("{other:?}"),
        },
    }
}

/// Spec name of a message, for logs ("SubmitSharesExtended", "RequestExtensions.Success");
/// `"Unknown"` if unassigned, `"ExtensionMessage"` for other extensions' messages.
pub fn message_name(extension_type: u16, msg_type: u8) -> &'static str {
    match (extension_type & !CHANNEL_MSG_BIT, msg_type) {
        (0, _) => {}
        (EXTENSIONS_NEGOTIATION, 0x00) => return "RequestExtensions",
        (EXTENSIONS_NEGOTIATION, 0x01) => return "RequestExtensions.Success",
        (EXTENSIONS_NEGOTIATION, 0x02) => return "RequestExtensions.Error",
        _ => return "ExtensionMessage",
    }
    stratum_core::parsers_sv2::message_type_to_name(msg_type)
}

impl Sv2Message {
    /// Parses a common message (`msg_type` 0x00-0x04).
    pub fn decode_common(msg_type: u8, payload: &mut [u8]) -> Result<Self, MessageError> {
        CommonMessages::try_from((msg_type, payload))
            .map(|m| Sv2Message::Common(m.into_owned()))
            .map_err(|e| parse_err(msg_type, e))
    }

    /// Parses a core message of subprotocol `p` (the caller decided which subprotocol applies,
    /// e.g. from the connection's negotiated protocol).
    pub fn decode_in(
        p: Subprotocol,
        msg_type: u8,
        payload: &mut [u8],
    ) -> Result<Self, MessageError> {
        let r = match p {
            Subprotocol::Mining => {
                Mining::try_from((msg_type, payload)).map(|m| Sv2Message::Mining(m.into_owned()))
            }
            Subprotocol::JobDeclaration => JobDeclaration::try_from((msg_type, payload))
                .map(|m| Sv2Message::JobDeclaration(m.into_owned())),
            Subprotocol::TemplateDistribution => {
                TemplateDistribution::try_from((msg_type, payload))
                    .map(|m| Sv2Message::TemplateDistribution(m.into_owned()))
            }
        };
        r.map_err(|e| parse_err(msg_type, e))
    }

    /// Parses any frame, choosing the subprotocol from the message type (spec 8). Extension
    /// frames become [`Sv2Message::Extension`].
    pub fn decode(frame: Frame) -> Result<Self, MessageError> {
        if frame.extension() != 0 {
            return Ok(Sv2Message::Extension(ExtensionMessage {
                extension_type: frame.extension(),
                msg_type: frame.msg_type,
                channel_msg: frame.channel_msg(),
                payload: frame.payload,
            }));
        }
        let mut buf = BytesMut::from(frame.payload);
        match Subprotocol::of_msg_type(frame.msg_type) {
            Some(p) => Self::decode_in(p, frame.msg_type, &mut buf),
            None => Self::decode_common(frame.msg_type, &mut buf),
        }
    }

    /// The subprotocol the message belongs to; `None` for common and extension messages.
    pub fn subprotocol(&self) -> Option<Subprotocol> {
        match self {
            Sv2Message::Mining(_) => Some(Subprotocol::Mining),
            Sv2Message::JobDeclaration(_) => Some(Subprotocol::JobDeclaration),
            Sv2Message::TemplateDistribution(_) => Some(Subprotocol::TemplateDistribution),
            Sv2Message::Common(_) | Sv2Message::Extension(_) => None,
            Sv2Message::WithTlvs(m) => m.message.subprotocol(),
        }
    }

    /// Appends TLV fields (spec 3.4.3) to this message: the result encodes as this message's
    /// frame with `tlvs` after its own fields. Empty `tlvs` return the message unchanged (no
    /// allocation); a message that already has fields gets `tlvs` after them.
    ///
    /// Send fields only of extensions the connection negotiated
    /// ([`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions)): extension
    /// `0x0001` section 1.1, "Clients MUST NOT use any features from extensions that are not
    /// confirmed as supported by the server."
    pub fn with_tlvs(self, tlvs: TlvFields) -> Sv2Message {
        if tlvs.is_empty() {
            return self;
        }
        match self {
            Sv2Message::WithTlvs(mut m) => {
                let all: Vec<_> = m.tlvs.iter().chain(tlvs.iter()).collect();
                if let Ok(t) = TlvFields::from_tlvs(&all) {
                    m.tlvs = t;
                }
                Sv2Message::WithTlvs(m)
            }
            message => Sv2Message::WithTlvs(Box::new(MessageWithTlvs { message, tlvs })),
        }
    }

    /// The TLV fields appended to this message, if any.
    pub fn tlvs(&self) -> Option<&TlvFields> {
        match self {
            Sv2Message::WithTlvs(m) => Some(&m.tlvs),
            _ => None,
        }
    }

    /// The message without its TLV fields.
    pub fn without_tlvs(self) -> Sv2Message {
        match self {
            Sv2Message::WithTlvs(m) => m.message,
            m => m,
        }
    }

    /// Size in bytes of the message's own fields, serialized (its payload without TLV
    /// fields).
    pub fn encoded_size(&self) -> usize {
        match self {
            Sv2Message::Common(m) => m.get_size(),
            Sv2Message::Mining(m) => m.get_size(),
            Sv2Message::JobDeclaration(m) => m.get_size(),
            Sv2Message::TemplateDistribution(m) => m.get_size(),
            Sv2Message::Extension(m) => m.payload.len(),
            Sv2Message::WithTlvs(m) => m.message.encoded_size(),
        }
    }

    /// The `msg_type` byte.
    pub fn msg_type(&self) -> u8 {
        match self {
            Sv2Message::Common(m) => m.message_type(),
            Sv2Message::Mining(m) => m.message_type(),
            Sv2Message::JobDeclaration(m) => m.message_type(),
            Sv2Message::TemplateDistribution(m) => m.message_type(),
            Sv2Message::Extension(m) => m.msg_type,
            Sv2Message::WithTlvs(m) => m.message.msg_type(),
        }
    }

    /// The `extension_type` for the frame header, including the `channel_msg` bit.
    pub fn extension_type(&self) -> u16 {
        let channel = match self {
            Sv2Message::Common(m) => m.channel_bit(),
            Sv2Message::Mining(m) => m.channel_bit(),
            Sv2Message::JobDeclaration(m) => m.channel_bit(),
            Sv2Message::TemplateDistribution(m) => m.channel_bit(),
            Sv2Message::Extension(m) => {
                return m.extension_type | if m.channel_msg { CHANNEL_MSG_BIT } else { 0 }
            }
            Sv2Message::WithTlvs(m) => return m.message.extension_type(),
        };
        if channel {
            CHANNEL_MSG_BIT
        } else {
            0
        }
    }

    /// Spec name of the message ("OpenExtendedMiningChannel").
    pub fn name(&self) -> &'static str {
        message_name(self.extension_type(), self.msg_type())
    }

    /// Serializes into a [`Frame`] (TLV fields, if any, after the message's own fields).
    ///
    /// Errors with [`MessageError::Encode`] if the payload would exceed 2^24 - 1 bytes.
    pub fn encode(self) -> Result<Frame, MessageError> {
        let extension_type = self.extension_type();
        let msg_type = self.msg_type();
        let (message, tlvs) = match self {
            Sv2Message::WithTlvs(m) => {
                let MessageWithTlvs { message, tlvs } = *m;
                (message, tlvs)
            }
            m => (m, TlvFields::new()),
        };
        let extra = tlvs.as_bytes();
        let payload = match message {
            Sv2Message::Common(m) => to_vec(m, extra)?,
            Sv2Message::Mining(m) => to_vec(m, extra)?,
            Sv2Message::JobDeclaration(m) => to_vec(m, extra)?,
            Sv2Message::TemplateDistribution(m) => to_vec(m, extra)?,
            Sv2Message::Extension(m) if extra.is_empty() => m.payload,
            Sv2Message::Extension(m) => {
                let mut b = BytesMut::with_capacity(m.payload.len() + extra.len());
                b.put_slice(&m.payload);
                b.put_slice(extra);
                b.freeze()
            }
            Sv2Message::WithTlvs(_) => {
                return Err(MessageError::Encode("nested TLV message".into()))
            }
        };
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(MessageError::Encode(format!(
                "payload of {} bytes exceeds the U24 frame limit",
                payload.len()
            )));
        }
        Ok(Frame {
            extension_type,
            msg_type,
            payload,
        })
    }
}

/// Serializes `m` followed by `extra` (TLV fields) in one allocation.
fn to_vec<T>(m: T, extra: &[u8]) -> Result<Bytes, MessageError>
where
    T: GetSize + binary_sv2::Encodable,
{
    let size = m.get_size();
    let mut v = vec![0u8; size + extra.len()];
    let (own, tail) = v.split_at_mut(size);
    m.to_bytes(own)
        .map_err(|e| MessageError::Encode(format!("{e:?}")))?;
    tail.copy_from_slice(extra);
    Ok(Bytes::from(v))
}

impl fmt::Display for Sv2Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sv2Message::Common(m) => write!(f, "{m}"),
            Sv2Message::Mining(m) => write!(f, "{m}"),
            Sv2Message::JobDeclaration(m) => write!(f, "{m:?}"),
            Sv2Message::TemplateDistribution(m) => write!(f, "{m:?}"),
            Sv2Message::Extension(m) => write!(
                f,
                "Extension(type={:#06x}, msg_type={:#04x}, len={})",
                m.extension_type,
                m.msg_type,
                m.payload.len()
            ),
            Sv2Message::WithTlvs(m) => write!(f, "{} + TLV {:?}", m.message, m.tlvs),
        }
    }
}

impl From<CommonMessagesOwned> for Sv2Message {
    fn from(m: CommonMessagesOwned) -> Self {
        Sv2Message::Common(m)
    }
}
impl From<MiningOwned> for Sv2Message {
    fn from(m: MiningOwned) -> Self {
        Sv2Message::Mining(m)
    }
}
impl From<JobDeclarationOwned> for Sv2Message {
    fn from(m: JobDeclarationOwned) -> Self {
        Sv2Message::JobDeclaration(m)
    }
}
impl From<TemplateDistributionOwned> for Sv2Message {
    fn from(m: TemplateDistributionOwned) -> Self {
        Sv2Message::TemplateDistribution(m)
    }
}
