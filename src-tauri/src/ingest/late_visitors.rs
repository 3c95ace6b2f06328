//! The visitors seen in the last half hour of a UTC day ([`LateVisitors`]),
//! which [`super::anonymous_id`] asks after midnight so that a visit across it
//! keeps its visitor's id. Only ids are kept (hashes already stored with the
//! events), never an address or a User-Agent.

use std::collections::HashSet;
use std::sync::Mutex;

use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};

use crate::storage::{StoreError, is_duplicate_key};

/// The collection of late visitors: `{_id: "YYYY-MM-DD:<id>", created_at}`,
/// the id being the visitor's under that day's salt.
pub const LATE_VISITORS_COLLECTION: &str = "late_visitors";

/// How many late visitors a process keeps in memory per day (about 64 bytes
/// each); past it, it asks the database instead, which is exact but slower.
const REMEMBERED: usize = 200_000;

/// The late visitors of each day, as this process knows them.
#[derive(Debug)]
pub struct LateVisitors {
    collection: Collection<Document>,
    /// Those this process has recorded for the day: not written twice.
    noted: Mutex<Day>,
    /// The day before's, as read back: all of them once the day is settled.
    seen: Mutex<Day>,
}

#[derive(Debug, Default)]
struct Day {
    day: String,
    keys: HashSet<String>,
    /// Every key of the day is in `keys` (no need to ask the database).
    complete: bool,
    /// The day has more than [`REMEMBERED`]: do not try to load it again.
    too_many: bool,
}

impl Day {
    /// The entry for `day`, started afresh when the day changed.
    fn of(&mut self, day: &str) -> &mut Day {
        if self.day != day {
            *self = Day { day: day.to_string(), ..Day::default() };
        }
        self
    }
}

fn key(day: &str, id: &str) -> String {
    format!("{day}:{id}")
}

impl LateVisitors {
    /// The late visitors kept in `database`.
    pub fn new(database: &Database) -> LateVisitors {
        LateVisitors {
            collection: database.collection(LATE_VISITORS_COLLECTION),
            noted: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Records that the visitor `id` (under `day`'s salt) was seen late on
    /// `day`; once per process and visitor.
    pub async fn note(&self, day: &str, id: &str) -> Result<(), StoreError> {
        let key = key(day, id);
        if self.noted.lock().expect("late visitors lock").of(day).keys.contains(&key) {
            return Ok(());
        }
        let upsert = self
            .collection
            .update_one(doc! { "_id": &key }, doc! { "$setOnInsert": { "created_at": DateTime::now() } })
            .upsert(true)
            .await;
        match upsert {
            Ok(_) => {}
            // Two processes inserting it at once: it is there.
            Err(error) if is_duplicate_key(&error) => {}
            Err(error) => return Err(error.into()),
        }
        let mut noted = self.noted.lock().expect("late visitors lock");
        let noted = noted.of(day);
        if noted.keys.len() < REMEMBERED {
            noted.keys.insert(key);
        }
        Ok(())
    }

    /// True when the visitor `id` (under `day`'s salt) was seen late on `day`.
    /// `settled`: no request of `day` can still be recording one (see
    /// [`super::anonymous_id::SETTLE`]), so the day's list is read once and
    /// kept; before that, each question goes to the database.
    pub async fn was_seen(&self, day: &str, id: &str, settled: bool) -> Result<bool, StoreError> {
        let key = key(day, id);
        let load = {
            let mut seen = self.seen.lock().expect("late visitors lock");
            let seen = seen.of(day);
            if seen.keys.contains(&key) {
                return Ok(true);
            }
            if seen.complete {
                return Ok(false);
            }
            settled && !seen.too_many
        };
        if load {
            let keys = self.load_day(day).await?;
            let mut seen = self.seen.lock().expect("late visitors lock");
            let seen = seen.of(day);
            match keys {
                Some(keys) => {
                    seen.keys = keys;
                    seen.complete = true;
                    return Ok(seen.keys.contains(&key));
                }
                None => seen.too_many = true,
            }
        }
        let found = self.collection.find_one(doc! { "_id": &key }).await?.is_some();
        if found {
            let mut seen = self.seen.lock().expect("late visitors lock");
            let seen = seen.of(day);
            if seen.keys.len() < REMEMBERED {
                seen.keys.insert(key);
            }
        }
        Ok(found)
    }

    /// Every late visitor of `day`, or `None` past [`REMEMBERED`].
    async fn load_day(&self, day: &str) -> Result<Option<HashSet<String>>, StoreError> {
        // `;` follows `:`: the range holds exactly the keys "day:...".
        let range = doc! { "_id": { "$gte": format!("{day}:"), "$lt": format!("{day};") } };
        let mut cursor = self.collection.find(range).projection(doc! { "_id": 1 }).await?;
        let mut keys = HashSet::new();
        while cursor.advance().await? {
            if keys.len() == REMEMBERED {
                return Ok(None);
            }
            if let Ok(key) = cursor.current().get_str("_id") {
                keys.insert(key.to_string());
            }
        }
        Ok(Some(keys))
    }

    /// Deletes the late visitors of the days before `day` (no longer asked
    /// after). The TTL index does it too, also when no API runs.
    pub async fn forget_before(&self, day: &str) -> Result<(), StoreError> {
        self.collection.delete_many(doc! { "_id": { "$lt": format!("{day}:") } }).await?;
        Ok(())
    }
}
