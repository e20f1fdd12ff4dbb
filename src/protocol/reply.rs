//! Replies the proxy writes itself, encoded for the client's protocol version.
//!
//! Replies from backends never pass through here: they are forwarded as received.

use bytes::{BufMut, Bytes, BytesMut};

use super::Protocol;
use super::request::put_decimal;

/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";
/// `+PONG\r\n`.
pub const PONG: &[u8] = b"+PONG\r\n";
/// The error Redis Cluster gives for keys in different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Builds one reply in the client's protocol.
#[derive(Debug)]
pub struct ReplyBuf {
    out: BytesMut,
    protocol: Protocol,
}

impl ReplyBuf {
    /// An empty reply buffer for a client speaking `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        ReplyBuf {
            out: BytesMut::with_capacity(64),
            protocol,
        }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Bytes {
        self.out.freeze()
    }

    /// A simple string (`+text`); CR and LF in `text` become spaces so the frame stays intact.
    pub fn simple(&mut self, text: &str) -> &mut Self {
        self.out.put_u8(b'+');
        put_line(&mut self.out, text.as_bytes());
        self
    }

    /// An error (`-CODE text`); CR and LF become spaces, as Redis does.
    pub fn error(&mut self, text: &str) -> &mut Self {
        self.out.put_u8(b'-');
        put_line(&mut self.out, text.as_bytes());
        self
    }

    /// An integer.
    pub fn integer(&mut self, n: i64) -> &mut Self {
        self.out.put_u8(b':');
        if n < 0 {
            self.out.put_u8(b'-');
        }
        put_decimal(&mut self.out, n.unsigned_abs());
        self.out.put_slice(b"\r\n");
        self
    }

    /// A bulk string.
    pub fn bulk(&mut self, data: &[u8]) -> &mut Self {
        self.out.put_u8(b'$');
        put_decimal(&mut self.out, data.len() as u64);
        self.out.put_slice(b"\r\n");
        self.out.put_slice(data);
        self.out.put_slice(b"\r\n");
        self
    }

    /// A bulk string holding `n` in decimal.
    pub fn bulk_int(&mut self, n: i64) -> &mut Self {
        self.bulk(n.to_string().as_bytes())
    }

    /// A null: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.out.put_slice(b"_\r\n"),
        }
        self
    }

    /// The header of an array of `len` elements.
    pub fn array(&mut self, len: usize) -> &mut Self {
        self.header(b'*', len)
    }

    /// The header of a RESP3 push of `len` elements (an array in RESP2).
    pub fn push(&mut self, len: usize) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'>', len),
        }
    }

    /// The header of a set of `len` elements (an array in RESP2).
    pub fn set(&mut self, len: usize) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'~', len),
        }
    }

    /// The header of a map of `len` pairs: a flat array of `2 * len` in RESP2.
    pub fn map(&mut self, len: usize) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len * 2),
            Protocol::Resp3 => self.header(b'%', len),
        }
    }

    /// Text meant for humans (`INFO`): a bulk string in RESP2, a verbatim `txt` string in RESP3.
    pub fn verbatim(&mut self, text: &[u8]) -> &mut Self {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.out.put_u8(b'=');
                put_decimal(&mut self.out, text.len() as u64 + 4);
                self.out.put_slice(b"\r\ntxt:");
                self.out.put_slice(text);
                self.out.put_slice(b"\r\n");
                self
            }
        }
    }

    fn header(&mut self, kind: u8, len: usize) -> &mut Self {
        self.out.put_u8(kind);
        put_decimal(&mut self.out, len as u64);
        self.out.put_slice(b"\r\n");
        self
    }
}

fn put_line(out: &mut BytesMut, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
}

/// An error reply as bytes; `text` starts with the error code (`ERR`, `CROSSSLOT`, ...).
pub fn error(text: &str) -> Bytes {
    let mut reply = ReplyBuf::new(Protocol::Resp2);
    reply.error(text);
    reply.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_per_protocol() {
        let mut r2 = ReplyBuf::new(Protocol::Resp2);
        r2.map(1).bulk(b"k").null().integer(-7).verbatim(b"hi");
        assert_eq!(
            &r2.finish()[..],
            b"*2\r\n$1\r\nk\r\n$-1\r\n:-7\r\n$2\r\nhi\r\n"
        );
        let mut r3 = ReplyBuf::new(Protocol::Resp3);
        r3.map(1).bulk(b"k").null().verbatim(b"hi");
        assert_eq!(&r3.finish()[..], b"%1\r\n$1\r\nk\r\n_\r\n=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn error_text_cannot_break_framing() {
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
    }
}
