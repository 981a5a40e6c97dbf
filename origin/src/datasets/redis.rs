//! The Redis dataset store: durable, shared by every origin node of one namespace.
//!
//! # Keys
//!
//! Each dataset `<name>` of namespace `<ns>` has its own hash tag `{<ns>:ds:<name>}`, so all of
//! one dataset's keys share a Redis Cluster slot (one Lua script may touch them all) while
//! different datasets spread over the cluster. Neither part can contain braces: the namespace
//! is checked here and dataset names are `[A-Za-z0-9_.-]`.
//!
//! | key                                  | type   | holds                                       |
//! |--------------------------------------|--------|---------------------------------------------|
//! | `ssepush:{<ns>:ds:<name>}:version`   | string | the dataset version (absent = 0)            |
//! | `ssepush:{<ns>:ds:<name>}:values`    | hash   | key → value as compact JSON                 |
//! | `ssepush:{<ns>:ds:<name>}:versions`  | hash   | key → the entry's version                   |
//! | `ssepush:{<ns>:ds:<name>}:log`       | list   | changelog, oldest first: `<version>:<p|d>:<key>` |
//! | `ssepush:{<ns>:ds:<name>}:bytes`     | string | bytes of `values` (the `max_bytes` budget)  |
//!
//! # Atomicity
//!
//! A write is one Lua script ([`WRITE_LUA`]): it checks the write's [`Guard`] against the entry's
//! current version, bumps the dataset version, writes or deletes the entry and appends the
//! changelog record trimmed to `changelog_len`, or, when the guard fails, changes nothing and
//! returns the current entry so the refusal (412 / 428 / 404) is classified in Rust by
//! [`evaluate`]. A delta is one read script, so the version, the changelog slice and the
//! entries it refers to are one consistent view; a snapshot is one `MULTI` transaction.
//!
//! # Connections
//!
//! The store runs on the origin's one [`RedisConn`]: writes on its commands lane, snapshots and
//! deltas (replies as large as the dataset) on its reads lane, so a big snapshot never queues in
//! front of a publisher's append.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use redis::{Script, Value};

use super::{
    Applied, ChangeRecord, DatasetLimits, DatasetName, DatasetStore, Delta, Entry, Gone, Guard, Op,
    Snapshot, Write, WriteOutcome, compute_changes, delta_window, evaluate,
};
use crate::redis_conn::{Read, RedisConn, store_error, write_error};
use crate::store::LogError;

/// One write, atomically.
const WRITE_LUA: &str = r#"
-- KEYS: 1 version, 2 values, 3 versions, 4 log, 5 bytes
-- ARGV: 1 key, 2 op ('p' put | 'd' delete), 3 value JSON, 4 guard kind, 5 guard version,
--       6 changelog length, 7 max keys, 8 max bytes
-- Returns {0, current version|false, current value|false} when refused, {2} when full,
-- {3} over the byte budget, {1, new version, created 0|1} when applied.
local key, op = ARGV[1], ARGV[2]
local cur = redis.call('HGET', KEYS[3], key)
local guard = ARGV[4]
local ok
if guard == 'always' then ok = true
elseif guard == 'never' then ok = false
elseif guard == 'absent' then ok = not cur
elseif guard == 'present' then ok = cur and true or false
elseif guard == 'version' then ok = cur == ARGV[5]
else return redis.error_reply('unknown guard ' .. guard) end
if op == 'd' and not cur then ok = false end
if not ok then
  return {0, cur, cur and redis.call('HGET', KEYS[2], key) or false}
end
if op == 'p' and not cur and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[7]) then
  return {2}
end
local old = cur and redis.call('HSTRLEN', KEYS[2], key) or 0
local new = 0
if op == 'p' then new = #ARGV[3] end
local held = tonumber(redis.call('GET', KEYS[5]) or '0')
if new > old and held - old + new > tonumber(ARGV[8]) then
  return {3}
end
if new ~= old then redis.call('INCRBY', KEYS[5], new - old) end
local v = string.format('%.0f', redis.call('INCR', KEYS[1]))
if op == 'p' then
  redis.call('HSET', KEYS[2], key, ARGV[3])
  redis.call('HSET', KEYS[3], key, v)
else
  redis.call('HDEL', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
end
redis.call('RPUSH', KEYS[4], v .. ':' .. op .. ':' .. key)
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[6]), -1)
return {1, v, cur and 0 or 1}
"#;

/// A delta's inputs, read atomically.
const DELTA_LUA: &str = r#"
-- KEYS: 1 version, 2 values, 3 versions, 4 log; ARGV: 1 since
-- Returns {version, changelog length, records, values, versions}; records are the ones after
-- `since` when the changelog covers it (the caller decides 410 from version and length), and
-- values/versions are the current entries of those records' keys, in record order.
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local len = redis.call('LLEN', KEYS[4])
local n = version - tonumber(ARGV[1])
local recs, vals, vers = {}, {}, {}
if n > 0 and n <= len then
  recs = redis.call('LRANGE', KEYS[4], -n, -1)
  for i, r in ipairs(recs) do
    local key = string.match(r, '^%d+:[pd]:(.*)$')
    if key then
      vals[i] = redis.call('HGET', KEYS[2], key) or ''
      vers[i] = redis.call('HGET', KEYS[3], key) or ''
    else
      vals[i], vers[i] = '', ''
    end
  end
end
return {string.format('%.0f', version), len, recs, vals, vers}
"#;

struct Keys {
    version: String,
    values: String,
    versions: String,
    log: String,
    bytes: String,
}

impl Keys {
    fn new(namespace: &str, name: &DatasetName) -> Keys {
        let prefix = format!("ssepush:{{{namespace}:ds:{name}}}:");
        Keys {
            version: format!("{prefix}version"),
            values: format!("{prefix}values"),
            versions: format!("{prefix}versions"),
            log: format!("{prefix}log"),
            bytes: format!("{prefix}bytes"),
        }
    }
}

/// Datasets on Redis. See the module docs for the key layout.
pub struct RedisDatasets {
    conn: RedisConn,
    limits: DatasetLimits,
    write: Script,
    delta: Script,
}

impl RedisDatasets {
    /// The datasets of `conn`'s namespace.
    pub fn new(conn: &RedisConn, limits: DatasetLimits) -> Self {
        RedisDatasets {
            conn: conn.clone(),
            limits: DatasetLimits {
                changelog_len: limits.changelog_len.max(1),
                ..limits
            },
            write: Script::new(WRITE_LUA),
            delta: Script::new(DELTA_LUA),
        }
    }

    fn keys(&self, name: &DatasetName) -> Keys {
        Keys::new(self.conn.namespace(), name)
    }
}

#[async_trait]
impl DatasetStore for RedisDatasets {
    async fn snapshot(&self, name: &DatasetName) -> Result<Snapshot, LogError> {
        let keys = self.keys(name);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(&keys.version)
            .cmd("HGETALL")
            .arg(&keys.values)
            .cmd("HGETALL")
            .arg(&keys.versions);
        let (version, values, versions): (
            Option<String>,
            HashMap<String, String>,
            HashMap<String, String>,
        ) = self.conn.read(Read::Pipe(&pipe)).await?;
        let version = version.as_deref().map_or(Ok(0), parse_u64)?;
        let mut entries = BTreeMap::new();
        for (key, json) in values {
            let v = versions
                .get(&key)
                .ok_or_else(|| corrupt(format!("dataset {name}: key {key:?} has no version")))?;
            entries.insert(key, entry(&json, v)?);
        }
        if entries.len() != versions.len() {
            return Err(corrupt(format!("dataset {name}: a version has no value")));
        }
        Ok(Snapshot {
            name: name.to_string(),
            version,
            entries,
        })
    }

    async fn delta(&self, name: &DatasetName, since: u64) -> Result<Result<Delta, Gone>, LogError> {
        let keys = self.keys(name);
        let mut call = self.delta.prepare_invoke();
        call.key(&keys.version)
            .key(&keys.values)
            .key(&keys.versions)
            .key(&keys.log)
            .arg(since);
        let reply: Value = self.conn.read(Read::Script(&call)).await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt(format!("delta script returned {reply:?}")));
        };
        let [version, len, recs, vals, vers]: [Value; 5] = parts
            .try_into()
            .map_err(|p: Vec<Value>| corrupt(format!("delta script returned {} parts", p.len())))?;
        let version = parse_u64(text(&version).ok_or_else(|| corrupt("delta: version"))?)?;
        let len = match len {
            Value::Int(n) => u64::try_from(n).map_err(corrupt)?,
            other => return Err(corrupt(format!("delta: length {other:?}"))),
        };
        let n = match delta_window(version, len, since) {
            Ok(n) => n,
            Err(gone) => return Ok(Err(gone)),
        };
        let (recs, vals, vers) = (strings(recs)?, strings(vals)?, strings(vers)?);
        if recs.len() as u64 != n || vals.len() != recs.len() || vers.len() != recs.len() {
            return Err(corrupt(format!(
                "dataset {name}: delta read {} records, expected {n}",
                recs.len()
            )));
        }
        let records = recs
            .iter()
            .map(|r| parse_record(r))
            .collect::<Result<Vec<_>, _>>()?;
        // The entries the records name, as the script read them with the records.
        let mut current = HashMap::new();
        for ((r, json), v) in records.iter().zip(&vals).zip(&vers) {
            if !json.is_empty() && !current.contains_key(&r.key) {
                current.insert(r.key.clone(), entry(json, v)?);
            }
        }
        let changes =
            compute_changes(since, &records, |k| current.get(k)).map_err(LogError::Corrupt)?;
        Ok(Ok(Delta {
            name: name.to_string(),
            version,
            since,
            changes,
        }))
    }

    async fn write(&self, name: &DatasetName, write: Write) -> Result<WriteOutcome, LogError> {
        let keys = self.keys(name);
        let guard = Guard::new(&write.op, write.precondition, write.policy);
        let (kind, guard_version) = match guard {
            Guard::Always => ("always", 0),
            Guard::Never => ("never", 0),
            Guard::Absent => ("absent", 0),
            Guard::Present => ("present", 0),
            Guard::Version(v) => ("version", v),
        };
        let (op, json) = match &write.op {
            Op::Put(v) => ("p", serde_json::to_string(v).map_err(corrupt)?),
            Op::Delete => ("d", String::new()),
        };
        let reply: Value = self
            .write
            .key(&keys.version)
            .key(&keys.values)
            .key(&keys.versions)
            .key(&keys.log)
            .key(&keys.bytes)
            .arg(write.key.as_str())
            .arg(op)
            .arg(json)
            .arg(kind)
            .arg(guard_version.to_string())
            .arg(self.limits.changelog_len.min(i64::MAX as u64))
            .arg(self.limits.max_keys.min(i64::MAX as u64))
            .arg(self.limits.max_bytes.min(i64::MAX as u64))
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(write_error)?;
        let Value::Array(parts) = reply else {
            return Err(corrupt(format!("write script returned {reply:?}")));
        };
        match parts.as_slice() {
            [Value::Int(1), v, Value::Int(created)] => {
                let version = parse_u64(text(v).ok_or_else(|| corrupt("write: version"))?)?;
                Ok(WriteOutcome::Applied(Applied {
                    key: write.key,
                    version,
                    value: match write.op {
                        Op::Put(v) => Some(v),
                        Op::Delete => None,
                    },
                    created: *created == 1,
                }))
            }
            [Value::Int(2)] => Ok(WriteOutcome::Full),
            [Value::Int(3)] => Ok(WriteOutcome::OverBudget),
            [Value::Int(0), rest @ ..] => {
                let current = match rest {
                    [Value::Nil, ..] | [] => None,
                    [v, json] => {
                        let v = text(v).ok_or_else(|| corrupt("write: current version"))?;
                        let json = text(json).ok_or_else(|| corrupt("write: current value"))?;
                        Some(entry(json, v)?)
                    }
                    other => return Err(corrupt(format!("write: refusal {other:?}"))),
                };
                // The script and `evaluate` agree (see `Guard`); a refusal `evaluate` would
                // allow means the store changed under us in a way the script cannot.
                match evaluate(
                    current.as_ref(),
                    &write.op,
                    write.precondition,
                    write.policy,
                ) {
                    Err(refusal) => Ok(WriteOutcome::Refused(refusal)),
                    Ok(()) => Err(corrupt(format!(
                        "dataset {name}: the store refused a write its guard allows"
                    ))),
                }
            }
            other => Err(corrupt(format!("write script returned {other:?}"))),
        }
    }

    async fn ping(&self) -> Result<(), LogError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt(format!("PING answered {pong:?}")))
        }
    }
}

fn entry(json: &str, version: &str) -> Result<Entry, LogError> {
    Ok(Entry {
        value: serde_json::from_str(json).map_err(|e| corrupt(format!("entry value: {e}")))?,
        version: parse_u64(version)?,
    })
}

/// `<version>:<p|d>:<key>`.
fn parse_record(r: &str) -> Result<ChangeRecord, LogError> {
    let mut parts = r.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(v), Some(op @ ("p" | "d")), Some(key)) if !key.is_empty() => Ok(ChangeRecord {
            version: parse_u64(v)?,
            key: key.to_owned(),
            deleted: op == "d",
        }),
        _ => Err(corrupt(format!("bad changelog record {r:?}"))),
    }
}

fn parse_u64(s: &str) -> Result<u64, LogError> {
    s.parse()
        .map_err(|_| corrupt(format!("expected a version, got {s:?}")))
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn strings(v: Value) -> Result<Vec<String>, LogError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                text(i)
                    .map(str::to_owned)
                    .ok_or_else(|| corrupt(format!("expected text, got {i:?}")))
            })
            .collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format!("expected a list, got {other:?}"))),
    }
}

fn corrupt(what: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datasets_keys_share_one_hash_tag() {
        let k = Keys::new("prod", &DatasetName::parse("prefs.eu").unwrap());
        for key in [&k.version, &k.values, &k.versions, &k.log] {
            assert!(key.starts_with("ssepush:{prod:ds:prefs.eu}:"), "{key}");
        }
    }

    #[test]
    fn changelog_records_parse_or_are_corrupt() {
        assert_eq!(
            parse_record("12:p:user:42").unwrap(),
            ChangeRecord {
                version: 12,
                key: "user:42".into(),
                deleted: false
            }
        );
        assert!(parse_record("3:d:k").unwrap().deleted);
        for bad in ["", "x:p:k", "3:q:k", "3:p:", "3:p"] {
            assert!(
                matches!(parse_record(bad), Err(LogError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
