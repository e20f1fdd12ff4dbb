//! Worker threads: where sessions run. Each worker is one OS thread with a single-threaded tokio
//! runtime that serves its share of the clients and owns its own connections to the nodes.
//!
//! A request is read, routed, written to its node, and its reply returned to the client all on
//! one thread: no task is stolen across cores, and a backend reply wakes its session on the
//! thread it is already on. Against tokio's
//! multi-threaded scheduler this cut the proxy's CPU per request by about a fifth (see
//! `benches/RESULTS.md`). The accept loop, the topology refresher and the admin endpoint stay on
//! the runtime that calls [`crate::run`].
//!
//! A new client goes to the first worker that has room (busy less than [`BUSY_SHARE`] of its
//! time lately), else to the least busy one: a light load runs on one thread, where requests
//! from many clients share each write to a node and each wake-up, and a heavy one spreads over
//! all of them. Dealt out in turn, a light load cost 15-30% more CPU per request on two
//! threads than on one (`benches/RESULTS.md`). A client stays on the worker it started on.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    /// The index of the calling thread: its worker's, or [`WorkerSet::len`] off the workers
    /// (the accept loop, the topology refresher, tests).
    pub fn current_index(&self) -> usize {
        INDEX
            .with(Cell::get)
            .filter(|&i| i < self.len())
            .unwrap_or(self.len())
    }

    /// Runs `task` on worker `index`'s runtime, or on the caller's for an index past the workers.
    pub fn spawn_on<F>(&self, index: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.handles.get(index) {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

/// The share of its time a worker may be busy and still take new clients before a less busy
/// worker does.
pub const BUSY_SHARE: f64 = 0.5;
/// How long the busy shares new clients are placed by hold before they are measured again.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The running worker threads. Dropping this stops them: each thread drops its runtime, and
/// with it every task still on it.
pub struct Workers {
    set: WorkerSet,
    placement: Mutex<Placement>,
    stop: Vec<oneshot::Sender<()>>,
}

/// How busy each worker was lately, for placing new clients.
struct Placement {
    /// When the shares were measured.
    at: Instant,
    /// Each worker's busy time in total, then.
    busy: Vec<Duration>,
    /// Each worker's busy share of the time before.
    shares: Vec<f64>,
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
        let count = handles.len();
        Ok(Workers {
            set: WorkerSet {
                handles: Arc::from(handles),
            },
            placement: Mutex::new(Placement {
                at: Instant::now(),
                busy: vec![Duration::ZERO; count],
                shares: vec![0.0; count],
            }),
            stop,
        })
    }

    /// The handles, for structures that keep something per worker.
    pub fn set(&self) -> &WorkerSet {
        &self.set
    }

    /// Runs `task` (a new client's session) on the first worker with room, else on the least
    /// busy one.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.place();
        self.set.spawn_on(index, task);
    }

    fn place(&self) -> usize {
        if self.set.len() < 2 {
            return 0;
        }
        let mut placement = self
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(placement.at);
        if elapsed >= SAMPLE_EVERY {
            let Placement { busy, shares, .. } = &mut *placement;
            for ((handle, last), share) in self.set.handles.iter().zip(busy).zip(shares) {
                // A current-thread runtime has one worker, numbered 0.
                let total = handle.metrics().worker_total_busy_duration(0);
                *share = total.saturating_sub(*last).as_secs_f64() / elapsed.as_secs_f64();
                *last = total;
            }
            placement.at = now;
        }
        let shares = &placement.shares;
        shares
            .iter()
            .position(|&share| share < BUSY_SHARE)
            .or_else(|| {
                shares
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(index, _)| index)
            })
            .unwrap_or(0)
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

    /// Where the next task `workers` places runs.
    fn next_index(workers: &Workers) -> usize {
        let (tx, rx) = std::sync::mpsc::channel();
        let set = workers.set().clone();
        workers.spawn(async move {
            tx.send(set.current_index()).unwrap();
        });
        rx.recv().unwrap()
    }

    #[test]
    fn new_clients_share_the_first_worker_until_it_is_busy() {
        let workers = Workers::start(2).unwrap();
        let indexes: Vec<usize> = (0..4).map(|_| next_index(&workers)).collect();
        assert_eq!(
            indexes,
            vec![0; 4],
            "an idle first worker takes every client"
        );
        assert_eq!(
            workers.set().current_index(),
            2,
            "the test thread is no worker"
        );
        // Worker 0 busy until the test has seen where new clients go: to worker 1. How soon
        // that shows depends on how loaded the machine is (a sample needs the busy task to have
        // run for a while), so the test looks again until a generous deadline.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let busy = Arc::clone(&stop);
        workers.set().spawn_on(0, async move {
            // Busy in short turns, as a loaded event loop is: its busy time counts at each turn.
            while !busy.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY / 10);
                tokio::task::yield_now().await;
            }
            done_tx.send(()).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut placed = next_index(&workers);
        while placed != 1 && Instant::now() < deadline {
            std::thread::sleep(SAMPLE_EVERY);
            placed = next_index(&workers);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(placed, 1, "a busy first worker takes no new client");
        done_rx.recv().unwrap();
    }
}
