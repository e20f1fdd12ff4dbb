//! The RESP wire format: client requests in, replies out, and framing of backend replies.
//!
//! Requests are parsed by hand (see [`request`]) so that limits are enforced before a byte is
//! buffered and protocol errors read exactly as Redis's do. Backend replies are framed by hand too
//! (see [`frame`]), without recursion and resuming between reads, and forwarded as the raw bytes
//! the backend sent.

pub mod frame;
mod inline;
pub mod reply;
pub mod request;
mod value;

#[cfg(test)]
mod proptests;

pub use frame::{
    FrameError, ReplyFrame, ReplyFramer, ReplyKind, array_elements, bulk_value, frame_reply,
    integer_value,
};
pub use request::{ProtocolError, Request, RequestParser};
pub use value::Value;

/// The RESP version a client or a backend connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, the default for every new connection.
    Resp2,
    /// RESP3, chosen with `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// Index of this protocol in per-protocol arrays.
    pub fn index(self) -> usize {
        match self {
            Protocol::Resp2 => 0,
            Protocol::Resp3 => 1,
        }
    }
}
