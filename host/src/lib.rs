//! `budget-host`: a WebAssembly plugin host for budget-limited LLM agents.
//!
//! Data flows one way: `cli` -> `run` -> {`engine`, `budget`, `llm`, `audit`, `report`}.
//! The budget ledger knows nothing of wasm; the engine knows nothing of money.

pub mod audit;
pub mod bindings;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod durable;
pub mod engine;
pub mod hooks;
pub mod integrity;
pub mod pool;
pub mod interrupt;
pub mod llm;
pub mod progress;
pub mod report;
pub mod resume;
pub mod run;
pub mod team;

/// An error caused by the user's input (a file, a flag): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl From<anyhow::Error> for BadInput {
    fn from(e: anyhow::Error) -> Self {
        BadInput(format!("{e:#}"))
    }
}
