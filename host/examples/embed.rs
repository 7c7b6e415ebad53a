//! Run an agent from Rust: one `Host`, a `RunSpec`, a provider, the outcome.
//! `cargo run -p host --example embed` (after `make plugins`); `make test` runs it.

use budget_host::llm::scripted::Scripted;
use budget_host::{budget::fmt_usd, Host, RunOptions, RunSpec};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = Host::new()?;
    let spec = RunSpec::builder(root.join("plugins/essay-agent/essay-agent.wasm"))
        .budget_usd(0.10)
        .model("gpt-4o")
        .max_tokens(2000)
        .build()?;
    let provider = Arc::new(Scripted::load(&root.join("tests/fixtures/essay-gpt4o.json").to_string_lossy()).map_err(anyhow::Error::msg)?);
    let dir = tempfile_dir()?;
    let outcome = host.run(spec, RunOptions::new(provider).checkpoint_dir(&dir)).await?;
    println!("status: {:?}, exit code {}", outcome.status, outcome.exit_code());
    println!("spent {} of {} in {} calls", fmt_usd(outcome.ledger.spent), fmt_usd(outcome.ledger.limit), outcome.ledger.calls);
    if let Some(i) = &outcome.interrupt {
        println!("stopped by {}: {}", i.source.as_str(), i.message);
    }
    assert!(outcome.ledger.spent <= outcome.ledger.limit, "never past the limit");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A scratch directory for the example's checkpoints and log.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("budget-host-embed-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
