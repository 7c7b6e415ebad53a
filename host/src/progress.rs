//! Live progress on a terminal while a run goes on: the cycle, a budget bar
//! (spent / limit, its colour turning at each warning threshold), calls and
//! tokens so far, the last call's cost and the fuel used.
//!
//! It is off unless stdout is a terminal, and with `--json`, `--quiet` or
//! `--no-progress`. Every console line goes through [`Progress::suspend`],
//! which takes the bar off the screen, prints, and draws it again below, so
//! `CYCLE n:` lines and warnings are never garbled; [`Progress::finish`]
//! clears it for good before the ending is printed.
//!
//! Every run of the process draws into one `MultiProgress` on stdout, so the
//! agents of a team get a bar each, stacked, and a line printed by any of
//! them takes all the bars off the screen while it prints.

use crate::budget::{fmt_usd, LedgerState, Nanos};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A handle to the run's progress display; clones share it. The default is off.
#[derive(Clone, Default)]
pub struct Progress {
    inner: Option<Arc<Mutex<State>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("enabled", &self.is_enabled()).finish()
    }
}

struct State {
    /// Where the bars of this process draw.
    multi: MultiProgress,
    /// Not started yet (a finished display does not come back).
    fresh: bool,
    live: Option<Live>,
}

struct Live {
    bar: ProgressBar,
    figures: Figures,
    thresholds: Vec<f64>,
    level: usize,
    /// The agent's name in a team, before the cycle.
    label: String,
}

/// What the display shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// The cycle being run.
    pub cycle: u32,
    /// The budget limit.
    pub limit: Nanos,
    /// Spent so far.
    pub spent: Nanos,
    /// Calls settled so far.
    pub calls: u32,
    /// Input tokens so far.
    pub input_tokens: u64,
    /// Output tokens so far.
    pub output_tokens: u64,
    /// The cost of the last call settled in this process.
    pub last_cost: Option<Nanos>,
    /// Fuel used so far.
    pub fuel: u64,
}

/// One settled call, as the ledger sees it right after.
#[derive(Debug, Clone, Copy)]
pub struct CallFigures {
    /// Spent after the call.
    pub spent: Nanos,
    /// The limit in force.
    pub limit: Nanos,
    /// Calls settled, this one included.
    pub calls: u32,
    /// What the call cost.
    pub cost: Nanos,
    /// The call's input tokens.
    pub input_tokens: u64,
    /// The call's output tokens.
    pub output_tokens: u64,
    /// Fuel used by the run at the call.
    pub fuel: u64,
}

/// How many thresholds `spent` has reached, in the ledger's integer arithmetic.
pub fn level(spent: Nanos, limit: Nanos, thresholds: &[f64]) -> usize {
    thresholds
        .iter()
        .filter(|t| {
            let ppm = (*t * 1e6).round() as u128;
            (spent as u128) * 1_000_000 >= ppm.saturating_mul(limit as u128)
        })
        .count()
}

/// The bar's colour after `level` of `count` thresholds: green, then yellow and
/// orange, and red once the last one is passed.
pub fn colour(level: usize, count: usize) -> &'static str {
    match (level, count) {
        (0, _) => "green",
        (l, c) if l >= c => "red",
        (l, c) if c >= 3 && l * 3 >= c * 2 => "208",
        _ => "yellow",
    }
}

/// 950, 12.3k, 4.56M, 7.89G: short enough for one terminal line.
pub fn compact(n: u64) -> String {
    let f = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", f / 1e6),
        _ => format!("{:.2}G", f / 1e9),
    }
}

/// The text beside and below the bar.
pub fn message(f: &Figures) -> String {
    let pct = crate::report::percent(f.spent, f.limit);
    let last = f.last_cost.map(fmt_usd).unwrap_or_else(|| "-".into());
    format!(
        "{} / {} {pct:.1}%\n  {} call{} · tokens {} in / {} out · last call {last} · fuel {}",
        fmt_usd(f.spent),
        fmt_usd(f.limit),
        f.calls,
        if f.calls == 1 { "" } else { "s" },
        compact(f.input_tokens),
        compact(f.output_tokens),
        compact(f.fuel)
    )
}

fn style(colour: &str) -> ProgressStyle {
    let template = format!("{{spinner:.cyan}} {{elapsed_precise}} {{prefix:.bold}} ▕{{bar:24.{colour}/240}}▏ {{msg}}");
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏░")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

impl Progress {
    /// On when `wanted` and stdout is a terminal that can redraw (not `TERM=dumb`).
    pub fn terminal(wanted: bool) -> Progress {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if wanted && !dumb && std::io::stdout().is_terminal() {
            static STDOUT: OnceLock<MultiProgress> = OnceLock::new();
            Progress::within(STDOUT.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())).clone())
        } else {
            Progress::default()
        }
    }

    /// Draw to `target` (tests use a hidden or in-memory one).
    pub fn to(target: ProgressDrawTarget) -> Progress {
        Progress::within(MultiProgress::with_draw_target(target))
    }

    /// Another display among the same bars (an agent of the same team); off if this one is.
    pub fn sibling(&self) -> Progress {
        match self.state() {
            Some(s) => Progress::within(s.multi.clone()),
            None => Progress::default(),
        }
    }

    fn within(multi: MultiProgress) -> Progress {
        Progress { inner: Some(Arc::new(Mutex::new(State { multi, fresh: true, live: None }))) }
    }

    /// Whether the display is drawn (a terminal, not turned off).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn state(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.inner.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Show the bar, starting from what the ledger holds (non-zero on a resume);
    /// `label` names the agent when several share the terminal.
    pub fn start(&self, ledger: &LedgerState, fuel: u64, cycle: u32, label: &str) {
        let Some(mut s) = self.state() else { return };
        if !std::mem::replace(&mut s.fresh, false) {
            return;
        }
        let figures = Figures {
            cycle,
            limit: ledger.limit,
            spent: ledger.spent,
            calls: ledger.calls,
            input_tokens: ledger.by_operation.values().map(|o| o.input_tokens).sum(),
            output_tokens: ledger.by_operation.values().map(|o| o.output_tokens).sum(),
            last_cost: None,
            fuel,
        };
        let bar = s.multi.add(ProgressBar::new(figures.limit.max(1)).with_finish(ProgressFinish::AndClear));
        let label = label.trim();
        let label = if label.is_empty() { String::new() } else { format!("{label} ") };
        let mut live = Live { bar, figures, thresholds: ledger.thresholds.clone(), level: usize::MAX, label };
        live.redraw();
        live.bar.enable_steady_tick(Duration::from_millis(120));
        s.live = Some(live);
    }

    /// A new cycle begins; `fuel` is what the run has used so far.
    pub fn cycle(&self, cycle: u32, fuel: u64) {
        self.update(|f| {
            f.cycle = cycle;
            f.fuel = fuel;
        });
    }

    /// A call settled.
    pub fn call(&self, c: CallFigures) {
        self.update(|f| {
            f.spent = c.spent;
            f.limit = c.limit;
            f.calls = c.calls;
            f.input_tokens += c.input_tokens;
            f.output_tokens += c.output_tokens;
            f.last_cost = Some(c.cost);
            f.fuel = c.fuel;
        });
    }

    fn update(&self, change: impl FnOnce(&mut Figures)) {
        let Some(mut s) = self.state() else { return };
        if let Some(live) = s.live.as_mut() {
            change(&mut live.figures);
            live.redraw();
        }
    }

    /// What the display shows now (`None` when it is off or not started).
    pub fn figures(&self) -> Option<Figures> {
        self.state()?.live.as_ref().map(|l| l.figures.clone())
    }

    /// Run `print` with the bars off the screen, then draw them again.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        // Not under our lock: another run's line may be printing through the same bars.
        let multi = self.state().map(|s| s.multi.clone());
        match multi {
            Some(m) => m.suspend(print),
            None => print(),
        }
    }

    /// Clear the bar for good; later lines print as if it never was.
    pub fn finish(&self) {
        let Some(mut s) = self.state() else { return };
        s.fresh = false;
        if let Some(l) = s.live.take() {
            l.bar.finish_and_clear();
            s.multi.remove(&l.bar);
        }
    }
}

impl Live {
    fn redraw(&mut self) {
        let f = &self.figures;
        let level = level(f.spent, f.limit, &self.thresholds);
        if level != self.level {
            self.level = level;
            self.bar.set_style(style(colour(level, self.thresholds.len())));
        }
        self.bar.set_length(f.limit.max(1));
        self.bar.set_position(f.spent.min(f.limit));
        self.bar.set_prefix(format!("{}cycle {}", self.label, f.cycle));
        self.bar.set_message(message(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Ledger;

    #[test]
    fn colour_turns_at_each_threshold() {
        let t = [0.5, 0.8, 0.9];
        let limit = 100_000_000;
        let at = |spent| colour(level(spent, limit, &t), t.len());
        assert_eq!(at(0), "green");
        assert_eq!(at(49_999_999), "green");
        assert_eq!(at(50_000_000), "yellow");
        assert_eq!(at(80_000_000), "208");
        assert_eq!(at(89_999_999), "208");
        assert_eq!(at(90_000_000), "red");
        assert_eq!(at(limit), "red");
        // One threshold: green, then red.
        assert_eq!(colour(level(79, 100, &[0.8]), 1), "green");
        assert_eq!(colour(level(80, 100, &[0.8]), 1), "red");
        // No thresholds: always green.
        assert_eq!(colour(level(100, 100, &[]), 0), "green");
    }

    #[test]
    fn message_shows_every_figure() {
        let f = Figures {
            cycle: 4,
            limit: 100_000_000,
            spent: 67_900_000,
            calls: 4,
            input_tokens: 800,
            output_tokens: 6_590,
            last_cost: Some(18_900_000),
            fuel: 104_886,
        };
        assert_eq!(message(&f), "$0.0679 / $0.1000 67.9%\n  4 calls · tokens 800 in / 6590 out · last call $0.0189 · fuel 104.9k");
        assert_eq!(compact(12_345_678_901), "12.35G");
        assert_eq!(compact(2_500_000), "2.50M");
    }

    #[test]
    fn figures_follow_the_calls_and_start_from_the_ledger() {
        let mut l = Ledger::new(100_000_000).unwrap().with_thresholds(&[0.5]);
        let r = l.reserve(10_000_000).unwrap();
        let _ = l.settle(r, 10_000_000, "llm_call_cycle_1", 200, 1_000);
        let p = Progress::to(ProgressDrawTarget::hidden());
        assert_eq!(p.figures(), None, "nothing before start");
        p.start(&l.state(), 5_000, 1, "");
        let f = p.figures().unwrap();
        assert_eq!((f.spent, f.calls, f.input_tokens, f.output_tokens, f.fuel, f.cycle), (10_000_000, 1, 200, 1_000, 5_000, 1));
        p.cycle(2, 6_000);
        p.call(CallFigures { spent: 25_000_000, limit: 100_000_000, calls: 2, cost: 15_000_000, input_tokens: 300, output_tokens: 1_500, fuel: 7_000 });
        let f = p.figures().unwrap();
        assert_eq!((f.cycle, f.spent, f.calls, f.input_tokens, f.output_tokens, f.last_cost, f.fuel), (2, 25_000_000, 2, 500, 2_500, Some(15_000_000), 7_000));
        assert_eq!(p.suspend(|| 7), 7);
        p.finish();
        assert_eq!(p.figures(), None, "gone after finish");
        // A finished display does not come back.
        p.start(&l.state(), 0, 1, "");
        assert_eq!(p.figures(), None);
    }

    #[test]
    fn agents_of_a_team_get_a_bar_each() {
        let l = Ledger::new(100).unwrap().state();
        let a = Progress::to(ProgressDrawTarget::hidden());
        let b = a.sibling();
        a.start(&l, 0, 0, "[writer] ");
        b.start(&l, 0, 0, "[critic] ");
        b.cycle(3, 10);
        assert_eq!(a.figures().unwrap().cycle, 0);
        assert_eq!(b.figures().unwrap().cycle, 3);
        a.finish();
        assert_eq!(a.figures(), None);
        assert!(b.figures().is_some(), "the other agent's bar stays");
        assert_eq!(a.suspend(|| 1) + b.suspend(|| 2), 3);
        b.finish();
        assert!(!Progress::default().sibling().is_enabled());
    }

    #[test]
    fn off_by_default_and_when_unwanted() {
        let p = Progress::default();
        assert!(!p.is_enabled());
        p.start(&Ledger::new(1).unwrap().state(), 0, 0, "");
        assert_eq!(p.figures(), None);
        assert_eq!(p.suspend(|| "printed"), "printed");
        assert!(!Progress::terminal(false).is_enabled());
    }
}
