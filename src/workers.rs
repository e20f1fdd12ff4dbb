//! Worker threads: where sessions run. Each worker is one OS thread with a single-threaded tokio
//! runtime that serves its share of the clients and owns its own connections to the nodes.
//!
//! A request is read, routed, written to its node, and its reply returned to the client all on
//! one thread: no task is stolen across cores, and a backend reply wakes its session on the
//! thread it is already on. Against tokio's
//! multi-threaded scheduler this cut the proxy's CPU per request by about a fifth (see
//! `benches/RESULTS.md`). The accept loop, the topology refresher and the admin endpoint stay on
//! the runtime that calls [`crate::run`].

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker index, if it is a worker thread.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Handles to the worker runtimes, for spawning a task on a given worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerSet {
    handles: Arc<[Handle]>,
}

impl WorkerSet {
    /// Number of worker threads.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are no worker threads.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// No worker threads: every task runs on the caller's runtime (unit tests).
    #[cfg(test)]
    pub(crate) fn inline() -> WorkerSet {
        WorkerSet {
            handles: Arc::from(Vec::new()),
        }
    }

    /// The slot of the calling thread: its worker index, or [`WorkerSet::len`] off the workers
    /// (the accept loop, the topology refresher, tests).
    pub fn current_slot(&self) -> usize {
        INDEX
            .with(Cell::get)
            .filter(|&i| i < self.len())
            .unwrap_or(self.len())
    }

    /// Runs `task` on worker `slot`'s runtime, or on the caller's for a slot past the workers.
    pub fn spawn_on<F>(&self, slot: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.handles.get(slot) {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

/// The running worker threads. Dropping this stops them: each thread drops its runtime, and
/// with it every task still on it.
pub struct Workers {
    set: WorkerSet,
    next: AtomicUsize,
    stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `threads` workers (at least one).
    pub fn start(threads: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for index in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stop.push(stop_tx);
            std::thread::Builder::new()
                .name(format!("respgate-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    // Serves spawned sessions until told to stop (or the sender is dropped).
                    let _ = runtime.block_on(stop_rx);
                })?;
        }
        Ok(Workers {
            set: WorkerSet {
                handles: Arc::from(handles),
            },
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// The handles, for structures that keep something per worker.
    pub fn set(&self) -> &WorkerSet {
        &self.set
    }

    /// Runs `task` on the next worker, in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.set.len().max(1);
        self.set.spawn_on(index, task);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_worker_threads_in_turn() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            let set = workers.set().clone();
            workers.spawn(async move {
                tx.send(set.current_slot()).unwrap();
            });
        }
        let mut slots: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
        slots.sort();
        assert_eq!(slots, vec![0, 0, 1, 1]);
        assert_eq!(
            workers.set().current_slot(),
            2,
            "the test thread is no worker"
        );
    }
}
