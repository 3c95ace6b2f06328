//! `EXCLUDED_IPS`: the addresses and CIDR ranges whose events are dropped at
//! ingestion (a person's own visits, like Umami's `IGNORE_IP`), parsed with the
//! rest of the configuration; [`crate::ingest::exclusion`] matches them against
//! the client's address (read through `TRUSTED_PROXIES`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::ip_list::IpList;

/// The addresses and ranges whose events are never stored (`EXCLUDED_IPS`);
/// empty by default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExcludedIps(IpList);

/// An `EXCLUDED_IPS` entry that is neither an IP address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an IP address nor a CIDR range")]
pub struct BadExcludedEntry(pub String);

impl FromStr for ExcludedIps {
    type Err = BadExcludedEntry;

    /// Parses a comma-separated list such as `203.0.113.7, 192.168.0.0/16, 2001:db8::/32`
    /// (see [`IpList::parse`]).
    fn from_str(list: &str) -> Result<ExcludedIps, BadExcludedEntry> {
        IpList::parse(list).map(ExcludedIps).map_err(BadExcludedEntry)
    }
}

/// The list as it is typed back into the setting.
impl fmt::Display for ExcludedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// Not the addresses themselves: they identify people, and a Config is logged.
impl fmt::Debug for ExcludedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExcludedIps({} entries)", self.0.len())
    }
}

impl ExcludedIps {
    /// True when `ip` is excluded (an IPv4-mapped IPv6 address matches its IPv4 entry).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// True when nothing is excluded.
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
    fn addresses_and_ranges_are_matched_and_written_back() {
        let excluded: ExcludedIps = " 203.0.113.7, 192.168.0.0/16,,2001:db8::/32 ,10.1.2.3/8".parse().unwrap();
        assert!(excluded.contains(ip("203.0.113.7")));
        assert!(!excluded.contains(ip("203.0.113.8")));
        assert!(excluded.contains(ip("192.168.44.3")));
        assert!(excluded.contains(ip("2001:db8::1")));
        assert!(excluded.contains(ip("10.200.0.1")), "host bits of a range are ignored");
        assert!(excluded.contains(ip("::ffff:203.0.113.7")), "IPv4-mapped clients match IPv4 entries");
        assert_eq!(excluded.to_string(), "203.0.113.7, 192.168.0.0/16, 2001:db8::/32, 10.0.0.0/8");
        assert_eq!(excluded.to_string().parse::<ExcludedIps>().unwrap(), excluded, "written back, read the same");
        assert_eq!(format!("{excluded:?}"), "ExcludedIps(4 entries)", "never the addresses");
        assert!("".parse::<ExcludedIps>().unwrap().is_empty());
        for bad in ["localhost", "10.0.0.0/33", "10.0.0", "1.2.3.4:80"] {
            assert_eq!(bad.parse::<ExcludedIps>().unwrap_err(), BadExcludedEntry(bad.to_string()));
        }
    }
}
