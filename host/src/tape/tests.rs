use super::*;

fn tape() -> Tape {
    let request = Request {
        messages: vec![Message { role: Role::System, content: "be brief".into() }, Message { role: Role::User, content: "héllo\n\"world\"".into() }],
        model: None,
        max_tokens: Some(64),
        temperature: Some(0.7),
    };
    let answer = Answer { text: "hi".into(), model: "gpt-4o-mini".into(), finish_reason: "stop".into(), input_tokens: 35, output_tokens: 48, cached_tokens: 0, max_tokens: 64 };
    let call = Call { cycle: 1, index: 1, operation: "op".into(), digest: request.digest(), request: request.clone(), outcome: Outcome::Answer(answer), cost_nanos: 34_050, stop: None };
    let refused = Call {
        cycle: 2,
        index: 1,
        operation: "op2".into(),
        digest: request.digest(),
        request,
        outcome: Outcome::Error { kind: ErrorKind::BudgetExhausted, message: "no room".into() },
        cost_nanos: 0,
        stop: Some(Stop { source: Source::Budget, mode: Mode::Graceful, message: "budget".into() }),
    };
    Tape {
        header: Header {
            format: FORMAT.into(),
            version: VERSION,
            host_version: "0.2.0".into(),
            created: "2026-01-01T00:00:00.000000".into(),
            run_id: "essay-1".into(),
            provider: "openai".into(),
            agent: AgentPin { name: "essay-agent".into(), path: "plugins/essay-agent/essay-agent.wasm".into(), sha256: "ab".repeat(32) },
            hooks: vec![],
            settings: Settings { task: "t".into(), model: "gpt-4o-mini".into(), budget_nanos: 1_000_000_000, max_cycles: 6, max_tokens: 512, temperature: Some(0.0), fuel: None, memory_bytes: 256 << 20, mode: Mode::Graceful },
        },
        calls: vec![call, refused],
        end: End { status: "interrupted".into(), stop: Some(Stop { source: Source::Budget, mode: Mode::Graceful, message: "budget".into() }), cycles: 2, result: None, spent_nanos: 34_050 },
    }
}

fn err(raw: &[u8], key: Option<&[u8]>) -> String {
    Tape::decode("t.tape", raw, key).unwrap_err().to_string()
}

#[test]
fn a_tape_round_trips_plain_gzipped_and_sealed() {
    let t = tape();
    for gzip in [false, true] {
        assert_eq!(Tape::decode("t", &t.encode(None, gzip), None).unwrap(), t);
        let sealed = t.encode(Some(b"key"), gzip);
        assert_eq!(Tape::decode("t", &sealed, Some(b"key")).unwrap(), t);
        // A sealed tape reads without the key too: the sha256 still checks it.
        assert_eq!(Tape::decode("t", &sealed, None).unwrap(), t);
    }
}

#[test]
fn a_truncated_tape_is_refused_wherever_it_is_cut() {
    let raw = tape().encode(None, false);
    let first_line = raw.iter().position(|b| *b == b'\n').unwrap();
    for cut in (first_line + 1..raw.len()).step_by(7) {
        let e = err(&raw[..cut], None);
        assert!(e.contains("is truncated"), "cut at {cut}: {e}");
    }
    let gz = tape().encode(None, true);
    assert!(err(&gz[..gz.len() - 9], None).contains("is truncated"));
    assert!(err(b"", None).contains("is empty"));
}

#[test]
fn a_tampered_tape_is_refused() {
    let raw = String::from_utf8(tape().encode(None, false)).unwrap();
    let forged = raw.replace("\"text\":\"hi\"", "\"text\":\"ho\"");
    assert_ne!(forged, raw);
    assert!(err(forged.as_bytes(), None).contains("was tampered with or damaged: its sha256 does not match"));
}

#[test]
fn foreign_files_and_other_versions_are_refused_by_name() {
    for foreign in [&b"{\"kind\":\"header\",\"format\":2}\n"[..], b"hello\n", b"\x00\x01binary", b"{\"event\":\"budget_monitoring_start\"}\n"] {
        assert!(err(foreign, None).contains("t.tape is not a tape"), "{}", err(foreign, None));
    }
    let raw = String::from_utf8(tape().encode(None, false)).unwrap().replacen("\"version\":1", "\"version\":7", 1);
    assert_eq!(err(raw.as_bytes(), None), "tape t.tape has format version 7; this host reads version 1");
}

#[test]
fn with_a_key_an_unsealed_or_resealed_tape_is_refused() {
    let t = tape();
    assert!(err(&t.encode(None, false), Some(b"key")).contains("has no keyed seal"));
    assert!(err(&t.encode(Some(b"other"), false), Some(b"key")).contains("its keyed seal does not match"));
    // Edited and its sha256 recomputed by someone without the key: the seal gives it away.
    let mut edited = t.clone();
    if let Outcome::Answer(a) = &mut edited.calls[0].outcome {
        a.text = "forged".into();
    }
    let mut resealed = edited.encode(Some(b"key"), false);
    let original = t.encode(Some(b"key"), false);
    let hmac_at = |b: &[u8]| String::from_utf8_lossy(b).rfind("\"hmac\":\"").unwrap() + 8;
    let (at, from) = (hmac_at(&resealed), hmac_at(&original));
    resealed[at..at + 64].copy_from_slice(&original[from..from + 64]);
    assert!(Tape::decode("t", &resealed, None).is_ok(), "without the key only the sha256 is checked");
    assert!(err(&resealed, Some(b"key")).contains("its keyed seal does not match"));
}

#[test]
fn a_call_whose_digest_does_not_match_its_request_is_refused() {
    let mut t = tape();
    t.calls[1].digest = "0".repeat(64);
    assert!(err(&t.encode(None, false), None).contains("line 3 is not a valid call record: its digest does not match its request"));
}
