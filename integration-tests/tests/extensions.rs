//! Deterministic tests of Extensions Negotiation (extension 0x0001) and TLV fields (spec
//! 3.4.3, extension 0x0002's `user_identity`) in the sans-IO session: no sockets, no runtime,
//! a virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tower_stratum_core::extensions::{
    ExtensionsNegotiationOwned, Tlv, EXTENSIONS_NEGOTIATION, WORKER_HASHRATE_TRACKING,
};
use tower_stratum_core::session::TransportHandshake;
use tower_stratum_core::session::{ProtocolSupport, Violation};
use tower_stratum_core::stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tower_stratum_core::PerSubprotocol;
use tower_stratum_core::{
    CloseReason, ConnectionInfo, ExtensionSet, ExtensionSupport, Session, SessionConfig,
    SessionOutput, Subprotocol, Sv2Message, TlvFields,
};
use tower_stratum_test_kit::msg::{self, frame, raw_frame};

const EXT2: u16 = WORKER_HASHRATE_TRACKING;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

fn mining_only() -> PerSubprotocol<Option<ProtocolSupport>> {
    PerSubprotocol::new(
        Some(ProtocolSupport {
            supported_flags: 0,
            success_flags: 0,
            inactivity_timeout: Some(Duration::from_secs(60)),
        }),
        None,
        None,
    )
}

fn support(supported: &[u16], required: &[u16]) -> PerSubprotocol<ExtensionSupport> {
    PerSubprotocol::new(
        ExtensionSupport {
            supported: ExtensionSet::from_ids(supported),
            required: ExtensionSet::from_ids(required),
        },
        ExtensionSupport::default(),
        ExtensionSupport::default(),
    )
}

fn drain(s: &mut Session) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn established(out: &[SessionOutput]) -> Option<ConnectionInfo> {
    out.iter().find_map(|o| match o {
        SessionOutput::Established(i) => Some(*i),
        _ => None,
    })
}

fn close_reason(out: &[SessionOutput]) -> Option<CloseReason> {
    out.iter().find_map(|o| match o {
        SessionOutput::Close(r) => Some(r.clone()),
        _ => None,
    })
}

fn transmitted(out: &[SessionOutput]) -> Vec<Sv2Message> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Transmit(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn delivered(out: &[SessionOutput]) -> Vec<Sv2Message> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Deliver(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The one extension 0x0001 message in `out`'s transmissions.
fn negotiation_sent(out: &[SessionOutput]) -> ExtensionsNegotiationOwned {
    let sent: Vec<_> = transmitted(out)
        .iter()
        .filter_map(msg::negotiation)
        .collect();
    match <[_; 1]>::try_from(sent) {
        Ok([m]) => m,
        Err(v) => panic!("expected one negotiation message, got {v:?}"),
    }
}

fn success_ids(m: &ExtensionsNegotiationOwned) -> Vec<u16> {
    match m {
        ExtensionsNegotiationOwned::RequestExtensionsSuccess(s) => {
            s.supported_extensions.clone().into_inner()
        }
        other => panic!("expected RequestExtensions.Success, got {other:?}"),
    }
}

fn error_ids(m: &ExtensionsNegotiationOwned) -> (Vec<u16>, Vec<u16>) {
    match m {
        ExtensionsNegotiationOwned::RequestExtensionsError(e) => (
            e.unsupported_extensions.clone().into_inner(),
            e.required_extensions.clone().into_inner(),
        ),
        other => panic!("expected RequestExtensions.Error, got {other:?}"),
    }
}

/// A plaintext server session for Mining with `ext` support, SetupConnection done.
fn server(ext: PerSubprotocol<ExtensionSupport>, t0: Instant) -> (Session, Vec<SessionOutput>) {
    let mut s = Session::server(
        SessionConfig::default(),
        mining_only(),
        TransportHandshake::None,
        t0,
    )
    .with_extension_support(ext);
    s.handle_frame(
        t0,
        frame(msg::setup_connection(Subprotocol::Mining, 2, 2, 0)),
    );
    let out = drain(&mut s);
    (s, out)
}

/// A plaintext client session requesting `ids`, with its SetupConnection sent.
fn client(ids: &[u16], t0: Instant) -> Session {
    let mut c = Session::client(
        SessionConfig::default(),
        msg::setup_connection_owned(Subprotocol::Mining, 0),
        None,
        TransportHandshake::None,
        t0,
    )
    .with_extension_request(ExtensionSet::from_ids(ids), REPLY_TIMEOUT);
    drain(&mut c);
    c
}

/// `SubmitSharesExtended` followed by `tail` (TLV bytes or garbage).
fn share_with(tail: &[u8]) -> tower_stratum_core::Frame {
    let base = frame(msg::submit_extended(2, 7));
    let mut payload = base.payload.to_vec();
    payload.extend_from_slice(tail);
    raw_frame(base.extension_type, base.msg_type, &payload)
}

// ------------------------------------------------------------------------- server side

#[test]
fn server_answers_with_the_supported_subset_and_reports_it_when_established() {
    let t0 = Instant::now();
    let (mut s, out) = server(support(&[EXT2], &[]), t0);
    // SetupConnection.Success goes out, but the connection is not reported established until
    // the negotiation is over (handlers must see the negotiated set from the start).
    assert!(matches!(
        transmitted(&out).as_slice(),
        [Sv2Message::Common(
            CommonMessagesOwned::SetupConnectionSuccess(_)
        )]
    ));
    assert!(established(&out).is_none());
    // Partial: 0x0003 is not supported, 0x0002 is.
    s.handle_frame(t0, frame(msg::request_extensions(9, &[0x0003, EXT2])));
    let out = drain(&mut s);
    let m = negotiation_sent(&out);
    assert_eq!(success_ids(&m), [EXT2]);
    match m {
        ExtensionsNegotiationOwned::RequestExtensionsSuccess(s) => assert_eq!(s.request_id, 9),
        _ => unreachable!(),
    }
    let info = established(&out).expect("established after the negotiation");
    assert_eq!(info.extensions.as_slice(), [EXT2]);
    assert_eq!(s.info().unwrap().extensions.as_slice(), [EXT2]);
    // The answer precedes the Established report, and nothing is delivered to handlers.
    assert!(delivered(&out).is_empty());
}

#[test]
fn server_error_lists_unsupported_and_the_client_may_continue_without_extensions() {
    let t0 = Instant::now();
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[0x0003, 0x4001])));
    let out = drain(&mut s);
    assert_eq!(
        error_ids(&negotiation_sent(&out)),
        (vec![3, 0x4001], vec![])
    );
    assert!(established(&out).is_none(), "the client may still retry");
    // The client goes on without extensions: established (empty set), message delivered.
    s.handle_frame(t0, frame(msg::open_extended(1)));
    let out = drain(&mut s);
    assert!(established(&out).unwrap().extensions.is_empty());
    assert!(matches!(
        delivered(&out).as_slice(),
        [Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(
            _
        ))]
    ));
    assert!(close_reason(&out).is_none());
}

#[test]
fn server_requiring_an_extension_lets_the_client_retry_then_disconnects_it() {
    let t0 = Instant::now();
    let (mut s, _) = server(support(&[EXT2], &[EXT2]), t0);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[0x0003])));
    let out = drain(&mut s);
    assert_eq!(error_ids(&negotiation_sent(&out)), (vec![3], vec![EXT2]));
    // Retry with the required one: success.
    s.handle_frame(t0, frame(msg::request_extensions(2, &[EXT2])));
    let out = drain(&mut s);
    assert_eq!(success_ids(&negotiation_sent(&out)), [EXT2]);
    assert_eq!(established(&out).unwrap().extensions.as_slice(), [EXT2]);

    // A client that ignores the requirement and opens a channel is disconnected.
    let (mut s, _) = server(support(&[EXT2], &[EXT2]), t0);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[0x0003])));
    drain(&mut s);
    s.handle_frame(t0, frame(msg::open_extended(1)));
    let out = drain(&mut s);
    assert!(delivered(&out).is_empty() && established(&out).is_none());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(
            Violation::RequiredExtensionsMissing(_)
        ))
    ));
    // Nor does a client that never asks get through.
    let (mut s, _) = server(support(&[EXT2], &[EXT2]), t0);
    s.handle_frame(t0, frame(msg::open_extended(1)));
    assert!(close_reason(&drain(&mut s)).is_some());
}

#[test]
fn request_before_setup_and_request_twice_close() {
    let t0 = Instant::now();
    let mut s = Session::server(
        SessionConfig::default(),
        mining_only(),
        TransportHandshake::None,
        t0,
    )
    .with_extension_support(support(&[EXT2], &[]));
    s.handle_frame(t0, frame(msg::request_extensions(1, &[EXT2])));
    let out = drain(&mut s);
    assert!(transmitted(&out).is_empty());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(Violation::SetupNotFirst {
            got: "RequestExtensions"
        }))
    ));

    // Twice after a success.
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[EXT2])));
    drain(&mut s);
    s.handle_frame(t0, frame(msg::request_extensions(2, &[EXT2])));
    let out = drain(&mut s);
    assert!(transmitted(&out).is_empty());
    assert_eq!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(
            Violation::LateRequestExtensions
        ))
    );

    // After another message (here on a server that supports nothing, established at once).
    let (mut s, out) = server(PerSubprotocol::default(), t0);
    assert!(established(&out).is_some());
    s.handle_frame(t0, frame(msg::open_extended(1)));
    drain(&mut s);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[EXT2])));
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(
            Violation::LateRequestExtensions
        ))
    );
}

#[test]
fn server_without_extensions_answers_an_error_and_stays_up() {
    let t0 = Instant::now();
    let (mut s, out) = server(PerSubprotocol::default(), t0);
    assert!(established(&out).unwrap().extensions.is_empty());
    s.handle_frame(t0, frame(msg::request_extensions(4, &[EXT2])));
    let out = drain(&mut s);
    assert_eq!(error_ids(&negotiation_sent(&out)), (vec![EXT2], vec![]));
    assert!(close_reason(&out).is_none() && !s.is_closed());
}

#[test]
fn malformed_or_misdirected_negotiation_messages_close_without_panicking() {
    let t0 = Instant::now();
    // Truncated RequestExtensions.
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, raw_frame(EXTENSIONS_NEGOTIATION, 0x00, &[1, 0, 5]));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(Violation::Malformed(_)))
    ));
    // A server receiving a server-to-client answer.
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, frame(msg::request_extensions_success(1, &[EXT2])));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(
            Violation::WrongDirection { .. }
        ))
    ));
    // Unassigned message type of extension 0x0001.
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, raw_frame(EXTENSIONS_NEGOTIATION, 0x07, &[]));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(Violation::UnknownMessageType {
            msg_type: 0x07
        }))
    ));
    // Arbitrary payloads: always a reply or a close, never a panic.
    for len in 0..40u8 {
        let payload: Vec<u8> = (0..len).map(|i| i.wrapping_mul(151) ^ len).collect();
        for msg_type in 0..4 {
            let (mut s, _) = server(support(&[EXT2], &[EXT2]), t0);
            s.handle_frame(t0, raw_frame(EXTENSIONS_NEGOTIATION, msg_type, &payload));
            drain(&mut s);
        }
    }
}

// ------------------------------------------------------------------------- client side

/// Feeds `SetupConnection.Success` to a client session; returns what it produced.
fn setup_success(c: &mut Session, t: Instant) -> Vec<SessionOutput> {
    c.handle_frame(t, frame(msg::setup_success(2, 0)));
    drain(c)
}

#[test]
fn client_requests_after_setup_and_is_established_with_the_answer() {
    let t0 = Instant::now();
    let mut c = client(&[EXT2, 0x0003], t0);
    let out = setup_success(&mut c, t0);
    assert!(established(&out).is_none(), "waits for the answer");
    match negotiation_sent(&out) {
        ExtensionsNegotiationOwned::RequestExtensions(r) => {
            assert_eq!(r.requested_extensions.into_inner(), [EXT2, 3])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.poll_timeout(), Some(t0 + REPLY_TIMEOUT));
    // The server lists 0x0002 and, wrongly, 0x0005 that was never requested: ignored.
    c.handle_frame(t0, frame(msg::request_extensions_success(1, &[EXT2, 5])));
    let out = drain(&mut c);
    assert_eq!(established(&out).unwrap().extensions.as_slice(), [EXT2]);
    assert_eq!(c.poll_timeout(), None, "reply timer disarmed");
}

#[test]
fn client_error_continues_without_extensions_unless_the_server_requires_some() {
    let t0 = Instant::now();
    let mut c = client(&[EXT2], t0);
    setup_success(&mut c, t0);
    c.handle_frame(t0, frame(msg::request_extensions_error(1, &[EXT2], &[])));
    let out = drain(&mut c);
    assert!(established(&out).unwrap().extensions.is_empty());
    assert!(close_reason(&out).is_none());

    let mut c = client(&[EXT2], t0);
    setup_success(&mut c, t0);
    c.handle_frame(t0, frame(msg::request_extensions_error(1, &[], &[0x0005])));
    let out = drain(&mut c);
    assert!(established(&out).is_none());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::Incompatible(_))
    ));
}

#[test]
fn client_continues_without_extensions_when_the_server_ignores_the_request() {
    let t0 = Instant::now();
    let mut c = client(&[EXT2], t0);
    setup_success(&mut c, t0);
    c.handle_timeout(t0 + REPLY_TIMEOUT - Duration::from_millis(1));
    assert!(established(&drain(&mut c)).is_none());
    c.handle_timeout(t0 + REPLY_TIMEOUT);
    let out = drain(&mut c);
    assert!(established(&out).unwrap().extensions.is_empty());
    assert!(close_reason(&out).is_none(), "a timeout here is not fatal");
    // A late answer changes nothing.
    c.handle_frame(
        t0 + REPLY_TIMEOUT * 2,
        frame(msg::request_extensions_success(1, &[EXT2])),
    );
    let out = drain(&mut c);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.info().unwrap().extensions, ExtensionSet::EMPTY);
}

#[test]
fn client_without_a_request_sends_nothing_extra() {
    let t0 = Instant::now();
    let mut c = client(&[], t0);
    let out = setup_success(&mut c, t0);
    assert!(transmitted(&out).is_empty());
    assert!(established(&out).unwrap().extensions.is_empty());
    assert_ne!(c.poll_timeout(), Some(t0 + REPLY_TIMEOUT));
}

/// Client and server sessions back to back: every transmission of one is fed to the other.
#[test]
fn client_and_server_sessions_negotiate_with_each_other() {
    let t0 = Instant::now();
    for (supported, required, want) in [
        (vec![EXT2], vec![], vec![EXT2]),
        (vec![], vec![], vec![]),
        (vec![0x0003], vec![], vec![]),
    ] {
        let mut srv = Session::server(
            SessionConfig::default(),
            mining_only(),
            TransportHandshake::None,
            t0,
        )
        .with_extension_support(support(&supported, &required));
        let mut c = Session::client(
            SessionConfig::default(),
            msg::setup_connection_owned(Subprotocol::Mining, 0),
            None,
            TransportHandshake::None,
            t0,
        )
        .with_extension_request(ExtensionSet::from_ids(&[EXT2]), REPLY_TIMEOUT);
        let (mut c_info, mut s_info) = (None, None);
        for _ in 0..8 {
            for o in drain(&mut c) {
                match o {
                    SessionOutput::Transmit(m) => srv.handle_frame(t0, frame(m)),
                    SessionOutput::Established(i) => c_info = Some(i),
                    other => panic!("client: {other:?}"),
                }
            }
            for o in drain(&mut srv) {
                match o {
                    SessionOutput::Transmit(m) => c.handle_frame(t0, frame(m)),
                    SessionOutput::Established(i) => s_info = Some(i),
                    other => panic!("server: {other:?}"),
                }
            }
        }
        let c_info = c_info.expect("client established");
        assert_eq!(c_info.extensions.as_slice(), want.as_slice());
        // The server reports the connection once negotiation is over: at once if it supports
        // nothing, else at its Success or the client's first other message.
        if let Some(s_info) = s_info {
            assert_eq!(s_info.extensions, c_info.extensions);
        } else {
            srv.handle_frame(t0, frame(msg::open_extended(1)));
            let out = drain(&mut srv);
            assert_eq!(established(&out).unwrap().extensions, c_info.extensions);
        }
    }
}

// ------------------------------------------------------------------------- TLV fields

fn negotiated_server(t0: Instant) -> Session {
    let (mut s, _) = server(support(&[EXT2], &[]), t0);
    s.handle_frame(t0, frame(msg::request_extensions(1, &[EXT2])));
    drain(&mut s);
    s
}

#[test]
fn user_identity_tlv_reaches_the_handler_only_when_negotiated() {
    let t0 = Instant::now();
    let tlv = TlvFields::user_identity("alice");
    // Negotiated: delivered with the field.
    let mut s = negotiated_server(t0);
    s.handle_frame(t0, share_with(tlv.as_bytes()));
    match delivered(&drain(&mut s)).as_slice() {
        [m @ Sv2Message::WithTlvs(w)] => {
            assert!(matches!(
                w.message,
                Sv2Message::Mining(MiningOwned::SubmitSharesExtended(_))
            ));
            assert_eq!(
                m.tlvs().unwrap().user_identity_value().unwrap().unwrap(),
                "alice"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without a share field: the plain message (no allocation for TLVs).
    s.handle_frame(t0, frame(msg::submit_extended(2, 8)));
    assert!(matches!(
        delivered(&drain(&mut s)).as_slice(),
        [Sv2Message::Mining(MiningOwned::SubmitSharesExtended(_))]
    ));
    // Not negotiated: the field is ignored (spec 0x0002 section 1.3), the share delivered.
    let (mut s, _) = server(PerSubprotocol::default(), t0);
    s.handle_frame(t0, share_with(tlv.as_bytes()));
    assert!(matches!(
        delivered(&drain(&mut s)).as_slice(),
        [Sv2Message::Mining(MiningOwned::SubmitSharesExtended(_))]
    ));
}

#[test]
fn malformed_or_foreign_tlvs_are_ignored_never_a_panic() {
    let t0 = Instant::now();
    let mut s = negotiated_server(t0);
    let good = TlvFields::user_identity("bob");
    let foreign = TlvFields::from_tlvs(&[Tlv::new(0x4001, 1, vec![1, 2])]).unwrap();
    let mut cut = good.as_bytes().to_vec();
    cut.truncate(cut.len() - 1);
    let mut foreign_then_good = foreign.as_bytes().to_vec();
    foreign_then_good.extend_from_slice(good.as_bytes());
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("foreign extension only", foreign.as_bytes().to_vec(), None),
        ("length beyond the end", cut, None),
        ("header cut short", vec![2, 0, 1], None),
        ("foreign then ours", foreign_then_good, Some("bob")),
    ];
    for (what, tail, want) in cases {
        s.handle_frame(t0, share_with(&tail));
        let got = delivered(&drain(&mut s));
        let [m] = got.as_slice() else {
            panic!("{what}: {got:?}")
        };
        assert!(!s.is_closed(), "{what}");
        let name = m
            .tlvs()
            .and_then(|t| t.user_identity_value())
            .map(|r| r.unwrap());
        assert_eq!(name.as_deref(), want, "{what}");
    }
    // Over-long user_identity: delivered with the field, which reports the violation so the
    // handler can reject the share (spec 3.4.3).
    let long = TlvFields::from_tlvs(&[Tlv::new(EXT2, 1, vec![b'x'; 33])]).unwrap();
    s.handle_frame(t0, share_with(long.as_bytes()));
    let got = delivered(&drain(&mut s));
    assert!(got[0]
        .tlvs()
        .unwrap()
        .user_identity_value()
        .unwrap()
        .is_err());
    // Garbage of every small length.
    for len in 0..64u8 {
        let tail: Vec<u8> = (0..len).map(|i| i.wrapping_mul(97) ^ 0x5a).collect();
        s.handle_frame(t0, share_with(&tail));
        assert_eq!(delivered(&drain(&mut s)).len(), 1);
    }
    assert!(!s.is_closed());
}

#[test]
fn tlvs_encode_after_the_message_with_an_unchanged_header() {
    let plain = frame(msg::submit_extended(2, 7));
    let tlv = TlvFields::user_identity("Worker_001");
    let with = frame(msg::submit_extended(2, 7).with_tlvs(tlv.clone()));
    // Spec 3.4.1: the frame's extension_type stays the core message's (0, channel_msg set).
    assert_eq!(with.extension_type, plain.extension_type);
    assert_eq!(with.msg_type, plain.msg_type);
    // Spec 3.4.3's example, with Sv2's little-endian U16s: 02 00 01 0a 00 "Worker_001".
    let mut want = plain.payload.to_vec();
    want.extend_from_slice(&[0x02, 0x00, 0x01, 0x0a, 0x00]);
    want.extend_from_slice(b"Worker_001");
    assert_eq!(&with.payload[..], &want[..]);
    // Empty fields change nothing.
    assert!(matches!(
        msg::submit_extended(2, 7).with_tlvs(TlvFields::new()),
        Sv2Message::Mining(_)
    ));
}
