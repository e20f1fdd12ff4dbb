//! Framing of backend replies: where one reply ends, and whether it is an error or a push.
//!
//! Sits between a node's socket and the request waiting for the reply: every node reader calls
//! [`ReplyFramer::next_frame`] after each read and forwards the framed bytes unchanged. The
//! framer is written by hand so that
//! - it never recurses: open aggregates are an explicit stack on the heap, so a reply nested
//!   100,000 deep (a Lua table that contains itself) costs memory, not the worker's stack;
//! - it resumes where the previous call stopped: the position, the open aggregates and the
//!   expected end of a bulk payload are kept between calls, so the cost is linear in the bytes
//!   received whatever the read sizes;
//! - it accepts every RESP2 and RESP3 type in every position on either protocol: a node's
//!   valid reply must never be mistaken for a broken node.
//!
//! It validates only what finding the end of a frame needs: the type bytes, lengths and counts
//! (non-negative, or -1 for a null), the CRLF after each bulk payload and the length of header
//! lines. Nothing is allocated from a declared length or count.

use super::Protocol;
use super::request::parse_int;

/// Longest length or count header line (`$`, `*`, `%`, ...) accepted from a node, in bytes
/// without its CRLF; Redis's own limit for a client's header lines (`PROTO_INLINE_MAX_SIZE`).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Stack capacity kept between frames; a framer that met a deeply nested reply gives the rest
/// back so that one odd reply does not pin memory for the connection's lifetime.
const STACK_KEEP: usize = 1024;

/// What a complete reply is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Any non-error reply.
    Value,
    /// An error (`-` or RESP3 `!`); the range is the error text within the frame (without the
    /// type byte, length header and CRLF), also when an attribute precedes it.
    Error(usize, usize),
    /// A RESP3 out-of-band push (Pub/Sub message, invalidation).
    Push,
}

/// One complete reply at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyFrame {
    /// Length of the reply in bytes.
    pub len: usize,
    /// What it is.
    pub kind: ReplyKind,
}

/// A node sent bytes that are not a RESP reply; the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A byte where a value must start is not a RESP type.
    #[error("malformed reply: unknown type byte {byte:#04x} at offset {offset}")]
    UnknownType {
        /// The byte.
        byte: u8,
        /// Its offset in the frame.
        offset: usize,
    },
    /// A length or count that is not a decimal integer of at least -1.
    #[error("malformed reply: invalid length or count at offset {offset}")]
    InvalidLength {
        /// Offset of the header line in the frame.
        offset: usize,
    },
    /// A bulk payload not followed by CRLF.
    #[error("malformed reply: no CRLF after the bulk payload ending at offset {offset}")]
    MissingCrlf {
        /// Offset where the CRLF should be.
        offset: usize,
    },
    /// A length or count header line longer than [`MAX_HEADER_BYTES`].
    #[error("malformed reply: header line at offset {offset} longer than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLong {
        /// Offset of the header line in the frame.
        offset: usize,
    },
    /// A RESP3 stream marker (`;` chunk, `.` end) outside the streamed value it belongs to, or
    /// another type inside a streamed string.
    #[error("malformed reply: unexpected {byte:?} at offset {offset} (streamed value)")]
    Stream {
        /// The type byte found.
        byte: char,
        /// Its offset in the frame.
        offset: usize,
    },
}

/// One open aggregate of the reply being framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// An array, set, map or push with this many elements still to come (a map's entry counts
    /// two: key and value).
    Aggregate(u64),
    /// An attribute with this many keys and values still to come. It is not an element of its
    /// parent: it annotates the value that follows it.
    Attribute(u64),
    /// A streamed aggregate (`*?`, `%?`, `~?`, `>?`), ended by `.`.
    StreamedAggregate,
    /// A streamed attribute (`|?`), ended by `.`.
    StreamedAttribute,
    /// A streamed string (`$?`): `;len` chunks until `;0`.
    StreamedString,
}

/// What the framer waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A line starting at `pos`; the bytes before `scan` hold no line end.
    Line,
    /// A payload ending at `end`, then CRLF; `chunk` when it is one piece of a streamed string
    /// (which is not a value by itself).
    Payload { end: usize, chunk: bool },
}

/// Finds where each reply of one stream ends, resuming where the previous call stopped.
///
/// One per connection: call [`ReplyFramer::next_frame`] after each read with the whole buffer;
/// once it returns a frame, remove `frame.len` bytes from the front of the buffer before the
/// next call. The bytes it has already examined must not change in between (appending is
/// fine); if the buffer is found shorter than what was examined, the framer starts over.
#[derive(Debug, Clone)]
pub struct ReplyFramer {
    protocol: Protocol,
    /// Start of the next line (or of the payload being waited for).
    pos: usize,
    /// How far the current line has been searched for its end.
    scan: usize,
    step: Step,
    /// The open aggregates, innermost last. Each needed a header of at least 4 bytes, so it
    /// cannot grow faster than bytes arrive.
    stack: Vec<Level>,
    /// The top-level value's kind, once its header is read.
    kind: ReplyKind,
    /// Bytes looked at since the framer was made; see [`ReplyFramer::bytes_examined`].
    examined: u64,
    /// Most aggregates open at once in the value being framed.
    deepest: usize,
    /// `deepest` of the last value framed; see [`ReplyFramer::last_depth`].
    last_depth: usize,
}

impl ReplyFramer {
    /// A framer for a stream of replies in `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        ReplyFramer {
            protocol,
            pos: 0,
            scan: 0,
            step: Step::Line,
            stack: Vec::new(),
            kind: ReplyKind::Value,
            examined: 0,
            deepest: 0,
            last_depth: 0,
        }
    }

    /// The protocol it frames. Every type is accepted on both: a RESP2 connection may still
    /// carry a RESP3 reply (a node that switched protocol, a module), and refusing a valid reply
    /// would take a healthy node for a broken one.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How many bytes this framer has looked at since it was made, the CRLF checks after bulk
    /// payloads and the digits it parsed included (payloads themselves are skipped). Lets tests
    /// prove that framing costs a small constant per byte received, however it is split.
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// The first complete reply at the front of `buf`, or `Ok(None)` until more bytes arrive.
    ///
    /// After an error the framer starts over, but the stream it came from is not RESP and
    /// should be closed.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<ReplyFrame>, FrameError> {
        if buf.len() < self.scan || buf.len() < self.pos {
            // The caller broke the contract (bytes were removed without a frame): what was
            // examined is gone, so start over rather than index past the end.
            self.reset();
        }
        let result = self.advance(buf);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// How deeply the last frame returned nests: 0 for a scalar, 1 for an array of scalars.
    /// Code that decodes a frame recursively checks it first, so no reply can exhaust its stack.
    pub fn last_depth(&self) -> usize {
        self.last_depth
    }

    /// Open-aggregate slots allocated, for tests that check declared counts allocate nothing.
    #[cfg(test)]
    pub(super) fn stack_capacity(&self) -> usize {
        self.stack.capacity()
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.scan = 0;
        self.step = Step::Line;
        self.stack.clear();
        if self.stack.capacity() > STACK_KEEP {
            self.stack = Vec::new();
        }
        self.kind = ReplyKind::Value;
        self.deepest = 0;
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Option<ReplyFrame>, FrameError> {
        loop {
            match self.step {
                Step::Payload { end, chunk } => {
                    let Some(crlf) = end.checked_add(2).and_then(|e| buf.get(end..e)) else {
                        // The payload is still arriving: nothing to look at until its end does.
                        return Ok(None);
                    };
                    self.examined += 2;
                    if crlf != b"\r\n" {
                        return Err(FrameError::MissingCrlf { offset: end });
                    }
                    self.pos = end + 2;
                    self.scan = self.pos;
                    self.step = Step::Line;
                    if !chunk && let Some(frame) = self.value_done() {
                        return Ok(Some(frame));
                    }
                }
                Step::Line => {
                    let Some(cr) = self.find_line_end(buf)? else {
                        return Ok(None);
                    };
                    if let Some(frame) = self.line(buf, cr)? {
                        return Ok(Some(frame));
                    }
                }
            }
        }
    }

    /// Searches the line at `pos` for its CRLF, from where the last search stopped; returns the
    /// offset of its CR.
    fn find_line_end(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let start = self.pos;
        let Some(&ty) = buf.get(start) else {
            return Ok(None);
        };
        if self.scan == start {
            // Checked before the line is complete, so garbage fails at once instead of being
            // buffered while waiting for a line end that may never come.
            if !is_type(ty) {
                return Err(FrameError::UnknownType {
                    byte: ty,
                    offset: start,
                });
            }
            self.examined += 1;
            self.scan = start + 1;
        }
        loop {
            let rest = buf.get(self.scan..).unwrap_or_default();
            let Some(at) = rest.iter().position(|&b| b == b'\n') else {
                self.examined += rest.len() as u64;
                self.scan = buf.len();
                if has_length(ty) && self.scan - start > MAX_HEADER_BYTES + 1 {
                    return Err(FrameError::HeaderTooLong { offset: start });
                }
                return Ok(None);
            };
            self.examined += at as u64 + 1;
            let lf = self.scan + at;
            self.scan = lf + 1;
            // A line ends at CRLF; a lone LF belongs to the line, as in hiredis.
            if lf > start + 1 && buf.get(lf - 1) == Some(&b'\r') {
                let cr = lf - 1;
                if has_length(ty) && cr - start > MAX_HEADER_BYTES + 1 {
                    return Err(FrameError::HeaderTooLong { offset: start });
                }
                return Ok(Some(cr));
            }
        }
    }

    /// Acts on the complete line from `pos` to the CR at `cr`.
    fn line(&mut self, buf: &[u8], cr: usize) -> Result<Option<ReplyFrame>, FrameError> {
        let start = self.pos;
        let line = Line {
            start,
            ty: buf.get(start).copied().unwrap_or_default(),
            text: buf.get(start + 1..cr).unwrap_or_default(),
            next: cr + 2,
            top: self.stack.is_empty(),
        };
        self.pos = line.next;
        self.scan = line.next;
        if self.stack.last() == Some(&Level::StreamedString) {
            return self.chunk_header(&line);
        }
        match line.ty {
            b'-' => {
                if line.top {
                    self.kind = ReplyKind::Error(start + 1, cr);
                }
                Ok(self.value_done())
            }
            b'$' | b'=' | b'!' => self.string_header(&line),
            b'*' | b'%' | b'~' | b'>' | b'|' => self.aggregate_header(&line),
            b'.' => self.stream_end(start),
            b';' => Err(FrameError::Stream {
                byte: ';',
                offset: start,
            }),
            // `+ : _ , # (`: one line is the whole value; its content does not matter here.
            _ => Ok(self.value_done()),
        }
    }

    /// One chunk's header (`;n`) inside a streamed string; `;0` ends the string.
    #[inline]
    fn chunk_header(&mut self, line: &Line<'_>) -> Result<Option<ReplyFrame>, FrameError> {
        if line.ty != b';' {
            return Err(FrameError::Stream {
                byte: line.ty as char,
                offset: line.start,
            });
        }
        let n = line.length(&mut self.examined)?;
        if n < 0 {
            return Err(FrameError::InvalidLength { offset: line.start });
        }
        if n == 0 {
            self.stack.pop();
            return Ok(self.value_done());
        }
        self.step = Step::Payload {
            end: line.payload_end(n)?,
            chunk: true,
        };
        Ok(None)
    }

    /// A bulk, verbatim or blob error string's header (`$n`, `=n`, `!n`, or `$?` for a
    /// streamed string); its payload follows.
    #[inline]
    fn string_header(&mut self, line: &Line<'_>) -> Result<Option<ReplyFrame>, FrameError> {
        if line.ty == b'$' && line.text == b"?" {
            self.open(Level::StreamedString);
            return Ok(None);
        }
        let n = line.length(&mut self.examined)?;
        if n < 0 {
            return Ok(self.value_done());
        }
        let end = line.payload_end(n)?;
        if line.top && line.ty == b'!' {
            self.kind = ReplyKind::Error(line.next, end);
        }
        self.step = Step::Payload { end, chunk: false };
        Ok(None)
    }

    /// An array, map, set, push or attribute header (`*n`, `%n`, `~n`, `>n`, `|n`, or `?` for
    /// a streamed one): its elements follow.
    #[inline]
    fn aggregate_header(&mut self, line: &Line<'_>) -> Result<Option<ReplyFrame>, FrameError> {
        let attribute = line.ty == b'|';
        if line.top && line.ty == b'>' {
            self.kind = ReplyKind::Push;
        }
        if line.text == b"?" {
            self.open(if attribute {
                Level::StreamedAttribute
            } else {
                Level::StreamedAggregate
            });
            return Ok(None);
        }
        let n = line.length(&mut self.examined)?;
        if n < 0 {
            if attribute {
                // An attribute annotates a value; it has no null.
                return Err(FrameError::InvalidLength { offset: line.start });
            }
            return Ok(self.value_done());
        }
        // Maps and attributes hold a key and a value per entry. `n` is below 2^63, so twice it
        // fits in a u64.
        let count = if line.ty == b'%' || attribute {
            n as u64 * 2
        } else {
            n as u64
        };
        match (count, attribute) {
            (0, true) => Ok(None),
            (0, false) => Ok(self.value_done()),
            (_, true) => {
                self.open(Level::Attribute(count));
                Ok(None)
            }
            (_, false) => {
                self.open(Level::Aggregate(count));
                Ok(None)
            }
        }
    }

    /// `.`, the end of a streamed aggregate or attribute; anywhere else an error.
    #[inline]
    fn stream_end(&mut self, start: usize) -> Result<Option<ReplyFrame>, FrameError> {
        match self.stack.last() {
            Some(Level::StreamedAggregate) => {
                self.stack.pop();
                Ok(self.value_done())
            }
            Some(Level::StreamedAttribute) => {
                self.stack.pop();
                Ok(None)
            }
            _ => Err(FrameError::Stream {
                byte: '.',
                offset: start,
            }),
        }
    }

    /// Opens a nested level, noting the deepest nesting seen.
    #[inline]
    fn open(&mut self, level: Level) {
        self.stack.push(level);
        self.deepest = self.deepest.max(self.stack.len());
    }

    /// A value just ended at `pos`: count it against the open aggregates, closing those it
    /// completes; the frame when it was the top-level value.
    fn value_done(&mut self) -> Option<ReplyFrame> {
        loop {
            match self.stack.last_mut() {
                None => {
                    let frame = ReplyFrame {
                        len: self.pos,
                        kind: self.kind,
                    };
                    self.last_depth = self.deepest;
                    self.reset();
                    return Some(frame);
                }
                Some(Level::Aggregate(left)) => {
                    *left = left.saturating_sub(1);
                    if *left > 0 {
                        return None;
                    }
                    // The aggregate is complete: it is one value of its parent.
                    self.stack.pop();
                }
                Some(Level::Attribute(left)) => {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        // The value the attribute annotates comes next.
                        self.stack.pop();
                    }
                    return None;
                }
                Some(
                    Level::StreamedAggregate | Level::StreamedAttribute | Level::StreamedString,
                ) => {
                    return None;
                }
            }
        }
    }
}

/// Whether `b` starts a RESP2 or RESP3 value (or a RESP3 stream chunk or end).
fn is_type(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'|'
            | b'>'
            | b';'
            | b'.'
    )
}

/// Whether the line of type `b` carries a length or count (and so is held to
/// [`MAX_HEADER_BYTES`]). The others are whole values: a simple string or error has no length
/// limit in RESP, and Redis sends long ones (a Lua script's `redis.error_reply`).
fn has_length(b: u8) -> bool {
    matches!(
        b,
        b'$' | b'*' | b'!' | b'=' | b'%' | b'~' | b'|' | b'>' | b';'
    )
}

/// Finds the first complete reply in `buf`, or `Ok(None)` if more bytes are needed.
///
/// A convenience for code that inspects replies already framed: a fresh [`ReplyFramer`] over
/// the whole buffer. A stream read piece by piece needs one `ReplyFramer` kept between reads.
pub fn frame_reply(buf: &[u8], protocol: Protocol) -> Result<Option<ReplyFrame>, FrameError> {
    ReplyFramer::new(protocol).next_frame(buf)
}

/// The value of an encoded integer reply or element (`:42\r\n`); `None` for anything else.
pub fn integer_value(reply: &[u8]) -> Option<i64> {
    parse_int(reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
}

/// The payload of an encoded bulk string reply or element (`$3\r\nabc\r\n`); `None` for
/// anything else, a null among them.
pub fn bulk_value(element: &[u8]) -> Option<&[u8]> {
    let rest = element.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len = usize::try_from(parse_int(rest.get(..cr)?)?).ok()?;
    let start = cr.checked_add(2)?;
    let payload = rest.get(start..start.checked_add(len)?)?;
    rest.get(start + len..)?
        .starts_with(b"\r\n")
        .then_some(payload)
}

/// The raw bytes of each element of an array (or set) reply.
pub fn array_elements(reply: &[u8], protocol: Protocol) -> Option<Vec<&[u8]>> {
    let rest = reply.get(1..)?;
    let header_end = rest.iter().position(|&b| b == b'\r')?;
    let count = usize::try_from(crate::protocol::request::parse_int(
        rest.get(..header_end)?,
    )?)
    .ok()?;
    let mut at = 1 + header_end + 2;
    let mut elements = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let frame = frame_reply(reply.get(at..)?, protocol).ok()??;
        elements.push(reply.get(at..at + frame.len)?);
        at += frame.len;
    }
    Some(elements)
}

/// One complete header line of a reply, as [`ReplyFramer`]'s steps read it.
struct Line<'b> {
    /// Where it starts: its type byte.
    start: usize,
    /// Its type byte.
    ty: u8,
    /// What follows the type byte, up to the CR.
    text: &'b [u8],
    /// Where the next line (or the payload) starts.
    next: usize,
    /// Whether it opens the top-level value.
    top: bool,
}

impl Line<'_> {
    /// The length the line gives (-1 for a null), counted as examined.
    #[inline]
    fn length(&self, examined: &mut u64) -> Result<i64, FrameError> {
        *examined += self.text.len() as u64;
        match parse_int(self.text) {
            Some(n) if n >= -1 => Ok(n),
            _ => Err(FrameError::InvalidLength { offset: self.start }),
        }
    }

    /// Where a payload of `n` bytes after the line ends.
    #[inline]
    fn payload_end(&self, n: i64) -> Result<usize, FrameError> {
        usize::try_from(n)
            .ok()
            .and_then(|n| self.next.checked_add(n))
            .ok_or(FrameError::InvalidLength { offset: self.start })
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
