//! What a crash left behind, from the journal's records of one run after its
//! checkpoint: calls that settled (their cost is spent, their answers can be
//! replayed at $0), and calls whose outcome is unknown (an intent without a
//! result: the provider may have billed it, so its whole reservation is
//! charged). Pure: no IO, no clock.

use super::{Answer, Record};
use crate::budget::Nanos;
use std::collections::{BTreeMap, VecDeque};

/// A call that settled after the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// Its number in the run.
    pub seq: u64,
    /// Its operation label.
    pub operation: String,
    /// What it cost.
    pub cost: Nanos,
    /// Its answer, if it had one (a failed call charged its reservation has none).
    pub answer: Option<Answer>,
    /// Where it was made: cycle, place in the step, request digest.
    pub cycle: u32,
    /// Its place among the step's calls.
    pub index: u32,
    /// sha256 of its request.
    pub digest: String,
}

/// A call with an intent and no result.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    /// Its number in the run.
    pub seq: u64,
    /// Its operation label.
    pub operation: String,
    /// Its reservation, charged in full.
    pub reserved: Nanos,
    /// Its hold on a shared ledger, settled by id at resume.
    pub hold: Option<String>,
}

/// The journal after a checkpoint, read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconciled {
    /// Calls that settled, in order.
    pub settled: Vec<Settled>,
    /// Calls whose outcome is unknown.
    pub unknown: Vec<Unknown>,
    /// The next call's number.
    pub next_seq: u64,
}

impl Reconciled {
    /// Money spent after the checkpoint: settled costs plus unknown reservations.
    pub fn spent(&self) -> Nanos {
        let s = self.settled.iter().fold(0u64, |a, c| a.saturating_add(c.cost));
        self.unknown.iter().fold(s, |a, c| a.saturating_add(c.reserved))
    }

    /// The answered calls to replay, in the order they were made.
    pub fn replay(&self) -> VecDeque<Settled> {
        self.settled.iter().filter(|s| s.answer.is_some()).cloned().collect()
    }
}

/// The calls of `run_id` numbered `from_seq` and later (those after its checkpoint).
pub fn reconcile(records: &[Record], run_id: &str, from_seq: u64) -> Reconciled {
    let mut intents: BTreeMap<u64, (u32, u32, String, String, Nanos, Option<String>)> = BTreeMap::new();
    let mut results: BTreeMap<u64, (Nanos, Option<Answer>)> = BTreeMap::new();
    let mut next_seq = from_seq;
    for r in records.iter().filter(|r| r.run_id() == run_id) {
        match r {
            Record::Intent { seq, cycle, index, digest, operation, reserved_nanos, hold, .. } if *seq >= from_seq => {
                next_seq = next_seq.max(seq.saturating_add(1));
                intents.insert(*seq, (*cycle, *index, digest.clone(), operation.clone(), *reserved_nanos, hold.clone()));
            }
            Record::Result { seq, cost_nanos, answer, .. } if *seq >= from_seq => {
                results.insert(*seq, (*cost_nanos, answer.clone()));
            }
            _ => {}
        }
    }
    let mut out = Reconciled { next_seq, ..Default::default() };
    for (seq, (cycle, index, digest, operation, reserved, hold)) in intents {
        match results.remove(&seq) {
            Some((cost, answer)) => out.settled.push(Settled { seq, operation, cost, answer, cycle, index, digest }),
            None => out.unknown.push(Unknown { seq, operation, reserved, hold }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(run: &str, seq: u64, reserved: Nanos) -> Record {
        Record::Intent { run_id: run.into(), seq, cycle: 1 + seq as u32, index: 1, digest: format!("d{seq}"), operation: format!("op{seq}"), reserved_nanos: reserved, hold: None }
    }

    fn result(run: &str, seq: u64, cost: Nanos, answered: bool) -> Record {
        let answer = answered.then(|| Answer {
            text: format!("answer {seq}"),
            model: "m".into(),
            finish_reason: "stop".into(),
            input_tokens: 1,
            output_tokens: 2,
            cached_tokens: 0,
            max_tokens: 16,
        });
        Record::Result { run_id: run.into(), seq, cost_nanos: cost, answer }
    }

    #[test]
    fn settled_calls_count_unknown_ones_are_charged_in_full() {
        let records = vec![
            intent("r", 0, 100),
            result("r", 0, 40, true), // before the checkpoint: ignored
            intent("r", 1, 100),
            result("r", 1, 30, true),
            intent("other", 1, 999),
            result("other", 1, 999, true),
            intent("r", 2, 100),
            result("r", 2, 100, false), // failed, charged its reservation
            intent("r", 3, 100),        // crashed in flight
        ];
        let c = reconcile(&records, "r", 1);
        assert_eq!(c.settled.iter().map(|s| (s.seq, s.cost)).collect::<Vec<_>>(), vec![(1, 30), (2, 100)]);
        assert_eq!(c.unknown.iter().map(|u| (u.seq, u.reserved)).collect::<Vec<_>>(), vec![(3, 100)]);
        assert_eq!(c.spent(), 230);
        assert_eq!(c.next_seq, 4);
        let replay: Vec<u64> = c.replay().iter().map(|s| s.seq).collect();
        assert_eq!(replay, vec![1], "only answered calls replay");
    }

    #[test]
    fn an_empty_journal_changes_nothing() {
        let c = reconcile(&[], "r", 7);
        assert_eq!((c.spent(), c.next_seq, c.replay().len()), (0, 7, 0));
    }
}
