//! The only `bindgen!` in the host: generated from `../wit`, the single source of truth.
//!
//! `llm.complete` is linked by hand in `engine` (it needs the store, for fuel);
//! everything else uses the generated traits.

pub mod agent {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "agent",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub mod hook {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "hook",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "budget-host:plugin/types": super::agent::budget_host::plugin::types,
            "budget-host:plugin/log": super::agent::budget_host::plugin::log,
        },
    });
}

pub use agent::budget_host::plugin::types;

/// The WIT package this host speaks; plugins built for another major version are refused.
pub const WIT_PACKAGE: &str = "budget-host:plugin";
pub const WIT_VERSION: &str = "0.1.0";
