//! A small work-sharing pool that never waits for a helper that has not started.
//!
//! Why not candle's barrier pool or rayon: on this 2-core machine, shared with wasm
//! guests and other processes, candle's pool made generation 4x slower than one thread
//! (3.3 vs 13.5 tok/s measured under load), because every matmul ends in a barrier that
//! waits for all workers, and a descheduled worker stalls the caller for a time slice.
//! Here the caller publishes a job with a shared cursor and works through it itself;
//! helpers that wake in time take chunks too, and the caller waits only for helpers
//! that are inside a chunk. When another generation already uses the helpers, a call
//! simply runs inline, which is the right split for two concurrent agents on two cores.
//!
//! How many threads a call uses is chosen from the cores actually free: on a 2-core
//! machine shared with builds and wasm guests, one thread decoded at 39-50 tok/s where two
//! did 27-32 (load average 2-5), because a helper preempted inside a chunk holds up the
//! caller; on idle cores two threads are faster. So by default the pool has one helper per
//! extra core, and each call lets in only as many as other processes left idle over the
//! last quarter second ([`free_threads`], from `/proc/stat` minus this process's own time).
//! `LLM_LOCAL_THREADS=N` fixes the number instead. Without helpers, concurrent generations
//! still run in parallel on their callers' threads.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable: number of threads for one generation (caller included); unset,
/// the number follows the free cores ([`free_threads`]).
pub const THREADS_ENV: &str = "LLM_LOCAL_THREADS";

const OPEN: usize = 1 << (usize::BITS - 1);
/// Spins of an idle helper before it sleeps (~100 microseconds): matmuls of a decode step
/// come tens of microseconds apart, so helpers stay warm during a generation.
const IDLE_SPINS: u32 = 4_000;

struct Job<'a> {
    f: &'a (dyn Fn(Range<usize>) + Sync),
    cursor: AtomicUsize,
    n: usize,
    chunk: usize,
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let start = self.cursor.fetch_add(self.chunk, Ordering::Relaxed);
            if start >= self.n {
                return;
            }
            (self.f)(start..self.n.min(start + self.chunk));
        }
    }
}

struct Shared {
    /// OPEN bit while a job accepts helpers, plus the number of helpers inside it.
    state: AtomicUsize,
    /// Sequence number of the current job, so a helper enters each job once.
    seq: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    sleepers: AtomicUsize,
    epoch: Mutex<u64>,
    wake: Condvar,
    helper_panicked: AtomicBool,
    /// Helpers allowed into the current job.
    limit: AtomicUsize,
}

pub struct Pool {
    shared: &'static Shared,
    helpers: usize,
    /// Let in only the helpers that free cores can run (else all of them).
    adaptive: bool,
    /// Held by the caller that owns the helpers for the current job.
    busy: Mutex<()>,
}

/// The process-wide pool: `LLM_LOCAL_THREADS` threads if set, else one per core, of
/// which each call uses those free (see the module doc).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let fixed = std::env::var(THREADS_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0);
        match fixed {
            Some(n) => Pool::new(n),
            None => {
                let mut p = Pool::new(cores());
                p.adaptive = true;
                p
            }
        }
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Threads one call may use now: the cores that other processes left idle over the last
/// quarter second (measured at most that often), at least 1. Linux only; elsewhere 1.
pub fn free_threads() -> usize {
    struct Sample {
        at: Instant,
        total: u64,
        idle: u64,
        own: u64,
    }
    static LAST: Mutex<Option<Sample>> = Mutex::new(None);
    static FREE: AtomicUsize = AtomicUsize::new(1);
    let Ok(mut last) = LAST.try_lock() else {
        return FREE.load(Ordering::Relaxed);
    };
    let now = Instant::now();
    if last
        .as_ref()
        .is_some_and(|l| now - l.at < Duration::from_millis(250))
    {
        return FREE.load(Ordering::Relaxed);
    }
    let Some((total, idle, own)) = cpu_times() else {
        return 1;
    };
    if let Some(l) = last.as_ref() {
        let dt = total.saturating_sub(l.total);
        if dt > 0 {
            let busy = dt.saturating_sub(idle.saturating_sub(l.idle));
            let others = busy.saturating_sub(own.saturating_sub(l.own));
            let n = cores();
            // Free cores, rounded down with a little slack for measurement noise.
            let free = (n as f64 * (dt - others.min(dt)) as f64 / dt as f64 + 0.2) as usize;
            FREE.store(free.clamp(1, n), Ordering::Relaxed);
        }
    }
    *last = Some(Sample {
        at: now,
        total,
        idle,
        own,
    });
    FREE.load(Ordering::Relaxed)
}

/// (all cpu time, idle time, this process's time), in clock ticks from /proc.
fn cpu_times() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total = cpu.iter().sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 12, 13.
    let rest: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((total, idle, own))
}

impl Pool {
    /// A pool of `threads` (the caller counts as one, so `threads - 1` helpers).
    pub fn new(threads: usize) -> Pool {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleepers: AtomicUsize::new(0),
            epoch: Mutex::new(0),
            wake: Condvar::new(),
            helper_panicked: AtomicBool::new(false),
            limit: AtomicUsize::new(usize::MAX),
        }));
        let mut helpers = 0;
        for i in 1..threads.max(1) {
            let spawned = std::thread::Builder::new()
                .name(format!("llm-local-{i}"))
                .spawn(move || helper(shared));
            if spawned.is_ok() {
                helpers += 1;
            }
        }
        Pool {
            shared,
            helpers,
            adaptive: false,
            busy: Mutex::new(()),
        }
    }

    /// Threads that can work on one call, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers + 1
    }

    /// Calls `f` on disjoint ranges covering `0..n`, `chunk` items at a time.
    pub fn run(&self, n: usize, chunk: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        if self.helpers == 0 || n <= chunk {
            return f(0..n);
        }
        let limit = if self.adaptive {
            free_threads() - 1
        } else {
            self.helpers
        };
        if limit == 0 {
            return f(0..n);
        }
        // Helpers are busy with another generation's job: this one runs on its own core.
        let Ok(_busy) = self.busy.try_lock() else {
            return f(0..n);
        };
        let sh = self.shared;
        let job = Job {
            f,
            cursor: AtomicUsize::new(0),
            n,
            chunk,
        };
        // SAFETY (lifetime erasure): helpers dereference the pointer only between
        // entering (state has OPEN) and leaving; we return only after closing and after
        // every helper has left, so `job` outlives all uses.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        sh.job.store(ptr, Ordering::SeqCst);
        sh.limit.store(limit, Ordering::SeqCst);
        sh.seq.fetch_add(1, Ordering::SeqCst);
        sh.state.store(OPEN, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            *sh.epoch.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            sh.wake.notify_all();
        }
        job.work();
        sh.state.fetch_and(!OPEN, Ordering::SeqCst);
        let mut spins = 0u32;
        while sh.state.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        sh.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        if sh.helper_panicked.swap(false, Ordering::SeqCst) {
            panic!("an llm-local pool helper panicked");
        }
    }
}

/// Enters the open job `seq` if it is still open; true when entered.
fn try_enter(sh: &Shared, seq: u64) -> bool {
    let mut s = sh.state.load(Ordering::SeqCst);
    loop {
        if s & OPEN == 0
            || sh.seq.load(Ordering::SeqCst) != seq
            || s & !OPEN >= sh.limit.load(Ordering::SeqCst)
        {
            return false;
        }
        match sh
            .state
            .compare_exchange_weak(s, s + 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

fn helper(sh: &'static Shared) {
    let mut done_seq = 0u64;
    loop {
        let mut entered = None;
        for _ in 0..IDLE_SPINS {
            let seq = sh.seq.load(Ordering::SeqCst);
            if seq != done_seq && sh.state.load(Ordering::SeqCst) & OPEN != 0 {
                if try_enter(sh, seq) {
                    entered = Some(seq);
                }
                break;
            }
            std::hint::spin_loop();
        }
        if entered.is_none() {
            let mut epoch = sh.epoch.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = *epoch;
            // A job published before we counted as a sleeper is seen here; one published
            // after sees us and bumps the epoch under this lock.
            while *epoch == seen {
                let seq = sh.seq.load(Ordering::SeqCst);
                if seq != done_seq && sh.state.load(Ordering::SeqCst) & OPEN != 0 {
                    break;
                }
                epoch = sh.wake.wait(epoch).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(epoch);
            let seq = sh.seq.load(Ordering::SeqCst);
            if seq != done_seq && try_enter(sh, seq) {
                entered = Some(seq);
            }
        }
        let Some(seq) = entered else { continue };
        done_seq = seq;
        let ptr = sh.job.load(Ordering::SeqCst);
        if !ptr.is_null() {
            // SAFETY: we are inside the job (counted in state), so it is alive.
            let job = unsafe { &*ptr };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.work())).is_err() {
                sh.helper_panicked.store(true, Ordering::SeqCst);
            }
        }
        sh.state.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_item_is_done_exactly_once() {
        let pool = Pool::new(3);
        for n in [0usize, 1, 7, 100, 1000] {
            let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            pool.run(n, 3, &|r: Range<usize>| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn free_threads_is_between_one_and_the_cores() {
        for _ in 0..3 {
            let n = free_threads();
            assert!((1..=cores()).contains(&n), "{n}");
            std::thread::sleep(Duration::from_millis(260));
        }
        #[cfg(target_os = "linux")]
        assert!(cpu_times().is_some());
    }

    #[test]
    fn an_adaptive_pool_does_every_item_once() {
        let mut pool = Pool::new(2);
        pool.adaptive = true;
        let hits: Vec<AtomicU32> = (0..500).map(|_| AtomicU32::new(0)).collect();
        for _ in 0..20 {
            pool.run(500, 7, &|r: Range<usize>| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 20));
    }

    #[test]
    fn concurrent_callers_all_finish() {
        let pool = std::sync::Arc::new(Pool::new(2));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let total = AtomicUsize::new(0);
                    for _ in 0..200 {
                        pool.run(64, 4, &|r: Range<usize>| {
                            total.fetch_add(r.len(), Ordering::Relaxed);
                        });
                    }
                    total.into_inner()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 200 * 64);
        }
    }
}
