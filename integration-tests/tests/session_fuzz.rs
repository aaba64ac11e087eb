//! Fuzz-style property tests of the session and SRI's message parsers behind it: any frame a
//! peer sends, in any state and for any negotiated subprotocol, yields outputs or a close —
//! never a panic — and a close is final.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::time::{Duration, Instant};
use tower_stratum_core::session::ProtocolSupport;
use tower_stratum_core::session::TransportHandshake;
use tower_stratum_core::{
    ExtensionSet, ExtensionSupport, Session, SessionConfig, SessionOutput, Subprotocol,
};
use tower_stratum_test_kit::msg::{self, frame, raw_frame};

fn supported() -> tower_stratum_core::PerSubprotocol<Option<ProtocolSupport>> {
    tower_stratum_core::PerSubprotocol::splat(Some(ProtocolSupport {
        supported_flags: u32::MAX,
        success_flags: 0,
        inactivity_timeout: Some(Duration::from_secs(60)),
    }))
}

fn any_frame() -> impl Strategy<Value = (u16, u8, Vec<u8>)> {
    (
        prop_oneof![Just(0u16), Just(0x8000u16), Just(0x0001u16), any::<u16>()],
        prop_oneof![
            0x00u8..=0x04,
            0x10u8..=0x25,
            0x50u8..=0x60,
            0x70u8..=0x76,
            any::<u8>()
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

fn run(s: &mut Session, frames: Vec<(u16, u8, Vec<u8>)>) {
    let t0 = Instant::now();
    let mut closed = false;
    for (i, (ext, ty, payload)) in frames.into_iter().enumerate() {
        s.handle_frame(
            t0 + Duration::from_millis(i as u64),
            raw_frame(ext, ty, &payload),
        );
        while let Some(o) = s.poll_output() {
            assert!(!closed, "output after close: {o:?}");
            if let SessionOutput::Close(_) = o {
                closed = true;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn server_before_setup_never_panics(frames in proptest::collection::vec(any_frame(), 1..8)) {
        let mut s = Session::server(SessionConfig::default(), supported(), TransportHandshake::None, Instant::now());
        run(&mut s, frames);
    }

    #[test]
    fn server_after_setup_never_panics(
        p in 0usize..3,
        frames in proptest::collection::vec(any_frame(), 1..8),
    ) {
        let t0 = Instant::now();
        let mut s = Session::server(SessionConfig::default(), supported(), TransportHandshake::None, t0);
        s.handle_frame(t0, frame(msg::setup_connection(Subprotocol::ALL[p], 2, 2, 0)));
        while s.poll_output().is_some() {}
        run(&mut s, frames);
    }

    /// A Mining server that negotiated extension 0x0002 (so TLV fields are parsed): random
    /// frames, and shares with random trailing bytes.
    #[test]
    fn server_with_negotiated_extensions_never_panics(
        frames in proptest::collection::vec(any_frame(), 0..6),
        tails in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..6),
    ) {
        let t0 = Instant::now();
        let two = ExtensionSet::from_ids(&[2]);
        let mut s = Session::server(SessionConfig::default(), supported(), TransportHandshake::None, t0)
            .with_extension_support(tower_stratum_core::PerSubprotocol::splat(ExtensionSupport::supporting(two)));
        s.handle_frame(t0, frame(msg::setup_connection(Subprotocol::Mining, 2, 2, 0)));
        s.handle_frame(t0, frame(msg::request_extensions(1, &[2])));
        while s.poll_output().is_some() {}
        let base = frame(msg::submit_extended(2, 1));
        let shares = tails.into_iter().map(|t| {
            let mut p = base.payload.to_vec();
            p.extend_from_slice(&t);
            (base.extension_type, base.msg_type, p)
        });
        run(&mut s, shares.chain(frames).collect());
    }

    /// A client waiting for the answer to its `RequestExtensions`.
    #[test]
    fn client_negotiating_never_panics(frames in proptest::collection::vec(any_frame(), 1..8)) {
        let t0 = Instant::now();
        let mut s = Session::client(
            SessionConfig::default(),
            msg::setup_connection_owned(Subprotocol::Mining, 0),
            None,
            TransportHandshake::None,
            t0,
        )
        .with_extension_request(ExtensionSet::from_ids(&[2, 3]), Duration::from_secs(1));
        while s.poll_output().is_some() {}
        s.handle_frame(t0, frame(msg::setup_success(2, 0)));
        while s.poll_output().is_some() {}
        run(&mut s, frames);
    }

    #[test]
    fn client_never_panics(frames in proptest::collection::vec(any_frame(), 1..8)) {
        let t0 = Instant::now();
        let mut s = Session::client(
            SessionConfig::default(),
            msg::setup_connection_owned(Subprotocol::Mining, 0),
            None,
            TransportHandshake::None,
            t0,
        );
        while s.poll_output().is_some() {}
        s.handle_frame(t0, frame(msg::setup_success(2, 0)));
        while s.poll_output().is_some() {}
        run(&mut s, frames);
    }
}
