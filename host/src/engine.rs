//! wasmtime: engine configuration, the compiled-artifact cache, component checks.
//!
//! The engine knows nothing of money. It compiles each component once and keeps
//! the artifact on disk keyed by the wasm's sha256 and the engine's build, so a
//! second start skips Cranelift. A cache entry that is corrupt or from another
//! host build is detected and rebuilt, never loaded.

use crate::bindings::{WIT_PACKAGE, WIT_VERSION};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch ticks: the resolution of timeouts and immediate interrupts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub fn new_engine() -> Result<Engine> {
    engine_from(&engine_config())
}

/// The host's wasmtime configuration: fuel metering and epoch interruption on.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    // Bounded native stack per guest: deep recursion traps instead of crashing the host.
    config.max_wasm_stack(1 << 20);
    // No component-model concurrency (streams, futures, `run_concurrent`): the
    // host calls guests one export at a time. With it on, every component call
    // (each hook event, each `llm.complete`) sets up and tears down a guest
    // task in the store's concurrent state; off, a hook call costs a fraction
    // (BENCHMARKS.md, per-call overhead).
    config.concurrency_support(false);
    config
}

/// An engine for `config` with its epoch ticker running (the benchmarks
/// build one with fuel off this way).
pub fn engine_from(config: &Config) -> Result<Engine> {
    let engine = Engine::new(config)?;
    // One ticker per engine: drives timeouts and immediate interrupts.
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })?;
    Ok(engine)
}

/// What kind of wasm binary a file is, read from its preamble.
#[derive(Debug, PartialEq, Eq)]
pub enum WasmKind {
    Component,
    CoreModule,
    NotWasm,
}

pub fn wasm_kind(bytes: &[u8]) -> WasmKind {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return WasmKind::NotWasm;
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => WasmKind::CoreModule,
        [_, _, 1, 0] => WasmKind::Component,
        _ => WasmKind::NotWasm,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A plugin read from disk, with its hash.
pub struct PluginFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl PluginFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        match wasm_kind(&bytes) {
            WasmKind::Component => {}
            WasmKind::CoreModule => bail!(
                "{} is a core wasm module, not a component: build it for wasm32-wasip2 or wrap it with a component adapter",
                path.display()
            ),
            WasmKind::NotWasm => bail!("{} is not a WebAssembly file", path.display()),
        }
        let sha256 = sha256_hex(&bytes);
        Ok(PluginFile { path: path.to_path_buf(), bytes, sha256 })
    }
}

/// Compiles components, through an on-disk cache when one is configured.
pub struct Compiler {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

/// Where compiled artifacts live: `$BUDGET_HOST_CACHE`, else `$XDG_CACHE_HOME/budget-host`,
/// else `~/.cache/budget-host`. `None` disables the cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BUDGET_HOST_CACHE") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("budget-host"))
}

impl Compiler {
    pub fn new(engine: Engine, cache_dir: Option<PathBuf>) -> Self {
        Compiler { engine, cache_dir }
    }

    /// The cache directory, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Cache key: the wasm's hash plus everything that makes an artifact loadable
    /// only by this exact engine (wasmtime version, config, target) and host version.
    fn key(&self, sha256: &str) -> String {
        self.key_for(sha256, env!("CARGO_PKG_VERSION"))
    }

    fn key_for(&self, sha256: &str, host_version: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        host_version.hash(&mut h);
        format!("{sha256}-{:016x}.cwasm", h.finish())
    }

    fn artifact_path(&self, sha256: &str) -> Option<PathBuf> {
        Some(self.cache_dir.as_ref()?.join(self.key(sha256)))
    }

    /// Compile (or load from cache) and return the component and whether the
    /// cache hit. The caller checks the plugin's pin first.
    pub fn load(&self, plugin: &PluginFile) -> Result<(Component, bool)> {
        let path = self.artifact_path(&plugin.sha256);
        if let Some(p) = &path {
            if let Some(c) = self.load_cached(p) {
                return Ok((c, true));
            }
        }
        let component = Component::new(&self.engine, &plugin.bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a valid component: {e:#}", plugin.path.display()))?;
        if let Some(p) = &path {
            // A cache we cannot write only costs speed; never fail a run for it.
            let _ = self.store_cached(p, &component);
        }
        Ok((component, false))
    }

    /// Entries are `sha256(key ++ body) ++ body`, the key being the entry's
    /// name (the wasm's sha256, this engine and host version): a flipped bit,
    /// or an entry filed under another wasm or another host build's name, is
    /// caught before wasmtime sees it.
    fn load_cached(&self, path: &Path) -> Option<Component> {
        let data = std::fs::read(path).ok()?;
        let key = path.file_name()?.to_string_lossy();
        let Some(body) = unseal(&key, &data) else {
            let _ = std::fs::remove_file(path);
            return None;
        };
        // SAFETY: the bytes were written by `store_cached` for this wasm, engine
        // build and host version (the key their checksum covers), and wasmtime
        // checks its own version and configuration again in `deserialize`.
        match unsafe { Component::deserialize(&self.engine, body) } {
            Ok(c) => Some(c),
            Err(_) => {
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn store_cached(&self, path: &Path, component: &Component) -> Result<()> {
        let key = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        write_atomic(path, &seal(&key, &component.serialize()?))
    }

}

fn seal_digest(key: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

fn seal(key: &str, body: &[u8]) -> Vec<u8> {
    let mut data = seal_digest(key, body).to_vec();
    data.extend_from_slice(body);
    data
}

/// The body of a sealed entry, if it was sealed under `key` and is intact.
fn unseal<'a>(key: &str, data: &'a [u8]) -> Option<&'a [u8]> {
    (data.len() >= 32 && seal_digest(key, &data[32..]) == data[..32]).then(|| &data[32..])
}

pub use crate::durable::write_atomic;

/// A trap's cause and where it happened, on one line: wasmtime's text is the
/// context "error while executing at wasm backtrace:", the frames, then the
/// cause. Keeps the cause and the first three frames.
pub fn trap_reason(text: &str) -> String {
    let mut frames = Vec::new();
    let mut cause = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("error while executing at wasm backtrace") || line.starts_with("note:") || line == "Caused by:" {
            continue;
        }
        let is_frame = line.split_once(':').is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if is_frame {
            if frames.len() < 3 {
                // `0: 0x1234 - name!func` -> `name!func`
                let f = line.split_once(" - ").map(|(_, f)| f).unwrap_or(line);
                frames.push(f.to_string());
            }
            // The cause may follow the last frame on its line (`{:#}` joins the chain with ': ').
            if let Some(i) = line.find("wasm trap: ") {
                cause = Some(line[i..].to_string());
            }
        } else {
            cause = Some(line.trim_start_matches("wasm backtrace:").trim().to_string());
        }
    }
    let cause = cause.unwrap_or_else(|| text.lines().next().unwrap_or("").to_string());
    if frames.is_empty() {
        cause
    } else {
        format!("{cause} (at {})", frames.join(" < "))
    }
}

/// Which of our worlds a component implements, from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Agent,
    Hook,
}

impl World {
    pub fn name(&self) -> &'static str {
        match self {
            World::Agent => "agent",
            World::Hook => "hook",
        }
    }
    fn export(&self) -> &'static str {
        match self {
            World::Agent => "run",
            World::Hook => "policy",
        }
    }
}

/// The component's imports and exports by name.
pub struct Surface {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub fn surface(engine: &Engine, c: &Component) -> Surface {
    let ty = c.component_type();
    Surface {
        imports: ty.imports(engine).map(|(n, _)| n.to_string()).collect(),
        exports: ty.exports(engine).map(|(n, _)| n.to_string()).collect(),
    }
}

/// Check that a component exports `want`'s interface at a compatible version,
/// naming what is missing or mismatched.
pub fn check_world(engine: &Engine, c: &Component, want: World, path: &Path) -> Result<()> {
    let s = surface(engine, c);
    let iface = format!("{WIT_PACKAGE}/{}", want.export());
    let major = WIT_VERSION.split('.').take(2).collect::<Vec<_>>().join(".");
    match s.exports.iter().find(|e| e.starts_with(&format!("{iface}@"))) {
        Some(e) => {
            let version = e.rsplit('@').next().unwrap_or("");
            // 0.x: the minor number is the major for semver purposes.
            if !version.starts_with(&format!("{major}.")) && version != major {
                bail!(
                    "{} implements the {} world of WIT {WIT_PACKAGE}@{version}, but this host speaks {WIT_PACKAGE}@{WIT_VERSION}; rebuild it against this host's wit/",
                    path.display(),
                    want.name()
                );
            }
            Ok(())
        }
        None => {
            let found = if s.exports.is_empty() { "nothing".to_string() } else { s.exports.join(", ") };
            let other = match want {
                World::Agent => World::Hook,
                World::Hook => World::Agent,
            };
            let hint = if s.exports.iter().any(|e| e.starts_with(&format!("{WIT_PACKAGE}/{}@", other.export()))) {
                format!(" (it is a {}, not an {})", other.name(), want.name())
            } else {
                String::new()
            };
            bail!(
                "{} does not implement the {} world: it must export {iface}@{WIT_VERSION}, but exports {found}{hint}",
                path.display(),
                want.name()
            )
        }
    }
}

/// The world a component implements, if any.
pub fn detect_world(engine: &Engine, c: &Component) -> Option<World> {
    let s = surface(engine, c);
    [World::Agent, World::Hook]
        .into_iter()
        .find(|w| s.exports.iter().any(|e| e.starts_with(&format!("{WIT_PACKAGE}/{}@", w.export()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_wasm_kinds_apart() {
        assert_eq!(wasm_kind(b"\0asm\x01\0\0\0"), WasmKind::CoreModule);
        assert_eq!(wasm_kind(b"\0asm\x0d\0\x01\0"), WasmKind::Component);
        assert_eq!(wasm_kind(b"hello world"), WasmKind::NotWasm);
        assert_eq!(wasm_kind(b""), WasmKind::NotWasm);
    }

    #[test]
    fn cache_rebuilds_corrupt_entries() {
        let dir = tempfile::tempdir().unwrap();
        let engine = new_engine().unwrap();
        let compiler = Compiler::new(engine, Some(dir.path().to_path_buf()));
        let wat = r#"(component)"#;
        let bytes = wat::parse_str(wat).unwrap();
        let plugin = PluginFile { path: "x.wasm".into(), sha256: sha256_hex(&bytes), bytes };
        let (_, hit) = compiler.load(&plugin).unwrap();
        assert!(!hit);
        let (_, hit) = compiler.load(&plugin).unwrap();
        assert!(hit);
        // Flip a bit in the artifact: detected, rebuilt, not loaded.
        let entry = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let mut data = std::fs::read(&entry).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&entry, data).unwrap();
        let (_, hit) = compiler.load(&plugin).unwrap();
        assert!(!hit);
        let (_, hit) = compiler.load(&plugin).unwrap();
        assert!(hit);
    }

    fn wat_plugin(wat: &str) -> PluginFile {
        let bytes = wat::parse_str(wat).unwrap();
        PluginFile { path: "x.wasm".into(), sha256: sha256_hex(&bytes), bytes }
    }

    /// Two components told apart by their imports.
    fn a_and_b() -> (PluginFile, PluginFile) {
        (wat_plugin("(component)"), wat_plugin(r#"(component (import "b" (func)))"#))
    }

    fn imports(c: &Compiler, comp: &Component) -> Vec<String> {
        surface(c.engine(), comp).imports
    }

    #[test]
    fn cache_rebuilds_artifacts_of_another_engine_build() {
        let dir = tempfile::tempdir().unwrap();
        let compiler = Compiler::new(new_engine().unwrap(), Some(dir.path().to_path_buf()));
        let (a, _) = a_and_b();
        // Another build: same wasmtime, other settings (no fuel metering), its
        // artifact sealed under this build's name with a valid checksum.
        let mut other = Config::new();
        other.consume_fuel(false);
        let foreign = Component::new(&Engine::new(&other).unwrap(), &a.bytes).unwrap().serialize().unwrap();
        let key = compiler.key(&a.sha256);
        std::fs::write(dir.path().join(&key), seal(&key, &foreign)).unwrap();
        let (_, hit) = compiler.load(&a).unwrap();
        assert!(!hit, "wasmtime refused it and it was rebuilt");
        assert_ne!(std::fs::read(dir.path().join(&key)).unwrap()[32..], foreign[..], "replaced by this build's artifact");
        assert!(compiler.load(&a).unwrap().1);
    }

    #[test]
    fn cache_never_loads_an_entry_of_another_host_version_or_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let compiler = Compiler::new(new_engine().unwrap(), Some(dir.path().to_path_buf()));
        let (a, b) = a_and_b();
        let b_body = Component::new(compiler.engine(), &b.bytes).unwrap().serialize().unwrap();
        // B's valid artifact, sealed as another host version's entry for A: never looked up.
        let other_version = compiler.key_for(&a.sha256, "0.0.0-another-host");
        assert_ne!(other_version, compiler.key(&a.sha256));
        std::fs::write(dir.path().join(&other_version), seal(&other_version, &b_body)).unwrap();
        let (comp, hit) = compiler.load(&a).unwrap();
        assert!(!hit);
        assert!(imports(&compiler, &comp).is_empty(), "A, not B");
        // The same entry copied under this version's name for A: its seal names
        // another key, so it is refused and rebuilt, never loaded as A.
        let key = compiler.key(&a.sha256);
        std::fs::copy(dir.path().join(&other_version), dir.path().join(&key)).unwrap();
        let (comp, hit) = compiler.load(&a).unwrap();
        assert!(!hit);
        assert!(imports(&compiler, &comp).is_empty(), "A, not B");
        // And B's own entry, renamed to A's: refused too.
        compiler.load(&b).unwrap();
        std::fs::copy(dir.path().join(compiler.key(&b.sha256)), dir.path().join(&key)).unwrap();
        let (comp, hit) = compiler.load(&a).unwrap();
        assert!(!hit);
        assert!(imports(&compiler, &comp).is_empty(), "A, not B");
        let (comp, hit) = compiler.load(&b).unwrap();
        assert!(hit);
        assert_eq!(imports(&compiler, &comp), ["b"]);
    }
}
