//! Who the client is: the TCP peer, or, behind proxies listed in
//! `TRUSTED_PROXIES`, the address they report in `X-Forwarded-For`. Read only to
//! derive an anonymous visitor id: never stored nor logged.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::TrustedProxies;

/// The client's address. The TCP `peer`, unless it is a trusted proxy: then the
/// `X-Forwarded-For` chain (every such header, in order) is read from the right,
/// each entry being the peer of the hop after it, and the first address that is
/// not itself a trusted proxy is the client. Entries to the left of it were
/// written by the client and are never believed. If every entry is trusted, the
/// leftmost is the client; an unreadable entry stops the walk at the last
/// address read.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let chain: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for entry in chain.into_iter().rev() {
        let Some(hop) = forwarded_address(entry) else { break };
        client = hop;
        if !trusted.contains(hop) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry's address: `1.2.3.4`, `2001:db8::1`, and the forms
/// some proxies write with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    let address = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let trusted: TrustedProxies = "10.0.0.1".parse().unwrap();
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(client_ip(ip("203.0.113.7"), &headers, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("203.0.113.7"), &headers, &TrustedProxies::default()), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &TrustedProxies::default()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_gives_the_rightmost_untrusted_address() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = ip("10.0.0.1");
        let cases: &[(&[&str], &str)] = &[
            (&[], "10.0.0.1"),
            (&["198.51.100.1"], "198.51.100.1"),
            // The client claimed 1.1.1.1; our proxy appended who really connected.
            (&["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
            // Two trusted hops: skip them.
            (&["1.1.1.1, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),
            (&["1.1.1.1", "198.51.100.1, 10.0.0.9"], "198.51.100.1"),
            (&["10.0.0.7, 10.0.0.9"], "10.0.0.7"),
            (&["198.51.100.1:4711"], "198.51.100.1"),
            (&["[2001:db8::1]:443"], "2001:db8::1"),
            (&["2001:db8::1"], "2001:db8::1"),
            (&["\"[2001:db8::2]\""], "2001:db8::2"),
            // Garbage left of a trusted hop: the last address read is the client.
            (&["unknown, 10.0.0.9"], "10.0.0.9"),
            (&["198.51.100.1, garbage"], "10.0.0.1"),
        ];
        for (values, expected) in cases {
            assert_eq!(client_ip(peer, &forwarded(values), &trusted), ip(expected), "{values:?}");
        }
    }
}
