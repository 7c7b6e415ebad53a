//! `budget-host`: a WebAssembly plugin host for budget-limited LLM agents.
//!
//! Agents and budget hooks are WebAssembly components (WIT in `wit/`). Every
//! LLM call a guest makes goes through the host, which prices it, reserves
//! the worst case, calls the provider, settles the real cost, asks the hooks,
//! logs it and stops the run at the limit.
//!
//! Embedding it takes a [`Host`] (one per process), a [`RunSpec`] (what the
//! run is) and [`RunOptions`] (its provider and where output goes):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use budget_host::{llm::scripted::Scripted, Host, RunOptions, RunSpec};
//! let host = Host::new()?;
//! let spec = RunSpec::builder("plugins/essay-agent/essay-agent.wasm").budget_usd(0.10).model("gpt-4o").build()?;
//! let provider = std::sync::Arc::new(Scripted::load("tests/fixtures/essay-gpt4o.json").map_err(anyhow::Error::msg)?);
//! let outcome = host.run(spec, RunOptions::new(provider).checkpoint_dir("/tmp/ck")).await?;
//! println!("{:?}: {} spent", outcome.status, budget_host::budget::fmt_usd(outcome.ledger.spent));
//! # Ok(()) }
//! ```
//!
//! The house, top floor first (a floor never imports one above it):
//! the `host` binary's `cli` (flags -> spec); the verbs ([`team`], [`resume`],
//! [`replay`], [`tools`], [`report`]); [`Host`] (engine, compiled components, linkers);
//! `run` (the agent loop and one call's path); `hooks`; then the pure or
//! self-contained floors: `account`, [`budget`], [`shared_ledger`],
//! [`checkpoint`], `journal`, [`tape`], [`audit`], [`llm`], [`spec`], `output`,
//! [`console`].

#![deny(missing_docs)]

// The embedding surface and the verbs the `host` binary calls: documented.
pub mod budget;
pub mod checkpoint;
pub mod console;
pub mod integrity;
pub mod interrupt;
pub mod llm;
pub mod progress;
pub mod replay;
pub mod report;
pub mod resume;
pub mod shared_ledger;
pub mod spec;
pub mod tape;
pub mod team;
pub mod tools;

// The machinery under them: public for the benchmarks and tests that drive
// stores themselves, hidden from the documented API.
#[doc(hidden)]
pub mod account;
#[doc(hidden)]
pub mod audit;
#[doc(hidden)]
pub mod bindings;
#[doc(hidden)]
pub mod crash;
#[doc(hidden)]
pub mod durable;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod guest_io;
#[doc(hidden)]
pub mod hooks;
pub mod journal;
mod host;
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod run;

pub use host::{Host, LoadedAgent};
pub use run::{ResumePoint, RunOptions, RunOutcome, Status};
pub use spec::{RunSpec, RunSpecBuilder};

/// An error caused by the user's input (a file, a flag): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl From<anyhow::Error> for BadInput {
    fn from(e: anyhow::Error) -> Self {
        BadInput(format!("{e:#}"))
    }
}
