//! Where a request meets the proxy's `CLIENT PAUSE` ([`crate::pause`]): after the checks Redis
//! makes first (authentication, permissions, an unknown command, a wrong argument count, a
//! command refused inside `MULTI` are answered at once, as Redis answers them during a pause),
//! before the request does anything, queuing inside `MULTI` included.

use bytes::Bytes;

use super::ClientState;
use super::action::Postponed;
use crate::command::{CommandSpec, Lookup, Policy};
use crate::pause::{Pausable, PauseTicket};
use crate::protocol::Request;
use crate::proxy::ProxyRef;

/// A ticket to wait on when the pause in force holds `request` now; `None` when it may go on.
/// Costs one load unless a pause may be in force.
pub(super) fn gate(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    own: Option<Policy>,
    request: &Request,
) -> Option<PauseTicket> {
    if !proxy.pause.maybe_on() {
        return None;
    }
    let table = proxy.commands();
    let class = match table.as_ref().map(|table| table.lookup(&request.args)) {
        Some(Lookup::Found(spec)) => {
            if !spec.arity_ok(request.args.len())
                || state.txn.is_some() && spec.has_flag("no_multi")
            {
                // Refused at once, as Redis refuses it before looking at a pause.
                return None;
            }
            class_of(state, proxy, spec, own, &request.args)
        }
        Some(Lookup::Unknown | Lookup::UnknownSubcommand) => return None,
        // Not known yet: it waits for a backend anyway, then is decided again.
        None => Pausable::Other,
    };
    proxy.pause.hold(class)
}

/// What `spec` called with `args` is for a pause: [`Pausable::Write`] when it writes or may
/// replicate, as Redis's `processCommand` judges it: `EXEC` by what its transaction queued, a
/// script with a shebang by its `no-writes` flag.
fn class_of(
    state: &ClientState,
    proxy: ProxyRef<'_>,
    spec: &CommandSpec,
    own: Option<Policy>,
    args: &[Bytes],
) -> Pausable {
    let exec = matches!(
        own,
        Some(Policy::Own(crate::command::OwnKind::Transaction(
            crate::command::Transaction::Exec
        )))
    );
    if exec && state.txn.as_ref().is_some_and(|txn| txn.writes()) {
        return Pausable::Write;
    }
    if writes(proxy, spec, args) {
        Pausable::Write
    } else {
        Pausable::Other
    }
}

/// Whether `spec` called with `args` writes or may replicate: its flags say so, unless it runs
/// a script whose shebang declares `no-writes` (Redis then takes the script's flags instead
/// of the command's). `EVALSHA` of a script the proxy has not seen, and `FCALL` (whose
/// function's flags only the node knows), count as writes.
pub(super) fn writes(proxy: ProxyRef<'_>, spec: &CommandSpec, args: &[Bytes]) -> bool {
    if !spec.may_replicate {
        return false;
    }
    let body = match spec.name.as_str() {
        "eval" => args.get(1).cloned(),
        "evalsha" => args.get(1).and_then(|sha| {
            proxy
                .backends()
                .iter()
                .find_map(|backend| backend.scripts.body(sha))
        }),
        _ => None,
    };
    body.is_none_or(|body| !declares_no_writes(&body))
}

/// Whether `body` starts with a shebang (`#!lua flags=no-writes,allow-stale`) whose flags
/// include `no-writes`.
fn declares_no_writes(body: &[u8]) -> bool {
    let Some(rest) = body.strip_prefix(b"#!") else {
        return false;
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(b"flags="))
        .flat_map(|flags| flags.split(|&b| b == b','))
        .any(|flag| flag == b"no-writes")
}

/// Waits until the held request's pause ends or changes, then gives the request back to be
/// decided again. Pending forever when nothing is held, so it can sit in a `select!`; nothing
/// is lost when another branch wins first.
pub(super) async fn released(postponed: &mut Option<Postponed>) -> Request {
    if let Some(held) = postponed.as_mut() {
        held.ticket.released().await;
    }
    match postponed.take() {
        Some(held) => held.request,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::declares_no_writes;

    #[test]
    fn only_a_shebang_with_no_writes_declares_a_read_only_script() {
        assert!(declares_no_writes(b"#!lua flags=no-writes\nreturn 1"));
        assert!(declares_no_writes(
            b"#!lua name=f flags=allow-stale,no-writes\nreturn 1"
        ));
        assert!(!declares_no_writes(b"#!lua\nreturn 1"));
        assert!(!declares_no_writes(b"return 1 -- flags=no-writes"));
        assert!(!declares_no_writes(b"#!lua flags=allow-oom\nno-writes"));
    }
}
