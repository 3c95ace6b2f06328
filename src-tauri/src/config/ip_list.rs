//! A list of IP addresses and CIDR ranges as a setting types it
//! (`10.0.0.1, 192.168.0.0/16, fd00::/8`): parsed, matched and written back the
//! same way for every setting that holds one (`TRUSTED_PROXIES`, `EXCLUDED_IPS`).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Addresses and ranges; a single address is kept as its /32 or /128.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IpList(Vec<IpNet>);

impl IpList {
    /// Parses a comma-separated list (empty entries skipped; a range's host bits
    /// ignored; an IPv4-mapped IPv6 address read as its IPv4 address). The error
    /// is the first entry that is neither an address nor a range.
    pub fn parse(list: &str) -> Result<IpList, String> {
        let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty());
        let networks = entries.map(|entry| {
            let network = match entry.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip.to_canonical()),
                Err(_) => entry.parse::<IpNet>().map_err(|_| entry.to_string())?,
            };
            Ok(network.trunc())
        });
        Ok(IpList(networks.collect::<Result<_, String>>()?))
    }

    /// True when `ip` is listed (an IPv4-mapped IPv6 address matches its IPv4 entry).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many entries are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The entries, as ranges.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

/// The list as it is typed back into the setting: single addresses without
/// their `/32` or `/128`, comma-separated.
impl fmt::Display for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, network) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            if network.prefix_len() == network.max_prefix_len() {
                write!(f, "{}", network.addr())?;
            } else {
                write!(f, "{network}")?;
            }
        }
        Ok(())
    }
}
