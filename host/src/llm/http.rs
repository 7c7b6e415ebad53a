//! Shared HTTP plumbing: a client with timeouts and a capped body reader.

use super::ProviderError;
use std::time::Duration;

/// Responses larger than this are refused (a chat completion is kilobytes).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// An HTTP client with the call's timeout (and a connect timeout within it).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .build()
        .expect("a TLS backend is compiled in")
}

/// POST JSON and return (status, body), reading at most `MAX_BODY` bytes.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(u16, Option<Duration>, Vec<u8>), ProviderError> {
    let mut req = client.post(url).json(body);
    if let Some(key) = bearer {
        req = req.bearer_auth(key);
    }
    // Only a failed connect proves the request never left: anything later (a
    // reset after sending, a timeout) may have been processed and billed.
    let map_send = |e: reqwest::Error| {
        if e.is_builder() {
            ProviderError::InvalidRequest(format!("cannot build a request to {url}: {}", root_cause(&e)))
        } else if e.is_connect() && is_dns(&e) {
            ProviderError::Resolve { url: url.into(), detail: root_cause(&e) }
        } else if e.is_connect() {
            ProviderError::Connect { url: url.into(), detail: root_cause(&e) }
        } else if e.is_timeout() {
            ProviderError::Timeout { url: url.into(), secs: timeout.as_secs() }
        } else {
            ProviderError::Broken { url: url.into(), detail: root_cause(&e) }
        }
    };
    let mut resp = req.send().await.map_err(map_send)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if let Some(len) = resp.content_length() {
        if len as usize > MAX_BODY {
            return Err(ProviderError::TooLarge { url: url.into(), limit: MAX_BODY });
        }
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(ProviderError::TooLarge { url: url.into(), limit: MAX_BODY });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(ProviderError::Timeout { url: url.into(), secs: timeout.as_secs() }),
            Err(e) => return Err(ProviderError::Broken { url: url.into(), detail: root_cause(&e) }),
        }
    }
    Ok((status, retry_after, body))
}

/// A failed name lookup: hyper-util's connector names that layer "dns error".
fn is_dns(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(s) = cur {
        if s.to_string() == "dns error" {
            return true;
        }
        cur = s.source();
    }
    false
}

/// reqwest's Display stops at the outermost layer; the cause is what a user needs.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = s.to_string();
        cur = s.source();
    }
    msg
}

/// A short, single-line excerpt of an error body for messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.invalid` never resolves (RFC 2606): a lookup failure, not a refused connection.
    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_resolve_error() {
        let url = "http://budget-host-test.invalid/v1/chat/completions";
        let t = Duration::from_secs(5);
        let e = post_json(&client(t), url, None, &serde_json::json!({}), t).await.unwrap_err();
        assert!(matches!(e, ProviderError::Resolve { .. }), "{e:?}");
        assert!(!e.retryable() && !e.maybe_billed());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = format!("http://{addr}/v1/chat/completions");
        let t = Duration::from_secs(5);
        let e = post_json(&client(t), &url, None, &serde_json::json!({}), t).await.unwrap_err();
        assert!(matches!(e, ProviderError::Connect { .. }), "{e:?}");
        assert!(e.retryable() && !e.maybe_billed());
    }
}
