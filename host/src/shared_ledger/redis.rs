//! One budget shared by many hosts on a Redis server.
//!
//! Keys under a prefix: `<p>:limit`, `<p>:spent`, `<p>:reserved` (nano-USD
//! integers), `<p>:holds` (hash id -> amount) and `<p>:leases` (sorted set id
//! -> expiry in ms). Each operation is one Lua script, so check-and-reserve is
//! atomic however many hosts race; expired leases are reclaimed first.

use super::{Hold, SharedLedger, SharedLedgerError, SharedStatus};
use crate::budget::Nanos;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// Reclaim expired holds; shared preamble of every script.
const RECLAIM: &str = r#"
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, id in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[4], id)
  if amt then
    redis.call('HDEL', KEYS[4], id)
    redis.call('DECRBY', KEYS[3], amt)
  end
  redis.call('ZREM', KEYS[5], id)
end
local limit = tonumber(redis.call('GET', KEYS[1]) or '0')
local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
local reserved = tonumber(redis.call('GET', KEYS[3]) or '0')
"#;

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{RECLAIM}\n{body}"))
}

pub struct RedisLedger {
    conn: MultiplexedConnection,
    prefix: String,
    url: String,
    lease: Duration,
    timeout: Duration,
    reserve: redis::Script,
    settle: redis::Script,
    release: redis::Script,
    status: redis::Script,
}

/// `redis://host:port/key` -> (`redis://host:port`, `key`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| format!("--ledger '{url}' must look like redis://host:port/key"))?;
    let (addr, key) = rest.split_once('/').ok_or_else(|| format!("--ledger '{url}' names no key: use redis://host:port/key"))?;
    if addr.is_empty() || key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("--ledger '{url}' must look like redis://host:port/key"));
    }
    Ok((format!("redis://{addr}"), key.to_string()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn unavailable(e: impl std::fmt::Display) -> SharedLedgerError {
    SharedLedgerError::Unavailable(e.to_string())
}

impl RedisLedger {
    /// Connect (bounded by `timeout`) and set the limit if the key is new; a key
    /// that already has another limit is refused rather than silently changed.
    pub async fn connect(url: &str, limit: Nanos, lease: Duration, timeout: Duration) -> Result<Self, String> {
        let (addr, prefix) = split_url(url)?;
        let client = redis::Client::open(addr.as_str()).map_err(|e| format!("--ledger {url}: {e}"))?;
        let conn = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("cannot reach the shared ledger at {addr}: no answer within {} ms", timeout.as_millis()))?
            .map_err(|e| format!("cannot reach the shared ledger at {addr}: {e}"))?;
        let pool = RedisLedger {
            conn,
            prefix,
            url: url.to_string(),
            lease,
            timeout,
            reserve: script(
                r#"
local amount = tonumber(ARGV[3])
if amount > limit - spent - reserved then return {0, limit - spent - reserved} end
redis.call('HSET', KEYS[4], ARGV[2], amount)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), ARGV[2])
redis.call('INCRBY', KEYS[3], amount)
return {1, limit - spent - reserved - amount}
"#,
            ),
            settle: script(
                r#"
local cost = tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[4], ARGV[2])
local charge
if held then
  held = tonumber(held)
  redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  redis.call('DECRBY', KEYS[3], held)
  -- The bill as it is, even past the hold and the limit: the books equal the bill.
  charge = cost
else
  -- The lease expired while the call ran: charge what still fits, never past the limit.
  charge = math.max(0, math.min(cost, limit - spent - reserved))
end
redis.call('INCRBY', KEYS[2], charge)
return {charge, held and 1 or 0}
"#,
            ),
            release: script(
                r#"
local held = redis.call('HGET', KEYS[4], ARGV[2])
if held then
  redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  redis.call('DECRBY', KEYS[3], held)
end
return 1
"#,
            ),
            status: script("return {limit, spent, reserved}"),
        };
        let mut c = pool.conn.clone();
        let set: bool = redis::cmd("SET")
            .arg(pool.key("limit"))
            .arg(limit)
            .arg("NX")
            .query_async::<Option<String>>(&mut c)
            .await
            .map(|r| r.is_some())
            .map_err(|e| format!("cannot use the shared ledger at {addr}: {e}"))?;
        if !set {
            let existing: u64 = redis::cmd("GET").arg(pool.key("limit")).query_async(&mut c).await.map_err(|e| format!("{e}"))?;
            if existing != limit {
                return Err(format!(
                    "the shared ledger {url} already has a limit of {}; start with the same --budget ({} given)",
                    crate::budget::fmt_usd(existing),
                    crate::budget::fmt_usd(limit)
                ));
            }
        }
        Ok(pool)
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }

    fn keys(&self) -> [String; 5] {
        [self.key("limit"), self.key("spent"), self.key("reserved"), self.key("holds"), self.key("leases")]
    }

    async fn run(&self, s: &redis::Script, args: &[String]) -> Result<Vec<i64>, SharedLedgerError> {
        let mut inv = s.prepare_invoke();
        for k in self.keys() {
            inv.key(k);
        }
        inv.arg(now_ms());
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn))
            .await
            .map_err(|_| SharedLedgerError::Unavailable(format!("{} did not answer within {} ms", self.url, self.timeout.as_millis())))?
            .map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl SharedLedger for RedisLedger {
    fn describe(&self) -> String {
        format!("shared ledger {}", self.url)
    }
    async fn status(&self) -> Result<SharedStatus, SharedLedgerError> {
        let v = self.run(&self.status, &[]).await?;
        Ok(SharedStatus { limit: v[0].max(0) as u64, spent: v[1].max(0) as u64, reserved: v[2].max(0) as u64 })
    }
    async fn reserve(&self, amount: Nanos) -> Result<Hold, SharedLedgerError> {
        let id = format!("{}-{}-{:x}", std::process::id(), now_ms(), rand_u64());
        let v = self.run(&self.reserve, &[id.clone(), amount.to_string(), self.lease.as_millis().to_string()]).await?;
        if v[0] == 1 {
            Ok(Hold { id, amount })
        } else {
            Err(SharedLedgerError::Exhausted { available: v[1].max(0) as u64 })
        }
    }
    async fn settle(&self, hold: Hold, cost: Nanos) -> Result<Nanos, SharedLedgerError> {
        let v = self.run(&self.settle, &[hold.id, cost.to_string()]).await?;
        Ok(v[0].max(0) as u64)
    }
    async fn release(&self, hold: Hold) -> Result<(), SharedLedgerError> {
        self.run(&self.release, &[hold.id]).await.map(|_| ())
    }
}

/// Hold ids must be unique across hosts; pid + time + this is plenty.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(split_url("redis://127.0.0.1:6379/team-a").unwrap(), ("redis://127.0.0.1:6379".into(), "team-a".into()));
        for bad in ["redis://127.0.0.1:6379", "http://x/y", "redis:///k", "redis://h:1/"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
