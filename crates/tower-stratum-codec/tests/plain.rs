//! PlainCodec: spec 3.2 framing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{BufMut, BytesMut};
use common::{encode_all, feed_chunked, frame, sample_frames};
use futures_util::{SinkExt, StreamExt};
use std::io;
use tokio_util::codec::{Decoder, Encoder, Framed};
use tower_stratum_codec::{CodecError, PartialFrameBudget, PlainCodec, Sv2Codec};
use tower_stratum_core::frame::{HEADER_SIZE, MAX_PAYLOAD_LEN};

const MAX: usize = 1 << 16;

#[test]
fn round_trip_split_at_every_byte_boundary() {
    let frames = sample_frames();
    let wire = encode_all(&mut PlainCodec::new(MAX), &frames);
    for split in 0..=wire.len() {
        let mut codec = PlainCodec::new(MAX);
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for part in [&wire[..split], &wire[split..]] {
            src.extend_from_slice(part);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames, "split at {split}");
        assert!(src.is_empty());
        assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
    }
}

#[test]
fn round_trip_byte_by_byte() {
    let frames = sample_frames();
    let wire = encode_all(&mut PlainCodec::new(MAX), &frames);
    let (got, err) = feed_chunked(&mut PlainCodec::new(MAX), &wire, &[1], |_, _| {});
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, frames);
}

#[test]
fn wire_format_matches_spec() {
    let mut dst = BytesMut::new();
    PlainCodec::new(MAX)
        .encode(frame(0x8001, 0x1b, vec![0xaa, 0xbb]), &mut dst)
        .unwrap();
    assert_eq!(&dst[..], &[0x01, 0x80, 0x1b, 0x02, 0x00, 0x00, 0xaa, 0xbb]);
}

#[test]
fn payload_is_split_off_without_copying() {
    let mut src = BytesMut::new();
    PlainCodec::new(MAX)
        .encode(frame(0, 0x00, vec![7u8; 64]), &mut src)
        .unwrap();
    let base = src.as_ptr() as usize;
    let f = PlainCodec::new(MAX).decode(&mut src).unwrap().unwrap();
    assert_eq!(f.payload.as_ptr() as usize, base + 6);
}

#[test]
fn oversize_declared_frame_is_rejected_before_reserving() {
    let max = 1000;
    let declared = 10_000_000;
    let mut codec = PlainCodec::new(max);
    let mut src = BytesMut::with_capacity(64);
    src.put_u16_le(0);
    src.put_u8(0x1b);
    src.put_slice(&(declared as u32).to_le_bytes()[..3]);
    let err = codec.decode(&mut src).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLarge { declared: d, max: m } if d == declared && m == max),
        "{err:?}"
    );
    assert!(src.capacity() < 4096, "capacity grew to {}", src.capacity());
    // Dead from now on.
    assert!(matches!(codec.decode(&mut src), Err(CodecError::Dead)));
}

#[test]
fn incomplete_frame_reserves_only_up_to_its_checked_size() {
    let mut codec = PlainCodec::new(MAX);
    let mut src = BytesMut::with_capacity(6);
    src.put_u16_le(0);
    src.put_u8(0x1b);
    src.put_slice(&5000u32.to_le_bytes()[..3]);
    assert_eq!(codec.decode(&mut src).unwrap(), None);
    assert!(src.capacity() >= 5006);
    assert!(
        src.capacity() < 2 * 5006,
        "over-reserved: {}",
        src.capacity()
    );
}

#[test]
fn max_payload_frame_is_accepted_and_one_more_byte_is_not() {
    let max = 300;
    let wire = encode_all(&mut PlainCodec::new(MAX), &[frame(0, 1, vec![1u8; max])]);
    let f = PlainCodec::new(max)
        .decode(&mut wire.clone())
        .unwrap()
        .unwrap();
    assert_eq!(f.payload.len(), max);
    let wire = encode_all(
        &mut PlainCodec::new(MAX),
        &[frame(0, 1, vec![1u8; max + 1])],
    );
    assert!(matches!(
        PlainCodec::new(max).decode(&mut wire.clone()),
        Err(CodecError::FrameTooLarge {
            declared: 301,
            max: 300
        })
    ));
}

#[test]
fn encoding_a_payload_over_u24_is_rejected_without_writing() {
    let mut codec = PlainCodec::new(MAX);
    let mut dst = BytesMut::new();
    let err = codec
        .encode(frame(0, 1, vec![0u8; MAX_PAYLOAD_LEN + 1]), &mut dst)
        .unwrap_err();
    assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err:?}");
    assert!(dst.is_empty());
    // Not fatal.
    codec.encode(frame(0, 1, vec![1u8]), &mut dst).unwrap();
}

#[test]
fn eof_inside_a_frame_is_an_unexpected_eof() {
    let wire = encode_all(&mut PlainCodec::new(MAX), &sample_frames());
    let mut codec = PlainCodec::new(MAX);
    let mut src = BytesMut::from(&wire[..wire.len() - 1]);
    while codec.decode(&mut src).unwrap().is_some() {}
    match codec.decode_eof(&mut src) {
        Err(CodecError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn framed_over_duplex() {
    let (a, b) = tokio::io::duplex(256);
    let mut a = Framed::new(a, Sv2Codec::from(PlainCodec::new(MAX)));
    let mut b = Framed::new(b, Sv2Codec::from(PlainCodec::new(MAX)));
    let frames = sample_frames();
    let send = async {
        for f in &frames {
            a.send(f.clone()).await.unwrap();
        }
        a
    };
    let recv = async {
        let mut got = Vec::new();
        for _ in 0..frames.len() {
            got.push(b.next().await.unwrap().unwrap());
        }
        got
    };
    let (a, got) = tokio::join!(send, recv);
    assert_eq!(got, frames);
    drop(a);
    assert!(b.next().await.is_none());
}

#[test]
fn a_large_declared_frame_reserves_one_chunk_not_its_length() {
    let mut codec = PlainCodec::new(MAX_PAYLOAD_LEN);
    let len = MAX_PAYLOAD_LEN;
    let mut src = BytesMut::from(&[0u8, 0, 0x15, 0xff, 0xff, 0xff][..]);
    assert!(codec.decode(&mut src).unwrap().is_none());
    assert!(
        src.capacity() <= HEADER_SIZE + tower_stratum_codec::READ_CHUNK,
        "reserved {} bytes for a frame declaring {len}",
        src.capacity()
    );
}

#[test]
fn unfinished_frames_are_charged_to_the_budget_beyond_the_allowance() {
    let budget = PartialFrameBudget::new(10_000, 1_000);
    let mut a = PlainCodec::new(MAX);
    a.set_budget(budget.charge());
    let mut b = PlainCodec::new(MAX);
    b.set_budget(budget.charge());
    let wire = encode_all(
        &mut PlainCodec::new(MAX),
        &[frame(0, 0x20, vec![7u8; 8_000])],
    );
    let mut src_a = BytesMut::from(&wire[..7_000]);
    assert!(a.decode(&mut src_a).unwrap().is_none());
    assert_eq!(budget.used(), 6_000);
    // b would take the total past 10,000: refused, fatal for b only.
    let mut src_b = BytesMut::from(&wire[..6_000]);
    match b.decode(&mut src_b) {
        Err(CodecError::BudgetExhausted { held, used, limit }) => {
            assert_eq!((held, used, limit), (6_000, 6_000, 10_000))
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    assert!(matches!(b.decode(&mut src_b), Err(CodecError::Dead)));
    drop(b);
    // a completes its frame: the charge is returned.
    src_a.extend_from_slice(&wire[7_000..]);
    assert!(a.decode(&mut src_a).unwrap().is_some());
    assert_eq!(budget.used(), 0);
}

#[test]
fn the_limit_can_be_lowered_between_frames() {
    let mut codec = PlainCodec::new(MAX);
    codec.set_max_payload(100);
    let wire = encode_all(&mut PlainCodec::new(MAX), &[frame(0, 0x20, vec![1u8; 101])]);
    let mut src = BytesMut::from(&wire[..]);
    assert!(matches!(
        codec.decode(&mut src),
        Err(CodecError::FrameTooLarge {
            declared: 101,
            max: 100
        })
    ));
}
