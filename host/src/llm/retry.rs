//! Bounded retries with exponential backoff for transient provider failures.

use super::ProviderError;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub base_delay: Duration,
    /// No single wait (including a server's Retry-After) is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { retries: 3, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, err: &ProviderError) -> Duration {
        if let ProviderError::Status { retry_after: Some(d), .. } = err {
            return (*d).min(self.max_delay);
        }
        (self.base_delay * 2u32.saturating_pow(attempt)).min(self.max_delay)
    }

    /// Run `f` until it succeeds, fails for good, or retries run out.
    /// Returns the result and the number of attempts made.
    pub async fn run<T, F, Fut>(&self, mut f: F) -> (Result<T, ProviderError>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return (Ok(v), attempt + 1),
                Err(e) if e.retryable() && attempt < self.retries => {
                    tokio::time::sleep(self.delay(attempt, &e)).await;
                    attempt += 1;
                }
                Err(e) => return (Err(e), attempt + 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16) -> ProviderError {
        ProviderError::Status { url: "u".into(), status: code, message: String::new(), retry_after: None }
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up() {
        let p = RetryPolicy { retries: 2, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
        let n = AtomicU32::new(0);
        let (r, attempts) = p.run(|| async { n.fetch_add(1, Ordering::SeqCst); Err::<(), _>(status(503)) }).await;
        assert!(r.is_err());
        assert_eq!((attempts, n.load(Ordering::SeqCst)), (3, 3));
    }

    #[tokio::test]
    async fn does_not_retry_client_errors() {
        let p = RetryPolicy { retries: 5, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
        let (r, attempts) = p.run(|| async { Err::<(), _>(status(400)) }).await;
        assert!(r.is_err());
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn never_retries_what_may_have_been_billed() {
        let p = RetryPolicy { retries: 5, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
        let billed = || {
            [
                ProviderError::Timeout { url: "u".into(), secs: 1 },
                ProviderError::Broken { url: "u".into(), detail: "reset".into() },
                ProviderError::Malformed { url: "u".into(), detail: "eof".into() },
                ProviderError::TooLarge { url: "u".into(), limit: 1 },
            ]
        };
        for e in billed() {
            assert!(e.maybe_billed() && !e.retryable(), "{e}");
        }
        for e in billed() {
            let n = AtomicU32::new(0);
            let mut once = Some(e);
            let (r, attempts) = p
                .run(|| {
                    n.fetch_add(1, Ordering::SeqCst);
                    let e = once.take();
                    async move { Err::<(), _>(e.unwrap_or_else(|| status(500))) }
                })
                .await;
            assert!(r.is_err());
            assert_eq!((attempts, n.load(Ordering::SeqCst)), (1, 1));
        }
        // A refused connection never reached the server: free to retry.
        let refused = ProviderError::Connect { url: "u".into(), detail: "refused".into() };
        assert!(refused.retryable() && !refused.maybe_billed());
    }

    #[tokio::test]
    async fn never_retries_what_cannot_heal() {
        let p = RetryPolicy { retries: 5, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
        let dns = || ProviderError::Resolve { url: "u".into(), detail: "failed to lookup address information".into() };
        for e in [dns(), status(401), status(403), status(404)] {
            assert!(!e.retryable() && !e.maybe_billed(), "{e}");
        }
        for make in [dns as fn() -> ProviderError, || status(401), || status(403)] {
            let n = AtomicU32::new(0);
            let (r, attempts) = p.run(|| { n.fetch_add(1, Ordering::SeqCst); let e = make(); async move { Err::<(), _>(e) } }).await;
            assert!(r.is_err());
            assert_eq!((attempts, n.load(Ordering::SeqCst)), (1, 1));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::default();
        let after = |s: u64| ProviderError::Status { url: "u".into(), status: 429, message: String::new(), retry_after: Some(Duration::from_secs(s)) };
        assert_eq!(p.delay(0, &after(2)), Duration::from_secs(2));
        assert_eq!(p.delay(0, &after(86_400)), p.max_delay);
        assert_eq!(p.delay(0, &after(u64::MAX)), p.max_delay);
        assert_eq!(p.delay(40, &status(503)), p.max_delay, "backoff never overflows");
    }

    #[tokio::test]
    async fn succeeds_after_a_429() {
        let p = RetryPolicy { retries: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
        let n = AtomicU32::new(0);
        let (r, attempts) = p
            .run(|| async {
                if n.fetch_add(1, Ordering::SeqCst) == 0 { Err(status(429)) } else { Ok(7) }
            })
            .await;
        assert_eq!((r.unwrap(), attempts), (7, 2));
    }
}
