//! The session's side of the proxy's users: logging in (`AUTH`, `HELLO ... AUTH`), the
//! permission check of a restricted user's request before anything is done with it, and the
//! `ACL` command.
//!
//! The check costs a session nothing unless its user is restricted (one flag tested in
//! [`dispatch`](super::dispatch)); then it is one more table lookup, a bit test, and the
//! user's patterns against the request's keys and channels.

use bytes::Bytes;
use tracing::warn;

use super::action::{Action, unknown_subcommand, wrong_arity_named};
use super::own::OwnOp;
use super::{ClientState, txn};
use std::sync::atomic::Ordering;

use super::pubsub::Subscriptions;
use crate::acl::{CATEGORIES, Categories, Denial, LoginError, Users};
use crate::command::{Lookup, OwnKind, Policy, Transaction};
use crate::metrics as m;
use crate::protocol::Request;
use crate::protocol::reply::{self, ReplyBuf};
use crate::proxy::ProxyRef;

/// What the permission check says of a request.
pub(super) enum Permit {
    /// Go on (also when the normal path will refuse it anyway: an unknown command, a wrong
    /// argument count).
    Allowed,
    /// Refused with this reply.
    Refused(Action),
    /// The command table is not known yet: decide once a backend has answered.
    AwaitTable,
}

/// Checks `request` (command `name`, lowercase) of a restricted user. A refusal inside `MULTI`
/// makes `EXEC` fail, as any queuing error does in Redis.
pub(super) fn permit(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    name: Option<&str>,
    request: &Request,
) -> Permit {
    let Some(user) = state.user.as_deref() else {
        return Permit::Allowed;
    };
    let Some(table) = proxy.commands() else {
        return Permit::AwaitTable;
    };
    let spec = match name.map(|n| table.lookup_lowercased(n, &request.args)) {
        Some(Lookup::Found(spec)) if spec.arity_ok(request.args.len()) => spec,
        _ => return Permit::Allowed,
    };
    // Redis refuses these before it looks at permissions.
    if state.txn.is_some() && spec.has_flag("no_multi") {
        return Permit::Allowed;
    }
    let routes = proxy.routes();
    match user.check(spec, &request.args, routes, &mut state.acl_keys) {
        Ok(()) => Permit::Allowed,
        // Not an ACL refusal in Redis but SORT's own error when it runs: queued inside MULTI,
        // it fails at EXEC on the node, which holds the transaction as the user.
        Err(Denial::SortOption { .. }) if state.txn.is_some() => {
            txn::needs_user(state);
            Permit::Allowed
        }
        Err(denial) => {
            let (counter, kind) = match denial {
                Denial::Command(_) => (&proxy.stats.denied_commands, "command"),
                Denial::Key => (&proxy.stats.denied_keys, "key"),
                Denial::Backend => (&proxy.stats.denied_keys, "backend"),
                Denial::Channel => (&proxy.stats.denied_channels, "channel"),
                Denial::SortOption { .. } => {
                    return Permit::Refused(Action::Reply(reply::error(&denial.message())));
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::ACL_DENIED, "kind" => kind).increment(1);
            if spec.policy == Policy::Own(OwnKind::Transaction(Transaction::Exec)) {
                // Redis discards the transaction (and the watches) and says why in EXEC's one
                // reply, inside MULTI or not.
                txn::discard(state);
                let reply = reply::error(&format!(
                    "EXECABORT Transaction discarded because of: {}",
                    denial.message()
                ));
                return Permit::Refused(Action::Own(OwnOp::Release { reply }));
            }
            txn::fail_queued(state);
            Permit::Refused(Action::Reply(reply::error(&denial.message())))
        }
    }
}

/// Logs the client in as `user` (the default user when `None`) with `password`. A failure is
/// counted and logged with the user name and the client's address, never the password.
pub(super) fn login(
    state: &mut ClientState,
    proxy: ProxyRef<'_>,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), LoginError> {
    match proxy.users().login(user, password) {
        Ok(found) => {
            state.login(Some(found));
            Ok(())
        }
        Err(error) => {
            if error == LoginError::WrongPass {
                metrics::counter!(m::AUTH_FAILURES).increment(1);
                let stats = &proxy.stats;
                let total = stats.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
                // At most one line a second: a client guessing passwords as fast as it can send
                // them must not turn each 40-byte AUTH into a log line. The line says how many
                // failures it stands for; the counters have every one.
                let now_s = proxy.started.elapsed().as_secs() + 1;
                let last_s = stats.auth_failure_logged_s.load(Ordering::Relaxed);
                if now_s <= last_s
                    || stats
                        .auth_failure_logged_s
                        .compare_exchange(last_s, now_s, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                {
                    return Err(error);
                }
                let unlogged = total
                    .saturating_sub(stats.auth_failures_at_log.swap(total, Ordering::Relaxed))
                    .saturating_sub(1);
                // The name as the client sent it, cut short and escaped: it is theirs.
                let name = user.map_or_else(
                    || "(default)".to_string(),
                    |u| {
                        let shown = String::from_utf8_lossy(u.get(..64).unwrap_or(u));
                        format!("{shown:?}")
                    },
                );
                warn!(
                    client = state.id,
                    peer = %state.peer(),
                    user = %name,
                    unlogged_failures_before = unlogged,
                    "authentication failed"
                );
            }
            Err(error)
        }
    }
}

/// Moves the client's login to `users`, the users of the snapshot it moves to: its user, looked
/// up by name, with the rules and passwords the reload gave it. False when the client must be
/// closed, as Redis closes the clients of a user `ACL DELUSER` deletes: its user is gone, or
/// may no longer hold a channel or pattern it is subscribed to (Redis closes those when
/// `ACL SETUSER` takes channels away). A disabled user's clients stay, as with Redis's
/// `ACL SETUSER name off`. A client that never logged in is let in when the default user now
/// takes any password, as Redis lets clients in once `requirepass` is cleared.
pub(super) fn follow_user(
    state: &mut ClientState,
    subscriptions: Option<&Subscriptions>,
    users: &Users,
) -> bool {
    let Some(name) = state.user.as_ref().map(|u| u.name.clone()) else {
        if let Some(user) = users.at_connect() {
            state.login(Some(user));
        }
        return true;
    };
    let Some(user) = users.get(&name) else {
        return false;
    };
    let may_stay = subscriptions
        .is_none_or(|subs| subs.all(|name, pattern| user.may_subscribe(name, pattern)));
    state.login(Some(user));
    may_stay
}

/// `ACL WHOAMI | CAT [category] | USERS`, answered from the proxy's users and the command
/// table; the subcommands that would change or list users' rules are refused: users live in
/// the proxy's configuration.
pub(super) fn command(state: &ClientState, proxy: ProxyRef<'_>, args: &[Bytes]) -> Action {
    let Some(sub) = args.get(1) else {
        return Action::Reply(reply::error(&wrong_arity_named(b"acl")));
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let argc = args.len();
    let wrong = || {
        Action::Reply(reply::error(&format!(
            "ERR wrong number of arguments for 'acl|{sub}' command"
        )))
    };
    let mut out = ReplyBuf::new(state.protocol);
    match sub.as_str() {
        "whoami" => {
            if argc != 2 {
                return wrong();
            }
            let name = state.user.as_ref().map_or("default", |u| u.name.as_str());
            out.bulk(name.as_bytes());
        }
        "users" => {
            if argc != 2 {
                return wrong();
            }
            let mut names: Vec<&str> = proxy
                .users()
                .all()
                .iter()
                .map(|u| u.name.as_str())
                .collect();
            names.sort_unstable();
            out.array(names.len());
            for name in names {
                out.bulk(name.as_bytes());
            }
        }
        "cat" => match args.get(2) {
            None => {
                out.array(CATEGORIES.len());
                for category in CATEGORIES {
                    out.bulk(category.as_bytes());
                }
            }
            Some(_) if argc > 3 => return wrong(),
            Some(category) => {
                let text = String::from_utf8_lossy(category);
                let Some(wanted) = Categories::named(&text) else {
                    return Action::Reply(reply::error(&format!("ERR Unknown category '{text}'")));
                };
                let Some(table) = proxy.commands() else {
                    return Action::Reply(reply::error(
                        &proxy
                            .default_backend()
                            .map_or_else(String::new, |c| c.unreachable_error()),
                    ));
                };
                let names: Vec<&str> = table
                    .all_specs()
                    .filter(|spec| spec.categories.intersects(wanted))
                    .map(|spec| spec.name.as_str())
                    .collect();
                out.array(names.len());
                for name in names {
                    out.bulk(name.as_bytes());
                }
            }
        },
        "deluser" | "dryrun" | "genpass" | "getuser" | "help" | "list" | "load" | "log"
        | "save" | "setuser" => {
            return Action::Reply(reply::error(&format!(
                "ERR respgate: ACL {} is not supported by this proxy: its users are set in its configuration ([users.NAME])",
                sub.to_ascii_uppercase()
            )));
        }
        _ => return Action::Reply(reply::error(&unknown_subcommand(args))),
    }
    Action::Reply(out.finish())
}
