//! The `host` binary: parse flags once, run, map the outcome to an exit code.
//! `cli` is the only clap code; everything below it is the library.

mod cli;

use clap::Parser;

fn main() {
    // Rust ignores SIGPIPE, so `host validate X | head` made println! panic; die quietly like other Unix tools.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(budget_host::interrupt::exit::FAILURE);
        }
    };
    let code = rt.block_on(async {
        match cli::run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                cli::error_code(&e)
            }
        }
    });
    // Don't wait for a provider call still in flight on another task.
    rt.shutdown_background();
    std::process::exit(code);
}
