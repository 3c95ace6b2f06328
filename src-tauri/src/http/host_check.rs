//! The `Host` check against DNS rebinding: a web page whose name an attacker
//! makes resolve to 127.0.0.1 reaches the service from the visitor's browser as
//! "same origin", and could read the stats. Its requests carry the attacker's
//! name as `Host`, so the read routes answer only loopback names and addresses,
//! IP addresses, and the names in `PUBLIC_HOSTS`.
//!
//! Open to any `Host`: ingestion and the tracker scripts (any site may send
//! events; they reveal nothing) and `/health` (probes and load balancers use
//! whatever name or address they know; it reveals no site data).
//!
//! With `API_TOKEN` set and `PUBLIC_HOSTS` unset the check is off: a rebinding
//! page cannot send the token (browsers never add an `Authorization: Bearer`
//! header by themselves), and exposed deployments, which must have a token,
//! keep working under their own names. Setting `PUBLIC_HOSTS` turns it on
//! whatever the token.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::Config;

/// The paths any `Host` may use (all others are checked).
pub const OPEN_PATHS: [&str; 7] = [
    "/event",
    "/events",
    "/script.js",
    "/script.outbound.js",
    "/script.file-downloads.js",
    "/script.404.js",
    "/health",
];

/// Which `Host` names the read routes answer.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// False when the check is off (a token and no `PUBLIC_HOSTS`).
    enforced: bool,
    /// `PUBLIC_HOSTS`, lower case, each with or without a port.
    public_hosts: Vec<String>,
}

impl HostPolicy {
    /// The policy of `config`: see the module's documentation.
    pub fn from_config(config: &Config) -> HostPolicy {
        HostPolicy {
            enforced: config.api_token.is_none() || !config.public_hosts.is_empty(),
            public_hosts: config.public_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
        }
    }

    /// True when a request with this `Host` (`None`: none sent) may read.
    ///
    /// No `Host` at all is no browser's request (browsers always send one), so
    /// no rebinding page's either.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        if !self.enforced {
            return true;
        }
        let host = host.trim().to_ascii_lowercase();
        let name = strip_port(&host);
        is_loopback_name(name)
            || is_ip_literal(name)
            || self.public_hosts.iter().any(|public| *public == host || public == name)
    }
}

/// `host` without its `:port`, and an IPv6 literal without its brackets' port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `localhost` and its subdomains (which browsers resolve to loopback
/// themselves, RFC 6761); a trailing dot allowed.
fn is_loopback_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name == "localhost" || name.ends_with(".localhost")
}

/// An IP address (`127.0.0.1`, `[::1]`, any other): a page cannot rebind an
/// address, only a name, so an address as `Host` is never a rebinding attack.
fn is_ip_literal(name: &str) -> bool {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

/// Middleware: refuses a read route's request whose `Host` the policy does not
/// allow, with a `403` saying to set `PUBLIC_HOSTS`.
pub async fn check_host(State(policy): State<Arc<HostPolicy>>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = match request.headers().get(header::HOST) {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => request.uri().authority().map(|authority| authority.as_str().to_string()),
    };
    if policy.allows(host.as_deref()) {
        next.run(request).await
    } else {
        ApiError::HostNotAllowed(host.unwrap_or_default()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(token: bool, public: &[&str]) -> HostPolicy {
        let config = Config {
            api_token: token.then(|| "0123456789abcdef".to_string()),
            public_hosts: public.iter().map(|h| h.to_string()).collect(),
            ..Config::default()
        };
        HostPolicy::from_config(&config)
    }

    #[test]
    fn loopback_and_addresses_pass_other_names_do_not() {
        let p = policy(false, &[]);
        for host in ["localhost", "LOCALHOST:1000", "localhost.", "a.b.localhost:8080", "127.0.0.1", "127.1.2.3:99"] {
            assert!(p.allows(Some(host)), "{host}");
        }
        for host in ["[::1]", "[::1]:1000", "192.168.1.5:1000", "[2001:db8::1]:80"] {
            assert!(p.allows(Some(host)), "{host}");
        }
        for host in ["evil.example", "evil.example:1000", "localhost.evil.example", "notlocalhost", "", "[::1"] {
            assert!(!p.allows(Some(host)), "{host}");
        }
        assert!(p.allows(None), "no Host: not a browser");
    }

    #[test]
    fn public_hosts_match_with_or_without_their_port() {
        let p = policy(false, &["Stats.Example.com", "other.example:8443"]);
        assert!(p.allows(Some("stats.example.com")));
        assert!(p.allows(Some("stats.example.com:443")));
        assert!(p.allows(Some("other.example:8443")));
        assert!(!p.allows(Some("other.example:9000")), "the port given is the only one");
        assert!(!p.allows(Some("evil.example")));
    }

    #[test]
    fn a_token_turns_the_check_off_unless_public_hosts_are_set() {
        assert!(policy(true, &[]).allows(Some("evil.example")));
        assert!(!policy(true, &["stats.example.com"]).allows(Some("evil.example")));
    }
}
