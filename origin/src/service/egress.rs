//! Outgoing connections to addresses a client chose (webhook targets, Web Push endpoints):
//! name resolution that refuses every address [`crate::special_purpose`] does not call globally
//! reachable. Each server's HTTP client resolves through [`resolve_global`] when it connects,
//! so a name that passed the check when it was registered cannot later resolve into the
//! server's own network (DNS rebinding); IP literals never reach a resolver, so callers check
//! them with [`check_ip`] before sending.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::special_purpose::non_global;

/// Longest a lookup may take before the connection is given up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a destination was refused or could not be resolved. The message names the host and the
/// registry block: fit for the operator's log and for the client that registered the
/// destination (it chose the name), not for a status other parties read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The host is, or resolves to, an address that is not globally reachable.
    #[error("{host} resolves to {ip}, in {block}: not a public address; refused")]
    NotGlobal {
        host: String,
        ip: IpAddr,
        block: &'static str,
    },
    /// The lookup failed, found nothing, or timed out.
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
}

/// Refuses an address that is not globally reachable (`host` names it in the message).
pub fn check_ip(host: &str, ip: IpAddr) -> Result<(), EgressError> {
    match non_global(ip) {
        None => Ok(()),
        Some(block) => Err(EgressError::NotGlobal {
            host: host.to_owned(),
            ip,
            block,
        }),
    }
}

/// Resolves `host` (a name or an IP literal, brackets allowed) and returns its addresses with
/// `port`, refusing the whole name when **any** address is not globally reachable (a name
/// with one public and one private address would be a coin flip away from the private one).
/// `allow_private` skips the address check (loopback development setups).
pub async fn resolve_global(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, EgressError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let unresolved = |reason: String| EgressError::Unresolved {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| unresolved("timed out".into()))?
            .map_err(|e| unresolved(e.to_string()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(unresolved("no address".into()));
    }
    if !allow_private {
        for a in &addrs {
            check_ip(host, a.ip())?;
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_judged_by_every_address_they_resolve_to() {
        let err = resolve_global("localhost", 443, false).await.unwrap_err();
        assert!(
            matches!(&err, EgressError::NotGlobal { host, .. } if host == "localhost"),
            "{err}"
        );
        assert!(resolve_global("localhost", 443, true).await.is_ok());
        for literal in ["127.0.0.1", "[::1]", "198.18.0.1", "[2002:7f00:1::]"] {
            assert!(
                resolve_global(literal, 443, false).await.is_err(),
                "{literal} passed"
            );
        }
        let ok = resolve_global("8.8.8.8", 443, false).await.unwrap();
        assert_eq!(ok, vec!["8.8.8.8:443".parse().unwrap()]);
    }
}
