//! Known-answer tests of the header, coinbase and merkle code and of both sha256d engines,
//! against the vectors in `tests/data/` (sources in `tests/data/README.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cpu_miner::sha256d::{meets_target, sha256d, top_word, Engine, Midstate};
use cpu_miner::work::{
    build_header, coinbase_txid, extranonce_for, merkle_root_from_path, version_for, MerkleSource,
    NextUnit, ShareKind, Work, BIP320_VERSION_MASK,
};
use serde_json::Value;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

fn data(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn arr32(b: &[u8]) -> [u8; 32] {
    b.try_into().unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn be_u32(v: &Value) -> u32 {
    u32::from_str_radix(s(v), 16).unwrap()
}

/// Stratum V1 prevhash (each 4-byte word byte-reversed) to internal byte order, i.e. what a
/// Sv2 `SetNewPrevHash.prev_hash` carries.
fn prevhash_internal(stratum: &str) -> [u8; 32] {
    let b = unhex(stratum);
    let mut out = [0u8; 32];
    for w in 0..8 {
        for i in 0..4 {
            out[w * 4 + i] = b[w * 4 + 3 - i];
        }
    }
    out
}

/// The target of a compact `nbits`, little-endian.
fn nbits_target(nbits: u32) -> [u8; 32] {
    let exp = (nbits >> 24) as usize;
    let mant = nbits & 0x00ff_ffff;
    let mut t = [0u8; 32];
    for i in 0..3 {
        let byte = ((mant >> (8 * i)) & 0xff) as u8;
        let pos = exp - 3 + i;
        if pos < 32 {
            t[pos] = byte;
        }
    }
    t
}

fn display(hash: &[u8; 32]) -> String {
    let mut r = *hash;
    r.reverse();
    hex(&r)
}

/// Each share vector, fed through the Sv2 inputs of a [`Work`]: the unit with the share's
/// extranonce (and rolled version) rebuilds the expected coinbase-derived merkle root and
/// header, the hash matches, and both engines find the share's nonce.
#[test]
fn share_vectors_through_work_units_and_engines() {
    let vectors = data("share_vectors.json");
    let vectors = vectors.as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let name = s(&v["name"]);
        let n = &v["notify_params"];
        let submit = v["submit_params"].as_array().unwrap();
        let exp = &v["expected"];
        let en1 = unhex(s(&v["extranonce1"]));
        let en2 = unhex(s(&submit[2]));
        let coinb1 = unhex(s(&n[2]));
        let coinb2 = unhex(s(&n[3]));
        let path: Vec<[u8; 32]> = n[4]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| arr32(&unhex(s(b))))
            .collect();
        let job_version = be_u32(&n[5]);
        let nbits = be_u32(&n[6]);
        let ntime = be_u32(&submit[3]);
        let nonce = be_u32(&submit[4]);
        // Sv1 version rolling: version = job version XOR version bits (see the vector notes);
        // our BIP320 counter reaches the same version at index `k`.
        let (version_mask, version_index) = match submit.get(5) {
            Some(bits) => {
                let bits = be_u32(bits);
                assert_eq!(bits & !BIP320_VERSION_MASK, 0);
                (BIP320_VERSION_MASK, u64::from(bits >> 13))
            }
            None => (0, 0),
        };

        let mut coinbase = coinb1.clone();
        coinbase.extend_from_slice(&en1);
        coinbase.extend_from_slice(&en2);
        coinbase.extend_from_slice(&coinb2);
        assert_eq!(hex(&coinbase), s(&exp["coinbase_hex"]), "{name}: coinbase");

        let mut prefix = coinb1.clone();
        prefix.extend_from_slice(&en1);
        let work = Work {
            tip_epoch: 1,
            channel_id: 1,
            job_id: 1,
            share_kind: ShareKind::Extended,
            version: job_version,
            version_mask,
            prev_hash: prevhash_internal(s(&n[1])),
            nbits,
            min_ntime: ntime,
            min_ntime_received: Instant::now(),
            target: nbits_target(nbits),
            merkle: MerkleSource::Coinbase {
                prefix,
                suffix: coinb2,
                path,
                rollable: en2.len(),
            },
            next_unit: Arc::new(AtomicU64::new(0)),
        };
        // The miner's extranonce counter is little-endian: index = en2 read as LE.
        let mut k = [0u8; 8];
        k[..en2.len()].copy_from_slice(&en2);
        let extranonce_index = u64::from_le_bytes(k);
        let versions = if version_mask == 0 { 1 } else { 1 << 16 };
        let unit_index = version_index + versions * extranonce_index;
        let NextUnit::Ready(unit) = work.unit(unit_index, Instant::now()) else {
            panic!("{name}: unit not ready")
        };
        assert_eq!(unit.extranonce, en2, "{name}: extranonce");
        assert_eq!(unit.ntime, ntime);
        assert_eq!(
            hex(&unit.header[36..68]),
            s(&exp["merkle_root_internal_hex"]),
            "{name}: merkle root"
        );
        let mut header = unit.header;
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        assert_eq!(hex(&header), s(&exp["header_hex"]), "{name}: header");
        let hash = sha256d(&header);
        assert_eq!(display(&hash), s(&exp["block_hash_be"]), "{name}: hash");
        if exp["meets_network_target_nbits"].as_bool() == Some(true) {
            assert!(meets_target(&hash, &work.target), "{name}: meets nbits");
        }

        let midstate = Midstate::new(&unit.header);
        for engine in [Engine::detect(), Engine::Portable] {
            let mut found = Vec::new();
            engine.scan(
                &midstate,
                nonce.wrapping_sub(13),
                32,
                top_word(&hash),
                &mut found,
            );
            assert!(
                found.contains(&nonce),
                "{name}: engine {} missed the nonce",
                engine.name()
            );
        }
    }
}

#[test]
fn merkle_roots_with_12_and_5_branches() {
    let d = data("merkle_and_header_vectors.json");
    for v in d["merkle_root_vectors"].as_array().unwrap() {
        let mut coinbase = unhex(s(&v["coinb1"]));
        coinbase.extend(unhex(s(&v["extranonce1"])));
        coinbase.extend(unhex(s(&v["extranonce2"])));
        coinbase.extend(unhex(s(&v["coinb2"])));
        let path: Vec<[u8; 32]> = v["merkle_branch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| arr32(&unhex(s(b))))
            .collect();
        let root = merkle_root_from_path(coinbase_txid(&coinbase), &path);
        assert_eq!(hex(&root), s(&v["expected_merkle_root_internal_hex"]));
    }
}

#[test]
fn header_serialisation_and_hash() {
    let d = data("merkle_and_header_vectors.json");
    for v in d["header_vectors"].as_array().unwrap() {
        let header = build_header(
            be_u32(&v["version"]),
            &prevhash_internal(s(&v["prevhash_stratum"])),
            &arr32(&unhex(s(&v["merkle_root_internal_hex"]))),
            be_u32(&v["ntime"]),
            be_u32(&v["nbits"]),
            be_u32(&v["nonce"]),
        );
        assert_eq!(hex(&header), s(&v["expected_header_hex"]));
        assert_eq!(display(&sha256d(&header)), s(&v["expected_hash_be"]));
    }
}

#[test]
fn extranonce_counter_and_version_increments() {
    let d = data("merkle_and_header_vectors.json");
    for case in d["extranonce2_generation"]["cases"].as_array().unwrap() {
        let c = case.as_array().unwrap();
        let got = extranonce_for(c[0].as_u64().unwrap(), c[1].as_u64().unwrap() as usize);
        assert_eq!(hex(&got), s(&c[2]));
    }
    let vr = &d["version_rolling_increment"];
    let base = be_u32(&vr["version"]);
    let mask = be_u32(&vr["mask"]);
    for (k, want) in vr["sequence"].as_array().unwrap().iter().enumerate() {
        assert_eq!(version_for(base, mask, k as u64 + 1), be_u32(want));
    }
}

/// Spec 5.3.16 requires the coinbase prefix/suffix to be stripped of BIP141 fields; if an
/// upstream leaves them in, the txid is still that of the witness-stripped serialisation (the
/// merkle root never covers the witness).
#[test]
fn segwit_coinbase_txid_ignores_the_witness() {
    let v = &data("share_vectors.json")[3]; // genesis coinbase, legacy serialisation
    let legacy = unhex(s(&v["expected"]["coinbase_hex"]));
    let mut segwit = legacy[..4].to_vec();
    segwit.extend_from_slice(&[0x00, 0x01]);
    segwit.extend_from_slice(&legacy[4..legacy.len() - 4]);
    segwit.push(0x01); // one witness item for the single input
    segwit.push(0x20);
    segwit.extend_from_slice(&[0u8; 32]);
    segwit.extend_from_slice(&legacy[legacy.len() - 4..]);
    assert_eq!(coinbase_txid(&segwit), sha256d(&legacy));
    assert_eq!(coinbase_txid(&legacy), sha256d(&legacy));
    // Not a transaction at all: the spec's formula, sha256d of the bytes.
    assert_eq!(coinbase_txid(&legacy[..20]), sha256d(&legacy[..20]));
}

/// Each share vector through Sv1 mode's state, from the wire params: the subscribe result
/// (extranonce1, extranonce2 size), the granted version mask, and the `mining.notify` params
/// parsed by `tower-stratum-sv1` (so the prevhash word order is the wire's) give a work whose
/// unit with the share's extranonce2 and version, at the share's nonce, hashes to the
/// expected block hash; and the `mining.submit` the miner builds for it equals the one the
/// real miner sent (job id, extranonce2, ntime, nonce, version bits).
#[test]
fn share_vectors_through_the_sv1_state() {
    use cpu_miner::miner::FoundShare;
    use cpu_miner::sv1::state::Sv1State;
    use tower_stratum::sv1::Notify;

    let vectors = data("share_vectors.json");
    for v in vectors.as_array().unwrap() {
        let name = s(&v["name"]);
        let submit = v["submit_params"].as_array().unwrap();
        let en2 = unhex(s(&submit[2]));
        let nonce = be_u32(&submit[4]);
        let notify = Notify::from_params(&v["notify_params"]).unwrap();
        let mut state = Sv1State::new();
        state.connected();
        let granted = v["version_rolling_mask"]
            .as_str()
            .map(|m| u32::from_str_radix(m, 16).unwrap());
        state.configured(granted);
        assert!(state.subscribed(
            unhex(s(&v["extranonce1"])),
            v["extranonce2_size"].as_u64().unwrap() as usize
        ));
        assert!(state.set_difficulty(1e-12));
        state.notify(notify, Instant::now());
        let work = state.work().unwrap();
        assert_eq!(work.share_kind, ShareKind::Sv1);

        let version_index = submit.get(5).map_or(0, |b| u64::from(be_u32(b) >> 13));
        let versions = if work.version_mask == 0 { 1 } else { 1 << 16 };
        let mut k = [0u8; 8];
        k[..en2.len()].copy_from_slice(&en2);
        let unit_index = version_index + versions * u64::from_le_bytes(k);
        // The share's ntime may be later than the job's: unit at that many seconds after it.
        let ntime = be_u32(&submit[3]);
        let later = work.min_ntime_received
            + std::time::Duration::from_secs(u64::from(ntime - work.min_ntime));
        let unit_index = unit_index
            + (ntime - work.min_ntime) as u64 * versions * (1u64 << (8 * en2.len().min(5)));
        let NextUnit::Ready(unit) = work.unit(unit_index, later) else {
            panic!("{name}: unit not ready")
        };
        assert_eq!(unit.extranonce, en2, "{name}");
        assert_eq!(unit.ntime, ntime, "{name}");
        let mut header = unit.header;
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        assert_eq!(hex(&header), s(&v["expected"]["header_hex"]), "{name}");
        let hash = sha256d(&header);
        assert_eq!(display(&hash), s(&v["expected"]["block_hash_be"]), "{name}");

        let share = FoundShare {
            tip_epoch: work.tip_epoch,
            channel_id: work.channel_id,
            job_id: work.job_id,
            share_kind: work.share_kind,
            nonce,
            ntime: unit.ntime,
            version: unit.version,
            extranonce: unit.extranonce.clone(),
            hash,
        };
        let sent = state.prepare_submit(&share, s(&submit[0])).unwrap();
        assert_eq!(sent.worker_name, s(&submit[0]), "{name}");
        assert_eq!(sent.job_id, s(&submit[1]), "{name}");
        assert_eq!(hex(&sent.extranonce2), s(&submit[2]), "{name}");
        assert_eq!(sent.ntime, ntime, "{name}");
        assert_eq!(sent.nonce, nonce, "{name}");
        assert_eq!(
            sent.version_bits,
            submit.get(5).map(be_u32),
            "{name}: version bits"
        );
    }
}
