//! The line codec's framing rules and the lenient-input cases not covered by the vector files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use tower_stratum_sv1::{
    ClientMessage, ConfigureResult, ErrorCode, ExtensionResult, Id, ParseErrorKind, RawLine,
    Response, ServerMessage, Sv1ClientCodec, Sv1CodecError, Sv1Error, Sv1LineCodec, Sv1Message,
    Sv1ServerCodec, Target,
};

fn lines(codec: &mut Sv1LineCodec, input: &str) -> Vec<String> {
    let mut src = BytesMut::from(input.as_bytes());
    let mut out = Vec::new();
    while let Some(l) = codec.decode_eof(&mut src).unwrap() {
        out.push(String::from_utf8(l.unwrap().0.to_vec()).unwrap());
    }
    out
}

fn client(line: &str) -> Result<ClientMessage, tower_stratum_sv1::Sv1ParseError> {
    ClientMessage::parse_line(line.as_bytes())
}

fn server(line: &str) -> Result<ServerMessage, tower_stratum_sv1::Sv1ParseError> {
    ServerMessage::parse_line(line.as_bytes())
}

#[test]
fn lf_crlf_blank_lines_and_unterminated_last_line() {
    let mut c = Sv1LineCodec::default();
    assert_eq!(
        lines(&mut c, "a\r\n\n\r\n  \t\nb\nc\r\n\r\nlast"),
        ["a", "b", "c", "last"]
    );
    // A whitespace-only tail at EOF is no line; a lone '\r' line is blank.
    assert!(lines(&mut Sv1LineCodec::default(), "x\n \r").len() == 1);
    // Only one trailing '\r' is removed.
    assert_eq!(lines(&mut Sv1LineCodec::default(), "a\r\r\n"), ["a\r"]);
}

#[test]
fn incomplete_line_needs_more_bytes() {
    let mut c = Sv1ServerCodec::default();
    let mut src = BytesMut::from(&b"{\"id\":1,\"method\":\"mining.subscribe\""[..]);
    assert!(c.decode(&mut src).unwrap().is_none());
    src.extend_from_slice(b",\"params\":[]}");
    assert!(c.decode(&mut src).unwrap().is_none());
    src.extend_from_slice(b"\r\n");
    assert!(matches!(
        c.decode(&mut src).unwrap(),
        Some(Ok(ClientMessage::Subscribe(..)))
    ));
    assert!(src.is_empty());
}

#[test]
fn max_line_length_is_enforced_before_buffering_more() {
    let max = 16;
    // Exactly max bytes before '\n' is fine, a '\r' counts.
    let mut c = Sv1LineCodec::new(max);
    assert_eq!(lines(&mut c, &format!("{}\n", "a".repeat(max))).len(), 1);
    let mut c = Sv1LineCodec::new(max);
    assert_eq!(
        lines(&mut c, &format!("{}\r\n", "a".repeat(max - 1))).len(),
        1
    );

    // One byte at a time: the error comes at max + 1 buffered bytes, not later.
    let mut c = Sv1LineCodec::new(max);
    let mut src = BytesMut::new();
    for i in 0..max {
        src.extend_from_slice(b"x");
        assert!(c.decode(&mut src).unwrap().is_none(), "byte {i}");
    }
    src.extend_from_slice(b"x");
    assert!(matches!(
        c.decode(&mut src),
        Err(Sv1CodecError::LineTooLong { max: 16 })
    ));
    // Dead afterwards, even for good input.
    let mut good = BytesMut::from(&b"ok\n"[..]);
    assert!(matches!(c.decode(&mut good), Err(Sv1CodecError::Dead)));
    assert!(matches!(c.decode_eof(&mut good), Err(Sv1CodecError::Dead)));

    // A big read holding an oversize line after a good one: the good line first.
    let mut c = Sv1LineCodec::new(max);
    let mut src = BytesMut::from(format!("ok\n{}\n", "y".repeat(100)).as_bytes());
    assert_eq!(c.decode(&mut src).unwrap().unwrap().unwrap().0, "ok");
    assert!(c.decode(&mut src).is_err());
}

#[test]
fn raw_line_with_newline_is_refused() {
    let mut c = Sv1ServerCodec::default();
    let mut dst = BytesMut::new();
    assert!(matches!(
        c.encode(RawLine(Bytes::from_static(b"a\nb")), &mut dst),
        Err(Sv1CodecError::NewlineInLine)
    ));
    assert!(dst.is_empty());
    // A pre-encoded broadcast line goes through any codec.
    let line = RawLine::encode(&ServerMessage::SetDifficulty(2.5));
    c.encode(line, &mut dst).unwrap();
    assert_eq!(
        dst,
        "{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[2.5]}\n"
    );
}

/// A bad line does not end a `FramedRead` stream: it is an item.
#[tokio::test]
async fn parse_errors_do_not_end_the_stream() {
    let (mut client_io, server_io) = tokio::io::duplex(1024);
    let mut reader = FramedRead::new(server_io, Sv1ServerCodec::new(256));
    tokio::io::AsyncWriteExt::write_all(
        &mut client_io,
        b"not json\n{\"id\":3,\"method\":\"mining.authorize\",\"params\":[\"w\",\"x\"]}\n",
    )
    .await
    .unwrap();
    drop(client_io);
    let first = reader.next().await.unwrap().unwrap();
    assert!(matches!(first, Err(ref e) if matches!(e.kind, ParseErrorKind::Json(_))));
    let second = reader.next().await.unwrap().unwrap().unwrap();
    let ClientMessage::Authorize(id, a) = second else {
        panic!("{second:?}")
    };
    assert_eq!((id, a.username.as_str()), (Id::from(3u64), "w"));
    assert_eq!(
        format!("{a:?}"),
        "Authorize { username: \"w\", password: Some(\"<redacted>\") }"
    );
    assert!(reader.next().await.is_none());
}

#[tokio::test]
async fn framed_write_then_read() {
    let (client_io, server_io) = tokio::io::duplex(1024);
    let mut w = FramedWrite::new(server_io, Sv1ServerCodec::default());
    let mut r = FramedRead::new(client_io, Sv1ClientCodec::default());
    w.send(ServerMessage::Ping(Id::from("p"))).await.unwrap();
    w.send(ServerMessage::Response(Response::error(
        Id::from(0u64),
        ErrorCode::NotSubscribed,
    )))
    .await
    .unwrap();
    assert_eq!(
        r.next().await.unwrap().unwrap().unwrap(),
        ServerMessage::Ping(Id::from("p"))
    );
    let ServerMessage::Response(resp) = r.next().await.unwrap().unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(resp.id, Id::from(0u64));
    assert_eq!(
        resp.bool_result().unwrap_err().kind(),
        Some(ErrorCode::NotSubscribed)
    );
}

#[test]
fn ids_are_kept_exactly() {
    for (raw, id) in [
        ("0", Id::from(0u64)),
        ("-1", Id::from(-1i64)),
        ("18446744073709551615", Id::from(u64::MAX)),
        ("\"7\"", Id::from("7")),
        ("\"mining.subscribe\"", Id::from("mining.subscribe")),
        ("null", Id::Null),
        (
            "1.5",
            Id::Number(serde_json::Number::from_f64(1.5).unwrap()),
        ),
    ] {
        let line =
            format!("{{\"id\":{raw},\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}");
        let msg = client(&line).unwrap();
        assert_eq!(msg, ClientMessage::ExtranonceSubscribe(id.clone()));
        // Echoed verbatim.
        let reply = ServerMessage::Response(Response::ok(id, true)).to_json();
        assert!(reply.starts_with(&format!("{{\"id\":{raw},")), "{reply}");
    }
    // Absent id: null.
    assert_eq!(
        client(r#"{"method":"mining.extranonce.subscribe"}"#).unwrap(),
        ClientMessage::ExtranonceSubscribe(Id::Null)
    );
    // "1" and 1 are different ids.
    assert_ne!(Id::from("1"), Id::from(1u64));
    for bad in ["true", "[1]", "{\"a\":1}"] {
        let e = client(&format!(
            "{{\"id\":{bad},\"method\":\"mining.submit\",\"params\":[]}}"
        ))
        .unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::InvalidId), "{bad}");
        assert!(e.reply().is_none());
    }
}

#[test]
fn json_rpc_level_errors() {
    let kind = |l: &str| client(l).unwrap_err().kind;
    assert!(matches!(kind("[1,2]"), ParseErrorKind::NotAnObject));
    assert!(matches!(
        kind("\"mining.ping\""),
        ParseErrorKind::NotAnObject
    ));
    assert!(matches!(kind("{}"), ParseErrorKind::NotAMessage));
    assert!(matches!(kind("{\"id\":1}"), ParseErrorKind::NotAMessage));
    assert!(matches!(
        kind("{\"id\":1,\"method\":5}"),
        ParseErrorKind::InvalidMethod
    ));
    assert!(matches!(
        kind("{\"id\":1,\"id\":2,\"result\":true}"),
        ParseErrorKind::Json(_)
    ));
    assert!(matches!(
        kind("{\"id\":1,\"result\":tru"),
        ParseErrorKind::Json(_)
    ));
    assert!(matches!(kind("\u{feff}"), ParseErrorKind::Json(_)));
    // Not UTF-8.
    let e = ClientMessage::parse_line(b"{\"id\":1,\"method\":\"\xff\"}").unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::Json(_)));
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(
        "{{\"id\":1,\"method\":\"x.y\",\"params\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(matches!(
        client(&deep).unwrap_err().kind,
        ParseErrorKind::Json(_)
    ));
    let deep = "[".repeat(100_000);
    assert!(matches!(
        client(&deep).unwrap_err().kind,
        ParseErrorKind::Json(_)
    ));
    // A UTF-8 BOM and surrounding whitespace are tolerated.
    assert!(client("\u{feff} {\"id\":1,\"result\":true} ").is_ok());
}

#[test]
fn every_error_form() {
    let err = |e: &str| {
        let line = format!("{{\"id\":1,\"result\":null,\"error\":{e}}}");
        let ServerMessage::Response(r) = server(&line).unwrap() else {
            panic!()
        };
        r.error.unwrap()
    };
    assert_eq!(
        err("[23,\"Low difficulty share\",null]"),
        Sv1Error::from(ErrorCode::LowDifficultyShare)
    );
    assert_eq!(err("[22,\"Duplicate\"]"), Sv1Error::new(22, "Duplicate"));
    assert_eq!(err("[24]"), Sv1Error::from(ErrorCode::UnauthorizedWorker));
    assert_eq!(err("[\"21\",\"Stale\"]"), Sv1Error::new(21, "Stale"));
    assert_eq!(err("[21.0,\"Stale\"]"), Sv1Error::new(21, "Stale"));
    assert_eq!(
        err("{\"code\":-32601,\"message\":\"Method not found\"}"),
        Sv1Error::new(-32601, "Method not found")
    );
    assert_eq!(
        err("{\"code\":25}"),
        Sv1Error::from(ErrorCode::NotSubscribed)
    );
    assert_eq!(err("{\"message\":\"nope\"}"), Sv1Error::new(20, "nope"));
    assert_eq!(err("\"Stale\""), Sv1Error::new(20, "Stale"));
    assert_eq!(err("true"), Sv1Error::new(20, "true"));
    assert_eq!(err("[]"), Sv1Error::from(ErrorCode::Other));
    let with_data = err("[20,\"x\",{\"traceback\":\"t\"}]");
    assert_eq!(with_data.data, Some(json!({"traceback": "t"})));
    // Out: always [code, message, data].
    assert_eq!(
        serde_json::to_value(&with_data).unwrap(),
        json!([20, "x", {"traceback": "t"}])
    );

    // ckpool's reject-reason only counts when the result is not true.
    let r = |l: &str| match server(l).unwrap() {
        ServerMessage::Response(r) => r,
        _ => panic!(),
    };
    assert_eq!(
        r(r#"{"id":1,"result":true,"reject-reason":"x"}"#).bool_result(),
        Ok(true)
    );
    assert_eq!(
        r(r#"{"id":1,"result":false,"error":null}"#).bool_result(),
        Ok(false)
    );
    assert_eq!(r(r#"{"id":1,"error":null}"#).bool_result(), Ok(false));
    assert_eq!(
        r(r#"{"id":1,"reject-reason":"Stale"}"#).error,
        Some(Sv1Error::new(20, "Stale"))
    );
    // A typed error wins over reject-reason.
    assert_eq!(
        r(r#"{"id":1,"result":false,"error":[22,"dup",null],"reject-reason":"Duplicate"}"#).error,
        Some(Sv1Error::new(22, "dup"))
    );
}

#[test]
fn esp_miner_pong_is_a_response() {
    for m in ["pong", "mining.pong"] {
        let line = format!("{{\"id\":12,\"method\":\"{m}\",\"params\":[]}}");
        assert_eq!(
            client(&line).unwrap(),
            ClientMessage::Response(Response::pong(Id::from(12u64)))
        );
    }
    // A standard answer to mining.ping reads the same way.
    assert_eq!(
        client(r#"{"id":12,"result":"pong","error":null}"#).unwrap(),
        ClientMessage::Response(Response::pong(Id::from(12u64)))
    );
}

#[test]
fn unknown_methods_are_carried_through_and_directions_enforced() {
    let line = r#"{"id":9,"method":"mining.get_transactions","params":["job",{"a":1}]}"#;
    let ClientMessage::Unknown(r) = client(line).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.method.as_str(), r.id.clone()),
        ("mining.get_transactions", Id::from(9u64))
    );
    assert_eq!(ClientMessage::Unknown(r).to_json(), line);
    let ServerMessage::Unknown(_) =
        server(r#"{"id":null,"method":"mining.set_goal","params":["x"]}"#).unwrap()
    else {
        panic!()
    };

    // A client sending a server method, and the reverse.
    let e = client(r#"{"id":5,"method":"mining.notify","params":[]}"#).unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::WrongDirection));
    assert_eq!(
        e.reply().unwrap(),
        Response::error(Id::from(5u64), ErrorCode::Other)
    );
    let e = server(r#"{"id":5,"method":"mining.submit","params":[]}"#).unwrap_err();
    assert!(matches!(e.kind, ParseErrorKind::WrongDirection));
    // The untyped level takes both.
    assert!(matches!(
        Sv1Message::parse_line(br#"{"id":5,"method":"mining.notify","params":[]}"#).unwrap(),
        Sv1Message::Request(_)
    ));
}

#[test]
fn client_request_shapes() {
    // Subscribe: bOS+ four params, nulls, numbers refused.
    let ClientMessage::Subscribe(_, s) =
        client(r#"{"id":1,"method":"mining.subscribe","params":["bosminer/1.0",null,"pool.example",3333]}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (s.user_agent.as_deref(), s.session_id),
        (Some("bosminer/1.0"), None)
    );
    assert!(client(r#"{"id":1,"method":"mining.subscribe","params":[5]}"#).is_err());
    assert!(client(r#"{"id":1,"method":"mining.subscribe","params":null}"#).is_ok());
    assert!(client(r#"{"id":1,"method":"mining.subscribe"}"#).is_ok());
    assert!(client(r#"{"id":1,"method":"mining.subscribe","params":{"agent":"x"}}"#).is_err());

    // Authorize: password optional, null or numeric.
    for (params, pw) in [
        (r#"["u"]"#, None),
        (r#"["u",null]"#, None),
        (r#"["u",123]"#, Some("123")),
        (r#"["u","p"]"#, Some("p")),
    ] {
        let line = format!("{{\"id\":1,\"method\":\"mining.authorize\",\"params\":{params}}}");
        let ClientMessage::Authorize(_, a) = client(&line).unwrap() else {
            panic!()
        };
        assert_eq!(a.password.as_deref(), pw);
    }
    assert!(client(r#"{"id":1,"method":"mining.authorize","params":[]}"#).is_err());

    // Submit: upper-case hex, short u32 hex, numeric job id, null version bits, extra params.
    let ClientMessage::Submit(_, s) = client(
        r#"{"id":1,"method":"mining.submit","params":["w",42,"ABCD","5E148A8C","1",null,"extra"]}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(s.job_id, "42");
    assert_eq!(s.extranonce2, vec![0xab, 0xcd]);
    assert_eq!((s.ntime, s.nonce, s.version_bits), (0x5e14_8a8c, 1, None));
    for bad in [
        r#"["w","j","abc","00000000","00000000"]"#,
        r#"["w","j","zz","00000000","00000000"]"#,
        r#"["w","j","00","123456789","00000000"]"#,
        r#"["w","j","00","","00000000"]"#,
        r#"["w","j","00","00000000",0]"#,
        r#"["w","j","00","00000000","00000000",true]"#,
        r#"["w","j","00","00000000"]"#,
        r#"[null,"j","00","00000000","00000000"]"#,
    ] {
        let line = format!("{{\"id\":1,\"method\":\"mining.submit\",\"params\":{bad}}}");
        let e = client(&line).unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::InvalidParams(_)), "{bad}");
    }

    // Suggest difficulty / target.
    assert_eq!(
        client(r#"{"id":1,"method":"mining.suggest_difficulty","params":["512"]}"#).unwrap(),
        ClientMessage::SuggestDifficulty(Id::from(1u64), 512.0)
    );
    for bad in ["[0]", "[-1]", "[]", "[\"x\"]"] {
        let line =
            format!("{{\"id\":1,\"method\":\"mining.suggest_difficulty\",\"params\":{bad}}}");
        assert!(client(&line).is_err(), "{bad}");
    }
    let ClientMessage::SuggestTarget(_, t) =
        client(r#"{"id":1,"method":"mining.suggest_target","params":["00000000FFFF0000000000000000000000000000000000000000000000000000"]}"#).unwrap()
    else {
        panic!()
    };
    assert_eq!(t, tower_stratum_sv1::work::DIFF1_TARGET);
    let ClientMessage::SuggestTarget(_, t) =
        client(r#"{"id":1,"method":"mining.suggest_target","params":["ffff"]}"#).unwrap()
    else {
        panic!()
    };
    let mut be = [0u8; 32];
    be[30] = 0xff;
    be[31] = 0xff;
    assert_eq!(t, Target::from_be_bytes(be));
    assert!(client(&format!(
        "{{\"id\":1,\"method\":\"mining.suggest_target\",\"params\":[\"{}\"]}}",
        "f".repeat(65)
    ))
    .is_err());
}

#[test]
fn configure_request_shapes() {
    let line = r#"{"id":2,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","subscribe-extranonce","info","x-future"],{"version-rolling.mask":"1FFFE000","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048,"info.connection-url":"stratum+tcp://pool:3333","info.hw-version":"S19","info.sw-version":"1.0","info.hw-id":"abc","x-future.flag":true}]}"#;
    let ClientMessage::Configure(id, c) = client(line).unwrap() else {
        panic!()
    };
    assert_eq!(id, Id::from(2u64));
    let vr = c.version_rolling.unwrap();
    assert_eq!((vr.mask, vr.min_bit_count), (Some(0x1fff_e000), Some(2)));
    assert_eq!(c.minimum_difficulty.unwrap().value, Some(2048.0));
    assert!(c.subscribe_extranonce);
    let info = c.info.clone().unwrap();
    assert_eq!(
        info.connection_url.as_deref(),
        Some("stratum+tcp://pool:3333")
    );
    assert_eq!(info.hw_id.as_deref(), Some("abc"));
    assert_eq!(c.other_extensions, ["x-future"]);
    assert_eq!(
        c.other_params.get("x-future.flag"),
        Some(&Value::Bool(true))
    );
    // Canonical out: lower-case mask, same content.
    let out: Value = serde_json::from_str(&ClientMessage::Configure(id, c).to_json()).unwrap();
    assert_eq!(out["params"][1]["version-rolling.mask"], json!("1fffe000"));
    assert_eq!(out["params"][0].as_array().unwrap().len(), 5);

    // The mask without the name still requests version rolling; a hex min-bit-count string.
    let ClientMessage::Configure(_, c) = client(
        r#"{"id":2,"method":"mining.configure","params":[[],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":"0x10"}]}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.version_rolling.unwrap().min_bit_count, Some(16));
    // No params object; minimum-difficulty without a usable value.
    let ClientMessage::Configure(_, c) =
        client(r#"{"id":2,"method":"mining.configure","params":[["minimum-difficulty"]]}"#)
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.minimum_difficulty.unwrap().value, None);
    for bad in [
        "[]",
        "[\"version-rolling\"]",
        "[[\"version-rolling\"],5]",
        "[[\"version-rolling\"],{\"version-rolling.mask\":\"xyz\"}]",
        "[[\"version-rolling\"],{\"version-rolling.mask\":true}]",
    ] {
        let line = format!("{{\"id\":1,\"method\":\"mining.configure\",\"params\":{bad}}}");
        assert!(
            matches!(
                client(&line).unwrap_err().kind,
                ParseErrorKind::InvalidParams(_)
            ),
            "{bad}"
        );
    }
}

#[test]
fn server_message_shapes() {
    let r = |p: &str| match server(&format!(
        "{{\"id\":null,\"method\":\"client.reconnect\",\"params\":{p}}}"
    )) {
        Ok(ServerMessage::Reconnect(r)) => Ok((r.host, r.port, r.wait_secs)),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.kind),
    };
    assert_eq!(
        r(r#"["pool.example",3333,5]"#).unwrap(),
        (Some("pool.example".into()), Some(3333), Some(5))
    );
    assert_eq!(
        r(r#"["pool.example","3333"]"#).unwrap(),
        (Some("pool.example".into()), Some(3333), None)
    );
    assert!(r(r#"["pool.example",70000]"#).is_err());
    assert!(r(r#"[1,2]"#).is_err());

    // Notify: clean_jobs as 0/1, numeric job id, bad branch.
    let notify = |job: &str, branch: &str, clean: &str| {
        format!(
            "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[{job},\"{}\",\"01\",\"02\",{branch},\"20000000\",\"1d00ffff\",\"495fab29\",{clean}]}}",
            "00".repeat(32)
        )
    };
    let Ok(ServerMessage::Notify(n)) = server(&notify("7", "[]", "1")) else {
        panic!()
    };
    assert_eq!((n.job_id.as_str(), n.clean_jobs), ("7", true));
    assert!(server(&notify("\"j\"", "[\"00\"]", "true")).is_err());
    assert!(server(&notify("\"j\"", "\"x\"", "true")).is_err());
    assert!(server(&notify("\"j\"", "[]", "\"yes\"")).is_err());
    assert!(server(&notify("null", "[]", "true")).is_err());

    // Difficulty.
    assert!(server(r#"{"id":null,"method":"mining.set_difficulty","params":[0]}"#).is_err());
    assert_eq!(
        server(r#"{"id":null,"method":"mining.set_difficulty","params":[0.001]}"#).unwrap(),
        ServerMessage::SetDifficulty(0.001)
    );
    assert_eq!(
        ServerMessage::SetDifficulty(0.001).to_json(),
        r#"{"id":null,"method":"mining.set_difficulty","params":[0.001]}"#
    );
    assert_eq!(
        ServerMessage::SetDifficulty(65536.0).to_json(),
        r#"{"id":null,"method":"mining.set_difficulty","params":[65536]}"#
    );
    assert_eq!(
        ServerMessage::SetDifficulty(1e20).to_json(),
        r#"{"id":null,"method":"mining.set_difficulty","params":[1e+20]}"#
    );
    // Exact parse of a long decimal.
    let ServerMessage::SetDifficulty(d) =
        server(r#"{"id":null,"method":"mining.set_difficulty","params":[150839487445890.5]}"#)
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(d, 150_839_487_445_890.5);
}

#[test]
fn configure_result_shapes() {
    let c = ConfigureResult::from_result(&json!({
        "version-rolling": false,
        "minimum-difficulty": "not supported",
        "subscribe-extranonce": true,
        "x": 1
    }))
    .unwrap();
    assert_eq!(c.version_rolling, Some(ExtensionResult::Rejected));
    assert_eq!(c.granted_version_rolling_mask(), None);
    assert_eq!(
        c.minimum_difficulty,
        Some(ExtensionResult::Error("not supported".into()))
    );
    assert_eq!(c.subscribe_extranonce, Some(ExtensionResult::Accepted));
    assert_eq!(c.other.get("x"), Some(&json!(1)));
    assert_eq!(ConfigureResult::from_result(&c.to_value()).unwrap(), c);
    assert!(ConfigureResult::from_result(&json!([])).is_err());
    assert!(ConfigureResult::from_result(&json!({"version-rolling.mask": 5})).is_err());

    let granted = ConfigureResult {
        version_rolling: Some(ExtensionResult::Accepted),
        version_rolling_mask: Some(0x1fff_e000),
        ..Default::default()
    };
    assert_eq!(
        ServerMessage::Response(Response::ok(Id::from(3u64), granted.to_value())).to_json(),
        r#"{"id":3,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#
    );
}
