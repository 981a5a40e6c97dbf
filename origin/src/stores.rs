//! The origin's stores from one URL: the event log, the dataset store and the webhook store,
//! all in memory or all on one Redis connection ([`crate::redis_conn`]).
//!
//! `memory` (or `memory://`) keeps everything in this process; `redis://…` / `rediss://…` keeps
//! it in Redis under the origin's namespace, shared by every origin on that namespace;
//! `redis+cluster://h1:p1,h2:p2,…` does the same on a Redis Cluster (see [`crate::redis_conn`]).

use std::sync::Arc;

use crate::datasets::{DatasetLimits, DatasetStore};
use crate::redis_conn::RedisConn;
use crate::store::{EventLog, LogError, Retention};
use crate::webhooks::store::WebhookStore;

/// The three stores of one origin.
#[derive(Clone)]
pub struct Stores {
    pub log: Arc<dyn EventLog>,
    pub datasets: Arc<dyn DatasetStore>,
    pub webhooks: Arc<dyn WebhookStore>,
}

/// Which backend a store URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// The URL as given (`redis://host:port[/db]`, `rediss://…`, or a cluster's seed nodes,
    /// `redis+cluster://host:port[,host:port…]`).
    Redis(String),
}

impl Backend {
    /// Reads a store URL.
    ///
    /// # Errors
    /// [`LogError::BadUrl`] for anything but `memory`, `memory://…`, `redis://…`, `rediss://…`.
    pub fn parse(url: &str) -> Result<Backend, LogError> {
        if url == "memory" || url.starts_with("memory://") {
            Ok(Backend::Memory)
        } else if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with(crate::redis_conn::CLUSTER_SCHEME)
        {
            Ok(Backend::Redis(url.to_owned()))
        } else {
            Err(LogError::BadUrl(url.to_owned()))
        }
    }
}

/// Opens the three stores `url` names, in `namespace` (Redis only), with the log's `retention`
/// and the datasets' `limits`. On Redis they share one [`RedisConn`].
///
/// # Errors
/// [`LogError::BadUrl`] for an unknown scheme; [`LogError::Unavailable`] when Redis cannot be
/// reached, is too old, or the namespace is unusable.
pub async fn open(
    url: &str,
    namespace: &str,
    retention: Retention,
    limits: DatasetLimits,
) -> Result<Stores, LogError> {
    match Backend::parse(url)? {
        Backend::Memory => Ok(Stores {
            log: Arc::new(crate::store::memory::MemoryLog::new(retention)),
            datasets: Arc::new(crate::datasets::memory::MemoryDatasets::new(limits)),
            webhooks: Arc::new(crate::webhooks::memory::MemoryWebhooks::default()),
        }),
        Backend::Redis(url) => {
            let conn = RedisConn::connect(&url, namespace).await?;
            Ok(Stores {
                log: Arc::new(crate::store::redis::RedisLog::new(&conn, retention).await?),
                datasets: Arc::new(crate::datasets::redis::RedisDatasets::new(&conn, limits)),
                webhooks: Arc::new(crate::webhooks::redis::RedisWebhooks::new(&conn)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_backend() {
        assert_eq!(Backend::parse("memory").unwrap(), Backend::Memory);
        assert_eq!(Backend::parse("memory://x").unwrap(), Backend::Memory);
        assert_eq!(
            Backend::parse("rediss://h:6380/1").unwrap(),
            Backend::Redis("rediss://h:6380/1".into())
        );
        for bad in ["", "redis", "postgres://h", "Memory"] {
            assert!(
                matches!(Backend::parse(bad), Err(LogError::BadUrl(_))),
                "{bad:?}"
            );
        }
    }
}
