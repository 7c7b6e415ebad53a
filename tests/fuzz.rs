//! Property fuzzing of the parsers that read untrusted bytes: the checkpoint
//! reader, the price-file parser, the provider response parsers and the
//! number parsers of the command line. cargo-fuzz needs nightly, so these are
//! proptest properties over arbitrary bytes and structured mutations of valid
//! inputs. `make test` runs a few hundred cases each; `make fuzz` runs
//! `FUZZ_CASES` (default there: 20000). A crash found here becomes a named
//! regression test (RELIABILITY.md lists them).

use crate::util::*;
use budget_host::budget::{parse_usd, PriceTable, MAX_USD, NANOS_PER_USD};
use budget_host::checkpoint::Checkpoint;
use budget_host::llm::{ollama, openai};
use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::OnceLock;

/// Cases per property: `FUZZ_CASES`, else `default` (what `make test` runs).
fn config(default: u32) -> Config {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    // No regression files: a failure found here is turned into a named test by hand.
    Config { cases, failure_persistence: None, max_shrink_iters: 4096, ..Config::default() }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn gunzip(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(raw).read_to_end(&mut out).unwrap();
    out
}

/// A real checkpoint with a hook, written once by the real host.
fn real_checkpoint() -> &'static (Vec<u8>, Checkpoint) {
    static CK: OnceLock<(Vec<u8>, Checkpoint)> = OnceLock::new();
    CK.get_or_init(|| {
        let dir = tempdir();
        let mut c = host();
        c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
        c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json"));
        c.args(["--budget", "1", "--max-cycles", "2", "--json", "--hook"]).arg(format!("{}=warn=0.5", plugin("budget-monitor").display()));
        let r = run(&mut c);
        r.assert_code(0);
        let raw = std::fs::read(r.json()["checkpoint"].as_str().unwrap()).unwrap();
        let ck = Checkpoint::decode("real", &raw, None).unwrap();
        assert_eq!(ck.hook_states.len(), 1);
        (raw, ck)
    })
}

/// Hostile JSON: extreme numbers, odd strings, wrong types, nesting.
fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![Just(i64::MIN), Just(-1i64), Just(0), Just(1), Just(i64::MAX), any::<i64>()].prop_map(Value::from),
        prop_oneof![Just(u64::MAX), Just(u32::MAX as u64), Just(u32::MAX as u64 + 1), any::<u64>()].prop_map(Value::from),
        prop_oneof![Just(1e300), Just(-1e300), Just(-0.0), Just(5e-324), Just(0.5), any::<f64>().prop_filter("finite", |f| f.is_finite())]
            .prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "[a-f0-9]{0,70}".prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[aé💥\u{0}\n\"\\\\]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every node of a JSON value, as a path of keys/indices.
fn paths(v: &Value, here: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = here.clone();
                p.push(k.clone());
                paths(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = here.clone();
                p.push(i.to_string());
                paths(c, p, out);
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k).unwrap(),
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        _ => unreachable!(),
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the node at (line, pick) with a hostile value.
    Replace(usize, usize, Value),
    /// Remove a field of an object node.
    Remove(usize, usize),
    /// Add an unknown field to an object node.
    Add(usize, usize, String, Value),
    /// Set every field of this name, wherever it is, to a hostile value
    /// (the fields the host computes with or slices: hashes, counts, money).
    Field(&'static str, Value),
    /// Drop or duplicate a whole line.
    DropLine(usize),
    DupLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), hostile_json()).prop_map(|(l, p, v)| Mutation::Replace(l, p, v)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(l, p)| Mutation::Remove(l, p)),
        1 => (any::<usize>(), any::<usize>(), "[a-z]{1,8}", hostile_json()).prop_map(|(l, p, k, v)| Mutation::Add(l, p, k, v)),
        2 => (prop::sample::select(SENSITIVE), hostile_json()).prop_map(|(k, v)| Mutation::Field(k, v)),
        1 => any::<usize>().prop_map(Mutation::DropLine),
        1 => any::<usize>().prop_map(Mutation::DupLine),
    ]
}

const SENSITIVE: &[&str] = &[
    "sha256", "state_sha256", "cycle", "format", "spent", "limit", "calls", "cost", "fuel_used", "fuel_limit", "index", "lines",
    "thresholds", "fired", "input_tokens", "output_tokens", "hooks", "path", "spec", "interrupt", "state_b64", "name", "budget",
    "max_cycles", "memory_bytes", "prices", "warn", "agent_name", "script", "timeout", "lease",
];

fn set_field(v: &mut Value, name: &str, to: &Value) {
    match v {
        Value::Object(m) => {
            for (k, c) in m.iter_mut() {
                if k == name {
                    *c = to.clone();
                } else {
                    set_field(c, name, to);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| set_field(c, name, to)),
        _ => {}
    }
}

fn apply(lines: &mut Vec<Value>, m: &Mutation) {
    let pick = |lines: &mut Vec<Value>, l: usize, p: usize| {
        let li = l % lines.len();
        let mut all = Vec::new();
        paths(&lines[li], Vec::new(), &mut all);
        (li, all[p % all.len()].clone())
    };
    match m {
        Mutation::Replace(l, p, v) => {
            let (li, path) = pick(lines, *l, *p);
            *node(&mut lines[li], &path) = v.clone();
        }
        Mutation::Remove(l, p) | Mutation::Add(l, p, _, _) => {
            let (li, mut path) = pick(lines, *l, *p);
            // Act on the nearest object at or above the node.
            while !path.is_empty() && !node(&mut lines[li], &path).is_object() {
                path.pop();
            }
            if let Value::Object(o) = node(&mut lines[li], &path) {
                match m {
                    Mutation::Add(_, _, k, v) => {
                        o.insert(k.clone(), v.clone());
                    }
                    _ => {
                        let k = o.keys().nth(*p % o.len().max(1)).cloned();
                        if let Some(k) = k {
                            o.remove(&k);
                        }
                    }
                }
            }
        }
        Mutation::Field(name, v) => lines.iter_mut().for_each(|l| set_field(l, name, v)),
        Mutation::DropLine(l) => {
            let i = l % lines.len();
            lines.remove(i);
        }
        Mutation::DupLine(l) => {
            let i = l % lines.len();
            let line = lines[i].clone();
            lines.insert(i, line);
        }
    }
}

/// What every accepted checkpoint must satisfy, and what must not panic on it.
fn accepted_checkpoint_is_sound(c: &Checkpoint) {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    for p in c.header.spec.plugins() {
        assert!(p.sha256.as_deref().is_none_or(hex64), "plugin sha256 {:?}", p.sha256);
    }
    assert_eq!(c.hook_states.len(), c.header.spec.hooks.len());
    let l = &c.budget.ledger;
    assert!(l.spent <= l.limit.saturating_add(l.overrun) && l.overrun <= l.spent);
    budget_host::budget::Ledger::from_state(l).expect("an accepted ledger rebuilds");
    let _ = budget_host::report::breakdown(l);
    let _ = budget_host::report::operations_detail(l);
    // What `host inspect` shows of it, both ways.
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), c.encode(None).expect("an accepted checkpoint re-encodes")).unwrap();
    budget_host::resume::inspect(f.path(), true, None).unwrap();
    budget_host::resume::inspect(f.path(), false, None).unwrap();
    // And it reads back as itself (serde_json may move an arbitrary float in
    // the recorded thresholds or temperature by one ulp: compare those loosely).
    let loose = |c: &Checkpoint| {
        let mut c = c.clone();
        let round = |t: &f64| (t * 1e9).round();
        c.header.spec.warn = c.header.spec.warn.iter().map(round).collect();
        c.header.spec.temperature = c.header.spec.temperature.map(|t| (t * 1e3).round());
        c.budget.ledger.thresholds = c.budget.ledger.thresholds.iter().map(round).collect();
        c
    };
    assert_eq!(loose(&Checkpoint::decode("again", &c.encode(None).unwrap(), None).unwrap()), loose(c));
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary bytes, raw or gzipped: an error, never a panic.
    #[test]
    fn checkpoint_reader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), zip in any::<bool>()) {
        let raw = if zip { gzip(&bytes) } else { bytes };
        if let Ok(c) = Checkpoint::decode("fuzz", &raw, None) {
            accepted_checkpoint_is_sound(&c);
        }
    }

    /// Byte damage to a real checkpoint (flips, cuts, insertions): refused, or
    /// read as exactly the original (gzip header fields, trailing bytes), never as another.
    #[test]
    fn damaged_checkpoints_never_read_as_another(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let (good, original) = real_checkpoint();
        let mut raw = good.clone();
        for (at, byte, kind) in edits {
            let i = at % (raw.len() + 1);
            match kind {
                0 if i < raw.len() => raw[i] ^= byte | 1,
                1 => raw.truncate(i),
                2 => raw.insert(i, byte),
                _ if i < raw.len() => { raw.remove(i); }
                _ => {}
            }
        }
        if let Ok(c) = Checkpoint::decode("fuzz", &raw, None) {
            prop_assert_eq!(&c, original);
        }
    }

    /// A forger's checkpoint: hostile values in any field, re-sealed with a
    /// valid trailer. Refused by name, or accepted only if it is sound.
    #[test]
    fn forged_checkpoints_are_refused_or_sound(ms in prop::collection::vec(mutation(), 1..4)) {
        let (good, _) = real_checkpoint();
        let body = gunzip(good);
        let text = String::from_utf8(body).unwrap();
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines.pop(); // the trailer
        for m in &ms {
            if lines.is_empty() {
                break;
            }
            apply(&mut lines, m);
        }
        match Checkpoint::decode("forged", &reseal(&lines), None) {
            Ok(c) => accepted_checkpoint_is_sound(&c),
            Err(e) => prop_assert!(e.to_string().contains("forged"), "the error names the file: {e}"),
        }
    }

    /// Arbitrary text as a price file: an error naming the file, never a panic.
    #[test]
    fn price_parser_survives_arbitrary_text(text in "\\PC{0,200}") {
        if let Err(e) = PriceTable::default().with_overrides("p.json", &text) {
            prop_assert!(e.to_string().contains("p.json"));
        }
    }

    /// Structured price files with hostile values: accepted exactly when every
    /// entry is valid, and every accepted price is finite, in range and costs without overflow.
    #[test]
    fn price_parser_accepts_exactly_the_valid_files(
        entries in prop::collection::vec(("[a-cA-C]{1,2}", hostile_price_entry()), 0..5),
    ) {
        let obj: serde_json::Map<String, Value> = entries.iter().cloned().collect();
        let mut text = String::from("{");
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 { text.push(','); }
            text.push_str(&format!("{}:{}", json!(k), v));
        }
        text.push('}');
        let r = PriceTable::default().with_overrides("p.json", &text);
        let lower: std::collections::HashSet<String> = entries.iter().map(|(k, _)| k.to_lowercase()).collect();
        let expect_ok = lower.len() == entries.len() && obj.values().all(valid_entry);
        prop_assert_eq!(r.is_ok(), expect_ok, "{} -> {:?}", text, r.as_ref().err().map(|e| e.to_string()));
        if let Ok(t) = r {
            for (k, _) in &entries {
                let p = t.get(k).unwrap();
                let max = (MAX_USD * NANOS_PER_USD as f64) as u64;
                prop_assert!(p.input <= max && p.output <= max && p.cache_read <= max);
                let _ = p.cost(u64::MAX, u64::MAX, u64::MAX);
                let _ = p.worst_case(u64::MAX, u64::MAX);
                let _ = p.output_tokens_within(u64::MAX, u64::MAX);
            }
        }
    }

    /// Arbitrary bytes as a provider answer: a typed error, never a panic.
    #[test]
    fn provider_parsers_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for r in [openai::parse_response("u", "m", &bytes), ollama::parse_response("u", "m", &bytes)] {
            if let Err(e) = r {
                prop_assert!(e.maybe_billed(), "a 200 we cannot read may have been billed: {e}");
            }
        }
        let _ = openai::error_message(&bytes);
        prop_assert!(budget_host::llm::http::excerpt(&bytes).chars().count() <= 201);
    }

    /// Hostile usage in an otherwise valid OpenAI answer: usage is reported
    /// exactly when the counts are non-negative integers, else missing (the
    /// host charges the reservation) or the answer is malformed (charged too).
    #[test]
    fn openai_usage_is_exact_or_conservative(p in hostile_json(), c in hostile_json(), cached in proptest::option::of(hostile_json())) {
        let mut usage = json!({"prompt_tokens": p, "completion_tokens": c});
        if let Some(k) = &cached {
            usage["prompt_tokens_details"] = json!({"cached_tokens": k});
        }
        let body = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": usage}).to_string();
        let int = |v: &Value| v.as_i64();
        match openai::parse_response("u", "m", body.as_bytes()) {
            Ok(r) => {
                let (pi, ci) = (int(&p).unwrap(), int(&c).unwrap());
                let ki = cached.as_ref().map(|k| if k.is_null() { Some(0) } else { int(k) }).unwrap_or(Some(0)).unwrap();
                match r.usage {
                    Some(u) => prop_assert_eq!((u.input_tokens as i64, u.output_tokens as i64, u.cached_tokens as i64), (pi, ci, ki)),
                    None => prop_assert!(pi < 0 || ci < 0 || ki < 0),
                }
                if let Some(u) = r.usage {
                    let price = PriceTable::default().get("claude-opus-4-5").unwrap();
                    let _ = price.cost(u.input_tokens, u.cached_tokens, u.output_tokens);
                }
            }
            Err(e) => prop_assert!(e.maybe_billed() && (int(&p).is_none() || int(&c).is_none() || cached.as_ref().is_some_and(|k| !k.is_null() && int(k).is_none())), "{e}"),
        }
    }

    /// The same for Ollama's counts.
    #[test]
    fn ollama_usage_is_exact_or_conservative(p in proptest::option::of(hostile_json()), e in proptest::option::of(hostile_json())) {
        let mut body = json!({"model": "llama3.1", "message": {"role": "assistant", "content": "x"}, "done": true});
        if let Some(p) = &p { body["prompt_eval_count"] = p.clone(); }
        if let Some(e) = &e { body["eval_count"] = e.clone(); }
        let int = |v: &Option<Value>| v.as_ref().map(|v| if v.is_null() { None } else { v.as_i64().map(Some).unwrap_or(Some(i64::MIN)) });
        match ollama::parse_response("u", "m", body.to_string().as_bytes()) {
            Ok(r) => match (r.usage, int(&p).flatten(), int(&e).flatten()) {
                (Some(u), Some(pi), Some(ei)) => prop_assert_eq!((u.input_tokens as i64, u.output_tokens as i64), (pi, ei)),
                (Some(u), pi, ei) => prop_assert!(false, "usage {u:?} from {pi:?}/{ei:?}"),
                (None, pi, ei) => prop_assert!(pi.is_none() || ei.is_none() || pi < Some(0) || ei < Some(0)),
            },
            Err(err) => prop_assert!(err.maybe_billed(), "{err}"),
        }
    }

    /// Any text as a budget: refused, or a positive amount no larger than the maximum.
    #[test]
    fn budget_parser_refuses_or_bounds(text in prop_oneof!["\\PC{0,30}", "[-+$ ]?[0-9.eEinfaINFA]{0,12}"]) {
        if let Ok(n) = parse_usd(&text) {
            prop_assert!(n >= 1 && n <= (MAX_USD * NANOS_PER_USD as f64) as u64, "{text:?} -> {n}");
        }
    }

    /// Any text as a duration or warning thresholds: refused, or in range.
    #[test]
    fn duration_and_warn_parsers_refuse_or_bound(text in prop_oneof!["\\PC{0,30}", "[-+]?[0-9.eE]{0,12}(ms|s|m|h|x)?"]) {
        if let Ok(d) = budget_host::spec::parse_duration(&text) {
            prop_assert!(!d.is_zero() && d.as_secs() <= 365 * 86400, "{text:?} -> {d:?}");
        }
        if let Ok(w) = budget_host::spec::parse_warn(&text) {
            prop_assert!(w.iter().all(|t| t.is_finite() && *t > 0.0 && *t <= 1.0), "{text:?} -> {w:?}");
        }
    }
}

/// A price entry: usually an object with hostile or plausible fields.
fn hostile_price_entry() -> impl Strategy<Value = Value> {
    let usd = prop_oneof![
        3 => (0.0f64..2000.0).prop_map(Value::from),
        1 => Just(json!(0)),
        1 => Just(json!(1e-12)),
        1 => Just(json!(-1)),
        1 => Just(json!(1e300)),
        1 => Just(json!(1000000.5)),
        1 => hostile_json(),
    ];
    prop_oneof![
        6 => (usd.clone(), usd.clone(), proptest::option::of(usd), proptest::option::of(("[a-z]{1,6}", hostile_json())))
            .prop_map(|(i, o, c, extra)| {
                let mut m = serde_json::Map::new();
                m.insert("input".into(), i);
                m.insert("output".into(), o);
                if let Some(c) = c { m.insert("cache_read".into(), c); }
                if let Some((k, v)) = extra { m.insert(k, v); }
                Value::Object(m)
            }),
        1 => hostile_json(),
    ]
}

/// The price parser's contract, written independently: each of input, output
/// (and cache_read if present) is a number, finite, >= 0, <= 1e6 USD per 1M
/// tokens, and either 0 or at least one nano-USD once rounded; no other fields.
fn valid_entry(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let ok = |v: &Value| {
        v.as_f64().is_some_and(|f| f.is_finite() && f >= 0.0 && f <= MAX_USD && (f == 0.0 || (f * NANOS_PER_USD as f64).round() >= 1.0))
    };
    o.keys().all(|k| ["input", "output", "cache_read"].contains(&k.as_str()))
        && o.get("input").is_some_and(ok)
        && o.get("output").is_some_and(ok)
        && o.get("cache_read").is_none_or(|c| ok(c) || c.is_null())
}

// ---------------------------------------------------------------------------
// Regressions found by the properties above

/// Found by `price_parser_accepts_exactly_the_valid_files`: with u64::MAX
/// tokens and budget, the saturated input cost passed the fit check and the
/// exact arithmetic underflowed (a panic in a debug build, a wrap in release).
#[test]
fn regression_output_tokens_within_extreme_arguments() {
    let t = PriceTable::default().with_overrides("p.json", r#"{"a": {"input": 182.19, "output": 1}}"#).unwrap();
    let p = t.get("a").unwrap();
    assert_eq!(p.output_tokens_within(u64::MAX, u64::MAX), 0);
    assert_eq!(p.output_tokens_within(0, u64::MAX), u64::MAX / 1000, "1 USD per 1M tokens: a thousand tokens a nano-USD");
    // One input token is 182_190 nano-USD of the 1_000_000: 817 output tokens fit the rest.
    assert_eq!(p.output_tokens_within(1, 1_000_000), 817);
}

fn real_lines() -> Vec<Value> {
    let text = String::from_utf8(gunzip(&real_checkpoint().0)).unwrap();
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop();
    lines
}

/// Found by `forged_checkpoints_are_refused_or_sound`: a re-sealed checkpoint
/// whose plugin hash is not a hex digest was accepted, and `host inspect`
/// cut the hash at byte 12: a panic inside a multi-byte character.
#[test]
fn regression_plugin_hashes_in_checkpoints_are_hex_digests() {
    let dir = tempdir();
    for (what, field) in [("hook", "hooks"), ("agent", "agent")] {
        let mut lines = real_lines();
        set_field(&mut lines[0]["spec"][field], "sha256", &json!("0123456789aé-not-a-digest"));
        let p = dir.path().join(format!("{what}.jsonl.gz"));
        std::fs::write(&p, reseal(&lines)).unwrap();
        for cmd in ["inspect", "resume"] {
            let mut c = host();
            c.arg(cmd).arg(&p);
            let r = run(&mut c);
            r.assert_code(USAGE);
            assert!(r.stderr.contains("sha256") && r.stderr.contains(&p.display().to_string()), "{what}/{cmd}: {}", r.stderr);
        }
    }
}

/// Found by following what `forged_checkpoints_are_refused_or_sound`
/// accepts into `resume`: counters at the top of their range overflowed (a
/// panic in a debug build, a wrap in release) on the first cycle or call.
#[test]
fn regression_forged_counters_at_their_limits_resume_without_overflow() {
    let dir = tempdir();
    let cases: [(&str, usize, &str, Value, &str); 3] = [
        ("cycle", 2, "cycle", json!(u32::MAX), "max_cycles"),
        ("fuel", 1, "fuel_used", json!(u64::MAX - 1), "completed"),
        ("calls", 1, "calls", json!(u32::MAX), "completed"),
    ];
    for (name, line, field, value, status) in cases {
        let mut lines = real_lines();
        set_field(&mut lines[line], field, &value);
        let p = dir.path().join(format!("{name}.jsonl.gz"));
        std::fs::write(&p, reseal(&lines)).unwrap();
        let mut c = host();
        c.arg("resume").arg(&p).args(["--max-cycles", "3", "--json"]);
        let r = run(&mut c);
        r.assert_code(0);
        let s = r.json();
        assert!(s["status"] == status || s["status"] == "max_cycles", "{name}: {s}");
        assert!(s["spent_nanos"].as_u64().unwrap() <= s["limit_nanos"].as_u64().unwrap());
    }
}

/// Found by `price_parser_accepts_exactly_the_valid_files` (at 50000 cases):
/// serde took a positional array `[input, output, cache_read]` for a price.
#[test]
fn regression_a_price_must_name_its_fields() {
    for text in [r#"{"a": [0, 0, null]}"#, r#"{"a": [2.5, 10, 1.25]}"#] {
        let e = PriceTable::default().with_overrides("p.json", text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("p.json") && e.contains("model 'a'") && e.contains("expected an object"), "{text}: {e}");
    }
}
