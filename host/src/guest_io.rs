//! What a guest may print: its WASI stdout and stderr, line by line, each
//! line prefixed with the plugin's name, at most a stated number of bytes per
//! plugin and run (the rest is dropped, said once). With `--json` everything
//! goes to stderr, so stdout holds only the host's summary and a guest can
//! neither forge nor corrupt it. Lines print around the live display.

use crate::console::Console;
use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output a plugin may print in one run (stdout and stderr together).
pub const DEFAULT_OUTPUT_CAP: u64 = 1 << 20;
/// A line longer than this is printed in pieces.
const MAX_LINE: usize = 4096;

/// One plugin's output budget, shared by its stdout and stderr.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Shared>,
    to_stdout: bool,
}

struct Shared {
    name: String,
    console: Console,
    left: AtomicU64,
    cap: u64,
    /// Partial lines of stdout and stderr.
    pending: Mutex<[Vec<u8>; 2]>,
    /// The last line printed to stderr (a panic message names the cause of a trap).
    last_error: Mutex<Option<String>>,
    /// Whether the drop was said.
    told: std::sync::atomic::AtomicBool,
}

impl GuestOutput {
    /// The stdout and stderr of plugin `name`, capped at `cap` bytes together.
    pub fn pair(name: &str, console: &Console, cap: u64) -> (GuestOutput, GuestOutput) {
        let inner = Arc::new(Shared { name: name.into(), console: console.clone(), left: AtomicU64::new(cap), cap, pending: Mutex::new([Vec::new(), Vec::new()]), last_error: Mutex::new(None), told: Default::default() });
        (GuestOutput { inner: inner.clone(), to_stdout: true }, GuestOutput { inner, to_stdout: false })
    }

    fn take(&self, bytes: &[u8]) {
        let s = &self.inner;
        let want = bytes.len() as u64;
        let before = s.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(l.saturating_sub(want))).unwrap_or(0);
        let cut = before < want;
        {
            let mut pending = s.pending.lock().unwrap_or_else(|p| p.into_inner());
            let buf = &mut pending[!self.to_stdout as usize];
            for chunk in bytes[..before.min(want) as usize].split_inclusive(|b| *b == b'\n') {
                buf.extend_from_slice(chunk);
                if buf.ends_with(b"\n") || buf.len() >= MAX_LINE {
                    self.print(buf);
                    buf.clear();
                }
            }
            if cut && !buf.is_empty() {
                self.print(buf);
                buf.clear();
            }
        }
        if cut && !s.told.swap(true, Ordering::SeqCst) {
            s.console.note(&format!("[{}] printed more than {} bytes: the rest of its output is dropped", s.name, s.cap));
        }
    }

    fn print(&self, line: &[u8]) {
        let s = &self.inner;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !self.to_stdout && !text.trim().is_empty() {
            *s.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.chars().take(300).collect());
        }
        let line = format!("{}[{}] {text}", s.console.prefix, s.name);
        if s.console.quiet {
            return;
        }
        s.console.progress.suspend(|| {
            if self.to_stdout && !s.console.json {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            } else {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        });
    }

    /// The last line the plugin printed to stderr, if any.
    pub fn last_error_line(&self) -> Option<String> {
        self.flush_partial_err();
        self.inner.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn flush_partial_err(&self) {
        let err = GuestOutput { inner: self.inner.clone(), to_stdout: false };
        err.flush_partial();
    }

    /// Print what is left of an unfinished line (the plugin is done).
    pub fn flush_partial(&self) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        let buf = &mut pending[!self.to_stdout as usize];
        if !buf.is_empty() {
            self.print(buf);
            buf.clear();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A guest's `wasi:random`: deterministic, from a seed the host sets, so a
/// step re-run after a crash or replayed from a journal draws the same bytes
/// and asks the same questions. Guests get no secret from it: the host's
/// keys never enter a guest.
#[derive(Clone)]
pub struct GuestRandom(Arc<Mutex<rand::rngs::StdRng>>);

impl GuestRandom {
    /// A generator seeded from `parts` (say, the run id and the cycle).
    pub fn new(parts: &[&[u8]]) -> GuestRandom {
        let g = GuestRandom(Arc::new(Mutex::new(<rand::rngs::StdRng as rand::SeedableRng>::from_seed([0; 32]))));
        g.reseed(parts);
        g
    }

    /// Start over from the seed of `parts`.
    pub fn reseed(&self, parts: &[&[u8]]) {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let seed: [u8; 32] = h.finalize().into();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = <rand::rngs::StdRng as rand::SeedableRng>::from_seed(seed);
    }
}

impl rand::TryRng for GuestRandom {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::Rng::next_u32(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::Rng::next_u64(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::Rng::fill_bytes(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), dst);
        Ok(())
    }
}

/// A WASI context that grants a guest nothing but its capped output, clocks
/// (read) and `random` (both the secure and insecure interfaces draw from it):
/// no files, network, environment or arguments.
pub fn wasi_for(name: &str, console: &Console, cap: u64, random: &GuestRandom) -> (wasmtime_wasi::WasiCtx, GuestOutput) {
    let (out, err) = GuestOutput::pair(name, console, cap);
    let mut b = wasmtime_wasi::WasiCtxBuilder::new();
    b.stdout(out.clone()).stderr(err).allow_ip_name_lookup(false).allow_tcp(false).allow_udp(false);
    b.secure_random(random.clone()).insecure_random(random.clone());
    // The insecure seed (hash-map keys in Rust's std and other guest
    // runtimes) comes from the same seed, fixed for the store's life.
    let mut seed = [0u8; 16];
    rand::Rng::fill_bytes(&mut random.clone(), &mut seed);
    b.insecure_random_seed(u128::from_le_bytes(seed));
    (b.build(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_random_is_the_same_for_the_same_seed() {
        let draw = |g: &GuestRandom| rand::Rng::next_u64(&mut g.clone());
        let a = GuestRandom::new(&[b"run", b"3"]);
        let b = GuestRandom::new(&[b"run", b"3"]);
        assert_eq!(draw(&a), draw(&b));
        let c = GuestRandom::new(&[b"run3", b""]);
        assert_ne!(draw(&GuestRandom::new(&[b"run", b"3"])), draw(&c), "parts are length-prefixed");
        a.reseed(&[b"run", b"3"]);
        assert_eq!(draw(&a), draw(&GuestRandom::new(&[b"run", b"3"])));
    }

    #[test]
    fn the_cap_holds_across_both_streams() {
        let console = Console { quiet: true, ..Default::default() };
        let (o, e) = GuestOutput::pair("p", &console, 10);
        o.take(b"12345\n");
        e.take(b"67890abc\n");
        assert_eq!(o.inner.left.load(Ordering::SeqCst), 0);
        o.take(b"more");
        assert_eq!(o.inner.left.load(Ordering::SeqCst), 0);
        assert!(o.inner.pending.lock().unwrap().iter().all(|b| b.is_empty()), "a cut line is printed, not kept");
    }
}
