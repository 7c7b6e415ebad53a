//! `wit-tool`: the few `wit-bindgen`/`wasm-tools` commands the C, JS and Python
//! plugin builds need, as one small binary built with the workspace.
//!
//! - `c-bindings`: C header, source and component-type object for a world.
//! - `componentize`: core wasm module (+ preview1 adapter) -> component.
//! - `world`: decode a component and list what it imports and exports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use wasi_preview1_component_adapter_provider as adapters;
use wit_component::{ComponentEncoder, DecodedWasm, StringEncoding, WitPrinter};
use wit_parser::{Resolve, WorldId, WorldItem};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate C bindings (`<world>.h`, `<world>.c`, `<world>_component_type.o`).
    CBindings {
        /// WIT directory or file.
        #[arg(long)]
        wit: PathBuf,
        /// World to generate bindings for.
        #[arg(long)]
        world: String,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn a core wasm module into a component.
    Componentize {
        /// Core wasm module built for wasm32-wasi (preview1).
        module: PathBuf,
        /// Output component.
        #[arg(short, long)]
        output: PathBuf,
        /// Embed this WIT world's type information first (needed when the module
        /// was built without a component-type section).
        #[arg(long, requires = "world")]
        wit: Option<PathBuf>,
        #[arg(long, requires = "wit")]
        world: Option<String>,
        /// Which wasi_snapshot_preview1 adapter to use for the module's WASI imports.
        #[arg(long, value_enum, default_value_t = Adapter::Reactor)]
        adapter: Adapter,
    },
    /// Print a component's imports and exports (or its whole world with `--wit`).
    World {
        component: PathBuf,
        /// Print the decoded WIT instead of the import/export list.
        #[arg(long)]
        wit: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Adapter {
    /// Library-style module: exports are called repeatedly, no `_start`.
    Reactor,
    /// Module with a `_start` entry point.
    Command,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("wit-tool: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::CBindings { wit, world, out } => c_bindings(&wit, &world, &out),
        Command::Componentize { module, output, wit, world, adapter } => {
            componentize(&module, &output, wit.as_deref().zip(world.as_deref()), adapter)
        }
        Command::World { component, wit } => print_world(&component, wit),
    }
}

fn load_world(wit: &Path, world: &str) -> Result<(Resolve, WorldId)> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("failed to parse WIT at {}", wit.display()))?;
    let id = resolve.select_world(&[pkg], Some(world))?;
    Ok((resolve, id))
}

fn c_bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let (resolve, id) = load_world(wit, world)?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&resolve, id, &mut files)?;
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn componentize(
    module: &Path,
    output: &Path,
    wit: Option<(&Path, &str)>,
    adapter: Adapter,
) -> Result<()> {
    let mut core =
        std::fs::read(module).with_context(|| format!("failed to read {}", module.display()))?;
    if wasmparser::Parser::is_component(&core) {
        bail!("{} is already a component", module.display());
    }
    if let Some((wit, world)) = wit {
        let (resolve, id) = load_world(wit, world)?;
        wit_component::embed_component_metadata(&mut core, &resolve, id, StringEncoding::UTF8)?;
    }
    let adapter_bytes = match adapter {
        Adapter::Reactor => adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        Adapter::Command => adapters::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    // wit-component only splices the adapter in if the module imports preview1.
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&core)?
        .adapter(adapters::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter_bytes)?
        .encode()
        .with_context(|| format!("failed to componentize {}", module.display()))?;
    std::fs::write(output, component)
        .with_context(|| format!("failed to write {}", output.display()))?;
    Ok(())
}

fn print_world(component: &Path, full_wit: bool) -> Result<()> {
    let bytes = std::fs::read(component)
        .with_context(|| format!("failed to read {}", component.display()))?;
    if !wasmparser::Parser::is_component(&bytes) {
        bail!("{} is a core module, not a component", component.display());
    }
    let (resolve, world) = match wit_component::decode(&bytes)? {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => bail!("{} is a WIT package, not a component", component.display()),
    };
    if full_wit {
        let mut printer = WitPrinter::default();
        let ids = resolve.packages.iter().map(|(id, _)| id).collect::<Vec<_>>();
        let main = resolve.worlds[world].package.context("decoded world has no package")?;
        let nested = ids.into_iter().filter(|id| *id != main).collect::<Vec<_>>();
        printer.print(&resolve, main, &nested)?;
        print!("{}", printer.output);
        return Ok(());
    }
    let w = &resolve.worlds[world];
    for (dir, items) in [("import", &w.imports), ("export", &w.exports)] {
        for (key, item) in items.iter() {
            let kind = match item {
                WorldItem::Interface { .. } => "interface",
                WorldItem::Function(_) => "func",
                WorldItem::Type(_) => continue,
            };
            println!("{dir} {kind} {}", resolve.name_world_key(key));
        }
    }
    Ok(())
}
