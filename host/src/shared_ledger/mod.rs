//! Money shared beyond one agent: a team's total in one process, or one
//! budget shared by many hosts on Redis.
//!
//! Every agent keeps its own pure `Ledger` (its share, its breakdown); a call
//! must also fit the shared ledger. One trait, two implementations: `TeamLedger` wraps
//! the pure ledger behind a lock; `RedisLedger` makes check-and-reserve one
//! atomic step on a Redis server, with a lease on each reservation so a
//! crashed host's hold expires instead of leaking.

pub mod redis;

use crate::budget::{Ledger, Nanos, Reservation};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why the shared ledger refused or failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum SharedLedgerError {
    #[error("the shared budget is exhausted: {available} nano-USD available")]
    Exhausted { available: Nanos },
    #[error("the shared ledger is unreachable: {0}")]
    Unavailable(String),
}

/// A hold on pool money for one call in flight.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a hold must be settled or released"]
pub struct Hold {
    /// The hold's id on the ledger.
    pub id: String,
    /// The money held.
    pub amount: Nanos,
}

/// A shared ledger's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedStatus {
    /// The shared limit.
    pub limit: Nanos,
    /// Money charged (past the limit only by recorded overruns).
    pub spent: Nanos,
    /// Money held by calls in flight.
    pub reserved: Nanos,
}

impl SharedStatus {
    /// What is left to reserve.
    pub fn available(&self) -> Nanos {
        // Saturating: an overrun may have taken spent to the top.
        self.limit.saturating_sub(self.spent.saturating_add(self.reserved))
    }
}

/// A budget above one agent's: a team's total, or one shared by many hosts.
#[async_trait::async_trait]
pub trait SharedLedger: Send + Sync {
    /// Its name in messages.
    fn describe(&self) -> String;
    /// Its figures now.
    async fn status(&self) -> Result<SharedStatus, SharedLedgerError>;
    /// Hold `amount` for a call, or say how much is left.
    async fn reserve(&self, amount: Nanos) -> Result<Hold, SharedLedgerError>;
    /// Charge `cost` as reported and free the hold. A cost past the hold is
    /// charged in full, even past the limit (then no one can reserve): the
    /// books equal the bill. Returns what was charged.
    async fn settle(&self, hold: Hold, cost: Nanos) -> Result<Nanos, SharedLedgerError>;
    /// Free a hold: the call was not billed.
    async fn release(&self, hold: Hold) -> Result<(), SharedLedgerError>;
    /// How long a hold lives unless renewed (`None`: until settled or released).
    fn lease(&self) -> Option<std::time::Duration> {
        None
    }
    /// Keep a hold alive through a long call; `false` when it already expired
    /// (it was then charged in full, and its settle replaces that charge).
    async fn renew(&self, _hold: &Hold) -> Result<bool, SharedLedgerError> {
        Ok(true)
    }
}

/// A team's total in one process: the pure ledger behind a lock.
pub struct TeamLedger {
    ledger: Mutex<Ledger>,
    holds: Mutex<HashMap<String, Reservation>>,
    next: AtomicU64,
}

impl TeamLedger {
    /// A team pool of `limit` nano-USD.
    pub fn new(limit: Nanos) -> Result<Self, crate::budget::BudgetError> {
        Ok(TeamLedger { ledger: Mutex::new(Ledger::new(limit)?), holds: Mutex::new(HashMap::new()), next: AtomicU64::new(0) })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl SharedLedger for TeamLedger {
    fn describe(&self) -> String {
        "team pool (in process)".into()
    }
    async fn status(&self) -> Result<SharedStatus, SharedLedgerError> {
        let l = self.ledger();
        Ok(SharedStatus { limit: l.limit(), spent: l.spent(), reserved: l.reserved() })
    }
    async fn reserve(&self, amount: Nanos) -> Result<Hold, SharedLedgerError> {
        // One guard for both: calling `ledger()` again inside `map_err` would deadlock.
        let r = {
            let mut l = self.ledger();
            l.reserve(amount).map_err(|_| SharedLedgerError::Exhausted { available: l.available() })?
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        self.holds.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), r);
        Ok(Hold { id, amount })
    }
    async fn settle(&self, hold: Hold, cost: Nanos) -> Result<Nanos, SharedLedgerError> {
        let r = self.holds.lock().unwrap_or_else(|p| p.into_inner()).remove(&hold.id);
        match r {
            Some(r) => Ok(self.ledger().settle(r, cost, "pool", 0, 0).charged),
            None => Err(SharedLedgerError::Unavailable(format!("unknown hold {}", hold.id))),
        }
    }
    async fn release(&self, hold: Hold) -> Result<(), SharedLedgerError> {
        if let Some(r) = self.holds.lock().unwrap_or_else(|p| p.into_inner()).remove(&hold.id) {
            self.ledger().release(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Many threads hammer one pool: the total charged never exceeds the limit,
    /// and nothing is lost or double-counted.
    #[test]
    fn local_pool_holds_the_cap_under_contention() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
        let pool = Arc::new(TeamLedger::new(1_000_000).unwrap());
        let charged = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..16u64 {
                let (pool, charged) = (pool.clone(), charged.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..2_000u64 {
                        let want = 100 + (i * 7 + t) % 900;
                        match pool.reserve(want).await {
                            Ok(h) => {
                                let cost = want * ((i + t) % 4) / 3; // sometimes above the hold
                                let c = pool.settle(h, cost).await.unwrap();
                                assert!(c <= want);
                                charged.fetch_add(c, Ordering::Relaxed);
                            }
                            Err(SharedLedgerError::Exhausted { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let s = rt.block_on(pool.status()).unwrap();
        assert_eq!(s.reserved, 0);
        assert_eq!(s.spent, charged.load(Ordering::Relaxed));
        assert!(s.spent <= s.limit);
        assert!(s.limit - s.spent < 1_000, "the budget was used to within one call: {}", s.limit - s.spent);
    }
}
