//! The Redis webhook store: records and leases shared by every origin node of a namespace, so a
//! restarted or replacement node resumes delivery from the persisted cursor.
//!
//! # Keys
//!
//! Like the event log's, every key starts with `ssepush:{<ns>}:` (one hash tag per namespace, so
//! the scripts below may touch them together on Redis Cluster).
//!
//! | key                                | type   | holds                                        |
//! |------------------------------------|--------|----------------------------------------------|
//! | `ssepush:{<ns>}:webhooks`          | hash   | webhook id → record JSON (definition + state) |
//! | `ssepush:{<ns>}:webhooks-rev`      | hash   | webhook id → revision, bumped on every write |
//! | `ssepush:{<ns>}:webhook-lease:<id>`| string | the node delivering it, with a TTL (`PX`)    |
//!
//! Guarded writes and leases are Lua scripts, so check and write are one atomic step. The store
//! runs on the commands lane of the origin's one [`RedisConn`].

use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};

use super::Record;
use super::store::{Insert, Put, Versioned, WebhookStore};
use crate::redis_conn::{RedisConn, key_prefix, store_error};
use crate::store::LogError;

const INSERT_LUA: &str = r#"
-- KEYS: 1 records, 2 revisions; ARGV: 1 id, 2 record JSON, 3 max webhooks
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], 1)
return 1
"#;

const PUT_LUA: &str = r#"
-- KEYS: 1 records, 2 revisions, 3 lease; ARGV: 1 id, 2 expected revision, 3 record JSON, 4 node or ''
-- Returns the new revision, or -1 gone, -2 conflict, -3 not the lease holder.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local rev = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if rev ~= tonumber(ARGV[2]) then return -2 end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[4] then return -3 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"#;

const LEASE_LUA: &str = r#"
-- KEYS: 1 lease; ARGV: 1 node, 2 ttl ms. Take a free lease or renew our own.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

struct Keys {
    prefix: String,
    records: String,
    revs: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let prefix = key_prefix(namespace);
        Keys {
            records: format!("{prefix}webhooks"),
            revs: format!("{prefix}webhooks-rev"),
            prefix,
        }
    }

    fn lease(&self, id: &str) -> String {
        format!("{}webhook-lease:{id}", self.prefix)
    }
}

/// Webhooks on Redis. See the module docs for the key layout.
pub struct RedisWebhooks {
    conn: RedisConn,
    keys: Keys,
    insert: Script,
    put: Script,
    lease: Script,
    release: Script,
}

impl RedisWebhooks {
    /// The webhooks of `conn`'s namespace.
    pub fn new(conn: &RedisConn) -> Self {
        RedisWebhooks {
            conn: conn.clone(),
            keys: Keys::new(conn.namespace()),
            insert: Script::new(INSERT_LUA),
            put: Script::new(PUT_LUA),
            lease: Script::new(LEASE_LUA),
            release: Script::new(RELEASE_LUA),
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(what.to_string())
}

fn decode(json: &str, rev: u64) -> Result<Versioned, LogError> {
    let record: Record =
        serde_json::from_str(json).map_err(|e| corrupt(format!("webhook record: {e}")))?;
    Ok(Versioned { record, rev })
}

fn encode(record: &Record) -> Result<String, LogError> {
    serde_json::to_string(record).map_err(corrupt)
}

#[async_trait]
impl WebhookStore for RedisWebhooks {
    async fn insert(&self, record: &Record, max: usize) -> Result<Insert, LogError> {
        let done: i64 = self
            .insert
            .key(&self.keys.records)
            .key(&self.keys.revs)
            .arg(&record.hook.id)
            .arg(encode(record)?)
            .arg(max as u64)
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        Ok(if done == 1 {
            Insert::Done
        } else {
            Insert::Full
        })
    }

    async fn get(&self, id: &str) -> Result<Option<Versioned>, LogError> {
        let (json, rev): (Option<String>, Option<u64>) = redis::pipe()
            .atomic()
            .hget(&self.keys.records, id)
            .hget(&self.keys.revs, id)
            .query_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        json.map(|j| decode(&j, rev.unwrap_or(0))).transpose()
    }

    async fn list(&self) -> Result<Vec<Versioned>, LogError> {
        let (records, revs): (Vec<(String, String)>, Vec<(String, u64)>) = redis::pipe()
            .atomic()
            .hgetall(&self.keys.records)
            .hgetall(&self.keys.revs)
            .query_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        let revs: std::collections::HashMap<String, u64> = revs.into_iter().collect();
        records
            .into_iter()
            .map(|(id, json)| decode(&json, revs.get(&id).copied().unwrap_or(0)))
            .collect()
    }

    async fn put(&self, record: &Record, rev: u64, holder: Option<&str>) -> Result<Put, LogError> {
        let id = &record.hook.id;
        let reply: Value = self
            .put
            .key(&self.keys.records)
            .key(&self.keys.revs)
            .key(self.keys.lease(id))
            .arg(id)
            .arg(rev)
            .arg(encode(record)?)
            .arg(holder.unwrap_or(""))
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        match reply {
            Value::Int(-1) => Ok(Put::Gone),
            Value::Int(-2) => Ok(Put::Conflict),
            Value::Int(-3) => Ok(Put::NotHolder),
            Value::Int(n) if n > 0 => Ok(Put::Done(n as u64)),
            other => Err(corrupt(format!("webhook put script returned {other:?}"))),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool, LogError> {
        let (removed, _, _): (i64, i64, i64) = redis::pipe()
            .atomic()
            .hdel(&self.keys.records, id)
            .hdel(&self.keys.revs, id)
            .del(self.keys.lease(id))
            .query_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        Ok(removed > 0)
    }

    async fn lease(&self, id: &str, node: &str, ttl: Duration) -> Result<bool, LogError> {
        let got: i64 = self
            .lease
            .key(self.keys.lease(id))
            .arg(node)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        Ok(got == 1)
    }

    async fn release(&self, id: &str, node: &str) -> Result<(), LogError> {
        let _: i64 = self
            .release
            .key(self.keys.lease(id))
            .arg(node)
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_namespace_hash_tag() {
        let k = Keys::new("prod");
        for key in [&k.records, &k.revs, &k.lease("wh_x")] {
            assert!(key.starts_with("ssepush:{prod}:"), "{key}");
        }
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(matches!(decode("{nope", 1), Err(LogError::Corrupt(_))));
        assert!(matches!(decode("{}", 1), Err(LogError::Corrupt(_))));
    }
}
