//! NoiseCodec and the Noise NX handshake (spec 4), over `tokio::io::duplex`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::{encode_all, feed_chunked, frame, noise_pair, noise_pair_sync, sample_frames};
use futures_util::{SinkExt, StreamExt};
use std::{
    io,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use stratum_core::{codec_sv2::Handshake, noise_sv2::Responder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tower_stratum_codec::{
    accept_noise, connect_noise, encrypted_frame_len, AuthorityKeypair, CodecError, HandshakeError,
    NoiseInitiator, NoiseResponder, Sv2Codec, ACT1_LEN, ACT2_LEN, MAX_PLAINTEXT_CHUNK_LEN,
};
use tower_stratum_core::frame::MAX_PAYLOAD_LEN;

const MAX: usize = MAX_PAYLOAD_LEN;

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn big_frames() -> Vec<Box<[u8]>> {
    vec![
        vec![0x11; MAX_PLAINTEXT_CHUNK_LEN].into(),
        vec![0x22; MAX_PLAINTEXT_CHUNK_LEN + 1].into(),
        (0..200_000u32).map(|i| i as u8).collect::<Vec<_>>().into(),
    ]
}

#[tokio::test]
async fn round_trip_both_ways_over_duplex_including_multi_chunk_payloads() {
    let (client, client_io, server, server_io) = noise_pair(MAX, MAX).await;
    let mut client = Framed::new(client_io, Sv2Codec::from(client));
    let mut server = Framed::new(server_io, Sv2Codec::from(server));
    assert!(client.codec().is_noise());

    let mut frames = sample_frames();
    for (i, p) in big_frames().into_iter().enumerate() {
        frames.push(frame(0, 0x20 + i as u8, p.into_vec()));
    }

    for f in &frames {
        let (sent, got) = tokio::join!(client.send(f.clone()), server.next());
        sent.unwrap();
        assert_eq!(&got.unwrap().unwrap(), f);
        let (sent, got) = tokio::join!(server.send(f.clone()), client.next());
        sent.unwrap();
        assert_eq!(&got.unwrap().unwrap(), f);
    }
    assert_eq!(server.codec().buffered_len(), 0);

    // Clean close between frames: end of stream, no error.
    drop(client);
    assert!(server.next().await.is_none());
}

#[test]
fn wire_size_is_as_specified() {
    let (mut client, _server) = noise_pair_sync(MAX, MAX);
    for len in [0usize, 1, 65519, 65520, 200_000] {
        let wire = encode_all(&mut client, &[frame(0, 1, vec![0u8; len])]);
        assert_eq!(wire.len(), encrypted_frame_len(len), "{len}");
    }
}

#[test]
fn decodes_byte_by_byte_and_at_every_split_of_a_stream() {
    let (mut client, mut server) = noise_pair_sync(MAX, MAX);
    let frames = sample_frames();
    let wire = encode_all(&mut client, &frames);
    let (got, err) = feed_chunked(&mut server, &wire, &[1], |c, src| {
        assert!(c.buffered_len() <= c.max_buffered_len());
        assert!(src.len() < 65535);
    });
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, frames);

    // Every split point of a two-frame stream, each on a fresh session.
    let frames = &sample_frames()[..2];
    let len = encrypted_frame_len(3) + encrypted_frame_len(0);
    for split in 0..=len {
        let (mut client, mut server) = noise_pair_sync(MAX, MAX);
        let wire = encode_all(&mut client, frames);
        assert_eq!(wire.len(), len);
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for part in [&wire[..split], &wire[split..]] {
            src.extend_from_slice(part);
            while let Some(f) = server.decode(&mut src).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames, "split at {split}");
        assert_eq!(server.decode_eof(&mut src).unwrap(), None);
    }
}

#[test]
fn oversize_frame_is_rejected_before_it_is_buffered() {
    for (max, payload) in [(1000usize, 1001usize), (1000, 5000), (100_000, 1_000_000)] {
        let (mut client, mut server) = noise_pair_sync(MAX, max);
        let bound = server.max_buffered_len();
        assert_eq!(bound, encrypted_frame_len(max));
        let wire = encode_all(&mut client, &[frame(0, 1, vec![5u8; payload])]);

        let (_, err) = feed_chunked(&mut server, &wire, &[997], |c, src| {
            assert!(c.buffered_len() <= bound);
            assert!(src.len() < 65535);
        });
        match err {
            Some(CodecError::FrameTooLarge { declared, max: m }) => {
                assert_eq!(m, max);
                assert!(declared > max && declared <= payload, "{declared}");
            }
            other => panic!("{other:?}"),
        }
        // Nothing more than the bound was ever taken from the read buffer: replay to measure.
        let (mut client, mut server) = noise_pair_sync(MAX, max);
        let wire = encode_all(&mut client, &[frame(0, 1, vec![5u8; payload])]);
        let mut src = BytesMut::from(&wire[..]);
        let before = src.len();
        assert!(matches!(
            server.decode(&mut src),
            Err(CodecError::FrameTooLarge { .. })
        ));
        let consumed = before - src.len();
        assert!(consumed <= bound, "consumed {consumed} > bound {bound}");
        assert!(!server.can_decode());
        assert!(matches!(server.decode(&mut src), Err(CodecError::Dead)));
        // The encoding half is unaffected.
        assert!(server.can_encode());
    }
}

#[test]
fn max_size_frame_is_accepted() {
    let max = 70_000;
    let (mut client, mut server) = noise_pair_sync(MAX, max);
    let f = frame(0, 1, vec![3u8; max]);
    let mut wire = encode_all(&mut client, std::slice::from_ref(&f));
    assert_eq!(server.decode(&mut wire).unwrap(), Some(f));
}

#[test]
fn tampered_ciphertext_fails_to_decrypt_and_the_codec_stays_dead() {
    // Flip a byte of the encrypted header, of the payload, of the last MAC.
    let frames = sample_frames();
    let len = encrypted_frame_len(frames[0].payload.len());
    for at in [0, 21, 22, len - 1] {
        let (mut client, mut server) = noise_pair_sync(MAX, MAX);
        let mut wire = encode_all(&mut client, &frames);
        wire[at] ^= 0x01;
        let err = server.decode(&mut wire).unwrap_err();
        assert!(matches!(err, CodecError::Decrypt), "at {at}: {err:?}");
        for _ in 0..3 {
            assert!(matches!(server.decode(&mut wire), Err(CodecError::Dead)));
        }
        assert!(matches!(
            server.decode_eof(&mut wire),
            Err(CodecError::Dead)
        ));
    }
}

#[tokio::test]
async fn tampered_ciphertext_over_framed_ends_the_stream_with_an_error() {
    let (mut client, mut client_io, server, server_io) = noise_pair(MAX, MAX).await;
    let mut server = Framed::new(server_io, Sv2Codec::from(server));
    let mut wire = encode_all(&mut client, &sample_frames());
    wire[30] ^= 0x80;
    client_io.write_all(&wire).await.unwrap();
    assert!(matches!(
        server.next().await,
        Some(Err(CodecError::Decrypt))
    ));
    assert!(server.next().await.is_none());
}

#[test]
fn eof_inside_a_frame_is_an_unexpected_eof() {
    let (mut client, mut server) = noise_pair_sync(MAX, MAX);
    let wire = encode_all(&mut client, &[frame(0, 1, vec![0u8; 100_000])]);
    let mut src = BytesMut::from(&wire[..wire.len() - 10]);
    assert_eq!(server.decode(&mut src).unwrap(), None);
    assert!(server.buffered_len() > 0);
    match server.decode_eof(&mut src) {
        Err(CodecError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_authority_key_is_rejected() {
    let authority = AuthorityKeypair::generate();
    let other = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let (server, client) = tokio::join!(
        accept_noise(&mut server_io, &authority, common::CERT_VALIDITY, MAX),
        connect_noise(&mut client_io, Some(other.public()), MAX),
    );
    // The responder cannot tell; the initiator refuses.
    server.unwrap();
    assert!(
        matches!(client, Err(HandshakeError::CertificateRejected(_))),
        "{client:?}"
    );
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let responder = async {
        let mut act1 = [0u8; ACT1_LEN];
        server_io.read_exact(&mut act1).await.unwrap();
        let responder = Responder::from_authority_kp(
            &authority.public().to_bytes(),
            &authority.secret().to_bytes(),
            Duration::from_secs(60),
        )
        .unwrap();
        let two_hours_ago = unix_now() - 2 * 3600;
        let (act2, _transport) = Handshake::responder(responder)
            .step_1_with_now_rng(act1, two_hours_ago, &mut rand::thread_rng())
            .unwrap();
        assert_eq!(act2.payload().len(), ACT2_LEN);
        server_io.write_all(act2.payload()).await.unwrap();
    };
    let (_, client) = tokio::join!(
        responder,
        connect_noise(&mut client_io, Some(authority.public()), MAX)
    );
    assert!(
        matches!(client, Err(HandshakeError::CertificateRejected(_))),
        "{client:?}"
    );
}

#[test]
fn certificate_validity_window_sans_io() {
    let authority = AuthorityKeypair::generate();
    let validity = Duration::from_secs(600);
    let t0 = 1_700_000_000u32;
    // (check time, accepted?) noise_sv2 allows 10 s of drift either side.
    for (now, ok) in [
        (t0, true),
        (t0 + 600, true),
        (t0 + 610, true),
        (t0 + 611, false),
        (t0 - 10, true),
        (t0 - 11, false),
    ] {
        let responder = NoiseResponder::new(&authority, validity, MAX).unwrap();
        let (initiator, act1) = NoiseInitiator::new(Some(authority.public()), MAX).unwrap();
        assert!(initiator.authenticates_responder());
        let (act2, _) = responder.respond_at(act1, t0).unwrap();
        let res = initiator.finish_at(act2, now);
        if ok {
            res.unwrap();
        } else {
            assert!(
                matches!(res, Err(HandshakeError::CertificateRejected(_))),
                "{res:?}"
            );
        }
    }
}

#[tokio::test]
async fn unauthenticated_initiator_connects_to_a_normal_responder() {
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let (server, client) = tokio::join!(
        accept_noise(&mut server_io, &authority, common::CERT_VALIDITY, MAX),
        connect_noise(&mut client_io, None, MAX),
    );
    let mut server = Framed::new(server_io, server.unwrap());
    let mut client = Framed::new(client_io, client.unwrap());
    let f = frame(0, 0x00, vec![1, 2, 3]);
    client.send(f.clone()).await.unwrap();
    assert_eq!(server.next().await.unwrap().unwrap(), f);
    server.send(f.clone()).await.unwrap();
    assert_eq!(client.next().await.unwrap().unwrap(), f);
}

#[tokio::test]
async fn handshake_reads_only_its_own_bytes() {
    // The responder sends act 2 and a first transport frame in one write; the initiator must
    // leave the frame in the pipe for the codec.
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let f = frame(0, 0x01, vec![9u8; 10]);
    let responder = async {
        let mut act1 = [0u8; ACT1_LEN];
        server_io.read_exact(&mut act1).await.unwrap();
        let (act2, mut codec) = NoiseResponder::new(&authority, common::CERT_VALIDITY, MAX)
            .unwrap()
            .respond(act1)
            .unwrap();
        let mut out = BytesMut::from(&act2[..]);
        codec.encode(f.clone(), &mut out).unwrap();
        server_io.write_all(&out).await.unwrap();
    };
    let (_, client) = tokio::join!(
        responder,
        connect_noise(&mut client_io, Some(authority.public()), MAX)
    );
    let mut client = Framed::new(client_io, client.unwrap());
    assert_eq!(client.next().await.unwrap().unwrap(), f);
}

#[tokio::test]
async fn peer_closing_mid_handshake_is_an_io_error() {
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    client_io.write_all(&[0u8; ACT1_LEN - 1]).await.unwrap();
    drop(client_io);
    let err = accept_noise(&mut server_io, &authority, common::CERT_VALIDITY, MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HandshakeError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{err:?}"
    );

    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let server = async {
        let mut act1 = [0u8; ACT1_LEN];
        server_io.read_exact(&mut act1).await.unwrap();
        server_io.write_all(&[0u8; 100]).await.unwrap();
        drop(server_io);
    };
    let (_, client) = tokio::join!(server, connect_noise(&mut client_io, None, MAX));
    assert!(
        matches!(&client, Err(HandshakeError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{client:?}"
    );
}

#[tokio::test]
async fn garbage_act2_is_a_noise_error_not_a_certificate_rejection() {
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(4096);
    let server = async {
        let mut act1 = [0u8; ACT1_LEN];
        server_io.read_exact(&mut act1).await.unwrap();
        server_io.write_all(&[0x5a; ACT2_LEN]).await.unwrap();
    };
    let (_, client) = tokio::join!(
        server,
        connect_noise(&mut client_io, Some(authority.public()), MAX)
    );
    assert!(
        matches!(client, Err(HandshakeError::Noise(_))),
        "{client:?}"
    );
}

#[test]
fn handshake_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let authority = AuthorityKeypair::generate();
    let (mut a, mut b) = tokio::io::duplex(64);
    let accept = accept_noise(&mut a, &authority, common::CERT_VALIDITY, MAX);
    assert_send(&accept);
    let connect = connect_noise(&mut b, None, MAX);
    assert_send(&connect);
}
