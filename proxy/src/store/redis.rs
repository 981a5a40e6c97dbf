//! The handoff store on Redis: what lets a fleet of proxies share handoffs and survive any node.
//!
//! Keys, under the namespace `N` (`fleet.namespace`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `N:h:{<id>}` | hash | `owner` (node id, `""` while free), `epoch`, `rec` (the record's JSON; stream URL, headers and push target sealed) |
//! | `N:{fleet}:nodes` | sorted set | node → lease end (Redis server time, ms) |
//! | `N:{fleet}:addr` | hash | node → its API base URL |
//! | `N:{fleet}:owned:<node>` | set | the ids a node owns |
//! | `N:{fleet}:free` | set | released ids, waiting for a claim |
//! | `N:{fleet}:all` | set | every id (count, status) |
//! | `N:{fleet}:done` | sorted set | finished ids by when they finished (the sweeper) |
//!
//! One handoff's keys share the hash tag of its id, so each script below touches one cluster
//! slot; the fleet's own keys share `{fleet}`. The same code runs on one Redis
//! (`redis://…`) and on a Redis Cluster (`redis+cluster://seed,seed,…`, the client's cluster
//! mode); pipelines that mix slots are plain (non-atomic) batches. The per-handoff hash is the truth about
//! ownership; the fleet sets are an index, kept consistent by moving an id between them with
//! `SMOVE` *before* the ownership script runs, so a crash between the two leaves the id in a
//! set that is revisited (and a stale entry is dropped when the script says the owner differs).
//!
//! Every write an owner makes is a script that checks `owner` and `epoch` in the same step
//! ([`PUT`], [`PUT_FINISHED`], [`FENCE`], [`RELEASE`]); every change of hands bumps the epoch
//! ([`CLAIM`]).
//!
//! Round trips on the churn path (create, then hand back): on one Redis a create is
//! [`INSERT_INDEXED`] (record and fleet indexes in one script) and the push target's
//! [`TARGET`]; the final write is [`PUT_FINISHED`] (record and sweeper index in one script,
//! the index moved only when the write landed) — three in all. A cluster cannot run a script
//! over several slots, so there the indexes are a separate pipeline: five.
//! Lease ends are in Redis's own clock (`TIME` inside the scripts), so nodes' clocks never
//! matter; a lease that ran out is never renewed ([`HEARTBEAT`]).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::{Fence, FleetView, HandoffRecord, HandoffStore, NodeLease, Owned, Sealer, StoreError};
use crate::protocol::PushTarget;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Claim scripts in flight at once (the multiplexed connection pipelines them).
const CLAIM_CONCURRENCY: usize = 256;

/// Creates a handoff owned by ARGV[1] at epoch 1 unless the id exists.
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', 1, 'rec', ARGV[2])
return 1";

/// [`INSERT`] and the fleet's indexes (KEYS[2] `all`, KEYS[3] the node's `owned`) in one step:
/// on one Redis, where a script may touch keys of several slots (a cluster runs the two
/// separately, the indexes first).
const INSERT_INDEXED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', 1, 'rec', ARGV[2])
return 1";

/// Replaces the record if ARGV[1]/ARGV[2] (node, epoch) still own it: 1, or 2 when a newer
/// handoff for its push target replaced it (written all the same), 0 when fenced out.
const PUT: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'replaced')
if o[1] ~= ARGV[1] or o[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[3])
if o[3] then return 2 end
return 1";

/// [`PUT`] of a finished record (ARGV[4] its id, ARGV[5] when it finished) and, only if it
/// landed, its move to the sweeper's index: KEYS[2] `done`, out of KEYS[3] the owner's `owned`
/// and KEYS[4] its push target's set. One step on one Redis (see [`INSERT_INDEXED`]).
const PUT_FINISHED: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'replaced')
if o[1] ~= ARGV[1] or o[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('SREM', KEYS[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
if o[3] then return 2 end
return 1";

/// Whether ARGV[1]/ARGV[2] still own the handoff: 1, 2 when it was replaced, 0 when not.
const FENCE: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'replaced')
if o[1] ~= ARGV[1] or o[2] ~= ARGV[2] then return 0 end
if o[3] then return 2 end
return 1";

/// Adds handoff ARGV[1] as the newest of a push target's (KEYS[1], a sorted set by Redis
/// time) and returns the ones beyond the newest ARGV[2], removed from it.
const TARGET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if over <= 0 then return {} end
local old = redis.call('ZRANGE', KEYS[1], 0, over - 1)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
return old";

/// Marks a handoff replaced, if it still exists.
const MARK_REPLACED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'replaced', '1')
return 1";

/// Writes the final record and frees the handoff (owner `""`, epoch + 1) if ARGV[1]/ARGV[2]
/// still own it.
const RELEASE: &str = r"
local o = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if o[1] ~= ARGV[1] or o[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[3], 'owner', '')
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return 1";

/// Takes the handoff from owner ARGV[1] (`""`: free) for ARGV[2]: `{epoch, rec}`; `{}` when it
/// does not exist, `{'0'}` when someone else owns it.
const CLAIM: &str = r"
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return {} end
if o ~= ARGV[1] then return {'0'} end
local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return {tostring(e), redis.call('HGET', KEYS[1], 'rec')}";

/// Renews (or, ARGV[4] = '1', takes) node ARGV[1]'s lease for ARGV[2] ms and records its
/// address ARGV[3]. -1 when the lease had run out (never renewed then).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[4] ~= '1' and (not s or tonumber(s) < now) then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now";

/// The fleet: `{now, node1, score1, addr1, …}`.
const FLEET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {tostring(now)}
local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #z, 2 do
  out[#out + 1] = z[i]
  out[#out + 1] = z[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], z[i]) or ''
end
return out";

/// Forgets dead node ARGV[1] (lease over, owns nothing): 1 if it did.
const FORGET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) < now and redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0";

/// 1 when node ARGV[1]'s lease has run out (or it left).
const DEAD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) >= now then return 0 end
return 1";

/// What a record's secrets are sealed as: everything that reaches the origin or the phone.
#[derive(Serialize, Deserialize)]
struct Secrets {
    url: String,
    headers: Vec<(String, String)>,
    push: PushTarget,
}

/// [`Secrets`] borrowed from a record, to seal it without copying (the same JSON).
#[derive(Serialize)]
struct SecretsRef<'a> {
    url: &'a str,
    headers: &'a [(String, String)],
    push: &'a PushTarget,
}

/// A connection to one Redis or to a Redis Cluster (`redis+cluster://host:port,host:port`):
/// every script touches the keys of one slot, so both run the same commands.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis store. See the module docs.
pub struct RedisStore {
    conn: Conn,
    /// The control lane — leases, the fleet view, claims: a heartbeat or a takeover never
    /// waits behind a burst of record writes.
    lease_conn: Conn,
    ns: String,
    sealer: Sealer,
    scripts: Scripts,
}

struct Scripts {
    insert: Script,
    insert_indexed: Script,
    put: Script,
    put_finished: Script,
    fence: Script,
    release: Script,
    claim: Script,
    heartbeat: Script,
    fleet: Script,
    forget: Script,
    dead: Script,
    target: Script,
    mark_replaced: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.ns)
            .field("sealer", &self.sealer)
            .finish()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port[/db]`, `rediss://…`), keys under `namespace`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for a URL the client refuses or a Redis that does not answer
    /// within 5 s (the message never shows the URL's password).
    pub async fn connect(url: &str, namespace: &str, sealer: Sealer) -> Result<Self, StoreError> {
        let bad_url = || {
            StoreError::Unavailable(format!(
                "invalid Redis URL {}",
                ssepush_origin::service::redact::redact_url(url)
            ))
        };
        let (conn, lease_conn) = if let Some(seeds) = url.strip_prefix("redis+cluster://") {
            // Seed nodes, comma-separated; the client learns the rest from the cluster.
            let nodes: Vec<String> = seeds
                .split(',')
                .map(|s| format!("redis://{}", s.trim()))
                .collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(|_| bad_url())?;
            let conn = client.get_async_connection().await.map_err(unavailable)?;
            let lease = client.get_async_connection().await.map_err(unavailable)?;
            (Conn::Cluster(conn), Conn::Cluster(lease))
        } else {
            let client = redis::Client::open(url).map_err(|_| bad_url())?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(1));
            let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map_err(unavailable)?;
            let lease = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(unavailable)?;
            (Conn::Single(conn), Conn::Single(lease))
        };
        Ok(RedisStore {
            conn,
            lease_conn,
            ns: namespace.to_owned(),
            sealer,
            scripts: Scripts {
                insert: Script::new(INSERT),
                insert_indexed: Script::new(INSERT_INDEXED),
                put: Script::new(PUT),
                put_finished: Script::new(PUT_FINISHED),
                fence: Script::new(FENCE),
                release: Script::new(RELEASE),
                claim: Script::new(CLAIM),
                heartbeat: Script::new(HEARTBEAT),
                fleet: Script::new(FLEET),
                forget: Script::new(FORGET),
                dead: Script::new(DEAD),
                target: Script::new(TARGET),
                mark_replaced: Script::new(MARK_REPLACED),
            },
        })
    }

    /// Handoffs by state (`watching`, `woken`, …, and `free` for released ones not yet
    /// claimed), from the unsealed part of each record: counting needs no key. Reads every
    /// record in batches of 1,000 (an operator's command, not a hot path).
    pub async fn states(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut conn = self.conn.clone();
        let mut out = std::collections::BTreeMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(self.fleet_key("all"))
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(self.key(id), "rec");
            }
            let recs: Vec<Option<String>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            for rec in recs.into_iter().flatten() {
                let state = serde_json::from_str::<serde_json::Value>(&rec)
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unreadable".into());
                *out.entry(state).or_insert(0) += 1;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(out);
            }
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:h:{{{id}}}", self.ns)
    }

    fn fleet_key(&self, what: &str) -> String {
        format!("{}:{{fleet}}:{what}", self.ns)
    }

    fn target_key(&self, target: &str) -> String {
        format!("{}:t:{{{target}}}", self.ns)
    }

    fn owned_key(&self, node: &str) -> String {
        self.fleet_key(&format!("owned:{node}"))
    }

    /// The record as stored: its secrets sealed. The record's JSON is re-framed field by field
    /// (each value kept as the raw text it was written as) rather than through a value tree:
    /// this runs for every write of the churn path.
    fn encode(&self, rec: &HandoffRecord) -> String {
        let secrets = SecretsRef {
            url: &rec.stream_url,
            headers: &rec.stream_headers,
            push: &rec.push,
        };
        let plain = serde_json::to_vec(&secrets).unwrap_or_default();
        let sealed = serde_json::value::to_raw_value(&self.sealer.seal(&plain)).ok();
        let text = serde_json::to_string(rec).unwrap_or_default();
        let mut fields: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
            serde_json::from_str(&text).unwrap_or_default();
        for secret in ["streamUrl", "streamHeaders", "push"] {
            fields.remove(secret);
        }
        if let Some(sealed) = &sealed {
            fields.insert("sealed".into(), sealed);
        }
        serde_json::to_string(&fields).unwrap_or_default()
    }

    fn decode(&self, raw: &str) -> Result<HandoffRecord, StoreError> {
        let bad = |m: String| StoreError::Unavailable(format!("unreadable handoff record: {m}"));
        let mut v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| bad("not an object".into()))?;
        let sealed = obj
            .remove("sealed")
            .and_then(|s| s.as_str().map(str::to_owned))
            .ok_or_else(|| bad("no sealed secrets".into()))?;
        let plain = self.sealer.open(&sealed).map_err(bad)?;
        let secrets: Secrets = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
        obj.insert("streamUrl".into(), secrets.url.into());
        obj.insert(
            "streamHeaders".into(),
            serde_json::to_value(secrets.headers).unwrap_or_default(),
        );
        obj.insert(
            "push".into(),
            serde_json::to_value(secrets.push).unwrap_or_default(),
        );
        serde_json::from_value(v).map_err(|e| bad(e.to_string()))
    }

    /// Whether every key lives on one Redis, so one script may touch keys of several slots
    /// (a create or a final write is then one round trip instead of two).
    fn one_server(&self) -> bool {
        matches!(self.conn, Conn::Single(_))
    }

    /// After a write of `rec` by `node`: a finished record leaves its owner's set for the
    /// sweeper's.
    async fn index_finished(&self, rec: &HandoffRecord, node: &str) -> Result<(), StoreError> {
        let Some(fin) = rec.finished_at_ms else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        redis::pipe()
            .zadd(self.fleet_key("done"), &rec.id, fin)
            .ignore()
            .srem(self.owned_key(node), &rec.id)
            .ignore()
            .zrem(self.target_key(&super::target_digest(&rec.push)), &rec.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Claims each of `ids` from `from` (`""`: the free set) for `node`.
    async fn claim_ids(
        &self,
        from_set: String,
        from: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<Owned>, StoreError> {
        let mine = self.owned_key(node);
        let results = futures::stream::iter(ids)
            .map(|id| {
                let mut conn = self.lease_conn.clone();
                let (from_set, mine) = (from_set.clone(), mine.clone());
                async move {
                    // Into this node's set first: if this node dies now, the id is revisited
                    // as one of its own.
                    let moved: bool = conn
                        .smove(&from_set, &mine, &id)
                        .await
                        .map_err(unavailable)?;
                    if !moved {
                        return Ok(None);
                    }
                    let got: Vec<String> = self
                        .scripts
                        .claim
                        .key(self.key(&id))
                        .arg(from)
                        .arg(node)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    match got.as_slice() {
                        [epoch, rec] => {
                            let rec = self.decode(rec)?;
                            Ok(Some(Owned {
                                rec,
                                owner: Some(node.to_owned()),
                                epoch: epoch.parse().unwrap_or(0),
                            }))
                        }
                        _ => {
                            // Gone, or someone else's: not an id of this node.
                            let _: () = conn.srem(&mine, &id).await.map_err(unavailable)?;
                            Ok(None)
                        }
                    }
                }
            })
            .buffer_unordered(CLAIM_CONCURRENCY)
            .collect::<Vec<Result<Option<Owned>, StoreError>>>()
            .await;
        let mut out = Vec::new();
        for r in results {
            match r {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a handoff failed; it is retried");
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl HandoffStore for RedisStore {
    async fn insert(&self, rec: HandoffRecord, node: &str) -> Result<Fence, StoreError> {
        let mut conn = self.conn.clone();
        let id = rec.id.clone();
        if self.one_server() {
            let created: i64 = self
                .scripts
                .insert_indexed
                .key(self.key(&id))
                .key(self.fleet_key("all"))
                .key(self.owned_key(node))
                .arg(node)
                .arg(self.encode(&rec))
                .arg(&id)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if created == 0 {
                return Err(StoreError::Exists(id));
            }
            return Ok(Fence {
                node: node.into(),
                epoch: 1,
            });
        }
        // The indexes first: a crash after this leaves an id that claims drop as missing.
        redis::pipe()
            .sadd(self.fleet_key("all"), &id)
            .ignore()
            .sadd(self.owned_key(node), &id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        let created: i64 = self
            .scripts
            .insert
            .key(self.key(&id))
            .arg(node)
            .arg(self.encode(&rec))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if created == 0 {
            return Err(StoreError::Exists(id));
        }
        Ok(Fence {
            node: node.into(),
            epoch: 1,
        })
    }

    async fn put(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        if let Some(fin) = rec.finished_at_ms
            && self.one_server()
        {
            let ok: i64 = self
                .scripts
                .put_finished
                .key(self.key(&rec.id))
                .key(self.fleet_key("done"))
                .key(self.owned_key(&fence.node))
                .key(self.target_key(&super::target_digest(&rec.push)))
                .arg(&*fence.node)
                .arg(fence.epoch)
                .arg(self.encode(&rec))
                .arg(&rec.id)
                .arg(fin)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            return match ok {
                0 => Err(StoreError::Fenced(rec.id)),
                2 => Err(StoreError::Replaced(rec.id)),
                _ => Ok(()),
            };
        }
        let ok: i64 = self
            .scripts
            .put
            .key(self.key(&rec.id))
            .arg(&*fence.node)
            .arg(fence.epoch)
            .arg(self.encode(&rec))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ok == 0 {
            return Err(StoreError::Fenced(rec.id));
        }
        self.index_finished(&rec, &fence.node).await?;
        if ok == 2 {
            return Err(StoreError::Replaced(rec.id));
        }
        Ok(())
    }

    async fn fence(&self, id: &str, fence: &Fence) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let ok: i64 = self
            .scripts
            .fence
            .key(self.key(id))
            .arg(&*fence.node)
            .arg(fence.epoch)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match ok {
            0 => Err(StoreError::Fenced(id.to_owned())),
            2 => Err(StoreError::Replaced(id.to_owned())),
            _ => Ok(()),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Owned>, StoreError> {
        let mut conn = self.conn.clone();
        let (owner, epoch, rec): (Option<String>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.key(id))
                .arg("owner")
                .arg("epoch")
                .arg("rec")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        let Some(rec) = rec else {
            return Ok(None);
        };
        Ok(Some(Owned {
            rec: self.decode(&rec)?,
            owner: owner.filter(|o| !o.is_empty()),
            epoch: epoch.unwrap_or(0),
        }))
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = conn
            .hget(self.key(id), "owner")
            .await
            .map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.del(self.key(id))
            .ignore()
            .srem(self.fleet_key("all"), id)
            .ignore()
            .srem(self.fleet_key("free"), id)
            .ignore()
            .zrem(self.fleet_key("done"), id)
            .ignore();
        if let Some(owner) = owner.filter(|o| !o.is_empty()) {
            pipe.srem(self.owned_key(&owner), id).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn finished_before(&self, cutoff_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZRANGE")
            .arg(self.fleet_key("done"))
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        conn.scard(self.fleet_key("all")).await.map_err(unavailable)
    }

    async fn heartbeat(
        &self,
        node: &str,
        addr: &str,
        ttl: Duration,
        join: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lease_conn.clone();
        let now: i64 = self
            .scripts
            .heartbeat
            .key(self.fleet_key("nodes"))
            .key(self.fleet_key("addr"))
            .arg(node)
            .arg(ttl.as_millis() as u64)
            .arg(addr)
            .arg(if join { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(now >= 0)
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .zrem(self.fleet_key("nodes"), node)
            .ignore()
            .hdel(self.fleet_key("addr"), node)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn fleet(&self) -> Result<FleetView, StoreError> {
        let mut conn = self.lease_conn.clone();
        let raw: Vec<String> = self
            .scripts
            .fleet
            .key(self.fleet_key("nodes"))
            .key(self.fleet_key("addr"))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let now: i64 = raw.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut pipe = redis::pipe();
        let mut nodes = Vec::new();
        for chunk in raw.get(1..).unwrap_or(&[]).chunks(3) {
            if let [node, score, addr] = chunk {
                let until: f64 = score.parse().unwrap_or(0.0);
                pipe.scard(self.owned_key(node));
                nodes.push(NodeLease {
                    node: node.clone(),
                    addr: addr.clone(),
                    expires_in_ms: until as i64 - now,
                    holds: 0,
                });
            }
        }
        pipe.scard(self.fleet_key("free"));
        let counts: Vec<u64> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        for (n, c) in nodes.iter_mut().zip(&counts) {
            n.holds = *c;
        }
        Ok(FleetView {
            free: counts.last().copied().unwrap_or(0),
            nodes,
        })
    }

    async fn owned(&self, node: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        conn.smembers(self.owned_key(node))
            .await
            .map_err(unavailable)
    }

    async fn release(&self, rec: HandoffRecord, fence: &Fence) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let id = rec.id.clone();
        let ok: i64 = self
            .scripts
            .release
            .key(self.key(&id))
            .arg(&*fence.node)
            .arg(fence.epoch)
            .arg(self.encode(&rec))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ok == 0 {
            return Err(StoreError::Fenced(id));
        }
        let _: bool = conn
            .smove(self.owned_key(&fence.node), self.fleet_key("free"), &id)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_free(&self, node: &str, max: usize) -> Result<Vec<Owned>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.lease_conn.clone();
        let ids: Vec<String> = conn
            .srandmember_multiple(self.fleet_key("free"), max as isize)
            .await
            .map_err(unavailable)?;
        self.claim_ids(self.fleet_key("free"), "", node, ids).await
    }

    async fn claim_dead(
        &self,
        dead: &str,
        node: &str,
        max: usize,
    ) -> Result<Vec<Owned>, StoreError> {
        let mut conn = self.lease_conn.clone();
        let is_dead: i64 = self
            .scripts
            .dead
            .key(self.fleet_key("nodes"))
            .arg(dead)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if is_dead == 0 {
            return Ok(Vec::new());
        }
        let theirs = self.owned_key(dead);
        let ids: Vec<String> = if max == 0 {
            Vec::new()
        } else {
            conn.srandmember_multiple(&theirs, max as isize)
                .await
                .map_err(unavailable)?
        };
        if ids.is_empty() {
            let _: i64 = self
                .scripts
                .forget
                .key(self.fleet_key("nodes"))
                .key(self.fleet_key("addr"))
                .key(&theirs)
                .arg(dead)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            return Ok(Vec::new());
        }
        self.claim_ids(theirs, dead, node, ids).await
    }

    async fn claim_target(
        &self,
        target: &str,
        id: &str,
        cap: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let evicted: Vec<String> = self
            .scripts
            .target
            .key(self.target_key(target))
            .arg(id)
            .arg(cap.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        for old in &evicted {
            let _: i64 = self
                .scripts
                .mark_replaced
                .key(self.key(old))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(evicted)
    }
}
