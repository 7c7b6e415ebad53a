//! Shared helpers for the end-to-end tests: the real `host` binary, the real
//! plugins built by `make plugins`, temp dirs, and an in-test HTTP server
//! that speaks the recorded wire format.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const BUDGET: i32 = 3;
pub const FUEL: i32 = 4;
pub const TIMEOUT: i32 = 5;
pub const HOOK: i32 = 6;
pub const HOOK_FAILED: i32 = 7;
pub const OVERRUN: i32 = 8;
pub const REPLAY_DIVERGED: i32 = 9;
pub const SIGNAL: i32 = 130;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn shared_fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/openai-compatible").join(name)
}

/// A plugin component built by `make plugins` (never committed).
pub fn plugin(name: &str) -> PathBuf {
    let p = root().join("plugins").join(name).join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make plugins` (make test does it first)", p.display());
    p
}

/// `host` with a clean environment: no API keys, a shared compiled-artifact cache.
pub fn host() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_host"));
    for k in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "RUST_BACKTRACE", "RUST_LOG"] {
        c.env_remove(k);
    }
    c.env("BUDGET_HOST_CACHE", root().join("target/e2e-cache"));
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.output().expect("host runs");
    let r = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    // A guest's own panic message reaches the inherited stderr ("panicked at plugins/...");
    // any other panic is the host's.
    let host_panic = r.stderr.lines().any(|l| l.contains("panicked at") && !l.contains("panicked at plugins/"));
    assert!(!host_panic, "host panicked:\n{}", r.stderr);
    assert!(!r.stderr.contains("stack backtrace"), "host printed a backtrace:\n{}", r.stderr);
    r
}

pub fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}")))
        .collect()
}

pub fn events<'a>(log: &'a [Value], name: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["event"] == name).collect()
}

/// A well-behaved provider stays within every bound the host set: no call of
/// the log has an anomaly (input over its bound, output over max tokens,
/// missing usage) or was billed past its reservation.
pub fn assert_no_anomalies(log: &[Value]) {
    for c in events(log, "llm_call") {
        assert!(c["anomalies"].as_array().is_none_or(|a| a.is_empty()), "anomaly on a well-behaved provider: {c}");
        assert!(c.get("over_reservation_nanos").is_none(), "billed past the reservation: {c}");
    }
}

/// One canned HTTP response.
#[derive(Clone)]
pub struct Canned {
    /// Wait this long before answering (a slow provider).
    pub delay_ms: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the answer goes wrong on the wire (`Fault::None`: it does not).
    pub fault: Fault,
}

/// Transport faults a provider can commit, for the reliability tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    None,
    /// Headers and the first half of the body, then a TCP reset.
    ResetMidBody,
    /// Headers and the first half of the body, then a clean close short of the declared length.
    CloseMidBody,
    /// Read the request, then reset the connection without a byte of answer.
    ResetBeforeAnswer,
    /// A 200 whose body is `len` bytes, generated on the fly; with or without a content-length.
    Huge { len: usize, declare_length: bool },
    /// Read the request and never answer (the connection stays open until the client gives up).
    Silent,
    /// Chaos provider: answer with `prompt` input tokens and `extra` more
    /// completion tokens than the request's `max_tokens` (or
    /// `max_completion_tokens`) allowed, as a provider ignoring the limit would.
    OverBill { prompt: u64, extra: u64 },
}

impl Canned {
    /// A recorded `.http` fixture: status line, headers, blank line, body.
    pub fn from_fixture(path: &Path) -> Canned {
        let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (head, body) = raw.split_once("\r\n\r\n").or_else(|| raw.split_once("\n\n")).expect("fixture has a header/body split");
        let mut lines = head.lines();
        let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding"))
            .collect();
        Canned { delay_ms: 0, status, headers, body: body.trim_end().as_bytes().to_vec(), fault: Fault::None }
    }

    pub fn json(status: u16, body: &str) -> Canned {
        Canned {
            delay_ms: 0,
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            fault: Fault::None,
        }
    }

    pub fn delayed(mut self, ms: u64) -> Canned {
        self.delay_ms = ms;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Canned {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn with_fault(mut self, fault: Fault) -> Canned {
        self.fault = fault;
        self
    }

    /// A 200 with a zero-length body.
    pub fn empty() -> Canned {
        Canned::json(200, "")
    }

    /// A 200 of `len` bytes (a JSON prefix, then filler), streamed.
    pub fn huge(len: usize, declare_length: bool) -> Canned {
        Canned::json(200, "").with_fault(Fault::Huge { len, declare_length })
    }

    /// Never answers.
    pub fn silent() -> Canned {
        Canned::json(200, "").with_fault(Fault::Silent)
    }

    /// Reports `extra` completion tokens past the request's limit.
    pub fn over_bill(prompt: u64, extra: u64) -> Canned {
        Canned::json(200, "").with_fault(Fault::OverBill { prompt, extra })
    }
}

/// A loopback HTTP/1.1 server answering each request with the next canned
/// response (the last one repeats), recording the request bodies, counting
/// every request that reached it (`hits`), whatever its fate, and keeping the
/// `usage` of every answer it sent whole (`billed`): the provider's own bill.
pub struct Server {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
    pub hits: Arc<AtomicUsize>,
    pub billed: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    pub fn start(responses: Vec<Canned>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let billed = Arc::new(Mutex::new(Vec::new()));
        let (reqs, count, bill) = (requests.clone(), hits.clone(), billed.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let canned = responses[i.min(responses.len() - 1)].clone();
                i += 1;
                let (reqs, count, bill) = (reqs.clone(), count.clone(), bill.clone());
                // One thread per connection: a slow answer must not block the next request.
                std::thread::spawn(move || handle(stream, &canned, &reqs, &count, &bill));
            }
        });
        Server { url, requests, hits, billed }
    }

    /// The `usage` objects of the answers sent whole, in order.
    pub fn billed(&self) -> Vec<Value> {
        self.billed.lock().unwrap().clone()
    }

    /// What the provider billed, from its own answers: each usage priced at
    /// `input`, `output` nano-USD per 1M tokens (cached tokens at the input
    /// price), rounded up per call as providers do.
    pub fn bill(&self, input: u64, output: u64) -> Vec<u64> {
        self.billed()
            .iter()
            .map(|u| {
                let (p, c) = (u["prompt_tokens"].as_u64().unwrap(), u["completion_tokens"].as_u64().unwrap());
                ((p as u128 * input as u128 + c as u128 * output as u128).div_ceil(1_000_000)) as u64
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests received (headers read), including those answered with a fault.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Read the request head byte by byte (nothing past it is consumed), return its content-length.
fn read_head(stream: &mut TcpStream) -> Option<usize> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut len = 0usize;
    for l in text.lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    Some(len)
}

fn head_bytes(canned: &Canned, length: Option<usize>) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} X\r\n", canned.status);
    for (k, v) in &canned.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = length {
        out.push_str(&format!("content-length: {n}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    out.into_bytes()
}

fn handle(mut stream: TcpStream, canned: &Canned, reqs: &Mutex<Vec<Value>>, hits: &AtomicUsize, billed: &Mutex<Vec<Value>>) -> Option<()> {
    let len = read_head(&mut stream)?;
    hits.fetch_add(1, Ordering::SeqCst);
    let pause = |ms: u64| std::thread::sleep(std::time::Duration::from_millis(ms));
    // The reset faults leave the request body unread: closing a socket with
    // unread bytes makes the kernel send a RST instead of a clean FIN.
    let resets = matches!(canned.fault, Fault::ResetBeforeAnswer | Fault::ResetMidBody);
    let mut request = Value::Null;
    if !resets {
        let mut body = vec![0; len];
        stream.read_exact(&mut body).ok()?;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            request = v.clone();
            reqs.lock().unwrap().push(v);
        }
    }
    pause(canned.delay_ms);
    let answer = |body: &[u8], stream: &mut TcpStream| {
        let mut bytes = head_bytes(canned, Some(body.len()));
        bytes.extend_from_slice(body);
        if stream.write_all(&bytes).and_then(|_| stream.flush()).is_ok() {
            if let Some(u) = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("usage").cloned()) {
                billed.lock().unwrap().push(u);
            }
        }
    };
    match &canned.fault {
        Fault::None => answer(&canned.body, &mut stream),
        Fault::OverBill { prompt, extra } => {
            let limit = request.get("max_completion_tokens").or(request.get("max_tokens")).and_then(Value::as_u64).unwrap_or(0);
            let body = serde_json::json!({
                "model": request["model"],
                "choices": [{"message": {"role": "assistant", "content": "A paragraph that ran on."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": limit + extra, "total_tokens": prompt + limit + extra},
            });
            answer(body.to_string().as_bytes(), &mut stream);
        }
        Fault::ResetBeforeAnswer => pause(100),
        Fault::ResetMidBody | Fault::CloseMidBody => {
            let mut bytes = head_bytes(canned, Some(canned.body.len()));
            bytes.extend_from_slice(&canned.body[..canned.body.len() / 2]);
            stream.write_all(&bytes).ok()?;
            stream.flush().ok()?;
            // Let the client read the head and the first half before the connection dies.
            pause(200);
            if canned.fault == Fault::CloseMidBody {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        Fault::Huge { len, declare_length } => {
            let prefix = br#"{"choices":[{"message":{"content":""#;
            stream.write_all(&head_bytes(canned, declare_length.then_some(*len))).ok()?;
            stream.write_all(prefix).ok()?;
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = prefix.len();
            while sent < *len {
                let n = chunk.len().min(len - sent);
                // The client hangs up once it has had enough: stop there.
                stream.write_all(&chunk[..n]).ok()?;
                sent += n;
            }
            let _ = stream.flush();
        }
        Fault::Silent => {
            // Hold the connection until the client closes it.
            let mut sink = [0u8; 256];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
    Some(())
}

/// An address nothing listens on.
pub fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Checkpoint JSON lines, gzipped with a fresh sha256 trailer, as a careful
/// forger would re-seal them.
pub fn reseal(lines: &[Value]) -> Vec<u8> {
    use sha2::Digest;
    let mut body = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut body, l).unwrap();
        body.push(b'\n');
    }
    let trailer = serde_json::json!({"kind": "trailer", "sha256": hex::encode(sha2::Sha256::digest(&body)), "lines": lines.len()});
    serde_json::to_writer(&mut body, &trailer).unwrap();
    body.push(b'\n');
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&body).unwrap();
    e.finish().unwrap()
}
