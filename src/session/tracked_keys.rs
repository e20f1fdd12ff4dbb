//! What a client's requests tell the table of client-side caching (see [`crate::tracking`]):
//! the keys a tracking client reads, and the keys any client writes, which the clients of this
//! proxy that read them are told of at once. A request inside `MULTI` is noted when queued and
//! acted on at `EXEC`, before the transaction runs, as Redis tracks what `EXEC` reads.

use bytes::Bytes;

use super::ClientState;
use crate::command::CommandSpec;
use crate::proxy::ProxyRef;
use crate::tracking::{ReadKey, watch};

/// Most keys a transaction's commands may note; past it, the client is told to forget
/// everything once `EXEC` has answered.
const MAX_NOTED_IN_TRANSACTION: usize = 4096;

/// What the commands queued in a transaction read and write, for `EXEC`.
#[derive(Debug, Default)]
pub(super) struct Noted {
    reads: Vec<ReadKey>,
    writes: Vec<ReadKey>,
    /// More than [`MAX_NOTED_IN_TRANSACTION`] keys were noted: the rest were not.
    overflow: bool,
}

/// Whether the command reads keys the client tracks (`Some(true)`), writes keys some client
/// may track (`Some(false)`), or neither (`None`); `caching` is the client's `CLIENT CACHING`
/// for it.
fn touches(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    caching: bool,
) -> Option<bool> {
    let mode = state.tracking;
    // A script's keys are not taken as read: whether it reads them is not known here (Redis
    // tracks them when the script calls a read-only command).
    let reads = mode.is_on()
        && (if mode.optin() {
            caching
        } else {
            !(mode.optout() && caching)
        })
        && !spec.runs_code
        && spec.has_flag("readonly");
    if reads {
        return Some(true);
    }
    // A write, or a script that may write the keys it declares: told at once to the clients of
    // this proxy that read them, and remembered for a `BCAST` `NOLOOP` writer, which its
    // node's report is then not passed back to.
    let own_reports = mode.bcast() && mode.noloop();
    let writes = (proxy.tracking.has_keys() || own_reports)
        && (spec.has_flag("write") || spec.runs_code && !spec.has_flag("readonly"));
    writes.then_some(false)
}

/// The keys of `args`, each with its backend and the name its backend stores it under.
fn keys_of(proxy: ProxyRef<'_>, spec: &CommandSpec, args: &[Bytes]) -> Vec<ReadKey> {
    let mut positions = Vec::new();
    spec.key_positions(args, &mut positions);
    let routes = proxy.routes();
    positions
        .iter()
        .filter_map(|&i| args.get(i))
        .flat_map(|key| {
            let route = routes.route(key);
            // A moving key may be read from, and written on, either side: tracked on both.
            let other = routes
                .has_moving()
                .then(|| routes.moving(key).map(|moving| moving.to))
                .flatten();
            // Copied: a slice of the request would keep the client's whole read buffer alive
            // as long as the key is tracked.
            let strip = route.strip.min(key.len());
            [Some(route.backend), other]
                .into_iter()
                .flatten()
                .filter_map(|id| proxy.backend(id))
                .map(|backend| ReadKey {
                    backend: backend.serial(),
                    stored: Bytes::copy_from_slice(key.get(strip..).unwrap_or_default()),
                    named: (strip > 0).then(|| Bytes::copy_from_slice(key)),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Tells the table that client `client` reads (`reads`) or writes `keys` now.
fn act(proxy: ProxyRef<'_>, client: u64, reads: bool, keys: Vec<ReadKey>) {
    if reads {
        for (index, backend) in proxy.backends().iter().enumerate() {
            if keys.iter().any(|k| k.backend == backend.serial()) {
                let id = crate::keyspace::BackendId(u16::try_from(index).unwrap_or(u16::MAX));
                let prefix = proxy.routes().stripped_prefix(id).cloned();
                watch::ensure_watched(&proxy.tracking, backend, prefix);
            }
        }
        proxy.tracking.remember(client, keys);
    } else {
        for key in keys {
            proxy
                .tracking
                .invalidate(key.backend, &[key.stored], Some(client));
        }
    }
}

/// Notes a request about to be sent. Called for every request with a known command while the
/// client tracks or some key is tracked; `caching` is its `CLIENT CACHING`.
pub(super) fn note(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    args: &[Bytes],
    caching: bool,
) {
    if let Some(reads) = touches(state, proxy, spec, caching) {
        act(proxy, state.id, reads, keys_of(proxy, spec, args));
    }
}

/// Notes a request queued in a transaction, in `noted`, for [`at_exec`]. `CLIENT CACHING`
/// given before `MULTI` holds for every command of the transaction, as in Redis.
pub(super) fn note_queued(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    args: &[Bytes],
    noted: &mut Noted,
) {
    if !state.tracking.is_on() && !proxy.tracking.has_keys() {
        return;
    }
    let Some(reads) = touches(state, proxy, spec, state.caching) else {
        return;
    };
    let keys = keys_of(proxy, spec, args);
    if noted.reads.len() + noted.writes.len() + keys.len() > MAX_NOTED_IN_TRANSACTION {
        noted.overflow = true;
        return;
    }
    if reads {
        noted.reads.extend(keys);
    } else {
        noted.writes.extend(keys);
    }
}

/// `EXEC` is about to be sent: what its commands read and write is acted on now. Past the
/// limit of keys noted, the client is told to forget everything once `EXEC` has answered.
pub(super) fn at_exec(state: &mut ClientState, proxy: ProxyRef<'_>, noted: Noted) {
    state.caching = false;
    if noted.overflow && state.tracking.is_on() {
        proxy.tracking.forget_everything(state.id);
    }
    if !noted.reads.is_empty() {
        act(proxy, state.id, true, noted.reads);
    }
    if !noted.writes.is_empty() {
        act(proxy, state.id, false, noted.writes);
    }
}
