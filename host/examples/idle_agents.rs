//! Many agents in one process: start N idle agents (instantiated from the
//! pre-instantiated template, `init` called, then left waiting, as a host
//! running many agents keeps them) and report the resident memory they take.
//!
//! `cargo run --profile dev -p host --example idle_agents -- 10000 [agent]`
//! (agent: a plugin name under plugins/, default `essay-agent`). Run one N per
//! process: RSS only grows, so a second measurement in the same process would
//! reuse pages the first one freed.

#[allow(dead_code)]
#[path = "../benches/host/common.rs"]
mod common;

use std::time::Instant;

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().expect("N: a number of agents")).unwrap_or(1000);
    let agent_name = args.next().unwrap_or_else(|| "essay-agent".into());
    // Each idle agent holds about 7 memory mappings (its linear memory's
    // reservation, accessible part and copy-on-write image, ...): say so
    // instead of dying in an allocation when the kernel's limit is too low.
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(usize::MAX);
    if map_count() + n * 8 + 1000 > limit {
        eprintln!("idle_agents: {n} agents need about {} memory mappings, vm.max_map_count is {limit}; raise it (sysctl -w vm.max_map_count=262144)", n * 8);
        std::process::exit(1);
    }
    let rt = common::runtime();
    let engine = budget_host::engine::new_engine().unwrap();
    let sa = common::Standalone::new(engine, true, &agent_name, &common::scratch("idle_agents"));
    let task = "Write a short essay about the history of artificial intelligence";

    // One agent first, so the component's code, the runtime and the allocator
    // are warm and only the per-agent cost is left to measure.
    let warm = rt.block_on(async {
        let (mut store, agent) = sa.instantiate().await;
        agent.budget_host_plugin_run().call_init(&mut store, task).await.unwrap().unwrap();
        (store, agent)
    });
    let (rss0, maps0) = (status_kib("VmRSS"), map_count());
    let t = Instant::now();
    let agents = rt.block_on(async {
        let mut agents = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut store, agent) = sa.instantiate().await;
            agent.budget_host_plugin_run().call_init(&mut store, task).await.unwrap().unwrap();
            agents.push((store, agent));
        }
        agents
    });
    let elapsed = t.elapsed();
    let (rss1, maps1) = (status_kib("VmRSS"), map_count());
    let per_agent_kib = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    println!(
        "idle_agents agent={agent_name} n={n} rss_before={:.1}MiB rss_after={:.1}MiB per_agent={per_agent_kib:.1}KiB ({:.3} MiB, target <= 1 MiB: {}) vm={:.1}GiB maps_per_agent={:.1} start_per_agent={:.1}us",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        per_agent_kib / 1024.0,
        if per_agent_kib <= 1024.0 { "met" } else { "MISSED" },
        status_kib("VmSize") as f64 / (1024.0 * 1024.0),
        (maps1 - maps0) as f64 / n as f64,
        elapsed.as_secs_f64() * 1e6 / n as f64,
    );
    // Saved for `bench_report`, which prints every figure against its target.
    let out = common::results_dir().join(format!("idle_agents_{n}.json"));
    let record = serde_json::json!({
        "agent": agent_name, "n": n, "rss_before_kib": rss0, "rss_after_kib": rss1,
        "per_agent_kib": per_agent_kib, "start_per_agent_us": elapsed.as_secs_f64() * 1e6 / n as f64,
        "maps_per_agent": (maps1 - maps0) as f64 / n as f64, "date": chrono::Local::now().to_rfc3339(),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&record).unwrap()).unwrap();
    drop(agents);
    drop(warm);
}
