//! `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT GETREDIR` and `CLIENT TRACKINGINFO` as Redis
//! answers them for a client whose tracking is off, which every client of the proxy is:
//! client-side caching through the proxy is not built yet (issue 25).
//!
//! `CLIENT TRACKING` reads its options as Redis does, in the same order, so that a client
//! sending nonsense (an unknown option, a `REDIRECT` to a client that does not exist,
//! `PREFIX` without `BCAST`, ...) gets Redis's own error; `OFF` succeeds, as on a Redis where
//! tracking is off; a valid `ON` is refused with the proxy's error. One difference is kept on
//! purpose: Redis 7.0 reports overlapping `PREFIX`es found past the first one with an error
//! and then turns tracking on anyway (two replies to one command); the proxy gives the error
//! alone.

use bytes::Bytes;

use super::action::{Action, client_wrong_arity as wrong_arity};
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::parse_int;
use crate::proxy::ProxyRef;

/// What `CLIENT TRACKING`'s options ask for.
#[derive(Debug, Default)]
struct Options<'a> {
    bcast: bool,
    optin: bool,
    optout: bool,
    prefixes: Vec<&'a [u8]>,
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p]... [OPTIN] [OPTOUT] [NOLOOP]`.
pub(super) fn tracking(proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let [_, _, mode, options @ ..] = args else {
        return wrong_arity("tracking");
    };
    let options = match parse_options(proxy, options) {
        Ok(options) => options,
        Err(error) => return Action::Reply(reply::error(error.as_str())),
    };
    if mode.eq_ignore_ascii_case(b"off") {
        return Action::Reply(Bytes::from_static(reply::OK));
    }
    if !mode.eq_ignore_ascii_case(b"on") {
        return Action::Reply(reply::error(SYNTAX));
    }
    if let Err(error) = check_on(&options) {
        return Action::Reply(reply::error(&error));
    }
    Action::Reply(reply::error(
        "ERR respgate: CLIENT TRACKING ON is not supported by this proxy yet (client-side \
         caching through the proxy)",
    ))
}

/// `CLIENT CACHING YES|NO`: only for a client whose tracking is on.
pub(super) fn caching(args: &[Bytes]) -> Action {
    if args.len() != 3 {
        return wrong_arity("caching");
    }
    Action::Reply(reply::error(
        "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN \
         or OPTOUT mode enabled",
    ))
}

/// `CLIENT GETREDIR`: -1, tracking being off.
pub(super) fn getredir(out: &mut ReplyBuf, args: &[Bytes]) -> Option<Action> {
    if args.len() != 2 {
        return Some(wrong_arity("getredir"));
    }
    out.integer(-1);
    None
}

/// `CLIENT TRACKINGINFO`: tracking off, no redirect, no prefixes.
pub(super) fn trackinginfo(out: &mut ReplyBuf, args: &[Bytes]) -> Option<Action> {
    if args.len() != 2 {
        return Some(wrong_arity("trackinginfo"));
    }
    out.map(3);
    out.bulk(b"flags").set(1).bulk(b"off");
    out.bulk(b"redirect").integer(-1);
    out.bulk(b"prefixes").array(0);
    None
}

/// Redis's syntax error.
const SYNTAX: &str = "ERR syntax error";

/// Reads the options in order, stopping at the first problem with Redis's error for it.
fn parse_options<'a>(proxy: ProxyRef<'_>, args: &'a [Bytes]) -> Result<Options<'a>, String> {
    let mut options = Options::default();
    let mut redirect: Option<i64> = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let next = args.get(i + 1);
        if arg.eq_ignore_ascii_case(b"redirect") && next.is_some() {
            i += 1;
            if redirect.is_some_and(|id| id != 0) {
                return Err("ERR A client can only redirect to a single other client".into());
            }
            let id = next
                .and_then(|n| parse_int(n))
                .ok_or("ERR value is not an integer or out of range")?;
            let exists = u64::try_from(id).is_ok_and(|id| proxy.clients.get(id).is_some());
            if !exists {
                return Err("ERR The client ID you want redirect to does not exist".into());
            }
            redirect = Some(id);
        } else if arg.eq_ignore_ascii_case(b"bcast") {
            options.bcast = true;
        } else if arg.eq_ignore_ascii_case(b"optin") {
            options.optin = true;
        } else if arg.eq_ignore_ascii_case(b"optout") {
            options.optout = true;
        } else if arg.eq_ignore_ascii_case(b"noloop") {
        } else if arg.eq_ignore_ascii_case(b"prefix")
            && let Some(prefix) = next
        {
            i += 1;
            options.prefixes.push(prefix);
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    Ok(options)
}

/// The checks of `ON`, in Redis's order, for a client whose tracking is off.
fn check_on(options: &Options<'_>) -> Result<(), String> {
    if !options.bcast && !options.prefixes.is_empty() {
        return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
    }
    if options.bcast && (options.optin || options.optout) {
        return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
    }
    if options.optin && options.optout {
        return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
    }
    for (i, first) in options.prefixes.iter().enumerate() {
        for second in options.prefixes.iter().skip(i + 1) {
            let shorter = first.len().min(second.len());
            if first.get(..shorter) == second.get(..shorter) {
                return Err(format!(
                    "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a \
                     single client must not overlap.",
                    printable(first),
                    printable(second)
                ));
            }
        }
    }
    Ok(())
}

/// `text` as Redis puts it in an error line with `%s`: up to a first NUL byte, line breaks
/// made spaces. (Bytes that are not UTF-8, which Redis passes through, are replaced here.)
fn printable(text: &[u8]) -> String {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8_lossy(text.get(..end).unwrap_or_default()).replace(['\r', '\n'], " ")
}
