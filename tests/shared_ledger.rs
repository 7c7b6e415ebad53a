//! One budget shared by many hosts on a real Redis server: the hard cap
//! holds under concurrency, a killed host's hold expires, an unreachable or
//! vanished Redis refuses calls instead of spending unaccounted.

use crate::util::*;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real redis-server on a free loopback port, stopped on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it with apt)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    pub fn url(&self, key: &str) -> String {
        format!("redis://127.0.0.1:{}/{key}", self.port)
    }

    pub fn get(&self, key: &str) -> u64 {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "GET", key]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The chaos agent making 5 small priced calls per cycle until refused.
fn caller(dir: &Path, ledger: &str, budget: &str) -> Command {
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir);
    c.args(["--task", "calls:5", "--max-cycles", "1000", "--provider", "scripted", "--script"]).arg(fixture("tiny-gpt4o.json"));
    c.args(["--budget", budget, "--ledger", ledger, "--min-output-tokens", "16", "--json", "--checkpoint-every", "0", "--timeout", "120s"]);
    c
}

fn wait_json(child: Child) -> (i32, serde_json::Value) {
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (code, v)
}

#[test]
fn eight_hosts_never_overspend_one_redis_budget() {
    let redis = Redis::start();
    let url = redis.url("team-a");
    let dirs: Vec<_> = (0..8).map(|_| tempdir()).collect();
    let children: Vec<Child> = dirs.iter().map(|d| caller(d.path(), &url, "0.05").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    let mut total = 0u64;
    let mut largest_reservation = 0u64;
    for (child, dir) in children.into_iter().zip(&dirs) {
        let (code, s) = wait_json(child);
        assert_eq!(code, BUDGET, "{s}");
        total += s["spent_nanos"].as_u64().unwrap();
        assert!(s["calls"].as_u64().unwrap() > 0, "every host got to spend");
        let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
        for c in events(&log, "llm_call") {
            largest_reservation = largest_reservation.max(c["reserved_nanos"].as_u64().unwrap());
        }
    }
    let limit = 50_000_000;
    assert_eq!(redis.get("team-a:spent"), total, "the shared ledger agrees with the hosts to the nano-dollar");
    assert_eq!(redis.get("team-a:reserved"), 0);
    assert!(total <= limit, "overspent: {total} > {limit}");
    assert!(limit - total < largest_reservation, "used to within one call: {} left, a call reserves {largest_reservation}", limit - total);
}

#[test]
fn a_killed_hosts_hold_expires_and_the_rest_use_the_budget() {
    let redis = Redis::start();
    let url = redis.url("team-k");
    // A slow provider, so the killed host dies holding a reservation; the
    // budget lasts well past the 2 s lease, so the others live to reclaim it.
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-length.http")).delayed(300)]);
    let prices = tempdir();
    let pf = prices.path().join("p.json");
    std::fs::write(&pf, r#"{"smollm2": {"input": 100.0, "output": 1000.0}}"#).unwrap();
    let spawn = |dir: &Path| {
        let mut c = host();
        c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir);
        c.args(["--task", "calls:1", "--max-cycles", "1000", "--provider", "openai", "--model", "smollm2", "--base-url"]).arg(format!("{}/v1", server.url));
        c.arg("--prices").arg(&pf).args(["--budget", "0.5", "--ledger", &url, "--lease", "2s", "--min-output-tokens", "16", "--json", "--checkpoint-every", "0", "--timeout", "120s"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let dirs: Vec<_> = (0..4).map(|_| tempdir()).collect();
    let mut children: Vec<Child> = dirs.iter().map(|d| spawn(d.path())).collect();
    std::thread::sleep(Duration::from_millis(1200));
    let mut victim = children.remove(0);
    victim.kill().unwrap(); // SIGKILL, most likely mid-call
    let _ = victim.wait();
    let mut total = 0;
    let mut largest_reservation = 0u64;
    for (child, dir) in children.into_iter().zip(&dirs[1..]) {
        let (code, s) = wait_json(child);
        assert_eq!(code, BUDGET, "{s}");
        total += s["spent_nanos"].as_u64().unwrap();
        for c in events(&read_log(&dir.path().join("budget_monitoring.jsonl")), "llm_call") {
            largest_reservation = largest_reservation.max(c["reserved_nanos"].as_u64().unwrap());
        }
    }
    // What the victim settled before it died is in its log; a hold it had in
    // flight expired and was charged in full (its call may have been billed).
    let victim_log = read_log(&dirs[0].path().join("budget_monitoring.jsonl"));
    let victim_spent: u64 = events(&victim_log, "llm_call").iter().map(|c| c["cost_nanos"].as_u64().unwrap()).sum();
    let spent = redis.get("team-k:spent");
    let expired = spent - (total + victim_spent);
    assert!(expired <= largest_reservation, "at most the victim's one hold was charged at expiry: {expired}");
    assert_eq!(redis.get("team-k:reserved"), 0, "the victim's hold expired");
    // The provider's bill: every request it answered, each the same canned usage.
    let per_call = events(&read_log(&dirs[1].path().join("budget_monitoring.jsonl")), "llm_call")[0]["cost_nanos"].as_u64().unwrap();
    let bill = server.hits() as u64 * per_call;
    assert!(spent >= bill, "the shared books ({spent}) forget part of the bill ({bill})");
    assert!(spent <= 500_000_000);
    assert!(500_000_000 - spent < largest_reservation, "the survivors used what was left");
}

/// The shared ledger's own rules, on a real Redis: leases on the server's
/// clock, an expired hold charged in full and replaced by its settle (once),
/// refunded by its release, and a renewed hold kept alive.
#[test]
fn an_expired_hold_is_charged_in_full_until_its_settle_says_otherwise() {
    use budget_host::shared_ledger::{redis::RedisLedger, Hold, SharedLedger};
    let redis = Redis::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let l = RedisLedger::connect(&redis.url("k"), 1_000, Duration::from_millis(200), Duration::from_secs(5)).await.unwrap();
        let spent = || async { l.status().await.unwrap() };
        let again = |h: &Hold| Hold { id: h.id.clone(), amount: h.amount };

        // Expired: charged in full (its host may have died after the bill).
        let a = l.reserve(300).await.unwrap();
        let a2 = again(&a);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = spent().await;
        assert_eq!((s.spent, s.reserved), (300, 0));
        // Its settle replaces that charge with the bill, once.
        assert_eq!(l.settle(a, 120).await.unwrap(), 120);
        assert_eq!(spent().await.spent, 120);
        assert_eq!(l.settle(a2, 120).await.unwrap(), 0, "nothing twice");
        assert_eq!(spent().await.spent, 120);

        // An expired hold whose call was never billed is refunded by its release.
        let b = l.reserve(100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(spent().await.spent, 220);
        l.release(b).await.unwrap();
        assert_eq!(spent().await.spent, 120);

        // A renewed hold outlives its lease; a bill past it is charged as billed.
        let c = l.reserve(300).await.unwrap();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(80)).await;
            assert!(l.renew(&c).await.unwrap());
        }
        let s = spent().await;
        assert_eq!((s.spent, s.reserved), (120, 300), "still held after 480 ms on a 200 ms lease");
        assert_eq!(l.settle(c, 500).await.unwrap(), 500);
        assert_eq!(spent().await.spent, 620);
        assert!(!l.renew(&Hold { id: "gone".into(), amount: 1 }).await.unwrap());
    });
}

#[test]
fn an_unreachable_redis_fails_before_any_call() {
    let dir = tempdir();
    let r = run(&mut caller(dir.path(), &format!("{}/k", refused_url().replace("http", "redis")), "1"));
    r.assert_code(FAILURE);
    assert!(r.stderr.contains("cannot reach the shared ledger"), "{}", r.stderr);
    assert!(!dir.path().join("budget_monitoring.jsonl").exists() || read_log(&dir.path().join("budget_monitoring.jsonl")).iter().all(|e| e["event"] != "llm_call"));
}

#[test]
fn a_mismatched_budget_on_an_existing_key_is_refused() {
    let redis = Redis::start();
    let url = redis.url("team-m");
    let dir = tempdir();
    run(caller(dir.path(), &url, "1").args(["--max-cycles", "1"])).assert_code(0);
    let r = run(caller(dir.path(), &url, "2").args(["--max-cycles", "1"]));
    r.assert_code(FAILURE);
    assert!(r.stderr.contains("already has a limit of $1.0000"), "{}", r.stderr);
}

#[test]
fn redis_going_away_mid_run_refuses_calls_and_stops_cleanly() {
    let mut redis = Redis::start();
    let url = redis.url("team-g");
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-length.http")).delayed(200)]);
    let dir = tempdir();
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--task", "calls:1", "--max-cycles", "1000", "--provider", "openai", "--model", "gpt-4o-mini", "--base-url"]).arg(format!("{}/v1", server.url));
    c.args(["--budget", "1", "--ledger", &url, "--json", "--timeout", "120s"]);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    redis.stop();
    let (code, s) = wait_json(child);
    assert_eq!(code, FAILURE, "{s}");
    let msg = s["stop_reason"]["message"].as_str().unwrap();
    assert!(msg.contains("shared ledger"), "{msg}");
    assert!(s["checkpoint"].is_string(), "a checkpoint was written");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    // Every call the agent made is in the log: settled ones charged, the refused one refused.
    assert!(events(&log, "llm_call_refused").iter().any(|e| e["reason"] == "ledger_unavailable") || msg.contains("may be missing"));
    assert_eq!(log.last().unwrap()["event"], "budget_monitoring_end");
}

/// A provider bills past a call's reservation on a Redis ledger: Redis's
/// `spent` records the bill as it is, past the limit, that host stops with
/// exit 8, and the next host cannot reserve anything (exit 3).
#[test]
fn a_bill_past_the_reservation_passes_the_redis_limit_and_every_host_stops() {
    let redis = Redis::start();
    let url = redis.url("team-o");
    let server = Server::start(vec![Canned::over_bill(35, 2000)]);
    let agent = |dir: &Path| {
        let mut c = host();
        c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir);
        c.args(["--task", "calls:1", "--max-cycles", "100", "--provider", "openai", "--model", "gpt-4o-mini", "--base-url"]).arg(format!("{}/v1", server.url));
        c.args(["--budget", "0.0008", "--max-tokens", "64", "--ledger", &url, "--json", "--timeout", "120s"]);
        c
    };
    let (a, b) = (tempdir(), tempdir());
    let r = run(&mut agent(a.path()));
    r.assert_code(OVERRUN);
    let bill: u64 = server.bill(150_000_000, 600_000_000).iter().sum();
    assert_eq!(server.hits(), 1);
    assert_eq!(r.json()["spent_nanos"], bill, "the host's books equal the bill");
    assert_eq!(redis.get("team-o:spent"), bill, "Redis's books equal the bill");
    assert!(bill > 800_000, "the bill passed the shared limit");
    let r = run(&mut agent(b.path()));
    r.assert_code(BUDGET);
    assert_eq!(server.hits(), 1, "no host calls the provider once the shared limit is passed");
    assert_eq!(r.json()["spent_nanos"], 0);
}

/// `--team` with `--ledger`: the team's total lives on Redis, so two teams
/// (two processes) on one key share it, and Redis's books equal the agents'.
#[test]
fn a_teams_total_lives_on_the_redis_ledger() {
    let redis = Redis::start();
    let url = redis.url("team-r");
    let dir = tempdir();
    let essay = plugin("essay-agent");
    let mut t = String::new();
    for name in ["a", "b"] {
        t.push_str(&format!("[[agents]]\nname = \"{name}\"\nwasm = \"{}\"\nshare = 0.5\n", essay.display()));
    }
    let file = dir.path().join("team.toml");
    std::fs::write(&file, t).unwrap();
    let spawn = |ck: &str| {
        let mut c = host();
        c.arg("run").arg("--team").arg(&file).arg("--checkpoint-dir").arg(dir.path().join(ck));
        c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-gpt4o.json"));
        c.args(["--max-tokens", "2000", "--budget", "0.2", "--ledger", &url, "--json"]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let teams = [spawn("one"), spawn("two")];
    let mut spent = 0;
    for child in teams {
        let (code, s) = wait_json(child);
        assert!(code == 0 || code == BUDGET, "{s}");
        spent += s["agents"].as_array().unwrap().iter().map(|a| a["spent_nanos"].as_u64().unwrap()).sum::<u64>();
    }
    assert_eq!(redis.get("team-r:spent"), spent, "Redis holds both teams' spending to the nano-dollar");
    assert!(spent <= 200_000_000, "two teams on one key never pass its total: {spent}");
    assert_eq!(redis.get("team-r:reserved"), 0);
}

/// A crash with a call in flight on a Redis ledger: its hold is settled by
/// its id when the run resumes (at its whole reservation, as the agent's own
/// books charge it), once, so Redis and the host agree to the nano-dollar.
#[test]
fn a_resume_settles_the_crashed_calls_hold_by_its_id() {
    let redis = Redis::start();
    let url = redis.url("crash");
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let dir = tempdir();
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "openai", "--model", "gpt-4o-mini", "--base-url", &format!("{}/v1", server.url)]);
    c.args(["--budget", "1", "--max-cycles", "6", "--ledger", &url, "--json"]);
    assert_ne!(run(c.env("BUDGET_HOST_CRASH_AT", "after-intent:3")).code, 0);
    assert!(redis.get("crash:reserved") > 0, "the crashed call's hold is still on Redis");
    let mut r = host();
    r.arg("resume").arg("--latest").arg(dir.path()).args(["--base-url", &format!("{}/v1", server.url), "--ledger", &url, "--json"]);
    let r = run(&mut r);
    r.assert_code(0);
    let books = r.json()["spent_nanos"].as_u64().unwrap();
    assert_eq!(redis.get("crash:reserved"), 0, "settled, not left to expire");
    assert_eq!(redis.get("crash:spent"), books, "Redis and the host agree");
}
