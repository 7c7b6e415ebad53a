//! The write-ahead call journal: every LLM call writes an *intent* record
//! (its reservation and a digest of the request) durably before the provider
//! is called, and a *result* record (the answer, its usage and cost) durably
//! before the guest sees it. After a crash, resume knows every cent spent
//! since the last checkpoint and replays answered calls instead of paying for
//! them twice ([`reconcile`]).
//!
//! The file is append-only JSON lines, each record checksummed and tagged
//! with its run id; a reader keeps every whole, intact record and stops at
//! the first torn or damaged one (a crash mid-write). Agents of one process
//! share one journal: a writer thread gathers whatever records are waiting
//! and makes them durable with one write and one fsync (group commit).
//! This module knows nothing of wasm or the agent loop.

pub mod reconcile;

use crate::budget::Nanos;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

/// The journal's file name in a run's (or a team's) checkpoint directory.
pub const FILE: &str = "calls.journal";

/// Why the journal failed; the run stops (an unjournaled spend is not acceptable).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file cannot be opened, written or synced.
    #[error("call journal {path}: {detail}")]
    Io {
        /// The journal file.
        path: String,
        /// What the system said.
        detail: String,
    },
}

/// A call's answer as journaled: enough to give the guest the same completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The completion's text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Why it stopped.
    pub finish_reason: String,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Input tokens read from a cache.
    pub cached_tokens: u64,
    /// The max output tokens the call ran with.
    pub max_tokens: u32,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Record {
    /// Written before the provider is called.
    Intent {
        /// The run.
        run_id: String,
        /// The call's number in the run (from 0, across resumes).
        seq: u64,
        /// The cycle it was made in.
        cycle: u32,
        /// Its place among the step's calls (from 1).
        index: u32,
        /// sha256 of the guest's request (see [`request_digest`]).
        digest: String,
        /// The operation label it is charged under.
        operation: String,
        /// The money held for it.
        reserved_nanos: Nanos,
        /// Its hold on the shared ledger, if any.
        hold: Option<String>,
    },
    /// Written after the call settled, before the guest sees the answer.
    Result {
        /// The run.
        run_id: String,
        /// The intent's `seq`.
        seq: u64,
        /// What it cost.
        cost_nanos: Nanos,
        /// The answer, when the provider gave one (`None`: failed or cancelled, charged `cost_nanos`).
        answer: Option<Answer>,
    },
}

impl Record {
    /// The run the record belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            Record::Intent { run_id, .. } | Record::Result { run_id, .. } => run_id,
        }
    }

    /// The call's number in its run.
    pub fn seq(&self) -> u64 {
        match self {
            Record::Intent { seq, .. } | Record::Result { seq, .. } => *seq,
        }
    }
}

/// A line is `{"sum":"<16 hex>","rec":<record JSON>}`: the sum is the first
/// 16 hex digits of the sha256 of the record's bytes as written.
const HEAD: &[u8] = b"{\"sum\":\"";
const MID: &[u8] = b"\",\"rec\":";

/// The record's bytes of a line, if its sum matches them.
fn checked(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(HEAD)?;
    let (sum_hex, rest) = (rest.get(..16)?, rest.get(16..)?);
    let rec = rest.strip_prefix(MID)?.strip_suffix(b"}")?;
    (sum(rec).as_bytes() == sum_hex).then_some(rec)
}

fn sum(json: &[u8]) -> String {
    hex::encode(&Sha256::digest(json)[..8])
}

/// One record as the bytes of its line.
pub fn encode(rec: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(rec).expect("journal records serialise");
    let mut line = Vec::with_capacity(json.len() + 40);
    line.extend_from_slice(HEAD);
    line.extend_from_slice(sum(&json).as_bytes());
    line.extend_from_slice(MID);
    line.extend_from_slice(&json);
    line.extend_from_slice(b"}\n");
    line
}

/// The records of a journal's bytes: every whole, intact line. A line cut
/// off by a crash or damaged on disk is skipped, not misread, and said; the
/// records after it are kept (each line carries its own checksum).
pub fn decode(bytes: &[u8]) -> (Vec<Record>, Option<String>) {
    let mut out = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let Some(line) = line.strip_suffix(b"\n") else {
            problems.push(format!("record {n} is cut off (a crash mid-write)"));
            continue;
        };
        match checked(line).and_then(|rec| serde_json::from_slice::<Record>(rec).ok()) {
            Some(r) => out.push(r),
            None => problems.push(format!("record {n} is damaged (its checksum or shape is wrong)")),
        }
    }
    let why = match problems.len() {
        0 => None,
        1 => Some(format!("{}; it is ignored", problems[0])),
        k => Some(format!("{} and {} more are ignored", problems[0], k - 1)),
    };
    (out, why)
}

/// Read a journal file (a missing file is an empty journal).
pub fn read(path: &Path) -> Result<(Vec<Record>, Option<String>), JournalError> {
    match std::fs::read(path) {
        Ok(b) => Ok(decode(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), None)),
        Err(e) => Err(JournalError::Io { path: path.display().to_string(), detail: e.to_string() }),
    }
}

/// sha256 of what the guest asked for: model, max tokens, temperature and
/// every message, in order. A re-run step that asks the same gets the same digest.
pub fn request_digest(model: &str, max_tokens: Option<u32>, temperature: Option<f32>, messages: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(max_tokens.map_or(u64::MAX, u64::from).to_le_bytes());
    h.update(temperature.map_or(u32::MAX, f32::to_bits).to_le_bytes());
    for (role, content) in messages {
        h.update(role.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A waiting append: its bytes and whom to tell once they are durable.
struct Pending {
    line: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// An open journal, shared by every agent of a process (clones share the writer).
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Pending>,
    path: Arc<PathBuf>,
    /// The shared lock on `<path>.lock`, held while any clone lives.
    _lock: Arc<std::fs::File>,
}

fn flock(f: &std::fs::File, op: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this File owns and keeps open.
    match unsafe { libc::flock(f.as_raw_fd(), op) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn last_byte(path: &Path) -> std::io::Result<Option<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    if f.seek(SeekFrom::End(0))? == 0 {
        return Ok(None);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8];
    f.read_exact(&mut b)?;
    Ok(Some(b[0]))
}

/// Rewrite `path` with only the whole records `keep` accepts, if that drops anything.
fn trim(path: &Path, keep: &impl Fn(&Record) -> bool) -> std::io::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let (records, damaged) = decode(&bytes);
    let kept: Vec<&Record> = records.iter().filter(|r| keep(r)).collect();
    if kept.len() == records.len() && damaged.is_none() {
        return Ok(());
    }
    let out: Vec<u8> = kept.iter().flat_map(|r| encode(r)).collect();
    crate::durable::write_atomic(path, &out).map_err(|e| std::io::Error::other(format!("{e:#}")))
}

impl Journal {
    /// Open (or create) the journal at `path` for appending, and start its writer.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::open_trimmed(path, |_| true)
    }

    /// Open the journal at `path`, first dropping the records `keep` refuses
    /// (those no retained checkpoint needs) and any torn or damaged line, when
    /// no other process has the journal open. Every user holds a shared lock
    /// on `<path>.lock` for its life; the rewrite (temp file, rename) needs it
    /// exclusively, so it never pulls the file from under another writer.
    pub fn open_trimmed(path: &Path, keep: impl Fn(&Record) -> bool) -> Result<Journal, JournalError> {
        let io = |e: std::io::Error| JournalError::Io { path: path.display().to_string(), detail: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            trim(path, &keep).map_err(io)?;
        }
        flock(&lock, libc::LOCK_SH).map_err(io)?;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        // A line torn by a crash (in a process that shared the file) must not
        // swallow the next record: start it on a line of its own.
        let len = file.metadata().map_err(io)?.len();
        if len > 0 && last_byte(path).map_err(io)? != Some(b'\n') {
            file.write_all(b"\n").and_then(|_| file.sync_data()).map_err(io)?;
        }
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                // Group commit: whatever is waiting goes out in one write and one fsync.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let bytes: Vec<u8> = batch.iter().flat_map(|p| p.line.iter().copied()).collect();
                    if crate::crash::due("mid-journal") {
                        // A torn write: half the batch reaches the disk, then the process dies.
                        let _ = file.write_all(&bytes[..bytes.len() / 2]).and_then(|_| file.sync_data());
                        std::process::abort();
                    }
                    let r = file.write_all(&bytes).and_then(|_| file.sync_data()).map_err(|e| e.to_string());
                    for p in batch {
                        let _ = p.done.send(r.clone());
                    }
                }
            })
            .map_err(io)?;
        Ok(Journal { tx, path: Arc::new(path.to_path_buf()), _lock: Arc::new(lock) })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `rec`; returns once it is on disk (fsynced).
    pub async fn append(&self, rec: &Record) -> Result<(), JournalError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let err = |detail: String| JournalError::Io { path: self.path.display().to_string(), detail };
        self.tx.send(Pending { line: encode(rec), done }).map_err(|_| err("its writer stopped".into()))?;
        wait.await.map_err(|_| err("its writer stopped".into()))?.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(seq: u64) -> Record {
        Record::Intent {
            run_id: "r".into(),
            seq,
            cycle: 1,
            index: 1,
            digest: "d".into(),
            operation: "op".into(),
            reserved_nanos: 100,
            hold: None,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let a = intent(0);
        let b = Record::Result { run_id: "r".into(), seq: 0, cost_nanos: 42, answer: None };
        let mut bytes = encode(&a);
        bytes.extend(encode(&b));
        assert_eq!(decode(&bytes), (vec![a.clone(), b.clone()], None));
        // Cut anywhere in the last record: the whole ones before it are kept.
        let whole = encode(&a).len();
        for cut in whole..bytes.len() {
            let (recs, why) = decode(&bytes[..cut]);
            assert_eq!(recs, vec![a.clone()], "cut at {cut}");
            assert!(cut == whole || why.is_some());
        }
        // A flipped byte: the record and what follows are refused, not misread.
        let mut bad = bytes.clone();
        bad[whole + 20] ^= 0x01;
        let (recs, why) = decode(&bad);
        assert_eq!(recs, vec![a]);
        assert!(why.unwrap().contains("damaged"));
    }

    #[test]
    fn a_damaged_line_is_skipped_and_the_records_after_it_kept() {
        let (a, b, c) = (intent(0), intent(1), intent(2));
        let mut bytes = encode(&a);
        bytes.extend_from_slice(&encode(&b)[..20]); // torn by a crash ...
        bytes.push(b'\n'); // ... and a later open started a fresh line
        bytes.extend(encode(&c));
        let (recs, why) = decode(&bytes);
        assert_eq!(recs, vec![a, c]);
        assert!(why.unwrap().contains("record 2 is damaged"));
    }

    #[test]
    fn open_trims_what_no_checkpoint_needs_and_starts_on_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut bytes: Vec<u8> = (0..6).flat_map(|i| encode(&intent(i))).collect();
        bytes.extend_from_slice(&encode(&intent(6))[..30]); // torn tail
        std::fs::write(&path, &bytes).unwrap();
        // Another process has it open: no trim, but the next record starts a line of its own.
        let other = Journal::open(&path).unwrap();
        let j = Journal::open_trimmed(&path, |r| r.seq() >= 3).unwrap();
        assert_eq!(read(&path).unwrap().0.len(), 6, "not trimmed while shared");
        drop((other, j));
        let j = Journal::open_trimmed(&path, |r| r.seq() >= 3).unwrap();
        let (recs, why) = read(&path).unwrap();
        assert_eq!((recs.iter().map(Record::seq).collect::<Vec<_>>(), why), (vec![3, 4, 5], None));
        drop(j);
    }

    #[test]
    fn digests_tell_requests_apart() {
        let d = |m: &str, t: Option<u32>, msgs: &[(&str, &str)]| request_digest(m, t, None, msgs);
        let base = d("gpt-4o", Some(16), &[("user", "hi")]);
        assert_eq!(base, d("gpt-4o", Some(16), &[("user", "hi")]));
        for other in [d("gpt-4o-mini", Some(16), &[("user", "hi")]), d("gpt-4o", None, &[("user", "hi")]), d("gpt-4o", Some(16), &[("user", "hi"), ("user", "")]), d("gpt-4o", Some(16), &[("system", "hi")])] {
            assert_ne!(base, other);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_from_many_tasks_are_all_durable_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join(FILE)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    j.append(&intent(t * 1000 + i)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (recs, why) = read(&dir.path().join(FILE)).unwrap();
        assert_eq!((recs.len(), why), (400, None));
    }
}
