//! Golden tests: every case of `data/parse_vectors.json` (`parse_cases` with its expected parse
//! result, `real_transcripts` replayed line by line) and the transcripts of
//! `data/share_vectors.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_one, feed_chunked};
use serde_json::{json, Value};
use tower_stratum_sv1::{
    method, ClientMessage, ConfigureResult, ErrorCode, ExtensionResult, Id, ParseErrorKind,
    Response, ServerMessage, Submit, SubscribeResult, Sv1ClientCodec, Sv1Error, Sv1ParseError,
    Sv1ServerCodec,
};

const PARSE: &str = include_str!("data/parse_vectors.json");
const SHARES: &str = include_str!("data/share_vectors.json");

/// A line a server sends, through the client codec.
fn server(line: &str) -> Result<ServerMessage, Sv1ParseError> {
    let via_codec = decode_one::<Sv1ClientCodec>(line);
    let direct = ServerMessage::parse_line(line.as_bytes());
    assert_eq!(format!("{via_codec:?}"), format!("{direct:?}"));
    via_codec
}

/// A line a client sends, through the server codec.
fn client(line: &str) -> Result<ClientMessage, Sv1ParseError> {
    let via_codec = decode_one::<Sv1ServerCodec>(line);
    let direct = ClientMessage::parse_line(line.as_bytes());
    assert_eq!(format!("{via_codec:?}"), format!("{direct:?}"));
    via_codec
}

fn response(line: &str) -> Response {
    match server(line).unwrap() {
        ServerMessage::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts the expected result of parse case `i`.
fn check_case(i: usize, line: &str, expect: &str) {
    match i {
        0 => {
            let Ok(ServerMessage::Notify(n)) = server(line) else {
                panic!("{expect}")
            };
            assert_eq!(n.job_id, "1b4c3d9041");
            assert_eq!(n.version, 0x2000_0004);
            assert_eq!(n.nbits, 0x1705_c739);
            assert_eq!(n.ntime, 0x6449_5522);
            assert!(!n.clean_jobs);
            assert_eq!(n.merkle_branch.len(), 12);
            assert_eq!(
                n.prev_hash.to_stratum_hex(),
                "ef4b9a48c7986466de4adc002f7337a6e121bc43000376ea0000000000000000"
            );
            assert_eq!(
                hex(&n.merkle_branch[0]),
                "ae23055e00f0f697cc3640124812d96d4fe8bdfa03484c1c638ce5a1c0e9aa81"
            );
            // Canonical out is the input (already canonical apart from nothing).
            let out = ServerMessage::Notify(n).to_json();
            assert_eq!(
                serde_json::from_str::<Value>(&out).unwrap(),
                serde_json::from_str::<Value>(line).unwrap()
            );
            assert_eq!(out, line);
        }
        1 => {
            let Ok(ServerMessage::Notify(n)) = server(line) else {
                panic!("{expect}")
            };
            assert!(n.clean_jobs, "{expect}");
            assert_eq!(n.ntime, 0x6449_5522);
            // Canonical out has the 9 standard params.
            let out: Value = serde_json::from_str(&ServerMessage::Notify(n).to_json()).unwrap();
            assert_eq!(out["params"].as_array().unwrap().len(), 9);
            assert_eq!(out["params"][8], json!(true));
        }
        2 => {
            let e = server(line).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::InvalidParams(_)), "{e}");
            assert_eq!(e.method.as_deref(), Some(method::NOTIFY));
            assert_eq!(e.id, Some(Id::Null));
            // A notification: nobody to answer.
            assert!(e.reply().is_none());
        }
        3 => {
            let e = server(line).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::Json(_)), "{e}");
            let e = client(line).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::Json(_)), "{e}");
            assert_eq!((e.id, e.method), (None, None));
        }
        4 => {
            assert_eq!(server(line).unwrap(), ServerMessage::SetDifficulty(1638.0));
            // Integral difficulty goes out as an integer.
            assert_eq!(ServerMessage::SetDifficulty(1638.0).to_json(), line);
        }
        5 => {
            assert_eq!(server(line).unwrap(), ServerMessage::SetDifficulty(100.5));
            assert_eq!(ServerMessage::SetDifficulty(100.5).to_json(), line);
        }
        6 => {
            let r = response(line);
            assert_eq!(r.id, Id::from(2u64));
            let s = SubscribeResult::from_result(&r.result).unwrap();
            assert_eq!(hex(&s.extranonce1), "4de05269");
            assert_eq!(s.extranonce2_size, 8);
            assert_eq!(
                s.subscriptions,
                vec![("mining.notify".into(), "695482c0".into())]
            );
        }
        7 => {
            let r = response(line);
            let e = SubscribeResult::from_result(&r.result).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::InvalidResult(_)), "{e}");
        }
        8 => {
            // The id 1 on a notification is accepted (and ignored).
            assert_eq!(
                server(line).unwrap(),
                ServerMessage::SetVersionMask(0x1fff_e000)
            );
        }
        9 => {
            let r = response(line);
            assert_eq!(r.id, Id::from(4u64));
            let e = r.bool_result().unwrap_err();
            assert_eq!(e.kind(), Some(ErrorCode::JobNotFound));
            assert_eq!(e.message, "Job not found");
            assert_eq!(e.data, Some(json!("")));
        }
        10 => {
            let r = response(line);
            assert_eq!(r.id, Id::from(8u64));
            assert_eq!(r.result, json!(false));
            let e = r.bool_result().unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (20, "Above target 2"));
            // Canonical out: the array form.
            assert_eq!(
                ServerMessage::Response(r).to_json(),
                r#"{"id":8,"result":false,"error":[20,"Above target 2",null]}"#
            );
        }
        11 | 12 => {
            let r = response(line);
            assert_eq!(r.id, Id::from(618u64));
            let e = r.bool_result().unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (20, "Stale"), "{expect}");
        }
        13 => {
            let r = response(line);
            assert_eq!(r.id, Id::from(42u64));
            assert_eq!(r.result, Value::Null);
            assert_eq!(
                r.error,
                Some(Sv1Error::new(22, "duplicate share")),
                "{expect}"
            );
            assert_eq!(
                ServerMessage::Response(r).to_json(),
                r#"{"id":42,"result":null,"error":[22,"duplicate share",null]}"#
            );
        }
        14 => {
            let r = response(line);
            assert_eq!(r.id.as_u64(), Some(32769));
            assert_eq!(r.bool_result(), Ok(true));
        }
        15 => {
            let Ok(ServerMessage::SetExtranonce(e)) = server(line) else {
                panic!("{expect}")
            };
            assert_eq!(hex(&e.extranonce1), "deadbeef");
            assert_eq!(e.extranonce2_size, 8);
        }
        16 => {
            let e = server(line).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::InvalidParams(_)), "{e}");
            assert_eq!(e.method.as_deref(), Some(method::SET_EXTRANONCE));
        }
        17 => assert_eq!(
            server(line).unwrap(),
            ServerMessage::ShowMessage("Welcome to the pool!".into())
        ),
        18 => {
            let Ok(ServerMessage::GetVersion(id)) = server(line) else {
                panic!("{expect}")
            };
            assert_eq!(id, Id::from(10u64));
            let reply = ClientMessage::Response(Response::ok(id, "tower-stratum/0.1.0"));
            assert_eq!(
                reply.to_json(),
                r#"{"id":10,"result":"tower-stratum/0.1.0","error":null}"#
            );
        }
        19 => {
            let Ok(ServerMessage::Reconnect(r)) = server(line) else {
                panic!("{expect}")
            };
            assert_eq!((r.host, r.port, r.wait_secs), (None, None, None));
        }
        20 => {
            assert_eq!(server(line).unwrap(), ServerMessage::Ping(Id::Null));
            assert_eq!(
                ClientMessage::Response(Response::pong(Id::Null)).to_json(),
                r#"{"id":null,"result":"pong","error":null}"#
            );
        }
        21 => {
            let r = response(line);
            let c = ConfigureResult::from_result(&r.result).unwrap();
            assert_eq!(c.version_rolling, Some(ExtensionResult::Accepted));
            assert_eq!(c.granted_version_rolling_mask(), Some(0x1fff_e000));
        }
        22..=24 => {
            let Ok(ClientMessage::Configure(id, c)) = client(line) else {
                panic!("{expect}")
            };
            assert_eq!(id, Id::from(0u64), "id 0 is an id");
            let vr = c.version_rolling.unwrap();
            let (mask, bits) = match i {
                // A decimal string is decimal (SRI's sv1_api would read 0x16 = 22).
                22 => (0x1fff_ffe0, Some(16)),
                23 => (0x1fff_ffe0, Some(16)),
                _ => (0xffff_ffff, None),
            };
            assert_eq!((vr.mask, vr.min_bit_count), (Some(mask), bits), "{expect}");
            assert!(!c.subscribe_extranonce && c.minimum_difficulty.is_none());
        }
        25 => {
            let Ok(ClientMessage::Subscribe(id, s)) = client(line) else {
                panic!("{expect}")
            };
            assert_eq!(id, Id::from(1u64));
            assert_eq!(s.user_agent.as_deref(), Some("test-agent"));
            assert_eq!(s.session_id.as_deref(), Some("abc"));
            // Like SRI: odd-length hex is left-padded.
            assert_eq!(s.resume_extranonce1(), Some(vec![0x0a, 0xbc]));
        }
        26 | 27 => {
            let e = client(line).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::InvalidParams(_)), "{e}");
            assert_eq!(e.id, Some(Id::from(1u64)));
            assert_eq!(e.method.as_deref(), Some(method::SUBMIT));
            // A server answers Sv1 error 20 to the request's id.
            let reply = ServerMessage::Response(e.reply().unwrap());
            assert_eq!(
                reply.to_json(),
                r#"{"id":1,"result":null,"error":[20,"Other/Unknown",null]}"#
            );
        }
        28..=31 => {
            let result: Value = serde_json::from_str(line).unwrap();
            let result = if i == 31 {
                result["result"].clone()
            } else {
                result
            };
            let s = SubscribeResult::from_result(&result).unwrap();
            let (subs, extranonce1, size): (&[(&str, &str)], &str, usize) = match i {
                28 => (
                    &[
                        ("mining.set_difficulty", "deadbeefcafebabee20a000000000000"),
                        ("mining.notify", "deadbeefcafebabee20a000000000000"),
                    ],
                    "3ffffdfe",
                    4,
                ),
                29 => (&[("mining.notify", "5c567cf8")], "bf5c565c", 4),
                30 => (
                    &[("mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f")],
                    "a006868b",
                    4,
                ),
                _ => (
                    &[
                        ("mining.notify", "mining.notify"),
                        ("mining.set_difficulty", "mining.set_difficulty"),
                    ],
                    "00",
                    8,
                ),
            };
            let want: Vec<(String, String)> = subs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(s.subscriptions, want, "{expect}");
            assert_eq!(
                (hex(&s.extranonce1).as_str(), s.extranonce2_size),
                (extranonce1, size)
            );
            if i == 30 {
                // Canonical out is the nested form.
                assert_eq!(
                    s.to_value(),
                    json!([
                        [["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"]],
                        "a006868b",
                        4
                    ])
                );
            }
            if i == 31 {
                assert_eq!(response(line).id, Id::from(1u64));
            }
        }
        32 => {
            let Ok(ClientMessage::Subscribe(id, s)) = client(line) else {
                panic!("{expect}")
            };
            assert_eq!(id, Id::String("mining.subscribe".into()));
            assert_eq!(s, Default::default());
            let reply = ServerMessage::Response(Response::ok(
                id,
                SubscribeResult {
                    subscriptions: vec![("mining.notify".into(), "1".into())],
                    extranonce1: vec![0, 0, 0, 1],
                    extranonce2_size: 4,
                }
                .to_value(),
            ));
            assert_eq!(
                reply.to_json(),
                r#"{"id":"mining.subscribe","result":[[["mining.notify","1"]],"00000001",4],"error":null}"#
            );
        }
        33 => {
            let Ok(ClientMessage::Subscribe(id, s)) = client(line) else {
                panic!("{expect}")
            };
            assert_eq!(id, Id::from(1u64));
            assert_eq!(s.user_agent.as_deref(), Some("BzMiner/v16.0.5"));
            assert_eq!(
                ClientMessage::Subscribe(id, s).to_json(),
                r#"{"id":1,"method":"mining.subscribe","params":["BzMiner/v16.0.5"]}"#
            );
        }
        34 => {
            let s = Submit::from_params(&serde_json::from_str(line).unwrap()).unwrap();
            assert_eq!(s.worker_name, "814d7ad2fc212263");
            assert_eq!(s.job_id, "125");
            assert_eq!(s.extranonce2, vec![0x28, 0xb9, 0x04, 0, 0, 0, 0, 0]);
            assert_eq!(
                (s.ntime, s.nonce, s.version_bits),
                (0x5e59_0495, 0x275d_26e4, None)
            );
        }
        _ => panic!("parse case {i} has no assertion: {expect}"),
    }
}

#[test]
fn every_parse_case() {
    let v: Value = serde_json::from_str(PARSE).unwrap();
    let cases = v["parse_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 35, "a case was added: give it an assertion");
    for (i, case) in cases.iter().enumerate() {
        let line = case["line"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        assert!(case["source"].as_str().is_some_and(|s| !s.is_empty()));
        check_case(i, line, expect);
    }
}

/// Which side sent a transcript line: requests of client methods come from the client, all
/// else (responses, server methods) from the server.
fn from_client(line: &str) -> bool {
    let v: Value = serde_json::from_str(line).unwrap();
    v["method"]
        .as_str()
        .is_some_and(|m| method::CLIENT_TO_SERVER.contains(&m))
}

/// Replays a transcript: every line parses, typed results parse where the id says what the
/// response answers, and the whole transcript through a codec in odd chunks gives the same.
fn replay(name: &str, lines: &[&str]) {
    let mut pending: Vec<(Id, &'static str)> = Vec::new();
    for line in lines {
        if from_client(line) {
            let msg = client(line).unwrap_or_else(|e| panic!("{name}: {line}: {e}"));
            let m = msg.method().unwrap();
            let m = method::CLIENT_TO_SERVER.iter().find(|x| **x == m).unwrap();
            pending.push((msg.id().clone(), m));
        } else {
            let msg = server(line).unwrap_or_else(|e| panic!("{name}: {line}: {e}"));
            if let ServerMessage::Response(r) = &msg {
                let at = pending.iter().position(|(id, _)| *id == r.id);
                let (_, m) = pending.remove(at.expect("response to a request sent"));
                match m {
                    method::SUBSCRIBE => {
                        SubscribeResult::from_result(&r.result).unwrap();
                    }
                    method::CONFIGURE => {
                        ConfigureResult::from_result(&r.result).unwrap();
                    }
                    _ => assert_eq!(r.bool_result(), Ok(true), "{name}: {line}"),
                }
            }
        }
    }
    // The whole transcript as one stream, CRLF-terminated, in 7-byte chunks, through the
    // direction-agnostic codec: every line parses.
    let wire: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    let mut codec = tower_stratum_sv1::Sv1MessageCodec::default();
    let (items, err) = feed_chunked(&mut codec, wire.as_bytes(), &[7], |_| {});
    assert!(err.is_none());
    assert_eq!(items.len(), lines.len());
    assert!(items.iter().all(Result::is_ok), "{name}");
}

#[test]
fn every_real_transcript_line() {
    let v: Value = serde_json::from_str(PARSE).unwrap();
    let transcripts = v["real_transcripts"].as_array().unwrap();
    assert_eq!(transcripts.len(), 3);
    let mut replayed = 0;
    for t in transcripts {
        let name = t["name"].as_str().unwrap();
        assert!(t["source"].as_str().is_some());
        match t["lines"].as_array() {
            Some(lines) => {
                let lines: Vec<&str> = lines.iter().map(|l| l.as_str().unwrap()).collect();
                replay(name, &lines);
                replayed += 1;
            }
            // Scripted negative sessions: service-level tests (issue 4, section 2), no lines.
            None => assert_eq!(name, "widowan_proxy_manual_test_commands"),
        }
    }
    assert_eq!(replayed, 2);
}

#[test]
fn every_share_vector_transcript_line() {
    let v: Value = serde_json::from_str(SHARES).unwrap();
    let mut replayed = 0;
    for s in v.as_array().unwrap() {
        if let Some(lines) = s["transcript"].as_array() {
            let lines: Vec<&str> = lines.iter().map(|l| l.as_str().unwrap()).collect();
            replay(s["name"].as_str().unwrap(), &lines);
            replayed += 1;
        }
    }
    assert_eq!(replayed, 2);
}

#[test]
fn error_codes_match_the_vectors() {
    let v: Value = serde_json::from_str(PARSE).unwrap();
    let table = v["error_codes_stratum_v1"].as_object().unwrap();
    for code in ErrorCode::ALL {
        let text = table[&code.code().to_string()].as_str().unwrap();
        // The table annotates 21 with "(=stale)"; the message is the part before it.
        assert_eq!(text.split(" (").next().unwrap(), code.message());
        assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        assert_eq!(Sv1Error::from(code).kind(), Some(code));
    }
    assert_eq!(table.len(), 7, "six codes and the source note");
    assert_eq!(ErrorCode::from_code(19), None);
}
