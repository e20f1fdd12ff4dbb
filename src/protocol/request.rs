//! Client request parsing: RESP multibulk and inline commands, with Redis's limits and errors.
//!
//! A request keeps the exact bytes the client sent (`raw`) so the proxy forwards them unchanged;
//! `args` are zero-copy slices of those bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Longest inline request, and longest `*`/`$` header line, Redis accepts (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// A malformed request. The text after `Protocol error: ` matches what Redis replies.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(text: impl Into<String>) -> Self {
        ProtocolError(text.into())
    }
}

/// One command as the client sent it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request as RESP multibulk bytes: what the client sent, or the re-encoding of an inline
    /// command.
    pub raw: Bytes,
    /// The arguments, the command name first; each a slice of `raw` for multibulk requests.
    pub args: Vec<Bytes>,
}

impl Request {
    /// Builds a request from arguments, encoding them as RESP multibulk.
    pub fn from_args(args: Vec<Bytes>) -> Request {
        let mut raw =
            BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        encode_command(&mut raw, &args);
        Request {
            raw: raw.freeze(),
            args,
        }
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        self.args.first().map(|a| a.as_ref()).unwrap_or_default()
    }
}

/// Appends `args` to `out` as a RESP multibulk command.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut BytesMut, args: &[A]) {
    out.put_u8(b'*');
    put_decimal(out, args.len() as u64);
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        put_decimal(out, arg.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Writes a non-negative integer in decimal without allocating.
pub fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// Incremental request parser with the configured limits.
#[derive(Debug, Clone)]
pub struct RequestParser {
    max_bulk_len: u64,
    max_multibulk_len: u64,
}

impl RequestParser {
    /// A parser that rejects bulks longer than `max_bulk_len` bytes and requests of more than
    /// `max_multibulk_len` arguments.
    pub fn new(max_bulk_len: u64, max_multibulk_len: u64) -> Self {
        RequestParser {
            max_bulk_len,
            max_multibulk_len,
        }
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Empty requests (`*0`, blank inline lines)
    /// are consumed silently, as Redis does.
    pub fn parse(&self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let parsed = if first == b'*' {
                self.parse_multibulk(buf)?
            } else {
                parse_inline(buf)?
            };
            match parsed {
                Parsed::Incomplete => return Ok(None),
                Parsed::Empty => continue,
                Parsed::Request(req) => return Ok(Some(req)),
            }
        }
    }

    fn parse_multibulk(&self, buf: &mut BytesMut) -> Result<Parsed, ProtocolError> {
        let Some((_, mut pos)) = read_header(buf, 0, "too big mbulk count string")? else {
            return Ok(Parsed::Incomplete);
        };
        let count = match parse_int(&buf[1..pos - 2]) {
            Some(n)
                if n <= i64::from(i32::MAX) && (n <= 0 || n as u64 <= self.max_multibulk_len) =>
            {
                n
            }
            _ => return Err(ProtocolError::new("invalid multibulk length")),
        };
        if count <= 0 {
            buf.advance(pos);
            return Ok(Parsed::Empty);
        }
        let mut spans = Vec::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            let Some((_, data_start)) = read_header(buf, pos, "too big bulk count string")? else {
                return Ok(Parsed::Incomplete);
            };
            let header = &buf[pos..data_start - 2];
            if header.first() != Some(&b'$') {
                let got = header.first().copied().unwrap_or(b'\r') as char;
                return Err(ProtocolError(format!("expected '$', got '{got}'")));
            }
            let len = match parse_int(&header[1..]) {
                Some(n) if n >= 0 && n as u64 <= self.max_bulk_len => n as usize,
                _ => return Err(ProtocolError::new("invalid bulk length")),
            };
            let data_end = data_start + len;
            if buf.len() < data_end + 2 {
                // Make room for the whole bulk once, instead of growing in small steps.
                buf.reserve(data_end + 2 - buf.len());
                return Ok(Parsed::Incomplete);
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                return Err(ProtocolError::new("expected CRLF after bulk data"));
            }
            spans.push((data_start, data_end));
            pos = data_end + 2;
        }
        let raw = buf.split_to(pos).freeze();
        let args = spans.into_iter().map(|(s, e)| raw.slice(s..e)).collect();
        Ok(Parsed::Request(Request { raw, args }))
    }
}

enum Parsed {
    Incomplete,
    Empty,
    Request(Request),
}

/// Finds the CRLF-terminated line starting at `start`; returns the line's first byte and the
/// offset just past its CRLF.
fn read_header(
    buf: &[u8],
    start: usize,
    too_big: &str,
) -> Result<Option<(u8, usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    match memchr_cr(rest) {
        // A header whose CR is not followed by LF fails to parse as a number later, which is
        // the error Redis reports for it too.
        Some(cr) if cr + 1 < rest.len() => Ok(Some((rest[0], start + cr + 2))),
        _ if rest.len() > INLINE_MAX_BYTES => Err(ProtocolError::new(too_big)),
        _ => Ok(None),
    }
}

fn memchr_cr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\r')
}

/// Parses a decimal integer as Redis's `string2ll` does: optional `-`, digits, no spaces.
pub fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if body.is_empty() || body.len() > 19 {
        return None;
    }
    if body.len() > 1 && body[0] == b'0' {
        return None;
    }
    let mut value: i64 = 0;
    for &d in body {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

fn parse_inline(buf: &mut BytesMut) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX_BYTES {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line = buf.split_to(nl + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let args =
        split_args(text).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    if args.is_empty() {
        return Ok(Parsed::Empty);
    }
    Ok(Parsed::Request(Request::from_args(
        args.into_iter().map(Bytes::from).collect(),
    )))
}

/// Splits an inline command line into arguments with the quoting rules of Redis's
/// `sdssplitargs`: double quotes with backslash escapes (`\n`, `\xHH`, ...), single quotes with
/// `\'`, and a closing quote that must be followed by a space or the end of the line.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = line.get(i).copied();
            if in_double {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'x') => {
                        let hex = line.get(i + 2..i + 4).and_then(hex_byte);
                        match hex {
                            Some(byte) => {
                                current.push(byte);
                                i += 3;
                            }
                            None => current.push(b'\\'),
                        }
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        current.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_single {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(current);
    }
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match pair {
        [h, l] => Some((digit(*h)? * 16 + digit(*l)?) as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
        let small = RequestParser::new(10, 4);
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
        for bad in [&b""[..], b"-", b"01", b"1 ", b"+1", b"99999999999999999999"] {
            assert_eq!(parse_int(bad), None, "{:?}", bad);
        }
    }
}
