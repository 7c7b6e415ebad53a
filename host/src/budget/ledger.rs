//! The budget ledger: reserve before a call, settle after it.
//!
//! Invariant: `spent + reserved <= limit`, always, so `spent <= limit` holds
//! whatever the provider later reports. A call that does not fit is lowered or
//! refused before any money moves. The ledger knows nothing of wasm, IO or time.

use super::{BudgetError, Nanos};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Per-operation totals (an operation is the guest's label, e.g. `llm_call_cycle_3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStat {
    pub cost: Nanos,
    pub calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Money held for one call in flight. Not `Clone`: it is settled or released once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    amount: Nanos,
}

impl Reservation {
    pub fn amount(&self) -> Nanos {
        self.amount
    }
}

/// What settling a call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub charged: Nanos,
    /// The provider reported more than was reserved; we charged the reservation.
    pub over_reservation: bool,
    /// Warning thresholds (fractions of the limit) crossed by this call, each once per run.
    pub crossed: Vec<f64>,
}

/// The ledger's durable part, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerState {
    pub limit: Nanos,
    pub spent: Nanos,
    pub calls: u32,
    pub by_operation: IndexMap<String, OpStat>,
    pub thresholds: Vec<f64>,
    pub fired: Vec<bool>,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    limit: Nanos,
    spent: Nanos,
    reserved: Nanos,
    calls: u32,
    by_operation: IndexMap<String, OpStat>,
    /// Thresholds in parts per million of the limit, ascending.
    thresholds_ppm: Vec<u64>,
    fired: Vec<bool>,
}

impl Ledger {
    pub fn new(limit: Nanos) -> Result<Self, BudgetError> {
        if limit == 0 {
            return Err(BudgetError::NotPositive("0".into()));
        }
        Ok(Ledger {
            limit,
            spent: 0,
            reserved: 0,
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

    pub fn limit(&self) -> Nanos {
        self.limit
    }
    pub fn spent(&self) -> Nanos {
        self.spent
    }
    pub fn reserved(&self) -> Nanos {
        self.reserved
    }
    pub fn calls(&self) -> u32 {
        self.calls
    }
    /// What a new reservation may still take.
    pub fn available(&self) -> Nanos {
        self.limit - self.spent - self.reserved
    }
    /// What is left once calls in flight settle at zero: `limit - spent`.
    pub fn remaining(&self) -> Nanos {
        self.limit - self.spent
    }
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

    /// Charge the real cost of a call and free the rest of its reservation.
    /// A cost above the reservation is capped at it (and flagged): the limit holds.
    pub fn settle(&mut self, r: Reservation, cost: Nanos, operation: &str, input_tokens: u64, output_tokens: u64) -> Settlement {
        let over_reservation = cost > r.amount;
        let charged = cost.min(r.amount);
        self.reserved -= r.amount;
        self.spent += charged;
        // Counters saturate: a resumed (possibly forged) state may start at the top.
        self.calls = self.calls.saturating_add(1);
        // The label is allocated once per operation, not once per call.
        let i = match self.by_operation.get_index_of(operation) {
            Some(i) => i,
            None => self.by_operation.insert_full(operation.to_string(), OpStat::default()).0,
        };
        let op = &mut self.by_operation[i];
        op.cost += charged;
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
        if limit < self.spent + self.reserved {
            return Err(BudgetError::BelowSpent { limit, spent: self.spent + self.reserved });
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
        }
    }

    /// Rebuild from a checkpoint, refusing states that break the invariant.
    pub fn from_state(s: &LedgerState) -> Result<Self, BudgetError> {
        let mut l = Ledger::new(s.limit)?.with_thresholds(&s.thresholds);
        if s.spent > s.limit {
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
        assert_eq!((s.charged, s.over_reservation), (250, false));
        assert_eq!((l.spent(), l.reserved(), l.available()), (250, 0, 750));
        let r = l.reserve(750).unwrap();
        l.release(r);
        assert_eq!(l.available(), 750);
    }

    #[test]
    fn over_reservation_is_capped() {
        let mut l = Ledger::new(1000).unwrap();
        let r = l.reserve(100).unwrap();
        let s = l.settle(r, 5000, "a", 1, 1);
        assert_eq!((s.charged, s.over_reservation, l.spent()), (100, true, 100));
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
        /// spent <= limit and spent + reserved <= limit after any sequence of calls,
        /// whatever costs the provider reports (including ones above the reservation).
        #[test]
        fn never_overspends(limit in 1..10_000u64, ops in proptest::collection::vec(op(), 0..200)) {
            let mut l = Ledger::new(limit).unwrap().with_thresholds(&[0.5, 0.8, 0.9]);
            let mut open: Vec<Reservation> = Vec::new();
            let mut fired = 0;
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
                        prop_assert!(s.charged <= amount);
                        fired += s.crossed.len();
                    }
                    Op::Release(i) if !open.is_empty() => {
                        let r = open.swap_remove(i % open.len());
                        l.release(r);
                    }
                    _ => {}
                }
                prop_assert!(l.spent() <= l.limit());
                prop_assert!(l.spent() + l.reserved() <= l.limit());
                prop_assert_eq!(l.reserved(), open.iter().map(|r| r.amount()).sum::<Nanos>());
                prop_assert_eq!(l.by_operation().values().map(|o| o.cost).sum::<Nanos>(), l.spent());
            }
            prop_assert!(fired <= 3);
        }
    }
}
