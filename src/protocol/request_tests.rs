//! Unit tests of the request parser: Redis's error texts and limits, resumption, linear cost.

use super::*;

fn parser() -> RequestParser {
    RequestParser::new(512 * 1024 * 1024, 1024 * 1024)
}

fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(req) = parser().parse(&mut buf)? {
        out.push(req.args.iter().map(|a| a.to_vec()).collect());
    }
    Ok(out)
}

#[test]
fn multibulk_keeps_raw_bytes_and_slices_args() {
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1\r\n$4\r\nPING\r\n"[..]);
    let req = parser().parse(&mut buf).unwrap().unwrap();
    assert_eq!(&req.raw[..], b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n");
    assert_eq!(req.args, vec![Bytes::from("GET"), Bytes::from("foo")]);
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
}

#[test]
fn partial_input_waits_at_every_split_point() {
    let full = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert!(parser().parse(&mut buf).unwrap().is_none(), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
    }
}

#[test]
fn inline_commands_split_like_redis() {
    let got = parse_all(b"set k \"a b\\n\"\r\nget 'it\\'s'\n\r\n").unwrap();
    assert_eq!(
        got,
        vec![
            vec![b"set".to_vec(), b"k".to_vec(), b"a b\n".to_vec()],
            vec![b"get".to_vec(), b"it's".to_vec()],
        ]
    );
    assert_eq!(split_args(b"\"\\x41\\x4a\""), Some(vec![b"AJ".to_vec()]));
}

#[test]
fn inline_is_reencoded_as_multibulk() {
    let mut buf = BytesMut::from(&b"PING hello\r\n"[..]);
    let req = parser().parse(&mut buf).unwrap().unwrap();
    assert_eq!(&req.raw[..], b"*2\r\n$4\r\nPING\r\n$5\r\nhello\r\n");
}

#[test]
fn empty_requests_are_skipped() {
    assert_eq!(parse_all(b"*0\r\n*-1\r\n\r\n  \r\n").unwrap().len(), 0);
}

#[test]
fn errors_match_redis_text() {
    let cases: [(&[u8], &str); 6] = [
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n+OK\r\n", "Protocol error: expected '$', got '+'"),
        (b"*1\r\n$-5\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
        (
            b"get \"unbalanced\r\n",
            "Protocol error: unbalanced quotes in request",
        ),
        (
            b"*1\r\n$3\r\nGETxx",
            "Protocol error: expected CRLF after bulk data",
        ),
    ];
    for (input, want) in cases {
        let err = parse_all(input).unwrap_err();
        assert_eq!(
            err.to_string(),
            want,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn limits_are_enforced_before_buffering() {
    let mut small = RequestParser::new(10, 4);
    let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
    assert_eq!(small.parse(&mut buf).unwrap_err().0, "invalid bulk length");
    let mut buf = BytesMut::from(&b"*5\r\n"[..]);
    assert_eq!(
        small.parse(&mut buf).unwrap_err().0,
        "invalid multibulk length"
    );
    let mut long = BytesMut::from(&vec![b'a'; INLINE_MAX_BYTES + 1][..]);
    assert_eq!(
        parser().parse(&mut long).unwrap_err().0,
        "too big inline request"
    );
    let mut header = BytesMut::from(&b"*1"[..]);
    header.extend_from_slice(&vec![b'1'; INLINE_MAX_BYTES + 1]);
    assert_eq!(
        parser().parse(&mut header).unwrap_err().0,
        "too big mbulk count string"
    );
}

#[test]
fn parse_int_is_strict() {
    assert_eq!(parse_int(b"123"), Some(123));
    assert_eq!(parse_int(b"-1"), Some(-1));
    assert_eq!(
        parse_int(b"999999999999999999"),
        Some(999_999_999_999_999_999)
    );
    assert_eq!(parse_int(b"-9223372036854775807"), Some(-i64::MAX));
    assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
    // As string2ll: the least i64 parses, `-0` does not.
    assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_int(b"0"), Some(0));
    for bad in [
        &b"-0"[..],
        b"-01",
        b"-9223372036854775809",
        b"",
        b"-",
        b"01",
        b"1 ",
        b"+1",
        b"1a",
        b"99999999999999999999",
        b"9223372036854775808",
        b"12345678901234567/",
    ] {
        assert_eq!(parse_int(bad), None, "{:?}", bad);
    }
}

/// Parses `input` fed in pieces of `step` bytes, as a session reading a slow client would;
/// returns the requests' arguments and the bytes the parser examined.
fn parse_in_pieces(
    parser: &mut RequestParser,
    input: &[u8],
    step: usize,
) -> Result<(Vec<Vec<Bytes>>, u64), ProtocolError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(req) = parser.parse(&mut buf)? {
            assert_eq!(
                req.raw.len(),
                encoded_len(&req.args),
                "raw is the whole request"
            );
            out.push(req.args);
        }
    }
    assert!(
        buf.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    Ok((out, parser.bytes_examined()))
}

fn encoded_len(args: &[Bytes]) -> usize {
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    out.len()
}

#[test]
fn a_request_read_in_small_pieces_costs_linear_time() {
    // 400,000 arguments (2.7 MB) sent a little at a time used to be re-parsed from byte 0 on
    // every read.
    let args: Vec<Bytes> = (0..400_000)
        .map(|i| Bytes::from(format!("{i:x}")))
        .collect();
    let mut input = BytesMut::new();
    encode_command(&mut input, &args);
    for step in [1024, 1] {
        let (got, examined) = parse_in_pieces(&mut parser(), &input, step).unwrap();
        assert_eq!(got, std::slice::from_ref(&args));
        assert!(
            examined <= 2 * input.len() as u64,
            "{examined} bytes examined for {} at step {step}",
            input.len()
        );
    }
}

#[test]
fn an_inline_request_read_byte_by_byte_costs_linear_time() {
    let mut input = b"SET key ".to_vec();
    input.extend_from_slice(&[b'v'; 60_000]);
    input.extend_from_slice(b"\r\nPING\r\n");
    let (got, examined) = parse_in_pieces(&mut parser(), &input, 1).unwrap();
    assert_eq!(got.len(), 2);
    assert!(examined <= 2 * input.len() as u64, "{examined}");
}

#[test]
fn every_split_gives_the_same_requests() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nPING x\r\n*0\r\n*1\r\n$0\r\n\r\n";
    let (whole, _) = parse_in_pieces(&mut parser(), input, input.len()).unwrap();
    assert_eq!(whole.len(), 3);
    for step in 1..input.len() {
        let (pieces, _) = parse_in_pieces(&mut parser(), input, step).unwrap();
        assert_eq!(pieces, whole, "step {step}");
    }
}

#[test]
fn a_request_over_max_request_bytes_is_refused() {
    let mut small = parser().with_max_request_bytes(64);
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$100\r\n"[..]);
    assert_eq!(
        small.parse(&mut buf).unwrap_err().to_string(),
        "Protocol error: request longer than max_request_bytes (64 bytes)"
    );
    // Many small arguments add up too, and the error comes before the request is complete.
    let mut buf = BytesMut::from(&b"*100\r\n"[..]);
    let mut small = parser().with_max_request_bytes(64);
    let mut err = None;
    for _ in 0..20 {
        buf.extend_from_slice(b"$1\r\nx\r\n");
        if let Err(e) = small.parse(&mut buf) {
            err = Some(e);
            break;
        }
    }
    assert!(err.is_some_and(|e| e.0.contains("max_request_bytes")));
    // Inline requests too.
    let mut buf = BytesMut::from(&[b'a'; 100][..]);
    assert!(small.parse(&mut buf).is_err());
    // At the limit is fine.
    let mut exact = parser().with_max_request_bytes(14);
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
    assert!(exact.parse(&mut buf).unwrap().is_some());
}

#[test]
fn declared_counts_and_lengths_do_not_allocate_up_front() {
    let mut p = parser();
    let mut buf = BytesMut::from(&b"*1000000\r\n$536870912\r\n"[..]);
    assert!(p.parse(&mut buf).unwrap().is_none());
    assert!(p.spans.capacity() <= SPANS_PREALLOC);
    assert!(buf.capacity() <= BULK_PREALLOC + 64, "{}", buf.capacity());
}

#[test]
fn a_cleared_buffer_starts_a_new_request() {
    let mut p = parser();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
    assert!(p.parse(&mut buf).unwrap().is_none());
    buf.clear();
    buf.extend_from_slice(b"PING\r\n");
    let req = p.parse(&mut buf).unwrap().unwrap();
    assert_eq!(req.args, [Bytes::from("PING")]);
}

#[test]
fn a_header_line_past_the_request_limit_is_refused_alike_whole_or_in_pieces() {
    // Found by the fuzzer: a count (or bulk length) line whose CR lies past max_request_bytes
    // was "invalid multibulk length" when it arrived whole, and "request longer than ..." in
    // pieces, where the limit is met before the CR.
    for head in [&b"*"[..], b"*1\r\n$"] {
        let mut input = head.to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\r\n");
        let refusal = |step: usize| {
            let mut parser = RequestParser::new(512, 64).with_max_request_bytes(64);
            let mut buf = BytesMut::new();
            for piece in input.chunks(step) {
                buf.extend_from_slice(piece);
                match parser.parse(&mut buf) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("a request from {input:?}"),
                    Err(e) => return e,
                }
            }
            panic!("no error for {input:?}")
        };
        let whole = refusal(input.len());
        assert_eq!(whole, refusal(7));
        assert!(
            whole.0.starts_with("request longer than max_request_bytes"),
            "{whole:?}"
        );
    }
}
