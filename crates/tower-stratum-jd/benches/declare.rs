//! `DeclareMiningJob` validation time through the whole `JobDeclarationServer` handler, for a
//! job of 1 and of 4,000 transactions, every transaction in the node's mempool (`MemoryNode`).
//!
//! One declaration: token check, coinbase parse (extranonce length inferred from the
//! `scriptSig` length), required outputs, BIP34 height against the tip, duplicate check and
//! mempool look-up of each wtxid, block weight, witness commitment (merkle root of the
//! wtxids), txids and the coinbase merkle path, storing the job, `DeclareMiningJob.Success`.
//! Tokens are allocated and messages cloned outside the timed region, in chunks of 256.
//!
//! Run: `cargo bench -p tower-stratum-jd --bench declare -- --quick`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tower_stratum_core::handler::Sv2JobDeclarationServerHandler;
use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::{Action, Sv2Message};
use tower_stratum_jd::{JobDeclarationServer, MemoryNode};

const CHUNK: u64 = 256;

fn bench_declare(c: &mut Criterion) {
    let mut group = c.benchmark_group("declare_mining_job");
    for n in [1u32, 4_000] {
        let (t, w) = txs(n);
        let mut node = MemoryNode::new(tip());
        for tx in &t {
            node.add_transaction(tx.clone());
        }
        let mut config = config();
        config.max_tokens_per_connection = CHUNK as usize;
        let mut jds = JobDeclarationServer::new(config, node).unwrap();
        let (prefix, suffix) = job_parts(&w, 5_000_000_000);
        let template = declare_msg(0, &[0; 8], &prefix, &suffix, &w);
        // The job is accepted (checked once, outside the timing).
        let mut m = template.clone();
        m.mining_job_token = allocate(&mut jds, 1).try_into().unwrap();
        let a = run(jds.handle_declare_mining_job(ctx(1), m));
        assert!(matches!(
            a.as_slice(),
            [Action::Reply(Sv2Message::JobDeclaration(
                JobDeclarationOwned::DeclareMiningJobSuccess(_)
            ))]
        ));
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("all-known", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(CHUNK);
                    left -= k;
                    let msgs: Vec<_> = (0..k)
                        .map(|_| {
                            let mut m = template.clone();
                            m.mining_job_token = allocate(&mut jds, 1).try_into().unwrap();
                            m
                        })
                        .collect();
                    let start = Instant::now();
                    for m in msgs {
                        let a = run(jds.handle_declare_mining_job(ctx(1), m));
                        black_box(&a);
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_declare);
criterion_main!(benches);
