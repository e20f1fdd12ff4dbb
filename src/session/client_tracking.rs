//! `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT GETREDIR` and `CLIENT TRACKINGINFO` as Redis
//! answers them, and what a client's requests tell the proxy's table of tracked keys (see
//! [`crate::tracking`]): the keys a tracking client reads, the keys any client writes.
//!
//! `CLIENT TRACKING` reads its options as Redis does, in the same order, so that a client
//! sending nonsense (an unknown option, a `REDIRECT` to a client that does not exist,
//! `PREFIX` without `BCAST`, ...) gets Redis's own error. One difference is kept on purpose:
//! Redis 7.0 reports overlapping `PREFIX`es found past the first one with an error and then
//! turns tracking on anyway (two replies to one command); the proxy gives the error alone.

use bytes::Bytes;

use super::ClientState;
use super::state::TrackingFlags;
use std::time::Duration;

use super::action::{Action, Gather, client_wrong_arity as wrong_arity};
use crate::keyspace::BackendId;
use crate::protocol::reply::{self, ReplyBuf};
use crate::protocol::request::parse_int;
use crate::proxy::ProxyRef;
use crate::tracking::{Mode, watch};

/// What `CLIENT TRACKING`'s options ask for.
#[derive(Debug, Default)]
struct Options<'a> {
    redirect: Option<u64>,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    prefixes: Vec<&'a [u8]>,
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p]... [OPTIN] [OPTOUT] [NOLOOP]`.
pub(super) fn tracking(state: &mut ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let [_, _, mode, options @ ..] = args else {
        return wrong_arity("tracking");
    };
    let options = match parse_options(proxy, options) {
        Ok(options) => options,
        Err(error) => return Action::Reply(reply::error(error.as_str())),
    };
    if mode.eq_ignore_ascii_case(b"off") {
        turn_off(state, &proxy);
        return Action::Reply(Bytes::from_static(reply::OK));
    }
    if !mode.eq_ignore_ascii_case(b"on") {
        return Action::Reply(reply::error(SYNTAX));
    }
    let now = proxy.tracking.mode(state.id);
    if let Err(error) = check_on(&options, now.as_ref()) {
        return Action::Reply(reply::error(&error));
    }
    let mut prefixes: Vec<Bytes> = options
        .prefixes
        .iter()
        .map(|p| Bytes::copy_from_slice(p))
        .collect();
    let held = now.as_ref().map_or(0, |m| m.prefixes.len());
    if held + prefixes.len() > MAX_PREFIXES {
        return Action::Reply(reply::error(&format!(
            "ERR respgate: a client may track at most {MAX_PREFIXES} prefixes"
        )));
    }
    if options.bcast && prefixes.is_empty() {
        // Every key, as Redis records it: the empty prefix.
        prefixes.push(Bytes::new());
    }
    let asked = Mode {
        redirect: options.redirect,
        bcast: options.bcast,
        prefixes,
        optin: options.optin,
        optout: options.optout,
        noloop: options.noloop,
    };
    proxy.tracking.turn_on(state.id, asked);
    state.tracking = proxy
        .tracking
        .mode(state.id)
        .map(|mode| TrackingFlags::of(&mode))
        .unwrap_or_default();
    let mut unwatched = Vec::new();
    for (index, backend) in proxy.backends().iter().enumerate() {
        let id = BackendId(u16::try_from(index).unwrap_or(u16::MAX));
        let prefix = proxy.routes().stripped_prefix(id).cloned();
        watch::ensure_watched(&proxy.tracking, backend, prefix);
        if !proxy.tracking.is_settled(backend.serial()) {
            unwatched.push(backend.serial());
        }
    }
    if unwatched.is_empty() {
        Action::Reply(Bytes::from_static(reply::OK))
    } else {
        // Answered once the nodes report to the proxy, so that what the client reads next is
        // cached (a read while they do not is invalidated at once).
        Gather::Watched(unwatched).into()
    }
}

/// `+OK` once every node of `backends` is watched or has failed to be once, or after `limit`.
pub(super) async fn once_watched(
    proxy: ProxyRef<'_>,
    backends: Vec<u64>,
    limit: Duration,
) -> Bytes {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline
        && !backends
            .iter()
            .all(|&serial| proxy.tracking.is_settled(serial))
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Bytes::from_static(reply::OK)
}

/// Turns the client's tracking off: `CLIENT TRACKING OFF`, `RESET`, and when it leaves.
/// Invalidations not yet taken are dropped: they were written for tracking that is over (and
/// perhaps for a protocol the client leaves with `RESET`).
pub(super) fn turn_off(state: &mut ClientState, proxy: &crate::proxy::Proxy) {
    if std::mem::take(&mut state.tracking).is_on() {
        proxy.tracking.turn_off(state.id);
        let signal = &state.handle().signal;
        if signal.has_mail() {
            drop(proxy.clients.take_mail(state.id, signal));
        }
    }
    state.caching = false;
}

/// What `CLIENT GETREDIR` and `redir=` show: -1 with tracking off, 0 without a redirect.
fn redirect_shown(mode: Option<&Mode>) -> i64 {
    match mode {
        None => -1,
        Some(mode) => mode
            .redirect
            .map_or(0, |id| i64::try_from(id).unwrap_or(i64::MAX)),
    }
}

/// `CLIENT CACHING YES|NO`: whether the next command's reads are tracked, in `OPTIN` or
/// `OPTOUT` mode.
pub(super) fn caching(state: &mut ClientState, args: &[Bytes]) -> Action {
    if args.len() != 3 {
        return wrong_arity("caching");
    }
    let mode = state.tracking;
    if !mode.is_on() {
        return Action::Reply(reply::error(
            "ERR CLIENT CACHING can be called only when the client is in tracking mode with \
             OPTIN or OPTOUT mode enabled",
        ));
    };
    let answer = args.get(2).map(|a| a.to_ascii_lowercase());
    match answer.as_deref() {
        Some(b"yes") if mode.optin() => state.caching = true,
        Some(b"yes") => {
            return Action::Reply(reply::error(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
        Some(b"no") if mode.optout() => state.caching = true,
        Some(b"no") => {
            return Action::Reply(reply::error(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
        _ => return Action::Reply(reply::error(SYNTAX)),
    }
    Action::Reply(Bytes::from_static(reply::OK))
}

/// `CLIENT GETREDIR`: -1 with tracking off, 0 without a redirect, else the client redirected to.
pub(super) fn getredir(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    out: &mut ReplyBuf,
    args: &[Bytes],
) -> Option<Action> {
    if args.len() != 2 {
        return Some(wrong_arity("getredir"));
    }
    out.integer(redirect_shown(proxy.tracking.mode(state.id).as_ref()));
    None
}

/// `CLIENT TRACKINGINFO`: flags, redirect and prefixes, in Redis's order.
pub(super) fn trackinginfo(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    out: &mut ReplyBuf,
    args: &[Bytes],
) -> Option<Action> {
    if args.len() != 2 {
        return Some(wrong_arity("trackinginfo"));
    }
    let mode = proxy.tracking.mode(state.id);
    let mode = mode.as_ref();
    let broken = proxy.tracking.shown(state.id).broken_redirect;
    let mut flags: Vec<&[u8]> = vec![if mode.is_some() { b"on" } else { b"off" }];
    if let Some(mode) = mode {
        let caching = state.caching;
        for (set, flag) in [
            (mode.bcast, &b"bcast"[..]),
            (mode.optin, b"optin"),
            (mode.optin && caching, b"caching-yes"),
            (mode.optout, b"optout"),
            (mode.optout && caching, b"caching-no"),
            (mode.noloop, b"noloop"),
            (broken, b"broken_redirect"),
        ] {
            if set {
                flags.push(flag);
            }
        }
    }
    out.map(3);
    out.bulk(b"flags").set(flags.len());
    for flag in flags {
        out.bulk(flag);
    }
    out.bulk(b"redirect").integer(redirect_shown(mode));
    let prefixes = mode.map(|m| m.prefixes.as_slice()).unwrap_or_default();
    out.bulk(b"prefixes").array(prefixes.len());
    for prefix in prefixes {
        out.bulk(prefix);
    }
    None
}

/// Most `BCAST` prefixes one client may have: each costs a look at every key any node reports.
const MAX_PREFIXES: usize = 1024;

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
            options.redirect = u64::try_from(id).ok();
        } else if arg.eq_ignore_ascii_case(b"bcast") {
            options.bcast = true;
        } else if arg.eq_ignore_ascii_case(b"optin") {
            options.optin = true;
        } else if arg.eq_ignore_ascii_case(b"optout") {
            options.optout = true;
        } else if arg.eq_ignore_ascii_case(b"noloop") {
            options.noloop = true;
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

/// The checks of `ON`, in Redis's order, given the client's tracking now (`None`: off).
fn check_on(options: &Options<'_>, now: Option<&Mode>) -> Result<(), String> {
    if !options.bcast && !options.prefixes.is_empty() {
        return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
    }
    if now.is_some_and(|m| m.bcast != options.bcast) {
        return Err(
            "ERR You can't switch BCAST mode on/off before disabling tracking for \
                    this client, and then re-enabling it with a different mode."
                .into(),
        );
    }
    if options.bcast && (options.optin || options.optout) {
        return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
    }
    if options.optin && options.optout {
        return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
    }
    if now.is_some_and(|m| options.optin && m.optout || options.optout && m.optin) {
        return Err(
            "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for \
                    this client, and then re-enabling it with a different mode."
                .into(),
        );
    }
    if !options.bcast {
        return Ok(());
    }
    let existing = now.map(|m| m.prefixes.as_slice()).unwrap_or_default();
    for (i, first) in options.prefixes.iter().enumerate() {
        if let Some(old) = existing.iter().find(|old| overlap(first, old)) {
            return Err(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single \
                 client must not overlap.",
                printable(first),
                printable(old)
            ));
        }
        for second in options.prefixes.iter().skip(i + 1) {
            if overlap(first, second) {
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

/// Whether one of two prefixes starts the other.
fn overlap(a: &[u8], b: &[u8]) -> bool {
    let shorter = a.len().min(b.len());
    a.get(..shorter) == b.get(..shorter)
}

/// `text` as Redis puts it in an error line with `%s`: up to a first NUL byte, line breaks
/// made spaces. (Bytes that are not UTF-8, which Redis passes through, are replaced here.)
fn printable(text: &[u8]) -> String {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8_lossy(text.get(..end).unwrap_or_default()).replace(['\r', '\n'], " ")
}
