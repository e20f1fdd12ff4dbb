//! The configuration file watcher: reads the file through its path every
//! `server.config_watch_interval_ms` and reloads when its content changed.
//!
//! Polling the content through the path, rather than watching the file's inode, sees every way
//! a file is replaced: an edit in place, an editor's rename over it, and a Kubernetes ConfigMap
//! update, which swaps the `..data` symlink the mounted file points through. A content that is
//! still changing (a write in progress) is read again one tick later before it is reloaded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Reloader, Trigger};

/// How often the watcher looks again whether it was turned on, while it is off.
const OFF_RECHECK: Duration = Duration::from_secs(1);

/// Reloads `reloader`'s proxy whenever the content of `path` changes, until `shutdown`.
pub async fn watch_file(
    reloader: Arc<Reloader>,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = fingerprint(&path).ok();
    let mut failed_reads = 0u32;
    // A content seen once, different from `last`: reloaded if it is the same one tick later.
    let mut settling: Option<u64> = None;
    loop {
        let interval = reloader.proxy().config().server.config_watch_interval_ms;
        let wait = match interval {
            0 => OFF_RECHECK,
            ms => Duration::from_millis(ms),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if interval == 0 {
            continue;
        }
        let now = match fingerprint(&path) {
            Ok(now) => {
                failed_reads = 0;
                now
            }
            Err(error) => {
                // A symlink swap in progress shows as a moment without the file: say so once,
                // when it lasts.
                failed_reads = failed_reads.saturating_add(1);
                if failed_reads == 2 {
                    warn!(path = %path.display(), %error, "configuration file unreadable; the configuration in force stays");
                }
                continue;
            }
        };
        if Some(now) == last {
            settling = None;
            continue;
        }
        if settling != Some(now) {
            settling = Some(now);
            continue;
        }
        debug!(path = %path.display(), "configuration file changed");
        settling = None;
        last = Some(now);
        reloader.reload(Trigger::FileChange).await;
    }
}

/// A hash of the file's content.
fn fingerprint(path: &Path) -> std::io::Result<u64> {
    let content = std::fs::read(path)?;
    let mut hasher = DefaultHasher::new();
    content.hash(&mut hasher);
    Ok(hasher.finish())
}
