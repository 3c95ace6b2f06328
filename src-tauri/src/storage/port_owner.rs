//! Who listens on a loopback port: so that the local database the app starts
//! is known to be the process answering there, and a program already holding
//! (or grabbing) the port is refused instead of being handed the app's data.
//!
//! On Linux the answer is exact: the kernel's socket tables (`/proc/net/tcp`,
//! `/proc/net/tcp6`) say which sockets listen on the port, and `/proc/<pid>/fd`
//! which of them a process holds. Elsewhere we can only probe: connect to
//! 127.0.0.1 and [::1].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a probe waits for a connection to be accepted.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// True when something accepts TCP connections on `port` of `ip`.
pub async fn accepts(ip: IpAddr, port: u16) -> bool {
    let addr = SocketAddr::new(ip, port);
    matches!(tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// The addresses on which a process other than `ours` (any process, when
/// `None`) listens on `port` and would receive connections made to this
/// machine's loopback (`127.0.0.1`, `[::1]`, `localhost`): loopback and
/// wildcard (`0.0.0.0`, `::`) addresses.
pub async fn foreign_listeners(port: u16, ours: Option<u32>) -> Vec<SocketAddr> {
    #[cfg(target_os = "linux")]
    if let Some(listening) = linux::listening_on(port) {
        let owned = ours.map(linux::socket_inodes_of).unwrap_or_default();
        return listening
            .into_iter()
            .filter(|(addr, inode)| reaches_loopback(addr.ip()) && !owned.contains(inode))
            .map(|(addr, _)| addr)
            .collect();
    }
    // Probes cannot tell who answers: with our server up (it binds 127.0.0.1),
    // only [::1] can show someone else.
    let mut foreign = Vec::new();
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        if (ours.is_none() || ip.is_ipv6()) && accepts(ip, port).await {
            foreign.push(SocketAddr::new(ip, port));
        }
    }
    foreign
}

/// True when `ours` itself listens on `port` of 127.0.0.1 (Linux); elsewhere,
/// when something does (all a probe can tell).
pub async fn listens(ours: u32, port: u16) -> bool {
    #[cfg(target_os = "linux")]
    if let Some(listening) = linux::listening_on(port) {
        let owned = linux::socket_inodes_of(ours);
        return listening.iter().any(|(addr, inode)| addr.ip() == Ipv4Addr::LOCALHOST && owned.contains(inode));
    }
    let _ = ours;
    accepts(IpAddr::V4(Ipv4Addr::LOCALHOST), port).await
}

fn reaches_loopback(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    /// The kernel's `st` for a listening socket.
    const LISTEN: &str = "0A";

    /// Every TCP socket listening on `port` (address, inode); `None` when the
    /// tables cannot be read.
    pub fn listening_on(port: u16) -> Option<Vec<(SocketAddr, u64)>> {
        let mut found = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).ok()?;
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            for fields in text.lines().skip(1).map(|line| line.split_whitespace().collect::<Vec<_>>()) {
                let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                    continue;
                };
                let Some((ip, local_port)) = local.split_once(':') else { continue };
                if *state != LISTEN || u16::from_str_radix(local_port, 16) != Ok(port) {
                    continue;
                }
                if let (Some(ip), Ok(inode)) = (parse_ip(ip), inode.parse()) {
                    found.push((SocketAddr::new(ip, port), inode));
                }
            }
        }
        Some(found)
    }

    /// The kernel prints an address as 32-bit words in host byte order.
    fn parse_ip(hex: &str) -> Option<IpAddr> {
        let words: Vec<[u8; 4]> = (0..hex.len() / 8)
            .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).map(u32::to_ne_bytes))
            .collect::<Result<_, _>>()
            .ok()?;
        match words.as_slice() {
            [v4] => Some(IpAddr::V4(Ipv4Addr::from(*v4))),
            [a, b, c, d] => {
                let bytes: Vec<u8> = [a, b, c, d].iter().flat_map(|w| w.iter().copied()).collect();
                Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)))
            }
            _ => None,
        }
    }

    /// The inodes of the sockets process `pid` holds.
    pub fn socket_inodes_of(pid: u32) -> HashSet<u64> {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
        entries
            .flatten()
            .filter_map(|entry| std::fs::read_link(entry.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_kernels_tables_name_our_own_listeners() {
            let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            let v6 = std::net::TcpListener::bind(("::1", port)).ok();
            let listening = listening_on(port).unwrap();
            let mine = socket_inodes_of(std::process::id());
            assert!(listening.iter().any(|(a, i)| *a == v4.local_addr().unwrap() && mine.contains(i)), "{listening:?}");
            if let Some(v6) = v6 {
                assert!(listening.iter().any(|(a, i)| *a == v6.local_addr().unwrap() && mine.contains(i)));
            }
            #[cfg(target_endian = "little")]
            {
                assert_eq!(parse_ip("0100007F"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                assert_eq!(parse_ip("00000000000000000000000001000000"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            }
        }
    }
}
