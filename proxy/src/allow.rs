//! The operator's `allowed_origins`: which stream URLs the proxy may connect to (checked for the
//! stream URL before any connection and for every redirect hop), with the development rule for
//! an empty list, path prefixes at segment boundaries, and the loopback test the rules share.
//! The proxy is never an open relay.

use std::net::SocketAddr;

use reqwest::Url;

/// The operator's `allowed_origins`, parsed once.
#[derive(Debug, Clone)]
pub struct OriginAllowList {
    entries: Vec<Url>,
    /// Empty list on a loopback listen address: loopback origins are allowed (development).
    loopback_only: bool,
}

impl OriginAllowList {
    pub fn parse(list: &[String], listen: SocketAddr) -> Result<OriginAllowList, String> {
        let mut entries = Vec::new();
        for raw in list {
            let url = Url::parse(raw)
                .map_err(|e| format!("allowed_origins entry {raw:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "allowed_origins entry {raw:?} must be an http(s) URL with a host"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "allowed_origins entry {raw:?} must not have a query or fragment"
                ));
            }
            entries.push(url);
        }
        Ok(OriginAllowList {
            loopback_only: entries.is_empty() && listen.ip().is_loopback(),
            entries,
        })
    }

    /// Whether the proxy may send a request to `url`. Checked for the stream URL and for every
    /// redirect hop.
    pub fn allows(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        if self.entries.is_empty() {
            return self.loopback_only && is_loopback_host(url);
        }
        self.entries.iter().any(|e| {
            e.scheme() == url.scheme()
                && e.host() == url.host()
                && e.port_or_known_default() == url.port_or_known_default()
                && path_prefix(e.path(), url.path())
        })
    }
}

/// `/v1` allows `/v1` and `/v1/sse` but not `/v1x`.
fn path_prefix(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `scheme://host:port` of a URL: what error messages and logs may show (never path or query,
/// which can carry tokens).
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

pub(crate) fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> OriginAllowList {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        OriginAllowList::parse(&list, "127.0.0.1:8090".parse().unwrap()).unwrap()
    }

    #[test]
    fn allowed_origins_match_scheme_host_port_and_path_prefix() {
        let a = allow(&["http://127.0.0.1:8080", "https://api.example.com/streams"]);
        let ok = |u: &str| a.allows(&Url::parse(u).unwrap());
        assert!(ok("http://127.0.0.1:8080/v1/sse"));
        assert!(!ok("http://127.0.0.1:8081/v1/sse"));
        assert!(!ok("https://127.0.0.1:8080/v1/sse"));
        assert!(ok("https://api.example.com/streams/x"));
        assert!(ok("https://api.example.com:443/streams"));
        assert!(!ok("https://api.example.com/streamsx"));
        assert!(!ok("https://api.example.com.evil.net/streams"));
        // Empty list: loopback only, and only on a loopback listen address.
        let dev = allow(&[]);
        assert!(dev.allows(&Url::parse("http://localhost:1/x").unwrap()));
        assert!(!dev.allows(&Url::parse("http://10.0.0.1/x").unwrap()));
        let public = OriginAllowList::parse(&[], "0.0.0.0:8090".parse().unwrap()).unwrap();
        assert!(!public.allows(&Url::parse("http://127.0.0.1/x").unwrap()));
    }
}
