//! The origin's one Redis connection: the namespace check, the client, the connection-manager
//! configuration and timeouts, error mapping and the key prefix, shared by the event log, the
//! dataset store and the webhook store ([`crate::stores::open`] makes one per origin).
//!
//! # Two multiplexed lanes, and a third for blocking
//!
//! A [`RedisConn`] holds two auto-reconnecting multiplexed [`ConnectionManager`]s:
//!
//! * **commands** — every write and every small read: appends, dataset writes, webhook records
//!   and leases, `latest`, the head, pings. A multiplexed connection answers in order, so a
//!   command waits for every reply queued before it on the same socket;
//! * **reads** — reads whose replies can be large: event-log history (a wide replay reads
//!   thousands of entries per call), dataset snapshots and deltas. They have their own socket
//!   so a big replay's replies never queue in front of a publisher's append; that is why this
//!   second manager exists, and why nothing that writes may use it. Reads here are idempotent,
//!   so [`RedisConn::read`] runs one again when the connection had dropped under it (the manager
//!   reconnects for the second try), which would otherwise fail a client's resume after a
//!   Redis restart.
//!
//! The event log's feed (`XREAD BLOCK`) would stall every command behind it on a multiplexed
//! socket, so it takes a dedicated connection with no response timeout
//! ([`RedisConn::blocking_connection`]).
//!
//! # Failing fast while Redis is down
//!
//! The managers make **one** connection attempt per reconnect, no retries: a command that finds
//! the connection broken fails at once (a refused connection is answered in microseconds, an
//! unreachable host within [`CONNECT_TIMEOUT`]) and starts the next attempt, which the next
//! command awaits. So while Redis is down every publish is answered 503 at once instead of
//! after a second of reconnect retries each (it used to take ~1.1 s), and the first command
//! after Redis is back reconnects. Retrying is the client's call: a 503 says nothing was stored.
//!
//! # Keys
//!
//! Every key of a namespace `<ns>` starts with `ssepush:{<ns>` ([`key_prefix`]): the braces are
//! a Redis Cluster hash tag, which is why a namespace may not contain braces
//! ([`check_namespace`]).
//!
//! # Redis Cluster
//!
//! `redis+cluster://host:port[,host:port…]` (the seed nodes; any reachable one will do) selects
//! the redis crate's cluster client instead: each lane is then a cluster connection that routes
//! every command, pipeline and script by its keys' slot and follows `MOVED`/`ASK`. The log's
//! and the webhooks' keys share the hash tag `{<ns>}`, so every multi-key script and `MULTI`
//! finds its keys in one slot — one master holds a namespace's whole event log, which is what
//! keeps one total order of ids (a namespace does not spread over masters; several namespaces
//! do). Each dataset has a tag of its own (`{<ns>:ds:<name>}`), so datasets spread.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError,
    RedisFuture, Value,
};

use crate::store::LogError;

/// How long an ordinary command may take before the store counts as unavailable. Generous: a
/// large batch is one script.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The oldest Redis the stores run on: exclusive stream ranges and `MINID` trimming are 6.2.
pub const MIN_VERSION: (u32, u32) = (6, 2);

/// A namespace fit for a key's hash tag: non-empty, no braces.
///
/// # Errors
/// [`LogError::Unavailable`] naming the namespace.
pub fn check_namespace(namespace: &str) -> Result<(), LogError> {
    if namespace.is_empty() || namespace.contains(['{', '}']) {
        // Braces would change the hash tag and scatter the keys over cluster slots.
        return Err(LogError::Unavailable(format!(
            "invalid store namespace {namespace:?}: must be non-empty, without braces"
        )));
    }
    Ok(())
}

/// `ssepush:{<ns>}:`, the prefix of the keys the event log and the webhook store own.
pub fn key_prefix(namespace: &str) -> String {
    format!("ssepush:{{{namespace}}}:")
}

/// A Redis error as a store error: wrong types and unparseable replies are corrupt data,
/// anything else (refused, timed out, dropped) is unavailability.
pub fn store_error(e: RedisError) -> LogError {
    if e.code() == Some("WRONGTYPE")
        || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
    {
        LogError::Corrupt(e.to_string())
    } else {
        LogError::Unavailable(e.to_string())
    }
}

/// A write's error as a store error: a refused connection is unavailability (nothing was
/// sent, a 503); one that may have been applied (a timeout, a connection that broke with the
/// command sent) has an unknown outcome ([`LogError::OutcomeUnknown`], a
/// 504); Redis at `maxmemory` is [`LogError::Full`] (a 507); anything else is as
/// [`store_error`] says (nothing was applied).
pub fn write_error(e: RedisError) -> LogError {
    // A refused connection never carried the command (the client flags it as dropped too).
    if e.is_connection_refusal() {
        store_error(e)
    } else if e.is_timeout() || e.is_connection_dropped() {
        LogError::OutcomeUnknown(e.to_string())
    } else if e.code() == Some("OOM") {
        LogError::Full("Redis refused the write: it reached its maxmemory".into())
    } else {
        store_error(e)
    }
}

/// The connection broke under the command (Redis restarted, a network blip).
fn dropped(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error()
}

/// The scheme that selects Redis Cluster: `redis+cluster://h1:p1,h2:p2`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The seed nodes of a `redis+cluster://[user:pass@]h1:p1[,h2:p2…]` URL as `redis://` URLs (the
/// credentials, when given, go to every node), or `None` when `url` is not a cluster URL.
///
/// # Errors
/// A cluster URL without a node, or with an empty one.
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let rest = url.strip_prefix(CLUSTER_SCHEME)?;
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .map(|h| format!("redis://{auth}{h}"))
        .collect();
    if hosts.split(',').any(|h| h.trim().is_empty()) {
        return Some(Err(
            "a redis+cluster:// URL lists host:port seed nodes separated by commas".into(),
        ));
    }
    Some(Ok(nodes))
}

/// One lane's connection: a single Redis's auto-reconnecting manager, or a cluster connection
/// (which routes by slot and reconnects per node). Both speak [`ConnectionLike`], so the stores
/// send their commands, pipelines and scripts the same way on either.
#[derive(Clone)]
pub enum Lane {
    Single(ConnectionManager),
    /// One connection without reconnects (a blocking read's own).
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Lane {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Lane::Single(c) => c.req_packed_command(cmd),
            Lane::Multiplexed(c) => c.req_packed_command(cmd),
            Lane::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Lane::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Lane::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Lane::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Lane::Single(c) => c.get_db(),
            Lane::Multiplexed(c) => c.get_db(),
            Lane::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection a blocking read (`XREAD BLOCK`) takes for itself: no response timeout.
pub type BlockingConnection = Lane;

/// Where new connections come from.
#[derive(Clone)]
enum Source {
    Single(Client),
    Cluster(Vec<String>),
}

/// One origin's connection to Redis (see the module docs). Cheap to clone: clones share the
/// sockets.
#[derive(Clone)]
pub struct RedisConn {
    source: Source,
    commands: Lane,
    reads: Lane,
    namespace: String,
}

impl std::fmt::Debug for RedisConn {
    // The client holds the URL, password included: it stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisConn {
    /// Connects to `url` (`redis://host:port[/db]`, `rediss://…`) for `namespace` and checks the
    /// server can run the stores (Redis ≥ [`MIN_VERSION`]).
    ///
    /// # Errors
    /// [`LogError::BadUrl`] for a URL the client refuses; [`LogError::Unavailable`] for a bad
    /// namespace, a Redis that does not answer within [`CONNECT_TIMEOUT`], or one too old.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, LogError> {
        check_namespace(namespace)?;
        if let Some(nodes) = cluster_nodes(url) {
            let nodes = nodes.map_err(|_| LogError::BadUrl(redact_url(url)))?;
            return Self::connect_cluster(nodes, url, namespace).await;
        }
        let client = Client::open(url).map_err(|_| LogError::BadUrl(url.to_owned()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // See "Failing fast while Redis is down" above.
            .set_number_of_retries(0);
        let mut commands = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(store_error)?;
        let reads = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(store_error)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut commands)
            .await
            .map_err(store_error)?;
        check_version(&info)?;
        Ok(RedisConn {
            source: Source::Single(client),
            commands: Lane::Single(commands),
            reads: Lane::Single(reads),
            namespace: namespace.to_owned(),
        })
    }

    /// [`Self::connect`] for a Redis Cluster: two cluster connections (the lanes), the version
    /// checked on one master.
    async fn connect_cluster(
        nodes: Vec<String>,
        url: &str,
        namespace: &str,
    ) -> Result<Self, LogError> {
        let commands = cluster_connection(&nodes, Some(RESPONSE_TIMEOUT))
            .await
            .map_err(|e| match e {
                LogError::BadUrl(_) => LogError::BadUrl(redact_url(url)),
                e => e,
            })?;
        let reads = cluster_connection(&nodes, Some(RESPONSE_TIMEOUT)).await?;
        // INFO would go to every node (one answer each): one master's is enough.
        let mut probe = commands.clone();
        let reply = probe
            .route_command(
                redis::cmd("INFO").arg("server").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
            .map_err(store_error)?;
        let info: String = redis::from_redis_value(reply)
            .map_err(|e| LogError::Corrupt(format!("INFO server: {e}")))?;
        check_version(&info)?;
        Ok(RedisConn {
            source: Source::Cluster(nodes),
            commands: Lane::Cluster(commands),
            reads: Lane::Cluster(reads),
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace every key of these stores lives in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The commands lane: writes and small reads.
    pub fn commands(&self) -> Lane {
        self.commands.clone()
    }

    /// Whether this is a Redis Cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    /// Runs an idempotent read on the reads lane (see the module docs), once more if the
    /// connection had dropped under it.
    ///
    /// # Errors
    /// The store error of the last try.
    pub async fn read<T: FromRedisValue>(&self, query: Read<'_>) -> Result<T, LogError> {
        let mut conn = self.reads.clone();
        let first = query.run(&mut conn).await;
        match first {
            Err(e) if dropped(&e) => query.run(&mut conn).await.map_err(store_error),
            r => r.map_err(store_error),
        }
    }

    /// A new connection of its own for a blocking command (`XREAD BLOCK`), with no response
    /// timeout: the caller bounds each call itself.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when Redis does not answer within [`CONNECT_TIMEOUT`].
    pub async fn blocking_connection(&self) -> Result<BlockingConnection, LogError> {
        match &self.source {
            Source::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                // A plain multiplexed connection (no reconnects): the caller drops it on error.
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Lane::Multiplexed)
                    .map_err(store_error)
            }
            Source::Cluster(nodes) => cluster_connection(nodes, None).await.map(Lane::Cluster),
        }
    }
}

/// A cluster connection to `nodes` (seeds) with the given per-command response timeout.
async fn cluster_connection(
    nodes: &[String],
    response_timeout: Option<Duration>,
) -> Result<ClusterConnection, LogError> {
    let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .retries(3)
        .max_retry_wait(1000);
    if let Some(t) = response_timeout {
        builder = builder.response_timeout(t);
    }
    let client = builder
        .build()
        .map_err(|_| LogError::BadUrl(CLUSTER_SCHEME.to_owned()))?;
    let connect = client.get_async_connection();
    match tokio::time::timeout(CONNECT_TIMEOUT * 3, connect).await {
        Ok(r) => r.map_err(store_error),
        Err(_) => Err(LogError::Unavailable(
            "no Redis Cluster node answered in time".into(),
        )),
    }
}

/// A store URL fit for an error message: the password (if any) replaced.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}://***@{hosts}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A read for [`RedisConn::read`]: a command, a pipeline or a script call.
#[derive(Clone, Copy)]
pub enum Read<'a> {
    Cmd(&'a redis::Cmd),
    Pipe(&'a redis::Pipeline),
    Script(&'a redis::ScriptInvocation<'a>),
}

impl Read<'_> {
    async fn run<T: FromRedisValue>(self, conn: &mut Lane) -> redis::RedisResult<T> {
        match self {
            Read::Cmd(c) => c.query_async(conn).await,
            Read::Pipe(p) => p.query_async(conn).await,
            Read::Script(s) => s.invoke_async(conn).await,
        }
    }
}

/// Checks `INFO server`'s `redis_version` against [`MIN_VERSION`]; unknown shapes (forks,
/// proxies) get the benefit of the doubt.
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
        Some(v) if v < MIN_VERSION => Err(LogError::Unavailable(format!(
            "Redis {} is too old: the stores need Redis {}.{} or newer",
            version.unwrap_or_default(),
            MIN_VERSION.0,
            MIN_VERSION.1,
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_prefixes() {
        assert!(check_namespace("app").is_ok());
        for bad in ["", "a{b", "a}b"] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        assert_eq!(key_prefix("app"), "ssepush:{app}:");
    }

    #[test]
    fn cluster_urls_list_seed_nodes() {
        assert_eq!(cluster_nodes("redis://h:1"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:1,b:2").unwrap().unwrap(),
            vec!["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://:pw@a:1, b:2/")
                .unwrap()
                .unwrap(),
            vec!["redis://:pw@a:1", "redis://:pw@b:2"]
        );
        assert!(cluster_nodes("redis+cluster://").unwrap().is_err());
        assert!(cluster_nodes("redis+cluster://a:1,,b:2").unwrap().is_err());
        assert_eq!(
            redact_url("redis+cluster://:pw@a:1"),
            "redis+cluster://***@a:1"
        );
    }

    #[test]
    fn version_check() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:6.2.0").is_ok());
        let err = check_version("redis_version:6.0.9").unwrap_err();
        assert!(err.to_string().contains("6.2 or newer"), "{err}");
        assert!(check_version("redis_version:weird").is_ok());
        assert!(check_version("").is_ok());
    }
}
