//! One budget shared by many hosts on a Redis server.
//!
//! Keys under a prefix: `<p>:limit`, `<p>:spent`, `<p>:reserved` (nano-USD
//! integers), `<p>:holds` (hash id -> amount), `<p>:leases` (sorted set id
//! -> expiry in ms) and `<p>:expired` (hash id -> amount charged at expiry).
//! Each operation is one Lua script, so check-and-reserve is atomic however
//! many hosts race. Leases run on the Redis server's clock (`TIME`), not the
//! hosts'. An expired hold is charged in full, not handed back: its host may
//! have died after the provider billed. A later settle by the hold's id
//! (the live host's, or a resume's) replaces that charge with the reported
//! cost, once; a release by its id refunds it.

use super::{Hold, SharedLedger, SharedLedgerError, SharedStatus};
use crate::budget::Nanos;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// The server's clock, then expired holds charged in full; the shared
/// preamble of every script. KEYS: limit, spent, reserved, holds, leases, expired.
const RECLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, id in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[4], id)
  if amt then
    redis.call('HDEL', KEYS[4], id)
    redis.call('DECRBY', KEYS[3], amt)
    redis.call('INCRBY', KEYS[2], amt)
    redis.call('HSET', KEYS[6], id, amt)
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

/// One budget on a Redis server, shared by every host that names its key.
pub struct RedisLedger {
    conn: MultiplexedConnection,
    prefix: String,
    url: String,
    lease: Duration,
    timeout: Duration,
    reserve: redis::Script,
    settle: redis::Script,
    release: redis::Script,
    renew: redis::Script,
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
local amount = tonumber(ARGV[2])
if amount > limit - spent - reserved then return {0, limit - spent - reserved} end
redis.call('HSET', KEYS[4], ARGV[1], amount)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), ARGV[1])
redis.call('INCRBY', KEYS[3], amount)
return {1, limit - spent - reserved - amount}
"#,
            ),
            // The bill as it is, even past the hold and the limit: the books equal the bill.
            settle: script(
                r#"
local cost = tonumber(ARGV[2])
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('DECRBY', KEYS[3], held)
  redis.call('INCRBY', KEYS[2], cost)
  return {cost, 1}
end
local charged = redis.call('HGET', KEYS[6], ARGV[1])
if charged then
  -- Expired and charged in full: the reported cost replaces that charge.
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('INCRBY', KEYS[2], cost - tonumber(charged))
  return {cost, 2}
end
-- Settled already (or never held here): nothing twice.
return {0, 0}
"#,
            ),
            release: script(
                r#"
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('DECRBY', KEYS[3], held)
  return {1}
end
local charged = redis.call('HGET', KEYS[6], ARGV[1])
if charged then
  -- Expired and charged in full, but nothing was billed: refund it.
  redis.call('HDEL', KEYS[6], ARGV[1])
  redis.call('DECRBY', KEYS[2], charged)
end
return {1}
"#,
            ),
            // A long call keeps its hold: push the lease out, if the hold is still live.
            renew: script(
                r#"
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[5], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  return {1}
end
return {0}
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

    fn keys(&self) -> [String; 6] {
        [self.key("limit"), self.key("spent"), self.key("reserved"), self.key("holds"), self.key("leases"), self.key("expired")]
    }

    async fn run(&self, s: &redis::Script, args: &[String]) -> Result<Vec<i64>, SharedLedgerError> {
        let mut inv = s.prepare_invoke();
        for k in self.keys() {
            inv.key(k);
        }
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
        let id = format!("{}-{:x}", std::process::id(), rand_u64());
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
    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }
    async fn renew(&self, hold: &Hold) -> Result<bool, SharedLedgerError> {
        let v = self.run(&self.renew, &[hold.id.clone(), self.lease.as_millis().to_string()]).await?;
        Ok(v.first() == Some(&1))
    }
}

/// Hold ids must be unique across hosts and time (a settle by id must never
/// find another host's hold): 64 random bits beside the pid.
fn rand_u64() -> u64 {
    rand::random()
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
