//! Unit tests of the reply framer: every type, nesting without recursion, resumption, and the
//! regressions that the `redis-protocol` decoder had (stack overflow, sets of maps).

use super::*;

/// Frames `input` fed in pieces of `step` bytes, as a node reader would; returns the frames
/// and the bytes the framer examined.
fn frame_in_pieces(input: &[u8], step: usize, protocol: Protocol) -> (Vec<ReplyFrame>, u64) {
    let mut framer = ReplyFramer::new(protocol);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(frame) = framer.next_frame(&buf).unwrap() {
            frames.push(frame);
            buf.drain(..frame.len);
        }
    }
    assert!(
        buf.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    (frames, framer.bytes_examined())
}

fn one(input: &[u8]) -> ReplyFrame {
    let frame = frame_reply(input, Protocol::Resp3).unwrap().unwrap();
    assert_eq!(
        frame.len,
        input.len(),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    for step in [1, 2, 3, 7] {
        let (frames, _) = frame_in_pieces(input, step, Protocol::Resp3);
        assert_eq!(frames, [frame], "step {step}");
    }
    frame
}

#[test]
fn frames_values_errors_and_pushes() {
    let buf = b"$3\r\nfoo\r\n-MOVED 1 h:1\r\n";
    let first = frame_reply(buf, Protocol::Resp2).unwrap().unwrap();
    assert_eq!(
        first,
        ReplyFrame {
            len: 9,
            kind: ReplyKind::Value
        }
    );
    let second = frame_reply(&buf[9..], Protocol::Resp2).unwrap().unwrap();
    assert_eq!(second.kind, ReplyKind::Error(1, 12));
    let push = b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n";
    assert_eq!(
        frame_reply(push, Protocol::Resp3).unwrap().unwrap().kind,
        ReplyKind::Push
    );
}

#[test]
fn incomplete_replies_wait() {
    assert_eq!(frame_reply(b"$10\r\nabc", Protocol::Resp2).unwrap(), None);
    assert_eq!(frame_reply(b"*2\r\n:1\r\n", Protocol::Resp3).unwrap(), None);
    assert_eq!(frame_reply(b"", Protocol::Resp2).unwrap(), None);
    assert_eq!(frame_reply(b"+OK\r", Protocol::Resp2).unwrap(), None);
}

#[test]
fn garbage_is_an_error() {
    assert!(frame_reply(b"?what\r\n", Protocol::Resp2).is_err());
    // Unknown type bytes fail before a line end arrives.
    assert!(frame_reply(b"x", Protocol::Resp2).is_err());
    for bad in [
        &b"$-2\r\n"[..],
        b"*abc\r\n",
        b"$3\r\nfooXY",
        b"|-1\r\n",
        b".\r\n",
        b";3\r\n",
        b"$?\r\n:1\r\n",
        b"*1\r\n$01\r\nx\r\n",
    ] {
        assert!(
            frame_reply(bad, Protocol::Resp3).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn resp3_scalars_frame_as_values() {
    for input in [
        &b"_\r\n"[..],
        b",3.14\r\n",
        b",-inf\r\n",
        b"#t\r\n",
        b"#f\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"$0\r\n\r\n",
        b"*0\r\n",
        b"%0\r\n",
        b"~0\r\n",
        b":-42\r\n",
        b"+line with a lone \n inside\r\n",
    ] {
        assert_eq!(one(input).kind, ReplyKind::Value);
    }
}

#[test]
fn blob_errors_give_the_error_text() {
    let input = b"!21\r\nSYNTAX invalid syntax\r\n";
    let frame = one(input);
    assert_eq!(frame.kind, ReplyKind::Error(5, 26));
    assert_eq!(&input[5..26], b"SYNTAX invalid syntax");
}

#[test]
fn attributes_annotate_the_value_that_follows() {
    // An attribute before an error: the error range still points at its text.
    let input =
        b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n-ERR x\r\n";
    let frame = one(input);
    let ReplyKind::Error(start, end) = frame.kind else {
        panic!("{frame:?}");
    };
    assert_eq!(&input[start..end], b"ERR x");
    // An attribute inside an array is not one of its elements.
    one(b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n");
    assert_eq!(
        frame_reply(b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n", Protocol::Resp3).unwrap(),
        None
    );
    // An empty attribute, and one before a push.
    assert_eq!(one(b"|0\r\n:1\r\n").kind, ReplyKind::Value);
    assert_eq!(one(b"|1\r\n+a\r\n+b\r\n>1\r\n+x\r\n").kind, ReplyKind::Push);
    assert_eq!(
        one(b"|1\r\n+a\r\n+b\r\n!3\r\nERR\r\n").kind,
        ReplyKind::Error(16, 19)
    );
}

#[test]
fn resp3_set_of_maps_from_command_info_frames() {
    // Redis 7.0 `COMMAND INFO get` under HELLO 3: the key specifications are a set of maps,
    // which the `redis-protocol` decoder refused.
    let input: &[u8] = b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n~1\r\n%3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n~0\r\n";
    assert_eq!(one(input).kind, ReplyKind::Value);
    // Maps and sets as members of each other, and as map keys.
    one(b"~2\r\n%1\r\n+a\r\n:1\r\n%1\r\n~1\r\n:1\r\n%0\r\n");
}

#[test]
fn streamed_strings_and_aggregates_frame() {
    one(b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n");
    one(b"*?\r\n:1\r\n$?\r\n;1\r\na\r\n;0\r\n%?\r\n+k\r\n+v\r\n.\r\n.\r\n");
    one(b"|?\r\n+k\r\n+v\r\n.\r\n:1\r\n");
    assert_eq!(
        frame_reply(b"*?\r\n:1\r\n:2\r\n", Protocol::Resp3).unwrap(),
        None
    );
}

#[test]
fn a_buffer_of_many_replies_frames_one_at_a_time() {
    let input = b"+OK\r\n*2\r\n:1\r\n:2\r\n-ERR no\r\n>1\r\n+x\r\n$1\r\nx\r\n";
    let lens: Vec<(usize, ReplyKind)> = frame_in_pieces(input, input.len(), Protocol::Resp2)
        .0
        .iter()
        .map(|f| (f.len, f.kind))
        .collect();
    assert_eq!(
        lens,
        [
            (5, ReplyKind::Value),
            (12, ReplyKind::Value),
            (9, ReplyKind::Error(1, 7)),
            (8, ReplyKind::Push),
            (7, ReplyKind::Value),
        ]
    );
}

/// `*1\r\n` `depth` times around `:1\r\n`.
fn nested(depth: usize) -> Vec<u8> {
    let mut input = b"*1\r\n".repeat(depth);
    input.extend_from_slice(b":1\r\n");
    input
}

#[test]
fn deep_nesting_needs_no_stack() {
    // Redis answers `EVAL "local a = {}; local b = {a}; a[1] = b; return a" 0` with a reply
    // nested thousands deep; the recursive decoder overflowed the worker's stack on it. A
    // 64 KiB stack could not hold 100,000 recursive calls.
    let worker = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| {
            let input = nested(100_000);
            let whole = frame_reply(&input, Protocol::Resp2).unwrap().unwrap();
            let (pieces, _) = frame_in_pieces(&input, 1024, Protocol::Resp2);
            (whole, pieces, input.len())
        })
        .unwrap();
    let (whole, pieces, len) = worker.join().unwrap();
    assert_eq!(whole.len, len);
    assert_eq!(pieces, [whole]);
}

#[test]
fn lua_self_referencing_table_reply_frames() {
    // The reply Redis 7.0 sends for the script above: 7,995 levels, then an error.
    let mut input = b"*1\r\n".repeat(7995);
    input.extend_from_slice(b"-ERR reached lua stack limit\r\n");
    assert_eq!(one(&input).kind, ReplyKind::Value);
}

#[test]
fn the_stack_is_given_back_after_a_deep_reply() {
    let mut framer = ReplyFramer::new(Protocol::Resp2);
    framer.next_frame(&nested(100_000)).unwrap().unwrap();
    assert!(framer.stack.capacity() <= STACK_KEEP);
}

#[test]
fn framing_examines_each_byte_a_bounded_number_of_times() {
    // A 1,000-element array of 100-byte bulks, a deep nest and many small scalars, fed one byte
    // and 1 KB at a time: the cost must not depend on how the bytes are split.
    let mut big = b"*1000\r\n".to_vec();
    for _ in 0..1000 {
        big.extend_from_slice(b"$100\r\n");
        big.extend_from_slice(&[b'v'; 100]);
        big.extend_from_slice(b"\r\n");
    }
    let mut scalars = b"*20000\r\n".to_vec();
    for i in 0..20000 {
        scalars.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    for input in [big, nested(50_000), scalars] {
        for step in [1, 1024] {
            let (frames, examined) = frame_in_pieces(&input, step, Protocol::Resp3);
            assert_eq!(frames.len(), 1);
            assert!(
                examined <= 2 * input.len() as u64,
                "{examined} bytes examined for {} at step {step}",
                input.len()
            );
        }
    }
}

#[test]
fn a_big_bulk_arriving_in_pieces_is_not_rescanned() {
    let mut input = b"$1000000\r\n".to_vec();
    input.extend_from_slice(&vec![b'x'; 1_000_000]);
    input.extend_from_slice(b"\r\n");
    let (frames, examined) = frame_in_pieces(&input, 1024, Protocol::Resp2);
    assert_eq!(frames.len(), 1);
    assert!(examined < 32, "{examined}");
}

#[test]
fn hostile_counts_and_lengths_allocate_nothing() {
    let mut framer = ReplyFramer::new(Protocol::Resp3);
    for input in [
        &b"*2147483647\r\n"[..],
        b"%9223372036854775807\r\n",
        b"$9223372036854775807\r\n",
        b"~2147483647\r\n*2147483647\r\n",
    ] {
        assert_eq!(framer.next_frame(input).unwrap(), None);
        assert!(framer.stack.capacity() <= 4);
        framer.reset();
    }
}

#[test]
fn header_lines_are_limited() {
    let mut input = b"*".to_vec();
    input.extend_from_slice(&vec![b'1'; MAX_HEADER_BYTES + 2]);
    assert!(matches!(
        frame_reply(&input, Protocol::Resp2),
        Err(FrameError::HeaderTooLong { .. })
    ));
    // A long simple string is a value, not a header.
    let mut status = b"-ERR ".to_vec();
    status.extend_from_slice(&vec![b'x'; MAX_HEADER_BYTES * 2]);
    status.extend_from_slice(b"\r\n");
    assert!(matches!(one(&status).kind, ReplyKind::Error(1, _)));
}

#[test]
fn a_shrunk_buffer_starts_over() {
    let mut framer = ReplyFramer::new(Protocol::Resp2);
    assert_eq!(framer.next_frame(b"*2\r\n:1\r\n").unwrap(), None);
    let frame = framer.next_frame(b"+OK\r\n").unwrap().unwrap();
    assert_eq!(frame.len, 5);
}

#[test]
fn last_depth_says_how_deeply_the_last_frame_nests() {
    let mut framer = ReplyFramer::new(Protocol::Resp2);
    let buf = b"*2\r\n*1\r\n*1\r\n:1\r\n:2\r\n+OK\r\n";
    let first = framer.next_frame(buf).unwrap().unwrap();
    assert_eq!(framer.last_depth(), 3);
    let second = framer.next_frame(&buf[first.len..]).unwrap().unwrap();
    assert_eq!(second.len, 5);
    assert_eq!(framer.last_depth(), 0);
}
