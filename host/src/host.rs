//! [`Host`]: one per process. It owns the wasmtime engine (and its epoch
//! ticker thread), the compiled components (one per distinct sha256, through
//! the on-disk cache) and the linkers for agents and hooks; every agent and
//! hook of a run, a team or a worker borrows it. Building an engine per agent
//! would start an engine and a thread for each of a team's thousand agents.

use crate::bindings::agent::AgentPre;
use crate::bindings::hook::HookPre;
use crate::engine::{self, Compiler, PluginFile, World};
use crate::hooks::HookState;
use crate::run::{AgentState, Components, RunOptions, RunOutcome};
use crate::spec::{PluginPin, RunSpec};
use crate::BadInput;
use anyhow::Result;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;

/// The process's wasm host. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    compiler: Compiler,
    agent_linker: Linker<AgentState>,
    hook_linker: Linker<HookState>,
    agents: Mutex<HashMap<String, Arc<AgentPre<AgentState>>>>,
    hooks: Mutex<HashMap<String, Arc<HookPre<HookState>>>>,
}

/// An agent component ready to instantiate.
pub struct LoadedAgent {
    /// The template every instance starts from.
    pub pre: Arc<AgentPre<AgentState>>,
    /// The sha256 of the file's bytes.
    pub sha256: String,
    /// Whether the compiled artifact came from the cache (this process or disk).
    pub cached: bool,
    /// Time spent compiling (zero from the cache).
    pub compile_time: Duration,
}

impl Host {
    /// A host with the compiled-artifact cache in its default place
    /// (`$BUDGET_HOST_CACHE`, else `$XDG_CACHE_HOME/budget-host`, else `~/.cache/budget-host`).
    pub fn new() -> Result<Host> {
        Host::with_cache_dir(engine::default_cache_dir())
    }

    /// A host caching compiled artifacts in `dir` (`None`: no disk cache).
    pub fn with_cache_dir(dir: Option<PathBuf>) -> Result<Host> {
        Host::with_engine(engine::new_engine()?, dir)
    }

    /// A host on an engine the caller configured (from [`engine::engine_config`],
    /// with its epoch ticker from [`engine::engine_from`]; benchmarks switch fuel off).
    pub fn with_engine(engine: wasmtime::Engine, dir: Option<PathBuf>) -> Result<Host> {
        let agent_linker = crate::run::state::linker(&engine)?;
        let hook_linker = crate::hooks::store::linker(&engine)?;
        Ok(Host {
            inner: Arc::new(Inner {
                compiler: Compiler::new(engine, dir),
                agent_linker,
                hook_linker,
                agents: Mutex::new(HashMap::new()),
                hooks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The engine every store of this host uses.
    pub fn engine(&self) -> &wasmtime::Engine {
        self.inner.compiler.engine()
    }

    /// Read a plugin and check its pin (before anything compiles it).
    fn read(&self, pin: &PluginPin) -> Result<PluginFile, BadInput> {
        let plugin = PluginFile::read(&pin.path).map_err(BadInput::from)?;
        let by = pin.by.as_deref().unwrap_or("the run's checkpoint");
        crate::integrity::check_pin(&pin.path, &plugin.sha256, pin.sha256.as_deref(), Some(by)).map_err(|e| BadInput(e.to_string()))?;
        Ok(plugin)
    }

    /// Compile (once per distinct sha256 in this process) and check the world.
    fn compile(&self, plugin: &PluginFile, world: World) -> Result<(wasmtime::component::Component, bool, Duration), BadInput> {
        let started = Instant::now();
        let (component, cached) = self.inner.compiler.load(plugin).map_err(BadInput::from)?;
        let took = if cached { Duration::ZERO } else { started.elapsed() };
        engine::check_world(self.engine(), &component, world, &plugin.path).map_err(BadInput::from)?;
        Ok((component, cached, took))
    }

    /// Load an agent: its bytes checked against `pin`, compiled, pre-instantiated.
    pub fn load_agent(&self, pin: &PluginPin) -> Result<LoadedAgent, BadInput> {
        let plugin = self.read(pin)?;
        if let Some(pre) = self.inner.agents.lock().unwrap_or_else(|p| p.into_inner()).get(&plugin.sha256) {
            return Ok(LoadedAgent { pre: pre.clone(), sha256: plugin.sha256, cached: true, compile_time: Duration::ZERO });
        }
        let (component, cached, compile_time) = self.compile(&plugin, World::Agent)?;
        let path = plugin.path.display();
        let pre = self
            .inner
            .agent_linker
            .instantiate_pre(&component)
            .map_err(|e| BadInput(format!("{path} needs imports this host does not provide: {e:#}")))?;
        let pre = Arc::new(AgentPre::new(pre).map_err(|e| BadInput(format!("{path}: {e:#}")))?);
        self.inner.agents.lock().unwrap_or_else(|p| p.into_inner()).insert(plugin.sha256.clone(), pre.clone());
        Ok(LoadedAgent { pre, sha256: plugin.sha256, cached, compile_time })
    }

    /// Load a hook: its bytes checked against `pin`, compiled, pre-instantiated.
    pub fn load_hook(&self, pin: &PluginPin) -> Result<(String, Arc<HookPre<HookState>>), BadInput> {
        let plugin = self.read(pin)?;
        if let Some(pre) = self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner()).get(&plugin.sha256) {
            return Ok((plugin.sha256, pre.clone()));
        }
        let (component, _, _) = self.compile(&plugin, World::Hook)?;
        let path = plugin.path.display();
        let pre = self
            .inner
            .hook_linker
            .instantiate_pre(&component)
            .map_err(|e| BadInput(format!("hook {path} needs imports this host does not grant: {e:#}")))?;
        let pre = Arc::new(HookPre::new(pre).map_err(|e| BadInput(format!("hook {path}: {e:#}")))?);
        self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner()).insert(plugin.sha256.clone(), pre.clone());
        Ok((plugin.sha256, pre))
    }

    /// Load every plugin of `spec` (each checked against its pin).
    pub fn components(&self, spec: &RunSpec) -> Result<Components, BadInput> {
        let agent = self.load_agent(&spec.agent)?;
        let mut hooks = Vec::new();
        for h in &spec.hooks {
            let (sha, pre) = self.load_hook(&h.plugin)?;
            hooks.push((h.name.clone(), sha, pre));
        }
        Ok(Components {
            engine: self.engine().clone(),
            agent: agent.pre,
            agent_sha256: agent.sha256,
            cached: agent.cached,
            compile_time: agent.compile_time,
            hooks,
        })
    }

    /// Run `spec` to its end with `opts` (its provider, output and signals).
    /// `Err` is a failure before the run started; bad input is a [`BadInput`].
    pub async fn run(&self, spec: RunSpec, opts: RunOptions) -> Result<RunOutcome> {
        let components = self.components(&spec)?;
        crate::run::run_agent(components, spec, opts).await
    }

    /// What a component is, for `host validate`: its world, if any.
    pub fn world_of(&self, plugin: &PluginFile) -> Result<(wasmtime::component::Component, Option<World>), BadInput> {
        let (component, _) = self.inner.compiler.load(plugin).map_err(BadInput::from)?;
        let world = engine::detect_world(self.engine(), &component);
        Ok((component, world))
    }

    /// Whether this host can instantiate `component` as an agent (all its imports granted).
    pub fn check_agent_imports(&self, component: &wasmtime::component::Component) -> Result<(), String> {
        self.inner.agent_linker.instantiate_pre(component).map(|_| ()).map_err(|e| format!("{e:#}"))
    }

    /// Whether this host can instantiate `component` as a hook.
    pub fn check_hook_imports(&self, component: &wasmtime::component::Component) -> Result<(), String> {
        self.inner.hook_linker.instantiate_pre(component).map(|_| ()).map_err(|e| format!("{e:#}"))
    }
}
