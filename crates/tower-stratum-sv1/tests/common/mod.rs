//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Feeds `bytes` to `codec` in chunks of the given sizes (cycled), decoding after each chunk,
/// then calls `decode_eof`. Calls `check` with the codec's read buffer after every `Ok(None)`
/// (before the next chunk is appended) and returns the items and the first error.
pub(crate) fn feed_chunked<C: Decoder>(
    codec: &mut C,
    bytes: &[u8],
    chunks: &[usize],
    mut check: impl FnMut(&BytesMut),
) -> (Vec<C::Item>, Option<C::Error>) {
    let mut src = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks[i % chunks.len()].max(1).min(bytes.len() - pos);
        i += 1;
        src.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        loop {
            match codec.decode(&mut src) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {
                    check(&src);
                    break;
                }
                Err(e) => return (items, Some(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut src) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(e) => return (items, Some(e)),
        }
    }
    (items, None)
}

/// One line (plus `\n`) through a fresh codec: the single item it yields.
pub(crate) fn decode_one<C: Decoder + Default>(line: &str) -> C::Item
where
    C::Error: std::fmt::Debug,
{
    let mut codec = C::default();
    let mut src = BytesMut::from(format!("{line}\n").as_bytes());
    let item = codec.decode(&mut src).unwrap().expect("one complete line");
    assert!(src.is_empty());
    assert!(codec.decode(&mut src).unwrap().is_none());
    item
}
