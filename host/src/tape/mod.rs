//! Tapes: a run's calls made portable, for `host run --record` and
//! `host replay` (record once against a paid model, replay at $0).
//!
//! A tape is JSON lines, gzipped when its name ends in `.gz`: a [`Header`]
//! (format name and version, host version, run id, the agent's path and
//! sha256, the settings that shape what the agent asks), one [`Call`] per
//! `llm.complete` the agent made (where, what it asked in full, what it got
//! and what that cost), an [`End`] (how the run ended), and a trailer with
//! the sha256 of every line before it and, with `BUDGET_HOST_SEAL_KEY`, an
//! HMAC. A tape holds no endpoint, header, key, base URL or file to write:
//! the only path in it is the agent's, a file to read, checked against its
//! sha256. Reading one verifies all of it and refuses, naming the problem, a
//! file that is not a tape, of another format version, truncated, tampered
//! or unsealed when a key is set. This module knows nothing of wasm or the
//! agent loop.

pub mod diff;

use crate::budget::Nanos;
use crate::interrupt::{Mode, Source};
use crate::journal::Answer;
use crate::llm::Role;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The `format` a tape's header names.
pub const FORMAT: &str = "budget-host-tape";
/// The format version this host writes and reads.
pub const VERSION: u32 = 1;
/// Largest tape read (decompressed): far above any run's calls, bounded for a hostile file.
pub const MAX_BYTES: u64 = 1 << 30;

/// Why a tape cannot be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum TapeError {
    #[error("cannot read tape {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("tape {0} is empty")]
    Empty(String),
    #[error("{0} is not a tape: its first line is not a {FORMAT} header")]
    Foreign(String),
    #[error("tape {path} has format version {found}; this host reads version {VERSION}")]
    Version { path: String, found: u64 },
    #[error("tape {path} is truncated: {detail}")]
    Truncated { path: String, detail: String },
    #[error("tape {path} is larger than {MAX_BYTES} bytes once decompressed")]
    TooLarge { path: String },
    #[error("tape {path} was tampered with or damaged: its sha256 does not match its trailer")]
    Tampered { path: String },
    #[error("tape {path} has no keyed seal, but {} is set: it was written without the key, or its seal was removed; refusing it", crate::checkpoint::SEAL_KEY_ENV)]
    Unsealed { path: String },
    #[error("tape {path} was tampered with: its keyed seal does not match ({})", crate::checkpoint::SEAL_KEY_ENV)]
    BadSeal { path: String },
    #[error("tape {path}: line {line} is not a valid {kind} record: {detail}")]
    BadRecord { path: String, line: usize, kind: &'static str, detail: String },
}

/// The recorded agent: a file to read, checked against its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPin {
    /// Its name in logs.
    pub name: String,
    /// Where the recording read it (as given on its command line).
    pub path: PathBuf,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: String,
}

/// The run settings that shape what the agent asks and sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The task given to `init`.
    pub task: String,
    /// The model of calls that name none.
    pub model: String,
    /// The budget the agent saw, in nano-USD.
    pub budget_nanos: Nanos,
    /// `--max-cycles`.
    pub max_cycles: u32,
    /// Max output tokens of a call that names none.
    pub max_tokens: u32,
    /// Sampling temperature of calls that set none.
    pub temperature: Option<f32>,
    /// Fuel limit for the run.
    pub fuel: Option<u64>,
    /// Memory limit per agent instance, in bytes.
    pub memory_bytes: usize,
    /// How a budget stop behaved.
    pub mode: Mode,
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The host version that recorded it.
    pub host_version: String,
    /// When it was recorded (local time).
    pub created: String,
    /// The recorded run's id (its sampling seeds derive from it).
    pub run_id: String,
    /// The provider that answered (`openai`, `local`, ...): said, never used.
    pub provider: String,
    /// The agent.
    pub agent: AgentPin,
    /// The hooks of the recording, by name and sha256: their decisions are in the calls.
    pub hooks: Vec<(String, String)>,
    /// Settings.
    pub settings: Settings,
}

/// One message of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who spoke.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// What the agent asked, in full, as it asked it (before the host's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The conversation.
    pub messages: Vec<Message>,
    /// The model asked for, if any.
    pub model: Option<String>,
    /// The output limit asked for, if any.
    pub max_tokens: Option<u32>,
    /// The temperature asked for, if any.
    pub temperature: Option<f32>,
}

impl Request {
    /// The call journal's digest of this request (the same function, so a tape and a journal agree).
    pub fn digest(&self) -> String {
        let messages: Vec<(&str, &str)> = self.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
        crate::journal::request_digest(self.model.as_deref().unwrap_or(""), self.max_tokens, self.temperature, &messages)
    }
}

/// The kind of error the agent got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Refused for lack of budget.
    BudgetExhausted,
    /// Denied by a hook.
    Denied,
    /// The provider failed.
    Provider,
    /// The request was invalid.
    InvalidRequest,
}

/// What the agent got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// An answer.
    Answer(Answer),
    /// An error (refused, denied, the provider failed).
    Error {
        /// Which kind.
        kind: ErrorKind,
        /// Its message, as the agent got it.
        message: String,
    },
    /// No answer: the run stopped at once during the call (see the call's `stop`).
    Cancelled,
}

/// A stop the call raised (budget, a hook, an overrun ...): a replay raises it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// What stopped the run.
    pub source: Source,
    /// How.
    pub mode: Mode,
    /// Why, in words.
    pub message: String,
}

/// One `llm.complete` of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The cycle it was made in.
    pub cycle: u32,
    /// Its place among the step's calls (from 1).
    pub index: u32,
    /// The operation label it was charged under.
    pub operation: String,
    /// sha256 of `request` ([`Request::digest`]).
    pub digest: String,
    /// What was asked.
    pub request: Request,
    /// What came back.
    pub outcome: Outcome,
    /// What it cost when recorded.
    pub cost_nanos: Nanos,
    /// The stop it raised, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// How the recorded run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// `completed`, `max_cycles` or `interrupted`.
    pub status: String,
    /// Why it stopped early, if it did.
    pub stop: Option<Stop>,
    /// The last cycle completed.
    pub cycles: u32,
    /// The agent's result, when it finished.
    pub result: Option<String>,
    /// What the run spent.
    pub spent_nanos: Nanos,
}

/// A tape in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Tape {
    /// Settings and pins.
    pub header: Header,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// How the run ended.
    pub end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Header(Header),
    Call(Call),
    End(End),
    Trailer {
        lines: usize,
        sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<String>,
    },
}

impl Tape {
    /// Serialise; with `key` the trailer carries an HMAC; gzipped when `gzip`.
    pub fn encode(&self, key: Option<&[u8]>, gzip: bool) -> Vec<u8> {
        let mut body = Vec::new();
        let mut put = |l: &Line| {
            serde_json::to_writer(&mut body, l).expect("tape records serialise");
            body.push(b'\n');
        };
        put(&Line::Header(self.header.clone()));
        for c in &self.calls {
            put(&Line::Call(c.clone()));
        }
        put(&Line::End(self.end.clone()));
        let trailer = Line::Trailer { lines: self.calls.len() + 2, sha256: hex::encode(Sha256::digest(&body)), hmac: key.map(|k| crate::checkpoint::seal(k, &body)) };
        serde_json::to_writer(&mut body, &trailer).expect("tape records serialise");
        body.push(b'\n');
        if !gzip {
            return body;
        }
        let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 3), Compression::new(crate::checkpoint::GZIP_LEVEL));
        gz.write_all(&body).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }

    /// Write durably (temp file, fsync, rename); gzipped when the name ends in `.gz`.
    pub fn save(&self, path: &Path, key: Option<&[u8]>) -> anyhow::Result<()> {
        let gzip = path.extension().is_some_and(|e| e == "gz");
        crate::durable::write_atomic(path, &self.encode(key, gzip))
    }

    /// Read and verify a file; with `key`, its keyed seal must match.
    pub fn load(path: &Path, key: Option<&[u8]>) -> Result<Tape, TapeError> {
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| TapeError::Io { path: p.clone(), source })?;
        if meta.len() > MAX_BYTES {
            return Err(TapeError::TooLarge { path: p });
        }
        let raw = std::fs::read(path).map_err(|source| TapeError::Io { path: p.clone(), source })?;
        Tape::decode(&p, &raw, key)
    }

    /// Verify and parse a tape's bytes (`path` names it in errors).
    pub fn decode(path: &str, raw: &[u8], key: Option<&[u8]>) -> Result<Tape, TapeError> {
        if raw.is_empty() {
            return Err(TapeError::Empty(path.into()));
        }
        let unzipped;
        let body: &[u8] = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            GzDecoder::new(raw)
                .take(MAX_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| TapeError::Truncated { path: path.into(), detail: format!("its gzip stream is cut or corrupt ({e})") })?;
            if out.len() as u64 > MAX_BYTES {
                return Err(TapeError::TooLarge { path: path.into() });
            }
            unzipped = out;
            &unzipped
        } else {
            raw
        };
        let truncated = |detail: &str| TapeError::Truncated { path: path.into(), detail: detail.into() };

        // The header first: a foreign file or another version says so before any other check.
        let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
        let head: serde_json::Value = serde_json::from_slice(first).map_err(|_| TapeError::Foreign(path.into()))?;
        if head.get("kind").and_then(|k| k.as_str()) != Some("header") || head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(TapeError::Foreign(path.into()));
        }
        match head.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == VERSION as u64 => {}
            Some(found) => return Err(TapeError::Version { path: path.into(), found }),
            None => return Err(TapeError::Foreign(path.into())),
        }

        // The last line must be the trailer, over every byte before it.
        let text = body.strip_suffix(b"\n").ok_or_else(|| truncated("its last line is cut off"))?;
        let split = text.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let (before, last) = (&body[..split], &text[split..]);
        let Ok(Line::Trailer { lines, sha256, hmac }) = serde_json::from_slice::<Line>(last) else {
            return Err(truncated("it has no trailer"));
        };
        if hex::encode(Sha256::digest(before)) != sha256 {
            return Err(TapeError::Tampered { path: path.into() });
        }
        if let Some(key) = key {
            match &hmac {
                None => return Err(TapeError::Unsealed { path: path.into() }),
                Some(m) if !crate::checkpoint::seal_matches(key, before, m) => return Err(TapeError::BadSeal { path: path.into() }),
                Some(_) => {}
            }
        }

        let records: Vec<&[u8]> = before.strip_suffix(b"\n").unwrap_or(before).split(|b| *b == b'\n').collect();
        let bad = |line: usize, kind: &'static str, detail: String| TapeError::BadRecord { path: path.into(), line, kind, detail };
        if records.len() != lines || lines < 2 {
            return Err(bad(records.len() + 1, "trailer", format!("it counts {lines} lines, the tape has {}", records.len())));
        }
        let header = match serde_json::from_slice(records[0]).map_err(|e| bad(1, "header", e.to_string()))? {
            Line::Header(h) => h,
            _ => return Err(bad(1, "header", "the first line is not the header".into())),
        };
        check_sha256(&header.agent.sha256).map_err(|d| bad(1, "header", d))?;
        let mut calls = Vec::with_capacity(lines - 2);
        for (i, rec) in records[1..lines - 1].iter().enumerate() {
            let n = i + 2;
            let call = match serde_json::from_slice(rec).map_err(|e| bad(n, "call", e.to_string()))? {
                Line::Call(c) => c,
                _ => return Err(bad(n, "call", "expected a call".into())),
            };
            if call.request.digest() != call.digest {
                return Err(bad(n, "call", "its digest does not match its request".into()));
            }
            calls.push(call);
        }
        let end = match serde_json::from_slice(records[lines - 1]).map_err(|e| bad(lines, "end", e.to_string()))? {
            Line::End(e) => e,
            _ => return Err(bad(lines, "end", "the line before the trailer is not the end".into())),
        };
        Ok(Tape { header, calls, end })
    }
}

fn check_sha256(h: &str) -> Result<(), String> {
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err("the agent's sha256 is not 64 lowercase hex digits".into())
    }
}

#[cfg(test)]
mod tests;
