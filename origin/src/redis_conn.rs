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

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, RedisError};

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

/// One origin's connection to Redis (see the module docs). Cheap to clone: clones share the
/// sockets.
#[derive(Clone)]
pub struct RedisConn {
    client: Client,
    commands: ConnectionManager,
    reads: ConnectionManager,
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
            client,
            commands,
            reads,
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace every key of these stores lives in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The commands lane: writes and small reads.
    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
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
    pub async fn blocking_connection(&self) -> Result<MultiplexedConnection, LogError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(store_error)
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
    async fn run<T: FromRedisValue>(self, conn: &mut ConnectionManager) -> redis::RedisResult<T> {
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
    fn version_check() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:6.2.0").is_ok());
        let err = check_version("redis_version:6.0.9").unwrap_err();
        assert!(err.to_string().contains("6.2 or newer"), "{err}");
        assert!(check_version("redis_version:weird").is_ok());
        assert!(check_version("").is_ok());
    }
}
