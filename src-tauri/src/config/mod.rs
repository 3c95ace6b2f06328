//! Configuration: the service's settings, read from the environment (and a `.env`
//! file in the working directory) under the names and defaults of the original
//! Node service, and validated before anything starts.
//!
//! Also here: [`trusted_proxies`] (`TRUSTED_PROXIES`, parsed with the rest) and
//! [`desktop_settings`] (the desktop app's saved settings, which become a [`Config`]).

pub mod data_sets;
pub mod desktop_settings;
pub mod excluded_ips;
pub mod ip_list;
pub mod trusted_proxies;
pub mod url_secrets;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use mongodb::options::ConnectionString;

pub use data_sets::DataSets;
pub use excluded_ips::ExcludedIps;
pub use trusted_proxies::TrustedProxies;

/// The database used when `MONGO_URL` names none (`mongodb://host:27017/`).
pub const DEFAULT_DATABASE: &str = "analytics_db";
/// The collection processed events are moved into.
pub const EVENTS_COLLECTION: &str = "events";

/// Largest batch the worker may be asked to move at once; a batch is held in
/// memory and sent as one `insert_many`, so this bounds the worker's footprint.
pub const MAX_BATCH_SIZE: u32 = 100_000;
/// Longest poll interval accepted (one hour).
pub const MAX_POLL_MS: u64 = 3_600_000;
/// Largest `RETENTION_DAYS` (a hundred years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Default [`Config::stats_query_time_limit`]: below the API's own 30 s wait for
/// a stats answer, so the database gives up first and frees its work.
pub const DEFAULT_STATS_QUERY_TIME_LIMIT: Duration = Duration::from_secs(25);
/// Shortest `API_TOKEN` accepted.
pub const MIN_TOKEN_LENGTH: usize = 16;
/// Longest `BODY_DEADLINE_SECS` (an hour).
pub const MAX_BODY_DEADLINE_SECS: u64 = 3_600;
/// Largest `MAX_CONNECTIONS` and `MAX_CONNECTIONS_PER_CLIENT`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// Every setting of the engine. Built from the environment by [`Config::from_env`],
/// or directly (tests and the desktop app), in which case `port` 0 means "any free port".
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the API listens on (`HOST`, default `127.0.0.1`: loopback only).
    pub host: IpAddr,
    /// Port the API listens on (`PORT`, default 1000).
    pub port: u16,
    /// MongoDB connection string (`MONGO_URL`); may hold a password, so never print it raw:
    /// use [`Config::masked_mongo_url`].
    pub mongo_url: String,
    /// Database name, taken from the path of `MONGO_URL`.
    pub database: String,
    /// Queue collection the API writes to and the worker drains (`QUEUE_NAME`).
    pub queue_name: String,
    /// Most queue entries the worker moves per batch (`BATCH_SIZE`).
    pub batch_size: u32,
    /// How long the worker sleeps when the queue had less than a full batch (`POLL_MS`).
    pub poll_interval: Duration,
    /// Secret that `GET /stats` requires as `Authorization: Bearer …` (`API_TOKEN`);
    /// mandatory when `HOST` is not a loopback address. Never print it.
    pub api_token: Option<String>,
    /// Site ids `POST /event` accepts (`ALLOWED_SITES`, comma-separated); all when unset.
    pub allowed_sites: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` gives the client's address for anonymous
    /// visitor ids (`TRUSTED_PROXIES`, comma-separated IPs and CIDR ranges); none by default.
    pub trusted_proxies: TrustedProxies,
    /// Clients whose events are dropped at ingestion, never stored (`EXCLUDED_IPS`,
    /// comma-separated IPs and CIDR ranges, matched after `TRUSTED_PROXIES`): a
    /// person's own visits. None by default.
    pub excluded_ips: ExcludedIps,
    /// Days events are kept (`RETENTION_DAYS`); older ones are deleted by the
    /// worker, rollups included. Unset: kept for ever.
    pub retention_days: Option<u32>,
    /// Names the stats routes and `/metrics` answer besides loopback names and
    /// IP addresses (`PUBLIC_HOSTS`, comma-separated, each with or without a
    /// port): the guard against DNS rebinding.
    pub public_hosts: Vec<String>,
    /// Longest a request body may take to arrive in all (`BODY_DEADLINE_SECS`,
    /// default 30 s), however it trickles.
    pub body_deadline: Duration,
    /// Most connections open at once (`MAX_CONNECTIONS`, default 4096).
    pub max_connections: usize,
    /// Most connections open at once from one client address
    /// (`MAX_CONNECTIONS_PER_CLIENT`, default 512); trusted proxies are exempt.
    pub max_connections_per_client: usize,
    /// The server-side time limit (`maxTimeMS`) of every stats query: past it the
    /// database stops the query's work and the client gets a 504. Not read from
    /// the environment: the default suits every deployment; tests set a tiny one.
    pub stats_query_time_limit: Duration,
    /// The enrichment data sets' paths (`COUNTRY_DB`, `REFERRERS_DB`, `GEOIP_DB`).
    pub data_sets: DataSets,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 1000,
            mongo_url: format!("mongodb://localhost:27017/{DEFAULT_DATABASE}"),
            database: DEFAULT_DATABASE.to_string(),
            queue_name: "events_queue".to_string(),
            batch_size: 1000,
            poll_interval: Duration::from_millis(200),
            api_token: None,
            allowed_sites: None,
            trusted_proxies: TrustedProxies::default(),
            excluded_ips: ExcludedIps::default(),
            retention_days: None,
            public_hosts: Vec::new(),
            body_deadline: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_client: 512,
            stats_query_time_limit: DEFAULT_STATS_QUERY_TIME_LIMIT,
            data_sets: DataSets::default(),
        }
    }
}

/// A setting that cannot be used, naming the variable and what it accepts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value outside what it allows.
    #[error("invalid {var}={value:?}: {allowed}")]
    Invalid {
        /// The variable's name, as in the environment.
        var: &'static str,
        /// The value found (a MONGO_URL with its password masked).
        value: String,
        /// What the variable accepts.
        allowed: String,
    },
    /// The `.env` file exists but cannot be read or parsed.
    #[error("cannot read .env file: {0}")]
    EnvFile(#[from] dotenvy::Error),
}

impl Config {
    /// Reads the configuration from the process environment, after loading a
    /// `.env` file from the working directory if there is one. Variables already
    /// set in the environment win over the file, as with Node's `dotenv`.
    pub fn from_env() -> Result<Config, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds and validates a configuration from a variable lookup; an unset or
    /// empty variable takes its default (as `process.env.X || default` did).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let defaults = Config::default();

        let host = match var("HOST") {
            None => defaults.host,
            Some(v) => {
                v.parse().map_err(|_| invalid("HOST", &v, "expected an IP address such as 127.0.0.1 or 0.0.0.0"))?
            }
        };
        let port = match var("PORT") {
            None => defaults.port,
            Some(v) => whole_number("PORT", &v, 1..=u16::MAX, "")?,
        };
        let mongo_url = var("MONGO_URL").unwrap_or(defaults.mongo_url);
        let database = database_from_url(&mongo_url)?;
        let queue_name = match var("QUEUE_NAME") {
            None => defaults.queue_name,
            Some(v) => validate_collection_name(&v).map(|_| v.clone()).map_err(|why| invalid("QUEUE_NAME", &v, why))?,
        };
        let batch_size = match var("BATCH_SIZE") {
            None => defaults.batch_size,
            Some(v) => whole_number("BATCH_SIZE", &v, 1..=MAX_BATCH_SIZE, "")?,
        };
        let poll_interval = match var("POLL_MS") {
            None => defaults.poll_interval,
            Some(v) => Duration::from_millis(whole_number("POLL_MS", &v, 1..=MAX_POLL_MS, "milliseconds, ")?),
        };

        let api_token = match var("API_TOKEN") {
            None => None,
            Some(v) if v.len() >= MIN_TOKEN_LENGTH => Some(v),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: "API_TOKEN",
                    value: "****".into(),
                    allowed: format!("expected a secret of at least {MIN_TOKEN_LENGTH} characters"),
                });
            }
        };
        let allowed_sites = var("ALLOWED_SITES")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>());

        let trusted_proxies = match var("TRUSTED_PROXIES") {
            None => defaults.trusted_proxies,
            Some(v) => v.parse().map_err(|bad| {
                invalid(
                    "TRUSTED_PROXIES",
                    &v,
                    &format!(
                        "expected comma-separated IP addresses or CIDR ranges such as 10.0.0.1, 192.168.0.0/16 ({bad})"
                    ),
                )
            })?,
        };

        let excluded_ips = match var("EXCLUDED_IPS") {
            None => defaults.excluded_ips,
            Some(v) => v.parse().map_err(|bad| {
                invalid(
                    "EXCLUDED_IPS",
                    &v,
                    &format!(
                        "expected comma-separated IP addresses or CIDR ranges such as 203.0.113.7, 192.168.0.0/16 ({bad})"
                    ),
                )
            })?,
        };

        let retention_days = match var("RETENTION_DAYS") {
            None => None,
            Some(v) => Some(whole_number("RETENTION_DAYS", &v, 1..=MAX_RETENTION_DAYS, "days, ")?),
        };

        let public_hosts = match var("PUBLIC_HOSTS") {
            None => defaults.public_hosts,
            Some(v) => parse_public_hosts(&v).map_err(|bad| {
                invalid(
                    "PUBLIC_HOSTS",
                    &v,
                    &format!("expected comma-separated host names, each with an optional port, such as stats.example.com, stats.example.com:8443 ({bad:?} is not one)"),
                )
            })?,
        };
        let body_deadline = match var("BODY_DEADLINE_SECS") {
            None => defaults.body_deadline,
            Some(v) => {
                Duration::from_secs(whole_number("BODY_DEADLINE_SECS", &v, 1..=MAX_BODY_DEADLINE_SECS, "seconds, ")?)
            }
        };
        let max_connections = match var("MAX_CONNECTIONS") {
            None => defaults.max_connections,
            Some(v) => whole_number("MAX_CONNECTIONS", &v, 1..=MAX_CONNECTIONS_LIMIT, "")?,
        };
        let max_connections_per_client = match var("MAX_CONNECTIONS_PER_CLIENT") {
            None => defaults.max_connections_per_client,
            Some(v) => whole_number("MAX_CONNECTIONS_PER_CLIENT", &v, 1..=MAX_CONNECTIONS_LIMIT, "")?,
        };

        Ok(Config {
            host,
            port,
            mongo_url,
            database,
            queue_name,
            batch_size,
            poll_interval,
            api_token,
            allowed_sites,
            trusted_proxies,
            excluded_ips,
            retention_days,
            public_hosts,
            body_deadline,
            max_connections,
            max_connections_per_client,
            stats_query_time_limit: DEFAULT_STATS_QUERY_TIME_LIMIT,
            data_sets: DataSets::from_vars(var),
        })
    }

    /// Replaces the MongoDB URL, taking the database name from it.
    pub fn with_mongo_url(mut self, url: &str) -> Result<Config, ConfigError> {
        self.database = database_from_url(url)?;
        self.mongo_url = url.to_string();
        Ok(self)
    }

    /// The address the API binds.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// True when the API is reachable from other machines (not loopback only),
    /// which makes `API_TOKEN` mandatory.
    pub fn is_exposed(&self) -> bool {
        !self.host.is_loopback()
    }

    /// `MONGO_URL` with any password replaced by `****`, safe for logs and messages.
    pub fn masked_mongo_url(&self) -> String {
        mask_url_password(&self.mongo_url)
    }
}

// Hand-written so a password never reaches a log line through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("mongo_url", &self.masked_mongo_url())
            .field("database", &self.database)
            .field("queue_name", &self.queue_name)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("api_token", &self.api_token.as_ref().map(|_| "****"))
            .field("allowed_sites", &self.allowed_sites)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("excluded_ips", &self.excluded_ips)
            .field("public_hosts", &self.public_hosts)
            .field("body_deadline", &self.body_deadline)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_client", &self.max_connections_per_client)
            .field("data_sets", &self.data_sets)
            .finish()
    }
}

/// Parses `value` as a whole number within `range`, or says which are allowed
/// ("expected {unit}a whole number from A to B").
fn whole_number<T>(var: &'static str, value: &str, range: RangeInclusive<T>, unit: &str) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    match value.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            var,
            value,
            &format!("expected {unit}a whole number from {} to {}", range.start(), range.end()),
        )),
    }
}

/// Parses `PUBLIC_HOSTS`: host names (letters, digits, `-`, `.`) or bracketed
/// IPv6 addresses, each with an optional `:port`; returns the first bad entry.
fn parse_public_hosts(list: &str) -> Result<Vec<String>, String> {
    let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty());
    entries
        .map(|entry| {
            let (name, port) = match entry.rsplit_once(':') {
                Some((name, port)) if !entry.ends_with(']') => (name, Some(port)),
                _ => (entry, None),
            };
            let name_ok = (name.starts_with('[')
                && name.ends_with(']')
                && name[1..name.len() - 1].parse::<std::net::Ipv6Addr>().is_ok())
                || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
            if name_ok && port_ok { Ok(entry.to_ascii_lowercase()) } else { Err(entry.to_string()) }
        })
        .collect()
}

fn invalid(var: &'static str, value: &str, allowed: &str) -> ConfigError {
    ConfigError::Invalid { var, value: value.to_string(), allowed: allowed.to_string() }
}

/// Parses a MongoDB URL the way the driver will, and returns its database name
/// (or [`DEFAULT_DATABASE`] when the URL has none).
fn database_from_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why: String| ConfigError::Invalid {
        var: "MONGO_URL",
        value: mask_url_password(url),
        allowed: format!("expected a MongoDB connection string such as mongodb://localhost:27017/analytics_db ({why})"),
    };
    let parsed = ConnectionString::parse(url).map_err(|e| bad(e.kind.to_string()))?;
    let database = parsed.default_database.unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    validate_database_name(&database).map_err(|why| bad(why.to_string()))?;
    Ok(database)
}

fn validate_database_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 63 {
        return Err("the database name must be at most 63 bytes");
    }
    if name.chars().any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0')) {
        return Err("the database name must not contain / \\ . space \" $");
    }
    Ok(())
}

/// Checks a collection name against MongoDB's rules, and keeps the queue apart
/// from the events collection (draining a collection into itself would loop).
pub fn validate_collection_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 120 {
        return Err("expected a collection name of 1 to 120 bytes");
    }
    if name.contains('$') || name.contains('\0') || name.starts_with("system.") {
        return Err("a collection name must not contain '$' or NUL, nor start with 'system.'");
    }
    if name == EVENTS_COLLECTION {
        return Err("the queue must not be the 'events' collection");
    }
    Ok(())
}

/// The parts of `scheme://[user[:password]@]hosts[/database][?options]` that
/// masking, password handling and "is it this machine?" need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `mongodb` or `mongodb+srv`.
    pub scheme: &'a str,
    /// The user name, if any.
    pub user: Option<&'a str>,
    /// The password, if any; with its byte range in the URL.
    pub password: Option<(&'a str, std::ops::Range<usize>)>,
    /// `host[:port]`, comma-separated when several.
    pub hosts: &'a str,
}

/// Splits a connection string into [`UrlParts`]; `None` if it has no `://`.
pub fn url_parts(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let rest_start = scheme.len() + 3;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':').ok_or(u)) {
        None => (None, None),
        Some(Err(user)) => (Some(user), None),
        Some(Ok((user, password))) => {
            let start = rest_start + user.len() + 1;
            (Some(user), Some((password, start..start + password.len())))
        }
    };
    Some(UrlParts { scheme, user, password, hosts })
}

/// Replaces the password of `scheme://user:password@host/...` with `****`, and
/// every other secret the URL holds ([`url_secrets`]): all between `://` and the
/// last `@` when the URL does not parse, secret query options.
pub fn mask_url_password(url: &str) -> String {
    let masked = match url_parts(url).and_then(|parts| parts.password) {
        _ if !url_secrets::is_well_formed(url) => url_secrets::mask_whole_userinfo(url),
        Some((_, range)) => format!("{}****{}", &url[..range.start], &url[range.end..]),
        None => url.to_string(),
    };
    url_secrets::mask_query_secrets(&masked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn error_for(vars: &[(&str, &str)]) -> String {
        from(vars).expect_err("configuration should be refused").to_string()
    }

    #[test]
    fn defaults_are_the_original_services() {
        let c = from(&[]).unwrap();
        assert_eq!(c.port, 1000);
        assert_eq!(c.mongo_url, "mongodb://localhost:27017/analytics_db");
        assert_eq!(c.database, "analytics_db");
        assert_eq!(c.queue_name, "events_queue");
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.poll_interval, Duration::from_millis(200));
        assert_eq!(c.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn reads_every_variable_and_the_database_from_the_url() {
        let c = from(&[
            ("PORT", "8080"),
            ("MONGO_URL", "mongodb://db.example:27018/site_stats?retryWrites=true"),
            ("QUEUE_NAME", "q2"),
            ("BATCH_SIZE", "50"),
            ("POLL_MS", "25"),
            ("HOST", "0.0.0.0"),
            ("RETENTION_DAYS", "30"),
        ])
        .unwrap();
        assert_eq!(c.retention_days, Some(30));
        assert_eq!((c.port, c.database.as_str(), c.queue_name.as_str()), (8080, "site_stats", "q2"));
        assert_eq!((c.batch_size, c.poll_interval), (50, Duration::from_millis(25)));
        assert_eq!(c.listen_addr().to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn empty_values_take_the_default() {
        let c = from(&[("PORT", ""), ("BATCH_SIZE", "  ")]).unwrap();
        assert_eq!((c.port, c.batch_size), (1000, 1000));
    }

    #[test]
    fn url_without_database_uses_the_default_database() {
        let c = from(&[("MONGO_URL", "mongodb://127.0.0.1:27017")]).unwrap();
        assert_eq!(c.database, DEFAULT_DATABASE);
    }

    #[test]
    fn invalid_values_name_the_variable_and_what_is_allowed() {
        let cases: &[(&str, &str, &str)] = &[
            ("PORT", "0", "from 1 to 65535"),
            ("PORT", "abc", "from 1 to 65535"),
            ("PORT", "70000", "from 1 to 65535"),
            ("BATCH_SIZE", "0", "from 1 to 100000"),
            ("BATCH_SIZE", "-5", "from 1 to 100000"),
            ("POLL_MS", "0", "from 1 to 3600000"),
            ("POLL_MS", "fast", "from 1 to 3600000"),
            ("RETENTION_DAYS", "0", "from 1 to 36500"),
            ("RETENTION_DAYS", "a week", "from 1 to 36500"),
            ("MONGO_URL", "http://localhost/analytics", "MongoDB connection string"),
            ("MONGO_URL", "localhost:27017", "MongoDB connection string"),
            ("MONGO_URL", "mongodb://localhost:27017/bad.name", "MongoDB connection string"),
            ("QUEUE_NAME", "events", "must not be the 'events' collection"),
            ("QUEUE_NAME", "$cmd", "must not contain '$'"),
            ("HOST", "localhost:80", "IP address"),
            ("TRUSTED_PROXIES", "10.0.0.1, proxy.local", "\"proxy.local\" is neither an IP address nor a CIDR range"),
            ("TRUSTED_PROXIES", "10.0.0.0/40", "comma-separated IP addresses or CIDR ranges"),
        ];
        for (var, value, allowed) in cases {
            let message = error_for(&[(var, value)]);
            assert!(message.starts_with(&format!("invalid {var}=")), "{var}={value}: {message}");
            assert!(message.contains(allowed), "{var}={value}: {message}");
        }
    }

    #[test]
    fn token_and_allowed_sites() {
        let c = from(&[("API_TOKEN", "0123456789abcdef"), ("ALLOWED_SITES", " shop, blog ,,")]).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.allowed_sites, Some(vec!["shop".to_string(), "blog".to_string()]));
        assert!(!format!("{c:?}").contains("0123456789abcdef"), "the token is never printed");
        let message = error_for(&[("API_TOKEN", "short")]);
        assert_eq!(message, "invalid API_TOKEN=\"****\": expected a secret of at least 16 characters");
        assert!(!from(&[]).unwrap().is_exposed());
        assert!(from(&[("HOST", "0.0.0.0")]).unwrap().is_exposed());
    }

    #[test]
    fn trusted_proxies_are_addresses_and_ranges() {
        let c = from(&[("TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")]).unwrap();
        assert!(c.trusted_proxies.contains("192.168.3.4".parse().unwrap()));
        assert!(!c.trusted_proxies.contains("10.0.0.2".parse().unwrap()));
        assert!(from(&[]).unwrap().trusted_proxies.is_empty(), "no proxy is trusted by default");
    }

    #[test]
    fn passwords_are_masked_in_errors_and_debug_output() {
        let message = error_for(&[("MONGO_URL", "mongodb://admin:s3cret@host:27017/bad.name")]);
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("admin:****@host"), "{message}");

        let c = from(&[("MONGO_URL", "mongodb+srv://u:p%40ss@cluster0.example.net/db")]);
        // SRV needs DNS only when connecting; parsing must succeed.
        let c = c.unwrap();
        assert!(!format!("{c:?}").contains("p%40ss"));
        assert_eq!(c.masked_mongo_url(), "mongodb+srv://u:****@cluster0.example.net/db");
    }

    #[test]
    fn mask_leaves_urls_without_password_alone() {
        for url in ["mongodb://localhost:27017/db", "mongodb://user@host/db", "not a url"] {
            assert_eq!(mask_url_password(url), url);
        }
        assert_eq!(mask_url_password("mongodb://a:b@h1,h2/db"), "mongodb://a:****@h1,h2/db");
        // An unescaped ':' in the password: the driver refuses it, so all of it is hidden.
        assert_eq!(mask_url_password("mongodb://a:b:c@h/db"), "mongodb://****@h/db");
    }

    #[test]
    fn a_url_that_does_not_parse_shows_nothing_of_its_credentials() {
        let message = error_for(&[("MONGO_URL", "mongodb://admin:p@ss/word@db:27017/app")]);
        assert!(!message.contains("/word") && !message.contains("p@ss") && !message.contains("admin"), "{message}");
        assert!(message.contains("mongodb://****@db:27017/app"), "{message}");
        // Refused (our driver lacks the option's feature): the refusal quotes the URL.
        let message = error_for(&[("MONGO_URL", "mongodb://db/app?tls=true&tlsCertificateKeyFilePassword=k3y")]);
        assert!(!message.contains("k3y") && message.contains("tlsCertificateKeyFilePassword=****"), "{message}");
    }

    #[test]
    fn url_parts_split_user_password_and_hosts() {
        let parts = url_parts("mongodb://u:p%40ss@h1:1,h2/db?x=1").unwrap();
        assert_eq!((parts.scheme, parts.user, parts.hosts), ("mongodb", Some("u"), "h1:1,h2"));
        assert_eq!(parts.password.map(|(p, _)| p), Some("p%40ss"));
        let bare = url_parts("mongodb+srv://cluster0.example.net").unwrap();
        assert_eq!((bare.user, bare.password, bare.hosts), (None, None, "cluster0.example.net"));
        assert_eq!(url_parts("nonsense"), None);
    }

    #[test]
    fn public_hosts_and_connection_limits() {
        let c = from(&[]).unwrap();
        assert!(c.public_hosts.is_empty());
        assert_eq!(c.body_deadline, Duration::from_secs(30));
        assert_eq!((c.max_connections, c.max_connections_per_client), (4096, 512));

        let c = from(&[
            ("PUBLIC_HOSTS", " Stats.Example.com, other.example:8443,[::1]:1000 ,"),
            ("BODY_DEADLINE_SECS", "5"),
            ("MAX_CONNECTIONS", "100"),
            ("MAX_CONNECTIONS_PER_CLIENT", "7"),
        ])
        .unwrap();
        assert_eq!(c.public_hosts, ["stats.example.com", "other.example:8443", "[::1]:1000"]);
        assert_eq!(c.body_deadline, Duration::from_secs(5));
        assert_eq!((c.max_connections, c.max_connections_per_client), (100, 7));

        let bad_host = error_for(&[("PUBLIC_HOSTS", "stats.example.com, http://evil/")]);
        assert!(bad_host.contains("PUBLIC_HOSTS") && bad_host.contains("http://evil/"), "{bad_host}");
        assert!(error_for(&[("PUBLIC_HOSTS", "a.example:99999")]).contains("PUBLIC_HOSTS"));
        assert!(error_for(&[("BODY_DEADLINE_SECS", "0")]).contains("seconds, a whole number from 1 to 3600"));
        assert!(error_for(&[("MAX_CONNECTIONS", "lots")]).contains("MAX_CONNECTIONS"));
        assert!(error_for(&[("MAX_CONNECTIONS_PER_CLIENT", "0")]).contains("MAX_CONNECTIONS_PER_CLIENT"));
    }
}
