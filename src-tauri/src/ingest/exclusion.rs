//! Excluding a person's own visits (issue #16 item 8), before anything of an
//! event is stored: its client address in `EXCLUDED_IPS` (matched after
//! `TRUSTED_PROXIES`), or its request carrying the exclusion cookie that
//! `/exclude-me` sets in a browser. Neither the address nor the cookie is stored
//! or logged; the drop is counted by reason (`excluded_ip`, `excluded_browser`).

use std::net::IpAddr;

use axum::http::{HeaderMap, header};

use crate::config::ExcludedIps;

/// The cookie `/exclude-me` sets on the API's origin: a browser that carries it
/// (the tracker's `sendBeacon` sends the API's cookies on same-site requests)
/// is not counted.
pub const EXCLUSION_COOKIE: &str = "ad_exclude";

/// Why an event is excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    /// The client's address is in `EXCLUDED_IPS`.
    Ip,
    /// The browser carries the exclusion cookie set by `/exclude-me`.
    Browser,
}

/// The exclusion rules of one API process.
#[derive(Debug, Clone, Default)]
pub struct Exclusion {
    ips: ExcludedIps,
}

impl Exclusion {
    /// The rules with `ips` excluded (the exclusion cookie is always honoured).
    pub fn new(ips: ExcludedIps) -> Exclusion {
        Exclusion { ips }
    }

    /// Why a request from `client_ip` (already read through the trusted
    /// proxies; unknown when the router runs without our serve loop) with
    /// `headers` is excluded, if it is.
    pub fn check(&self, client_ip: Option<IpAddr>, headers: &HeaderMap) -> Option<Excluded> {
        if client_ip.is_some_and(|ip| self.ips.contains(ip)) {
            return Some(Excluded::Ip);
        }
        carries_exclusion_cookie(headers).then_some(Excluded::Browser)
    }
}

/// True when a `Cookie` header holds `ad_exclude=1`.
pub fn carries_exclusion_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name.trim() == EXCLUSION_COOKIE && value.trim().trim_matches('"') == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn an_excluded_address_or_the_cookie_excludes_nothing_else_does() {
        let exclusion = Exclusion::new("203.0.113.0/24".parse().unwrap());
        let none = HeaderMap::new();
        assert_eq!(exclusion.check(Some("203.0.113.9".parse().unwrap()), &none), Some(Excluded::Ip));
        assert_eq!(exclusion.check(Some("198.51.100.1".parse().unwrap()), &none), None);
        assert_eq!(exclusion.check(None, &none), None);
        assert_eq!(exclusion.check(None, &cookies(&["a=b; ad_exclude=1"])), Some(Excluded::Browser));
        assert_eq!(exclusion.check(None, &cookies(&["a=b", "ad_exclude=1"])), Some(Excluded::Browser));
        for other in ["ad_exclude=0", "ad_exclude=", "xad_exclude=1", "ad_excluded=1"] {
            assert_eq!(exclusion.check(None, &cookies(&[other])), None, "{other}");
        }
    }
}
