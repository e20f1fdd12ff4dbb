//! Framing of backend replies: where one reply ends, and whether it is an error or a push.
//!
//! Uses `redis-protocol`'s range decoder, which finds frame boundaries without copying the
//! payload; the proxy then forwards the exact bytes.

use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::decode as resp2;
use redis_protocol::resp2::types::RangeFrame as Range2;
use redis_protocol::resp3::decode::complete as resp3;
use redis_protocol::resp3::types::RangeFrame as Range3;

use super::Protocol;
use super::request::parse_int;

/// What a complete reply is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Any non-error reply.
    Value,
    /// An error; the range is the error text within the frame (without `-` and CRLF).
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

/// A node sent bytes that are not a RESP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply: {0}")]
pub struct FrameError(pub String);

impl From<RedisProtocolError> for FrameError {
    fn from(e: RedisProtocolError) -> Self {
        FrameError(e.to_string())
    }
}

/// Finds where each reply of one stream ends, resuming where the previous call stopped.
///
/// One per connection: call [`ReplyFramer::next_frame`] after each read with the whole buffer;
/// once it returns a frame, remove `frame.len` bytes from the front of the buffer before the
/// next call. The bytes it has already examined must not change in between.
#[derive(Debug, Clone)]
pub struct ReplyFramer {
    protocol: Protocol,
}

impl ReplyFramer {
    /// A framer for a stream of replies in `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        ReplyFramer { protocol }
    }

    /// The protocol it frames.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The first complete reply at the front of `buf`, or `Ok(None)` until more bytes arrive.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<ReplyFrame>, FrameError> {
        Ok(frame_reply(buf, self.protocol)?)
    }
}

/// Finds the first complete reply in `buf`, or `Ok(None)` if more bytes are needed.
pub fn frame_reply(
    buf: &[u8],
    protocol: Protocol,
) -> Result<Option<ReplyFrame>, RedisProtocolError> {
    if bulk_incomplete(buf) {
        return Ok(None);
    }
    match protocol {
        Protocol::Resp2 => Ok(resp2::decode_range(buf)?.map(|(frame, len)| ReplyFrame {
            len,
            kind: match frame {
                Range2::Error((start, end)) => ReplyKind::Error(start, end),
                _ => ReplyKind::Value,
            },
        })),
        Protocol::Resp3 => Ok(resp3::decode_range(buf)?.map(|(frame, len)| ReplyFrame {
            len,
            kind: match frame {
                Range3::SimpleError { data, .. } | Range3::BlobError { data, .. } => {
                    ReplyKind::Error(data.0, data.1)
                }
                Range3::Push { .. } => ReplyKind::Push,
                _ => ReplyKind::Value,
            },
        })),
    }
}

/// A large bulk string still arriving: skip the decoder until all of it is here, so a big value
/// read in many small chunks is not re-scanned each time.
fn bulk_incomplete(buf: &[u8]) -> bool {
    if buf.first() != Some(&b'$') {
        return false;
    }
    let Some(cr) = buf.iter().take(24).position(|&b| b == b'\r') else {
        return false;
    };
    match buf.get(1..cr).and_then(parse_int) {
        Some(len) if len >= 0 => buf.len() < cr + 2 + len as usize + 2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(frame_reply(b"?what\r\n", Protocol::Resp2).is_err());
    }
}
