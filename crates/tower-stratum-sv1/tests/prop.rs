//! Property tests: arbitrary bytes in arbitrary chunkings never panic the codec and what it
//! buffers stays bounded; arbitrary params for every known method never panic the parsers;
//! canonical encodings round-trip exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::feed_chunked;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_sv1::{
    method, Authorize, ClientMessage, Configure, ConfigureInfo, Id, MinimumDifficultyRequest,
    Notify, PrevHash, Reconnect, Request, Response, ServerMessage, SetExtranonce, Submit,
    Subscribe, Sv1ClientCodec, Sv1CodecError, Sv1Error, Sv1LineCodec, Sv1Message, Sv1MessageCodec,
    Sv1ServerCodec, Target, VersionRollingRequest,
};

fn chunkings() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..300, 1..10)
}

/// Bytes that look like Sv1 traffic often enough to reach the parsers: fragments of real
/// lines, JSON punctuation, newlines, and random bytes.
fn sv1ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(
            b"{\"id\":1,\"method\":\"mining.submit\",\"params\":[\"w\",\"1\",\"00\",\"5\",\"6\"]}"
                .to_vec()
        ),
        Just(b"{\"id\":null,\"method\":\"mining.notify\",\"params\":[".to_vec()),
        Just(
            b"{\"result\":[[[\"mining.notify\",\"a\"]],\"00\",4],\"id\":2,\"error\":null}".to_vec()
        ),
        Just(b"{\"error\":[21,\"x\"],\"id\":\"s\"}".to_vec()),
        Just(b"\"mining.configure\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"{}[],:\"\\".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|v| v.concat())
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9a-fA-F]{0,70}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z.-]{0,30}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_id() -> impl Strategy<Value = Id> {
    prop_oneof![
        Just(Id::Null),
        any::<u64>().prop_map(Id::from),
        any::<i64>().prop_map(Id::from),
        any::<String>().prop_map(Id::from),
    ]
}

fn arb_difficulty() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1u64..1 << 40).prop_map(|d| d as f64),
        any::<f64>().prop_filter("positive finite", |d| d.is_finite() && *d > 0.0),
    ]
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// JSON values with non-null, exactly round-tripping content (for `data` and raw params).
fn arb_plain_json() -> impl Strategy<Value = Value> {
    arb_json().prop_filter("not null", |v| !v.is_null())
}

fn arb_sv1_error() -> impl Strategy<Value = Sv1Error> {
    (
        any::<i64>(),
        any::<String>(),
        proptest::option::of(arb_plain_json()),
    )
        .prop_map(|(code, message, data)| Sv1Error {
            code,
            message,
            data,
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    (arb_id(), arb_json(), proptest::option::of(arb_sv1_error()))
        .prop_map(|(id, result, error)| Response { id, result, error })
}

fn arb_unknown() -> impl Strategy<Value = Request> {
    (
        arb_id(),
        "x\\.[a-z_.]{0,20}",
        proptest::collection::vec(arb_json(), 0..6),
    )
        .prop_map(|(id, method, params)| Request {
            id,
            method,
            params: Value::Array(params),
        })
}

fn arb_configure() -> impl Strategy<Value = Configure> {
    (
        proptest::option::of((
            proptest::option::of(any::<u32>()),
            proptest::option::of(0u32..64),
        )),
        proptest::option::of(proptest::option::of(arb_difficulty())),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(
            proptest::option::of(any::<String>()),
            4,
        )),
        proptest::collection::btree_set("x-[a-z]{1,8}", 0..3),
        proptest::collection::btree_map("x-[a-z.]{1,8}", arb_plain_json(), 0..3),
    )
        .prop_map(|(vr, md, sub, info, exts, params)| Configure {
            version_rolling: vr.map(|(mask, min_bit_count)| VersionRollingRequest {
                mask,
                min_bit_count,
            }),
            minimum_difficulty: md.map(|value| MinimumDifficultyRequest { value }),
            subscribe_extranonce: sub,
            info: info.map(|f| ConfigureInfo {
                connection_url: f[0].clone(),
                hw_version: f[1].clone(),
                sw_version: f[2].clone(),
                hw_id: f[3].clone(),
            }),
            other_extensions: exts.into_iter().collect(),
            other_params: params.into_iter().collect::<Map<_, _>>(),
        })
}

fn arb_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            arb_id(),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>())
        )
            .prop_map(|(id, user_agent, session_id)| ClientMessage::Subscribe(
                id,
                Subscribe {
                    user_agent,
                    session_id
                }
            )),
        (
            arb_id(),
            any::<String>(),
            proptest::option::of(any::<String>())
        )
            .prop_map(|(id, username, password)| ClientMessage::Authorize(
                id,
                Authorize { username, password }
            )),
        (
            arb_id(),
            (any::<String>(), any::<String>(), arb_bytes(16)),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(any::<u32>())
            )
        )
            .prop_map(
                |(id, (worker_name, job_id, extranonce2), (ntime, nonce, vb))| {
                    ClientMessage::Submit(
                        id,
                        Submit {
                            worker_name,
                            job_id,
                            extranonce2,
                            ntime,
                            nonce,
                            version_bits: vb,
                        },
                    )
                }
            ),
        (arb_id(), arb_configure()).prop_map(|(id, c)| ClientMessage::Configure(id, c)),
        arb_id().prop_map(ClientMessage::ExtranonceSubscribe),
        (arb_id(), arb_difficulty()).prop_map(|(id, d)| ClientMessage::SuggestDifficulty(id, d)),
        (arb_id(), any::<[u8; 32]>())
            .prop_map(|(id, t)| ClientMessage::SuggestTarget(id, Target::from_be_bytes(t))),
        arb_unknown().prop_map(ClientMessage::Unknown),
        arb_response().prop_map(ClientMessage::Response),
    ]
}

fn arb_notify() -> impl Strategy<Value = Notify> {
    (
        (
            any::<String>(),
            any::<[u8; 32]>(),
            arb_bytes(80),
            arb_bytes(80),
        ),
        proptest::collection::vec(any::<[u8; 32]>(), 0..14),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
    )
        .prop_map(
            |(
                (job_id, prev, coinb1, coinb2),
                merkle_branch,
                (version, nbits, ntime, clean_jobs),
            )| {
                Notify {
                    job_id,
                    prev_hash: PrevHash::from_header_bytes(prev),
                    coinb1,
                    coinb2,
                    merkle_branch,
                    version,
                    nbits,
                    ntime,
                    clean_jobs,
                }
            },
        )
}

fn arb_server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        arb_notify().prop_map(ServerMessage::Notify),
        arb_difficulty().prop_map(ServerMessage::SetDifficulty),
        (arb_bytes(16), 0usize..1 << 20).prop_map(|(extranonce1, extranonce2_size)| {
            ServerMessage::SetExtranonce(SetExtranonce {
                extranonce1,
                extranonce2_size,
            })
        }),
        any::<u32>().prop_map(ServerMessage::SetVersionMask),
        (
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(host, port, wait_secs)| ServerMessage::Reconnect(Reconnect {
                    host,
                    port,
                    wait_secs
                })
            ),
        any::<String>().prop_map(ServerMessage::ShowMessage),
        arb_id().prop_map(ServerMessage::GetVersion),
        arb_id().prop_map(ServerMessage::Ping),
        arb_unknown().prop_map(ServerMessage::Unknown),
        arb_response().prop_map(ServerMessage::Response),
    ]
}

fn known_method() -> impl Strategy<Value = &'static str> {
    let all: Vec<&'static str> = method::CLIENT_TO_SERVER
        .iter()
        .chain(method::SERVER_TO_CLIENT.iter())
        .copied()
        .chain(["pong", "mining.pong"])
        .collect();
    proptest::sample::select(all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Never a panic; between calls the codec's buffer holds at most `max` bytes of an
    /// unfinished line (so at most `max` + one chunk after the next read); the only decode
    /// error is an oversize line, after which the codec is dead.
    #[test]
    fn arbitrary_bytes_any_chunking(
        bytes in prop_oneof![sv1ish_bytes(), proptest::collection::vec(any::<u8>(), 0..3000)],
        chunks in chunkings(),
        max in 0usize..400,
    ) {
        for which in 0..3 {
            let check = |src: &BytesMut| assert!(src.len() <= max, "{} > {max}", src.len());
            let err = match which {
                0 => feed_chunked(&mut Sv1ServerCodec::new(max), &bytes, &chunks, check).1,
                1 => feed_chunked(&mut Sv1ClientCodec::new(max), &bytes, &chunks, check).1,
                _ => {
                    let mut codec = Sv1LineCodec::new(max);
                    let (lines, err) = feed_chunked(&mut codec, &bytes, &chunks, check);
                    for l in lines {
                        let l = l.unwrap().0;
                        prop_assert!(l.len() <= max && !l.contains(&b'\n'));
                        prop_assert!(!l.iter().all(u8::is_ascii_whitespace));
                    }
                    if err.is_some() {
                        prop_assert!(matches!(codec.decode(&mut BytesMut::new()), Err(Sv1CodecError::Dead)));
                    }
                    err
                }
            };
            if let Some(e) = err {
                prop_assert!(matches!(e, Sv1CodecError::LineTooLong { max: m } if m == max), "{e:?}");
            }
        }
    }

    /// Arbitrary params (and ids) for every known method: parse result or typed error, never a
    /// panic; the error keeps the id and method for a request.
    #[test]
    fn arbitrary_params_for_known_methods(
        m in known_method(),
        id in arb_json(),
        params in prop_oneof![arb_json(), proptest::collection::vec(arb_json(), 0..12).prop_map(Value::Array)],
    ) {
        let line = serde_json::json!({"id": id, "method": m, "params": params}).to_string();
        let c = ClientMessage::parse_line(line.as_bytes());
        let s = ServerMessage::parse_line(line.as_bytes());
        for e in [c.err(), s.err()].into_iter().flatten() {
            if Id::from_value(&id).is_some() {
                prop_assert_eq!(e.method.as_deref(), Some(m));
                prop_assert_eq!(e.reply().is_some(), !id.is_null());
            }
        }
        // Results of every shape.
        let _ = tower_stratum_sv1::SubscribeResult::from_result(&params);
        let _ = tower_stratum_sv1::ConfigureResult::from_result(&params);
        let line = serde_json::json!({"id": 1, "result": params, "error": id}).to_string();
        prop_assert!(matches!(ServerMessage::parse_line(line.as_bytes()), Ok(ServerMessage::Response(_))));
    }

    /// Canonical client messages: encode, decode (server codec), identical; re-encoding gives
    /// the same bytes.
    #[test]
    fn client_messages_round_trip(msgs in proptest::collection::vec(arb_client_message(), 1..6), chunks in chunkings()) {
        let mut wire = BytesMut::new();
        let mut enc = Sv1ClientCodec::default();
        for m in &msgs {
            enc.encode(m.clone(), &mut wire).unwrap();
        }
        let mut dec = Sv1ServerCodec::new(1 << 20);
        let (got, err) = feed_chunked(&mut dec, &wire, &chunks, |_| {});
        prop_assert!(err.is_none());
        let got: Vec<ClientMessage> = got.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(&got, &msgs);
        let mut again = BytesMut::new();
        for m in got {
            enc.encode(m, &mut again).unwrap();
        }
        prop_assert_eq!(again, wire);
    }

    /// Canonical server messages: encode, decode (client codec), identical.
    #[test]
    fn server_messages_round_trip(msgs in proptest::collection::vec(arb_server_message(), 1..6), chunks in chunkings()) {
        let mut wire = BytesMut::new();
        let mut enc = Sv1ServerCodec::default();
        for m in &msgs {
            enc.encode(m.clone(), &mut wire).unwrap();
        }
        let mut dec = Sv1ClientCodec::new(1 << 20);
        let (got, err) = feed_chunked(&mut dec, &wire, &chunks, |_| {});
        prop_assert!(err.is_none());
        let got: Vec<ServerMessage> = got.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(&got, &msgs);
        // The untyped codec reads and writes the same lines.
        let mut untyped = Sv1MessageCodec::default();
        let mut src = wire.clone();
        let mut out = BytesMut::new();
        while let Some(m) = untyped.decode(&mut src).unwrap() {
            let m: Sv1Message = m.unwrap();
            untyped.encode(m, &mut out).unwrap();
        }
        prop_assert_eq!(out, wire);
    }
}
