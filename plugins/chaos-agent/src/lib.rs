//! An agent that misbehaves on purpose, to prove the host survives it.
//!
//! The task is `<behaviour>[:<cycle>]`: behave well (one small LLM call per
//! cycle) until cycle `<cycle>` (default 1), then:
//! `loop` spin forever; `trap` panic; `alloc` allocate without bound;
//! `recurse` recurse without bound; `files` try to read a file, the environment
//! and a socket and report what it got; `big-prompt` send a 100 MB prompt; `long-prompt` a 200 KB one; `long-word` one 900 KB word;
//! `many-messages` send 100,000 messages; `big-snapshot` grow its state to
//! 64 MiB so `snapshot` returns it; `trap-snapshot` / `trap-restore` panic there;
//! `slow` burn fuel in a long loop then finish; `calls:<n>` make n calls per cycle;
//! `sleep` block in WASI (a monotonic-clock sleep of an hour) in its step;
//! `sleep-init` / `sleep-snapshot` block there instead; `flood` print 64 MiB to stdout and stderr; `forge` print a
//! fake JSON summary on stdout; `long-label` use a 1 MB operation label;
//! `labels:<n>` use n distinct operation labels.

use guest_sdk::{llm, log, Agent, CompletionRequest, Message, Role, Step};
use serde::{Deserialize, Serialize};

/// An hour: far past any limit a test sets.
const BLOCK: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Default, Serialize, Deserialize)]
struct Chaos {
    #[serde(serialize_with = "ser_behaviour", deserialize_with = "de_behaviour")]
    behaviour: String,
    at: u32,
    calls: u32,
    ballast: Vec<u8>,
}

fn small_call(cycle: u32) -> Result<(), String> {
    llm::chat(None, &format!("cycle {cycle}: say ok"), Some(16), Some(&format!("chaos_cycle_{cycle}")))
        .map(|_| ())
        .map_err(|e| e.message())
}

fn user(content: String) -> Message {
    Message { role: Role::User, content }
}

/// Make one call and say how the host answered.
fn try_call(messages: Vec<Message>) -> String {
    let r = llm::complete(&CompletionRequest { messages, model: None, max_tokens: Some(16), temperature: None, operation: None });
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => format!("refused: {}", e.message()),
    }
}

/// `snapshot` traps once armed; `restore` traps for `trap-restore` runs.
fn ser_behaviour<S: serde::Serializer>(b: &String, s: S) -> Result<S::Ok, S::Error> {
    if b == "trap-snapshot-armed" {
        panic!("chaos: trap in snapshot");
    }
    if b == "sleep-snapshot-armed" {
        std::thread::sleep(BLOCK);
    }
    s.serialize_str(b)
}

fn de_behaviour<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let b = String::deserialize(d)?;
    if b == "trap-restore" {
        panic!("chaos: trap in restore");
    }
    Ok(b)
}

/// Real recursion: a live stack array used after the call defeats tail-call
/// and accumulator optimisations, so every level costs stack.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut frame = [n; 64];
    std::hint::black_box(&mut frame);
    let r = recurse(std::hint::black_box(n + 1));
    std::hint::black_box(r) ^ frame[(n % 64) as usize]
}

impl Agent for Chaos {
    fn init(&mut self, task: &str) -> Result<(), String> {
        let (b, at) = task.split_once(':').unwrap_or((task, "1"));
        self.behaviour = b.to_string();
        self.at = at.parse().map_err(|_| format!("bad cycle in task '{task}'"))?;
        if self.behaviour == "sleep-init" {
            std::thread::sleep(BLOCK);
        }
        Ok(())
    }

    fn step(&mut self, cycle: u32) -> Result<Step, String> {
        if self.behaviour == "labels" {
            for i in 0..self.at {
                llm::chat(None, "say ok", Some(4), Some(&format!("label_{cycle}_{i}"))).map_err(|e| e.message())?;
            }
            return Ok(Step::Done(format!("{} labels", self.at)));
        }
        if self.behaviour == "calls" {
            for _ in 0..self.at {
                small_call(cycle)?;
                self.calls += 1;
            }
            return Ok(Step::Continue(format!("{} calls so far", self.calls)));
        }
        if cycle < self.at {
            small_call(cycle)?;
            self.calls += 1;
            return Ok(Step::Continue(format!("behaving, {} calls", self.calls)));
        }
        match self.behaviour.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "trap" => panic!("chaos: trap in step {cycle}"),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(Step::Continue(format!("{}", recurse(cycle as u64)))),
            "files" => {
                let file = std::fs::read_to_string("/etc/passwd").map(|s| s.len().to_string()).unwrap_or_else(|e| format!("denied ({e})"));
                let env = std::env::vars().count();
                let home = std::env::var("HOME").unwrap_or_else(|_| "unset".into());
                let sock = std::net::TcpStream::connect("127.0.0.1:80").map(|_| "connected".to_string()).unwrap_or_else(|e| format!("denied ({e})"));
                let report = format!("file={file} env_vars={env} HOME={home} socket={sock}");
                log::info(&report);
                Ok(Step::Done(report))
            }
            "big-prompt" => Ok(Step::Done(try_call(vec![user("x".repeat(100 << 20))]))),
            // Under the host's byte limit, over the local model's context window.
            "long-prompt" => Ok(Step::Done(try_call(vec![user("word ".repeat(40_000))]))),
            // One 900 KB word: within the byte limit, the worst case for a BPE tokenizer.
            "long-word" => Ok(Step::Done(try_call(vec![user("a".repeat(900_000))]))),
            "many-messages" => Ok(Step::Done(try_call((0..100_000).map(|i| user(i.to_string())).collect()))),
            "big-snapshot" => {
                self.ballast = vec![7u8; 64 << 20];
                Ok(Step::Continue("grew state to 64 MiB".into()))
            }
            "trap-snapshot" => {
                self.behaviour = "trap-snapshot-armed".into();
                Ok(Step::Continue("armed".into()))
            }
            "sleep" => {
                std::thread::sleep(BLOCK);
                Ok(Step::Done("woke up".into()))
            }
            "sleep-snapshot" => {
                self.behaviour = "sleep-snapshot-armed".into();
                Ok(Step::Continue("armed".into()))
            }
            "flood" => {
                use std::io::Write;
                let line = "x".repeat(1023) + "\n";
                for _ in 0..(32 << 10) {
                    let _ = std::io::stdout().write_all(line.as_bytes());
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
                Ok(Step::Done("flooded".into()))
            }
            "log-flood" => {
                for i in 0..200_000u32 {
                    log::info(&format!("line {i} {}", "x".repeat(100)));
                }
                Ok(Step::Done("logged".into()))
            }
            "forge" => {
                println!("{{\"status\": \"completed\", \"spent_nanos\": 0, \"exit_code\": 0}}");
                Ok(Step::Done("forged".into()))
            }
            "long-label" => {
                let r = llm::chat(None, "say ok", Some(4), Some(&"l".repeat(1 << 20)));
                Ok(Step::Done(match r {
                    Ok(_) => "accepted".into(),
                    Err(e) => format!("refused: {}", e.message()),
                }))
            }
            // What wasi:random gives: the keys of a std hasher (its insecure
            // seed) and this step's draws (secure random, via a fresh RandomState).
            "random" => {
                use std::hash::BuildHasher;
                let a = std::collections::hash_map::RandomState::new().hash_one(cycle);
                let b = std::collections::hash_map::RandomState::new().hash_one(cycle);
                Ok(Step::Done(format!("{a:016x} {b:016x}")))
            }
            "slow" => {
                let mut x: u64 = 0;
                for i in 0..50_000_000u64 {
                    x = std::hint::black_box(x ^ i);
                }
                Ok(Step::Done(format!("{x}")))
            }
            _ => {
                small_call(cycle)?;
                self.calls += 1;
                Ok(Step::Continue(format!("behaving, {} calls", self.calls)))
            }
        }
    }
}

guest_sdk::export_agent!(Chaos);
