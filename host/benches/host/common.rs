//! What every benchmark shares: plugin paths, an instant in-process provider,
//! a run configuration, a runtime, and a standalone agent (the host's own
//! `agent_linker`, `RunShared` and `new_state`, outside `run_agent`).

use budget_host::bindings::agent::{Agent, AgentPre};
use budget_host::llm::{ChatRequest, ChatResponse, Provider, ProviderError, Usage};
use budget_host::run::AgentState;
use budget_host::spec::{HookSpec, ProviderKind};
use budget_host::{Host, RunOptions, RunSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// A priced model, so reserve and settle do real arithmetic.
pub const MODEL: &str = "gpt-4o-mini";
/// Far more than any benchmark spends (each call costs a few micro-dollars).
pub const BUDGET_NANOS: u64 = 1_000 * 1_000_000_000;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built plugin, or a clear message saying how to build it.
pub fn plugin(name: &str) -> PathBuf {
    let p = repo().join("plugins").join(name).join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `make bench` (it builds the plugins) or `make plugins`",
        p.display()
    );
    p
}

/// Scratch space on the same disk as the build (so fsync is a real fsync).
pub fn scratch(name: &str) -> PathBuf {
    let d = tmp().join("bench").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The compiled-artifact cache the benches share across runs.
pub fn cache_dir() -> PathBuf {
    tmp().join("bench-cache")
}

/// Where figures that criterion does not keep (RSS) are saved for `bench_report`.
#[allow(dead_code)]
pub fn results_dir() -> PathBuf {
    let d = tmp().join("bench-results");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Cargo's scratch directory for benches (`target/tmp`); examples, which do
/// not get one, use the same place.
fn tmp() -> PathBuf {
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => repo().join("target").join("tmp"),
    }
}

/// The binary's runtime: multi-threaded, everything enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Answers at once with a fixed reply and real usage. It records the instant
/// of two chosen calls (by `call_index`) so a benchmark can time the calls
/// between them without any clock read on the other calls.
pub struct InstantProvider {
    calls: AtomicU64,
    /// Wall clock and the calling thread's CPU clock at the first and last marked call.
    marks: Mutex<[Option<(Instant, Duration)>; 2]>,
    mark_at: [u64; 2],
    /// Told once the first call arrives (the agent is running).
    on_first: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl InstantProvider {
    pub fn new() -> Arc<Self> {
        Self::marking(u64::MAX, u64::MAX)
    }

    /// Record the instants of calls number `first` and `last` (0-based).
    pub fn marking(first: u64, last: u64) -> Arc<Self> {
        Arc::new(InstantProvider {
            calls: AtomicU64::new(0),
            marks: Mutex::new([None, None]),
            mark_at: [first, last],
            on_first: Mutex::new(None),
        })
    }

    pub fn notify_first_call(&self, tx: std::sync::mpsc::Sender<()>) {
        *self.on_first.lock().unwrap() = Some(tx);
    }

    /// Wall time and CPU time of the calling thread between the two marked
    /// calls. The whole call path runs on that thread (the guest's fiber, the
    /// import, the hooks, the provider), so the CPU figure is the path's cost
    /// without the time other processes took the core away.
    pub fn marked_span(&self) -> (Duration, Duration) {
        let m = self.marks.lock().unwrap();
        match (m[0], m[1]) {
            (Some(a), Some(b)) => (b.0 - a.0, b.1 - a.1),
            _ => panic!("the marked calls did not happen ({} calls made)", self.calls.load(Ordering::SeqCst)),
        }
    }
}

#[async_trait::async_trait]
impl Provider for InstantProvider {
    fn name(&self) -> &'static str {
        "instant"
    }
    fn describe(&self) -> String {
        "in-process instant provider (benchmark)".into()
    }
    fn is_paid(&self) -> bool {
        true
    }
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if n == self.mark_at[0] || n == self.mark_at[1] {
            let now = (Instant::now(), thread_cpu_time());
            let mut m = self.marks.lock().unwrap();
            m[(n == self.mark_at[1]) as usize] = Some(now);
        }
        if n == 0 {
            if let Some(tx) = self.on_first.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
        Ok(ChatResponse {
            text: "ok".into(),
            model: req.model.clone(),
            usage: Some(Usage { input_tokens: 12, output_tokens: 2, cached_tokens: 0 }),
            finish_reason: "stop".into(),
        })
    }
}

/// A run as `host run` builds it (quiet, one cycle, priced), answered by
/// `provider`, with the benches' artifact cache.
pub fn config(agent: PathBuf, task: &str, provider: Arc<dyn Provider>, dir: &Path, log: PathBuf, hooks: &[(PathBuf, &str)]) -> (RunSpec, RunOptions) {
    let mut b = RunSpec::builder(agent).budget_nanos(BUDGET_NANOS).task(task).max_cycles(1).provider(ProviderKind::Openai).model(MODEL);
    for (path, cfg) in hooks {
        let text = if cfg.is_empty() { path.display().to_string() } else { format!("{}={cfg}", path.display()) };
        b = b.hook(HookSpec::parse(&text).unwrap());
    }
    let opts = RunOptions::new(provider).checkpoint_dir(dir.join("checkpoints")).log(log);
    (b.build().unwrap(), opts)
}

/// The benches' host: one per process, its compiled artifacts in the benches' cache.
pub fn host() -> Host {
    Host::with_cache_dir(Some(cache_dir())).unwrap()
}

/// The pieces `run_agent` builds before its first instance, for benchmarks
/// that drive stores themselves: same engine, linker, host state and limits.
pub struct Standalone {
    pub host: Host,
    pub pre: Arc<AgentPre<AgentState>>,
    pub spec: RunSpec,
    pub opts: RunOptions,
    pub fuel: bool,
}

impl Standalone {
    /// `engine` decides fuel; the component comes from the shared artifact cache.
    pub fn new(engine: wasmtime::Engine, fuel: bool, agent: &str, dir: &Path) -> Standalone {
        let host = Host::with_engine(engine, Some(cache_dir())).unwrap();
        let (spec, opts) = config(plugin(agent), "", InstantProvider::new(), dir, PathBuf::from("/dev/null"), &[]);
        let pre = host.load_agent(&spec.agent).unwrap().pre;
        Standalone { host, pre, spec, opts, fuel }
    }

    /// A store set up the way `run_agent` sets up the agent's.
    pub fn store(&self) -> Store<AgentState> {
        let mut store = budget_host::run::standalone_store(self.host.engine(), self.spec.clone(), &self.opts).unwrap();
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        store.set_epoch_deadline(1);
        store
    }

    /// A fresh store and an instance in it (the step `run_agent` takes per agent).
    pub async fn instantiate(&self) -> (Store<AgentState>, Agent) {
        let mut store = self.store();
        let agent = self.pre.instantiate_async(&mut store).await.unwrap();
        (store, agent)
    }
}

/// The host's engine configuration with fuel metering switched off (same
/// epoch interruption, same ticker).
pub fn engine_without_fuel() -> wasmtime::Engine {
    let mut config = budget_host::engine::engine_config();
    config.consume_fuel(false);
    budget_host::engine::engine_from(&config).unwrap()
}
