//! Checkpoints: `checkpoint_YYYYMMDD_HHMMSS_<cycle>_<run tag>.jsonl.gz`, a
//! gzip of JSON lines: header (format, run id, the whole [`RunSpec`] with its
//! plugin pins, room for the journal's position), budget, agent state, hook
//! states by hook name, and a trailer holding the sha256 of every byte before
//! it and, when a key is set, an HMAC.
//!
//! Loading verifies everything and refuses, naming the problem, a file that is
//! truncated, corrupt, tampered, of a future format or of wrong shape. It never
//! guesses and never silently falls back to an older file. What the sha256
//! does and does not protect: it catches damage (a torn write, a flipped bit,
//! an edit by hand), not a forger, who can recompute it. The keyed HMAC
//! (`BUDGET_HOST_SEAL_KEY`) catches a forger who lacks the key. And whatever
//! a file says, it cannot choose an endpoint, a key, or a file to write: the
//! spec holds none (see `spec`). Format 1 files (host 0.1) are read and
//! migrated (`v1`).

mod v1;

use crate::budget::LedgerState;
use crate::spec::RunSpec;
use base64::Engine as _;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The format this host writes.
pub const FORMAT: u32 = 2;
/// gzip level: the fastest (zlib-rs level 1). Checkpoints are on the hot path of a
/// stop; level 3 made files ~30% smaller and a 100 KiB save 1.6x slower (BENCHMARKS.md).
pub const GZIP_LEVEL: u32 = 1;
/// Largest decompressed checkpoint we read (a snapshot is capped far below this).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;
/// Largest agent or hook snapshot we write.
pub const MAX_SNAPSHOT: usize = crate::spec::MAX_SNAPSHOT_BYTES;
/// The environment variable holding the key of the keyed seal (any text; 16 bytes or more).
pub const SEAL_KEY_ENV: &str = "BUDGET_HOST_SEAL_KEY";

/// The seal key from the environment, if set and not empty.
pub fn seal_key_from_env() -> Option<Vec<u8>> {
    std::env::var_os(SEAL_KEY_ENV).filter(|k| !k.is_empty()).map(|k| k.into_encoded_bytes())
}

/// Why a checkpoint cannot be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("checkpoint {0} is empty")]
    Empty(String),
    #[error("checkpoint {0} is not gzip data")]
    NotGzip(String),
    #[error("checkpoint {path} is truncated or corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("checkpoint {path} is larger than {limit} bytes once decompressed")]
    TooLarge { path: String, limit: u64 },
    #[error("checkpoint {path}: line {line} is not a valid {kind} record: {detail}")]
    BadRecord { path: String, line: usize, kind: &'static str, detail: String },
    #[error("checkpoint {path} has no trailer: it is truncated")]
    NoTrailer { path: String },
    #[error("checkpoint {path} was tampered with: its sha256 does not match its trailer")]
    Tampered { path: String },
    #[error("checkpoint {path} has no keyed seal, but {SEAL_KEY_ENV} is set: it was written without the key, or its seal was removed; refusing it")]
    Unsealed { path: String },
    #[error("checkpoint {path} was tampered with: its keyed seal does not match ({SEAL_KEY_ENV})")]
    BadSeal { path: String },
    #[error("checkpoint {path} has format version {found}; this host reads versions 1 and {FORMAT} (it was written by a newer host)")]
    FutureFormat { path: String, found: u32 },
    #[error("snapshot of {what} is {size} bytes, over the limit of {MAX_SNAPSHOT} bytes")]
    SnapshotTooLarge { what: String, size: usize },
    #[error("checkpoint would be {size} bytes once decompressed, over the {MAX_DECOMPRESSED} bytes a checkpoint may hold; not written")]
    Unreadable { size: u64 },
}

/// Where the run's call journal stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalPosition {
    /// The number the run's next call gets: journal records numbered from here
    /// are after the checkpoint.
    pub next_seq: u64,
}

/// The first line: what the run is and why the file was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The format version.
    pub format: u32,
    /// The run's id.
    pub run_id: String,
    /// When it was written (local time).
    pub created: String,
    /// `periodic`, `interrupt`, `final`.
    pub reason: String,
    /// Set for interrupts: the interrupt source (`budget`, `fuel`, ...).
    pub interrupt: Option<crate::interrupt::Interrupt>,
    /// The host version that wrote it.
    pub host_version: String,
    /// The whole run, its plugins pinned to the sha256 they had.
    pub spec: RunSpec,
    /// The call journal's position (the journal fills it).
    #[serde(default)]
    pub journal: Option<JournalPosition>,
}

/// The second line: money and fuel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRecord {
    /// The agent's ledger.
    pub ledger: LedgerState,
    /// Fuel used by the run so far.
    pub fuel_used: u64,
    /// The fuel limit in force.
    pub fuel_limit: Option<u64>,
}

/// A checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// What the run is.
    pub header: Header,
    /// Its money and fuel.
    pub budget: BudgetRecord,
    /// The last cycle completed.
    pub cycle: u32,
    /// The agent's `snapshot()` bytes.
    pub agent_state: Vec<u8>,
    /// Each hook's state, by the hook's name.
    pub hook_states: Vec<(String, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Header(Header),
    Budget(BudgetRecord),
    Agent { cycle: u32, state_b64: String, state_sha256: String },
    Hook { name: String, state_b64: String },
    Trailer {
        sha256: String,
        lines: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<String>,
    },
}

/// An agent or hook line as read: the state borrowed from the file, not
/// buffered and copied as the tagged `Line` would (it is most of the file).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateLine<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    cycle: Option<u32>,
    /// Format 1 named hooks by their position.
    index: Option<usize>,
    name: Option<String>,
    #[serde(borrow)]
    state_b64: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    state_sha256: Option<std::borrow::Cow<'a, str>>,
}

/// Append `<start>,"state_b64":"..."[,"state_sha256":"..."]}` and a newline:
/// the same bytes serde writes for `Line::Agent`/`Line::Hook` (tested), with
/// the base64 encoded in place, not built as a string and scanned for escapes.
fn state_line(body: &mut Vec<u8>, start: &str, state: &[u8], sha256: Option<&str>) {
    body.extend_from_slice(start.as_bytes());
    body.extend_from_slice(b",\"state_b64\":\"");
    let at = body.len();
    body.resize(at + base64::encoded_len(state.len(), true).expect("a capped state's base64 fits in memory"), 0);
    b64().encode_slice(state, &mut body[at..]).expect("sized above");
    body.push(b'"');
    if let Some(sha) = sha256 {
        body.extend_from_slice(b",\"state_sha256\":\"");
        body.extend_from_slice(sha.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b"}\n");
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// HMAC-SHA256 of `body` under `key`, hex (tapes use it too).
pub(crate) fn seal(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `hex_mac` is the HMAC of `body` under `key` (compared in constant time).
pub(crate) fn seal_matches(key: &[u8], body: &[u8], hex_mac: &str) -> bool {
    let Ok(expected) = hex::decode(hex_mac) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A short tag of the run id in file names: retention only touches its own run's files.
pub fn run_tag(run_id: &str) -> String {
    hex::encode(&Sha256::digest(run_id.as_bytes())[..4])
}

impl Checkpoint {
    /// The file name for this checkpoint: `checkpoint_YYYYMMDD_HHMMSS_<cycle>_<run tag>.jsonl.gz`.
    pub fn file_name(&self) -> String {
        let now = chrono::Local::now().format("%Y%m%d_%H%M%S");
        format!("checkpoint_{now}_{}_{}.jsonl.gz", self.cycle, run_tag(&self.header.run_id))
    }

    /// Serialise: the JSON lines, then gzip. With `key`, the trailer carries an HMAC.
    pub fn encode(&self, key: Option<&[u8]>) -> Result<Vec<u8>, CheckpointError> {
        if self.agent_state.len() > MAX_SNAPSHOT {
            return Err(CheckpointError::SnapshotTooLarge { what: "the agent".into(), size: self.agent_state.len() });
        }
        let states: usize = self.hook_states.iter().map(|(_, s)| s.len()).sum::<usize>() + self.agent_state.len();
        let mut body = Vec::with_capacity(states * 4 / 3 + 8192);
        for r in [Line::Header(self.header.clone()), Line::Budget(self.budget.clone())] {
            serde_json::to_writer(&mut body, &r).expect("checkpoint records serialise");
            body.push(b'\n');
        }
        let sha = hex::encode(Sha256::digest(&self.agent_state));
        state_line(&mut body, &format!("{{\"kind\":\"agent\",\"cycle\":{}", self.cycle), &self.agent_state, Some(&sha));
        for (name, s) in &self.hook_states {
            if s.len() > MAX_SNAPSHOT {
                return Err(CheckpointError::SnapshotTooLarge { what: format!("hook '{name}'"), size: s.len() });
            }
            let name = serde_json::to_string(name).expect("a string serialises");
            state_line(&mut body, &format!("{{\"kind\":\"hook\",\"name\":{name}"), s, None);
        }
        let records = 3 + self.hook_states.len();
        let trailer = Line::Trailer { sha256: hex::encode(Sha256::digest(&body)), lines: records, hmac: key.map(|k| seal(k, &body)) };
        serde_json::to_writer(&mut body, &trailer).expect("checkpoint records serialise");
        body.push(b'\n');
        readable_size(body.len())?;
        let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::new(GZIP_LEVEL));
        gz.write_all(&body).expect("writing to memory");
        Ok(gz.finish().expect("writing to memory"))
    }

    /// Write durably into `dir` and return the path.
    pub fn save(&self, dir: &Path, key: Option<&[u8]>) -> anyhow::Result<PathBuf> {
        let path = dir.join(self.file_name());
        crate::durable::write_atomic(&path, &self.encode(key)?)?;
        Ok(path)
    }

    /// Read and verify a file; with `key`, its keyed seal must match.
    pub fn load(path: &Path, key: Option<&[u8]>) -> Result<Checkpoint, CheckpointError> {
        let p = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
        Checkpoint::decode(&p, &raw, key)
    }

    /// Verify and parse a checkpoint's bytes (`path` names it in errors).
    pub fn decode(path: &str, raw: &[u8], key: Option<&[u8]>) -> Result<Checkpoint, CheckpointError> {
        if raw.is_empty() {
            return Err(CheckpointError::Empty(path.into()));
        }
        if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
            return Err(CheckpointError::NotGzip(path.into()));
        }
        let mut body = Vec::new();
        GzDecoder::new(raw)
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut body)
            .map_err(|e| CheckpointError::Corrupt { path: path.into(), detail: e.to_string() })?;
        if body.len() as u64 > MAX_DECOMPRESSED {
            return Err(CheckpointError::TooLarge { path: path.into(), limit: MAX_DECOMPRESSED });
        }
        let bad = |line: usize, kind: &'static str, detail: String| CheckpointError::BadRecord { path: path.into(), line, kind, detail };

        // Split off the last line: it must be the trailer, over everything before it.
        let text = body.strip_suffix(b"\n").ok_or_else(|| CheckpointError::NoTrailer { path: path.into() })?;
        let split = text.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let (before, last) = (&body[..split], &text[split..]);
        let trailer: Line = serde_json::from_slice(last).map_err(|_| CheckpointError::NoTrailer { path: path.into() })?;
        let Line::Trailer { sha256, lines, hmac } = trailer else {
            return Err(CheckpointError::NoTrailer { path: path.into() });
        };
        if hex::encode(Sha256::digest(before)) != sha256 {
            return Err(CheckpointError::Tampered { path: path.into() });
        }
        if let Some(key) = key {
            match &hmac {
                None => return Err(CheckpointError::Unsealed { path: path.into() }),
                Some(m) if !seal_matches(key, before, m) => return Err(CheckpointError::BadSeal { path: path.into() }),
                Some(_) => {}
            }
        }

        // memchr, not `split`: the agent's line is most of the file, and a
        // byte-at-a-time split was a seventh of the load's time.
        let records: Vec<&[u8]> = {
            let body = before.strip_suffix(b"\n").unwrap_or(before);
            let mut start = 0;
            let mut out: Vec<&[u8]> = memchr::memchr_iter(b'\n', body).map(|i| std::mem::replace(&mut start, i + 1)..i).map(|r| &body[r]).collect();
            out.push(&body[start..]);
            out
        };
        if records.len() != lines || lines < 3 {
            return Err(bad(records.len(), "trailer", format!("it counts {lines} lines, the file has {}", records.len())));
        }
        // The format version first, so a future file says so rather than failing on a field.
        let version = serde_json::from_slice::<serde_json::Value>(records[0])
            .ok()
            .and_then(|v| v.get("format").and_then(|f| f.as_u64()))
            .ok_or_else(|| bad(1, "header", "no format version".into()))?;
        let budget = match serde_json::from_slice(records[1]).map_err(|e| bad(2, "budget", e.to_string()))? {
            Line::Budget(b) => b,
            _ => return Err(bad(2, "budget", "the second line is not the budget".into())),
        };
        let (header, v1_hooks) = match version {
            1 => {
                let (h, names) = v1::header(records[0], &budget).map_err(|e| bad(1, "header", e))?;
                (h, Some(names))
            }
            2 => match serde_json::from_slice(records[0]).map_err(|e| bad(1, "header", e.to_string()))? {
                Line::Header(h) => (h, None),
                _ => return Err(bad(1, "header", "the first line is not the header".into())),
            },
            v => return Err(CheckpointError::FutureFormat { path: path.into(), found: v.min(u32::MAX as u64) as u32 }),
        };
        // Hashes are shown and compared later: a malformed one must not reach that code.
        for p in header.spec.plugins().chain(header.spec.script.iter()) {
            if let Some(h) = &p.sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(bad(1, "header", format!("{} has a sha256 that is not 64 lowercase hex digits", p.path.display())));
                }
            }
        }
        crate::budget::Ledger::from_state(&budget.ledger).map_err(|e| bad(2, "budget", e.to_string()))?;
        let agent: StateLine = serde_json::from_slice(records[2]).map_err(|e| bad(3, "agent", e.to_string()))?;
        let (Some(cycle), Some(sha), None, None, "agent") = (agent.cycle, &agent.state_sha256, agent.index, &agent.name, &*agent.kind) else {
            return Err(bad(3, "agent", "the third line is not the agent state".into()));
        };
        let agent_state = b64().decode(&*agent.state_b64).map_err(|e| bad(3, "agent", e.to_string()))?;
        if hex::encode(Sha256::digest(&agent_state)) != **sha {
            return Err(bad(3, "agent", "state does not match its sha256".into()));
        }
        let mut hook_states: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, rec) in records[3..].iter().enumerate() {
            let hook: StateLine = serde_json::from_slice(rec).map_err(|e| bad(4 + i, "hook", e.to_string()))?;
            let name = match (&v1_hooks, hook.index, hook.name, &hook.cycle, &hook.state_sha256, &*hook.kind) {
                (Some(names), Some(index), None, None, None, "hook") if index == i && i < names.len() => names[i].clone(),
                (None, None, Some(name), None, None, "hook") if !hook_states.iter().any(|(n, _)| *n == name) => name,
                _ => return Err(bad(4 + i, "hook", format!("expected hook state {}", i + 1))),
            };
            let state = b64().decode(&*hook.state_b64).map_err(|e| bad(4 + i, "hook", e.to_string()))?;
            hook_states.push((name, state));
        }
        let named: Vec<&str> = header.spec.hooks.iter().map(|h| h.name.as_str()).collect();
        let held: Vec<&str> = hook_states.iter().map(|(n, _)| n.as_str()).collect();
        if named != held {
            return Err(bad(1, "header", format!("it names the hooks {named:?}, the file holds states of {held:?}")));
        }
        Ok(Checkpoint { header, budget, cycle, agent_state, hook_states })
    }
}

/// A checkpoint the reader would refuse is never written: base64 makes each
/// state 4/3 its size, so an agent and several hooks near their caps can add
/// up past `MAX_DECOMPRESSED`. Refusing here keeps the previous checkpoint.
fn readable_size(body: usize) -> Result<(), CheckpointError> {
    if body as u64 > MAX_DECOMPRESSED {
        return Err(CheckpointError::Unreadable { size: body as u64 });
    }
    Ok(())
}

/// A checkpoint file's name, parsed: `(date_time, cycle, run tag)`.
fn parse_name(name: &str) -> Option<(String, u64, Option<String>)> {
    let stem = name.strip_prefix("checkpoint_")?.strip_suffix(".jsonl.gz")?;
    // YYYYMMDD_HHMMSS_<cycle>[_<tag>]
    let parts: Vec<&str> = stem.split('_').collect();
    let (date, time, cycle, tag) = match parts.as_slice() {
        [d, t, c] => (d, t, c, None),
        [d, t, c, tag] => (d, t, c, Some(tag.to_string())),
        _ => return None,
    };
    Some((format!("{date}_{time}"), cycle.parse().ok()?, tag))
}

/// Checkpoint files in `dir`, newest first (by the time and cycle in their names).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(list_tagged(dir)?.into_iter().map(|(p, _)| p).collect())
}

fn list_tagged(dir: &Path) -> std::io::Result<Vec<(PathBuf, Option<String>)>> {
    let mut found: Vec<(String, u64, PathBuf, Option<String>)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some((when, cycle, tag)) = parse_name(name) else { continue };
        found.push((when, cycle, path, tag));
    }
    found.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
    Ok(found.into_iter().map(|(_, _, p, t)| (p, t)).collect())
}

/// For each run with checkpoints in `dir` or one level under it (a team's
/// agents): the oldest journal position any of them needs (a run's journal
/// records before it can go), by run tag. Reads only each file's first line;
/// a file that cannot be read counts as needing everything.
pub fn journal_needs(dir: &Path) -> std::io::Result<std::collections::HashMap<String, u64>> {
    let mut needs = std::collections::HashMap::new();
    let mut files = list_tagged(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(list_tagged(&path)?);
        }
    }
    for (path, tag) in files {
        let Some(tag) = tag else { continue };
        let from = first_line(&path).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok()).map(|h| {
            let run = h["run_id"].as_str().map(run_tag).unwrap_or_else(|| tag.clone());
            (run, h["journal"]["next_seq"].as_u64().unwrap_or(0))
        });
        let (run, seq) = from.unwrap_or((tag, 0));
        let e = needs.entry(run).or_insert(u64::MAX);
        *e = (*e).min(seq);
    }
    Ok(needs)
}

/// The first line of a gzip file, at most 1 MiB of it.
fn first_line(path: &Path) -> Option<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(GzDecoder::new(file).take(1 << 20)).read_line(&mut line).ok()?;
    Some(line)
}

/// Keep the newest `keep` checkpoints of run `run_id` in `dir` (other runs'
/// files are never touched); returns the ones removed.
pub fn retain(dir: &Path, run_id: &str, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let tag = run_tag(run_id);
    let mut removed = Vec::new();
    for (p, _) in list_tagged(dir)?.into_iter().filter(|(_, t)| t.as_deref() == Some(tag.as_str())).skip(keep) {
        std::fs::remove_file(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
