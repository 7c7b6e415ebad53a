//! The budget ledger: reserve before a call, settle after it.
//!
//! Invariant: `spent + reserved <= limit + overrun`, where `overrun` is what
//! providers billed past their calls' reservations. The books record the bill
//! as it is: a call that does not fit is lowered or refused before any money
//! moves, and a call billed past its reservation is charged in full and
//! flagged (the caller stops the run), so spending passes the limit by at most
//! that call's excess. The ledger knows nothing of wasm, IO or time.

use super::{BudgetError, Nanos};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Per-operation totals (an operation is the guest's label, e.g. `llm_call_cycle_3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStat {
    /// Money charged, nano-USD.
    pub cost: Nanos,
    /// Calls charged.
    pub calls: u32,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
}

/// Money held for one call in flight. Not `Clone`: it is settled or released once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    amount: Nanos,
}

impl Reservation {
    /// The money held.
    pub fn amount(&self) -> Nanos {
        self.amount
    }
}

/// What settling a call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The cost as reported, charged in full.
    pub charged: Nanos,
    /// What the cost exceeded the reservation by (0: within it).
    pub over_reservation: Nanos,
    /// Warning thresholds (fractions of the limit) crossed by this call, each once per run.
    pub crossed: Vec<f64>,
}

/// The ledger's durable part, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerState {
    /// The hard limit.
    pub limit: Nanos,
    /// Money charged so far (past the limit only by a recorded overrun).
    pub spent: Nanos,
    /// Calls charged.
    pub calls: u32,
    /// Cost and tokens per operation label.
    pub by_operation: IndexMap<String, OpStat>,
    /// Warning thresholds, fractions of the limit.
    pub thresholds: Vec<f64>,
    /// Which thresholds have fired (each fires once).
    pub fired: Vec<bool>,
    /// Billed past reservations, included in `spent` (absent in older checkpoints: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overrun: Nanos,
}

fn is_zero(n: &Nanos) -> bool {
    *n == 0
}

/// An agent's budget: reserve the worst case before a call, settle the bill after it. Pure: no IO, no clock.
#[derive(Debug, Clone)]
pub struct Ledger {
    limit: Nanos,
    spent: Nanos,
    reserved: Nanos,
    /// Billed past reservations (part of `spent`).
    overrun: Nanos,
    calls: u32,
    by_operation: IndexMap<String, OpStat>,
    /// Thresholds in parts per million of the limit, ascending.
    thresholds_ppm: Vec<u64>,
    fired: Vec<bool>,
}

impl Ledger {
    /// A ledger with `limit` nano-USD and nothing spent; a zero limit is refused.
    pub fn new(limit: Nanos) -> Result<Self, BudgetError> {
        if limit == 0 {
            return Err(BudgetError::NotPositive("0".into()));
        }
        Ok(Ledger {
            limit,
            spent: 0,
            reserved: 0,
            overrun: 0,
            calls: 0,
            by_operation: IndexMap::new(),
            thresholds_ppm: Vec::new(),
            fired: Vec::new(),
        })
    }

    /// Warning thresholds as fractions of the limit (0 < t <= 1), each fires once.
    pub fn with_thresholds(mut self, fractions: &[f64]) -> Self {
        let mut ppm: Vec<u64> = fractions
            .iter()
            .filter(|f| f.is_finite() && **f > 0.0 && **f <= 1.0)
            .map(|f| (f * 1e6).round() as u64)
            .collect();
        ppm.sort_unstable();
        ppm.dedup();
        self.fired = vec![false; ppm.len()];
        self.thresholds_ppm = ppm;
        self
    }

    /// The hard limit.
    pub fn limit(&self) -> Nanos {
        self.limit
    }
    /// Money charged so far.
    pub fn spent(&self) -> Nanos {
        self.spent
    }
    /// Money held by calls in flight.
    pub fn reserved(&self) -> Nanos {
        self.reserved
    }
    /// Calls charged.
    pub fn calls(&self) -> u32 {
        self.calls
    }
    /// What providers billed past reservations (part of `spent`).
    pub fn overrun(&self) -> Nanos {
        self.overrun
    }
    /// What a new reservation may still take (0 once an overrun passed the limit).
    pub fn available(&self) -> Nanos {
        self.limit.saturating_sub(self.spent.saturating_add(self.reserved))
    }
    /// What is left once calls in flight settle at zero: `limit - spent`, at least 0.
    pub fn remaining(&self) -> Nanos {
        self.limit.saturating_sub(self.spent)
    }
    /// Cost and tokens per operation label, in first-seen order.
    pub fn by_operation(&self) -> &IndexMap<String, OpStat> {
        &self.by_operation
    }

    /// Hold `amount` for a call, or refuse if it does not fit.
    pub fn reserve(&mut self, amount: Nanos) -> Result<Reservation, BudgetError> {
        let available = self.available();
        if amount > available {
            return Err(BudgetError::Exhausted { needed: amount, available });
        }
        self.reserved += amount;
        Ok(Reservation { amount })
    }

    /// Give a reservation back untouched (the call was not made or failed unbilled).
    pub fn release(&mut self, r: Reservation) {
        self.reserved -= r.amount;
    }

    /// Charge the reported cost of a call and free the rest of its reservation.
    /// A cost above the reservation is charged as it is (the books equal the
    /// bill) and its excess returned, for the caller to stop the run.
    pub fn settle(&mut self, r: Reservation, cost: Nanos, operation: &str, input_tokens: u64, output_tokens: u64) -> Settlement {
        let over_reservation = cost.saturating_sub(r.amount);
        let charged = cost;
        self.reserved -= r.amount;
        // Saturating: a hostile report must not wrap the books around.
        self.spent = self.spent.saturating_add(charged);
        self.overrun = self.overrun.saturating_add(over_reservation);
        // Counters saturate: a resumed (possibly forged) state may start at the top.
        self.calls = self.calls.saturating_add(1);
        // The label is allocated once per operation, not once per call.
        let i = match self.by_operation.get_index_of(operation) {
            Some(i) => i,
            None => self.by_operation.insert_full(operation.to_string(), OpStat::default()).0,
        };
        let op = &mut self.by_operation[i];
        op.cost = op.cost.saturating_add(charged);
        op.calls = op.calls.saturating_add(1);
        // Token totals are statistics from the provider, not money: saturate, never overflow.
        op.input_tokens = op.input_tokens.saturating_add(input_tokens);
        op.output_tokens = op.output_tokens.saturating_add(output_tokens);
        Settlement { charged, over_reservation, crossed: self.cross_thresholds() }
    }

    /// Record money spent outside a reservation of this ledger: a call that
    /// settled before a crash, read back from the call journal. Charged as it
    /// is; thresholds it crosses count as fired.
    pub fn charge(&mut self, cost: Nanos, operation: &str) {
        self.spent = self.spent.saturating_add(cost);
        self.calls = self.calls.saturating_add(1);
        let op = self.by_operation.entry(operation.to_string()).or_default();
        op.cost = op.cost.saturating_add(cost);
        op.calls = op.calls.saturating_add(1);
        self.cross_thresholds();
    }

    fn cross_thresholds(&mut self) -> Vec<f64> {
        let mut crossed = Vec::new();
        for (i, ppm) in self.thresholds_ppm.iter().enumerate() {
            if !self.fired[i] && (self.spent as u128) * 1_000_000 >= (*ppm as u128) * (self.limit as u128) {
                self.fired[i] = true;
                crossed.push(*ppm as f64 / 1e6);
            }
        }
        crossed
    }

    /// Change the limit (resume with a new budget); never below what is spent or held.
    pub fn set_limit(&mut self, limit: Nanos) -> Result<(), BudgetError> {
        if limit == 0 {
            return Err(BudgetError::NotPositive("0".into()));
        }
        let held = self.spent.saturating_add(self.reserved);
        if limit < held {
            return Err(BudgetError::BelowSpent { limit, spent: held });
        }
        self.limit = limit;
        Ok(())
    }

    /// Durable state; calls in flight are not part of it (they settle or die with the process).
    pub fn state(&self) -> LedgerState {
        LedgerState {
            limit: self.limit,
            spent: self.spent,
            calls: self.calls,
            by_operation: self.by_operation.clone(),
            thresholds: self.thresholds_ppm.iter().map(|p| *p as f64 / 1e6).collect(),
            fired: self.fired.clone(),
            overrun: self.overrun,
        }
    }

    /// Rebuild from a checkpoint, refusing states that break the invariant.
    pub fn from_state(s: &LedgerState) -> Result<Self, BudgetError> {
        let mut l = Ledger::new(s.limit)?.with_thresholds(&s.thresholds);
        // Only a recorded overrun may take spending past the limit.
        if s.spent > s.limit.saturating_add(s.overrun) || s.overrun > s.spent {
            return Err(BudgetError::BelowSpent { limit: s.limit, spent: s.spent });
        }
        let op_sum = s.by_operation.values().try_fold(0 as Nanos, |a, o| a.checked_add(o.cost));
        let Some(op_sum) = op_sum else {
            return Err(BudgetError::Inconsistent("operation costs overflow".into()));
        };
        if op_sum != s.spent {
            return Err(BudgetError::Inconsistent(format!("operations sum to {op_sum}, spent is {}", s.spent)));
        }
        if l.fired.len() != s.fired.len() {
            return Err(BudgetError::Inconsistent("thresholds and fired flags differ in length".into()));
        }
        l.spent = s.spent;
        l.overrun = s.overrun;
        l.calls = s.calls;
        l.by_operation = s.by_operation.clone();
        l.fired = s.fired.clone();
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserve_settle_release() {
        let mut l = Ledger::new(1000).unwrap();
        let r = l.reserve(600).unwrap();
        assert_eq!(l.available(), 400);
        assert!(matches!(l.reserve(401), Err(BudgetError::Exhausted { needed: 401, available: 400 })));
        let s = l.settle(r, 250, "a", 10, 5);
        assert_eq!((s.charged, s.over_reservation), (250, 0));
        assert_eq!((l.spent(), l.reserved(), l.available()), (250, 0, 750));
        let r = l.reserve(750).unwrap();
        l.release(r);
        assert_eq!(l.available(), 750);
    }

    #[test]
    fn over_reservation_is_charged_as_billed_and_flagged() {
        let mut l = Ledger::new(1000).unwrap();
        let r = l.reserve(100).unwrap();
        let s = l.settle(r, 5000, "a", 1, 1);
        assert_eq!((s.charged, s.over_reservation, l.spent(), l.overrun()), (5000, 4900, 5000, 4900));
        assert_eq!((l.available(), l.remaining()), (0, 0), "nothing more may be reserved");
        assert!(matches!(l.reserve(1), Err(BudgetError::Exhausted { needed: 1, available: 0 })));
        assert_eq!(l.by_operation()["a"].cost, 5000);
        // The state keeps the overrun, and only that much may pass the limit.
        let st = l.state();
        assert_eq!(Ledger::from_state(&st).unwrap().state(), st);
        let mut forged = st.clone();
        forged.overrun = 3999;
        assert!(Ledger::from_state(&forged).is_err());
        let mut forged = st;
        forged.overrun = 6000;
        assert!(Ledger::from_state(&forged).is_err(), "an overrun larger than what was spent");
    }

    #[test]
    fn states_without_an_overrun_read_and_write_as_before() {
        let l = Ledger::new(1000).unwrap();
        let json = serde_json::to_value(l.state()).unwrap();
        assert!(json.get("overrun").is_none(), "{json}");
        let back: LedgerState = serde_json::from_value(json).unwrap();
        assert_eq!(back.overrun, 0);
    }

    #[test]
    fn thresholds_fire_once_in_order() {
        let mut l = Ledger::new(100).unwrap().with_thresholds(&[0.9, 0.5, 0.8]);
        let r = l.reserve(85).unwrap();
        assert_eq!(l.settle(r, 85, "a", 0, 0).crossed, vec![0.5, 0.8]);
        let r = l.reserve(5).unwrap();
        assert_eq!(l.settle(r, 5, "a", 0, 0).crossed, vec![0.9]);
        let r = l.reserve(5).unwrap();
        assert!(l.settle(r, 5, "a", 0, 0).crossed.is_empty());
    }

    #[test]
    fn operations_keep_first_seen_order() {
        let mut l = Ledger::new(1000).unwrap();
        for op in ["llm_call_cycle_2", "llm_call_cycle_10", "llm_call_cycle_1"] {
            let r = l.reserve(1).unwrap();
            let _ = l.settle(r, 1, op, 0, 0);
        }
        let order: Vec<_> = l.by_operation().keys().cloned().collect();
        assert_eq!(order, ["llm_call_cycle_2", "llm_call_cycle_10", "llm_call_cycle_1"]);
    }

    #[test]
    fn state_round_trips_and_refuses_inconsistency() {
        let mut l = Ledger::new(1000).unwrap().with_thresholds(&[0.5]);
        let r = l.reserve(600).unwrap();
        let _ = l.settle(r, 600, "x", 3, 4);
        let s = l.state();
        let back = Ledger::from_state(&s).unwrap();
        assert_eq!(back.state(), s);
        let mut bad = s.clone();
        bad.spent = 2000;
        assert!(Ledger::from_state(&bad).is_err());
        let mut bad = s;
        bad.spent = 599;
        assert!(Ledger::from_state(&bad).is_err());
    }

    /// Regression (tests/reliability.rs huge_token_counts_*): a provider reporting
    /// i64::MAX tokens twice overflowed the per-operation totals.
    #[test]
    fn token_totals_saturate_and_overflowing_costs_are_refused() {
        let mut l = Ledger::new(1000).unwrap();
        for _ in 0..3 {
            let r = l.reserve(1).unwrap();
            let _ = l.settle(r, 1, "op", u64::MAX / 2, u64::MAX);
        }
        let op = &l.by_operation()["op"];
        assert_eq!((op.input_tokens, op.output_tokens, op.cost), (u64::MAX, u64::MAX, 3));
        let mut s = l.state();
        s.by_operation.insert("a".into(), OpStat { cost: u64::MAX, ..Default::default() });
        s.by_operation.insert("b".into(), OpStat { cost: 4, ..Default::default() });
        assert!(matches!(Ledger::from_state(&s), Err(BudgetError::Inconsistent(_))));
    }

    #[test]
    fn limit_cannot_drop_below_spent() {
        let mut l = Ledger::new(1000).unwrap();
        let r = l.reserve(500).unwrap();
        let _ = l.settle(r, 500, "x", 0, 0);
        assert!(l.set_limit(499).is_err());
        l.set_limit(2000).unwrap();
        assert_eq!(l.available(), 1500);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(Nanos),
        Settle(usize, Nanos),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..2_000u64).prop_map(Op::Reserve),
            (0..8usize, 0..4_000u64).prop_map(|(i, c)| Op::Settle(i, c)),
            (0..8usize).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever costs providers report (including ones above the
        /// reservation): spent is the sum of the reported costs (the books
        /// equal the bill), and only the recorded excesses pass the limit:
        /// spent + reserved <= limit + overrun.
        #[test]
        fn never_overspends(limit in 1..10_000u64, ops in proptest::collection::vec(op(), 0..200)) {
            let mut l = Ledger::new(limit).unwrap().with_thresholds(&[0.5, 0.8, 0.9]);
            let mut open: Vec<Reservation> = Vec::new();
            let mut fired = 0;
            let (mut billed, mut excess) = (0u64, 0u64);
            for o in ops {
                match o {
                    Op::Reserve(a) => match l.reserve(a) {
                        Ok(r) => open.push(r),
                        Err(BudgetError::Exhausted { needed, available }) => prop_assert!(needed > available),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    Op::Settle(i, c) if !open.is_empty() => {
                        let r = open.swap_remove(i % open.len());
                        let amount = r.amount();
                        let s = l.settle(r, c, "op", 1, 1);
                        prop_assert_eq!(s.charged, c);
                        prop_assert_eq!(s.over_reservation, c.saturating_sub(amount));
                        billed += c;
                        excess += s.over_reservation;
                        fired += s.crossed.len();
                    }
                    Op::Release(i) if !open.is_empty() => {
                        let r = open.swap_remove(i % open.len());
                        l.release(r);
                    }
                    _ => {}
                }
                prop_assert_eq!(l.spent(), billed);
                prop_assert_eq!(l.overrun(), excess);
                prop_assert!(l.spent() <= l.limit() + l.overrun());
                prop_assert!(l.spent() + l.reserved() <= l.limit() + l.overrun());
                if l.overrun() == 0 {
                    prop_assert!(l.spent() + l.reserved() <= l.limit());
                }
                prop_assert_eq!(l.reserved(), open.iter().map(|r| r.amount()).sum::<Nanos>());
                prop_assert_eq!(l.by_operation().values().map(|o| o.cost).sum::<Nanos>(), l.spent());
            }
            prop_assert!(fired <= 3);
        }
    }
}
