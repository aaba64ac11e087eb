//! Deterministic session tests: no sockets, no runtime, a virtual clock (`Instant`s passed in).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tower_stratum_core::session::TransportHandshake;
use tower_stratum_core::session::{
    MaxPayload, ProtocolSupport, Timer, Violation, REQUIRES_FIXED_VERSION,
    REQUIRES_VERSION_ROLLING, REQUIRES_WORK_SELECTION,
};
use tower_stratum_core::stratum_core::parsers_sv2::CommonMessagesOwned;
use tower_stratum_core::{
    CloseReason, PerSubprotocol, Session, SessionConfig, SessionOutput, Subprotocol, Sv2Message,
};
use tower_stratum_test_kit::msg::{self, frame, raw_frame};

const MINING_ONLY: PerSubprotocol<Option<ProtocolSupport>> = PerSubprotocol::new(
    Some(ProtocolSupport {
        supported_flags: REQUIRES_VERSION_ROLLING,
        success_flags: 0,
        inactivity_timeout: Some(Duration::from_secs(60)),
    }),
    None,
    None,
);

fn all_supported() -> PerSubprotocol<Option<ProtocolSupport>> {
    PerSubprotocol::splat(Some(ProtocolSupport {
        supported_flags: 0,
        success_flags: 0,
        inactivity_timeout: None,
    }))
}

fn drain(s: &mut Session) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
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

/// A plaintext server session that has completed SetupConnection for `p`.
fn established(p: Subprotocol, t0: Instant) -> Session {
    let mut s = Session::server(
        SessionConfig::default(),
        all_supported(),
        TransportHandshake::None,
        t0,
    );
    s.handle_frame(t0, frame(msg::setup_connection(p, 2, 2, 0)));
    let out = drain(&mut s);
    assert!(out
        .iter()
        .any(|o| matches!(o, SessionOutput::Established(_))));
    s
}

fn setup_error(out: &[SessionOutput]) -> (u32, String) {
    match transmitted(out).as_slice() {
        [Sv2Message::Common(CommonMessagesOwned::SetupConnectionError(e))] => (
            e.flags,
            String::from_utf8(e.error_code.as_bytes().to_vec()).unwrap(),
        ),
        other => panic!("expected one SetupConnection.Error, got {other:?}"),
    }
}

#[test]
fn setup_connection_success_negotiates_highest_common_version() {
    let t0 = Instant::now();
    let cfg = SessionConfig {
        min_version: 2,
        max_version: 3,
        ..SessionConfig::default()
    };
    let mut s = Session::server(cfg, MINING_ONLY, TransportHandshake::None, t0);
    s.handle_frame(
        t0,
        frame(msg::setup_connection(
            Subprotocol::Mining,
            1,
            5,
            REQUIRES_VERSION_ROLLING,
        )),
    );
    let out = drain(&mut s);
    match transmitted(&out).as_slice() {
        [Sv2Message::Common(CommonMessagesOwned::SetupConnectionSuccess(ok))] => {
            assert_eq!(ok.used_version, 3)
        }
        other => panic!("{other:?}"),
    }
    let info = s.info().unwrap();
    assert_eq!(info.protocol, Subprotocol::Mining);
    assert_eq!(info.flags, REQUIRES_VERSION_ROLLING);
}

#[test]
fn message_before_setup_connection_closes_without_delivery() {
    let t0 = Instant::now();
    let mut s = Session::server(
        SessionConfig::default(),
        MINING_ONLY,
        TransportHandshake::None,
        t0,
    );
    s.handle_frame(t0, frame(msg::open_standard(1)));
    let out = drain(&mut s);
    assert!(delivered(&out).is_empty());
    assert!(transmitted(&out).is_empty());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(Violation::SetupNotFirst { .. }))
    ));
}

#[test]
fn setup_connection_twice_closes() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    s.handle_frame(
        t0,
        frame(msg::setup_connection(Subprotocol::Mining, 2, 2, 0)),
    );
    let out = drain(&mut s);
    assert_eq!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(Violation::SetupTwice))
    );
}

#[test]
fn setup_connection_late_times_out() {
    let t0 = Instant::now();
    let cfg = SessionConfig::default();
    let mut s = Session::server(cfg, MINING_ONLY, TransportHandshake::None, t0);
    assert_eq!(s.poll_timeout(), Some(t0 + cfg.setup_timeout));
    s.handle_timeout(t0 + cfg.setup_timeout - Duration::from_millis(1));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + cfg.setup_timeout);
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::TimedOut(Timer::Setup))
    );
    // A SetupConnection after the close changes nothing.
    s.handle_frame(
        t0 + cfg.setup_timeout,
        frame(msg::setup_connection(Subprotocol::Mining, 2, 2, 0)),
    );
    assert!(drain(&mut s).is_empty());
}

#[test]
fn handshake_deadline_then_setup_deadline() {
    let t0 = Instant::now();
    let cfg = SessionConfig::default();
    let mut s = Session::server(cfg, MINING_ONLY, TransportHandshake::Noise, t0);
    assert_eq!(s.poll_timeout(), Some(t0 + cfg.handshake_timeout));
    let t1 = t0 + Duration::from_secs(3);
    s.handshake_complete(t1);
    assert_eq!(s.poll_timeout(), Some(t1 + cfg.setup_timeout));

    let mut s = Session::server(cfg, MINING_ONLY, TransportHandshake::Noise, t0);
    s.handle_timeout(t0 + cfg.handshake_timeout);
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::TimedOut(Timer::Handshake))
    );
}

#[test]
fn version_mismatch_is_refused_with_spec_code() {
    let t0 = Instant::now();
    let mut s = Session::server(
        SessionConfig::default(),
        MINING_ONLY,
        TransportHandshake::None,
        t0,
    );
    s.handle_frame(
        t0,
        frame(msg::setup_connection(Subprotocol::Mining, 3, 4, 0)),
    );
    let out = drain(&mut s);
    assert_eq!(setup_error(&out), (0, "protocol-version-mismatch".into()));
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::SetupRejected { .. })
    ));
}

#[test]
fn setup_error_lists_all_unsupported_flags() {
    let t0 = Instant::now();
    let mut s = Session::server(
        SessionConfig::default(),
        MINING_ONLY,
        TransportHandshake::None,
        t0,
    );
    // Server honours only REQUIRES_VERSION_ROLLING (bit 2); ask for bits 0..=2 and 7.
    s.handle_frame(
        t0,
        frame(msg::setup_connection(
            Subprotocol::Mining,
            2,
            2,
            0b1000_0111,
        )),
    );
    let out = drain(&mut s);
    assert_eq!(
        setup_error(&out),
        (0b1000_0011, "unsupported-feature-flags".into())
    );
    assert!(s.is_closed());
}

#[test]
fn unsupported_subprotocols_are_refused() {
    for p in [
        Subprotocol::JobDeclaration,
        Subprotocol::TemplateDistribution,
    ] {
        let t0 = Instant::now();
        let mut s = Session::server(
            SessionConfig::default(),
            MINING_ONLY,
            TransportHandshake::None,
            t0,
        );
        s.handle_frame(t0, frame(msg::setup_connection(p, 2, 2, 0)));
        let out = drain(&mut s);
        assert_eq!(setup_error(&out), (0, "unsupported-protocol".into()), "{p}");
        assert!(delivered(&out).is_empty());
    }
}

#[test]
fn wrong_subprotocol_message_closes_without_delivery() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    s.handle_frame(t0, frame(msg::coinbase_output_constraints()));
    let out = drain(&mut s);
    assert!(delivered(&out).is_empty());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(Violation::WrongSubprotocol {
            negotiated: Subprotocol::Mining,
            ..
        }))
    ));
}

#[test]
fn wrong_direction_message_closes_without_delivery() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    // NewMiningJob is server -> client.
    s.handle_frame(t0, frame(msg::new_mining_job(1)));
    let out = drain(&mut s);
    assert!(delivered(&out).is_empty());
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(
            Violation::WrongDirection { .. }
        ))
    ));
}

#[test]
fn valid_message_is_delivered() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    s.handle_frame(t0, frame(msg::open_standard(7)));
    let out = drain(&mut s);
    assert_eq!(delivered(&out).len(), 1);
    assert_eq!(delivered(&out)[0].name(), "OpenStandardMiningChannel");
    assert!(close_reason(&out).is_none());
}

#[test]
fn malformed_payload_closes() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    s.handle_frame(t0, raw_frame(0, 0x10, &[1, 2, 3]));
    let out = drain(&mut s);
    assert!(matches!(
        close_reason(&out),
        Some(CloseReason::PeerMisbehaved(Violation::Malformed(_)))
    ));
}

#[test]
fn unknown_extension_messages_follow_channel_msg_bit() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    // channel_msg unset: processed locally, unknown -> discarded, connection stays up.
    s.handle_frame(t0, raw_frame(0x4001, 0x01, &[9, 9]));
    assert!(drain(&mut s).is_empty());
    assert!(!s.is_closed());
    // channel_msg set: delivered untouched to the handler (endpoint or relay).
    s.handle_frame(t0, raw_frame(0x8000 | 0x4001, 0x02, &[7, 0, 0, 0, 1]));
    let out = drain(&mut s);
    match delivered(&out).as_slice() {
        [Sv2Message::Extension(e)] => {
            assert_eq!(e.extension_type, 0x4001);
            assert_eq!(e.channel_id(), Some(7));
            assert_eq!(&e.payload[..], &[7, 0, 0, 0, 1]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unassigned_core_message_type_closes() {
    let t0 = Instant::now();
    let mut s = established(Subprotocol::Mining, t0);
    s.handle_frame(t0, raw_frame(0, 0x42, &[]));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(Violation::UnknownMessageType {
            msg_type: 0x42
        }))
    ));
}

#[test]
fn inactivity_timer_is_reset_by_every_frame() {
    let t0 = Instant::now();
    let mut s = Session::server(
        SessionConfig::default(),
        MINING_ONLY,
        TransportHandshake::None,
        t0,
    );
    s.handle_frame(
        t0,
        frame(msg::setup_connection(Subprotocol::Mining, 2, 2, 0)),
    );
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    let t1 = t0 + Duration::from_secs(50);
    s.handle_frame(t1, frame(msg::open_standard(1)));
    drain(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(61));
    assert!(close_reason(&drain(&mut s)).is_none());
    s.handle_timeout(t1 + Duration::from_secs(60));
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::TimedOut(Timer::Inactivity))
    );
}

#[test]
fn every_subprotocol_with_null_support_is_refused() {
    for p in Subprotocol::ALL {
        let t0 = Instant::now();
        let mut s = Session::server(
            SessionConfig::default(),
            PerSubprotocol::default(),
            TransportHandshake::None,
            t0,
        );
        s.handle_frame(t0, frame(msg::setup_connection(p, 2, 2, 0)));
        assert_eq!(setup_error(&drain(&mut s)).1, "unsupported-protocol");
    }
}

fn client(flags: u32, t0: Instant) -> Session {
    let mut s = Session::client(
        SessionConfig::default(),
        msg::setup_connection_owned(Subprotocol::Mining, flags),
        Some(Duration::from_secs(30)),
        TransportHandshake::None,
        t0,
    );
    let out = drain(&mut s);
    assert_eq!(transmitted(&out)[0].name(), "SetupConnection");
    s
}

#[test]
fn client_validates_setup_connection_success() {
    let t0 = Instant::now();
    let mut s = client(0, t0);
    s.handle_frame(t0, frame(msg::setup_success(2, 0)));
    assert!(drain(&mut s)
        .iter()
        .any(|o| matches!(o, SessionOutput::Established(_))));

    let mut s = client(0, t0);
    s.handle_frame(t0, frame(msg::setup_success(9, 0)));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::Incompatible(_))
    ));

    let mut s = client(REQUIRES_VERSION_ROLLING, t0);
    s.handle_frame(t0, frame(msg::setup_success(2, REQUIRES_FIXED_VERSION)));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::Incompatible(_))
    ));
}

#[test]
fn client_reports_setup_connection_error() {
    let t0 = Instant::now();
    let mut s = client(0, t0);
    s.handle_frame(
        t0,
        frame(msg::setup_error(0b11, "unsupported-feature-flags")),
    );
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::SetupRejected {
            error_code: "unsupported-feature-flags".into(),
            flags: 0b11
        })
    );
}

#[test]
fn client_turns_reconnect_into_a_reconnect_close() {
    let t0 = Instant::now();
    let mut s = client(0, t0);
    s.handle_frame(t0, frame(msg::setup_success(2, 0)));
    drain(&mut s);
    s.handle_frame(t0, frame(msg::reconnect("127.0.0.2", 4000)));
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::Reconnect {
            host: "127.0.0.2".into(),
            port: 4000
        })
    );
}

#[test]
fn client_rejects_client_to_server_messages() {
    let t0 = Instant::now();
    let mut s = client(0, t0);
    s.handle_frame(t0, frame(msg::setup_success(2, 0)));
    drain(&mut s);
    s.handle_frame(t0, frame(msg::open_standard(1)));
    assert!(matches!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::PeerMisbehaved(
            Violation::WrongDirection { .. }
        ))
    ));
}

#[test]
fn client_setup_reply_deadline() {
    let t0 = Instant::now();
    let mut s = client(0, t0);
    s.handle_timeout(t0 + SessionConfig::default().setup_timeout);
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::TimedOut(Timer::Setup))
    );
}

#[test]
fn receive_limit_follows_the_stage_and_the_negotiated_subprotocol() {
    let t0 = Instant::now();
    let limits = MaxPayload::server();
    let mut support = all_supported();
    support.mining = Some(ProtocolSupport {
        supported_flags: REQUIRES_WORK_SELECTION,
        success_flags: 0,
        inactivity_timeout: None,
    });
    let server = |p: Subprotocol, flags: u32| {
        let mut s = Session::server(
            SessionConfig::default(),
            support,
            TransportHandshake::None,
            t0,
        )
        .with_max_payload(limits);
        assert_eq!(s.max_payload(), limits.setup, "before SetupConnection");
        s.handle_frame(t0, frame(msg::setup_connection(p, 2, 2, flags)));
        drain(&mut s);
        s.max_payload()
    };
    assert_eq!(server(Subprotocol::Mining, 0), 4 * 1024);
    assert_eq!(
        server(Subprotocol::Mining, REQUIRES_WORK_SELECTION),
        128 * 1024
    );
    assert_eq!(server(Subprotocol::JobDeclaration, 0), 8 << 20);
    assert_eq!(server(Subprotocol::TemplateDistribution, 0), 128 * 1024);
    // Values past the U24 maximum are capped.
    let s = Session::server(
        SessionConfig::default(),
        all_supported(),
        TransportHandshake::None,
        t0,
    )
    .with_max_payload(MaxPayload::uniform(usize::MAX));
    assert_eq!(s.max_payload(), (1 << 24) - 1);
}

#[test]
fn an_unfinished_frame_times_out_and_a_finished_one_disarms_the_deadline() {
    let t0 = Instant::now();
    let cfg = SessionConfig::default();
    let mut s = established(Subprotocol::Mining, t0);
    let inactivity = s.poll_timeout();
    let t1 = t0 + Duration::from_secs(1);
    s.frame_progress(t1, true);
    assert_eq!(s.poll_timeout(), Some(t1 + cfg.frame_timeout));
    // More bytes of the same frame do not push the deadline back.
    s.frame_progress(t1 + Duration::from_secs(5), true);
    assert_eq!(s.poll_timeout(), Some(t1 + cfg.frame_timeout));
    // The frame completes: the deadline is gone.
    s.frame_progress(t1 + Duration::from_secs(6), false);
    assert_eq!(s.poll_timeout(), inactivity);
    // The next one never does.
    let t2 = t0 + Duration::from_secs(10);
    s.frame_progress(t2, true);
    s.handle_timeout(t2 + cfg.frame_timeout - Duration::from_millis(1));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t2 + cfg.frame_timeout);
    assert_eq!(
        close_reason(&drain(&mut s)),
        Some(CloseReason::TimedOut(Timer::Frame))
    );
}
