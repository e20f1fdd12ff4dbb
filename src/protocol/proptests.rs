//! Property tests of the reply framer and the request parser: random valid RESP2/RESP3 values
//! frame the same whole and cut anywhere, random bytes never panic, and declared counts and
//! lengths never turn into allocations.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::Protocol;
use super::frame::{ReplyFrame, ReplyFramer, ReplyKind, frame_reply};
use super::request::{RequestParser, encode_command};

/// A RESP value; encoded with [`encode`], whose length and kind the framer must find.
#[derive(Debug, Clone)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    NullBulk,
    NullArray,
    Null,
    Double(f64),
    Bool(bool),
    BigNumber(String),
    Verbatim(Vec<u8>),
    BlobError(Vec<u8>),
    Array(Vec<Value>),
    Set(Vec<Value>),
    Push(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Attributed(Vec<(Value, Value)>, Box<Value>),
    StreamedString(Vec<Vec<u8>>),
    StreamedArray(Vec<Value>),
}

fn line_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 :._-]{0,20}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes, CR and LF included: a bulk's payload is skipped by length, never scanned.
    prop::collection::vec(any::<u8>(), 0..24)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        line_text().prop_map(Value::Simple),
        line_text().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Int),
        bytes().prop_map(Value::Bulk),
        Just(Value::NullBulk),
        Just(Value::NullArray),
        Just(Value::Null),
        any::<f64>().prop_map(Value::Double),
        any::<bool>().prop_map(Value::Bool),
        "-?[1-9][0-9]{0,40}".prop_map(Value::BigNumber),
        bytes().prop_map(Value::Verbatim),
        bytes().prop_map(Value::BlobError),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..8), 0..4)
            .prop_map(Value::StreamedString),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 64, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            pairs.clone().prop_map(Value::Map),
            (pairs, inner.clone()).prop_map(|(a, v)| Value::Attributed(a, Box::new(v))),
            prop::collection::vec(inner, 0..6).prop_map(Value::StreamedArray),
        ]
    })
}

fn header(out: &mut Vec<u8>, ty: u8, n: usize) {
    out.push(ty);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn blob(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
    header(out, ty, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, ty: u8, text: &str) {
    out.push(ty);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `v` to `out`; returns its kind as a top-level reply, offsets from `out`'s start.
fn encode(out: &mut Vec<u8>, v: &Value) -> ReplyKind {
    let start = out.len();
    match v {
        Value::Simple(s) => line(out, b'+', s),
        Value::Error(s) => {
            line(out, b'-', s);
            return ReplyKind::Error(start + 1, out.len() - 2);
        }
        Value::Int(n) => line(out, b':', &n.to_string()),
        Value::Bulk(b) => blob(out, b'$', b),
        Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
        Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Value::Null => out.extend_from_slice(b"_\r\n"),
        Value::Double(d) => line(out, b',', &d.to_string()),
        Value::Bool(b) => line(out, b'#', if *b { "t" } else { "f" }),
        Value::BigNumber(s) => line(out, b'(', s),
        Value::Verbatim(b) => {
            let mut data = b"txt:".to_vec();
            data.extend_from_slice(b);
            blob(out, b'=', &data);
        }
        Value::BlobError(b) => {
            blob(out, b'!', b);
            return ReplyKind::Error(out.len() - 2 - b.len(), out.len() - 2);
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let ty = match v {
                Value::Set(_) => b'~',
                Value::Push(_) => b'>',
                _ => b'*',
            };
            header(out, ty, items.len());
            for item in items {
                encode(out, item);
            }
            if ty == b'>' {
                return ReplyKind::Push;
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(out, k);
                encode(out, v);
            }
        }
        Value::Attributed(attributes, v) => {
            header(out, b'|', attributes.len());
            for (k, v) in attributes {
                encode(out, k);
                encode(out, v);
            }
            return encode(out, v);
        }
        Value::StreamedString(chunks) => {
            out.extend_from_slice(b"$?\r\n");
            for chunk in chunks {
                blob(out, b';', chunk);
            }
            out.extend_from_slice(b";0\r\n");
        }
        Value::StreamedArray(items) => {
            out.extend_from_slice(b"*?\r\n");
            for item in items {
                encode(out, item);
            }
            out.extend_from_slice(b".\r\n");
        }
    }
    ReplyKind::Value
}

/// The frames a stream of replies should give, and its bytes.
fn encode_all(values: &[Value]) -> (Vec<ReplyFrame>, Vec<u8>) {
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for v in values {
        let mut one = Vec::new();
        let kind = encode(&mut one, v);
        frames.push(ReplyFrame {
            len: one.len(),
            kind,
        });
        stream.extend_from_slice(&one);
    }
    (frames, stream)
}

/// Frames `stream` delivered in the pieces that `cuts` (sorted offsets) mark.
fn frame_pieces(stream: &[u8], cuts: &[usize]) -> Result<Vec<ReplyFrame>, String> {
    let mut framer = ReplyFramer::new(Protocol::Resp3);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&stream.len()]) {
        let to = to.clamp(from, stream.len());
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        while let Some(frame) = framer.next_frame(&buf).map_err(|e| e.to_string())? {
            frames.push(frame);
            buf.drain(..frame.len);
        }
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes left over", buf.len()));
    }
    Ok(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_replies_frame_alike_whole_and_cut_anywhere(
        values in prop::collection::vec(value(), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (want, stream) = encode_all(&values);
        prop_assert_eq!(frame_pieces(&stream, &[]), Ok(want.clone()));
        // One cut at every byte boundary...
        for cut in 0..stream.len() {
            prop_assert_eq!(frame_pieces(&stream, &[cut]), Ok(want.clone()), "cut at {}", cut);
        }
        // ...and random pieces.
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(frame_pieces(&stream, &cuts), Ok(want));
    }

    #[test]
    fn random_bytes_never_panic_the_framer(
        input in prop::collection::vec(any::<u8>(), 0..256),
        step in 1usize..16,
    ) {
        let _ = frame_reply(&input, Protocol::Resp2);
        let mut framer = ReplyFramer::new(Protocol::Resp3);
        let mut buf = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            match framer.next_frame(&buf) {
                Ok(Some(frame)) => {
                    prop_assert!(frame.len <= buf.len());
                    buf.drain(..frame.len);
                }
                Ok(None) => {}
                Err(_) => buf.clear(),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_parser(
        input in prop::collection::vec(any::<u8>(), 0..256),
        step in 1usize..16,
    ) {
        let mut parser = RequestParser::new(64, 8).with_max_request_bytes(128);
        let mut buf = BytesMut::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match parser.parse(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        buf.clear();
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn requests_parse_alike_whole_and_cut_anywhere(
        requests in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..6),
            1..4,
        ),
    ) {
        let mut stream = BytesMut::new();
        for args in &requests {
            encode_command(&mut stream, args);
        }
        for cut in 0..=stream.len() {
            let mut parser = RequestParser::new(1024, 1024);
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got: Vec<Vec<Bytes>> = Vec::new();
            while let Some(req) = parser.parse(&mut buf).map_err(|e| e.to_string())
                .map_err(TestCaseError::fail)?
            {
                got.push(req.args);
            }
            buf.extend_from_slice(&stream[cut..]);
            while let Some(req) = parser.parse(&mut buf).map_err(|e| e.to_string())
                .map_err(TestCaseError::fail)?
            {
                got.push(req.args);
            }
            prop_assert!(buf.is_empty());
            let want: Vec<Vec<Bytes>> = requests
                .iter()
                .map(|args| args.iter().map(|a| Bytes::from(a.clone())).collect())
                .collect();
            prop_assert_eq!(got, want, "cut at {}", cut);
        }
    }

    #[test]
    fn declared_sizes_never_become_allocations(
        counts in prop::collection::vec((0usize..5, 1_000_000u64..i64::MAX as u64), 1..64),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Headers declaring huge aggregates and bulks, nested, then garbage: what the framer
        // holds must grow with the bytes received, not with what they declare.
        let types = [b'*', b'%', b'~', b'>', b'|'];
        let mut input = Vec::new();
        for &(ty, n) in &counts {
            header(&mut input, types[ty], n as usize);
        }
        input.extend_from_slice(b"$");
        input.extend_from_slice(counts[0].1.to_string().as_bytes());
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&tail);
        let mut framer = ReplyFramer::new(Protocol::Resp3);
        let _ = framer.next_frame(&input);
        prop_assert!(framer.stack_capacity() <= 4 + input.len() / 2);

        // The parser: one `*` header with a huge count, then bulks declaring huge lengths.
        let mut parser = RequestParser::new(u64::MAX, u64::MAX).with_max_request_bytes(u64::MAX);
        let mut request = BytesMut::new();
        request.extend_from_slice(format!("*{}\r\n", i32::MAX).as_bytes());
        request.extend_from_slice(format!("${}\r\n", counts[0].1).as_bytes());
        let before = request.capacity();
        prop_assert!(parser.parse(&mut request).is_ok_and(|r| r.is_none()));
        prop_assert!(parser.spans_capacity() <= 1024);
        prop_assert!(request.capacity() <= before.max(request.len() + 1024 * 1024 * 2));
    }
}
