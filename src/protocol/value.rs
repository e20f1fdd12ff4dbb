//! A whole RESP2 reply as a typed value, for the replies the proxy reads itself rather than
//! forwards: the topology (`CLUSTER NODES`, `ROLE`, `INFO`, `CONFIG GET`), a sentinel's answers
//! and the command table (`COMMAND`). The one module that uses the `redis-protocol` decoder;
//! everything else speaks of [`Value`].

use bytes::Bytes;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::{Protocol, ReplyFramer};

/// A decoded RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+...`
    Simple(Bytes),
    /// `-...`
    Error(Bytes),
    /// `:...`
    Integer(i64),
    /// `$...`
    Bulk(Bytes),
    /// `$-1` or `*-1`
    Null,
    /// `*...`
    Array(Vec<Value>),
}

impl Value {
    /// Decodes the one reply in `bytes`, refused (`None`) when it is incomplete, malformed or
    /// nested deeper than `max_depth`. The depth is checked first by the non-recursive framer,
    /// so that the recursive decoder never sees a reply deep enough to exhaust the stack.
    pub fn decode(bytes: &[u8], max_depth: usize) -> Option<Value> {
        let mut framer = ReplyFramer::new(Protocol::Resp2);
        let shallow =
            matches!(framer.next_frame(bytes), Ok(Some(_))) && framer.last_depth() <= max_depth;
        if !shallow {
            return None;
        }
        let (frame, _) = decode(bytes).ok().flatten()?;
        Some(Value::from(frame))
    }

    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn elements(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl From<OwnedFrame> for Value {
    fn from(frame: OwnedFrame) -> Self {
        // Iterative in effect: `Value::decode` bounded the depth before the decoder ran.
        match frame {
            OwnedFrame::SimpleString(b) => Value::Simple(Bytes::from(b)),
            OwnedFrame::Error(s) => Value::Error(Bytes::from(s.into_bytes())),
            OwnedFrame::Integer(n) => Value::Integer(n),
            OwnedFrame::BulkString(b) => Value::Bulk(Bytes::from(b)),
            OwnedFrame::Null => Value::Null,
            OwnedFrame::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_topology_and_command_table_read() {
        let reply = b"*3\r\n$6\r\nmaster\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n";
        assert_eq!(
            Value::decode(reply, 8),
            Some(Value::Array(vec![
                Value::Bulk(Bytes::from_static(b"master")),
                Value::Integer(42),
                Value::Array(vec![Value::Simple(Bytes::from_static(b"OK")), Value::Null]),
            ]))
        );
        assert_eq!(Value::decode(b"*1\r\n*1\r\n:1\r\n", 1), None, "too deep");
        assert_eq!(Value::decode(b"*2\r\n:1\r\n", 8), None, "incomplete");
    }
}
