//! Anonymous visitor ids: the `user_id` given to an event sent without one, as
//! Plausible does it: a hash of a salt that changes every UTC day, the site, the
//! client's IP address and its User-Agent. No cookie is involved and the IP is
//! never stored; once a day's salt is deleted, nobody (us included) can tell
//! whether two ids of different days are the same visitor.
//!
//! **A visit across midnight.** As Plausible keeps the previous day's salt and
//! continues a session found under either salt's id, a visitor seen in the
//! last half hour of a UTC day ([`MIDNIGHT_WINDOW`], Plausible's session
//! timeout) keeps that day's id for the whole of the next day; anyone else gets
//! the new day's id. Concretely, for each anonymous event:
//!
//! - in the last half hour of its day, its id under the day's salt is recorded
//!   in [`LATE_VISITORS_COLLECTION`] (once per visitor and process);
//! - on the next day, its id under the previous day's salt is looked up there:
//!   found, that id is used (the visitor counts once on both days), else the
//!   new day's.
//!
//! Exact, across API processes and restarts: a late visitor is recorded before
//! its event is acknowledged. Cheap: outside that half hour nothing is written;
//! after midnight each process asks the database per event only during
//! [`SETTLE`], then reads the day's (short) list once and answers from memory.
//! Private: only ids are kept (hashes already in `events`), never an address or
//! a User-Agent, and they expire with the salts ([`SALT_LIFETIME`], TTL indexes
//! from [`ensure_indexes`], created by every process at its connection, so also
//! when no API runs). One visitor active around two midnights in a row is
//! carried over the first only: the previous day's salt is gone by the second.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::options::{CollectionOptions, IndexOptions};
use mongodb::{Collection, Database, IndexModel};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tracing::info;

use super::client_ip::client_ip;
use super::late_visitors::LateVisitors;
use crate::config::TrustedProxies;
use crate::storage::{StoreError, durable_write_concern, is_duplicate_key};

/// The collection holding one salt per UTC day: `{_id: "YYYY-MM-DD", salt: BinData, created_at}`.
pub const SALTS_COLLECTION: &str = "salts";
pub use super::late_visitors::LATE_VISITORS_COLLECTION;
/// How long a salt (and a late visitor) is kept: its day and the next, when
/// it may still be asked for; the TTL index deletes it then.
pub const SALT_LIFETIME: Duration = Duration::from_secs(48 * 3600);
/// The end of a day whose visitors keep their id into the next day: a session
/// ends after 30 minutes without an event, as Plausible's do.
pub const MIDNIGHT_WINDOW: Duration = Duration::from_secs(30 * 60);
/// How long after midnight a request of the day before may still be recording
/// a late visitor (its salt and writes are bounded by the ingest's 5 s
/// timeout; the rest is for clocks of API processes that differ a little).
pub const SETTLE: Duration = Duration::from_secs(60);
/// Bytes of a daily salt.
pub const SALT_BYTES: usize = 32;
/// Hex digits of an anonymous id (the first 128 bits of the SHA-256).
pub const ANONYMOUS_ID_HEX_DIGITS: usize = 32;

const DAY_MILLIS: i64 = 86_400_000;

/// A day's secret salt.
pub type Salt = [u8; SALT_BYTES];

/// The anonymous id of a visitor: hex of SHA-256 over the day's salt, the site,
/// the client's IP address and its User-Agent (raw bytes), truncated to
/// [`ANONYMOUS_ID_HEX_DIGITS`]. `client_ip` is `None` when the connection's peer
/// is unknown (the router driven without our serve loop).
pub fn anonymous_user_id(salt: &Salt, site_id: &str, client_ip: Option<IpAddr>, user_agent: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    // NUL separators keep the parts apart: site ids cannot hold control
    // characters, an address's text none either, and the User-Agent comes last.
    hasher.update(site_id.as_bytes());
    hasher.update([0]);
    if let Some(ip) = client_ip {
        hasher.update(ip.to_canonical().to_string().as_bytes());
    }
    hasher.update([0]);
    hasher.update(user_agent);
    let digest = hasher.finalize();
    digest[..ANONYMOUS_ID_HEX_DIGITS / 2].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The UTC day of `at`, as `YYYY-MM-DD` (the `_id` of its salt).
pub fn utc_day(at: DateTime) -> String {
    let text = at.try_to_rfc3339_string().unwrap_or_else(|_| "1970-01-01".to_string());
    text[..10].to_string()
}

/// Why a day's salt could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored salt is not what we write (changed by hand?): refuse rather
    /// than hash with something else than the other API processes.
    #[error("the salt stored in {SALTS_COLLECTION} for {day} is not {SALT_BYTES} bytes of binary data")]
    Malformed {
        /// The day whose salt is broken.
        day: String,
    },
}

/// A day's salt and, if there was one, the previous day's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySalts {
    /// The day's own.
    pub current: Salt,
    /// The day before's: ids under it continue visits across midnight.
    pub previous: Option<Salt>,
}

/// Creates the TTL indexes that delete salts and late visitors
/// [`SALT_LIFETIME`] after their creation, by the server itself: also when no
/// API runs to delete them. Idempotent; every process runs it at connection.
pub async fn ensure_indexes(database: &Database) -> Result<(), StoreError> {
    for collection in [SALTS_COLLECTION, LATE_VISITORS_COLLECTION] {
        let options = IndexOptions::builder().name("created_at_ttl".to_string()).expire_after(SALT_LIFETIME).build();
        let index = IndexModel::builder().keys(doc! { "created_at": 1 }).options(options).build();
        database.collection::<Document>(collection).create_index(index).await?;
    }
    Ok(())
}

/// The daily salts: created at random once per UTC day in the database (the
/// first API process to need it inserts it, the others read it), so every API
/// process and restart of a day agrees; cached in memory for the day with the
/// previous day's (read, never created). Salts older than yesterday are
/// deleted when a new day's is taken, and by the TTL index after [`SALT_LIFETIME`].
#[derive(Debug)]
pub struct DailySalts {
    collection: Collection<Document>,
    late_visitors: LateVisitors,
    today: Mutex<Option<(String, DaySalts)>>,
}

impl DailySalts {
    /// The salts kept in `database`'s [`SALTS_COLLECTION`] (journaled writes).
    pub fn new(database: &Database) -> DailySalts {
        let durable = durable_write_concern(database.write_concern().cloned());
        let options = CollectionOptions::builder().write_concern(durable).build();
        DailySalts {
            collection: database.collection_with_options(SALTS_COLLECTION, options),
            late_visitors: LateVisitors::new(database),
            today: Mutex::new(None),
        }
    }

    /// The salt of the UTC day `at` falls in.
    pub async fn salt_on(&self, at: DateTime) -> Result<Salt, SaltError> {
        Ok(self.salts_on(at).await?.current)
    }

    /// The salts of the UTC day `at` falls in and of the day before.
    pub async fn salts_on(&self, at: DateTime) -> Result<DaySalts, SaltError> {
        let day = utc_day(at);
        // Held while fetching: one request per process goes to the database at
        // the turn of the day, the others wait for its answer.
        let mut today = self.today.lock().await;
        if let Some((cached_day, salts)) = today.as_ref()
            && *cached_day == day
        {
            return Ok(*salts);
        }
        let current = self.fetch_or_create(&day).await?;
        let yesterday = day_before(at);
        let previous = match self.collection.find_one(doc! { "_id": &yesterday }).await.map_err(StoreError::from)? {
            // A broken previous salt only ends the visits across midnight.
            Some(stored) => stored_salt(&yesterday, &stored).ok(),
            None => None,
        };
        self.collection.delete_many(doc! { "_id": { "$lt": &yesterday } }).await.map_err(StoreError::from)?;
        self.late_visitors.forget_before(&yesterday).await?;
        let salts = DaySalts { current, previous };
        *today = Some((day, salts));
        Ok(salts)
    }

    /// Reads `day`'s salt, or inserts a new random one if there is none yet. Two
    /// processes inserting at once: one insert wins (same `_id`), the other
    /// reads the winner's.
    async fn fetch_or_create(&self, day: &str) -> Result<Salt, SaltError> {
        if let Some(stored) = self.collection.find_one(doc! { "_id": day }).await.map_err(StoreError::from)? {
            return stored_salt(day, &stored);
        }
        let salt: Salt = rand::random();
        let document = doc! {
            "_id": day,
            "salt": Binary { subtype: BinarySubtype::Generic, bytes: salt.to_vec() },
            "created_at": DateTime::now(),
        };
        match self.collection.insert_one(document).await {
            Ok(_) => {
                info!(day, "new daily salt for anonymous visitor ids");
                Ok(salt)
            }
            Err(error) if is_duplicate_key(&error) => {
                let stored = self.collection.find_one(doc! { "_id": day }).await.map_err(StoreError::from)?;
                stored.map_or_else(|| Err(SaltError::Malformed { day: day.to_string() }), |s| stored_salt(day, &s))
            }
            Err(error) => Err(StoreError::from(error).into()),
        }
    }
}

/// The UTC day before the one `at` falls in.
fn day_before(at: DateTime) -> String {
    utc_day(DateTime::from_millis(at.timestamp_millis() - DAY_MILLIS))
}

/// How long after the start of its UTC day `at` is.
fn since_midnight(at: DateTime) -> Duration {
    Duration::from_millis(at.timestamp_millis().rem_euclid(DAY_MILLIS) as u64)
}

fn stored_salt(day: &str, stored: &Document) -> Result<Salt, SaltError> {
    match stored.get("salt") {
        Some(Bson::Binary(binary)) => {
            binary.bytes.as_slice().try_into().map_err(|_| SaltError::Malformed { day: day.to_string() })
        }
        _ => Err(SaltError::Malformed { day: day.to_string() }),
    }
}

/// What the API needs to give anonymous visitors their id: the daily salts and
/// the trusted proxies.
#[derive(Debug)]
pub struct AnonymousVisitors {
    /// The salts, shared by every request of this process.
    pub salts: DailySalts,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl AnonymousVisitors {
    /// Anonymous ids from `database`'s salts, behind `trusted_proxies`.
    pub fn new(database: &Database, trusted_proxies: TrustedProxies) -> AnonymousVisitors {
        AnonymousVisitors { salts: DailySalts::new(database), trusted_proxies }
    }

    /// The anonymous id, today, of the client of a request to `site_id` that
    /// came from `peer` with `headers`: yesterday's id for a visitor seen in
    /// yesterday's last half hour (see the module's doc).
    pub async fn user_id(&self, site_id: &str, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<String, SaltError> {
        self.user_id_at(site_id, peer, headers, DateTime::now()).await
    }

    /// [`AnonymousVisitors::user_id`] for a request received at `at` (tests
    /// pass their own clock instead of waiting for midnight).
    pub async fn user_id_at(
        &self,
        site_id: &str,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        at: DateTime,
    ) -> Result<String, SaltError> {
        let salts = self.salts.salts_on(at).await?;
        let client = peer.map(|peer| client_ip(peer, headers, &self.trusted_proxies));
        let user_agent = headers.get(header::USER_AGENT).map_or(&[][..], |value| value.as_bytes());
        let id = anonymous_user_id(&salts.current, site_id, client, user_agent);
        let late_visitors = &self.salts.late_visitors;
        if since_midnight(at) + MIDNIGHT_WINDOW >= Duration::from_millis(DAY_MILLIS as u64) {
            late_visitors.note(&utc_day(at), &id).await?;
        }
        if let Some(previous) = salts.previous {
            let id_before_midnight = anonymous_user_id(&previous, site_id, client, user_agent);
            let settled = since_midnight(at) >= SETTLE;
            if late_visitors.was_seen(&day_before(at), &id_before_midnight, settled).await? {
                return Ok(id_before_midnight);
            }
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: Salt = [7; SALT_BYTES];
    const UA: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64)";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn same_inputs_give_the_same_hex_id() {
        let id = anonymous_user_id(&SALT, "site-001", Some(ip("203.0.113.7")), UA);
        assert_eq!(id, anonymous_user_id(&SALT, "site-001", Some(ip("203.0.113.7")), UA));
        assert_eq!(id.len(), ANONYMOUS_ID_HEX_DIGITS);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        assert!(!id.contains("203"), "the id does not spell the address");
    }

    #[test]
    fn any_changed_input_gives_another_id() {
        let base = anonymous_user_id(&SALT, "site-001", Some(ip("203.0.113.7")), UA);
        let others = [
            anonymous_user_id(&[8; SALT_BYTES], "site-001", Some(ip("203.0.113.7")), UA),
            anonymous_user_id(&SALT, "site-002", Some(ip("203.0.113.7")), UA),
            anonymous_user_id(&SALT, "site-001", Some(ip("203.0.113.8")), UA),
            anonymous_user_id(&SALT, "site-001", Some(ip("2001:db8::7")), UA),
            anonymous_user_id(&SALT, "site-001", None, UA),
            anonymous_user_id(&SALT, "site-001", Some(ip("203.0.113.7")), b"curl/8.0"),
            // The separators keep parts from sliding into each other.
            anonymous_user_id(&SALT, "site-0", Some(ip("203.0.113.7")), UA),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_visitor() {
        assert_eq!(
            anonymous_user_id(&SALT, "s", Some(ip("::ffff:203.0.113.7")), UA),
            anonymous_user_id(&SALT, "s", Some(ip("203.0.113.7")), UA)
        );
    }

    #[test]
    fn days_are_utc_dates() {
        let at = DateTime::parse_rfc3339_str("2024-05-01T23:59:59.999-02:00").unwrap();
        assert_eq!(utc_day(at), "2024-05-02");
        assert_eq!(utc_day(DateTime::from_millis(0)), "1970-01-01");
    }
}
