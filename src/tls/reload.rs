//! A configuration built from files and rebuilt when they change: a new build replaces the old
//! one atomically for whoever loads it next, and a build that fails leaves the old one in place.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::TlsError;

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

/// A configuration of type `T` and the files it was built from.
pub struct Reloading<T> {
    name: String,
    files: Vec<PathBuf>,
    /// The files as last looked at, whether that build succeeded or not: a broken file is
    /// reported once, not at every look, and tried again when it changes.
    stamps: Mutex<Vec<Option<Stamp>>>,
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
            stamps: Mutex::new(stamps),
            build: Box::new(build),
            current: ArcSwap::from_pointee(first),
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }
}

/// A [`Reloading`] of any type, for the loop that looks at them all.
pub trait Reload: Send + Sync {
    /// The configuration's name, as in the configuration file (`server.tls`, `backends.NAME`).
    fn name(&self) -> &str;

    /// Rebuilds the configuration when a file changed since the last look: `Ok(true)` when
    /// the new one is in force, `Ok(false)` when nothing changed, an error when the files do
    /// not load (the old configuration stays).
    fn reload_if_changed(&self) -> Result<bool, TlsError>;
}

impl<T: Send + Sync> Reload for Reloading<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now: Vec<Option<Stamp>> = self.files.iter().map(Stamp::of).collect();
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *stamps == now {
                return Ok(false);
            }
            *stamps = now;
        }
        let fresh = (self.build)()?;
        self.current.store(Arc::new(fresh));
        Ok(true)
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
        assert_eq!(*r.current(), 1);
        assert!(!r.reload_if_changed().unwrap(), "nothing changed");

        // A rename, as `kubectl` and most deployment tools replace files.
        let next = dir.path().join("n.new");
        std::fs::write(&next, "2").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 2);

        std::fs::write(&next, "broken").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().is_err());
        assert_eq!(*r.current(), 2, "the previous build stays");
        assert!(!r.reload_if_changed().unwrap(), "reported once");

        std::fs::write(&next, "3").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 3);
    }
}
