//! First Ctrl+C / SIGTERM: graceful; the second: immediate.

use budget_host::console::Console;
use budget_host::interrupt::{Mode, StopSignal};
use std::sync::Arc;

/// Watch for signals for the rest of the process.
pub fn watch(stop: Arc<StopSignal>, console: Console) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let term_fut = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_fut => {}
            }
            let msg = match stop.request() {
                Mode::Graceful => "🛑 Stop requested: finishing the current cycle (send again to stop now)",
                Mode::Immediate => "🛑 Stopping now",
            };
            if console.json {
                eprintln!("{msg}")
            } else {
                console.progress.suspend(|| println!("\n{msg}"))
            }
        }
    });
}
