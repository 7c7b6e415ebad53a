//! A hook that misbehaves on purpose, to prove the host's failure policy.
//!
//! Config: `<action>@<event>` entries separated by `;`, where event is one of
//! `start`, `before`, `after`, `threshold`, `interrupt`, `end`
//! and action is `trap`, `loop`, `alloc`, `sleep` (block in WASI for an hour), `limit:<n>`, `deny:<reason>`,
//! `interrupt:graceful|immediate`. An action may carry `#<k>` to fire only
//! from the k-th call on (e.g. `deny:no more@before#3`).

use guest_sdk::hook::{AfterDecision, CallDecision, CallEvent, CostEvent, EndEvent, Hook, InterruptEvent, InterruptMode, InterruptRequest, StartEvent, ThresholdEvent};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Chaos {
    rules: Vec<(String, String, u32)>,
    calls_before: u32,
    calls_after: u32,
}

fn misbehave(action: &str) {
    match action {
        "trap" => panic!("chaos hook: trap"),
        "loop" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        "alloc" => {
            let mut v: Vec<Vec<u8>> = Vec::new();
            loop {
                v.push(vec![1; 1 << 20]);
                std::hint::black_box(&v);
            }
        }
        _ => {}
    }
}

impl Chaos {
    fn rule(&self, event: &str, n: u32) -> Option<String> {
        self.rules.iter().find(|(_, e, from)| e == event && n >= *from).map(|(a, _, _)| a.clone())
    }
    fn plain(&self, event: &str) {
        if let Some(a) = self.rule(event, u32::MAX) {
            misbehave(&a);
        }
    }
}

impl Hook for Chaos {
    fn on_start(&mut self, e: &StartEvent) {
        if !e.resumed {
            self.rules = e
                .config
                .split(';')
                .filter_map(|r| {
                    let (action, rest) = r.trim().split_once('@')?;
                    let (event, from) = rest.split_once('#').map(|(e, k)| (e, k.parse().unwrap_or(1))).unwrap_or((rest, 1));
                    Some((action.to_string(), event.to_string(), from))
                })
                .collect();
        }
        self.plain("start");
    }

    fn before_call(&mut self, _e: &CallEvent) -> CallDecision {
        self.calls_before += 1;
        match self.rule("before", self.calls_before) {
            Some(a) if a.starts_with("limit:") => CallDecision::Limit(a[6..].parse().unwrap_or(0)),
            Some(a) if a.starts_with("deny:") => CallDecision::Deny(a[5..].to_string()),
            Some(a) => {
                misbehave(&a);
                CallDecision::Allow
            }
            None => CallDecision::Allow,
        }
    }

    fn after_call(&mut self, _e: &CostEvent) -> AfterDecision {
        self.calls_after += 1;
        match self.rule("after", self.calls_after) {
            Some(a) if a.starts_with("interrupt:") => AfterDecision::Interrupt(InterruptRequest {
                mode: if a.ends_with("immediate") { InterruptMode::Immediate } else { InterruptMode::Graceful },
                reason: format!("chaos hook stops the run after call {}", self.calls_after),
            }),
            Some(a) => {
                misbehave(&a);
                AfterDecision::Continue
            }
            None => AfterDecision::Continue,
        }
    }

    fn on_threshold(&mut self, _e: &ThresholdEvent) {
        self.plain("threshold");
    }
    fn on_interrupt(&mut self, _e: &InterruptEvent) {
        self.plain("interrupt");
    }
    fn on_end(&mut self, _e: &EndEvent) {
        self.plain("end");
    }
}

guest_sdk::export_hook!(Chaos);
