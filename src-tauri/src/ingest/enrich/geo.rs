//! Where a client address is: its country from the bundled country database
//! (`COUNTRY_DB`, an ip-location-db `.mmdb`: records `{country_code}`), and
//! region and city from a user's own GeoLite2-City (`GEOIP_DB`), which is
//! asked first when present. The address itself is never stored nor logged.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{PathElement, Reader};

/// Where an address is; each part `None` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, upper case (`DE`).
    pub country: Option<String>,
    /// First subdivision's English name (`Bavaria`): only with `GEOIP_DB`.
    pub region: Option<String>,
    /// City's English name (`Munich`): only with `GEOIP_DB`.
    pub city: Option<String>,
}

/// Why a database could not be opened; enrichment then goes without it.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path}: {source}")]
pub struct GeoError {
    /// The file.
    pub path: String,
    /// What the reader said.
    #[source]
    pub source: maxminddb::MaxMindDbError,
}

/// The open databases (read into memory once at start).
#[derive(Default)]
pub struct Geo {
    country: Option<Reader<Vec<u8>>>,
    city: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo").field("country", &self.country.is_some()).field("city", &self.city.is_some()).finish()
    }
}

/// Opens one database.
pub fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|source| GeoError { path: path.display().to_string(), source })
}

impl Geo {
    /// Geo over the databases given (either may be absent).
    pub fn new(country: Option<Reader<Vec<u8>>>, city: Option<Reader<Vec<u8>>>) -> Geo {
        Geo { country, city }
    }

    /// Whether any database is open.
    pub fn is_enabled(&self) -> bool {
        self.country.is_some() || self.city.is_some()
    }

    /// Where `ip` is (IPv4-mapped IPv6 addresses read as IPv4).
    pub fn locate(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        let mut location = Location::default();
        if let Some(city) = &self.city {
            location.country = lookup(city, ip, &[PathElement::Key("country"), PathElement::Key("iso_code")]);
            location.region = lookup(
                city,
                ip,
                &[
                    PathElement::Key("subdivisions"),
                    PathElement::Index(0),
                    PathElement::Key("names"),
                    PathElement::Key("en"),
                ],
            );
            location.city =
                lookup(city, ip, &[PathElement::Key("city"), PathElement::Key("names"), PathElement::Key("en")]);
        }
        if location.country.is_none()
            && let Some(country) = &self.country
        {
            location.country = lookup(country, ip, &[PathElement::Key("country_code")])
                .or_else(|| lookup(country, ip, &[PathElement::Key("country"), PathElement::Key("iso_code")]));
        }
        location.country = location.country.filter(|code| is_country_code(code)).map(|code| code.to_ascii_uppercase());
        location
    }
}

/// One string at `path` in `ip`'s record; nothing on any error (a record of another shape).
fn lookup(reader: &Reader<Vec<u8>>, ip: IpAddr, path: &[PathElement<'_>]) -> Option<String> {
    let found = reader.lookup(ip).ok()?;
    found.decode_path::<String>(path).ok().flatten().filter(|value| !value.trim().is_empty())
}

/// Two ASCII letters (the data sets use `ZZ` and the like for unknown: kept, they are codes).
fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataSets;

    #[test]
    fn country_database_maps_addresses_to_codes() {
        let path = DataSets::default().country_db;
        let Ok(reader) = open(&path) else {
            panic!("{} is missing: run scripts/install-data-sets.sh (scripts/setup.sh does)", path.display());
        };
        let geo = Geo::new(Some(reader), None);
        // Any network the data set maps gives its code, for IPv4 and IPv4-mapped IPv6 alike.
        let (ip, code) = crate::ingest::enrich::tests::an_address_in_a_country(&path);
        assert_eq!(geo.locate(ip).country.as_deref(), Some(code.as_str()));
        let mapped = match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        assert_eq!(geo.locate(mapped).country, Some(code));
        assert_eq!(geo.locate("127.0.0.1".parse().unwrap()), Location::default(), "loopback is nowhere");
        assert_eq!(Geo::default().locate(ip), Location::default(), "no database, no location");
    }

    #[test]
    fn a_city_database_gives_region_and_city_and_is_asked_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-City-Test.mmdb");
        std::fs::write(&path, tiny_city_database()).unwrap();
        let country_db = DataSets::default().country_db;
        let geo = Geo::new(open(&country_db).ok(), Some(open(&path).unwrap()));
        let expected =
            Location { country: Some("DE".into()), region: Some("Bavaria".into()), city: Some("Munich".into()) };
        assert_eq!(geo.locate("81.2.3.4".parse().unwrap()), expected);
        // Outside the city database's networks, the country database answers alone.
        let (ip, code) = crate::ingest::enrich::tests::an_address_in_a_country(&country_db);
        assert_eq!(geo.locate(ip), Location { country: Some(code), ..Location::default() });
    }

    /// A GeoLite2-City-shaped MaxMind DB (IPv4, 24-bit records) mapping
    /// 81.0.0.0/8 to Munich, Bavaria, DE: MaxMind's own databases cannot be bundled.
    fn tiny_city_database() -> Vec<u8> {
        fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
            assert!(size < 29);
            if kind <= 7 {
                out.push((kind << 5) | size as u8);
            } else {
                out.push(size as u8); // extended type
                out.push(kind - 7);
            }
        }
        fn string(text: &str, out: &mut Vec<u8>) {
            control(2, text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
        fn unsigned(kind: u8, value: u64, out: &mut Vec<u8>) {
            let bytes: Vec<u8> = value.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            control(kind, bytes.len(), out);
            out.extend_from_slice(&bytes);
        }
        fn names(name: &str, out: &mut Vec<u8>) {
            control(7, 1, out);
            string("names", out);
            control(7, 1, out);
            string("en", out);
            string(name, out);
        }
        // The data section: one record.
        let mut data = Vec::new();
        control(7, 3, &mut data);
        string("country", &mut data);
        control(7, 1, &mut data);
        string("iso_code", &mut data);
        string("DE", &mut data);
        string("subdivisions", &mut data);
        control(11, 1, &mut data);
        names("Bavaria", &mut data);
        string("city", &mut data);
        names("Munich", &mut data);
        // The search tree: 8 nodes along 81's bits (01010001); every other branch has no data.
        let node_count: u32 = 8;
        let mut tree = Vec::new();
        for depth in 0..8 {
            let bit = (81u8 >> (7 - depth)) & 1;
            let next = if depth == 7 { node_count + 16 } else { depth + 1 };
            let (left, right) = if bit == 0 { (next, node_count) } else { (node_count, next) };
            for record in [left, right] {
                tree.extend_from_slice(&record.to_be_bytes()[1..]);
            }
        }
        let mut file = tree;
        file.extend_from_slice(&[0; 16]);
        file.extend_from_slice(&data);
        file.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let mut metadata = Vec::new();
        control(7, 9, &mut metadata);
        string("description", &mut metadata);
        control(7, 1, &mut metadata);
        string("en", &mut metadata);
        string("test", &mut metadata);
        string("node_count", &mut metadata);
        unsigned(6, node_count.into(), &mut metadata);
        string("record_size", &mut metadata);
        unsigned(5, 24, &mut metadata);
        string("ip_version", &mut metadata);
        unsigned(5, 4, &mut metadata);
        string("database_type", &mut metadata);
        string("GeoLite2-City", &mut metadata);
        string("languages", &mut metadata);
        control(11, 1, &mut metadata);
        string("en", &mut metadata);
        string("binary_format_major_version", &mut metadata);
        unsigned(5, 2, &mut metadata);
        string("binary_format_minor_version", &mut metadata);
        unsigned(5, 0, &mut metadata);
        string("build_epoch", &mut metadata);
        unsigned(9, 1_700_000_000, &mut metadata);
        file.extend_from_slice(&metadata);
        file
    }
}
