//! The Noise NX handshake's cryptography alone (spec 4.5), in memory on one thread: the floor
//! a server's handshakes/s is compared with (issue 5: "within 2x of the cost of the Noise
//! handshake's own cryptography measured by a criterion bench"). Steps are the sans-IO ones
//! every tower-stratum connection runs ([`NoiseInitiator`] / [`NoiseResponder`], wrapping SRI's
//! `codec_sv2`), with the certificate checked against the authority key as a real client does.
//!
//! - `responder`: what a server does per connection: ephemeral key, ECDH, certificate
//!   signature, act 2 (input: a fresh act 1, made outside the timed part).
//! - `initiator`: what a client does on act 2 (ECDH, certificate check); `initiator_act1`: its
//!   act 1 (ephemeral key). A client's whole share is the sum.
//!
//! Run: `cargo bench -p tower-stratum-codec --bench handshake -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tower_stratum_codec::{
    AuthorityKeypair, NoiseInitiator, NoiseResponder, SRI_TEST_AUTHORITY_SECRET_KEY,
};

const MAX_PAYLOAD: usize = 1 << 16;

fn keys() -> AuthorityKeypair {
    AuthorityKeypair::from_secret(SRI_TEST_AUTHORITY_SECRET_KEY.parse().unwrap())
}

fn handshake(c: &mut Criterion) {
    let keys = keys();
    let authority = Some(keys.public());
    let mut g = c.benchmark_group("noise_nx_handshake");
    g.bench_function("responder", |b| {
        b.iter_batched(
            || NoiseInitiator::new(authority, MAX_PAYLOAD).unwrap().1,
            |act1| {
                let r = NoiseResponder::new(&keys, Duration::from_secs(3600), MAX_PAYLOAD).unwrap();
                black_box(r.respond(act1).unwrap().0)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("initiator", |b| {
        b.iter_batched(
            || {
                // Act 2 must answer this initiator's own act 1, so both are made untimed;
                // act 1 is timed on its own below (`initiator_act1`).
                let (i, act1) = NoiseInitiator::new(authority, MAX_PAYLOAD).unwrap();
                let r = NoiseResponder::new(&keys, Duration::from_secs(3600), MAX_PAYLOAD).unwrap();
                (i, r.respond(act1).unwrap().0)
            },
            |(i, act2)| black_box(i.finish(act2).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("initiator_act1", |b| {
        b.iter(|| black_box(NoiseInitiator::new(authority, MAX_PAYLOAD).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
