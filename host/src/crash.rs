//! Deliberate crash points, for the tests that prove a crash at any moment
//! loses no money and pays nothing twice. `BUDGET_HOST_CRASH_AT=<point>:<n>`
//! makes the process abort (as `kill -9` would: no cleanup, no flush) the
//! n-th time it reaches `<point>`. Unset (always, outside those tests), a
//! point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the point.
pub const ENV: &str = "BUDGET_HOST_CRASH_AT";

/// Where a crash can be asked for.
pub const POINTS: &[&str] = &["after-intent", "after-provider", "after-result", "mid-journal", "mid-checkpoint", "after-step"];

struct Armed {
    point: String,
    at: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (point, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
            Some(Armed { point: point.to_string(), at: n.parse().unwrap_or(1), seen: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Abort here if this is the armed point's n-th visit.
pub fn point(name: &str) {
    if let Some(a) = armed() {
        if a.point == name && a.seen.fetch_add(1, Ordering::Relaxed) + 1 == a.at {
            eprintln!("crash point {name}:{} reached: aborting", a.at);
            std::process::abort();
        }
    }
}

/// Whether this visit of `name` is the armed one (for points that must do
/// half their work before aborting themselves); says so on stderr when it is.
pub fn due(name: &str) -> bool {
    let due = armed().is_some_and(|a| a.point == name && a.seen.fetch_add(1, Ordering::Relaxed) + 1 == a.at);
    if due {
        eprintln!("crash point {name}:{} reached: aborting", armed().map_or(0, |a| a.at));
    }
    due
}
