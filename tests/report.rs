//! `host report` on the logs of real runs (numbers to the nano-dollar, torn
//! and bad logs, several runs), its HTML page rendered in headless Chromium,
//! and the live progress display under a pseudo-terminal.

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RULE: &str = "============================================================";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The essay agent on the recorded gpt-4o script: $0.10 stops it by budget at cycle 7.
fn essay(dir: &Path, budget: &str) -> Command {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir);
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-gpt4o.json"));
    c.args(["--max-tokens", "2000", "--budget", budget]);
    c
}

fn report(log: &Path, extra: &[&str]) -> Run {
    run(host().arg("report").arg(log).args(extra))
}

/// The seed's COST BREAKDOWN block, rule to rule.
fn breakdown_block(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| *l == "💰 COST BREAKDOWN").unwrap_or_else(|| panic!("no breakdown in:\n{text}"));
    let end = lines[at + 2..].iter().position(|l| *l == RULE).map(|i| at + 2 + i).expect("breakdown ends with a rule");
    lines[at - 1..=end].join("\n")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("budget_monitoring.jsonl")
}

fn last_end(log: &[Value]) -> &Value {
    events(log, "budget_monitoring_end").last().copied().expect("an end line")
}

/// Every figure of one run in `host report --json` against the log it came from.
fn assert_run_matches_log(r: &Value, log: &[Value]) {
    let end = last_end(log);
    let calls = events(log, "llm_call");
    assert_eq!(r["spent_nanos"], end["total_cost_nanos"], "spent");
    assert_eq!(r["spent_nanos"].as_u64().unwrap(), calls.iter().map(|c| c["cost_nanos"].as_u64().unwrap()).sum::<u64>(), "spent = sum of the calls");
    assert_eq!(r["limit_nanos"], end["budget_limit_nanos"], "limit");
    assert_eq!(r["calls"], end["operations"], "calls");
    assert_eq!(r["status"], end["status"]);
    assert_eq!(r["cycles_completed"], end["cycles_completed"]);
    assert_eq!(r["unlogged_nanos"], 0);
    let ops = r["cost_by_operation"].as_object().unwrap();
    let want = end["cost_by_operation_nanos"].as_object().unwrap();
    assert_eq!(ops.len(), want.len(), "operations: {ops:?} vs {want:?}");
    for (op, n) in want {
        assert_eq!(&ops[op]["cost_nanos"], n, "operation {op}");
    }
    let listed = r["llm_calls"].as_array().unwrap();
    assert_eq!(listed.len(), calls.len());
    for (c, l) in listed.iter().zip(&calls) {
        for (mine, theirs) in [("cost_nanos", "cost_nanos"), ("spent_nanos", "cumulative_nanos"), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"), ("cycle", "cycle"), ("operation", "operation"), ("reserved_nanos", "reserved_nanos")] {
            assert_eq!(c[mine], l[theirs], "call {}: {mine}", c["seq"]);
        }
    }
    let kinds = |k: &str| r["markers"].as_array().unwrap().iter().filter(|m| m["kind"] == k).count();
    assert_eq!(kinds("warning"), events(log, "budget_warning").len());
    assert_eq!(kinds("checkpoint"), events(log, "checkpoint_saved").len());
    assert_eq!(kinds("interrupt"), events(log, "interrupt").len());
    assert_eq!(kinds("resume"), events(log, "budget_monitoring_start").iter().filter(|s| !s["resumed_from"].is_null()).count());
    assert_eq!(r["notes"], serde_json::json!([]), "a clean log raises no notes");
}

#[test]
fn report_matches_a_budget_stopped_run_and_its_resume() {
    let dir = tempdir();
    let first = run(&mut essay(dir.path(), "0.10"));
    first.assert_code(BUDGET);
    // Piped stdout: no live display, not a byte of it.
    for junk in ["\r", "\x1b[", "▕", " · tokens "] {
        assert!(!first.stdout.contains(junk), "progress output on a pipe ({junk:?}):\n{}", first.stdout);
    }
    let path = log_path(dir.path());
    let log = read_log(&path);

    let text = report(&path, &[]);
    text.assert_code(0);
    assert_eq!(text.stderr, "", "a clean log raises no note");
    assert_eq!(breakdown_block(&text.stdout), breakdown_block(&first.stdout), "the report's breakdown is the run's own");
    assert!(text.stdout.contains("Status: interrupted (budget) · 7 cycles · 1 call refused\n"), "{}", text.stdout);

    let j = report(&path, &["--json"]);
    j.assert_code(0);
    let j = j.json();
    assert_eq!(j["runs"].as_array().unwrap().len(), 1);
    assert_eq!(j["skipped"], serde_json::json!([]));
    assert_run_matches_log(&j["runs"][0], &log);
    assert_eq!(j["runs"][0]["refused"], 1);
    assert_eq!(j["runs"][0]["stop_source"], "budget");
    assert_eq!(j["total"]["spent_nanos"], j["runs"][0]["spent_nanos"]);

    // Resume with a bigger budget: one run, two segments, the same exactness.
    let ck = events(&log, "checkpoint_saved").last().unwrap()["path"].as_str().unwrap().to_string();
    let second = run(host().arg("resume").arg(&ck).args(["--budget", "1"]));
    second.assert_code(0);
    let log = read_log(&path);
    let text = report(&path, &[]);
    text.assert_code(0);
    assert_eq!(breakdown_block(&text.stdout), breakdown_block(&second.stdout), "the whole run's breakdown is the resumed run's own");
    assert!(text.stdout.contains(" · resumed 1 time"), "{}", text.stdout);
    let j = report(&path, &["--json"]).json();
    let r = &j["runs"][0];
    assert_eq!((r["segments"].as_u64(), r["resumes"].as_u64()), (Some(2), Some(1)));
    assert_run_matches_log(r, &log);
}

#[test]
fn report_keeps_several_runs_apart() {
    let dir = tempdir();
    let shared = dir.path().join("all.jsonl");
    for (sub, budget) in [("a", "0.10"), ("b", "1")] {
        let d = dir.path().join(sub);
        let r = run(essay(&d, budget).arg("--log").arg(&shared));
        assert!(r.code == 0 || r.code == BUDGET, "{}", r.stderr);
    }
    let log = read_log(&shared);
    let ends = events(&log, "budget_monitoring_end");
    assert_eq!(ends.len(), 2);
    let j = report(&shared, &["--json"]).json();
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (r, end) in runs.iter().zip(&ends) {
        assert_eq!(r["run_id"], end["run_id"]);
        assert_eq!(r["spent_nanos"], end["total_cost_nanos"]);
        assert_eq!(r["calls"], end["operations"]);
    }
    let total: u64 = ends.iter().map(|e| e["total_cost_nanos"].as_u64().unwrap()).sum();
    assert_eq!(j["total"]["spent_nanos"], total);
    let text = report(&shared, &[]);
    text.assert_code(0);
    assert_eq!(text.stdout.matches("💰 COST BREAKDOWN").count(), 2);
    assert!(text.stdout.contains(&format!("All 2 runs: ${:.4} spent in", total as f64 / 1e9)), "{}", text.stdout);
    // --run picks one.
    let one = report(&shared, &["--json", "--run", ends[1]["run_id"].as_str().unwrap()]).json();
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    assert_eq!(one["runs"][0]["spent_nanos"], ends[1]["total_cost_nanos"]);
}

#[test]
fn report_reads_a_torn_log_up_to_its_last_complete_line() {
    let dir = tempdir();
    run(&mut essay(dir.path(), "0.10")).assert_code(BUDGET);
    let bytes = std::fs::read(log_path(dir.path())).unwrap();
    let log = read_log(&log_path(dir.path()));
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();

    // A crash halfway through the third call's line.
    let third = log.iter().enumerate().filter(|(_, e)| e["event"] == "llm_call").nth(2).unwrap().0;
    let mut torn: Vec<u8> = lines[..third].concat();
    torn.extend_from_slice(&lines[third][..lines[third].len() / 2]);
    let path = dir.path().join("torn.jsonl");
    std::fs::write(&path, &torn).unwrap();
    let r = report(&path, &["--json"]);
    r.assert_code(0);
    let notes: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(notes.len(), 1, "one line of note:\n{}", r.stderr);
    assert!(notes[0].starts_with(&format!("note: skipped 1 of {} lines in ", third + 1)), "{}", notes[0]);
    assert!(notes[0].contains(&format!("line {}", third + 1)) && notes[0].contains("ends mid-line"), "{}", notes[0]);
    let j = r.json();
    let run0 = &j["runs"][0];
    let two: u64 = events(&log, "llm_call")[..2].iter().map(|c| c["cost_nanos"].as_u64().unwrap()).sum();
    assert_eq!(run0["calls"], 2);
    assert_eq!(run0["spent_nanos"], two);
    assert_eq!(run0["status"], "unfinished");
    assert_eq!(j["skipped"][0]["line"], third + 1);

    // Garbage in the middle and a torn end line: both skipped, the rest counted.
    let mut messy: Vec<u8> = lines[..3].concat();
    messy.extend_from_slice(b"{\"event\": \"llm_call\", oops\n");
    messy.extend_from_slice(&lines[3..lines.len() - 1].concat());
    messy.extend_from_slice(&lines[lines.len() - 1][..20]);
    std::fs::write(&path, &messy).unwrap();
    let r = report(&path, &[]);
    r.assert_code(0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("note: skipped 2 of "), "{}", r.stderr);
    assert!(r.stderr.contains("line 4 (") && r.stderr.contains("is not JSON"), "{}", r.stderr);
    let all: u64 = events(&log, "llm_call").iter().map(|c| c["cost_nanos"].as_u64().unwrap()).sum();
    assert!(r.stdout.contains(&format!("Total Cost: ${:.4}\n", all as f64 / 1e9)), "{}", r.stdout);
    assert!(r.stdout.contains("note: the log has no end line"), "{}", r.stdout);
}

#[test]
fn report_refuses_what_is_not_a_log() {
    let dir = tempdir();
    let missing = dir.path().join("nope.jsonl");
    let r = report(&missing, &[]);
    r.assert_code(USAGE);
    assert!(r.stderr.starts_with(&format!("error: cannot read audit log {}: ", missing.display())), "{}", r.stderr);

    let r = report(dir.path(), &[]);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("cannot read audit log"), "{}", r.stderr);

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let r = report(&empty, &[]);
    r.assert_code(USAGE);
    assert_eq!(r.stderr.trim(), format!("error: audit log {} is empty", empty.display()));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is\nnot a log\n").unwrap();
    let r = report(&text, &[]);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("is not an audit log") && r.stderr.contains("line 1 is not JSON"), "{}", r.stderr);

    // A gzip checkpoint is binary, not JSON lines.
    run(&mut essay(dir.path(), "0.10")).assert_code(BUDGET);
    let ck = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".jsonl.gz")).unwrap();
    let r = report(&ck, &["--json"]);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("is not an audit log"), "{}", r.stderr);
    assert_eq!(r.stdout, "");

    let log = log_path(dir.path());
    let r = report(&log, &["--run", "no-such-run"]);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("no run 'no-such-run' in"), "{}", r.stderr);
    let r = report(&log, &["--html", "/proc/report.html"]);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("cannot write the report page /proc/report.html"), "{}", r.stderr);
}

struct Chrome {
    stdout: String,
    stderr: String,
}

impl Chrome {
    /// What the page wrote to its console (errors, uncaught exceptions, logs).
    fn console(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
    }
}

/// Headless Chromium on a local page, offline, with its console on stderr.
fn chromium(profile: &Path, page: &Path, args: &[&str]) -> Chrome {
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: `make report-deps` installs it (make test does)");
    let out = Command::new("timeout")
        .arg("120")
        .arg(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    let c = Chrome { stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() };
    assert!(out.status.success(), "chromium failed ({}):\n{}", out.status, c.stderr);
    c
}

/// The `<svg ...id="ID"...>...</svg>` element of a page.
fn svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no svg #{id}"));
    let start = dom[..at].rfind("<svg").unwrap();
    let end = dom[at..].find("</svg>").unwrap() + at;
    &dom[start..end]
}

#[test]
fn report_page_renders_in_headless_chromium() {
    let dir = tempdir();
    let first = run(&mut essay(dir.path(), "0.10"));
    first.assert_code(BUDGET);
    let path = log_path(dir.path());
    let ck = events(&read_log(&path), "checkpoint_saved").last().unwrap()["path"].as_str().unwrap().to_string();
    run(host().arg("resume").arg(&ck).args(["--budget", "0.25"])).assert_code(0);
    let log = read_log(&path);
    let calls = events(&log, "llm_call").len();
    let ops: std::collections::BTreeSet<&str> = events(&log, "llm_call").iter().map(|c| c["operation"].as_str().unwrap()).collect();

    let page = dir.path().join("report.html");
    let r = report(&path, &["--html", page.to_str().unwrap()]);
    r.assert_code(0);
    assert!(r.stdout.contains(&format!("📊 Report page: {}", page.display())), "{}", r.stdout);
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched, from anywhere.
    for external in ["<script src", "<link", "@import", "url(", "<img", "@font-face"] {
        assert!(!html.contains(external), "the page loads something ({external})");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "the page names a remote address");

    let profile = dir.path().join("chromium-profile");
    let dom = chromium(&profile, &page, &["--dump-dom"]);
    assert_eq!(dom.console(), Vec::<&str>::new(), "the page wrote to its console");
    for id in ["time-0", "cycles-0"] {
        let s = svg(&dom.stdout, id);
        assert_eq!(s.matches("<circle class=\"pt\"").count(), calls, "#{id}: a point per call");
        assert_eq!(s.matches("data-kind=\"warning\"").count(), events(&log, "budget_warning").len(), "#{id} warnings");
        assert_eq!(s.matches("data-kind=\"checkpoint\"").count(), events(&log, "checkpoint_saved").len(), "#{id} checkpoints");
        assert_eq!(s.matches("data-kind=\"interrupt\"").count(), 1, "#{id} interrupts");
        assert_eq!(s.matches("data-kind=\"resume\"").count(), 1, "#{id} resumes");
        assert_eq!(s.matches("class=\"limit\"").count(), 1, "#{id} limit line");
        assert_eq!(s.matches("class=\"threshold\"").count(), 3, "#{id} threshold lines");
    }
    // The page's script measured what the browser laid out: every item drawn with a size.
    let drawn = format!("data-drawn=\"time-0:{calls}/{calls} cycles-0:{calls}/{calls} ops-0:{n}/{n} tokens-0:{calls}/{calls}\"", n = ops.len());
    assert!(dom.stdout.contains(&drawn), "want {drawn} in\n{}", &dom.stdout[..dom.stdout.len().min(600)]);
    let markers = ["budget_warning", "checkpoint_saved", "interrupt"].iter().map(|e| events(&log, e).len()).sum::<usize>() + 1;
    assert_eq!(dom.stdout.matches("<tr").count(), (1 + calls) + (1 + markers), "a table row per call and per event, and their headers");

    // The screenshot: the right size, and the chart's colours really painted.
    let shot = dir.path().join("report.png");
    let c = chromium(&profile, &page, &[&format!("--screenshot={}", shot.display()), "--window-size=1000,1500"]);
    assert_eq!(c.console(), Vec::<&str>::new());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 1500));
    let px = info.line_size / info.width as usize;
    let mut colours: BTreeMap<[u8; 3], usize> = BTreeMap::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        *colours.entry([p[0], p[1], p[2]]).or_default() += 1;
    }
    let near = |rgb: [u8; 3]| colours.iter().filter(|(c, _)| c.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 12)).map(|(_, n)| n).sum::<usize>();
    assert!(near([0x0f, 0x76, 0x6e]) > 300, "the spend line and points (teal) are on screen");
    assert!(near([0xdc, 0x26, 0x26]) > 100, "the limit line (red) is on screen");
    assert!(near([0xd9, 0x77, 0x06]) > 50, "threshold lines and warnings (amber) are on screen");

    // The console check above can fail: a page that throws is caught.
    let broken = dir.path().join("broken.html");
    std::fs::write(&broken, "<!DOCTYPE html><html><body><script>notDefined();</script></body></html>").unwrap();
    let b = chromium(&profile, &broken, &["--dump-dom"]);
    assert!(b.console().iter().any(|l| l.contains("Uncaught ReferenceError")), "the console check sees errors:\n{}", b.stderr);
}

/// Lines as the terminal shows them, emoji presentation selectors dropped.
fn screen_lines(screen: &str) -> Vec<String> {
    screen.lines().map(|l| l.replace('\u{fe0f}', "").split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// `host ARGS` on a pseudo-terminal (util-linux `script`) of 300 x 120: exit code and every byte it drew.
fn on_a_terminal(args: &str) -> (Option<i32>, Vec<u8>) {
    let cmd = format!("stty rows 300 cols 120; exec {} {args}", env!("CARGO_BIN_EXE_host"));
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("BUDGET_HOST_CACHE", root().join("target/e2e-cache"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    (out.status.code(), out.stdout)
}

/// What a terminal shows once `raw` has been drawn on it.
fn final_screen(raw: &[u8]) -> Vec<String> {
    let mut term = vt100::Parser::new(300, 120, 0);
    term.process(raw);
    screen_lines(&term.screen().contents())
}

fn assert_no_leftover(screen: &[String]) {
    for junk in ["▕", "▏", " · tokens ", "last call $", "⠋", "⠙", "⠹"] {
        assert!(!screen.iter().any(|l| l.contains(junk)), "a leftover of the display ({junk:?}) on the final screen:\n{}", screen.join("\n"));
    }
}

/// A provider slow enough for the display to draw between calls: each call $0.0045 on gpt-4o.
/// It always answers 400 tokens, so the runs refuse a call rather than shorten it
/// (`--min-output-tokens 500`): a shortened call would be billed past its reservation.
fn slow_provider() -> Server {
    let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"A section of the essay."},"finish_reason":"stop"}],"usage":{"prompt_tokens":200,"completion_tokens":400,"total_tokens":600}}"#;
    Server::start(vec![Canned::json(200, body).delayed(300)])
}

#[test]
fn progress_on_a_terminal_leaves_only_the_lines() {
    let server = slow_provider();
    let dir = tempdir();
    let args = |d: &Path| {
        format!(
            "run {} --checkpoint-dir {} --provider openai --base-url {}/v1 --model gpt-4o --budget 0.02 --max-tokens 500 --min-output-tokens 500 --max-cycles 8",
            plugin("essay-agent").display(),
            d.display(),
            server.url
        )
    };
    let (code, bytes) = on_a_terminal(&args(&dir.path().join("tty")));
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    assert!(matches!(code, Some(0) | Some(BUDGET)), "exit {code:?}:\n{raw}");
    assert!(raw.contains("▕") && raw.contains(" · tokens "), "the live display was drawn at some point:\n{raw}");
    // ... and drawn between the cycle lines, so printing them went through it.
    let (first, last) = (raw.find("CYCLE 1: ").unwrap(), raw.rfind("CYCLE ").unwrap());
    assert!(raw[first..last].matches("▕").count() >= 3, "the display was up while cycles printed:\n{raw}");
    let screen = final_screen(&bytes);
    assert_no_leftover(&screen);

    // The same run on a pipe: the terminal's final screen shows the same cycle and warning lines, whole and in order.
    let mut c = host();
    c.args(args(&dir.path().join("pipe")).split(' '));
    let piped = run(&mut c);
    let keep = |l: &&String| l.starts_with("CYCLE ") || l.starts_with("⚠ Budget warning");
    let want: Vec<String> = screen_lines(&piped.stdout).iter().filter(keep).cloned().collect();
    let got: Vec<String> = screen.iter().filter(keep).cloned().collect();
    assert!(want.iter().filter(|l| l.starts_with("CYCLE ")).count() >= 4, "enough cycles to watch:\n{}", piped.stdout);
    assert!(want.iter().any(|l| l.starts_with("⚠")), "a warning in the run:\n{}", piped.stdout);
    assert_eq!(got, want, "final screen:\n{}", screen.join("\n"));
    assert!(screen.iter().any(|l| l == "💰 COST BREAKDOWN"), "the ending is on screen:\n{}", screen.join("\n"));

    // --no-progress, --json and --quiet keep the terminal free of it.
    for flag in ["--no-progress", "--json", "--quiet"] {
        let (_, bytes) = on_a_terminal(&format!("{} {flag}", args(&dir.path().join(flag.trim_start_matches('-')))));
        let raw = String::from_utf8_lossy(&bytes);
        assert!(!raw.contains("▕") && !raw.contains(" · tokens "), "{flag} drew the display:\n{raw}");
        match flag {
            "--quiet" => assert!(!raw.contains("CYCLE 1: "), "{raw}"),
            _ => assert!(raw.contains("CYCLE 1: "), "{raw}"),
        }
    }
}

#[test]
fn progress_of_a_team_gives_each_agent_a_bar_and_leaves_only_the_lines() {
    let server = slow_provider();
    let dir = tempdir();
    let essay = plugin("essay-agent");
    let team = dir.path().join("team.toml");
    let agents = ["writer", "critic"];
    let toml: String = agents.iter().map(|a| format!("[[agents]]\nname = \"{a}\"\nwasm = \"{}\"\nshare = 0.5\n", essay.display())).collect();
    std::fs::write(&team, toml).unwrap();
    let args = |d: &Path| {
        format!(
            "run --team {} --checkpoint-dir {} --provider openai --base-url {}/v1 --model gpt-4o --budget 0.04 --max-tokens 500 --min-output-tokens 500 --max-cycles 6",
            team.display(),
            d.display(),
            server.url
        )
    };
    let (code, bytes) = on_a_terminal(&args(&dir.path().join("tty")));
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    assert!(matches!(code, Some(0) | Some(BUDGET)), "exit {code:?}:\n{raw}");
    for a in agents {
        assert!(raw.contains(&format!("[{a}] cycle ")), "{a} had a bar of its own:\n{raw}");
    }
    let screen = final_screen(&bytes);
    assert_no_leftover(&screen);
    let mut c = host();
    c.args(args(&dir.path().join("pipe")).split(' '));
    let piped = run(&mut c);
    for a in agents {
        let keep = |l: &&String| l.starts_with(&format!("[{a}] CYCLE ")) || l.starts_with(&format!("[{a}] ⚠ Budget warning"));
        let want: Vec<String> = screen_lines(&piped.stdout).iter().filter(keep).cloned().collect();
        let got: Vec<String> = screen.iter().filter(keep).cloned().collect();
        assert!(want.len() >= 4, "{a} ran cycles:\n{}", piped.stdout);
        assert_eq!(got, want, "{a}'s lines on the final screen:\n{}", screen.join("\n"));
    }
}

/// A log written by host 0.1 (before the typed events): a budget stop, a hook,
/// plugin lines and a resume. `host report` reads it whole, to the nano-dollar.
#[test]
fn a_log_of_host_0_1_reads_whole() {
    let log = fixture("host-0.1/budget_monitoring.jsonl");
    let r = run(host().arg("report").arg(&log).arg("--json"));
    r.assert_code(0);
    let v = r.json();
    assert_eq!(v["skipped"].as_array().unwrap().len(), 0, "every line is an event this host reads");
    let run0 = &v["runs"][0];
    assert_eq!((run0["segments"].as_u64(), run0["resumes"].as_u64(), run0["refused"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!((run0["spent_nanos"].as_u64(), run0["ledger_spent_nanos"].as_u64()), (Some(161_280_000), Some(161_280_000)));
    assert_eq!(run0["notes"].as_array().unwrap().len(), 0, "{}", run0["notes"]);
    let calls: u64 = read_log(&log).iter().filter(|e| e["event"] == "llm_call").map(|e| e["cost_nanos"].as_u64().unwrap()).sum();
    assert_eq!(calls, 161_280_000);
    let r = run(host().arg("report").arg(&log));
    r.assert_code(0);
    assert!(r.stdout.contains("Total Cost: $0.1613") && r.stdout.contains("resumed 1 time"), "{}", r.stdout);
}
