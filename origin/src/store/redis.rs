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
//! | `ssepush:{<ns>}:epoch`        | string | the log's epoch, eight hex digits                       |
//! | `ssepush:{<ns>}:once:<key>`   | string | an idempotency key's fingerprint and answer ids (TTL)   |
//!
//! `d` is the event's data as compact JSON; an event's `time` is its id's milliseconds.
//!
//! # Epochs
//!
//! Every operation reads the `epoch` key in the same script or transaction as its data, and
//! creates it (`SET … NX`, a random value) when it is missing. A Redis that lost its data (a
//! restart without persistence, a failover to an empty replica, keys deleted) lost this key with
//! it, so the next operation of *any* origin on the namespace starts a new epoch, and every origin
//! sees the same one. Ids are tagged with the epoch read alongside them; an operation given an id
//! of another epoch fails with [`LogError::EpochChanged`], and `tail` reports that it lost its
//! place, which makes the hub disconnect its subscribers so they resume (and get a reset).
//!
//! What an epoch cannot see: a Redis that comes back with *part* of its history (restored from
//! an older snapshot, or a failover to a replica that lagged) keeps its epoch. Cursors newer
//! than its head are still reset (`ahead`), but a client whose cursor is older than the lost
//! stretch cannot be told it missed it. Where that matters, run Redis with `appendfsync always`
//! and no lagging failover.
//!
//! # Ids
//!
//! An append is one Lua script per batch. Each event is first `XADD`ed to the global feed with an
//! id Redis assigns (`<ms>-<seq>`, strictly increasing per stream: exactly an [`EventId`]), then
//! added to its channel's stream under that *same* id. So ids come from a single counter per
//! namespace, are totally ordered across channels and across every origin process sharing the
//! Redis, survive restarts, and a batch is contiguous.
//!
//! # History reads
//!
//! A read of literal channels is one transaction of `XRANGE`s. A wildcard read walks the global
//! feed instead (one transaction: the epoch, the feed's lower bound and an `XRANGE` over no more
//! feed entries than the read may return, at most [`FEED_SCAN`]; then one `HMGET` of the
//! `dropped` ids of the channels seen, so events retention already dropped are left out), which
//! is the global id order without listing every channel per batch, and costs Redis little more
//! than the range itself (a Lua script doing the same spent about six times as long, converting
//! the entries). Only a cursor older than the feed
//! (it keeps the newest [`FEED_CAPACITY`] events) falls back to reading every matching channel,
//! in pipelines of [`CHANNEL_CHUNK`] so publishers' scripts run in between.
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
//! The log runs on the origin's one [`RedisConn`]: appends and small reads on its commands lane,
//! history reads (`read`, `gap`) on its reads lane so a replay's large replies never delay a
//! publisher's append (see [`crate::redis_conn`]). `tail` blocks in `XREAD BLOCK`, which would
//! stall every command queued behind it on a multiplexed connection, so it has a dedicated
//! connection with no client-side response timeout (the client's default of 500 ms would cut
//! every wait short), guarded by a mutex.
//!
//! Deleting the `log` key while channel streams remain can make a later append fail (Redis may
//! then issue an id a channel stream already passed); run Redis with `noeviction`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Script, Value};
use tokio::sync::Mutex;

use super::{Appended, EventLog, LogError, Once, ReadResult, Reset, Retention};
use crate::channel::PatternSet;
use crate::event::{Event, EventId, NewEvent, SharedEvent, new_epoch, parse_epoch};
use crate::redis_conn::{RESPONSE_TIMEOUT, Read, RedisConn, key_prefix, store_error, write_error};

/// Events the global feed keeps for the hub to catch up after a stall.
pub const FEED_CAPACITY: u64 = 100_000;

/// Channels per `trim_expired` script call, so one call never holds Redis for long.
const TRIM_CHUNK: usize = 256;
/// Longest `XREAD BLOCK` we ask for; far beyond any real wait, and within what Redis accepts.
const MAX_BLOCK_MS: u128 = 1_000_000_000_000;
/// Most feed entries one wildcard read examines (one script call); it examines no more than the
/// events it may return.
pub const FEED_SCAN: usize = 2048;
/// Channel streams read per pipeline when a read has to visit channels one by one.
pub const CHANNEL_CHUNK: usize = 64;
/// Entries of the `dropped` hash asked for per `HSCAN` by a gap check.
const GAP_SCAN: usize = 512;

/// Lua shared by every script that reads or writes the log: the namespace's epoch, made when
/// missing (the data it vouched for is gone with it).
macro_rules! epoch_lua {
    () => {
        r#"
local function ensure_epoch(key, candidate)
  local e = redis.call('GET', key)
  if not e then
    redis.call('SET', key, candidate)
    e = candidate
  end
  return e
end
"#
    };
}

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

/// One batch, atomically: feed entry, channel entry with the same id, retention, bookkeeping,
/// and the idempotency key with its answer when there is one. Returns the epoch, then the ids;
/// or, for an idempotency key already held, the epoch, `'once'` and the held value.
const APPEND_LUA: &str = concat!(
    newest_below_lua!(),
    epoch_lua!(),
    r#"
-- KEYS: 1 feed, 2 feed-dropped, 3 channel set, 4 dropped hash, 5 epoch, 6 idempotency key (the
--   epoch key again when there is none), 6+i channel stream of event i
-- ARGV: 1 feed cap, 2 candidate epoch, 3 idempotency TTL ms (0: no key), 4 fingerprint; then per
--   event: channel, type, data, max events, max age ms (-1: none), in the answer (1/0)
local cap = tonumber(ARGV[1])
local once_ttl = tonumber(ARGV[3])
local out = {ensure_epoch(KEYS[5], ARGV[2])}
if once_ttl > 0 then
  local held = redis.call('GET', KEYS[6])
  if held then return {out[1], 'once', held} end
end
local answer = {}
for i = 1, (#ARGV - 4) / 6 do
  local a = 4 + (i - 1) * 6
  local channel, kind, data = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local max_events, max_age = ARGV[a + 4], tonumber(ARGV[a + 5])
  local key = KEYS[6 + i]

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
  out[i + 1] = id
  if ARGV[a + 6] == '1' then answer[#answer + 1] = id end
end
if once_ttl > 0 then
  redis.call('SET', KEYS[6], ARGV[4] .. '\n' .. table.concat(answer, ','), 'PX', once_ttl)
end
return out
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

/// The epoch and the feed's `last-generated-id`: unlike its newest entry, the latter is right
/// even when trimming emptied the stream. `XINFO` fails on a missing key, hence the script.
const LAST_ID_LUA: &str = concat!(
    epoch_lua!(),
    r#"
-- KEYS: 1 feed, 2 epoch; ARGV: 1 candidate epoch
local epoch = ensure_epoch(KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {epoch, '0-0'} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return {epoch, info[i + 1]} end
end
return redis.error_reply('XINFO STREAM has no last-generated-id')
"#
);

struct Keys {
    prefix: String,
    log: String,
    log_dropped: String,
    channels: String,
    dropped: String,
    epoch: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        let prefix = key_prefix(namespace);
        Keys {
            log: format!("{prefix}log"),
            log_dropped: format!("{prefix}log-dropped"),
            channels: format!("{prefix}channels"),
            dropped: format!("{prefix}dropped"),
            epoch: format!("{prefix}epoch"),
            prefix,
        }
    }

    fn channel(&self, name: &str) -> String {
        format!("{}ch:{name}", self.prefix)
    }

    fn once(&self, key: &str) -> String {
        format!("{}once:{key}", self.prefix)
    }
}

/// The event log on Redis Streams. See the module docs for the key layout.
pub struct RedisLog {
    conn: RedisConn,
    /// Only `tail` blocks on it; `None` until first use and after a failure, to reconnect.
    tail_conn: Mutex<Option<crate::redis_conn::BlockingConnection>>,
    keys: Keys,
    retention: Retention,
    feed_capacity: u64,
    append: Script,
    trim: Script,
    last: Script,
}

impl RedisLog {
    /// Connects to `url` (`redis://host:port[/db]`, `rediss://…`) with a connection of its own;
    /// an origin shares one connection among its stores with [`RedisLog::new`] instead.
    ///
    /// # Errors
    /// As [`RedisConn::connect`], or the store's error when the epoch cannot be written.
    pub async fn connect(
        url: &str,
        namespace: &str,
        retention: Retention,
    ) -> Result<Self, LogError> {
        Self::new(&RedisConn::connect(url, namespace).await?, retention).await
    }

    /// The log of `conn`'s namespace, with its epoch made if missing.
    ///
    /// # Errors
    /// The store's error when the epoch cannot be written.
    pub async fn new(conn: &RedisConn, retention: Retention) -> Result<Self, LogError> {
        let keys = Keys::new(conn.namespace());
        // Made now so the epoch exists from the start; every operation also makes it if missing.
        let _: Value = redis::cmd("SET")
            .arg(&keys.epoch)
            .arg(candidate_epoch())
            .arg("NX")
            .query_async(&mut conn.commands())
            .await
            .map_err(store_error)?;
        Ok(RedisLog {
            conn: conn.clone(),
            tail_conn: Mutex::new(None),
            keys,
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

    /// Runs a history pipeline on the reads lane (retried once if the connection dropped).
    async fn on_history<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, LogError> {
        self.conn.read(Read::Pipe(pipe)).await
    }

    /// [`on_history`](Self::on_history) for one command.
    async fn on_history_cmd<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, LogError> {
        self.conn.read(Read::Cmd(cmd)).await
    }

    /// Adds `SET epoch <candidate> NX` and `GET epoch` to a pipeline; the `GET` is its last
    /// reply.
    fn with_epoch(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("SET")
            .arg(&self.keys.epoch)
            .arg(candidate_epoch())
            .arg("NX")
            .ignore();
        pipe.cmd("GET").arg(&self.keys.epoch);
    }

    /// Reads `(after, upto]` of each named channel (at most `limit` each), pipelined
    /// [`CHANNEL_CHUNK`] at a time, and merges them: the first `limit` events in id order.
    async fn read_channels(
        &self,
        channels: &[&str],
        after: EventId,
        upto: EventId,
        limit: usize,
        epoch: u32,
    ) -> Result<ReadResult, LogError> {
        let mut merged: Vec<(Entry, &str)> = Vec::new();
        let mut epoch = epoch;
        for chunk in channels.chunks(CHANNEL_CHUNK) {
            let mut pipe = redis::pipe();
            // Atomic per chunk: the ranges and the epoch are one snapshot. Chunks need not be:
            // a channel's range up to `upto` only ever loses entries at its front.
            pipe.atomic();
            for ch in chunk {
                pipe.cmd("XRANGE")
                    .arg(self.keys.channel(ch))
                    .arg(format!("({}", after.position()))
                    .arg(upto.position().to_string())
                    .arg("COUNT")
                    .arg(count_arg(limit));
            }
            self.with_epoch(&mut pipe);
            let mut replies: Vec<Value> = self.on_history(&pipe).await?;
            let current = parse_epoch_reply(replies.pop())?;
            epoch = same_epoch(epoch, current)?;
            if replies.len() != chunk.len() {
                return Err(corrupt("short reply to a range read"));
            }
            for (ch, reply) in chunk.iter().zip(replies) {
                merged.extend(parse_entries(reply)?.into_iter().map(|e| (e, *ch)));
            }
        }
        // Up to `limit` per channel came back; the first `limit` overall are complete through
        // the last of them (a channel with more to give returned `limit` entries, all later).
        merged.sort_unstable_by_key(|(e, _)| e.id);
        let next = if merged.len() >= limit {
            merged.truncate(limit);
            merged.last().map_or(upto, |(e, _)| e.id.in_epoch(epoch))
        } else {
            upto
        };
        Ok(ReadResult {
            events: merged
                .into_iter()
                .map(|(e, ch)| e.into_event(Some(ch), epoch))
                .collect::<Result<_, _>>()?,
            next,
        })
    }

    /// Reads a stretch of the global feed for a wildcard read. `None` when the feed no longer
    /// holds everything after `after`.
    async fn read_feed(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
        epoch: u32,
    ) -> Result<Option<ReadResult>, LogError> {
        // No more entries than the read may return: a wide pattern uses every one, a narrow one
        // just takes more (cheap) calls.
        let scan = limit.clamp(1, FEED_SCAN);
        let mut pipe = redis::pipe();
        // Native commands in one transaction: the epoch, the feed's lower bound and the stretch
        // are one snapshot, and Redis spends little more than the range itself on it.
        pipe.atomic();
        self.with_epoch(&mut pipe);
        pipe.cmd("GET").arg(&self.keys.log_dropped);
        pipe.cmd("XRANGE")
            .arg(&self.keys.log)
            .arg(format!("({}", after.position()))
            .arg(upto.position().to_string())
            .arg("COUNT")
            .arg(scan);
        let replies: Vec<Value> = self.on_history(&pipe).await?;
        let [current, feed_dropped, entries]: [Value; 3] =
            replies.try_into().map_err(|p: Vec<Value>| {
                corrupt(format!(
                    "feed read returned {} replies, expected 3",
                    p.len()
                ))
            })?;
        let epoch = same_epoch(epoch, parse_epoch_value(&current)?)?;
        if parse_opt_id(&feed_dropped)?.is_some_and(|d| d.position() > after.position()) {
            return Ok(None);
        }
        let entries = parse_entries(entries)?;
        // Events retention already dropped from their channel are not history. The channels'
        // `dropped` ids are read right after the range: a drop in between makes an event that was
        // retained a moment ago count as dropped, the same race as any drop during a replay.
        let mut names: Vec<String> = entries.iter().filter_map(|e| e.channel.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let mut floor: std::collections::HashMap<String, EventId> = Default::default();
        if !names.is_empty() {
            let floors: Vec<Value> = self
                .on_history_cmd(redis::cmd("HMGET").arg(&self.keys.dropped).arg(&names))
                .await?;
            for (c, d) in names.into_iter().zip(&floors) {
                if let Some(d) = parse_opt_id(d)? {
                    floor.insert(c, d);
                }
            }
        }
        let scanned = entries.len();
        let mut last = after;
        let mut events = Vec::new();
        for entry in entries {
            last = entry.id.in_epoch(epoch);
            let Some(channel) = entry.channel.as_deref() else {
                return Err(corrupt(format!("feed entry {} has no channel", entry.id)));
            };
            // Retention dropped it from its channel: it is no longer history.
            let retained = floor
                .get(channel)
                .is_none_or(|d| entry.id.position() > d.position());
            if retained && patterns.matches(channel) {
                events.push(entry.into_event(None, epoch)?);
                if events.len() >= limit {
                    return Ok(Some(ReadResult { events, next: last }));
                }
            }
        }
        let next = if scanned >= scan { last } else { upto };
        Ok(Some(ReadResult { events, next }))
    }

    /// The oldest retained id of each channel.
    async fn oldest_ids(&self, channels: &[String]) -> Result<Vec<Option<EventId>>, LogError> {
        let mut out = Vec::with_capacity(channels.len());
        for chunk in channels.chunks(CHANNEL_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for ch in chunk {
                pipe.cmd("XRANGE")
                    .arg(self.keys.channel(ch))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
            self.with_epoch(&mut pipe);
            let mut replies: Vec<Value> = self.on_history(&pipe).await?;
            let epoch = parse_epoch_reply(replies.pop())?;
            for v in replies {
                out.push(parse_entries(v)?.first().map(|e| e.id.in_epoch(epoch)));
            }
        }
        Ok(out)
    }
}

/// A fresh epoch, as the `epoch` key holds it.
fn candidate_epoch() -> String {
    format!("{:08x}", new_epoch())
}

fn parse_epoch_value(v: &Value) -> Result<u32, LogError> {
    text(v)
        .and_then(parse_epoch)
        .ok_or_else(|| corrupt(format!("the epoch key holds {v:?}, not an epoch")))
}

fn parse_epoch_reply(v: Option<Value>) -> Result<u32, LogError> {
    parse_epoch_value(&v.ok_or_else(|| corrupt("no epoch in the reply"))?)
}

/// `current`, when the caller expected it (or expected none).
fn same_epoch(expected: u32, current: u32) -> Result<u32, LogError> {
    if expected == 0 || expected == current {
        Ok(current)
    } else {
        Err(LogError::EpochChanged { expected, current })
    }
}

/// The epoch the ids given to an operation name (`0` if none does).
fn named_epoch(ids: &[EventId]) -> Result<u32, LogError> {
    let mut epoch = 0;
    for id in ids {
        if id.epoch != 0 {
            epoch = same_epoch(epoch, id.epoch)?;
        }
    }
    Ok(epoch)
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
    /// `epoch` is the log's, read with the entry.
    fn into_event(self, channel: Option<&str>, epoch: u32) -> Result<SharedEvent, LogError> {
        let id = self.id.in_epoch(epoch);
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

/// A held idempotency value, `<fingerprint>\n<id>,<id>…`, tagged with `epoch`.
fn parse_once(held: &Value, epoch: u32) -> Result<Appended, LogError> {
    let text = text(held).ok_or_else(|| corrupt("idempotency value is not text"))?;
    let (fingerprint, ids) = text
        .split_once('\n')
        .ok_or_else(|| corrupt("idempotency value without a fingerprint"))?;
    let ids = ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<EventId>()
                .map(|id| id.in_epoch(epoch))
                .map_err(|_| corrupt(format!("idempotency value holds a bad id {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Appended::Replayed {
        fingerprint: fingerprint.to_owned(),
        ids,
    })
}

impl RedisLog {
    /// The append script, with an idempotency key or without.
    async fn run_append(
        &self,
        events: Vec<NewEvent>,
        once: Option<Once<'_>>,
    ) -> Result<Appended, LogError> {
        if events.is_empty() {
            return Ok(Appended::Stored(Vec::new()));
        }
        super::check_budgets(&self.retention, &events)?;
        let mut call = self.append.prepare_invoke();
        let once_key = once.map(|o| self.keys.once(o.key));
        call.key(&self.keys.log)
            .key(&self.keys.log_dropped)
            .key(&self.keys.channels)
            .key(&self.keys.dropped)
            .key(&self.keys.epoch)
            .key(once_key.as_deref().unwrap_or(&self.keys.epoch))
            .arg(self.feed_capacity)
            .arg(candidate_epoch())
            .arg(once.map_or(0, |o| o.ttl.as_millis().clamp(1, i64::MAX as u128) as i64))
            .arg(once.map_or("", |o| o.fingerprint));
        for (i, e) in events.iter().enumerate() {
            let in_answer = once.is_none_or(|o| o.answer.get(i).copied().unwrap_or(false));
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
                .arg(max_age)
                .arg(if in_answer { "1" } else { "0" });
        }
        let reply: Value = call
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(write_error)?;
        let Value::Array(mut ids) = reply else {
            return Err(corrupt(format!("append script returned {reply:?}")));
        };
        if ids.len() == 3 && ids.get(1).and_then(text) == Some("once") {
            let epoch = parse_epoch_value(&ids[0])?;
            return parse_once(&ids[2], epoch);
        }
        if ids.len() != events.len() + 1 {
            return Err(corrupt(format!(
                "append script returned {} values for {} events",
                ids.len(),
                events.len()
            )));
        }
        let epoch = parse_epoch_value(&ids.remove(0))?;
        events
            .into_iter()
            .zip(&ids)
            .map(|(e, id)| Ok(Arc::new(e.into_event(parse_id(id)?.in_epoch(epoch)))))
            .collect::<Result<_, _>>()
            .map(Appended::Stored)
    }
}

#[async_trait]
impl EventLog for RedisLog {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<SharedEvent>, LogError> {
        match self.run_append(events, None).await? {
            Appended::Stored(events) => Ok(events),
            Appended::Replayed { .. } => Err(corrupt("an append without a key was replayed")),
        }
    }

    async fn append_once(
        &self,
        events: Vec<NewEvent>,
        once: Once<'_>,
    ) -> Result<Appended, LogError> {
        self.run_append(events, Some(once)).await
    }

    async fn read(
        &self,
        patterns: &PatternSet,
        after: EventId,
        upto: EventId,
        limit: usize,
    ) -> Result<ReadResult, LogError> {
        let epoch = named_epoch(&[after, upto])?;
        // Nothing is after the largest id, and Redis refuses it as an exclusive start.
        if limit == 0
            || after.position() >= upto.position()
            || after.position() == EventId::new(u64::MAX, u64::MAX).position()
        {
            return Ok(ReadResult {
                events: Vec::new(),
                next: after,
            });
        }
        if let Some(mut names) = patterns.literals() {
            names.sort_unstable();
            names.dedup();
            return self.read_channels(&names, after, upto, limit, epoch).await;
        }
        if let Some(r) = self.read_feed(patterns, after, upto, limit, epoch).await? {
            return Ok(r);
        }
        // The cursor is older than the feed: visit the matching channels one by one.
        let all: Vec<String> = self
            .on_history_cmd(redis::cmd("SMEMBERS").arg(&self.keys.channels))
            .await?;
        let names: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|c| patterns.matches(c))
            .collect();
        self.read_channels(&names, after, upto, limit, epoch).await
    }

    async fn gap(&self, patterns: &PatternSet, after: EventId) -> Result<Option<Reset>, LogError> {
        let newer = |d: &Value| -> Result<bool, LogError> {
            Ok(parse_opt_id(d)?.is_some_and(|d| d.position() > after.position()))
        };
        let mut lost: Vec<String> = Vec::new();
        match patterns.literals() {
            Some(mut names) => {
                names.sort_unstable();
                names.dedup();
                let dropped: Vec<Value> = self
                    .on_history_cmd(redis::cmd("HMGET").arg(&self.keys.dropped).arg(&names))
                    .await?;
                for (name, d) in names.iter().zip(&dropped) {
                    if newer(d)? {
                        lost.push((*name).to_owned());
                    }
                }
            }
            None => {
                // Only channels that ever dropped something are in the hash; walk it in steps.
                let mut cursor = 0u64;
                loop {
                    let (next, items): (u64, Vec<Value>) = self
                        .on_history_cmd(
                            redis::cmd("HSCAN")
                                .arg(&self.keys.dropped)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(GAP_SCAN),
                        )
                        .await?;
                    let mut it = items.into_iter();
                    while let (Some(c), Some(d)) = (it.next(), it.next()) {
                        let c = text(&c).ok_or_else(|| corrupt("channel name is not text"))?;
                        if patterns.matches(c) && newer(&d)? {
                            lost.push(c.to_owned());
                        }
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                // HSCAN may return an entry twice.
                lost.sort_unstable();
                lost.dedup();
            }
        }
        if lost.is_empty() {
            return Ok(None);
        }
        let oldest = self.oldest_ids(&lost).await?.into_iter().flatten().min();
        Ok(Some(Reset { oldest }))
    }

    async fn latest(&self, channel: &str, n: usize) -> Result<Vec<SharedEvent>, LogError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XREVRANGE")
            .arg(self.keys.channel(channel))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count_arg(n));
        self.with_epoch(&mut pipe);
        let mut replies: Vec<Value> = pipe
            .query_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        let epoch = parse_epoch_reply(replies.pop())?;
        let reply = replies
            .pop()
            .ok_or_else(|| corrupt("no reply to XREVRANGE"))?;
        let mut events = parse_entries(reply)?
            .into_iter()
            .map(|e| e.into_event(Some(channel), epoch))
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    async fn last_id(&self) -> Result<EventId, LogError> {
        let reply: Value = self
            .last
            .key(&self.keys.log)
            .key(&self.keys.epoch)
            .arg(candidate_epoch())
            .invoke_async(&mut self.conn.commands())
            .await
            .map_err(store_error)?;
        match reply {
            Value::Array(parts) if parts.len() == 2 => {
                Ok(parse_id(&parts[1])?.in_epoch(parse_epoch_value(&parts[0])?))
            }
            other => Err(corrupt(format!("head script returned {other:?}"))),
        }
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
            None => self.conn.blocking_connection().await?,
        };
        let mut pipe = redis::pipe();
        // The epoch before and after the read: if they differ (or are gone), the entries may
        // belong to either history, and the feed has lost its place.
        pipe.cmd("GET").arg(&self.keys.epoch);
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
            .arg(after.position().to_string());
        // Queued behind the XREAD on this connection, so they see the feed as of the read's end.
        pipe.cmd("GET").arg(&self.keys.epoch);
        pipe.cmd("GET").arg(&self.keys.log_dropped);
        let reply = tokio::time::timeout(
            wait.saturating_add(RESPONSE_TIMEOUT),
            pipe.query_async::<Vec<Value>>(&mut conn),
        )
        .await;
        let replies = match reply {
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
        let [before, read, epoch, dropped]: [Value; 4] = replies
            .try_into()
            .map_err(|_| corrupt("unexpected reply to a feed read"))?;
        let (Some(before), Some(epoch)) = (text(&before), text(&epoch)) else {
            // The epoch key is gone: the data went with it.
            return Ok(None);
        };
        let epoch = parse_epoch(epoch).ok_or_else(|| corrupt("the epoch key is not an epoch"))?;
        if parse_epoch(before) != Some(epoch) || (after.epoch != 0 && after.epoch != epoch) {
            return Ok(None);
        }
        if parse_opt_id(&dropped)?.is_some_and(|d| d.position() > after.position()) {
            return Ok(None);
        }
        let mut events = parse_xread(read)?
            .into_iter()
            .map(|e| e.into_event(None, epoch))
            .collect::<Result<Vec<_>, _>>()?;
        events.truncate(limit);
        Ok(Some(events))
    }

    async fn trim_expired(&self) -> Result<(), LogError> {
        let mut conn = self.conn.commands();
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
            &k.epoch,
            &k.channel("chat.a"),
        ] {
            assert!(key.starts_with("ssepush:{prod}:"), "{key}");
        }
        // A channel named like a fixed key cannot collide with it.
        assert_ne!(k.channel("log"), k.log);
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
            missing_data.into_event(Some("a"), 1),
            Err(LogError::Corrupt(_))
        ));
    }
}
