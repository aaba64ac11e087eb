//! Protocol extensions (spec 3.4 "Protocol Extensions", 9 "Extensions"): the set of extensions
//! negotiated on a connection (extension `0x0001`, Extensions Negotiation) and TLV fields
//! (spec 3.4.3 "Stratum V2 TLV Encoding Model"), such as the `user_identity` field of extension
//! `0x0002` (Worker-Specific Hashrate Tracking).
//!
//! The negotiation itself is done by the [`Session`](crate::Session): a server declares what
//! it supports ([`ExtensionSupport`]), a client what it requests ([`ExtensionSet`]); the result
//! is [`ConnectionInfo::extensions`](crate::ConnectionInfo::extensions), so every handler sees
//! it on its [`ConnectionContext`](crate::ConnectionContext).
//!
//! TLV fields use SRI's `parsers_sv2` types ([`Tlv`]); multibyte integers are little-endian
//! as everywhere in Sv2 (spec 3.1), which is also what SRI writes and reads.

use crate::message::{ExtensionMessage, MessageError, Sv2Message};
use bytes::{Bytes, BytesMut};
use std::fmt;
pub use stratum_core::extensions_sv2::{
    RequestExtensionsErrorOwned, RequestExtensionsOwned, RequestExtensionsSuccessOwned,
};
pub use stratum_core::parsers_sv2::ExtensionsNegotiationOwned;
use stratum_core::parsers_sv2::{Extensions, ExtensionsOwned, TlvList, TLV_HEADER_SIZE};
pub use stratum_core::parsers_sv2::{Tlv, TlvError, UserIdentityError};

/// `extension_type` of Extensions Negotiation (extension `0x0001`): `RequestExtensions`,
/// `RequestExtensions.Success`, `RequestExtensions.Error`.
pub const EXTENSIONS_NEGOTIATION: u16 =
    stratum_core::extensions_sv2::EXTENSION_TYPE_EXTENSIONS_NEGOTIATION;
/// `extension_type` of Worker-Specific Hashrate Tracking (extension `0x0002`): a
/// `user_identity` TLV on every `SubmitSharesExtended`.
pub const WORKER_HASHRATE_TRACKING: u16 =
    stratum_core::extensions_sv2::EXTENSION_TYPE_WORKER_HASHRATE_TRACKING;
/// TLV `field_type` of `user_identity` within extension `0x0002`.
pub const USER_IDENTITY_FIELD: u8 = stratum_core::extensions_sv2::TLV_FIELD_TYPE_USER_IDENTITY;
/// Longest `user_identity` value of extension `0x0002`, in bytes (UTF-8, not padded).
pub const MAX_USER_IDENTITY_LEN: usize = stratum_core::extensions_sv2::MAX_USER_IDENTITY_LENGTH;

/// Encodes an Extensions Negotiation message (extension `0x0001` section 2) as the raw
/// extension message that carries it: `extension_type = 0x0001`, `channel_msg` unset
/// (section 3), `msg_type` 0x00/0x01/0x02. The session sends and answers these itself;
/// this is for peers built by hand (tests, tools).
///
/// # Errors
/// [`MessageError::Encode`] if SRI's serializer refuses it.
pub fn encode_negotiation(m: ExtensionsNegotiationOwned) -> Result<Sv2Message, MessageError> {
    use stratum_core::parsers_sv2::IsSv2Message;
    let m = ExtensionsOwned::ExtensionsNegotiation(m);
    let msg_type = m.message_type();
    let payload = stratum_core::binary_sv2::to_bytes(m)
        .map_err(|e| MessageError::Encode(format!("{e:?}")))?;
    Ok(Sv2Message::Extension(ExtensionMessage {
        extension_type: EXTENSIONS_NEGOTIATION,
        msg_type,
        channel_msg: false,
        payload: payload.into(),
    }))
}

/// Decodes the payload of an extension `0x0001` frame of `msg_type`.
///
/// # Errors
/// [`MessageError::UnknownMessageType`] for a `msg_type` other than 0x00-0x02,
/// [`MessageError::Malformed`] for a payload that does not parse.
pub fn decode_negotiation(
    msg_type: u8,
    payload: Bytes,
) -> Result<ExtensionsNegotiationOwned, MessageError> {
    let mut payload = BytesMut::from(payload);
    match Extensions::try_from((EXTENSIONS_NEGOTIATION, msg_type, &mut payload[..])) {
        Ok(m) => match m.into_owned() {
            ExtensionsOwned::ExtensionsNegotiation(m) => Ok(m),
        },
        Err(stratum_core::parsers_sv2::ParserError::UnexpectedMessage(t)) => {
            Err(MessageError::UnknownMessageType { msg_type: t })
        }
        Err(e) => Err(MessageError::Malformed {
            name: crate::message::message_name(EXTENSIONS_NEGOTIATION, msg_type),
            detail: format!("{e:?}"),
        }),
    }
}

/// A small set of extension identifiers (the `extension_type` values of spec 3.4, without the
/// `channel_msg` bit), kept inline so that it is `Copy` like the rest of
/// [`ConnectionInfo`](crate::ConnectionInfo).
///
/// Holds at most [`ExtensionSet::CAPACITY`] distinct non-zero identifiers; `0` (the core
/// protocol) is never a member. Insertion order is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExtensionSet {
    ids: [u16; ExtensionSet::CAPACITY],
    len: u8,
}

impl ExtensionSet {
    /// Most identifiers a set holds.
    pub const CAPACITY: usize = 8;
    /// The empty set.
    pub const EMPTY: Self = Self {
        ids: [0; Self::CAPACITY],
        len: 0,
    };

    /// The set of `ids`, in order, without duplicates and zeros; identifiers beyond
    /// [`CAPACITY`](Self::CAPACITY) distinct ones are dropped.
    pub fn from_ids(ids: &[u16]) -> Self {
        let mut s = Self::EMPTY;
        for &id in ids {
            s.insert(id);
        }
        s
    }

    /// Adds `id`. Returns whether `id` is in the set afterwards: `false` for `0` or when the
    /// set is full.
    pub fn insert(&mut self, id: u16) -> bool {
        if id == 0 {
            return false;
        }
        if self.contains(id) {
            return true;
        }
        let len = usize::from(self.len);
        match self.ids.get_mut(len) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u16) -> bool {
        self.as_slice().contains(&id)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The identifiers, in insertion order.
    pub fn as_slice(&self) -> &[u16] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The identifiers of `self` that are also in `other`, in `self`'s order.
    pub fn intersection(&self, other: &ExtensionSet) -> ExtensionSet {
        self.as_slice()
            .iter()
            .copied()
            .filter(|id| other.contains(*id))
            .collect()
    }
}

impl FromIterator<u16> for ExtensionSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for id in iter {
            s.insert(id);
        }
        s
    }
}

impl fmt::Debug for ExtensionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ExtensionSet {
    /// `[0x0002, 0x0003]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, id) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id:#06x}")?;
        }
        f.write_str("]")
    }
}

/// What a server offers in Extensions Negotiation (extension `0x0001`, section 4) for one
/// subprotocol.
///
/// - A client requesting at least one `supported` extension and every `required` one gets
///   `RequestExtensions.Success` listing the requested ones that are supported.
/// - Otherwise it gets `RequestExtensions.Error` (`unsupported_extensions`: the requested ones
///   not supported; `required_extensions`: the required ones not requested) and may retry.
/// - With `required` non-empty, a client that sends anything else before a successful
///   negotiation is disconnected (section 4, use case 6).
///
/// The default supports nothing: every request is answered with `RequestExtensions.Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtensionSupport {
    /// Extensions the server can use on this subprotocol.
    pub supported: ExtensionSet,
    /// Extensions a client must request (each should also be in `supported`).
    pub required: ExtensionSet,
}

impl ExtensionSupport {
    /// Support for `supported`, none required.
    pub fn supporting(supported: ExtensionSet) -> Self {
        Self {
            supported,
            required: ExtensionSet::EMPTY,
        }
    }

    /// Whether nothing is supported or required (the session then answers every
    /// `RequestExtensions` with an error and does not wait for one).
    pub fn is_empty(&self) -> bool {
        self.supported.is_empty() && self.required.is_empty()
    }
}

/// TLV fields at the end of a message payload (spec 3.4.3), kept encoded: `Type` (U16
/// `extension_type` + U8 `field_type`), `Length` (U16), `Value`, repeated.
///
/// Received: what [`TlvFields::parse`] kept (the well-formed fields of negotiated extensions).
/// Sent: appended after the message's own fields by
/// [`Sv2Message::with_tlvs`](crate::Sv2Message::with_tlvs). Cloning is cheap (reference
/// counted), so a sender can build the fields once and attach them to every message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlvFields(Bytes);

impl TlvFields {
    /// No fields.
    pub fn new() -> Self {
        Self(Bytes::new())
    }

    /// Encodes `tlvs`, ordered by `extension_type` (spec 3.4.3: "TLV fields MUST be ordered
    /// by `extension_type`"; the order within one extension is kept).
    ///
    /// # Errors
    /// [`TlvError`] if SRI's encoder refuses a field.
    pub fn from_tlvs(tlvs: &[Tlv]) -> Result<Self, TlvError> {
        let mut sorted: Vec<&Tlv> = tlvs.iter().collect();
        sorted.sort_by_key(|t| t.r#type.extension_type);
        let mut out = Vec::with_capacity(tlvs.iter().map(Tlv::encoded_size).sum());
        for t in sorted {
            out.extend_from_slice(&t.encode()?);
        }
        Ok(Self(Bytes::from(out)))
    }

    /// The `user_identity` field of extension `0x0002` (Worker-Specific Hashrate Tracking,
    /// section 1.1) for `name`, cut to at most [`MAX_USER_IDENTITY_LEN`] (32) bytes at a
    /// character boundary (the field is UTF-8 and never padded).
    pub fn user_identity(name: &str) -> Self {
        let mut end = name.len().min(MAX_USER_IDENTITY_LEN);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let value = name.as_bytes().get(..end).unwrap_or_default().to_vec();
        let tlv = Tlv::new(WORKER_HASHRATE_TRACKING, USER_IDENTITY_FIELD, value);
        // A value of at most 32 bytes always encodes.
        Self::from_tlvs(std::slice::from_ref(&tlv)).unwrap_or_default()
    }

    /// The TLV fields in `bytes` (the payload after a message's own fields) that belong to an
    /// extension in `negotiated`; the others are ignored, as extension `0x0002` section 1.3
    /// and spec 3.4.3 require ("the server MUST ignore any unexpected TLV fields"). Parsing
    /// stops at the first malformed field (a header cut short, or a `Length` beyond the end):
    /// what follows cannot be framed, so it is dropped. Never panics.
    pub fn parse(bytes: &[u8], negotiated: &ExtensionSet) -> Self {
        if bytes.len() < TLV_HEADER_SIZE || negotiated.is_empty() {
            return Self::new();
        }
        let mut out = Vec::new();
        let mut all_kept = true;
        let mut used = 0usize;
        for r in TlvList::from_bytes(bytes).iter() {
            let Ok(tlv) = r else { break };
            let size = tlv.encoded_size();
            match bytes.get(used..used + size) {
                Some(raw) if negotiated.contains(tlv.r#type.extension_type) => {
                    out.extend_from_slice(raw)
                }
                _ => all_kept = false,
            }
            used += size;
        }
        if all_kept && used == bytes.len() {
            return Self(Bytes::copy_from_slice(bytes));
        }
        Self(Bytes::from(out))
    }

    /// The fields, decoded.
    pub fn iter(&self) -> impl Iterator<Item = Tlv> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let t = Tlv::decode(rest).ok()?;
            rest = rest.get(t.encoded_size()..)?;
            Some(t)
        })
    }

    /// The first field with this `extension_type` and `field_type`.
    pub fn find(&self, extension_type: u16, field_type: u8) -> Option<Tlv> {
        self.iter().find(|t| {
            t.r#type.extension_type == extension_type && t.r#type.field_type == field_type
        })
    }

    /// The `user_identity` of extension `0x0002` (section 1.1), if the field is present:
    /// `Err(TooLong)` above 32 bytes (spec 3.4.3: the recipient MUST reject the message),
    /// `Err(InvalidUtf8)` if it is not UTF-8.
    pub fn user_identity_value(&self) -> Option<Result<String, UserIdentityError>> {
        let tlv = self.find(WORKER_HASHRATE_TRACKING, USER_IDENTITY_FIELD)?;
        if tlv.value.len() > MAX_USER_IDENTITY_LEN {
            return Some(Err(UserIdentityError::TooLong(tlv.value.len())));
        }
        Some(
            String::from_utf8(tlv.value).map_err(|e| UserIdentityError::InvalidUtf8(e.to_string())),
        )
    }

    /// The encoded fields.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for TlvFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|t| format!("{t}")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extension_set_is_a_small_ordered_set() {
        let s = ExtensionSet::from_ids(&[2, 0, 3, 2]);
        assert_eq!(s.as_slice(), [2, 3]);
        assert!(s.contains(3) && !s.contains(0) && !s.contains(4));
        let full: ExtensionSet = (1..=20).collect();
        assert_eq!(full.len(), ExtensionSet::CAPACITY);
        assert!(!full.contains(9));
        assert_eq!(
            s.intersection(&ExtensionSet::from_ids(&[3, 5])).as_slice(),
            [3]
        );
        assert_eq!(s.to_string(), "[0x0002, 0x0003]");
    }

    #[test]
    fn user_identity_is_little_endian_and_cut_at_a_char_boundary() {
        let t = TlvFields::user_identity("Worker_001");
        assert_eq!(
            t.as_bytes(),
            [&[0x02, 0x00, 0x01, 0x0a, 0x00][..], b"Worker_001"].concat()
        );
        assert_eq!(t.user_identity_value().unwrap().unwrap(), "Worker_001");
        // 31 ASCII bytes then a 2-byte character: the character does not fit in 32.
        let name = format!("{}é", "a".repeat(31));
        let t = TlvFields::user_identity(&name);
        assert_eq!(t.user_identity_value().unwrap().unwrap(), "a".repeat(31));
        let long = "w".repeat(40);
        assert_eq!(
            TlvFields::user_identity(&long)
                .user_identity_value()
                .unwrap()
                .unwrap()
                .len(),
            32
        );
    }

    #[test]
    fn parse_keeps_negotiated_well_formed_fields_and_never_panics() {
        let two = ExtensionSet::from_ids(&[WORKER_HASHRATE_TRACKING]);
        let ok = TlvFields::user_identity("w1");
        assert_eq!(TlvFields::parse(ok.as_bytes(), &two), ok);
        // Not negotiated: ignored.
        assert!(TlvFields::parse(ok.as_bytes(), &ExtensionSet::from_ids(&[3])).is_empty());
        // Another extension's field first: dropped, ours kept.
        let other = Tlv::new(0x4001, 1, vec![1, 2, 3]);
        let both = TlvFields::from_tlvs(&[Tlv::new(2, 1, b"w1".to_vec()), other]).unwrap();
        assert_eq!(TlvFields::parse(both.as_bytes(), &two), ok);
        // Truncated: a length beyond the end, a header cut short, garbage.
        let mut cut = ok.as_bytes().to_vec();
        cut.pop();
        assert!(TlvFields::parse(&cut, &two).is_empty());
        let mut tail = ok.as_bytes().to_vec();
        tail.extend_from_slice(&[2, 0, 1]);
        assert_eq!(TlvFields::parse(&tail, &two), ok);
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = TlvFields::parse(&junk, &two).user_identity_value();
        }
        // Too long a user_identity is reported, not truncated.
        let long = TlvFields::from_tlvs(&[Tlv::new(2, 1, vec![b'x'; 40])]).unwrap();
        assert!(matches!(
            TlvFields::parse(long.as_bytes(), &two).user_identity_value(),
            Some(Err(UserIdentityError::TooLong(40)))
        ));
        // Not UTF-8.
        let bad = TlvFields::from_tlvs(&[Tlv::new(2, 1, vec![0xff, 0xfe])]).unwrap();
        assert!(matches!(
            bad.user_identity_value(),
            Some(Err(UserIdentityError::InvalidUtf8(_)))
        ));
    }
}
