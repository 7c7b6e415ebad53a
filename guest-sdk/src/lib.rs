//! Write budget-host agents in Rust.
//!
//! Implement [`Agent`] (init, step) on a serde type, call [`export_agent!`],
//! and build for `wasm32-wasip2`. Snapshot and restore come for free: the
//! agent's state is its serde JSON, so checkpoints are exact.
//!
//! ```ignore
//! use guest_sdk::{Agent, Step, llm};
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Hello { said: Vec<String> }
//! impl Agent for Hello {
//!     fn init(&mut self, _task: &str) -> Result<(), String> { Ok(()) }
//!     fn step(&mut self, cycle: u32) -> Result<Step, String> {
//!         let reply = llm::ask("Say hello.", Some(16)).map_err(|e| e.message())?;
//!         self.said.push(reply.text);
//!         Ok(if cycle == 3 { Step::Done(self.said.join("\n")) } else { Step::Continue("said hello".into()) })
//!     }
//! }
//! guest_sdk::export_agent!(Hello);
//! ```

#[cfg(feature = "agent")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "agent",
        pub_export_macro: true,
        default_bindings_module: "guest_sdk::bindings",
        export_macro_name: "__export_agent_world",
        generate_all,
    });
}

#[cfg(feature = "hook")]
#[doc(hidden)]
pub mod hook_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook",
        pub_export_macro: true,
        default_bindings_module: "guest_sdk::hook_bindings",
        export_macro_name: "__export_hook_world",
        generate_all,
    });
}

#[cfg(feature = "agent")]
pub use bindings::budget_host::plugin::types::{
    BudgetStatus, Completion, CompletionRequest, Level, LlmError, Message, Role, StepOutcome, Usage,
};

#[cfg(feature = "agent")]
/// What a step returns.
pub enum Step {
    /// The cycle finished; a one-line progress note for the console.
    Continue(String),
    /// The task is finished; the result.
    Done(String),
}

#[cfg(feature = "agent")]
/// An agent: a state machine the host drives one cycle at a time.
pub trait Agent: Default + serde::Serialize + serde::de::DeserializeOwned {
    fn init(&mut self, task: &str) -> Result<(), String>;
    fn step(&mut self, cycle: u32) -> Result<Step, String>;
}

#[cfg(feature = "agent")]
impl LlmError {
    /// One line for people (the generated `Display` is the debug form).
    pub fn message(&self) -> String {
        match self {
            LlmError::BudgetExhausted(s) => format!("budget exhausted (${:.4} of ${:.4} spent)", s.spent_usd, s.limit_usd),
            LlmError::Denied(r) => format!("denied: {r}"),
            LlmError::Provider(m) => format!("provider error: {m}"),
            LlmError::InvalidRequest(m) => format!("invalid request: {m}"),
        }
    }
}

#[cfg(feature = "agent")]
pub mod llm {
    use super::*;

    /// One call through the host: priced, reserved, settled and logged there.
    pub fn complete(req: &CompletionRequest) -> Result<Completion, LlmError> {
        bindings::budget_host::plugin::llm::complete(req)
    }

    /// A single user message with an optional system prompt and output cap.
    pub fn chat(system: Option<&str>, user: &str, max_tokens: Option<u32>, operation: Option<&str>) -> Result<Completion, LlmError> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message { role: Role::System, content: s.to_string() });
        }
        messages.push(Message { role: Role::User, content: user.to_string() });
        complete(&CompletionRequest {
            messages,
            model: None,
            max_tokens,
            temperature: None,
            operation: operation.map(str::to_string),
        })
    }

    /// The simplest call: one user message.
    pub fn ask(user: &str, max_tokens: Option<u32>) -> Result<Completion, LlmError> {
        chat(None, user, max_tokens, None)
    }
}

#[cfg(feature = "agent")]
pub mod budget {
    /// Limit, spent, reserved and remaining USD, fuel and calls so far.
    pub fn status() -> super::BudgetStatus {
        super::bindings::budget_host::plugin::budget::status()
    }
}

#[cfg(feature = "agent")]
pub mod log {
    use super::Level;
    pub fn info(msg: &str) {
        super::bindings::budget_host::plugin::log::log(Level::Info, msg)
    }
    pub fn warn(msg: &str) {
        super::bindings::budget_host::plugin::log::log(Level::Warn, msg)
    }
    pub fn debug(msg: &str) {
        super::bindings::budget_host::plugin::log::log(Level::Debug, msg)
    }
    /// A structured event into the audit log (`data` is serialised as a JSON object).
    pub fn emit(event: &str, data: &impl serde::Serialize) {
        let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        super::bindings::budget_host::plugin::log::emit(event, &json)
    }
}

#[doc(hidden)]
pub mod __private {
    pub use serde_json;
    use std::cell::RefCell;

    /// The agent's state lives in a thread-local: wasm guests are single-threaded.
    pub struct Slot<A>(pub RefCell<Option<A>>);
    // SAFETY-free: wasm32 has one thread; this only satisfies `static`.
    unsafe impl<A> Sync for Slot<A> {}
}

/// Export a type implementing [`Agent`] as the component's `run` interface.
#[macro_export]
macro_rules! export_agent {
    ($ty:ty) => {
        static __AGENT: $crate::__private::Slot<$ty> = $crate::__private::Slot(::std::cell::RefCell::new(None));

        fn __with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            let mut slot = __AGENT.0.borrow_mut();
            f(slot.get_or_insert_with(<$ty as ::core::default::Default>::default))
        }

        struct __Run;
        impl $crate::bindings::exports::budget_host::plugin::run::Guest for __Run {
            fn init(task: String) -> Result<(), String> {
                __with(|a| <$ty as $crate::Agent>::init(a, &task))
            }
            fn step(cycle: u32) -> Result<$crate::StepOutcome, String> {
                __with(|a| <$ty as $crate::Agent>::step(a, cycle)).map(|s| match s {
                    $crate::Step::Continue(p) => $crate::StepOutcome::Continue(p),
                    $crate::Step::Done(r) => $crate::StepOutcome::Done(r),
                })
            }
            fn snapshot() -> Vec<u8> {
                __with(|a| $crate::__private::serde_json::to_vec(a).expect("agent state serialises"))
            }
            fn restore(state: Vec<u8>) -> Result<(), String> {
                let a: $ty = $crate::__private::serde_json::from_slice(&state).map_err(|e| format!("cannot restore agent state: {e}"))?;
                *__AGENT.0.borrow_mut() = Some(a);
                Ok(())
            }
        }
        $crate::bindings::__export_agent_world!(__Run with_types_in $crate::bindings);
    };
}

/// Hooks: implement [`hook::Hook`] and call [`export_hook!`] (feature `hook`).
#[cfg(feature = "hook")]
pub mod hook {
    pub use crate::hook_bindings::budget_host::plugin::types::{
        AfterDecision, CallDecision, CallEvent, CostEvent, EndEvent, InterruptEvent, InterruptMode, InterruptRequest,
        InterruptSource, Level, StartEvent, ThresholdEvent, Usage,
    };

    /// A budget hook. Every method has a permissive default; hooks can only
    /// tighten (deny, lower max tokens, interrupt), never raise a limit.
    pub trait Hook: Default + serde::Serialize + serde::de::DeserializeOwned {
        fn on_start(&mut self, _e: &StartEvent) {}
        fn before_call(&mut self, _e: &CallEvent) -> CallDecision {
            CallDecision::Allow
        }
        fn after_call(&mut self, _e: &CostEvent) -> AfterDecision {
            AfterDecision::Continue
        }
        fn on_threshold(&mut self, _e: &ThresholdEvent) {}
        fn on_interrupt(&mut self, _e: &InterruptEvent) {}
        fn on_end(&mut self, _e: &EndEvent) {}
    }

    pub mod log {
        use super::Level;
        use crate::hook_bindings::budget_host::plugin::log as wit;
        pub fn info(msg: &str) {
            wit::log(Level::Info, msg)
        }
        pub fn warn(msg: &str) {
            wit::log(Level::Warn, msg)
        }
        /// A structured event into the audit log (`data` is serialised as a JSON object).
        pub fn emit(event: &str, data: &impl serde::Serialize) {
            let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
            wit::emit(event, &json)
        }
    }
}

/// Export a type implementing [`hook::Hook`] as the component's `policy` interface.
#[cfg(feature = "hook")]
#[macro_export]
macro_rules! export_hook {
    ($ty:ty) => {
        static __HOOK: $crate::__private::Slot<$ty> = $crate::__private::Slot(::std::cell::RefCell::new(None));

        fn __with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            let mut slot = __HOOK.0.borrow_mut();
            f(slot.get_or_insert_with(<$ty as ::core::default::Default>::default))
        }

        struct __Policy;
        impl $crate::hook_bindings::exports::budget_host::plugin::policy::Guest for __Policy {
            fn on_start(e: $crate::hook::StartEvent) {
                __with(|h| <$ty as $crate::hook::Hook>::on_start(h, &e))
            }
            fn before_call(e: $crate::hook::CallEvent) -> $crate::hook::CallDecision {
                __with(|h| <$ty as $crate::hook::Hook>::before_call(h, &e))
            }
            fn after_call(e: $crate::hook::CostEvent) -> $crate::hook::AfterDecision {
                __with(|h| <$ty as $crate::hook::Hook>::after_call(h, &e))
            }
            fn on_threshold(e: $crate::hook::ThresholdEvent) {
                __with(|h| <$ty as $crate::hook::Hook>::on_threshold(h, &e))
            }
            fn on_interrupt(e: $crate::hook::InterruptEvent) {
                __with(|h| <$ty as $crate::hook::Hook>::on_interrupt(h, &e))
            }
            fn on_end(e: $crate::hook::EndEvent) {
                __with(|h| <$ty as $crate::hook::Hook>::on_end(h, &e))
            }
            fn snapshot() -> Vec<u8> {
                __with(|h| $crate::__private::serde_json::to_vec(h).expect("hook state serialises"))
            }
            fn restore(state: Vec<u8>) -> Result<(), String> {
                let h: $ty = $crate::__private::serde_json::from_slice(&state).map_err(|e| format!("cannot restore hook state: {e}"))?;
                *__HOOK.0.borrow_mut() = Some(h);
                Ok(())
            }
        }
        $crate::hook_bindings::__export_hook_world!(__Policy with_types_in $crate::hook_bindings);
    };
}
