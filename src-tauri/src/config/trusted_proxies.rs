//! The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`), parsed
//! with the rest of the configuration; [`crate::ingest::client_ip`] reads the
//! header through them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::ip_list::IpList;

/// The proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`): addresses
/// and CIDR ranges. Empty by default: the header is then ignored, since any
/// client can send it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(IpList);

/// A `TRUSTED_PROXIES` entry that is neither an IP address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an IP address nor a CIDR range")]
pub struct BadProxyEntry(pub String);

impl FromStr for TrustedProxies {
    type Err = BadProxyEntry;

    /// Parses a comma-separated list such as `10.0.0.1, 192.168.0.0/16, fd00::/8`
    /// (see [`IpList::parse`]).
    fn from_str(list: &str) -> Result<TrustedProxies, BadProxyEntry> {
        IpList::parse(list).map(TrustedProxies).map_err(BadProxyEntry)
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.networks().iter().map(|network| network.to_string())).finish()
    }
}

/// The list as it is typed back into the setting (used by the desktop app's settings).
impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TrustedProxies {
    /// True when `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let trusted: TrustedProxies = " 10.0.0.1, 192.168.0.0/16,,fd00::/8 ,172.16.5.9/12".parse().unwrap();
        assert!(trusted.contains(ip("10.0.0.1")));
        assert!(!trusted.contains(ip("10.0.0.2")));
        assert!(trusted.contains(ip("192.168.44.3")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(trusted.contains(ip("172.31.0.1")), "host bits of a range are ignored");
        assert!(trusted.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped peers match IPv4 entries");
        assert_eq!(format!("{trusted:?}"), r#"["10.0.0.1/32", "192.168.0.0/16", "fd00::/8", "172.16.0.0/12"]"#);
        assert_eq!(trusted.to_string(), "10.0.0.1, 192.168.0.0/16, fd00::/8, 172.16.0.0/12");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        for bad in ["localhost", "10.0.0.0/33", "10.0.0", "1.2.3.4:80"] {
            let error = bad.parse::<TrustedProxies>().unwrap_err();
            assert_eq!(error, BadProxyEntry(bad.to_string()));
        }
    }
}
