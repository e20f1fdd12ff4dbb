//! The messages of client-side caching, as Redis writes them: a RESP3 push `invalidate` on the
//! client's own connection, or in RESP2 a Pub/Sub message on `__redis__:invalidate` to the
//! client tracking redirects to.

use bytes::Bytes;

use crate::protocol::Protocol;
use crate::protocol::reply::ReplyBuf;

/// The channel RESP2 invalidations are published on.
pub const CHANNEL: &[u8] = b"__redis__:invalidate";

/// The start of an invalidation for a client speaking RESP `resp`: the push, or the Pub/Sub
/// message with its channel.
fn head(resp: u8) -> ReplyBuf {
    if resp >= 3 {
        let mut out = ReplyBuf::new(Protocol::Resp3);
        out.push(2).bulk(b"invalidate");
        out
    } else {
        let mut out = ReplyBuf::new(Protocol::Resp2);
        out.array(3).bulk(b"message").bulk(CHANNEL);
        out
    }
}

/// `keys` changed: to a client speaking RESP `resp`.
pub fn invalidation_frame(resp: u8, keys: &[Bytes]) -> Bytes {
    let mut out = head(resp);
    out.array(keys.len());
    for key in keys {
        out.bulk(key);
    }
    out.finish()
}

/// Forget everything: an invalidation whose keys are a null, to a client speaking RESP
/// `resp`, the null written as the tracking client's protocol (`tracker_resp`) writes it, as
/// Redis does.
pub fn flush_frame(resp: u8, tracker_resp: u8) -> Bytes {
    let out = head(resp);
    let mut null = ReplyBuf::new(if tracker_resp >= 3 {
        Protocol::Resp3
    } else {
        Protocol::Resp2
    });
    null.null();
    let mut frame = out.finish().to_vec();
    frame.extend_from_slice(&null.finish());
    Bytes::from(frame)
}

/// The client `redirect` that invalidations went to is gone: to the tracking client, in RESP3.
pub fn redirect_broken(redirect: u64) -> Bytes {
    let mut out = ReplyBuf::new(Protocol::Resp3);
    out.push(2)
        .bulk(b"tracking-redir-broken")
        .integer(i64::try_from(redirect).unwrap_or(i64::MAX));
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_as_redis_writes_them() {
        let keys = [Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        assert_eq!(
            &invalidation_frame(3, &keys)[..],
            b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
        assert_eq!(
            &invalidation_frame(2, &keys[..1])[..],
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\na\r\n"
        );
        assert_eq!(&flush_frame(3, 3)[..], b">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert_eq!(
            &flush_frame(2, 2)[..],
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
        assert_eq!(
            &redirect_broken(7)[..],
            b">2\r\n$21\r\ntracking-redir-broken\r\n:7\r\n"
        );
    }
}
