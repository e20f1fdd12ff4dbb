//! Fuzzes the reply framer: any bytes, delivered in pieces of any size, must frame exactly as
//! the same bytes delivered at once (same frames, same kinds, an error at the same frame), and
//! never panic, overflow the stack or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use respgate::protocol::{FrameError, Protocol, ReplyFrame, ReplyFramer};

/// The frames of `input` read in pieces of `step` bytes, and whether framing ended in an error.
fn frames(input: &[u8], step: usize) -> (Vec<ReplyFrame>, Option<FrameError>) {
    let mut framer = ReplyFramer::new(Protocol::Resp3);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next_frame(&buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len > 0 && frame.len <= buf.len(), "{frame:?}");
                    buf.drain(..frame.len);
                    out.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    let examined = framer.bytes_examined();
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
    let (whole, whole_err) = frames(input, input.len().max(1));
    let (pieces, pieces_err) = frames(input, usize::from(step % 64) + 1);
    assert_eq!(whole, pieces);
    assert_eq!(whole_err, pieces_err);
});
