//! Client request parsing: RESP multibulk and inline commands, with Redis's limits and errors.
//!
//! A request keeps the exact bytes the client sent (`raw`) so the proxy forwards them unchanged;
//! `args` are zero-copy slices of those bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::inline::split_args;

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

/// Default for [`RequestParser::with_max_request_bytes`]: 1 GiB, Redis's default
/// `client-query-buffer-limit`.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;

/// Argument spans pre-allocated for a new multibulk, whatever count it declares: a client that
/// sends `*1000000` must send the arguments before the proxy spends memory on them.
const SPANS_PREALLOC: usize = 1024;

/// Span capacity kept between requests; the rest of a huge request's is given back.
const SPANS_KEEP: usize = 4096;

/// Most bytes reserved ahead in the read buffer for a bulk still arriving. A 10-byte header
/// must not make the proxy allocate `proto_max_bulk_len`; beyond this the buffer grows by
/// doubling as bytes arrive, which keeps copying linear.
const BULK_PREALLOC: usize = 1024 * 1024;

/// Where the request at the front of the buffer stands; offsets are from the buffer's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the next request looked at yet.
    Start,
    /// An inline request whose bytes before `scanned` hold no `\n`.
    Inline { scanned: usize },
    /// The `*<count>` line, whose bytes before `scanned` hold no `\r`.
    Count { scanned: usize },
    /// The `$<len>` header at `pos`, scanned up to `scanned`; `left` arguments to go, this one
    /// included.
    Header {
        pos: usize,
        scanned: usize,
        left: u64,
    },
    /// An argument's data from `start` to `end`, then CRLF; `left` as in `Header`.
    Data { start: usize, end: usize, left: u64 },
}

/// Why [`RequestParser::arguments`] stopped.
enum Stopped {
    /// The last argument was parsed.
    Complete,
    /// A header line is not all here; the next search starts at `stop`.
    Header { stop: usize },
    /// An argument's data is not all here.
    Data { start: usize, end: usize },
    /// The request is malformed.
    Error(ProtocolError),
}

/// Incremental request parser with the configured limits.
///
/// One per client connection: it keeps the multibulk count, the arguments found so far and its
/// offset between calls, so a request arriving in many reads costs time linear in its size.
/// Between calls the caller may only append to the buffer (or empty it when the parser has
/// returned everything); a buffer found shorter than what was examined is parsed afresh.
#[derive(Debug, Clone)]
pub struct RequestParser {
    max_bulk_len: u64,
    max_multibulk_len: u64,
    max_request_bytes: u64,
    state: State,
    /// Spans of the current request's arguments found so far, reused from one request to the
    /// next.
    spans: Vec<(usize, usize)>,
    /// Bytes looked at since the parser was made; see [`RequestParser::bytes_examined`].
    examined: u64,
}

impl RequestParser {
    /// A parser that rejects bulks longer than `max_bulk_len` bytes and requests of more than
    /// `max_multibulk_len` arguments, and requests longer than [`DEFAULT_MAX_REQUEST_BYTES`].
    pub fn new(max_bulk_len: u64, max_multibulk_len: u64) -> Self {
        RequestParser {
            max_bulk_len,
            max_multibulk_len,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            state: State::Start,
            spans: Vec::new(),
            examined: 0,
        }
    }

    /// The same parser, rejecting requests longer than `max_request_bytes` in total (header,
    /// arguments and CRLFs); the client gets a protocol error and is closed.
    pub fn with_max_request_bytes(mut self, max_request_bytes: u64) -> Self {
        self.max_request_bytes = max_request_bytes;
        self
    }

    /// Changes every limit at once (a reload): a request partly parsed already is held to the
    /// new limits for the rest of it.
    pub fn set_limits(
        &mut self,
        max_bulk_len: u64,
        max_multibulk_len: u64,
        max_request_bytes: u64,
    ) {
        self.max_bulk_len = max_bulk_len;
        self.max_multibulk_len = max_multibulk_len;
        self.max_request_bytes = max_request_bytes;
    }

    /// How many bytes this parser has looked at since it was made, the digits it parsed and
    /// the CRLF after each argument included (argument data is skipped, not scanned). Lets
    /// tests prove that parsing costs a small constant per byte received, however it is split.
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// Takes the next complete request off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Empty requests (`*0`, blank inline lines)
    /// are consumed silently, as Redis does. After an error the client must be closed: the
    /// parser starts over, but the stream is no longer in step.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if buf.len() < self.examined_to() {
            self.reset();
        }
        let parsed = self.advance(buf);
        if parsed.is_err() {
            self.reset();
        }
        parsed
    }

    /// The end of what the current state has examined.
    fn examined_to(&self) -> usize {
        match self.state {
            State::Start => 0,
            State::Inline { scanned } | State::Count { scanned } => scanned,
            State::Header { scanned, .. } => scanned,
            State::Data { start, .. } => start,
        }
    }

    /// Argument spans allocated, for tests that check declared counts allocate nothing.
    #[cfg(test)]
    pub(super) fn spans_capacity(&self) -> usize {
        self.spans.capacity()
    }

    fn reset(&mut self) {
        self.state = State::Start;
        self.spans.clear();
        if self.spans.capacity() > SPANS_KEEP {
            self.spans = Vec::new();
        }
    }

    fn too_long(&self, len: usize) -> Result<(), ProtocolError> {
        if len as u64 > self.max_request_bytes {
            return Err(self.too_long_error());
        }
        Ok(())
    }

    #[cold]
    fn too_long_error(&self) -> ProtocolError {
        ProtocolError(format!(
            "request longer than max_request_bytes ({} bytes)",
            self.max_request_bytes
        ))
    }

    fn advance(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            match self.state {
                State::Start => match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => self.state = State::Count { scanned: 1 },
                    Some(_) => self.state = State::Inline { scanned: 0 },
                },
                State::Inline { scanned } => {
                    let rest = buf.get(scanned..).unwrap_or_default();
                    let Some(at) = rest.iter().position(|&b| b == b'\n') else {
                        self.examined += rest.len() as u64;
                        self.state = State::Inline { scanned: buf.len() };
                        if buf.len() > INLINE_MAX_BYTES {
                            return Err(ProtocolError::new("too big inline request"));
                        }
                        self.too_long(buf.len())?;
                        return Ok(None);
                    };
                    self.examined += at as u64 + 1;
                    let end = scanned + at + 1;
                    self.too_long(end)?;
                    self.state = State::Start;
                    let line = buf.split_to(end);
                    self.examined += line.len() as u64;
                    if let Some(request) = inline_request(&line)? {
                        return Ok(Some(request));
                    }
                }
                State::Count { scanned } => {
                    let cr = match self.find_cr(buf, 0, scanned, "too big mbulk count string")? {
                        Ok(cr) => cr,
                        Err(stop) => {
                            self.state = State::Count { scanned: stop };
                            return Ok(None);
                        }
                    };
                    // A count line longer than a request may be is refused as such, however
                    // it arrived (in pieces, the limit is met before its CR is).
                    self.too_long(cr + 2)?;
                    let digits = buf.get(1..cr).unwrap_or_default();
                    self.examined += digits.len() as u64;
                    let count = match parse_int(digits) {
                        Some(n)
                            if n <= i64::from(i32::MAX)
                                && (n <= 0 || n as u64 <= self.max_multibulk_len) =>
                        {
                            n
                        }
                        _ => return Err(ProtocolError::new("invalid multibulk length")),
                    };
                    // Redis skips the byte after the CR without checking it is a LF.
                    let pos = cr + 2;
                    if count <= 0 {
                        buf.advance(pos);
                        self.state = State::Start;
                        continue;
                    }
                    self.too_long(pos)?;
                    self.spans.clear();
                    self.spans.reserve((count as usize).min(SPANS_PREALLOC));
                    self.state = State::Header {
                        pos,
                        scanned: pos,
                        left: count as u64,
                    };
                }
                State::Header { pos, scanned, left } => {
                    return self.arguments(buf, pos, scanned, left);
                }
                State::Data { start, end, left } => {
                    let Some(pos) = self.data_end(buf, start, end)? else {
                        return Ok(None);
                    };
                    if left == 1 {
                        return Ok(Some(self.finish(buf, pos)));
                    }
                    return self.arguments(buf, pos, pos, left - 1);
                }
            }
        }
    }

    /// Parses arguments from the header at `pos` (searched up to `scanned`) while their bytes
    /// are here, `left` of them to go. The common case, a request that arrived whole, is this
    /// one loop over a plain slice, with the state written back only when it stops.
    fn arguments(
        &mut self,
        buf: &mut BytesMut,
        mut pos: usize,
        mut scanned: usize,
        mut left: u64,
    ) -> Result<Option<Request>, ProtocolError> {
        let bytes: &[u8] = buf;
        let mut examined = 0u64;
        let stopped = loop {
            let rest = bytes.get(scanned..).unwrap_or_default();
            let cr = match rest.iter().position(|&b| b == b'\r') {
                // The byte after the CR must be here too (it is skipped, as Redis does).
                Some(at) if scanned + at + 1 < bytes.len() => scanned + at,
                found => {
                    // Resume at the CR if there is one (its LF is still to come).
                    let stop = found.map_or(bytes.len(), |at| scanned + at);
                    examined += (stop - scanned) as u64;
                    break Stopped::Header { stop };
                }
            };
            let header = bytes.get(pos..cr).unwrap_or_default();
            examined += (cr + 1 - scanned) as u64 + header.len() as u64;
            // As for the count line: past the limit, whatever the header holds.
            if (cr + 2) as u64 > self.max_request_bytes {
                break Stopped::Error(self.too_long_error());
            }
            let Some((&b'$', digits)) = header.split_first() else {
                let got = header.first().copied().unwrap_or(b'\r') as char;
                break Stopped::Error(ProtocolError(format!("expected '$', got '{got}'")));
            };
            let len = match parse_int(digits) {
                Some(n) if n >= 0 && n as u64 <= self.max_bulk_len => n as u64,
                _ => break Stopped::Error(ProtocolError::new("invalid bulk length")),
            };
            let start = cr + 2;
            // Compared in u64 before it is added to offsets, so the sums cannot overflow.
            if start as u64 + len + 2 > self.max_request_bytes {
                break Stopped::Error(self.too_long_error());
            }
            let end = start + len as usize;
            let Some(crlf) = bytes.get(end..end + 2) else {
                break Stopped::Data { start, end };
            };
            examined += 2;
            if crlf != b"\r\n" {
                break Stopped::Error(ProtocolError::new("expected CRLF after bulk data"));
            }
            self.spans.push((start, end));
            pos = end + 2;
            if left == 1 {
                break Stopped::Complete;
            }
            left -= 1;
            scanned = pos;
        };
        self.examined += examined;
        match stopped {
            Stopped::Complete => Ok(Some(self.finish(buf, pos))),
            Stopped::Header { stop } => {
                self.state = State::Header {
                    pos,
                    scanned: stop,
                    left,
                };
                if buf.len() - pos > INLINE_MAX_BYTES {
                    return Err(ProtocolError::new("too big bulk count string"));
                }
                self.too_long(buf.len())?;
                Ok(None)
            }
            Stopped::Data { start, end } => {
                self.state = State::Data { start, end, left };
                // Room for the rest of the argument, up to a bound, instead of growing in
                // small steps.
                let missing = (end + 2).saturating_sub(buf.len());
                buf.reserve(missing.min(BULK_PREALLOC));
                Ok(None)
            }
            Stopped::Error(e) => Err(e),
        }
    }

    /// Checks the CRLF after an argument's data (`start..end`) that was still arriving, and
    /// records it; the offset after the CRLF, or `None` while the data is still arriving.
    fn data_end(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        end: usize,
    ) -> Result<Option<usize>, ProtocolError> {
        let Some(crlf) = buf.get(end..end + 2) else {
            let missing = (end + 2).saturating_sub(buf.len());
            buf.reserve(missing.min(BULK_PREALLOC));
            return Ok(None);
        };
        self.examined += 2;
        if crlf != b"\r\n" {
            return Err(ProtocolError::new("expected CRLF after bulk data"));
        }
        self.spans.push((start, end));
        Ok(Some(end + 2))
    }

    /// Takes the complete request, `pos` bytes, off the front of `buf`.
    fn finish(&mut self, buf: &mut BytesMut, pos: usize) -> Request {
        let raw = buf.split_to(pos).freeze();
        let args = self.spans.iter().map(|&(s, e)| raw.slice(s..e)).collect();
        self.reset();
        Request { raw, args }
    }

    /// Finds the CR ending the header line that starts at `line`, searching from `scanned`
    /// (where the previous call stopped): `Ok(cr)`, or `Err(stop)` while it is not here yet or
    /// its CR is the last byte, `stop` being where the next search starts.
    fn find_cr(
        &mut self,
        buf: &[u8],
        line: usize,
        scanned: usize,
        too_big: &str,
    ) -> Result<Result<usize, usize>, ProtocolError> {
        let rest = buf.get(scanned..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'\r') {
            // The byte after the CR must be here too (it is skipped, as Redis does).
            Some(at) if scanned + at + 1 < buf.len() => {
                self.examined += at as u64 + 1;
                Ok(Ok(scanned + at))
            }
            found => {
                // Resume at the CR if there is one (its LF is still to come), else at the end.
                let stop = found.map_or(buf.len(), |at| scanned + at);
                self.examined += (stop - scanned) as u64;
                if buf.len() - line > INLINE_MAX_BYTES {
                    return Err(ProtocolError::new(too_big));
                }
                self.too_long(buf.len())?;
                Ok(Err(stop))
            }
        }
    }
}

/// Whether `arg` is the option `word` as Redis reads options: case-insensitively and, since
/// Redis compares them as C strings (`strcasecmp`), only up to a first NUL byte. `GET\0` is the
/// option `GET` to Redis, so it must be to the proxy too, or an option the proxy does not see
/// (a `SORT ... GET`, a `STORE` destination) would escape its checks.
pub fn is_option(arg: &[u8], word: &str) -> bool {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    arg.get(..end)
        .is_some_and(|arg| arg.eq_ignore_ascii_case(word.as_bytes()))
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
    // No leading zero, and no `-0`: Redis refuses both.
    if (body.len() > 1 || negative) && body[0] == b'0' {
        return None;
    }
    let mut value: i64 = 0;
    if body.len() <= 18 {
        // 18 digits cannot overflow an i64: no checked arithmetic on the hot path (every
        // length and count header of every request and reply comes through here).
        for &d in body {
            let digit = d.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + i64::from(digit);
        }
    } else {
        // Summed below zero, where one more value fits: `-9223372036854775808` parses.
        for &d in body {
            if !d.is_ascii_digit() {
                return None;
            }
            value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
        }
        return if negative {
            Some(value)
        } else {
            value.checked_neg()
        };
    }
    Some(if negative { -value } else { value })
}

/// The request on one inline line (its `\n` included), or `None` for a blank line.
fn inline_request(line: &[u8]) -> Result<Option<Request>, ProtocolError> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let args =
        split_args(text).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    if args.is_empty() {
        return Ok(None);
    }
    Ok(Some(Request::from_args(
        args.into_iter().map(Bytes::from).collect(),
    )))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
