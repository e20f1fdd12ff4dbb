//! Per-command counters, one set per command name for the whole process: every backend's
//! command table (and a table loaded again) shares them, so a count never restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

/// Most distinct command names counted; later ones count as `other`, so a node that declares
/// endless commands cannot grow the registry or the label set without bound.
const MAX_NAMES: usize = 4096;

/// The counters of one command name: plain atomics, copied into the recorder at each scrape
/// (`publish`), so a request costs one relaxed addition rather than a recorder handle's
/// (a lazily made handle behind a `OnceLock`, called through a trait object, bumping a
/// generation too). A command is listed once it has run.
#[derive(Debug)]
pub struct CommandCounters {
    name: &'static str,
    ok: AtomicU64,
    error: AtomicU64,
}

/// The counters of commands no backend declares (and of names past `MAX_NAMES`).
pub static OTHER: CommandCounters = CommandCounters::new("other");

impl CommandCounters {
    const fn new(name: &'static str) -> Self {
        CommandCounters {
            name,
            ok: AtomicU64::new(0),
            error: AtomicU64::new(0),
        }
    }

    /// Counts one command whose reply was an error or not.
    #[inline]
    pub fn count(&self, error: bool) {
        if error { &self.error } else { &self.ok }.fetch_add(1, Relaxed);
    }

    /// The label value.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Copies the counts into the recorder; a result never seen is not listed.
    fn publish(&self) {
        for (result, count) in [("ok", &self.ok), ("error", &self.error)] {
            let count = count.load(Relaxed);
            if count > 0 {
                metrics::counter!(super::COMMANDS, "command" => self.name, "result" => result)
                    .absolute(count);
            }
        }
    }
}

/// Every command name's counters made so far.
fn names() -> std::sync::MutexGuard<'static, HashMap<String, &'static CommandCounters>> {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static CommandCounters>>> = OnceLock::new();
    NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The counters of command `name` (lowercase, `container|sub` for a subcommand); `other` for an
/// unknown name or once `MAX_NAMES` are taken. Each is made once and lives as long as the
/// process: the names are a bounded set.
pub fn command_counters(name: &str) -> &'static CommandCounters {
    if name == OTHER.name {
        return &OTHER;
    }
    let mut names = names();
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

/// Copies every command's counts into the recorder (at each scrape).
pub fn publish() {
    OTHER.publish();
    for counters in names().values() {
        counters.publish();
    }
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

    #[test]
    fn counts_reach_the_recorder_at_a_scrape() {
        let handle = super::super::install();
        let counters = command_counters("counted-at-scrape-test");
        counters.count(false);
        counters.count(false);
        counters.count(true);
        publish();
        let text = handle.render();
        let line = |result: &str| {
            format!(
                "respgate_commands_total{{command=\"counted-at-scrape-test\",result=\"{result}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 2\n", line("ok"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", line("error"))), "{text}");
        assert!(!text.contains("command=\"never-ran\""), "{text}");
    }
}
