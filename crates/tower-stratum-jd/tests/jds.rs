//! Deterministic state-machine tests of the Job Declarator Server: handler methods called
//! directly with connection contexts, time passed in as virtual `Instant`s (a base instant plus
//! durations), no runtime, no sockets, no sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::{Duration, Instant};
use tower_stratum_core::handler::Sv2JobDeclarationServerHandler;
use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::stratum_core::binary_sv2::{Seq064KOwned, U256Owned};
use tower_stratum_core::stratum_core::bitcoin::consensus::{deserialize, serialize};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{Amount, BlockHash, TxOut, Wtxid};
use tower_stratum_core::{Action, CloseReason, ConnectionId, Sv2Message};
use tower_stratum_jd::{
    JobDeclarationServer, MemoryNode, DEFAULT_TOKEN_LIFETIME, MAX_DECLARED_TRANSACTIONS,
};

/// A node on [`tip`] whose mempool has `txs`.
fn node_with(txs: &[tower_stratum_core::stratum_core::bitcoin::Transaction]) -> MemoryNode {
    let mut node = MemoryNode::new(tip());
    for t in txs {
        node.add_transaction(t.clone());
    }
    node
}

fn declare(
    jds: &mut JobDeclarationServer<MemoryNode>,
    conn: u64,
    request_id: u32,
    token: &[u8],
    parts: &(Vec<u8>, Vec<u8>),
    wtxids: &[Wtxid],
) -> tower_stratum_core::Actions {
    run(jds.handle_declare_mining_job(
        ctx(conn),
        declare_msg(request_id, token, &parts.0, &parts.1, wtxids),
    ))
}

fn success_token(a: &tower_stratum_core::Actions) -> Vec<u8> {
    match reply(a) {
        JobDeclarationOwned::DeclareMiningJobSuccess(s) => {
            s.new_mining_job_token.as_bytes().to_vec()
        }
        other => panic!("not DeclareMiningJob.Success: {other:?}"),
    }
}

fn missing_positions(a: &tower_stratum_core::Actions) -> Vec<u16> {
    match reply(a) {
        JobDeclarationOwned::ProvideMissingTransactions(p) => {
            p.unknown_tx_position_list.as_slice().to_vec()
        }
        other => panic!("not ProvideMissingTransactions: {other:?}"),
    }
}

// ---- SetupConnection ----

#[test]
fn setup_accepts_declare_tx_data() {
    let jds = server(node_with(&[]));
    let support = jds.setup_support().unwrap();
    assert_eq!(support.supported_flags, tower_stratum_jd::DECLARE_TX_DATA);
    assert_eq!(support.success_flags, 0);
}

// ---- AllocateMiningJobToken ----

#[test]
fn allocate_gives_a_token_and_the_pool_outputs() {
    let mut jds = server(node_with(&[]));
    let a = run(jds.handle_allocate_mining_job_token(ctx(1), allocate_msg(42)));
    let JobDeclarationOwned::AllocateMiningJobTokenSuccess(s) = reply(&a) else {
        panic!("{a:?}")
    };
    assert_eq!(s.request_id, 42);
    assert_eq!(s.mining_job_token.as_bytes().len(), 8);
    // CompactSize-prefixed consensus-serialized outputs, the pool payout first, 0 sats each.
    let outputs: Vec<TxOut> = deserialize(s.coinbase_outputs.as_bytes()).unwrap();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0].script_pubkey, payout_script());
    assert_eq!(outputs[1].script_pubkey, pool_op_return());
    assert!(outputs.iter().all(|o| o.value == Amount::ZERO));
    assert_eq!(jds.live_tokens(), 1);
    // Tokens differ.
    let other = allocate(&mut jds, 1);
    assert_ne!(other, s.mining_job_token.as_bytes());
}

#[test]
fn token_lifetime_starts_at_the_next_timer_and_expires() {
    let t0 = Instant::now();
    let mut jds = server(node_with(&[]));
    assert_eq!(jds.poll_timeout(), None);
    run(jds.on_timer(t0));
    let token = allocate(&mut jds, 1);
    // Unstamped: a past deadline (the last `now`) asks for a timer at once.
    assert_eq!(jds.poll_timeout(), Some(t0));
    let t1 = t0 + Duration::from_secs(5);
    assert!(run(jds.on_timer(t1)).is_empty());
    assert_eq!(jds.poll_timeout(), Some(t1 + DEFAULT_TOKEN_LIFETIME));
    // Just before the expiry it is still live.
    run(jds.on_timer(t1 + DEFAULT_TOKEN_LIFETIME - Duration::from_millis(1)));
    assert_eq!(jds.live_tokens(), 1);
    run(jds.on_timer(t1 + DEFAULT_TOKEN_LIFETIME));
    assert_eq!(jds.live_tokens(), 0);
    assert_eq!(jds.poll_timeout(), None);
    let (_, w) = txs(0);
    let a = declare(&mut jds, 1, 1, &token, &job_parts(&w, 5_000_000_000), &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
}

#[test]
fn a_token_is_single_use_and_bound_to_its_connection() {
    let (t, w) = txs(3);
    let mut jds = server(node_with(&t));
    let token = allocate(&mut jds, 1);
    let parts = job_parts(&w, 5_000_000_000);
    // Another connection cannot use it, and does not burn it.
    let a = declare(&mut jds, 2, 1, &token, &parts, &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
    assert_eq!(jds.live_tokens(), 1);
    // Its owner can.
    let a = declare(&mut jds, 1, 2, &token, &parts, &w);
    let job_token = success_token(&a);
    assert_ne!(
        job_token, token,
        "the declared job gets a new token (spec 6.4.5)"
    );
    assert_eq!(jds.live_tokens(), 0);
    // Once.
    let a = declare(&mut jds, 1, 3, &token, &parts, &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
    // The job's token is not an allocation token.
    let a = declare(&mut jds, 1, 4, &job_token, &parts, &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
    // Nor is garbage.
    let a = declare(&mut jds, 1, 5, b"abc", &parts, &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
}

#[test]
fn a_refused_declaration_uses_up_its_token() {
    let (t, w) = txs(1);
    let mut jds = server(node_with(&t));
    let token = allocate(&mut jds, 1);
    let bad = split_coinbase(TIP_HEIGHT + 1, vec![]);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 1, &token, &bad, &w)),
        "invalid-coinbase-tx"
    );
    let a = declare(&mut jds, 1, 2, &token, &job_parts(&w, 1), &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
}

#[test]
fn tokens_are_bounded_per_connection_and_in_total() {
    let mut config = config();
    config.max_tokens_per_connection = 2;
    config.max_tokens = 3;
    let mut jds = JobDeclarationServer::new(config, node_with(&[])).unwrap();
    let first = allocate(&mut jds, 1);
    allocate(&mut jds, 1);
    allocate(&mut jds, 1); // retires `first`
    assert_eq!(jds.live_tokens(), 2);
    let (_, w) = txs(0);
    let a = declare(&mut jds, 1, 1, &first, &job_parts(&w, 1), &w);
    assert_eq!(error_code(&a), "invalid-mining-job-token");
    allocate(&mut jds, 2);
    assert_eq!(jds.live_tokens(), 3);
    // The server is full: the spec has no AllocateMiningJobToken.Error, so the connection is
    // closed.
    let a = run(jds.handle_allocate_mining_job_token(ctx(3), allocate_msg(1)));
    assert!(matches!(a.as_slice(), [Action::Close(_)]), "{a:?}");
    assert_eq!(jds.live_tokens(), 3);
}

// ---- DeclareMiningJob ----

#[test]
fn declare_with_every_transaction_known() {
    let (t, w) = txs(5);
    let mut jds = server(node_with(&t));
    let token = allocate(&mut jds, 1);
    let a = declare(&mut jds, 1, 9, &token, &job_parts(&w, 5_000_000_000), &w);
    let JobDeclarationOwned::DeclareMiningJobSuccess(s) = reply(&a) else {
        panic!("{a:?}")
    };
    assert_eq!(s.request_id, 9);
    let jobs: Vec<_> = jds.declared_jobs(ConnectionId(1)).collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].token().as_slice(),
        s.new_mining_job_token.as_bytes()
    );
    assert_eq!(jobs[0].height(), TIP_HEIGHT + 1);
    assert_eq!(jobs[0].prev_hash(), tip().hash);
    assert_eq!(jobs[0].extranonce_len(), EXTRANONCE_LEN);
    assert_eq!(jobs[0].transactions().len(), 5);
}

#[test]
fn declare_an_empty_block() {
    let mut jds = server(node_with(&[]));
    let token = allocate(&mut jds, 1);
    // No transactions: the commitment is optional; this coinbase has none.
    let parts = split_coinbase(TIP_HEIGHT + 1, pool_outputs(1));
    success_token(&declare(&mut jds, 1, 1, &token, &parts, &[]));
}

#[test]
fn declare_a_legacy_coinbase() {
    // Without BIP141 marker, flag and witness (allowed when no transaction has a witness).
    let mut cb = coinbase_tx(TIP_HEIGHT + 1, pool_outputs(1), [0xe7; EXTRANONCE_LEN]);
    cb.input[0].witness.clear();
    let raw = serialize(&cb);
    let at = raw
        .windows(EXTRANONCE_LEN)
        .position(|w| w == [0xe7; EXTRANONCE_LEN])
        .unwrap();
    let parts = (raw[..at].to_vec(), raw[at + EXTRANONCE_LEN..].to_vec());
    let mut jds = server(node_with(&[]));
    let token = allocate(&mut jds, 1);
    success_token(&declare(&mut jds, 1, 1, &token, &parts, &[]));
    assert_eq!(
        jds.declared_jobs(ConnectionId(1))
            .next()
            .unwrap()
            .extranonce_len(),
        EXTRANONCE_LEN
    );
}

#[test]
fn missing_transactions_asked_for_then_provided() {
    let (t, w) = txs(5);
    // The node lacks transactions 1 and 3.
    let mut jds = server(node_with(&[t[0].clone(), t[2].clone(), t[4].clone()]));
    let token = allocate(&mut jds, 1);
    let a = declare(&mut jds, 1, 5, &token, &job_parts(&w, 1), &w);
    assert_eq!(missing_positions(&a), vec![1, 3]);
    assert_eq!(jds.pending_declarations(), 1);
    let a = run(jds.handle_provide_missing_transactions_success(
        ctx(1),
        provide_msg(5, &[serialize(&t[1]), serialize(&t[3])]),
    ));
    let JobDeclarationOwned::DeclareMiningJobSuccess(s) = reply(&a) else {
        panic!("{a:?}")
    };
    assert_eq!(s.request_id, 5);
    assert_eq!(jds.pending_declarations(), 0);
    let job = jds.declared_jobs(ConnectionId(1)).next().unwrap();
    let got: Vec<_> = job
        .transactions()
        .iter()
        .map(|t| t.compute_wtxid())
        .collect();
    assert_eq!(got, w, "declared order kept");
}

#[test]
fn wrong_missing_transactions_are_refused() {
    let (t, w) = txs(3);
    let mut jds = server(node_with(&[t[0].clone()]));
    let parts = job_parts(&w, 1);

    // Wrong transaction (another wtxid).
    let token = allocate(&mut jds, 1);
    assert_eq!(
        missing_positions(&declare(&mut jds, 1, 1, &token, &parts, &w)),
        vec![1, 2]
    );
    let a = run(jds.handle_provide_missing_transactions_success(
        ctx(1),
        provide_msg(1, &[serialize(&t[2]), serialize(&t[1])]),
    ));
    assert_eq!(error_code(&a), "missing-txs");
    assert_eq!(jds.pending_declarations(), 0);

    // Too few.
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 2, &token, &parts, &w));
    let a = run(jds
        .handle_provide_missing_transactions_success(ctx(1), provide_msg(2, &[serialize(&t[1])])));
    assert_eq!(error_code(&a), "missing-txs");

    // Not a transaction.
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 3, &token, &parts, &w));
    let a = run(jds.handle_provide_missing_transactions_success(
        ctx(1),
        provide_msg(3, &[vec![1, 2, 3], serialize(&t[2])]),
    ));
    assert_eq!(error_code(&a), "missing-txs");

    // An answer to nothing pending (or from another connection) is ignored.
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 4, &token, &parts, &w));
    let provided = provide_msg(4, &[serialize(&t[1]), serialize(&t[2])]);
    assert!(
        run(jds.handle_provide_missing_transactions_success(ctx(2), provided.clone())).is_empty()
    );
    assert!(
        run(jds.handle_provide_missing_transactions_success(ctx(1), provide_msg(99, &[])))
            .is_empty()
    );
    success_token(&run(
        jds.handle_provide_missing_transactions_success(ctx(1), provided)
    ));
    assert_eq!(jds.declared_jobs(ConnectionId(1)).count(), 1);
}

#[test]
fn a_provided_coinbase_is_an_invalid_job() {
    let rogue = coinbase_tx(5, pool_outputs(1), [0; EXTRANONCE_LEN]);
    let w = vec![rogue.compute_wtxid()];
    let mut jds = server(node_with(&[]));
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 1, &token, &job_parts(&w, 1), &w));
    let a = run(jds
        .handle_provide_missing_transactions_success(ctx(1), provide_msg(1, &[serialize(&rogue)])));
    assert_eq!(error_code(&a), "invalid-job");
}

#[test]
fn waiting_for_missing_transactions_times_out() {
    let t0 = Instant::now();
    let (_, w) = txs(2);
    let mut jds = server(node_with(&[]));
    run(jds.on_timer(t0));
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 8, &token, &job_parts(&w, 1), &w));
    assert_eq!(jds.poll_timeout(), Some(t0));
    run(jds.on_timer(t0));
    let timeout = jds.config().missing_transactions_timeout;
    assert_eq!(jds.poll_timeout(), Some(t0 + timeout));
    let a = run(jds.on_timer(t0 + timeout));
    match a.as_slice() {
        [Action::SendTo(
            ConnectionId(1),
            Sv2Message::JobDeclaration(JobDeclarationOwned::DeclareMiningJobError(e)),
        )] => {
            assert_eq!(e.request_id, 8);
            assert_eq!(e.error_code.as_bytes(), b"missing-txs");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(jds.pending_declarations(), 0);
    assert_eq!(jds.poll_timeout(), None);
}

#[test]
fn wrong_coinbase_outputs_are_refused() {
    let (t, w) = txs(1);
    let mut jds = server(node_with(&t));
    let commitment = witness_commitment_output(&w);
    let cases: Vec<(&str, Vec<TxOut>)> = vec![
        (
            "no payout output",
            vec![pool_outputs(1)[1].clone(), commitment.clone()],
        ),
        (
            "payout of 0 sat",
            vec![
                pool_outputs(0)[0].clone(),
                pool_outputs(0)[1].clone(),
                commitment.clone(),
            ],
        ),
        (
            "no pool OP_RETURN",
            vec![pool_outputs(1)[0].clone(), commitment.clone()],
        ),
    ];
    for (what, outputs) in cases {
        let token = allocate(&mut jds, 1);
        let parts = split_coinbase(TIP_HEIGHT + 1, outputs);
        let a = declare(&mut jds, 1, 1, &token, &parts, &w);
        assert_eq!(error_code(&a), "invalid-coinbase-tx", "{what}");
    }
    // Reordered, with extra outputs of the JDC, it is fine (spec 6.4.3).
    let token = allocate(&mut jds, 1);
    let mut outputs = vec![TxOut {
        value: Amount::from_sat(1000),
        script_pubkey: pool_op_return(),
    }];
    outputs.extend(pool_outputs(1).into_iter().rev());
    outputs.push(commitment);
    let parts = split_coinbase(TIP_HEIGHT + 1, outputs);
    success_token(&declare(&mut jds, 1, 1, &token, &parts, &w));
}

#[test]
fn a_minimum_payout_is_enforced() {
    let mut config = config();
    config.min_pool_payout = Amount::from_sat(1_000);
    let mut jds = JobDeclarationServer::new(config, node_with(&[])).unwrap();
    let token = allocate(&mut jds, 1);
    let a = declare(
        &mut jds,
        1,
        1,
        &token,
        &split_coinbase(TIP_HEIGHT + 1, pool_outputs(999)),
        &[],
    );
    assert_eq!(error_code(&a), "invalid-coinbase-tx");
    let token = allocate(&mut jds, 1);
    let a = declare(
        &mut jds,
        1,
        1,
        &token,
        &split_coinbase(TIP_HEIGHT + 1, pool_outputs(1_000)),
        &[],
    );
    success_token(&a);
}

#[test]
fn malformed_coinbases_are_refused() {
    let mut config = config();
    config.max_coinbase_size = 150;
    let mut jds = JobDeclarationServer::new(config, node_with(&[])).unwrap();
    let (prefix, suffix) = split_coinbase(TIP_HEIGHT + 1, pool_outputs(1));

    // The suffix cut short: no extranonce length makes a transaction.
    let token = allocate(&mut jds, 1);
    let parts = (prefix.clone(), suffix[..suffix.len() - 3].to_vec());
    assert_eq!(
        error_code(&declare(&mut jds, 1, 1, &token, &parts, &[])),
        "invalid-coinbase-tx"
    );

    // Too large.
    let token = allocate(&mut jds, 1);
    let mut big = pool_outputs(1);
    big.push(TxOut {
        value: Amount::ZERO,
        script_pubkey: tower_stratum_core::stratum_core::bitcoin::ScriptBuf::from_bytes(vec![
            0x51;
            100
        ]),
    });
    let parts = split_coinbase(TIP_HEIGHT + 1, big);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 2, &token, &parts, &[])),
        "invalid-coinbase-tx"
    );

    // Not spending the null outpoint.
    let token = allocate(&mut jds, 1);
    let mut p = prefix.clone();
    p[6] = 0x01; // first txid byte of the outpoint (after version and BIP141 marker+flag and count)
    p[7] = 0x01;
    let parts = (p, suffix.clone());
    assert_eq!(
        error_code(&declare(&mut jds, 1, 3, &token, &parts, &[])),
        "invalid-coinbase-tx-input"
    );

    // Two inputs.
    let token = allocate(&mut jds, 1);
    let mut p = prefix.clone();
    p[6] = 0x02; // input count
    let parts = (p, suffix.clone());
    assert_eq!(
        error_code(&declare(&mut jds, 1, 4, &token, &parts, &[])),
        "invalid-coinbase-tx-input"
    );

    // No BIP34 height (scriptSig starting with OP_RETURN).
    let token = allocate(&mut jds, 1);
    let mut p = prefix.clone();
    let script_start = 6 + 1 + 36 + 1;
    p[script_start] = 0x6a;
    let parts = (p, suffix);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 5, &token, &parts, &[])),
        "invalid-coinbase-tx-input"
    );
}

#[test]
fn a_job_not_on_the_tip_is_stale() {
    let (t, w) = txs(2);
    let mut jds = server(node_with(&t));
    let mut outputs = pool_outputs(1);
    outputs.push(witness_commitment_output(&w));
    for height in [TIP_HEIGHT, TIP_HEIGHT + 2] {
        let token = allocate(&mut jds, 1);
        let parts = split_coinbase(height, outputs.clone());
        assert_eq!(
            error_code(&declare(&mut jds, 1, 1, &token, &parts, &w)),
            "stale-chain-tip"
        );
    }
    // No tip known.
    jds.node_mut().set_tip(None);
    let token = allocate(&mut jds, 1);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 1, &token, &job_parts(&w, 1), &w)),
        "stale-chain-tip"
    );
}

#[test]
fn the_tip_moving_while_transactions_are_missing_is_stale() {
    let (t, w) = txs(2);
    let mut jds = server(node_with(&t[..1]));
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 1, &token, &job_parts(&w, 1), &w));
    jds.node_mut().set_tip(Some(tower_stratum_jd::ChainTip {
        hash: BlockHash::from_byte_array([0x22; 32]),
        height: TIP_HEIGHT + 1,
    }));
    let a = run(jds
        .handle_provide_missing_transactions_success(ctx(1), provide_msg(1, &[serialize(&t[1])])));
    assert_eq!(error_code(&a), "stale-chain-tip");
}

#[test]
fn invalid_jobs_are_refused() {
    let (t, w) = txs(3);
    let mut jds = server(node_with(&t));

    // The same wtxid twice.
    let token = allocate(&mut jds, 1);
    let dup = vec![w[0], w[1], w[0]];
    assert_eq!(
        error_code(&declare(&mut jds, 1, 1, &token, &job_parts(&dup, 1), &dup)),
        "invalid-job"
    );

    // A witness commitment of other transactions.
    let token = allocate(&mut jds, 1);
    let a = declare(&mut jds, 1, 2, &token, &job_parts(&w[..2], 1), &w);
    assert_eq!(error_code(&a), "invalid-job");

    // No witness commitment although the transactions have witnesses.
    let token = allocate(&mut jds, 1);
    let parts = split_coinbase(TIP_HEIGHT + 1, pool_outputs(1));
    assert_eq!(
        error_code(&declare(&mut jds, 1, 3, &token, &parts, &w)),
        "invalid-job"
    );
}

#[test]
fn declarations_waiting_for_transactions_are_bounded() {
    let mut config = config();
    config.max_pending_per_connection = 1;
    let (_, w) = txs(2);
    let mut jds = JobDeclarationServer::new(config, node_with(&[])).unwrap();
    let parts = job_parts(&w, 1);
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 1, &token, &parts, &w));
    let token = allocate(&mut jds, 1);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 2, &token, &parts, &w)),
        "internal-error"
    );
    // Another connection has its own allowance and its own request_id space.
    let token = allocate(&mut jds, 2);
    missing_positions(&declare(&mut jds, 2, 1, &token, &parts, &w));
    assert_eq!(jds.pending_declarations(), 2);
}

#[test]
fn a_request_id_already_waiting_is_refused() {
    let (_, w) = txs(1);
    let mut jds = server(node_with(&[]));
    let parts = job_parts(&w, 1);
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 1, &token, &parts, &w));
    let token = allocate(&mut jds, 1);
    assert_eq!(
        error_code(&declare(&mut jds, 1, 1, &token, &parts, &w)),
        "internal-error"
    );
    assert_eq!(jds.pending_declarations(), 1);
}

#[test]
fn too_many_unknown_wtxids_are_one_error_reply_not_memory() {
    // The wire cannot carry 100,000 wtxids: `wtxid_list` is a SEQ0_64K (at most 65,535).
    let too_long: Vec<U256Owned> = (0..100_000u32).map(|_| [0u8; 32].into()).collect();
    assert!(Seq064KOwned::new(too_long).is_err());

    // The most it can carry, all unknown: refused before any look-up (a block holds fewer).
    let w: Vec<Wtxid> = (0..65_535u32)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            Wtxid::from_byte_array(b)
        })
        .collect();
    let mut jds = server(node_with(&[]));
    let parts = split_coinbase(TIP_HEIGHT + 1, pool_outputs(1));
    let token = allocate(&mut jds, 1);
    let a = declare(&mut jds, 1, 1, &token, &parts, &w);
    assert_eq!(error_code(&a), "invalid-job");
    assert_eq!(jds.pending_declarations(), 0);

    // Within a block's count but more unknown than `max_missing_transactions`: `missing-txs`,
    // nothing kept.
    let n = jds.config().max_missing_transactions + 1;
    assert!(n <= MAX_DECLARED_TRANSACTIONS);
    let token = allocate(&mut jds, 1);
    let a = declare(&mut jds, 1, 2, &token, &parts, &w[..n]);
    assert_eq!(error_code(&a), "missing-txs");
    assert_eq!(jds.pending_declarations(), 0);
}

// ---- PushSolution ----

#[test]
fn push_solution_submits_the_reassembled_block() {
    let (t, w) = txs(7);
    // Some known, some provided.
    let mut jds = server(node_with(&t[..4]));
    let parts = job_parts(&w, 5_000_000_000);
    let token = allocate(&mut jds, 1);
    assert_eq!(
        missing_positions(&declare(&mut jds, 1, 1, &token, &parts, &w)),
        vec![4, 5, 6]
    );
    let provided: Vec<_> = t[4..].iter().map(serialize).collect();
    success_token(&run(jds.handle_provide_missing_transactions_success(
        ctx(1),
        provide_msg(1, &provided),
    )));

    let (sol, expected) = solve(&parts.0, &parts.1, &t);
    assert!(run(jds.handle_push_solution(ctx(1), sol)).is_empty());
    let blocks = jds.node().submitted_blocks();
    assert_eq!(blocks.len(), 1);
    let b = &blocks[0];
    assert_eq!(b, &expected);
    assert!(b.check_merkle_root());
    assert!(b.check_witness_commitment());
    assert_eq!(b.header.prev_blockhash, tip().hash);
    assert!(b.header.validate_pow(b.header.target()).is_ok());
    assert_eq!(b.bip34_block_height().unwrap(), TIP_HEIGHT + 1);
    assert_eq!(b.txdata.len(), 8);
    assert_eq!(&b.txdata[1..], &t[..]);
}

#[test]
fn push_solution_for_an_older_job_of_the_connection() {
    let (t, w) = txs(4);
    let mut jds = server(node_with(&t));
    let old = job_parts(&w[..2], 1);
    let token = allocate(&mut jds, 1);
    success_token(&declare(&mut jds, 1, 1, &token, &old, &w[..2]));
    let new = job_parts(&w, 1);
    let token = allocate(&mut jds, 1);
    success_token(&declare(&mut jds, 1, 2, &token, &new, &w));
    // A nonce that solves the old job but not the newest one (at regtest difficulty about half
    // the hashes meet the target, so a solution of one job often solves the other too).
    let expected = (0..)
        .map(|n| block_for(&old.0, &old.1, &t[..2], n))
        .find(|b| meets_target(b) && !meets_target(&block_for(&new.0, &new.1, &t, b.header.nonce)))
        .unwrap();
    run(jds.handle_push_solution(ctx(1), solution_of(&expected)));
    assert_eq!(jds.node().submitted_blocks(), &[expected]);
}

#[test]
fn push_solution_for_no_known_job_is_ignored() {
    let (t, w) = txs(2);
    let mut jds = server(node_with(&t));
    let parts = job_parts(&w, 1);
    let (sol, _) = solve(&parts.0, &parts.1, &t);
    // Nothing declared.
    assert!(run(jds.handle_push_solution(ctx(1), sol.clone())).is_empty());
    let token = allocate(&mut jds, 1);
    success_token(&declare(&mut jds, 1, 1, &token, &parts, &w));
    // Another connection's job.
    assert!(run(jds.handle_push_solution(ctx(2), sol.clone())).is_empty());
    // Another prev hash.
    let mut other = sol.clone();
    other.prev_hash = [0x33; 32].into();
    assert!(run(jds.handle_push_solution(ctx(1), other)).is_empty());
    assert!(jds.node().submitted_blocks().is_empty());
    // The right one goes through.
    run(jds.handle_push_solution(ctx(1), sol));
    assert_eq!(jds.node().submitted_blocks().len(), 1);
}

// ---- Connections ----

#[test]
fn a_removed_connection_drops_its_state() {
    let t0 = Instant::now();
    let (t, w) = txs(2);
    let mut jds = server(node_with(&t[..1]));
    let parts = job_parts(&w, 1);
    let token = allocate(&mut jds, 1);
    missing_positions(&declare(&mut jds, 1, 1, &token, &parts, &w));
    let token = allocate(&mut jds, 1);
    allocate(&mut jds, 1);
    run(jds.on_timer(t0));
    allocate(&mut jds, 2);
    jds.node_mut().add_transaction(t[1].clone());
    success_token(&declare(&mut jds, 1, 2, &token, &parts, &w));
    assert_eq!(jds.live_tokens(), 2);
    assert_eq!(jds.pending_declarations(), 1);

    run(jds.on_connection_removed(ctx(1), CloseReason::PeerClosed));
    assert_eq!(jds.live_tokens(), 1);
    assert_eq!(jds.pending_declarations(), 0);
    assert_eq!(jds.declared_jobs(ConnectionId(1)).count(), 0);
    // Connection 2 is untouched; the removed connection's deadlines are gone with it.
    run(jds.on_timer(t0));
    assert_eq!(jds.poll_timeout(), Some(t0 + DEFAULT_TOKEN_LIFETIME));
    run(jds.on_connection_removed(ctx(2), CloseReason::PeerClosed));
    assert_eq!(jds.poll_timeout(), None);
}

#[test]
fn kept_jobs_are_bounded() {
    let mut config = config();
    config.max_jobs_per_connection = 2;
    config.max_jobs = 3;
    let mut jds = JobDeclarationServer::new(config, node_with(&[])).unwrap();
    let parts = split_coinbase(TIP_HEIGHT + 1, pool_outputs(1));
    for (conn, rid) in [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5)] {
        let token = allocate(&mut jds, conn);
        success_token(&declare(&mut jds, conn, rid, &token, &parts, &[]));
    }
    let ids = |jds: &JobDeclarationServer<MemoryNode>, c| {
        jds.declared_jobs(ConnectionId(c))
            .map(|j| j.request_id())
            .collect::<Vec<_>>()
    };
    // Per connection: the newest two; in total: the oldest (request 2) retired too.
    assert_eq!(ids(&jds, 1), vec![3]);
    assert_eq!(ids(&jds, 2), vec![4, 5]);
}
