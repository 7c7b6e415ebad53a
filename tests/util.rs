//! Shared helpers for the end-to-end tests: the real `host` binary, the real
//! plugins built by `make plugins`, temp dirs, and an in-test HTTP server
//! that speaks the recorded wire format.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;
pub const BUDGET: i32 = 3;
pub const FUEL: i32 = 4;
pub const TIMEOUT: i32 = 5;
pub const HOOK: i32 = 6;
pub const SIGNAL: i32 = 130;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn shared_fixture(name: &str) -> PathBuf {
    root().join("../shared/fixtures/openai-compatible").join(name)
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

/// One canned HTTP response.
#[derive(Clone)]
pub struct Canned {
    /// Wait this long before answering (a slow provider).
    pub delay_ms: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
        Canned { delay_ms: 0, status, headers, body: body.trim_end().as_bytes().to_vec() }
    }

    pub fn json(status: u16, body: &str) -> Canned {
        Canned { delay_ms: 0, status, headers: vec![("content-type".into(), "application/json".into())], body: body.as_bytes().to_vec() }
    }

    pub fn delayed(mut self, ms: u64) -> Canned {
        self.delay_ms = ms;
        self
    }
}

/// A loopback HTTP/1.1 server answering each request with the next canned
/// response (the last one repeats), recording the request bodies.
pub struct Server {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    pub fn start(responses: Vec<Canned>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let canned = responses[i.min(responses.len() - 1)].clone();
                i += 1;
                let reqs = reqs.clone();
                // One thread per connection: a slow answer must not block the next request.
                std::thread::spawn(move || handle(stream, &canned, &reqs));
            }
        });
        Server { url, requests }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn handle(mut stream: TcpStream, canned: &Canned, reqs: &Mutex<Vec<Value>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    if let Ok(v) = serde_json::from_slice(&body) {
        reqs.lock().unwrap().push(v);
    }
    std::thread::sleep(std::time::Duration::from_millis(canned.delay_ms));
    let mut out = format!("HTTP/1.1 {} X\r\n", canned.status);
    for (k, v) in &canned.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", canned.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&canned.body);
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
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
