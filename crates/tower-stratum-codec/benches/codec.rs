//! Encode/decode cost of one SubmitSharesExtended frame (the hot message of a pool), plaintext and
//! Noise, against a raw ChaCha20-Poly1305 baseline doing the same two AEAD operations Sv2 does
//! per frame (header, then payload).
//!
//! Run: `cargo bench -p tower-stratum-codec --bench codec -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use chacha20poly1305::{
    aead::{AeadInPlace, KeyInit},
    ChaCha20Poly1305, Key, Nonce, Tag,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::{
    hint::black_box,
    time::{Duration, Instant},
};
use stratum_core::mining_sv2::SubmitSharesExtendedOwned;
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_codec::{
    AuthorityKeypair, NoiseCodec, NoiseInitiator, NoiseResponder, PlainCodec, MAC_LEN,
};
use tower_stratum_core::{
    frame::{HEADER_SIZE, MAX_PAYLOAD_LEN},
    message::MiningOwned,
    Frame, Sv2Message,
};

fn submit_shares_extended() -> Frame {
    let msg = SubmitSharesExtendedOwned {
        channel_id: 7,
        sequence_number: 42,
        job_id: 1234,
        nonce: 0xdead_beef,
        ntime: 1_700_000_000,
        version: 0x2000_0000,
        extranonce: vec![0xab; 8].try_into().unwrap(),
    };
    Sv2Message::Mining(MiningOwned::SubmitSharesExtended(msg))
        .encode()
        .unwrap()
}

fn noise_pair() -> (NoiseCodec, NoiseCodec) {
    let authority = AuthorityKeypair::generate();
    let responder =
        NoiseResponder::new(&authority, Duration::from_secs(3600), MAX_PAYLOAD_LEN).unwrap();
    let (initiator, act1) = NoiseInitiator::new(Some(authority.public()), MAX_PAYLOAD_LEN).unwrap();
    let (act2, server) = responder.respond(act1).unwrap();
    (initiator.finish(act2).unwrap(), server)
}

/// Times decoding `iters` frames, encrypting them in untimed batches (the sender's nonce must
/// advance with the receiver's, so ciphertexts cannot be replayed).
fn noise_decode_iters(frame: &Frame, iters: u64) -> Duration {
    const BATCH: u64 = 4096;
    let (mut client, mut server) = noise_pair();
    let mut elapsed = Duration::ZERO;
    let mut wire = BytesMut::new();
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        wire.clear();
        for _ in 0..n {
            client.encode(frame.clone(), &mut wire).unwrap();
        }
        let start = Instant::now();
        for _ in 0..n {
            black_box(server.decode(&mut wire).unwrap().unwrap());
        }
        elapsed += start.elapsed();
        left -= n;
    }
    elapsed
}

fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_le_bytes());
    bytes.into()
}

fn bench(c: &mut Criterion) {
    let frame = submit_shares_extended();
    let plain_len = frame.encoded_len();
    let mut g = c.benchmark_group("submit_shares_extended");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: plain_len as u64,
    });

    // Plaintext.
    let mut plain = PlainCodec::new(MAX_PAYLOAD_LEN);
    let mut dst = BytesMut::with_capacity(1024);
    g.bench_function("plain/encode", |b| {
        b.iter(|| {
            dst.clear();
            plain.encode(black_box(frame.clone()), &mut dst).unwrap();
            black_box(&dst);
        })
    });
    let mut wire = BytesMut::new();
    plain.encode(frame.clone(), &mut wire).unwrap();
    let mut src = BytesMut::with_capacity(1024);
    g.bench_function("plain/decode", |b| {
        b.iter(|| {
            src.extend_from_slice(black_box(&wire));
            black_box(plain.decode(&mut src).unwrap().unwrap());
        })
    });

    // Noise (codec_sv2 underneath).
    let (mut client, _server) = noise_pair();
    g.bench_function("noise/encode", |b| {
        b.iter(|| {
            dst.clear();
            client.encode(black_box(frame.clone()), &mut dst).unwrap();
            black_box(&dst);
        })
    });
    g.bench_function("noise/decode", |b| {
        b.iter_custom(|iters| noise_decode_iters(&frame, iters))
    });

    // Baseline: raw ChaCha20-Poly1305 (0.10, as noise_sv2), header and payload sealed as two
    // AEAD operations with Noise's nonce layout, into a reused buffer.
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[0x42; 32]));
    let mut plaintext = BytesMut::new();
    frame.write_to(&mut plaintext);
    let enc_len = plain_len + 2 * MAC_LEN;
    let mut buf = vec![0u8; enc_len];
    let mut n = 0u64;
    let seal = |plaintext: &[u8], buf: &mut [u8], n: u64| {
        let (header, payload) = plaintext.split_at(HEADER_SIZE);
        let (h, rest) = buf.split_at_mut(HEADER_SIZE + MAC_LEN);
        h[..HEADER_SIZE].copy_from_slice(header);
        let tag = cipher
            .encrypt_in_place_detached(&nonce(n), b"", &mut h[..HEADER_SIZE])
            .unwrap();
        h[HEADER_SIZE..].copy_from_slice(&tag);
        rest[..payload.len()].copy_from_slice(payload);
        let tag = cipher
            .encrypt_in_place_detached(&nonce(n + 1), b"", &mut rest[..payload.len()])
            .unwrap();
        rest[payload.len()..].copy_from_slice(&tag);
    };
    g.bench_function("raw_chacha20poly1305/seal", |b| {
        b.iter(|| {
            seal(black_box(&plaintext), &mut buf, n);
            n += 2;
            black_box(&buf);
        })
    });
    let mut sealed = vec![0u8; enc_len];
    seal(&plaintext, &mut sealed, 0);
    let payload_len = plain_len - HEADER_SIZE;
    g.bench_function("raw_chacha20poly1305/open", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&sealed));
            let (h, rest) = buf.split_at_mut(HEADER_SIZE + MAC_LEN);
            let (h, h_tag) = h.split_at_mut(HEADER_SIZE);
            cipher
                .decrypt_in_place_detached(&nonce(0), b"", h, Tag::from_slice(h_tag))
                .unwrap();
            let (p, p_tag) = rest.split_at_mut(payload_len);
            cipher
                .decrypt_in_place_detached(&nonce(1), b"", p, Tag::from_slice(p_tag))
                .unwrap();
            black_box(&buf);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
