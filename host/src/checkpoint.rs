//! Checkpoints: `checkpoint_YYYYMMDD_HHMMSS_<cycle>.jsonl.gz`, a gzip of JSON lines:
//! header, budget, agent state, hook states, and a trailer holding the sha256
//! of every byte before it.
//!
//! Loading verifies everything and refuses, naming the problem, a file that is
//! truncated, corrupt, tampered, of a future format or of wrong shape. It never
//! guesses and never silently falls back to an older file.

use crate::budget::LedgerState;
use base64::Engine as _;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const FORMAT: u32 = 1;
/// gzip level: the fastest (zlib-rs level 1). Checkpoints are on the hot path of a
/// stop; level 3 made files ~30% smaller and a 100 KiB save 1.6x slower (BENCHMARKS.md).
pub const GZIP_LEVEL: u32 = 1;
/// Largest decompressed checkpoint we read (a snapshot is capped far below this).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;
/// Largest agent or hook snapshot we write.
pub const MAX_SNAPSHOT: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
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
    #[error("checkpoint {path} has format version {found}; this host reads version {FORMAT} (it was written by a newer host)")]
    FutureFormat { path: String, found: u32 },
    #[error("snapshot of {what} is {size} bytes, over the limit of {MAX_SNAPSHOT} bytes")]
    SnapshotTooLarge { what: String, size: usize },
    #[error("checkpoint would be {size} bytes once decompressed, over the {MAX_DECOMPRESSED} bytes a checkpoint may hold; not written")]
    Unreadable { size: u64 },
}

/// What produced the plugin: path and content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    pub run_id: String,
    pub created: String,
    /// `periodic`, `interrupt`, `final`.
    pub reason: String,
    /// Set for interrupts: the interrupt source (`budget`, `fuel`, ...).
    pub interrupt: Option<crate::interrupt::Interrupt>,
    pub agent: PluginRef,
    pub hooks: Vec<PluginRef>,
    pub host_version: String,
    /// The run's settings as given on the command line, so resume can rebuild it.
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRecord {
    pub ledger: LedgerState,
    pub fuel_used: u64,
    pub fuel_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub header: Header,
    pub budget: BudgetRecord,
    /// Cycles completed; the resumed run starts at `cycle + 1`.
    pub cycle: u32,
    pub agent_state: Vec<u8>,
    pub hook_states: Vec<Vec<u8>>,
}

/// One line of the file, tagged by `kind`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Header(Header),
    Budget(BudgetRecord),
    Agent { cycle: u32, state_b64: String, state_sha256: String },
    Hook { index: usize, state_b64: String },
    Trailer { sha256: String, lines: usize },
}

/// An agent or hook line as read: the state borrowed from the file, not
/// buffered and copied as the tagged `Line` would (it is most of the file).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateLine<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    cycle: Option<u32>,
    index: Option<usize>,
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

impl Checkpoint {
    /// The file name for this checkpoint: `checkpoint_YYYYMMDD_HHMMSS_<cycle>.jsonl.gz`.
    pub fn file_name(&self) -> String {
        let now = chrono::Local::now().format("%Y%m%d_%H%M%S");
        format!("checkpoint_{now}_{}.jsonl.gz", self.cycle)
    }

    /// Serialise: the JSON lines, then gzip.
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        if self.agent_state.len() > MAX_SNAPSHOT {
            return Err(CheckpointError::SnapshotTooLarge { what: "the agent".into(), size: self.agent_state.len() });
        }
        let states: usize = self.hook_states.iter().map(Vec::len).sum::<usize>() + self.agent_state.len();
        let mut body = Vec::with_capacity(states * 4 / 3 + 4096);
        for r in [Line::Header(self.header.clone()), Line::Budget(self.budget.clone())] {
            serde_json::to_writer(&mut body, &r).expect("checkpoint records serialise");
            body.push(b'\n');
        }
        let sha = hex::encode(Sha256::digest(&self.agent_state));
        state_line(&mut body, &format!("{{\"kind\":\"agent\",\"cycle\":{}", self.cycle), &self.agent_state, Some(&sha));
        for (index, s) in self.hook_states.iter().enumerate() {
            if s.len() > MAX_SNAPSHOT {
                return Err(CheckpointError::SnapshotTooLarge { what: format!("hook {index}"), size: s.len() });
            }
            state_line(&mut body, &format!("{{\"kind\":\"hook\",\"index\":{index}"), s, None);
        }
        let records = 3 + self.hook_states.len();
        let trailer = Line::Trailer { sha256: hex::encode(Sha256::digest(&body)), lines: records };
        serde_json::to_writer(&mut body, &trailer).expect("checkpoint records serialise");
        body.push(b'\n');
        readable_size(body.len())?;
        let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::new(GZIP_LEVEL));
        gz.write_all(&body).expect("writing to memory");
        Ok(gz.finish().expect("writing to memory"))
    }

    /// Write durably into `dir` and return the path.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(self.file_name());
        crate::durable::write_atomic(&path, &self.encode()?)?;
        Ok(path)
    }

    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let p = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
        Checkpoint::decode(&p, &raw)
    }

    pub fn decode(path: &str, raw: &[u8]) -> Result<Checkpoint, CheckpointError> {
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
        let Line::Trailer { sha256, lines } = trailer else {
            return Err(CheckpointError::NoTrailer { path: path.into() });
        };
        if hex::encode(Sha256::digest(before)) != sha256 {
            return Err(CheckpointError::Tampered { path: path.into() });
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
        if version != FORMAT as u64 {
            return Err(CheckpointError::FutureFormat { path: path.into(), found: version as u32 });
        }
        let header = match serde_json::from_slice(records[0]).map_err(|e| bad(1, "header", e.to_string()))? {
            Line::Header(h) => h,
            _ => return Err(bad(1, "header", "the first line is not the header".into())),
        };
        // Hashes are shown and compared later: a forged one (the trailer is a
        // checksum, not a signature) must not reach that code.
        let plugins = std::iter::once(("agent", &header.agent)).chain(header.hooks.iter().map(|h| ("hook", h)));
        for (what, p) in plugins {
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(bad(1, "header", format!("the {what} {} has a sha256 that is not 64 lowercase hex digits", p.path.display())));
            }
        }
        let budget = match serde_json::from_slice(records[1]).map_err(|e| bad(2, "budget", e.to_string()))? {
            Line::Budget(b) => b,
            _ => return Err(bad(2, "budget", "the second line is not the budget".into())),
        };
        crate::budget::Ledger::from_state(&budget.ledger).map_err(|e| bad(2, "budget", e.to_string()))?;
        let agent: StateLine = serde_json::from_slice(records[2]).map_err(|e| bad(3, "agent", e.to_string()))?;
        let (Some(cycle), Some(sha), None, "agent") = (agent.cycle, &agent.state_sha256, agent.index, &*agent.kind) else {
            return Err(bad(3, "agent", "the third line is not the agent state".into()));
        };
        let agent_state = b64().decode(&*agent.state_b64).map_err(|e| bad(3, "agent", e.to_string()))?;
        if hex::encode(Sha256::digest(&agent_state)) != **sha {
            return Err(bad(3, "agent", "state does not match its sha256".into()));
        }
        let mut hook_states = Vec::new();
        for (i, rec) in records[3..].iter().enumerate() {
            let hook: StateLine = serde_json::from_slice(rec).map_err(|e| bad(4 + i, "hook", e.to_string()))?;
            match (hook.index, &hook.cycle, &hook.state_sha256, &*hook.kind) {
                (Some(index), None, None, "hook") if index == i => {
                    hook_states.push(b64().decode(&*hook.state_b64).map_err(|e| bad(4 + i, "hook", e.to_string()))?)
                }
                _ => return Err(bad(4 + i, "hook", format!("expected hook state {i}"))),
            }
        }
        if hook_states.len() != header.hooks.len() {
            return Err(bad(1, "header", format!("it names {} hooks, the file holds {} hook states", header.hooks.len(), hook_states.len())));
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

/// Checkpoint files in `dir`, newest first (by the time and cycle in their names).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(String, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_prefix("checkpoint_").and_then(|n| n.strip_suffix(".jsonl.gz")) else { continue };
        // YYYYMMDD_HHMMSS_<cycle>
        let mut parts = stem.rsplitn(2, '_');
        let (Some(cycle), Some(when)) = (parts.next(), parts.next()) else { continue };
        let Ok(cycle) = cycle.parse::<u64>() else { continue };
        found.push((when.to_string(), cycle, path));
    }
    found.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

/// Keep the newest `keep` checkpoints in `dir`; returns the ones removed.
pub fn retain(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let all = list(dir)?;
    let mut removed = Vec::new();
    for p in all.into_iter().skip(keep) {
        std::fs::remove_file(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Ledger;

    fn sample() -> Checkpoint {
        let mut l = Ledger::new(100_000_000).unwrap().with_thresholds(&[0.5, 0.8]);
        let r = l.reserve(60_000_000).unwrap();
        let _ = l.settle(r, 55_000_000, "llm_call_cycle_1", 100, 200);
        Checkpoint {
            header: Header {
                format: FORMAT,
                run_id: "essay-1".into(),
                created: "2026-11-30T10:00:00".into(),
                reason: "periodic".into(),
                interrupt: None,
                agent: PluginRef { path: "a.wasm".into(), sha256: "ab".repeat(32) },
                hooks: vec![PluginRef { path: "h.wasm".into(), sha256: "cd".repeat(32) }],
                host_version: "0.1.0".into(),
                settings: serde_json::json!({"budget": "0.1"}),
            },
            budget: BudgetRecord { ledger: l.state(), fuel_used: 12345, fuel_limit: None },
            cycle: 3,
            agent_state: b"{\"sections\":[\"a\",\"b\"]}".to_vec(),
            hook_states: vec![b"hook".to_vec()],
        }
    }

    fn gunzip(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(raw).read_to_end(&mut out).unwrap();
        out
    }

    fn gzip(body: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(body).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn state_lines_are_what_serde_writes() {
        let mut body = Vec::new();
        state_line(&mut body, "{\"kind\":\"agent\",\"cycle\":7", b"st\x00ate", Some("abc"));
        state_line(&mut body, "{\"kind\":\"hook\",\"index\":2", b"", None);
        let mut want = serde_json::to_vec(&Line::Agent { cycle: 7, state_b64: b64().encode(b"st\x00ate"), state_sha256: "abc".into() }).unwrap();
        want.push(b'\n');
        want.extend(serde_json::to_vec(&Line::Hook { index: 2, state_b64: String::new() }).unwrap());
        want.push(b'\n');
        assert_eq!(String::from_utf8(body).unwrap(), String::from_utf8(want).unwrap());
    }

    #[test]
    fn round_trips() {
        let c = sample();
        assert_eq!(Checkpoint::decode("x", &c.encode().unwrap()).unwrap(), c);
    }

    #[test]
    fn refuses_every_kind_of_damage() {
        let good = sample().encode().unwrap();
        let msg = |raw: &[u8]| Checkpoint::decode("f", raw).unwrap_err().to_string();
        assert!(msg(b"").contains("is empty"));
        assert!(msg(b"hello").contains("not gzip"));
        assert!(msg(&good[..good.len() / 2]).contains("truncated or corrupt"));
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x10;
        let m = msg(&flipped);
        assert!(m.contains("corrupt") || m.contains("tampered"), "{m}");
        assert!(msg(&gzip(b"{\"not\": \"a checkpoint\"}\n")).contains("no trailer"));
        // Tampered: change spent in the budget line, keep the old trailer.
        let body = String::from_utf8(gunzip(&good)).unwrap();
        let tampered = body.replace("\"spent\":55000000", "\"spent\":5000000");
        assert_ne!(tampered, body);
        assert!(msg(&gzip(tampered.as_bytes())).contains("tampered"));
        // Truncated body (lines lost) with a valid gzip stream.
        let cut: String = body.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(msg(&gzip(cut.as_bytes())).contains("no trailer"));
    }

    /// Re-seal a modified body with a fresh trailer, as a careful forger would.
    fn reseal(body: &str) -> Vec<u8> {
        let lines: Vec<&str> = body.lines().collect();
        let before: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
        let sha = hex::encode(Sha256::digest(before.as_bytes()));
        gzip(format!("{before}{{\"kind\":\"trailer\",\"sha256\":\"{sha}\",\"lines\":{}}}\n", lines.len() - 1).as_bytes())
    }

    #[test]
    fn refuses_wrong_types_and_future_versions() {
        let body = String::from_utf8(gunzip(&sample().encode().unwrap())).unwrap();
        let msg = |raw: &[u8]| Checkpoint::decode("f", raw).unwrap_err().to_string();
        assert!(msg(&reseal(&body.replace("\"format\":1", "\"format\":2"))).contains("format version 2"));
        assert!(msg(&reseal(&body.replace("\"fuel_used\":12345", "\"fuel_used\":\"12345\""))).contains("not a valid budget record"));
        assert!(msg(&reseal(&body.replace("\"cycle\":3", "\"cycle\":-3"))).contains("not a valid agent record"));
        // An inconsistent ledger (spent != sum of operations) is refused too.
        assert!(msg(&reseal(&body.replace("\"spent\":55000000", "\"spent\":5000000"))).contains("inconsistent"));
        // Unknown fields are not silently dropped.
        assert!(msg(&reseal(&body.replace("\"reason\":", "\"extra\":1,\"reason\":"))).contains("header"));
    }

    /// Regression: an agent at the 256 MiB cap and four hooks at 128 MiB
    /// (base64: 4/3 of each) made a file the reader refuses as too large.
    #[test]
    fn never_writes_what_it_would_refuse_to_read() {
        let b64 = |n: u64| n.div_ceil(3) * 4;
        let states = b64(MAX_SNAPSHOT as u64) + 4 * b64(128 << 20);
        assert!(states > MAX_DECOMPRESSED, "the case is reachable");
        assert!(readable_size(states as usize).unwrap_err().to_string().contains("not written"));
        assert!(readable_size(MAX_DECOMPRESSED as usize).is_ok());
        assert!(readable_size(MAX_DECOMPRESSED as usize + 1).is_err());
    }

    #[test]
    fn lists_newest_first_and_retains() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["checkpoint_20261130_100000_5.jsonl.gz", "checkpoint_20261130_100000_10.jsonl.gz", "checkpoint_20261130_090000_20.jsonl.gz", "other.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let names: Vec<String> = list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["checkpoint_20261130_100000_10.jsonl.gz", "checkpoint_20261130_100000_5.jsonl.gz", "checkpoint_20261130_090000_20.jsonl.gz"]);
        assert_eq!(retain(dir.path(), 1).unwrap().len(), 2);
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        assert!(dir.path().join("other.txt").exists());
    }
}
