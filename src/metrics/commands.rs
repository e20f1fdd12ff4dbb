//! Per-command counters, one set per command name for the whole process: every backend's
//! command table (and a table loaded again) shares them, so a count never restarts.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use metrics::Counter;

/// Most distinct command names counted; later ones count as `other`, so a node that declares
/// endless commands cannot grow the registry or the label set without bound.
const MAX_NAMES: usize = 4096;

/// The counters of one command name, registered with the recorder on first use (so `/metrics`
/// lists only commands that ran).
#[derive(Debug)]
pub struct CommandCounters {
    name: &'static str,
    ok: OnceLock<Counter>,
    error: OnceLock<Counter>,
}

/// The counters of commands no backend declares (and of names past [`MAX_NAMES`]).
pub static OTHER: CommandCounters = CommandCounters::new("other");

impl CommandCounters {
    const fn new(name: &'static str) -> Self {
        CommandCounters {
            name,
            ok: OnceLock::new(),
            error: OnceLock::new(),
        }
    }

    /// Counts one command whose reply was an error or not.
    #[inline]
    pub fn count(&self, error: bool) {
        let (cell, result) = if error {
            (&self.error, "error")
        } else {
            (&self.ok, "ok")
        };
        cell.get_or_init(
            || metrics::counter!(super::COMMANDS, "command" => self.name, "result" => result),
        )
        .increment(1);
    }

    /// The label value.
    pub fn name(&self) -> &str {
        self.name
    }
}

/// The counters of command `name` (lowercase, `container|sub` for a subcommand); `other` for an
/// unknown name or once [`MAX_NAMES`] are taken. Each is made once and lives as long as the
/// process: the names are a bounded set.
pub fn command_counters(name: &str) -> &'static CommandCounters {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static CommandCounters>>> = OnceLock::new();
    if name == OTHER.name {
        return &OTHER;
    }
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(found) = names.get(name) {
        return found;
    }
    if names.len() >= MAX_NAMES {
        return &OTHER;
    }
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let made: &'static CommandCounters = Box::leak(Box::new(CommandCounters::new(name)));
    names.insert(name.to_string(), made);
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_counters_per_name() {
        let a = command_counters("get");
        let b = command_counters("get");
        assert!(std::ptr::eq(a, b));
        assert_eq!(command_counters("other").name(), "other");
        assert_eq!(
            command_counters("object|encoding").name(),
            "object|encoding"
        );
    }
}
