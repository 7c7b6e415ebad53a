//! Plugin integrity: the sha256 each plugin file must have, from
//! `--expect-sha256 HASH` (the agent), a lock file (every plugin of a run) or
//! a checkpoint (what the run loaded), carried as pins in the `RunSpec`.
//!
//! Plugins come from strangers as files. The check runs on the very bytes the
//! engine is about to compile (no second read, so no window to swap the file)
//! and before anything else sees them: a changed plugin is refused, never
//! compiled, cached or instantiated. This module knows nothing of wasm or money.
//!
//! A lock file is JSON: `{"version": 1, "plugins": {"path/to/x.wasm": "<sha256>", ...}}`,
//! relative paths resolved against the lock file's directory. With a lock,
//! every plugin of the run must be listed. `host lock FILES...` writes one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lock file format this host writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// Why a plugin or a lock file was refused.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum IntegrityError {
    #[error("{what} '{value}' is not a sha256 (64 hex digits)")]
    BadHash { what: String, value: String },
    #[error("cannot read lock file {path}: {source}")]
    ReadLock { path: String, source: std::io::Error },
    #[error("lock file {path} is not valid: {detail}")]
    BadLock { path: String, detail: String },
    #[error("refusing {path}: its sha256 is {actual} but {by} expects {expected}; the file changed, nothing was compiled")]
    Mismatch { path: String, actual: String, expected: String, by: String },
    #[error("refusing {path}: it is not listed in lock file {lock}, nothing was compiled")]
    NotListed { path: String, lock: String },
    #[error("cannot write lock file {path}: {detail}")]
    WriteLock { path: String, detail: String },
}

/// A lock file on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The lock format ([`LOCK_VERSION`]).
    pub version: u32,
    /// Plugin path (relative to the lock file's directory, or absolute) -> sha256.
    pub plugins: BTreeMap<PathBuf, String>,
}

/// A lock file's pins, read: `host run --lock` turns them into the spec's pins.
#[derive(Debug, Clone, PartialEq)]
pub struct LockPins {
    /// Canonical path (when the file existed) -> sha256.
    pins: Vec<(PathBuf, String)>,
    shown: String,
}

/// `HASH` or `sha256:HASH`, any case: the lowercase hex digest, or an error naming `what`.
pub fn parse_sha256(what: &str, text: &str) -> Result<String, IntegrityError> {
    let t = text.trim();
    let t = t.strip_prefix("sha256:").unwrap_or(t);
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IntegrityError::BadHash { what: what.into(), value: text.into() });
    }
    Ok(t.to_ascii_lowercase())
}

/// The path a pin or a plugin is known by: canonical if it exists, else absolute.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

impl LockPins {
    /// Read a lock file; relative paths in it are relative to its directory.
    pub fn read(lock: &Path) -> Result<LockPins, IntegrityError> {
        let shown = lock.display().to_string();
        let text = std::fs::read_to_string(lock).map_err(|source| IntegrityError::ReadLock { path: shown.clone(), source })?;
        let file: LockFile = serde_json::from_str(&text).map_err(|e| IntegrityError::BadLock { path: shown.clone(), detail: e.to_string() })?;
        if file.version != LOCK_VERSION {
            return Err(IntegrityError::BadLock { path: shown, detail: format!("version {} (this host reads version {LOCK_VERSION})", file.version) });
        }
        let base = lock.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut pins = Vec::new();
        for (p, h) in &file.plugins {
            let sha256 = parse_sha256(&format!("lock file {shown}: the hash of {}", p.display()), h)?;
            pins.push((identity(&base.join(p)), sha256));
        }
        Ok(LockPins { pins, shown })
    }

    /// The sha256 the lock gives for the file at `path`, by any spelling of its path.
    pub fn sha256_of(&self, path: &Path) -> Option<&str> {
        let id = identity(path);
        self.pins.iter().find(|(p, _)| *p == id).map(|(_, h)| h.as_str())
    }

    /// `lock file <path>`, for messages.
    pub fn by(&self) -> String {
        format!("lock file {}", self.shown)
    }
}

/// Check a plugin's bytes (hashed to `actual`) against its pin, if it has one.
pub fn check_pin(path: &Path, actual: &str, expected: Option<&str>, by: Option<&str>) -> Result<(), IntegrityError> {
    match expected {
        Some(e) if e != actual => Err(IntegrityError::Mismatch {
            path: path.display().to_string(),
            actual: actual.into(),
            expected: e.into(),
            by: by.unwrap_or("the run's pin").into(),
        }),
        _ => Ok(()),
    }
}

/// A lock file for `plugins` (already read and hashed) to be written at `out`:
/// paths under the lock's directory are stored relative to it, others absolute.
pub fn lock_for(out: &Path, plugins: &[(PathBuf, String)]) -> LockFile {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = identity(dir);
    let plugins = plugins
        .iter()
        .map(|(p, sha)| {
            let id = identity(p);
            let stored = id.strip_prefix(&dir).map(Path::to_path_buf).unwrap_or(id);
            (stored, sha.clone())
        })
        .collect();
    LockFile { version: LOCK_VERSION, plugins }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn hashes_are_64_hex_digits() {
        assert_eq!(parse_sha256("x", &A.to_uppercase()).unwrap(), A);
        assert_eq!(parse_sha256("x", &format!("sha256:{A}")).unwrap(), A);
        for bad in ["", "abc", &A[..63], &format!("{A}a"), &A.replace('a', "g"), "é".repeat(32).as_str(), "NaN"] {
            let e = parse_sha256("--expect-sha256", bad).unwrap_err().to_string();
            assert!(e.contains("not a sha256") && e.contains("--expect-sha256"), "{e}");
        }
    }

    #[test]
    fn pins_are_checked_by_value() {
        let p = Path::new("a.wasm");
        check_pin(p, A, Some(A), Some("--expect-sha256")).unwrap();
        check_pin(p, B, None, None).unwrap();
        let e = check_pin(p, B, Some(A), Some("--expect-sha256")).unwrap_err().to_string();
        assert!(e.contains("refusing") && e.contains(B) && e.contains(A) && e.contains("--expect-sha256") && e.contains("nothing was compiled"), "{e}");
    }

    #[test]
    fn a_lock_pins_every_plugin_relative_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        let agent = dir.path().join("p/a.wasm");
        let hook = dir.path().join("p/h.wasm");
        let stray = dir.path().join("p/s.wasm");
        for f in [&agent, &hook, &stray] {
            std::fs::write(f, b"x").unwrap();
        }
        let lock = dir.path().join("host.lock");
        let file = lock_for(&lock, &[(agent.clone(), A.into()), (hook.clone(), B.into())]);
        assert_eq!(file.plugins.keys().map(|p| p.display().to_string()).collect::<Vec<_>>(), ["p/a.wasm", "p/h.wasm"]);
        std::fs::write(&lock, serde_json::to_string(&file).unwrap()).unwrap();
        let pins = LockPins::read(&lock).unwrap();
        assert_eq!(pins.sha256_of(&agent), Some(A));
        assert_eq!(pins.sha256_of(&dir.path().join("p/./h.wasm")), Some(B));
        assert_eq!(pins.sha256_of(&stray), None);
        assert!(pins.by().contains("host.lock"));
    }

    #[test]
    fn bad_lock_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, want) in [
            ("empty.lock", "", "not valid"),
            ("array.lock", "[]", "not valid"),
            ("version.lock", r#"{"version": 2, "plugins": {}}"#, "version 2"),
            ("extra.lock", r#"{"version": 1, "plugins": {}, "x": 1}"#, "unknown field"),
            ("hash.lock", r#"{"version": 1, "plugins": {"a.wasm": "abc"}}"#, "not a sha256"),
            ("type.lock", r#"{"version": 1, "plugins": {"a.wasm": 5}}"#, "not valid"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = LockPins::read(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
        let e = LockPins::read(&dir.path().join("missing.lock")).unwrap_err().to_string();
        assert!(e.contains("cannot read lock file"), "{e}");
    }
}
