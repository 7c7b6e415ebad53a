//! End-to-end tests: the real `host` binary on real plugin components built
//! from `plugins/` (by `make plugins`), against in-test servers that speak
//! the recorded wire formats.

mod basics;
mod checkpoints;
mod fuzz;
mod hooks;
mod interrupts;
mod journal;
mod local;
mod polyglot;
mod shared_ledger;
mod tape;
mod teams;
mod trust;
mod reliability;
mod report;
mod util;
