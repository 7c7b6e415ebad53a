//! The small verbs: `validate` (what a component is and whether this host
//! runs it), `lock` (a lock file of plugins' sha256) and `precompile` (fill
//! the compiled-artifact cache). Each prints for a person and returns.

use crate::engine::{self, PluginFile, World};
use crate::host::Host;
use crate::BadInput;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// `host validate FILE`: the component's world, imports and exports, and whether this host can run it.
pub fn validate(host: &Host, file: &Path) -> Result<()> {
    let plugin = PluginFile::read(file).map_err(BadInput::from)?;
    let (component, world) = host.world_of(&plugin)?;
    let Some(world) = world else {
        engine::check_world(host.engine(), &component, World::Agent, file).map_err(BadInput::from)?;
        unreachable!("check_world fails when no world is detected");
    };
    engine::check_world(host.engine(), &component, world, file).map_err(BadInput::from)?;
    let s = engine::surface(host.engine(), &component);
    println!("{}: {} component, WIT {}@{}", file.display(), world.name(), crate::bindings::WIT_PACKAGE, crate::bindings::WIT_VERSION);
    println!("sha256: {}", plugin.sha256);
    println!("imports:");
    for i in &s.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &s.exports {
        println!("  {e}");
    }
    let granted = match world {
        World::Agent => host.check_agent_imports(&component),
        World::Hook => host.check_hook_imports(&component),
    };
    granted.map_err(|e| BadInput(format!("{} needs imports this host does not grant: {e}", file.display())))?;
    println!("ok: this host can run it");
    Ok(())
}

/// `host lock FILES [-o OUT]`: each plugin's sha256 (each must be a component) in a lock file.
pub fn lock(plugins: &[PathBuf], output: Option<&Path>) -> Result<()> {
    use crate::integrity;
    let mut pinned = Vec::new();
    for p in plugins {
        let plugin = PluginFile::read(p).map_err(BadInput::from)?;
        pinned.push((plugin.path, plugin.sha256));
    }
    let out = output.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("host.lock"));
    let text = serde_json::to_string_pretty(&integrity::lock_for(&out, &pinned))? + "\n";
    match output {
        Some(o) => {
            crate::durable::write_atomic(o, text.as_bytes())
                .map_err(|e| integrity::IntegrityError::WriteLock { path: o.display().to_string(), detail: format!("{e:#}") })?;
            eprintln!("wrote {} ({} plugin{})", o.display(), pinned.len(), if pinned.len() == 1 { "" } else { "s" });
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `host precompile FILE`: compile into the sealed cache (valid for this host build on this
/// machine only). It writes no artifact elsewhere: loading one would be loading native code.
pub fn precompile(host: &Host, file: &Path) -> Result<()> {
    let plugin = PluginFile::read(file).map_err(BadInput::from)?;
    let (component, world) = host.world_of(&plugin)?;
    let world = world.ok_or_else(|| BadInput(format!("{} implements neither the agent nor the hook world", file.display())))?;
    engine::check_world(host.engine(), &component, world, file).map_err(BadInput::from)?;
    println!("{}: {} ({}), compiled into the cache (valid for this host build on this machine only)", file.display(), world.name(), &plugin.sha256[..12]);
    Ok(())
}
