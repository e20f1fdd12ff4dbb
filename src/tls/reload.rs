//! A configuration built from files and rebuilt when they change: a new build replaces the old
//! one atomically for whoever loads it next, and a build that fails leaves the old one in place.
//!
//! The files are looked at when the configuration is needed (a handshake, a connection to a
//! node), at most once per [`LOOK_INTERVAL`]: a `stat` per file, nothing beside a handshake's
//! cost. No task watches them, so a configuration lives exactly as long as what uses it (a
//! backend's connector, the TLS listener).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::TlsError;
use crate::metrics as m;

/// Least time between two looks at a configuration's files.
pub const LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file: rewriting it in place changes its modification time
/// (and usually its length); replacing it by a rename changes its inode too.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl Stamp {
    /// The file's stamp now, following symlinks; `None` when it cannot be read.
    fn of(path: &PathBuf) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// Builds a configuration from its files.
type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// The files as last looked at, whether that build succeeded or not (a broken file is reported
/// once, not at every look, and tried again when it changes), and when.
struct Look {
    stamps: Vec<Option<Stamp>>,
    at: Instant,
}

/// A configuration of type `T` and the files it was built from.
pub struct Reloading<T> {
    name: String,
    files: Vec<PathBuf>,
    look: Mutex<Look>,
    build: Build<T>,
    current: ArcSwap<T>,
}

impl<T> Reloading<T> {
    /// Builds the configuration `name` from `files` (empty paths are skipped) with `build`.
    pub fn load(
        name: &str,
        files: &[&String],
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        let files: Vec<PathBuf> = files
            .iter()
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .collect();
        // Stamped before the build: a file changed in between is built again at the next look.
        let stamps = files.iter().map(Stamp::of).collect();
        let first = build()?;
        Ok(Reloading {
            name: name.into(),
            files,
            look: Mutex::new(Look {
                stamps,
                at: Instant::now(),
            }),
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
        })
    }

    /// The configuration in force, after a look at the files if [`LOOK_INTERVAL`] has passed
    /// since the last one. A rebuild is logged and counted in `respgate_tls_reloads_total`;
    /// so is a refusal, with the file at fault.
    pub fn current(&self) -> Arc<T> {
        // Whoever finds another caller looking goes on with the configuration in force.
        if let Ok(mut look) = self.look.try_lock()
            && look.at.elapsed() >= LOOK_INTERVAL
        {
            look.at = Instant::now();
            match self.rebuild_if_changed(&mut look.stamps) {
                Ok(false) => {}
                Ok(true) => {
                    info!(
                        config = %self.name,
                        "TLS files changed; new handshakes use them, open connections keep theirs"
                    );
                    metrics::counter!(m::TLS_RELOADS, "result" => "ok").increment(1);
                }
                Err(error) => {
                    warn!(
                        config = %self.name,
                        %error,
                        "TLS files changed but do not load; refused, the previous ones stay in force"
                    );
                    metrics::counter!(m::TLS_RELOADS, "result" => "refused").increment(1);
                }
            }
        }
        self.current.load_full()
    }

    /// Rebuilds the configuration when a file changed since `stamps`: `Ok(true)` when the new
    /// one is in force, `Ok(false)` when nothing changed, an error when the files do not load
    /// (the old configuration stays).
    fn rebuild_if_changed(&self, stamps: &mut Vec<Option<Stamp>>) -> Result<bool, TlsError> {
        let now: Vec<Option<Stamp>> = self.files.iter().map(Stamp::of).collect();
        if *stamps == now {
            return Ok(false);
        }
        *stamps = now;
        let fresh = (self.build)()?;
        self.current.store(Arc::new(fresh));
        Ok(true)
    }

    /// Looks at the files now, whatever the interval (for tests).
    #[cfg(test)]
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let mut look = self.look.lock().unwrap_or_else(|p| p.into_inner());
        self.rebuild_if_changed(&mut look.stamps)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn number(path: &std::path::Path) -> Result<u32, TlsError> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim().parse().map_err(|_| TlsError::Rejected {
            key: "test".into(),
            reason: format!("{text:?} is no number"),
        })
    }

    #[test]
    fn a_changed_file_is_built_again_and_a_broken_one_refused_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let file = path.to_string_lossy().into_owned();
        let p = path.clone();
        let r = Reloading::load("test", &[&file, &String::new()], move || number(&p)).unwrap();
        assert_eq!(*r.current.load_full(), 1);
        assert!(!r.reload_if_changed().unwrap(), "nothing changed");

        // A rename, as `kubectl` and most deployment tools replace files.
        let next = dir.path().join("n.new");
        std::fs::write(&next, "2").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current.load_full(), 2);

        std::fs::write(&next, "broken").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().is_err());
        assert_eq!(*r.current.load_full(), 2, "the previous build stays");
        assert!(!r.reload_if_changed().unwrap(), "reported once");

        std::fs::write(&next, "3").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current.load_full(), 3);
    }
}
