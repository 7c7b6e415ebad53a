//! An agent's money: its own pure [`Ledger`] (its share, its breakdown) and,
//! when there is one, a shared ledger (a team's total, a Redis budget) that
//! every call must also fit. Reserving plans the call against what both have
//! left; settling and releasing keep both books in step. This module knows
//! nothing of wasm, providers or the agent loop.

use crate::budget::{fmt_usd, pricing::Price, Ledger, Nanos, Reservation, Settlement};
use crate::shared_ledger::{Hold, SharedLedger, SharedLedgerError};
use std::sync::{Arc, Mutex, MutexGuard};

/// The plan for a call that fits: its max tokens and the worst case to reserve.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Output tokens the call may produce.
    pub max_tokens: u32,
    /// Its worst-case cost, held until it settles.
    pub reserve: Nanos,
    /// Whether max tokens was lowered to fit.
    pub lowered: bool,
}

/// Fit a call into what is available: lower max tokens if needed, refuse if
/// not even `min_output` tokens fit. Pure, so it is unit-tested on its own.
pub fn plan(price: &Price, input_bound: u64, max_tokens: u32, min_output: u32, available: Nanos) -> Option<Plan> {
    let worst = price.worst_case(input_bound, max_tokens as u64);
    if worst <= available {
        return Some(Plan { max_tokens, reserve: worst, lowered: false });
    }
    let fit = price.output_tokens_within(input_bound, available).min(max_tokens as u64) as u32;
    if fit < min_output.min(max_tokens).max(1) {
        return None;
    }
    Some(Plan { max_tokens: fit, reserve: price.worst_case(input_bound, fit as u64), lowered: true })
}

/// Money held for one call: in the agent's ledger and, when there is one, the shared ledger.
#[must_use = "held money must be settled or released"]
pub struct Held {
    local: Reservation,
    shared: Option<Hold>,
}

impl Held {
    /// The shared ledger's id for this hold, if there is one.
    pub fn hold_id(&self) -> Option<&str> {
        self.shared.as_ref().map(|h| h.id.as_str())
    }
}

/// Why a call could not be reserved.
pub enum Refusal {
    /// Not enough budget (the message says whose and how much).
    Budget(String),
    /// The shared ledger could not be reached: nothing was spent.
    Unavailable(String),
}

/// An agent's ledger and the shared ledger above it, if any.
#[derive(Clone)]
pub struct Account {
    ledger: Arc<Mutex<Ledger>>,
    shared: Option<Arc<dyn SharedLedger>>,
}

impl Account {
    /// An account on `ledger`, under `shared` when given.
    pub fn new(ledger: Arc<Mutex<Ledger>>, shared: Option<Arc<dyn SharedLedger>>) -> Account {
        Account { ledger, shared }
    }

    /// The agent's own ledger.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A poisoned ledger means a panic mid-update elsewhere: the state is still
        // consistent (every update is a few integer ops), so keep going.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// While a call runs: renew its shared hold every third of the lease, so a
    /// long call keeps its money held (a dead host's hold still expires).
    /// Never returns; drop it when the call ends.
    pub fn keep_alive(&self, held: &Held) -> impl std::future::Future<Output = std::convert::Infallible> + Send + 'static {
        let shared = self.shared.clone();
        let hold = held.shared.as_ref().map(|h| Hold { id: h.id.clone(), amount: h.amount });
        async move {
            let (Some(shared), Some(hold)) = (shared, hold) else { return std::future::pending::<std::convert::Infallible>().await };
            let Some(lease) = shared.lease() else { return std::future::pending::<std::convert::Infallible>().await };
            let every = (lease / 3).max(std::time::Duration::from_millis(50));
            loop {
                tokio::time::sleep(every).await;
                // A failed renewal is not fatal: the hold expires, is charged
                // in full, and this call's settle replaces that charge.
                let _ = shared.renew(&hold).await;
            }
        }
    }

    /// Whether money is shared beyond this agent.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Plan against what both ledgers have left, then hold the money in both.
    /// A shared ledger that lost a race says how much it has: plan again against that.
    pub async fn reserve(&self, price: &Price, input_bound: u64, max_tokens: u32, min_output: u32, operation: &str) -> Result<(Plan, Held), Refusal> {
        let mut shared_available = match &self.shared {
            Some(s) => Some(s.status().await.map_err(|e| Refusal::Unavailable(e.to_string()))?.available()),
            None => None,
        };
        for _ in 0..3 {
            let (local_available, spent, limit) = {
                let l = self.ledger();
                (l.available(), l.spent(), l.limit())
            };
            let available = shared_available.map_or(local_available, |p| p.min(local_available));
            let Some(p) = plan(price, input_bound, max_tokens, min_output, available) else {
                let need = price.worst_case(input_bound, min_output.min(max_tokens) as u64);
                let whose = if shared_available.is_some_and(|p| p < local_available) { "shared budget" } else { "budget" };
                return Err(Refusal::Budget(format!(
                    "{whose} limit reached: {} of {} spent by this agent; the next call needs up to {} (at least {} output tokens), {} left",
                    fmt_usd(spent),
                    fmt_usd(limit),
                    fmt_usd(need),
                    min_output.min(max_tokens),
                    fmt_usd(available)
                )));
            };
            let local = self.ledger().reserve(p.reserve).map_err(|e| Refusal::Budget(e.to_string()))?;
            let Some(shared) = &self.shared else {
                return Ok((p, Held { local, shared: None }));
            };
            match shared.reserve(p.reserve).await {
                Ok(h) => return Ok((p, Held { local, shared: Some(h) })),
                Err(SharedLedgerError::Exhausted { available }) => {
                    self.ledger().release(local);
                    shared_available = Some(available);
                }
                Err(e) => {
                    self.ledger().release(local);
                    return Err(Refusal::Unavailable(format!("{e} (call {operation} refused, nothing spent)")));
                }
            }
        }
        Err(Refusal::Budget("the shared budget kept shrinking under other hosts' calls".into()))
    }

    /// Charge a call in both ledgers. `Err` carries the settlement and why the
    /// shared ledger could not record it (the run must stop: the books disagree).
    pub async fn settle(&self, held: Held, cost: Nanos, operation: &str, input_tokens: u64, output_tokens: u64) -> Result<Settlement, (Settlement, String)> {
        let s = self.ledger().settle(held.local, cost, operation, input_tokens, output_tokens);
        if let (Some(shared), Some(h)) = (&self.shared, held.shared) {
            if let Err(e) = shared.settle(h, s.charged).await {
                return Err((s, format!("{e}: the cost of {operation} is recorded here but may be missing from the shared ledger")));
            }
        }
        Ok(s)
    }

    /// Free a call's money: nothing was spent. `Err` when the shared ledger
    /// could not be told (its hold then lives until its lease ends: safe).
    pub async fn release(&self, held: Held) -> Result<(), String> {
        self.ledger().release(held.local);
        if let (Some(shared), Some(h)) = (&self.shared, held.shared) {
            shared.release(h).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price { input: 2_500_000_000, output: 10_000_000_000, cache_read: 1_250_000_000 };

    #[test]
    fn plan_fits_lowers_or_refuses() {
        // 100 input tokens at $2.50/M = 250_000 nanos; 1000 output at $10/M = 10_000_000 nanos.
        assert_eq!(plan(&PRICE, 100, 1000, 16, 20_000_000), Some(Plan { max_tokens: 1000, reserve: 10_250_000, lowered: false }));
        let p = plan(&PRICE, 100, 1000, 16, 5_250_000).unwrap();
        assert_eq!((p.max_tokens, p.reserve, p.lowered), (500, 5_250_000, true));
        // 16 output tokens need 160_000 nanos on top of the input's 250_000.
        assert_eq!(plan(&PRICE, 100, 1000, 16, 409_999), None);
        assert_eq!(plan(&PRICE, 100, 1000, 16, 410_000).map(|p| p.max_tokens), Some(16));
        // Free models always fit.
        assert!(plan(&Price::FREE, 10_000, 1000, 16, 0).is_some());
    }

    #[tokio::test]
    async fn a_team_total_binds_before_the_share() {
        let shared: Arc<dyn SharedLedger> = Arc::new(crate::shared_ledger::TeamLedger::new(1_000_000).unwrap());
        let a = Account::new(Arc::new(Mutex::new(Ledger::new(10_000_000).unwrap())), Some(shared.clone()));
        let price = Price { input: 0, output: 1_000_000_000, cache_read: 0 }; // 1000 nanos per token
        let (p, held) = a.reserve(&price, 0, 5000, 1, "op").await.ok().unwrap();
        assert_eq!((p.max_tokens, p.reserve), (1000, 1_000_000), "lowered to the shared total");
        let s = a.settle(held, 400_000, "op", 0, 400).await.ok().unwrap();
        assert_eq!(s.charged, 400_000);
        assert_eq!(shared.status().await.unwrap().spent, 400_000);
        assert_eq!(a.ledger().spent(), 400_000);
    }

    /// A call billed past its hold is charged as billed in the agent's and the
    /// team's books; the team total then passes its limit and no one reserves.
    #[tokio::test]
    async fn an_overrun_is_charged_as_billed_in_both_books() {
        let shared: Arc<dyn SharedLedger> = Arc::new(crate::shared_ledger::TeamLedger::new(1_000_000).unwrap());
        let a = Account::new(Arc::new(Mutex::new(Ledger::new(10_000_000).unwrap())), Some(shared.clone()));
        let price = Price { input: 0, output: 1_000_000_000, cache_read: 0 };
        let (p, held) = a.reserve(&price, 0, 500, 1, "op").await.ok().unwrap();
        assert_eq!(p.reserve, 500_000);
        let s = a.settle(held, 1_300_000, "op", 0, 1300).await.ok().unwrap();
        assert_eq!((s.charged, s.over_reservation), (1_300_000, 800_000));
        let team = shared.status().await.unwrap();
        assert_eq!((team.spent, team.reserved, team.available()), (1_300_000, 0, 0));
        let l = a.ledger().state();
        assert_eq!((l.spent, l.overrun), (1_300_000, 800_000));
        assert!(matches!(a.reserve(&price, 0, 500, 1, "op").await, Err(Refusal::Budget(_))));
    }
}
