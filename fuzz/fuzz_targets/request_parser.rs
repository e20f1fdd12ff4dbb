//! Fuzzes the request parser: any bytes, delivered in pieces of any size, must parse exactly as
//! the same bytes delivered at once (same requests, same error), and never panic or hang.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use respgate::protocol::{ProtocolError, RequestParser};

/// The requests in `input` read in pieces of `step` bytes, and the error that ended parsing.
fn requests(input: &[u8], step: usize) -> (Vec<(Bytes, Vec<Bytes>)>, Option<ProtocolError>) {
    // Small limits, so that inputs of a few KB reach them.
    let mut parser = RequestParser::new(512, 64).with_max_request_bytes(2048);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(request)) => {
                    assert!(!request.args.is_empty());
                    out.push((request.raw, request.args));
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    let examined = parser.bytes_examined();
    assert!(
        examined <= 4 * input.len() as u64 + 16,
        "{examined} bytes examined for {}",
        input.len()
    );
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = requests(input, input.len().max(1));
    let pieces = requests(input, usize::from(step % 64) + 1);
    assert_eq!(whole, pieces);
});
