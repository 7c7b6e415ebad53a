//! Checkpoint format tests: round trips, every kind of damage, forgeries,
//! the keyed seal, format 1 migration, listing and retention.

use super::*;
use crate::budget::Ledger;
use crate::spec::{HookSpec, PluginPin};

fn spec() -> RunSpec {
    let mut s = RunSpec::builder("a.wasm").budget_nanos(100_000_000).hook(HookSpec::parse("h.wasm=cfg").unwrap()).build().unwrap();
    s.agent.sha256 = Some("ab".repeat(32));
    s.hooks[0].plugin.sha256 = Some("cd".repeat(32));
    s
}

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
            host_version: "0.1.0".into(),
            spec: spec(),
            journal: None,
        },
        budget: BudgetRecord { ledger: l.state(), fuel_used: 12345, fuel_limit: None },
        cycle: 3,
        agent_state: b"{\"sections\":[\"a\",\"b\"]}".to_vec(),
        hook_states: vec![("h".into(), b"hook".to_vec())],
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

fn decode(raw: &[u8]) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::decode("f", raw, None)
}

#[test]
fn state_lines_are_what_serde_writes() {
    let mut body = Vec::new();
    state_line(&mut body, "{\"kind\":\"agent\",\"cycle\":7", b"st\x00ate", Some("abc"));
    state_line(&mut body, "{\"kind\":\"hook\",\"name\":\"h\"", b"", None);
    let mut want = serde_json::to_vec(&Line::Agent { cycle: 7, state_b64: b64().encode(b"st\x00ate"), state_sha256: "abc".into() }).unwrap();
    want.push(b'\n');
    want.extend(serde_json::to_vec(&Line::Hook { name: "h".into(), state_b64: String::new() }).unwrap());
    want.push(b'\n');
    assert_eq!(String::from_utf8(body).unwrap(), String::from_utf8(want).unwrap());
}

#[test]
fn round_trips() {
    let c = sample();
    assert_eq!(decode(&c.encode(None).unwrap()).unwrap(), c);
}

#[test]
fn refuses_every_kind_of_damage() {
    let good = sample().encode(None).unwrap();
    let msg = |raw: &[u8]| decode(raw).unwrap_err().to_string();
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
    let body = String::from_utf8(gunzip(&sample().encode(None).unwrap())).unwrap();
    let msg = |raw: &[u8]| decode(raw).unwrap_err().to_string();
    assert!(msg(&reseal(&body.replace("\"format\":2", "\"format\":3"))).contains("format version 3"));
    assert!(msg(&reseal(&body.replace("\"fuel_used\":12345", "\"fuel_used\":\"12345\""))).contains("not a valid budget record"));
    assert!(msg(&reseal(&body.replace("\"cycle\":3", "\"cycle\":-3"))).contains("not a valid agent record"));
    // An inconsistent ledger (spent != sum of operations) is refused too.
    assert!(msg(&reseal(&body.replace("\"spent\":55000000", "\"spent\":5000000"))).contains("inconsistent"));
    // Unknown fields are not silently dropped.
    assert!(msg(&reseal(&body.replace("\"reason\":", "\"extra\":1,\"reason\":"))).contains("header"));
    // A hook state under another name than the spec's hook.
    assert!(msg(&reseal(&body.replace("\"kind\":\"hook\",\"name\":\"h\"", "\"kind\":\"hook\",\"name\":\"x\""))).contains("hooks"));
}

#[test]
fn a_forger_without_the_key_is_caught_by_the_seal() {
    let key = b"a key of sixteen bytes or more";
    let sealed = sample().encode(Some(key)).unwrap();
    assert_eq!(Checkpoint::decode("f", &sealed, Some(key)).unwrap(), sample());
    // The unkeyed reader still reads it (the seal is extra).
    assert!(decode(&sealed).is_ok());
    // Re-sealed with a fresh sha256 but no key: refused when the key is set.
    let body = String::from_utf8(gunzip(&sealed)).unwrap();
    let forged = reseal(&body.replace("\"spent\":55000000,", "\"spent\":55000000,").replace("essay-1", "essay-2"));
    let e = Checkpoint::decode("f", &forged, Some(key)).unwrap_err().to_string();
    assert!(e.contains("no keyed seal"), "{e}");
    // A seal made with another key.
    let other = sample().encode(Some(b"another key entirely, also long")).unwrap();
    let e = Checkpoint::decode("f", &other, Some(key)).unwrap_err().to_string();
    assert!(e.contains("keyed seal does not match"), "{e}");
    // An unsealed file when the key is set.
    let e = Checkpoint::decode("f", &sample().encode(None).unwrap(), Some(key)).unwrap_err().to_string();
    assert!(e.contains("no keyed seal"), "{e}");
}

/// A format 1 file (host 0.1): its settings become a spec, minus every
/// endpoint and output path; hook states are named by their file stems.
#[test]
fn format_1_files_are_migrated_without_what_a_file_may_not_choose() {
    let settings = serde_json::json!({
        "agent": "a.wasm", "budget": "0.1", "task": "t", "max_cycles": 7, "provider": "openai", "model": "gpt-4o",
        "base_url": "https://evil.example/v1", "log": "/etc/passwd", "checkpoint_dir": "/tmp/elsewhere", "ledger": "redis://evil:1/x",
        "warn": "0.5", "memory_mb": 128, "mode": "immediate", "max_tokens": 100, "min_output_tokens": 4,
        "hooks": ["h.wasm=cfg"], "hook_failure": "open", "timeout": "30s", "lease": "1m",
    });
    let header = serde_json::json!({
        "kind": "header", "format": 1, "run_id": "r", "created": "c", "reason": "periodic", "interrupt": null,
        "agent": {"path": "a.wasm", "sha256": "ab".repeat(32)}, "hooks": [{"path": "h.wasm", "sha256": "cd".repeat(32)}],
        "host_version": "0.1.0", "settings": settings,
    });
    let c = sample();
    let budget = serde_json::to_string(&Line::Budget(c.budget.clone())).unwrap();
    let mut bytes = format!("{header}\n{budget}\n").into_bytes();
    state_line(&mut bytes, &format!("{{\"kind\":\"agent\",\"cycle\":{}", c.cycle), &c.agent_state, Some(&hex::encode(Sha256::digest(&c.agent_state))));
    state_line(&mut bytes, "{\"kind\":\"hook\",\"index\":0", b"hook", None);
    let text = String::from_utf8(bytes).unwrap();
    let read = decode(&reseal(&format!("{text}trailer\n"))).unwrap();
    let s = &read.header.spec;
    assert_eq!(read.header.format, 1);
    assert_eq!((s.task.as_str(), s.limits.max_cycles, s.model.as_str(), s.budget), ("t", 7, "gpt-4o", 100_000_000));
    assert_eq!(s.agent, PluginPin { path: "a.wasm".into(), sha256: Some("ab".repeat(32)), by: None });
    assert_eq!((s.hooks[0].name.as_str(), s.hooks[0].config.as_str()), ("h", "cfg"));
    assert_eq!(read.hook_states, vec![("h".to_string(), b"hook".to_vec())]);
    let stored = serde_json::to_string(s).unwrap();
    for banned in ["evil", "/etc/passwd", "/tmp/elsewhere"] {
        assert!(!stored.contains(banned), "{banned} survived migration: {stored}");
    }
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
fn lists_newest_first_and_retains_only_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let mine = run_tag("mine");
    let other = run_tag("other");
    for n in [
        format!("checkpoint_20261130_100000_5_{mine}.jsonl.gz"),
        format!("checkpoint_20261130_100000_10_{mine}.jsonl.gz"),
        format!("checkpoint_20261130_090000_20_{mine}.jsonl.gz"),
        format!("checkpoint_20261130_080000_1_{other}.jsonl.gz"),
        "checkpoint_20261130_070000_3.jsonl.gz".to_string(),
        "other.txt".to_string(),
    ] {
        std::fs::write(dir.path().join(n), b"x").unwrap();
    }
    let names: Vec<String> = list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 5);
    assert!(names[0].starts_with("checkpoint_20261130_100000_10_"), "{names:?}");
    assert!(names[4].starts_with("checkpoint_20261130_070000_3"), "{names:?}");
    assert_eq!(retain(dir.path(), "mine", 1).unwrap().len(), 2);
    assert_eq!(list(dir.path()).unwrap().len(), 3, "the other run's and the untagged file stay");
    assert!(dir.path().join("other.txt").exists());
}
