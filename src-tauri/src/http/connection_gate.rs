//! How many connections the server holds: at most so many in all (descriptors
//! and memory stay bounded) and so many per client address (one client cannot
//! take them all). A connection holds a [`ConnectionPermit`] until it closes.
//!
//! At the connection level the client is the TCP peer: behind a reverse proxy
//! every connection comes from the proxy, so the peers in `TRUSTED_PROXIES` are
//! held only to the total (the proxy should cap its own clients).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::config::TrustedProxies;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// The server holds its most connections in all.
    #[error("too many connections to this server ({0} open); retry shortly")]
    Total(usize),
    /// This client address holds its most connections.
    #[error("too many connections from your address ({0} open); close some or retry shortly")]
    PerClient(usize),
}

/// Counts open connections, in all and per client, against their caps.
#[derive(Debug)]
pub struct ConnectionGate {
    max_total: usize,
    max_per_client: usize,
    exempt: TrustedProxies,
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    /// The client it counts against (`None` for a trusted proxy).
    client: Option<IpAddr>,
}

impl ConnectionGate {
    /// A gate admitting `max_total` connections, `max_per_client` from any one
    /// client address but those of `exempt` (the trusted proxies).
    pub fn new(max_total: usize, max_per_client: usize, exempt: TrustedProxies) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate { max_total, max_per_client, exempt, open: Mutex::default() })
    }

    /// Admits a connection from `peer`, or says which cap it would break.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionPermit, ConnectionRefused> {
        let client = (!self.exempt.contains(peer)).then(|| client_key(peer));
        let mut open = self.open.lock().expect("connection gate lock");
        if open.total >= self.max_total {
            return Err(ConnectionRefused::Total(open.total));
        }
        if let Some(client) = client {
            let count = open.per_client.entry(client).or_default();
            if *count >= self.max_per_client {
                return Err(ConnectionRefused::PerClient(*count));
            }
            *count += 1;
        }
        open.total += 1;
        Ok(ConnectionPermit { gate: self.clone(), client })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection gate lock").total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().expect("connection gate lock");
        open.total -= 1;
        if let Some(client) = self.client
            && let Some(count) = open.per_client.get_mut(&client)
        {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&client);
            }
        }
    }
}

/// The address a client is counted under: an IPv4 address, or an IPv6 /64
/// (one subscriber's network, whose addresses a client can change at will).
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn caps_each_client_and_the_total_and_gives_places_back() {
        let gate = ConnectionGate::new(3, 2, TrustedProxies::default());
        let a1 = gate.admit(ip("10.0.0.1")).unwrap();
        let _a2 = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.1")).unwrap_err(), ConnectionRefused::PerClient(2));
        let _b1 = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.3")).unwrap_err(), ConnectionRefused::Total(3));
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.admit(ip("10.0.0.1")).expect("a place was given back");
        assert!(gate.open.lock().unwrap().per_client.len() == 2);
    }

    #[test]
    fn trusted_proxies_are_held_to_the_total_only() {
        let gate = ConnectionGate::new(4, 1, "10.0.0.0/8".parse().unwrap());
        let permits: Vec<_> = (0..4).map(|_| gate.admit(ip("10.1.2.3")).unwrap()).collect();
        assert_eq!(gate.admit(ip("10.1.2.3")).unwrap_err(), ConnectionRefused::Total(4));
        drop(permits);
        assert_eq!(gate.open(), 0);
        assert!(gate.open.lock().unwrap().per_client.is_empty());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        let gate = ConnectionGate::new(10, 1, TrustedProxies::default());
        let _first = gate.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(gate.admit(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(gate.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _v4 = gate.admit(ip("192.0.2.1")).unwrap();
        assert!(gate.admit(ip("::ffff:192.0.2.1")).is_err(), "the same IPv4 client");
    }
}
