//! The Redis event log: Redis Streams, durable, shared by every origin node of one namespace.
//!
//! # Keys
//!
//! Every key of a namespace `<ns>` starts with `ssepush:{<ns>}:`, so they all share the hash tag
//! `{<ns>}` and land in one Redis Cluster slot; that is what lets one Lua script touch them all
//! atomically.
//!
//! | key                           | type   | holds                                                   |
//! |-------------------------------|--------|---------------------------------------------------------|
//! | `ssepush:{<ns>}:log`          | stream | the global feed, fields `c` channel, `t` type, `d` data |
//! | `ssepush:{<ns>}:log-dropped`  | string | newest id the feed's cap dropped                        |
//! | `ssepush:{<ns>}:ch:<channel>` | stream | one channel's retained history, fields `t`, `d`         |
//! | `ssepush:{<ns>}:channels`     | set    | every channel name ever published on                    |
//! | `ssepush:{<ns>}:dropped`      | hash   | channel name → newest id retention dropped from it      |
//!
//! `d` is the event's data as compact JSON; an event's `time` is its id's milliseconds.
//!
//! # Ids
//!
//! An append is one Lua script per batch. Each event is first `XADD`ed to the global feed with an
//! id Redis assigns (`<ms>-<seq>`, strictly increasing per stream: exactly an [`EventId`]), then
//! added to its channel's stream under that *same* id. So ids come from a single counter per
//! namespace, are totally ordered across channels and across every origin process sharing the
//! Redis, survive restarts, and a batch is contiguous.
//!
//! # Why the `dropped` keys
//!
//! Reset detection needs "the newest id retention dropped". Redis 7 keeps a
//! `max-deleted-entry-id` per stream, but only `XDEL` updates it; `MAXLEN`/`MINID` trimming does
//! not (checked on 7.0.15), so the scripts record it themselves: before trimming they look up the
//! newest entry about to go (usually one `XRANGE … COUNT 1`) and store it. The feed is trimmed with
//! an exact `MAXLEN` for the same reason: approximate trimming drops entries we could not name.
//!
//! # Connections
//!
//! Ordinary commands share one auto-reconnecting multiplexed [`ConnectionManager`]. `tail` blocks
//! in `XREAD BLOCK`, which would stall every command queued behind it on a multiplexed
//! connection, so it has a dedicated connection with no client-side response timeout (the
//! client's default of 500 ms would cut every wait short), guarded by a mutex.
//!
//! Deleting the `log` key while channel streams remain can make a later append fail (Redis may
//! then issue an id a channel stream already passed); run Redis with `noeviction`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, Value};
use tokio::sync::Mutex;

use super::{EventLog, LogError, ReadResult, Reset, Retention};
use crate::channel::PatternSet;
use crate::event::{Event, EventId, NewEvent, SharedEvent};

/// Events the global feed keeps for the hub to catch up after a stall.
pub const FEED_CAPACITY: u64 = 100_000;

/// How long an ordinary command may take before the store counts as unavailable. Generous: a
/// large batch is one script.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Channels per `trim_expired` script call, so one call never holds Redis for long.
const TRIM_CHUNK: usize = 256;
/// Longest `XREAD BLOCK` we ask for; far beyond any real wait, and within what Redis accepts.
const MAX_BLOCK_MS: u128 = 1_000_000_000_000;

/// Lua shared by the scripts that trim by age.
macro_rules! newest_below_lua {
    () => {
        r#"
-- The id of the newest entry of `key` below `bound`, or nil. Forward first: an XREVRANGE whose
-- start is below every entry walks the whole stream (O(n), measured on 7.0).
local function newest_below(key, bound)
  local gone = redis.call('XRANGE', key, '-', '(' .. bound, 'COUNT', 16)
  if #gone < 16 then return gone[#gone] and gone[#gone][1] end
  return redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', 1)[1][1]
end
"#
    };
}

/// One batch, atomically: feed entry, channel entry with the same id, retention, bookkeeping.
const APPEND_LUA: &str = concat!(
    newest_below_lua!(),
    r#"
-- KEYS: 1 feed, 2 feed-dropped, 3 channel set, 4 dropped hash, 4+i channel stream of event i
-- ARGV: 1 feed cap; then per event: channel, type, data, max events, max age ms (-1: none)
local cap = tonumber(ARGV[1])
local ids = {}
for i = 1, (#ARGV - 1) / 5 do
  local a = 1 + (i - 1) * 5
  local channel, kind, data = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local max_events, max_age = ARGV[a + 4], tonumber(ARGV[a + 5])
  local key = KEYS[4 + i]

  local len = redis.call('XLEN', KEYS[1])
  if len >= cap then
    local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - cap + 1)
    if #gone > 0 then redis.call('SET', KEYS[2], gone[#gone][1]) end
  end
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', cap, '*', 'c', channel, 't', kind, 'd', data)

  local dropped = false
  local keep = tonumber(max_events)
  if keep == 0 then
    dropped = id
  else
    local clen = redis.call('XLEN', key)
    if clen >= keep then
      local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', clen - keep + 1)
      if #gone > 0 then dropped = gone[#gone][1] end
    end
  end
  redis.call('XADD', key, 'MAXLEN', max_events, id, 't', kind, 'd', data)
  if max_age >= 0 then
    local cutoff = tonumber(string.match(id, '^%d+')) - max_age
    if cutoff > 0 then
      local bound = string.format('%.0f-0', cutoff)
      local gone = newest_below(key, bound)
      if gone then
        dropped = gone
        redis.call('XTRIM', key, 'MINID', bound)
      end
    end
  end
  if dropped then redis.call('HSET', KEYS[4], channel, dropped) end
  redis.call('SADD', KEYS[3], channel)
  ids[i] = id
end
return ids
"#
);

/// Age trimming by the Redis clock, the one the ids come from.
const TRIM_LUA: &str = concat!(
    newest_below_lua!(),
    r#"
-- KEYS: 1 dropped hash, 1+i channel stream; ARGV: per channel: name, max age ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV / 2 do
  local channel, age = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local key = KEYS[1 + i]
  local cutoff = now - age
  if cutoff > 0 then
    local bound = string.format('%.0f-0', cutoff)
    local gone = newest_below(key, bound)
    if gone then
      redis.call('HSET', KEYS[1], channel, gone)
      redis.call('XTRIM', key, 'MINID', bound)
    end
  end
end
return 0
"#
);

/// The feed's `last-generated-id`: unlike its newest entry, it is right even when trimming
/// emptied the stream. `XINFO` fails on a missing key, hence the script.
const LAST_ID_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return redis.error_reply('XINFO STREAM has no last-generated-id')
"#;

struct Keys {
    prefix: String,
    log: String,
    log_dropped: String,
    channels: String,
    dropped: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let prefix = format!("ssepush:{{{namespace}}}:");
        Keys {
            log: format!("{prefix}log"),
            log_dropped: format!("{prefix}log-dropped"),
            channels: format!("{prefix}channels"),
            dropped: format!("{prefix}dropped"),
            prefix,
        }
    }

    fn channel(&self, name: &str) -> String {
        format!("{}ch:{name}", self.prefix)
    }
}

/// The event log on Redis Streams. See the module docs for the key layout.
pub struct RedisLog {
    client: Client,
    conn: ConnectionManager,
    /// Only `tail` blocks on it; `None` until first use and after a failure, to reconnect.
    tail_conn: Mutex<Option<MultiplexedConnection>>,
    keys: Keys,
    retention: Retention,
    feed_capacity: u64,
    append: Script,
    trim: Script,
    last: Script,
}

impl RedisLog {
    /// Connects to `url` (`redis://host:port[/db]`, `rediss://…`) and checks the server can run
    /// this log (Redis ≥ 6.2, for exclusive ranges and `MINID` trimming).
    pub async fn connect(
        url: &str,
        namespace: &str,
        retention: Retention,
    ) -> Result<Self, LogError> {
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            // Braces would change the hash tag and scatter the keys over cluster slots.
            return Err(LogError::Unavailable(format!(
                "invalid store namespace {namespace:?}: must be non-empty, without braces"
            )));
        }
        let client = Client::open(url).map_err(|_| LogError::BadUrl(url.to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(store_error)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        check_version(&info)?;
        Ok(RedisLog {
            client,
            conn,
            tail_conn: Mutex::new(None),
            keys: Keys::new(namespace),
            retention,
            feed_capacity: FEED_CAPACITY,
            append: Script::new(APPEND_LUA),
            trim: Script::new(TRIM_LUA),
            last: Script::new(LAST_ID_LUA),
        })
    }

    /// Changes how many events the global feed keeps (default [`FEED_CAPACITY`]; at least 1).
    /// Mostly for tests: a small feed makes "the hub fell behind" easy to reach.
    pub fn with_feed_capacity(mut self, capacity: u64) -> Self {
        self.feed_capacity = capacity.max(1);
        self
    }

    /// The prefix of every key this log owns (`ssepush:{<ns>}:`), for tooling and cleanup.
    pub fn key_prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// The oldest retained id of each channel, for the rare reset whose range read came back
    /// empty (everything retained is newer than `upto`, or nothing is retained).
    async fn oldest_ids(&self, channels: &[&str]) -> Result<Vec<Option<EventId>>, LogError> {
        let mut pipe = redis::pipe();
        for ch in channels {
            pipe.cmd("XRANGE")
                .arg(self.keys.channel(ch))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        replies
            .into_iter()
            .map(|v| Ok(parse_entries(v)?.first().map(|e| e.id)))
            .collect()
    }
}

fn tail_connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        // `tail` bounds each call itself, by its own wait plus RESPONSE_TIMEOUT.
        .set_response_timeout(None)
}

fn check_version(info: &str) -> Result<(), LogError> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim);
    let parsed = version.and_then(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    });
    match parsed {
        // Unknown shapes (forks, proxies) get the benefit of the doubt.
        Some(v) if v < (6, 2) => Err(LogError::Unavailable(format!(
            "Redis {} is too old: the event log needs Redis 6.2 or newer",
            version.unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

fn store_error(e: RedisError) -> LogError {
    if e.code() == Some("WRONGTYPE")
        || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
    {
        LogError::Corrupt(e.to_string())
    } else {
        LogError::Unavailable(e.to_string())
    }
}

fn corrupt(what: impl std::fmt::Display) -> LogError {
    LogError::Corrupt(what.to_string())
}

/// Redis `COUNT` takes a signed 64-bit number.
fn count_arg(n: usize) -> u64 {
    (n as u64).min(i64::MAX as u64)
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

fn parse_id(v: &Value) -> Result<EventId, LogError> {
    let s = text(v).ok_or_else(|| corrupt(format!("expected a stream id, got {v:?}")))?;
    s.parse().map_err(corrupt)
}

/// One stream entry with the fields this log writes.
struct Entry {
    id: EventId,
    channel: Option<String>,
    kind: Option<String>,
    data: Option<String>,
}

impl Entry {
    /// `channel` is the stream's channel; `None` for feed entries, which carry it in `c`.
    fn into_event(self, channel: Option<&str>) -> Result<SharedEvent, LogError> {
        let id = self.id;
        let missing = |f: &str| corrupt(format!("entry {id} has no field {f:?}"));
        let channel = match channel {
            Some(c) => c.to_owned(),
            None => self.channel.ok_or_else(|| missing("c"))?,
        };
        let kind = self.kind.ok_or_else(|| missing("t"))?;
        let data = self.data.ok_or_else(|| missing("d"))?;
        let data =
            serde_json::from_str(&data).map_err(|e| corrupt(format!("entry {id}: data: {e}")))?;
        Ok(Arc::new(Event {
            id,
            channel,
            kind,
            data,
            time: id.ms,
        }))
    }
}

/// Field/value pairs: a flat array (RESP2) or a map (RESP3).
fn pairs(v: Value) -> Result<Vec<(Value, Value)>, LogError> {
    match v {
        Value::Map(m) => Ok(m),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(corrupt("odd number of field/value items"));
            }
            let mut it = items.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(corrupt(format!(
            "expected field/value pairs, got {other:?}"
        ))),
    }
}

fn parse_entry(v: Value) -> Result<Entry, LogError> {
    let Value::Array(parts) = v else {
        return Err(corrupt(format!("expected a stream entry, got {v:?}")));
    };
    let [id, fields]: [Value; 2] = parts.try_into().map_err(|p: Vec<Value>| {
        corrupt(format!("stream entry has {} parts, expected 2", p.len()))
    })?;
    let mut entry = Entry {
        id: parse_id(&id)?,
        channel: None,
        kind: None,
        data: None,
    };
    for (k, v) in pairs(fields)? {
        let slot = match text(&k) {
            Some("c") => &mut entry.channel,
            Some("t") => &mut entry.kind,
            Some("d") => &mut entry.data,
            _ => continue,
        };
        let value =
            text(&v).ok_or_else(|| corrupt(format!("entry {}: field is not text", entry.id)))?;
        *slot = Some(value.to_owned());
    }
    Ok(entry)
}

/// An `XRANGE`/`XREVRANGE` reply.
fn parse_entries(v: Value) -> Result<Vec<Entry>, LogError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(corrupt(format!("expected stream entries, got {other:?}"))),
    }
}

/// An `XREAD` reply for one stream: nil on timeout, else `[[key, entries]]` (RESP2) or
/// `{key: entries}` (RESP3).
fn parse_xread(v: Value) -> Result<Vec<Entry>, LogError> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(m) => m,
        Value::Array(items) => items
            .into_iter()
            .map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    match (kv.next(), kv.next()) {
                        (Some(k), Some(v)) => Ok((k, v)),
                        _ => Err(corrupt("short XREAD stream reply")),
                    }
                }
                other => Err(corrupt(format!("unexpected XREAD stream reply {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(corrupt(format!("unexpected XREAD reply {other:?}"))),
    };
    let mut out = Vec::new();
    for (_, entries) in streams {
        out.extend(parse_entries(entries)?);
    }
    Ok(out)
}

/// A `GET`/`HMGET` value that holds an id, or nothing.
fn parse_opt_id(v: &Value) -> Result<Option<EventId>, LogError> {
    match v {
        Value::Nil => Ok(None),
        v => parse_id(v).map(Some),
    }
}

#[async_trait]
impl EventLog for RedisLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.append.prepare_invoke();
        call.key(&self.keys.log)
            .key(&self.keys.log_dropped)
            .key(&self.keys.channels)
            .key(&self.keys.dropped)
            .arg(self.feed_capacity);
        for e in &events {
            let name = e.channel.as_str();
            let limits = self.retention.for_channel(name);
            let data = serde_json::to_string(&e.data).map_err(corrupt)?;
            let max_age = limits
                .max_age
                .map_or(-1, |a| i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
            call.key(self.keys.channel(name))
                .arg(name)
                .arg(&e.kind)
                .arg(data)
                .arg(limits.max_events.min(i64::MAX as u64))
                .arg(max_age);
        }
        let reply: Value = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let Value::Array(ids) = reply else {
            return Err(corrupt(format!("append script returned {reply:?}")));
        };
        if ids.len() != events.len() {
            return Err(corrupt(format!(
                "append script returned {} ids for {} events",
                ids.len(),
                events.len()
            )));
        }
        events
            .into_iter()
            .zip(&ids)
            .map(|(e, id)| Ok(Arc::new(e.into_event(parse_id(id)?))))
            .collect()
    }

    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError> {
        let mut conn = self.conn.clone();
        let channels: Vec<String> = match patterns.literals() {
            Some(names) => names.into_iter().map(str::to_owned).collect(),
            None => {
                let all: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&self.keys.channels)
                    .query_async(&mut conn)
                    .await
                    .map_err(store_error)?;
                all.into_iter().filter(|c| patterns.matches(c)).collect()
            }
        };
        // Nothing is after the largest id, and Redis refuses it as an exclusive start.
        if channels.is_empty() || after == EventId::new(u64::MAX, u64::MAX) {
            return Ok(ReadResult::default());
        }
        // One transaction, so the ranges and the dropped ids are one consistent snapshot.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for ch in &channels {
            pipe.cmd("XRANGE")
                .arg(self.keys.channel(ch))
                .arg(format!("({after}"))
                .arg(upto.to_string())
                .arg("COUNT")
                .arg(count_arg(limit));
        }
        pipe.cmd("HMGET").arg(&self.keys.dropped).arg(&channels);
        let mut replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(store_error)?;
        if replies.len() != channels.len() + 1 {
            return Err(corrupt("short reply to a range read"));
        }
        let dropped = match replies.pop() {
            Some(Value::Array(ids)) if ids.len() == channels.len() => ids,
            other => return Err(corrupt(format!("unexpected HMGET reply {other:?}"))),
        };

        let mut reset = false;
        let mut oldest: Option<EventId> = None;
        let mut unknown_oldest = Vec::new();
        let mut merged: Vec<(Entry, &str)> = Vec::new();
        for ((ch, reply), dropped) in channels.iter().zip(replies).zip(&dropped) {
            let entries = parse_entries(reply)?;
            if parse_opt_id(dropped)?.is_some_and(|d| d > after) {
                reset = true;
                // Everything retained is newer than the dropped id, so newer than `after`: the
                // range's first entry, when there is one, is the channel's oldest.
                match entries.first() {
                    Some(e) => oldest = Some(oldest.map_or(e.id, |o| o.min(e.id))),
                    None => unknown_oldest.push(ch.as_str()),
                }
            }
            merged.extend(entries.into_iter().map(|e| (e, ch.as_str())));
        }
        if reset && !unknown_oldest.is_empty() {
            for id in self
                .oldest_ids(&unknown_oldest)
                .await?
                .into_iter()
                .flatten()
            {
                oldest = Some(oldest.map_or(id, |o| o.min(id)));
            }
        }
        // Up to `limit` per channel came back; only the first `limit` overall are decoded.
        merged.sort_unstable_by_key(|(e, _)| e.id);
        merged.truncate(limit);
        Ok(ReadResult {
            events: merged
                .into_iter()
                .map(|(e, ch)| e.into_event(Some(ch)))
                .collect::<Result<_, _>>()?,
            reset: reset.then_some(Reset { oldest }),
        })
    }

    async fn latest(&self, channel: &str, n: usize) -> Result<Vec<SharedEvent>, LogError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(self.keys.channel(channel))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count_arg(n))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let mut events = parse_entries(reply)?
            .into_iter()
            .map(|e| e.into_event(Some(channel)))
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    async fn last_id(&self) -> Result<EventId, LogError> {
        let reply: Value = self
            .last
            .key(&self.keys.log)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        parse_id(&reply)
    }

    async fn tail(
        &self,
        after: EventId,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<Vec<SharedEvent>>, LogError> {
        let mut slot = self.tail_conn.lock().await;
        // Taken out while in use: if this future is dropped mid-`BLOCK` or the call fails, the
        // connection goes with it and the next call starts clean instead of queueing behind a
        // stale reply.
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self
                .client
                .get_multiplexed_async_connection_with_config(&tail_connection_config())
                .await
                .map_err(store_error)?,
        };
        let mut pipe = redis::pipe();
        // `COUNT 0` means "no limit" to XREAD.
        let xread = pipe.cmd("XREAD").arg("COUNT").arg(count_arg(limit.max(1)));
        let block_ms = wait.as_millis().min(MAX_BLOCK_MS) as u64;
        // `BLOCK 0` would wait forever; a zero wait is a plain read.
        if block_ms > 0 {
            xread.arg("BLOCK").arg(block_ms);
        }
        xread
            .arg("STREAMS")
            .arg(&self.keys.log)
            .arg(after.to_string());
        // Queued behind the XREAD on this connection, so it sees the feed as of the read's end.
        pipe.cmd("GET").arg(&self.keys.log_dropped);
        let reply = tokio::time::timeout(
            wait.saturating_add(RESPONSE_TIMEOUT),
            pipe.query_async::<Vec<Value>>(&mut conn),
        )
        .await;
        let mut replies = match reply {
            Ok(Ok(v)) => {
                *slot = Some(conn);
                v
            }
            Ok(Err(e)) => return Err(store_error(e)),
            Err(_) => {
                return Err(LogError::Unavailable(
                    "no reply to XREAD from the store".into(),
                ));
            }
        };
        drop(slot);
        let (Some(dropped), Some(read), None) = (replies.pop(), replies.pop(), replies.pop())
        else {
            return Err(corrupt("unexpected reply to a feed read"));
        };
        if parse_opt_id(&dropped)?.is_some_and(|d| d > after) {
            return Ok(None);
        }
        let mut events = parse_xread(read)?
            .into_iter()
            .map(|e| e.into_event(None))
            .collect::<Result<Vec<_>, _>>()?;
        events.truncate(limit);
        Ok(Some(events))
    }

    async fn trim_expired(&self) -> Result<(), LogError> {
        let mut conn = self.conn.clone();
        let channels: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&self.keys.channels)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        let aged: Vec<(String, i64)> = channels
            .into_iter()
            .filter_map(|ch| {
                let age = self.retention.for_channel(&ch).max_age?;
                Some((ch, i64::try_from(age.as_millis()).unwrap_or(i64::MAX)))
            })
            .collect();
        for chunk in aged.chunks(TRIM_CHUNK) {
            let mut call = self.trim.prepare_invoke();
            call.key(&self.keys.dropped);
            for (ch, age) in chunk {
                call.key(self.keys.channel(ch)).arg(ch).arg(*age);
            }
            call.invoke_async::<Value>(&mut conn)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), LogError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(corrupt(format!("PING answered {pong:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("prod");
        for key in [
            &k.log,
            &k.log_dropped,
            &k.channels,
            &k.dropped,
            &k.channel("chat.a"),
        ] {
            assert!(key.starts_with("ssepush:{prod}:"), "{key}");
        }
        // A channel named like a fixed key cannot collide with it.
        assert_ne!(k.channel("log"), k.log);
    }

    #[test]
    fn version_check() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:6.2.0\r\n").is_ok());
        assert!(check_version("redis_version:6.0.9\r\n").is_err());
        assert!(check_version("no version here").is_ok());
    }

    #[test]
    fn malformed_replies_are_corrupt_not_panics() {
        let bad = [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"nope".to_vec()),
                Value::Array(vec![]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![Value::BulkString(b"t".to_vec())]),
            ])]),
        ];
        for v in bad {
            assert!(matches!(parse_entries(v), Err(LogError::Corrupt(_))));
        }
        let missing_data = Entry {
            id: EventId::new(1, 0),
            channel: None,
            kind: Some("message".into()),
            data: Some("{not json".into()),
        };
        assert!(matches!(
            missing_data.into_event(Some("a")),
            Err(LogError::Corrupt(_))
        ));
    }
}
