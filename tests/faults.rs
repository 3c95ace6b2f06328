//! Fault injection against the real `analytics-service` binary and a real
//! database: workers killed (SIGKILL) at random moments, several workers racing
//! on one queue, the API killed under load, and the database itself killed and
//! brought back under a running service. No mocks.
//!
//! Run with `--nocapture` to see the figures each test prints.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_desk::Config;
use analytics_desk::ingest::NewEvent;
use analytics_desk::rollups;
use analytics_desk::stats::{self, PathCount, SiteStats, StatsFilter, TypeCount};
use analytics_desk::storage::Store;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_analytics-service");
/// The queue collection every test here uses (not the default, so QUEUE_NAME is honoured too).
const QUEUE: &str = "faults_queue";
/// Events put in the queue for the worker tests.
const QUEUED_EVENTS: usize = 20_000;

/// Held by the two 20,000-event worker tests, which share the test database
/// server: run together on two cores, each slows the other's workers so much
/// that the random kills would mostly land before a worker's first batch.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// The service as a child process
// ---------------------------------------------------------------------------

/// A running `analytics-service` process. It is killed (SIGKILL) when dropped,
/// so no process outlives a failed test; and, through `PR_SET_PDEATHSIG`, when the
/// thread that started it dies (the test's own thread: services are only ever
/// started from a test's body), so none outlives a killed test binary either.
struct Service {
    name: String,
    pid: u32,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Service {
    /// Starts `analytics-service <mode>` with a clean configuration environment
    /// plus `vars`, in `log`'s directory (which holds no `.env`), appending its
    /// stderr to `log`.
    fn spawn(name: &str, mode: &str, vars: &[(&str, &str)], log: &Path) -> Service {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open service log");
        let mut command = tokio::process::Command::new(BINARY);
        command
            .arg(mode)
            .current_dir(log.parent().expect("log in a directory"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .env("RUST_LOG", "info");
        for var in ["PORT", "HOST", "MONGO_URL", "QUEUE_NAME", "BATCH_SIZE", "POLL_MS"] {
            command.env_remove(var);
        }
        command.envs(vars.iter().copied());
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl, which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start analytics-service");
        let pid = child.id().expect("a started child has a pid");
        Service { name: name.to_string(), pid, child, log: log.to_path_buf() }
    }

    /// Whether the process is still running (not exited by itself).
    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll child").is_none()
    }

    /// SIGKILL, and wait until the process is gone.
    async fn kill(&mut self) {
        self.child.kill().await.expect("kill -9 the service");
    }

    /// SIGTERM (a graceful stop), and the exit status within `limit`.
    async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet
        // (so the pid cannot have been reused).
        let sent = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {}", self.name);
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the service"),
            Err(_) => panic!("{} did not stop within {limit:?} of SIGTERM; log:\n{}", self.name, self.log_tail(40)),
        }
    }

    /// The whole log written so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The environment of a worker process on `url`.
fn worker_vars(url: &str, batch_size: u32, poll_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("MONGO_URL", url.to_string()),
        ("QUEUE_NAME", QUEUE.to_string()),
        ("BATCH_SIZE", batch_size.to_string()),
        ("POLL_MS", poll_ms.to_string()),
    ]
}

fn as_pairs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// An `analytics-service api` process on a fresh database, answering.
struct RunningApi {
    url: String,
    /// Holds the process's log; removed when the test ends.
    _dir: tempfile::TempDir,
    base: String,
    api: Service,
    http: reqwest::Client,
}

async fn start_api() -> RunningApi {
    let url = common::fresh_database_url();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let vars = [("PORT", port.as_str()), ("MONGO_URL", url.as_str()), ("QUEUE_NAME", QUEUE)];
    let mut api = Service::spawn("api", "api", &vars, &dir.path().join("api.log"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    wait_for_api(&http, &base, &mut api).await;
    RunningApi { url, _dir: dir, base, api, http }
}

/// Waits until the API at `base` answers `GET /stats` with a 200.
async fn wait_for_api(http: &reqwest::Client, base: &str, service: &mut Service) {
    let up = common::eventually(Duration::from_secs(30), || async {
        matches!(http.get(format!("{base}/stats?site_id=probe")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(up && service.is_running(), "the API did not come up at {base}; log:\n{}", service.log_tail(40));
}

// ---------------------------------------------------------------------------
// The database as the tests see it
// ---------------------------------------------------------------------------

/// A direct connection to the database of `url` (the service's own `Store`).
async fn connect(url: &str) -> Store {
    let config = Config { queue_name: QUEUE.to_string(), ..Config::default() }.with_mongo_url(url).expect("valid URL");
    Store::connect(&config).await.expect("test database reachable")
}

async fn count(collection: &mongodb::Collection<Document>) -> u64 {
    collection.count_documents(doc! {}).await.expect("count documents")
}

async fn all(collection: &mongodb::Collection<Document>) -> Vec<Document> {
    collection.find(doc! {}).await.expect("find").try_collect().await.expect("read documents")
}

/// Every `user_id` of a collection, with how many documents hold it.
async fn user_id_counts(collection: &mongodb::Collection<Document>) -> HashMap<String, usize> {
    let documents: Vec<Document> = collection
        .find(doc! {})
        .projection(doc! { "user_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read documents");
    let mut counts = HashMap::new();
    for document in documents {
        *counts.entry(document.get_str("user_id").expect("user_id").to_string()).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------
// Events: generated, queued, and checked against an independent computation
// ---------------------------------------------------------------------------

const SITES: [&str; 4] = ["site-alpha", "site-beta", "site-gamma", "site-delta"];
const PATHS: usize = 14; // more than stats::TOP_PATHS, so the cut-off matters
const USERS: u32 = 500;

/// `n` queue documents exactly as the API makes them (`NewEvent::into_queue_document`:
/// `_id`, site_id, event_type, path, user_id, timestamp, ingested_at), over
/// unevenly used sites, paths and users (users shared between sites).
fn generate_events(n: usize, rng: &mut StdRng) -> Vec<Document> {
    let week_ago = DateTime::now().timestamp_millis() - 7 * 86_400_000;
    (0..n)
        .map(|_| {
            let site = match rng.random_range(0..10) {
                0..=3 => SITES[0],
                4..=6 => SITES[1],
                7..=8 => SITES[2],
                _ => SITES[3],
            };
            // The smaller of two draws: low-numbered pages are visited more.
            let page = rng.random_range(0..PATHS).min(rng.random_range(0..PATHS));
            let event = NewEvent {
                site_id: site.to_string(),
                event_type: if rng.random_bool(0.8) { "page_view" } else { "click" }.to_string(),
                path: format!("/page-{page:02}"),
                user_id: Some(format!("user-{}", rng.random_range(0..USERS))),
                event_id: None,
                timestamp: Some(DateTime::from_millis(week_ago + rng.random_range(0..7 * 86_400_000))),
                context: Default::default(),
            };
            event.into_queue_document(ObjectId::new(), DateTime::now()).expect("the event has a user_id")
        })
        .collect()
}

/// Puts `events` straight into the queue collection, in chunks.
async fn enqueue(store: &Store, events: &[Document]) {
    for chunk in events.chunks(2_000) {
        store.queue().insert_many(chunk.to_vec()).await.expect("queue a chunk");
    }
    assert_eq!(count(store.queue()).await, events.len() as u64, "every generated event is queued");
}

/// Each site's stats computed here, from the queued documents, without the database.
fn expected_stats(events: &[Document]) -> BTreeMap<String, SiteStats> {
    #[derive(Default)]
    struct Site {
        events: u64,
        users: HashSet<String>,
        paths: HashMap<String, u64>,
        types: HashMap<String, u64>,
    }
    let mut per_site: BTreeMap<String, Site> = BTreeMap::new();
    for event in events {
        let site = per_site.entry(event.get_str("site_id").unwrap().to_string()).or_default();
        site.events += 1;
        site.users.insert(event.get_str("user_id").unwrap().to_string());
        *site.paths.entry(event.get_str("path").unwrap().to_string()).or_insert(0) += 1;
        *site.types.entry(event.get_str("event_type").unwrap().to_string()).or_insert(0) += 1;
    }
    per_site
        .into_iter()
        .map(|(site, Site { events: total_events, users, paths, types })| {
            let mut top_paths: Vec<PathCount> =
                paths.into_iter().map(|(path, count)| PathCount { path, count }).collect();
            top_paths.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
            top_paths.truncate(stats::TOP_PATHS);
            let mut events_by_type: Vec<TypeCount> =
                types.into_iter().map(|(event_type, count)| TypeCount { event_type, count }).collect();
            events_by_type.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.event_type.cmp(&b.event_type)));
            (
                site,
                SiteStats {
                    total_events,
                    unique_users: users.len() as u64,
                    top_paths,
                    events_by_type,
                    ..SiteStats::default()
                },
            )
        })
        .collect()
}

/// The queue is empty and `events` holds exactly the `queued` documents, each
/// once, unchanged but for `processed_at` (set, and not before `since`); and the
/// stats module agrees, site by site, with a count made here.
async fn assert_moved_exactly_once(store: &Store, queued: &[Document], since: DateTime) {
    assert_eq!(count(store.queue()).await, 0, "the queue is empty");

    let events = all(store.events()).await;
    let mut by_id: HashMap<ObjectId, &Document> = HashMap::with_capacity(events.len());
    let mut doubled = Vec::new();
    for event in &events {
        let id = event.get_object_id("_id").expect("ObjectId _id");
        if by_id.insert(id, event).is_some() {
            doubled.push(id);
        }
    }
    let queued_ids: HashSet<ObjectId> = queued.iter().map(|e| e.get_object_id("_id").unwrap()).collect();
    let lost: Vec<&ObjectId> = queued_ids.iter().filter(|id| !by_id.contains_key(id)).collect();
    let unknown: Vec<&ObjectId> = by_id.keys().filter(|id| !queued_ids.contains(id)).collect();
    assert!(
        doubled.is_empty(),
        "{} events are in `events` twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    assert!(
        lost.is_empty(),
        "{} queued events never reached `events`, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        unknown.is_empty(),
        "{} events in `events` were never queued, e.g. {:?}",
        unknown.len(),
        &unknown[..unknown.len().min(5)]
    );
    assert_eq!(events.len(), queued.len(), "events count == queued count");

    let now = DateTime::now();
    for original in queued {
        let moved = by_id[&original.get_object_id("_id").unwrap()];
        let processed_at = moved.get_datetime("processed_at").unwrap_or_else(|_| panic!("no processed_at in {moved}"));
        assert!(*processed_at >= since && *processed_at <= now, "processed_at {processed_at} outside the run");
        let mut without = moved.clone();
        without.remove("processed_at");
        // Its visit (docs/visits.md §2), kept where transactions are.
        without.remove("visit_id");
        assert_eq!(&without, original, "an event is stored exactly as it was queued, plus processed_at");
    }

    // Where the worker keeps rollups (transactions), they must agree exactly
    // with the count made here after every kill; and so must the plain aggregation.
    let expected = expected_stats(queued);
    let transactional = store.supports_transactions().await.expect("hello");
    assert_eq!(rollups::are_ready(store).await.expect("meta"), transactional, "rollups ready iff transactions");
    if transactional {
        // Every event in exactly one visit, whatever was killed: none counted twice.
        let visits = store.database().collection::<Document>(rollups::visits::VISITS);
        let sums = [doc! { "$group": { "_id": null, "events": { "$sum": "$events" } } }];
        let sum: Vec<Document> = visits.aggregate(sums).await.expect("sum").try_collect().await.expect("read");
        let in_visits = sum.first().map_or(0, |s| s.get_i64("events").unwrap_or(0));
        assert_eq!(in_visits, events.len() as i64, "events counted in visits");
        assert!(events.iter().all(|e| e.get_object_id("visit_id").is_ok()), "every event carries its visit");
    }
    for (site, want) in &expected {
        let filter = StatsFilter::site(site);
        let got = stats::site_stats(store, &filter).await.expect("site stats");
        assert_eq!(&got, want, "stats of {site} differ from the independent count");
        let plain = stats::plain_site_stats(store, &filter).await.expect("plain stats");
        assert_eq!(&plain, want, "plain stats of {site} differ from the independent count");
    }
    let sites: BTreeMap<String, u64> =
        stats::sites(store).await.expect("sites").into_iter().map(|s| (s.site_id, s.events)).collect();
    let want: BTreeMap<String, u64> = expected.iter().map(|(site, s)| (site.clone(), s.total_events)).collect();
    assert_eq!(sites, want, "the per-site totals of stats::sites");
}

/// Whether the head of the queue (the next batch) is already partly or wholly in
/// `events`: the worker was killed after its insert began and before its delete ended.
async fn head_batch_already_moved(store: &Store, batch_size: u32) -> u64 {
    let head: Vec<Document> = store
        .queue()
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .limit(i64::from(batch_size))
        .projection(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read");
    let ids: Vec<_> = head.iter().map(|d| d.get("_id").unwrap().clone()).collect();
    store.events().count_documents(doc! { "_id": { "$in": ids } }).await.expect("count")
}

/// A fresh database whose queue holds [`QUEUED_EVENTS`] random events.
struct Seeded {
    /// The random seed, printed so a failure can be replayed.
    seed: u64,
    url: String,
    store: Store,
    queued: Vec<Document>,
    /// When the events were queued: every `processed_at` must come after.
    since: DateTime,
    /// The seeded generator, for any further random choices of the test.
    rng: StdRng,
}

/// The database at `url`, its queue holding [`QUEUED_EVENTS`] random events.
async fn seeded_queue_at(url: String) -> Seeded {
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let store = connect(&url).await;
    let queued = generate_events(QUEUED_EVENTS, &mut rng);
    enqueue(&store, &queued).await;
    Seeded { seed, url, store, queued, since: DateTime::now(), rng }
}

// ---------------------------------------------------------------------------
// 1. One worker, killed again and again
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_moments_loses_and_doubles_nothing() {
    let _heavy = HEAVY.lock().await;
    kill_a_worker_again_and_again(common::fresh_database_url()).await;
}

/// The same on a deployment without transactions (SecantusDB presenting itself
/// as a standalone server, as a plain `mongod` does): the idempotent move, whose
/// re-run path the kills must exercise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_transactions_a_worker_killed_at_random_moments_loses_and_doubles_nothing() {
    let _heavy = HEAVY.lock().await;
    kill_a_worker_again_and_again(common::with_database(common::standalone_server_url(), "faults_standalone")).await;
}

/// Kills a worker draining a seeded queue at `url` at random moments, again and
/// again (the queue filled again whenever it runs dry), until enough kills have
/// hit a worker with work in flight; then lets one run finish, and checks every
/// event was moved exactly once and the stats are exact. With transactions, no
/// kill may leave a batch half moved, and the next workers must end the killed
/// ones' sessions; without, some kills must land between a batch's insert and its
/// delete (or the re-run path went untested).
///
/// Whether a kill finds work does not hang on the machine's speed: most runs are
/// killed a random moment after they were seen moving the queue, and the killing
/// goes on until the counts are reached, bounded in time and in kills.
async fn kill_a_worker_again_and_again(url: String) {
    const BATCH: u32 = 500;
    /// Kills in all, at least.
    const MIN_KILLS: usize = 25;
    /// Kills that must hit a worker with work in flight: that run had moved part
    /// of the queue (or was killed mid-batch), and events were still queued after.
    const MIN_KILLS_WITH_WORK: usize = 20;
    /// Without transactions, kills wanted between a batch's insert and its delete.
    const TORN_BATCHES_WANTED: usize = 3;
    /// The bounds of the killing, however slow the machine.
    const KILLING_LIMIT: Duration = Duration::from_secs(300);
    const MAX_KILLS: usize = 250;
    /// Times the queue is filled again when the runs empty it before the counts
    /// are reached (a faster worker drains it in a few runs).
    const MAX_REFILLS: usize = 10;
    /// How long a run may take to start moving the queue before it is killed
    /// anyway (with transactions, a run waits for the previous one's abandoned
    /// transaction to be ended: about `worker::DEAD_AFTER`).
    const FIRST_MOVE_LIMIT: Duration = Duration::from_secs(30);
    /// The share of runs killed at a random moment of their start (30–400 ms after
    /// it, whatever they were doing); the others are killed 0–300 ms after they
    /// were seen moving the queue.
    const START_UP_KILLS: f64 = 0.25;
    let started = Instant::now();
    let Seeded { seed, url, store, mut queued, since, mut rng } = seeded_queue_at(url).await;
    let transactional = store.supports_transactions().await.expect("hello");
    let queued_in = started.elapsed();
    // Where each run registers its sessions (with transactions), under its pid.
    let registered = || async {
        let workers = store.database().collection::<Document>(analytics_desk::worker::WORKERS_COLLECTION);
        let entries = all(&workers).await;
        entries.iter().filter_map(|w| w.get_i64("pid").ok()).collect::<HashSet<i64>>()
    };

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let vars = worker_vars(&url, BATCH, 10);

    let (mut kills, mut kills_while_queued, mut kills_with_work, mut kills_mid_batch) =
        (0usize, 0usize, 0usize, 0usize);
    let mut refills = 0;
    let mut left_after_kill = Vec::new();
    let mut previous = (QUEUED_EVENTS as u64, 0);
    // Killed runs seen registered; those no longer registered had their sessions
    // (and any transaction they left open) ended by a later run.
    let mut killed_and_registered: HashSet<i64> = HashSet::new();
    let mut sessions_ended = 0;
    let killing_started = Instant::now();
    loop {
        let queued_before = count(store.queue()).await;
        let mut worker = Service::spawn("worker", "worker", &as_pairs(&vars), &log);
        if rng.random_bool(START_UP_KILLS) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(30..=400))).await;
        } else {
            let moving =
                common::eventually(FIRST_MOVE_LIMIT, || async { count(store.queue()).await < queued_before }).await;
            if moving {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..=300))).await;
            }
        }
        assert!(worker.is_running(), "the worker exited by itself; log:\n{}", worker.log_tail(40));
        worker.kill().await;
        kills += 1;
        let left = count(store.queue()).await;
        left_after_kill.push(left);
        if left > 0 {
            kills_while_queued += 1;
            // Counted once per torn batch: a run killed before it got to redo the
            // previous run's torn batch leaves the same state behind.
            let state = (left, head_batch_already_moved(&store, BATCH).await);
            let torn_now = state.1 > 0 && state != previous;
            if torn_now {
                kills_mid_batch += 1;
            }
            previous = state;
            if left < queued_before || torn_now {
                kills_with_work += 1;
            }
        }
        if transactional {
            let now_registered = registered().await;
            if now_registered.contains(&i64::from(worker.pid)) {
                killed_and_registered.insert(i64::from(worker.pid));
            }
            sessions_ended = killed_and_registered.difference(&now_registered).count();
        }

        let exercised = kills >= MIN_KILLS
            && kills_with_work >= MIN_KILLS_WITH_WORK
            && if transactional { sessions_ended >= 1 } else { kills_mid_batch >= TORN_BATCHES_WANTED };
        if exercised || kills >= MAX_KILLS || killing_started.elapsed() > KILLING_LIMIT {
            break;
        }
        if left == 0 {
            if refills == MAX_REFILLS {
                break;
            }
            let more = generate_events(QUEUED_EVENTS, &mut rng);
            enqueue(&store, &more).await;
            queued.extend(more);
            refills += 1;
        }
    }
    let killing_took = killing_started.elapsed();

    // Then one last run, left to empty the queue, and stopped gracefully.
    let drain_started = Instant::now();
    let left_before_drain = count(store.queue()).await;
    let mut worker = Service::spawn("worker", "worker", &as_pairs(&vars), &log);
    let drained = common::eventually(Duration::from_secs(60), || async { count(store.queue()).await == 0 }).await;
    assert!(drained, "the last worker run did not empty the queue; log:\n{}", worker.log_tail(40));
    let drain_took = drain_started.elapsed();
    // The service handles SIGTERM from its start (during start-up too): if the
    // queue was already empty, wait until it has its handler before asking it to stop.
    let pid = worker.pid;
    let catches =
        tokio::task::spawn_blocking(move || common::wait_until_it_catches_sigterm(pid, Duration::from_secs(30)));
    assert!(catches.await.unwrap(), "the last worker run never handled SIGTERM; log:\n{}", worker.log_tail(40));
    let status = worker.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "the worker stops cleanly on SIGTERM: {status:?}");
    if transactional {
        sessions_ended = killed_and_registered.difference(&registered().await).count();
    }

    let reached = format!(
        "{kills} kills in {killing_took:.1?} (limits {KILLING_LIMIT:?}, {MAX_KILLS} kills), {kills_with_work} with work \
         in flight, {kills_while_queued} with events still queued, {kills_mid_batch} between a batch's insert and its \
         delete, {sessions_ended} killed runs' sessions ended by a later run, queue filled again {refills} times (at \
         most {MAX_REFILLS})"
    );
    eprintln!(
        "[faults] killed worker (transactions: {transactional}): seed {seed}, {QUEUED_EVENTS} events queued in \
         {queued_in:.1?}; {reached}; queue depth after each kill {left_after_kill:?}; last run moved \
         {left_before_drain} in {drain_took:.1?}; batches logged {}",
        worker.log_text().matches("Processing batch...").count()
    );
    assert!(kills >= MIN_KILLS, "fewer than {MIN_KILLS} kills: {reached}");
    assert!(
        kills_with_work >= MIN_KILLS_WITH_WORK,
        "fewer than {MIN_KILLS_WITH_WORK} kills hit a worker with work in flight: {reached}"
    );
    if transactional {
        assert_eq!(kills_mid_batch, 0, "a batch was left half moved although it ran in a transaction");
        assert!(
            sessions_ended >= 1,
            "no killed worker's session was ended by the next: the abandoned-transaction path was not exercised: \
             {reached}"
        );
    } else {
        assert!(
            kills_mid_batch >= 1,
            "no kill landed between a batch's insert and its delete: the re-run path was not exercised: {reached}"
        );
    }
    assert!(
        (left_before_drain as usize) < queued.len(),
        "the killed workers moved nothing at all: every run died before its first batch"
    );

    assert_moved_exactly_once(&store, &queued, since).await;
    eprintln!("[faults] killed worker (transactions: {transactional}): checked in {:.1?} overall", started.elapsed());
    store.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Four workers on one queue
// ---------------------------------------------------------------------------

#[tokio::test]
async fn four_workers_draining_one_queue_lose_and_double_nothing() {
    const WORKERS: usize = 4;
    const BATCH: u32 = 500;
    let _heavy = HEAVY.lock().await;
    let started = Instant::now();
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let url = common::fresh_database_url();
    let store = connect(&url).await;

    // Four processes, each with its worker (and an API nobody sends events to):
    // their `/health` tells when the worker runs, their `/metrics` what it moved.
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let mut workers: Vec<(Service, String)> = (0..WORKERS)
        .map(|i| {
            let port = common::free_port();
            let mut vars = worker_vars(&url, BATCH, 10);
            vars.push(("PORT", port.to_string()));
            let log = dir.path().join(format!("worker-{i}.log"));
            (Service::spawn(&format!("worker {i}"), "all", &as_pairs(&vars), &log), format!("http://127.0.0.1:{port}"))
        })
        .collect();
    // Every worker polls the (empty) queue before the events arrive: all can take
    // part, however long each took to start.
    for (worker, base) in &mut workers {
        let running = common::eventually(Duration::from_secs(60), || async {
            let health = http.get(format!("{base}/health")).send().await;
            match health {
                Ok(response) => response.json::<Value>().await.is_ok_and(|h| h["worker"] == "running"),
                Err(_) => false,
            }
        })
        .await;
        assert!(running, "{} never reported its worker running; log:\n{}", worker.name, worker.log_tail(40));
    }

    let queued = generate_events(QUEUED_EVENTS, &mut rng);
    let since = DateTime::now();
    let drain_started = Instant::now();
    for chunk in queued.chunks(2_000) {
        store.queue().insert_many(chunk.to_vec()).await.expect("queue a chunk");
    }
    // Steady progress is what is asserted, not a speed: visits are kept by one
    // batch at a time (docs/visits.md), so four workers drain at about one's
    // rate. The queue must shrink within every 60 s, and be empty within 10 min.
    let mut left = count(store.queue()).await;
    let mut drained = left == 0;
    while !drained && drain_started.elapsed() < Duration::from_secs(600) {
        let before = left;
        let shrank =
            common::eventually(Duration::from_secs(60), || async { count(store.queue()).await < before }).await;
        if !shrank {
            break;
        }
        left = count(store.queue()).await;
        drained = left == 0;
    }
    let drain_took = drain_started.elapsed();
    let logs: Vec<String> = workers.iter().map(|(w, _)| format!("--- {}:\n{}", w.name, w.log_tail(15))).collect();
    assert!(
        drained,
        "four workers stopped making progress ({left} still queued after {drain_took:?}); logs:\n{}",
        logs.join("\n")
    );

    // Each worker's own count: events and batches it moved, transactions that conflicted.
    let mut moved = Vec::new();
    for (worker, base) in &mut workers {
        assert!(worker.is_running(), "{} exited by itself; log:\n{}", worker.name, worker.log_tail(40));
        let metrics = metrics_text(&http, base).await;
        let counter = |name: &str| counter(&metrics, name, &worker.name);
        moved.push((
            counter("analytics_events_processed_total"),
            counter("analytics_batches_processed_total"),
            counter("analytics_batch_conflicts_total"),
        ));
    }
    for (worker, _) in &mut workers {
        let status = worker.terminate(Duration::from_secs(10)).await;
        assert!(status.success(), "{} stops cleanly on SIGTERM: {status:?}", worker.name);
    }

    let events: Vec<u64> = moved.iter().map(|m| m.0).collect();
    let batches: Vec<u64> = moved.iter().map(|m| m.1).collect();
    let conflicts: Vec<u64> = moved.iter().map(|m| m.2).collect();
    let total: u64 = batches.iter().sum();
    let minimum = QUEUED_EVENTS.div_ceil(BATCH as usize) as u64;
    eprintln!(
        "[faults] four workers: seed {seed}, {QUEUED_EVENTS} events drained in {drain_took:.1?}; events per worker \
         {events:?}, batches per worker {batches:?} = {total} (at least {minimum} needed), transactions that \
         conflicted (retried or left to another) {conflicts:?} = {}",
        conflicts.iter().sum::<u64>()
    );
    assert_eq!(events.iter().sum::<u64>(), QUEUED_EVENTS as u64, "the workers' own counts add up to the queue");
    assert!(total >= minimum, "the workers moved {total} batches, fewer than the {minimum} the queue needs");
    // Workers take turns (their transactions meet on the queue's head and the
    // sites' counters): one may move every batch while the others' attempts
    // conflict and leave the queue to it. So what is checked is that they took part.
    let tried = moved.iter().filter(|(_, batches, conflicts)| batches + conflicts > 0).count();
    assert!(
        tried >= 2,
        "only {tried} of the {WORKERS} workers moved a batch or met another's: they did not drain concurrently"
    );

    assert_moved_exactly_once(&store, &queued, since).await;
    eprintln!("[faults] four workers: checked in {:.1?} overall", started.elapsed());
    store.shutdown().await;
}

// ---------------------------------------------------------------------------
// HTTP load
// ---------------------------------------------------------------------------

/// What became of one `POST /event`.
#[derive(Debug, Clone)]
enum Outcome {
    /// 200 `{"status":"queued"}`: the event is acknowledged.
    Queued,
    /// Any other HTTP answer.
    Answered { status: u16, body: String },
    /// No complete answer (connection refused or broken, or the client's timeout).
    NoAnswer(String),
}

/// One request sent by a test.
#[derive(Debug, Clone)]
struct Sent {
    user_id: String,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
}

impl Sent {
    fn took(&self) -> Duration {
        self.finished - self.started
    }
}

/// Posts one event whose `user_id` is `user_id` (unique per request).
async fn post_event(http: &reqwest::Client, base: &str, user_id: String) -> Sent {
    let body = json!({ "site_id": "site-faults", "event_type": "page_view", "path": "/load", "user_id": user_id });
    let started = Instant::now();
    let outcome = match http.post(format!("{base}/event")).json(&body).send().await {
        Err(error) => Outcome::NoAnswer(error.to_string()),
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Err(error) => Outcome::NoAnswer(format!("{status} with a broken body: {error}")),
                Ok(text) => {
                    if status == 200 && serde_json::from_str::<Value>(&text).ok() == Some(json!({ "status": "queued" }))
                    {
                        Outcome::Queued
                    } else {
                        Outcome::Answered { status, body: text }
                    }
                }
            }
        }
    };
    Sent { user_id, started, finished: Instant::now(), outcome }
}

/// Concurrent senders posting events in a loop, each request logged as [`Sent`].
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `senders` tasks posting to `base` (pausing `pause` between posts)
    /// until stopped or `limit` passes; with `stop_on_no_answer`, a sender also
    /// stops at its first request that gets no answer.
    fn start(
        http: &reqwest::Client,
        base: &str,
        senders: usize,
        pause: Duration,
        limit: Duration,
        stop_on_no_answer: bool,
    ) -> Load {
        let deadline = Instant::now() + limit;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let senders = (0..senders)
            .map(|sender| {
                let (http, base, stop, sent) = (http.clone(), base.to_string(), stop.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let user_id = format!("sender{sender}-{n}-{:08x}", rand::random::<u32>());
                        let request = post_event(&http, &base, user_id).await;
                        n += 1;
                        let no_answer = matches!(request.outcome, Outcome::NoAnswer(_));
                        sent.lock().unwrap().push(request);
                        if no_answer && stop_on_no_answer {
                            break;
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, sent, senders }
    }

    /// The requests answered (or failed) so far.
    fn sent(&self) -> std::sync::MutexGuard<'_, Vec<Sent>> {
        self.sent.lock().unwrap()
    }

    /// How many of them were acknowledged (200 queued).
    fn acknowledged(&self) -> usize {
        self.sent().iter().filter(|s| matches!(s.outcome, Outcome::Queued)).count()
    }

    /// Waits for every sender to finish by itself (bounded by the `limit` given at start).
    async fn finish(self) -> Vec<Sent> {
        for sender in self.senders {
            sender.await.expect("sender task");
        }
        self.sent.lock().unwrap().clone()
    }

    /// Stops the senders after their request in flight, and returns every request.
    async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        self.finish().await
    }
}

// ---------------------------------------------------------------------------
// 3. The API killed under load
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_under_load_keeps_every_acknowledged_event() {
    const SENDERS: usize = 16;
    /// Events acknowledged before the kill, at least.
    const ACKNOWLEDGED_BEFORE_KILL: usize = 100;
    let RunningApi { url, _dir, base, mut api, http } = start_api().await;
    let store = connect(&url).await;

    let load = Load::start(&http, &base, SENDERS, Duration::ZERO, Duration::from_secs(60), true);
    // Killed under load, once that many events are acknowledged (however long it takes).
    let loaded =
        common::eventually(Duration::from_secs(30), || async { load.acknowledged() >= ACKNOWLEDGED_BEFORE_KILL }).await;
    assert!(
        loaded,
        "only {} of {} requests acknowledged in 30 s before the kill; log:\n{}",
        load.acknowledged(),
        load.sent().len(),
        api.log_tail(40)
    );
    assert!(api.is_running(), "the API died before it was killed; log:\n{}", api.log_tail(40));
    api.kill().await;
    let killed = Instant::now();
    let sent = load.finish().await; // every sender stops at its first request left unanswered

    let stored = user_id_counts(store.queue()).await;
    let sent_ids: HashSet<&str> = sent.iter().map(|s| s.user_id.as_str()).collect();
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| matches!(s.outcome, Outcome::Queued)).collect();
    let other_answers: Vec<&Sent> = sent.iter().filter(|s| matches!(s.outcome, Outcome::Answered { .. })).collect();
    let unanswered: Vec<&Sent> = sent.iter().filter(|s| matches!(s.outcome, Outcome::NoAnswer(_))).collect();
    let unanswered_stored = unanswered.iter().filter(|s| stored.contains_key(&s.user_id)).count();
    let in_flight_at_kill = unanswered.iter().filter(|s| s.started < killed).count();
    let sample_error = unanswered.iter().find_map(|s| match &s.outcome {
        Outcome::NoAnswer(error) => Some(error.as_str()),
        _ => None,
    });
    eprintln!(
        "[faults] API killed: {} requests from {SENDERS} senders, {} acknowledged, {} other answers, {} \
         without an answer ({in_flight_at_kill} in flight at the kill, {unanswered_stored} of them stored anyway; \
         e.g. {:?}); {} queued",
        sent.len(),
        acknowledged.len(),
        other_answers.len(),
        unanswered.len(),
        sample_error.unwrap_or("none"),
        stored.len()
    );

    assert!(!acknowledged.is_empty(), "no request was acknowledged before the kill");
    assert!(
        other_answers.is_empty(),
        "the live API answered something else than 200 queued: {:?}",
        &other_answers[..other_answers.len().min(5)]
    );
    let lost: Vec<&str> =
        acknowledged.iter().filter(|s| !stored.contains_key(&s.user_id)).map(|s| s.user_id.as_str()).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in the queue, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    let doubled: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events queued more than once: {:?}", &doubled[..doubled.len().min(5)]);
    let unknown: Vec<&String> = stored.keys().filter(|id| !sent_ids.contains(id.as_str())).collect();
    assert!(unknown.is_empty(), "queued events nobody sent: {:?}", &unknown[..unknown.len().min(5)]);
    store.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3b. Clients retrying by event_id across an API crash
// ---------------------------------------------------------------------------

/// Posts the event `event_id` (its `user_id` too, so that the users count it).
async fn post_with_event_id(http: &reqwest::Client, base: &str, event_id: &str) -> Outcome {
    let body = json!({
        "site_id": "site-retries", "event_type": "page_view", "path": "/retry", "user_id": event_id, "event_id": event_id
    });
    match http.post(format!("{base}/event")).json(&body).send().await {
        Err(error) => Outcome::NoAnswer(error.to_string()),
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Ok(text)
                    if status == 200
                        && serde_json::from_str::<Value>(&text).ok() == Some(json!({ "status": "queued" })) =>
                {
                    Outcome::Queued
                }
                Ok(text) => Outcome::Answered { status, body: text },
                Err(error) => Outcome::NoAnswer(format!("{status} with a broken body: {error}")),
            }
        }
    }
}

/// An `analytics-service all` (API and worker) on `url`, answering on a fresh port.
async fn start_all(url: &str, dir: &Path, name: &str, http: &reqwest::Client) -> (Service, String) {
    let port = common::free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let vars =
        [("PORT", port.as_str()), ("MONGO_URL", url), ("QUEUE_NAME", QUEUE), ("BATCH_SIZE", "50"), ("POLL_MS", "20")];
    let mut service = Service::spawn(name, "all", &vars, &dir.join(format!("{name}.log")));
    wait_for_api(http, &base, &mut service).await;
    (service, base)
}

/// The `event_id`s of a collection, with how many documents hold each.
async fn event_id_counts(collection: &mongodb::Collection<Document>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for document in all(collection).await {
        if let Ok(id) = document.get_str("event_id") {
            *counts.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_under_load_with_clients_retrying_by_event_id_stores_exactly_what_was_sent() {
    const SENDERS: usize = 8;
    /// Events acknowledged, and some of them processed, before the kill.
    const ACKNOWLEDGED_BEFORE_KILL: usize = 100;
    const MAX_ATTEMPTS: usize = 50;
    let url = common::fresh_database_url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let (mut first, base) = start_all(&url, dir.path(), "first", &http).await;
    let store = connect(&url).await;

    // Each sender posts new events until its first request without an answer
    // (the kill); every event it sent is remembered with what it learnt.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<(String, Outcome)>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (http, base, stop, sent) = (http.clone(), base.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let event_id = format!("{sender}-{n}-{:08x}", rand::random::<u32>());
                    let outcome = post_with_event_id(&http, &base, &event_id).await;
                    let answered = !matches!(outcome, Outcome::NoAnswer(_));
                    sent.lock().unwrap().push((event_id, outcome));
                    if !answered {
                        break;
                    }
                }
            })
        })
        .collect();
    let acknowledged = || sent.lock().unwrap().iter().filter(|(_, o)| matches!(o, Outcome::Queued)).count();
    let loaded = common::eventually(Duration::from_secs(60), || async {
        acknowledged() >= ACKNOWLEDGED_BEFORE_KILL && count(store.events()).await > 0
    })
    .await;
    assert!(loaded, "only {} acknowledged and none processed in 60 s; log:\n{}", acknowledged(), first.log_tail(40));
    first.kill().await;
    for sender in senders {
        sender.await.expect("sender task");
    }
    stop.store(true, Ordering::SeqCst);
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let unsure: Vec<&String> =
        sent.iter().filter(|(_, outcome)| !matches!(outcome, Outcome::Queued)).map(|(id, _)| id).collect();
    let stored_before_retry: HashSet<String> = event_id_counts(store.queue())
        .await
        .into_keys()
        .chain(event_id_counts(store.events()).await.into_keys())
        .collect();
    let unsure_but_stored = unsure.iter().filter(|id| stored_before_retry.contains(id.as_str())).count();

    // A new process; every client sends again what it was not sure of, and (as a
    // careless client would) everything acknowledged too, until acknowledged.
    let (mut second, base) = start_all(&url, dir.path(), "second", &http).await;
    let mut attempts = 0;
    for (event_id, _) in &sent {
        let mut tries = 0;
        loop {
            tries += 1;
            attempts += 1;
            match post_with_event_id(&http, &base, event_id).await {
                Outcome::Queued => break,
                other => assert!(tries < MAX_ATTEMPTS, "{event_id} not accepted in {tries} attempts: {other:?}"),
            }
        }
    }
    let drained = common::eventually(Duration::from_secs(60), || async { count(store.queue()).await == 0 }).await;
    assert!(drained, "the queue did not drain in 60 s; log:\n{}", second.log_tail(40));
    assert!(second.is_running(), "the second service died; log:\n{}", second.log_tail(40));

    let stored = event_id_counts(store.events()).await;
    eprintln!(
        "[faults] retries by event_id: {} events sent, {} unsure at the kill ({unsure_but_stored} of them stored \
         anyway), {attempts} posts after the restart, {} events stored",
        sent.len(),
        unsure.len(),
        stored.len()
    );
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events stored more than once: {:?}", &doubled[..doubled.len().min(5)]);
    let sent_ids: HashSet<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    let lost: Vec<&&str> = sent_ids.iter().filter(|id| !stored.contains_key(**id)).collect();
    assert!(lost.is_empty(), "{} sent events not stored, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert_eq!(stored.len(), sent_ids.len(), "stored = sent, exactly");
    let exact = stats::site_stats(&store, &StatsFilter::site("site-retries")).await.expect("stats");
    assert_eq!((exact.total_events, exact.unique_users), (sent_ids.len() as u64, sent_ids.len() as u64));
    store.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. The database killed under a running service
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_killed_under_load_gives_quick_503s_and_everything_acknowledged_is_processed() {
    const SENDERS: usize = 8;
    /// The database stays down at least this long, and until every sender has had
    /// a request both sent and answered within the outage (at most OUTAGE_LIMIT).
    const OUTAGE: Duration = Duration::from_secs(3);
    const OUTAGE_LIMIT: Duration = Duration::from_secs(30);
    const ANSWER_WITHIN: Duration = Duration::from_secs(5);
    /// Events acknowledged before the kill, and after the recovery, at least.
    const ACKNOWLEDGED_BEFORE: usize = 20;
    const ACKNOWLEDGED_AFTER: usize = SENDERS;
    let dir = tempfile::tempdir().unwrap();
    let db_port = common::free_port_outside_ephemeral_range();
    let storage = dir.path().join("db");
    // `--sync-on-commit`: by default secantusd-rs acknowledges a write before its
    // log record is on disk, and a SIGKILL loses the last tens of acknowledged
    // writes (j:true does not prevent it either). What is tested here is the
    // service's behaviour over a database that keeps what it acknowledged.
    let server_args = ["--sync-on-commit"];
    let server = common::LocalServer::start_at(db_port, &storage, &server_args);
    let url = format!("mongodb://127.0.0.1:{db_port}/faults_db");
    let port = common::free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let vars = [
        ("PORT", port.as_str()),
        ("MONGO_URL", url.as_str()),
        ("QUEUE_NAME", QUEUE),
        ("BATCH_SIZE", "100"),
        ("POLL_MS", "50"),
        ("RUST_LOG", "info"),
    ];
    let mut service = Service::spawn("service", "all", &vars, &dir.path().join("service.log"));
    let service_pid = service.pid;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    wait_for_api(&http, &base, &mut service).await;

    // A steady trickle of events: some acknowledged with the database up, then kill it.
    let pause = Duration::from_millis(50);
    let load = Load::start(&http, &base, SENDERS, pause, Duration::from_secs(180), false);
    let loaded = common::eventually(Duration::from_secs(30), || async { load.acknowledged() >= ACKNOWLEDGED_BEFORE });
    assert!(loaded.await, "only {} events acknowledged in 30 s with the database up", load.acknowledged());
    let killing = Instant::now();
    server.kill_keep_data();
    let killed = Instant::now();

    // Keep posting through the outage (a request sent while the database is down
    // takes about two seconds, the driver's server selection timeout, so a sender
    // whose request straddled the kill needs more than three seconds for one more)...
    common::eventually(OUTAGE_LIMIT, || async {
        let answered_in_outage = load.sent().iter().filter(|s| s.started >= killed).count();
        killed.elapsed() >= OUTAGE && answered_in_outage >= SENDERS
    })
    .await;
    // ...then bring the database back on the same port and storage, and wait for
    // the service (not restarted) to accept events again.
    let restarting = Instant::now();
    let server = common::LocalServer::start_at(db_port, &storage, &server_args);
    let restarted = Instant::now();
    let first_accepted = || {
        load.sent()
            .iter()
            .filter(|s| s.started >= restarting && matches!(s.outcome, Outcome::Queued))
            .map(|s| s.finished)
            .min()
    };
    let recovered = common::eventually(Duration::from_secs(30), || async { first_accepted().is_some() }).await;
    let recovery_took = first_accepted()
        .map_or_else(|| "never".to_string(), |at| format!("{:.2?}", at.saturating_duration_since(restarted)));
    // Some traffic after the recovery too.
    let accepted_after =
        || load.sent().iter().filter(|s| s.started >= restarting && matches!(s.outcome, Outcome::Queued)).count();
    let traffic_after =
        common::eventually(Duration::from_secs(30), || async { accepted_after() >= ACKNOWLEDGED_AFTER }).await;
    let sent = load.stop().await;

    let store = connect(&url).await;
    let drained = common::eventually(Duration::from_secs(60), || async {
        store.queue().count_documents(doc! {}).await.is_ok_and(|n| n == 0)
    })
    .await;
    let still_running = service.is_running();
    let log_before_stop = service.log_text();
    let metrics = metrics_text(&http, &base).await;
    let outages = counter(&metrics, "analytics_worker_outages_total", &service.name);
    let recoveries = counter(&metrics, "analytics_worker_recoveries_total", &service.name);
    let status = service.terminate(Duration::from_secs(15)).await;
    let log = service.log_text();

    // The figures.
    // Requests answered before the kill began; sent and answered while the
    // database was down; sent after the restart began; and the rest, which
    // straddle the kill or the restart.
    let before: Vec<&Sent> = sent.iter().filter(|s| s.finished < killing).collect();
    let during: Vec<&Sent> = sent.iter().filter(|s| s.started >= killed && s.finished < restarting).collect();
    let after: Vec<&Sent> = sent.iter().filter(|s| s.started >= restarting).collect();
    let straddling: Vec<&Sent> = sent
        .iter()
        .filter(|s| {
            s.finished >= killing && !(s.started >= killed && s.finished < restarting) && s.started < restarting
        })
        .collect();
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| matches!(s.outcome, Outcome::Queued)).collect();
    let slowest = |set: &[&Sent]| set.iter().map(|s| s.took()).max().unwrap_or_default();
    let fastest = |set: &[&Sent]| set.iter().map(|s| s.took()).min().unwrap_or_default();
    eprintln!(
        "[faults] database killed: {} requests, {} acknowledged; before the kill {} (slowest {:.0?}); during the \
         {:.1?} outage (kill took {:.0?}) {} (answered in {:.2?}..{:.2?}); straddling the kill or the restart {} \
         (slowest {:.2?}); after the restart {} (slowest {:.2?}); first event accepted {recovery_took} after the \
         database listened again (restart took {:.2?}); worker outages reported {outages}, recoveries \
         {recoveries}; API 503 warnings {}",
        sent.len(),
        acknowledged.len(),
        before.len(),
        slowest(&before),
        restarting - killed,
        killed - killing,
        during.len(),
        fastest(&during),
        slowest(&during),
        straddling.len(),
        slowest(&straddling),
        after.len(),
        slowest(&after),
        restarted - restarting,
        log.matches("answering 503").count(),
    );

    // Before the kill: every event accepted.
    assert!(before.len() >= 10, "too little traffic before the kill: {}", before.len());
    let refused_before: Vec<&&Sent> = before.iter().filter(|s| !matches!(s.outcome, Outcome::Queued)).collect();
    assert!(
        refused_before.is_empty(),
        "refused while the database was up: {:?}",
        &refused_before[..refused_before.len().min(5)]
    );

    // During the outage: quick 503s with a JSON error, never a 200, never a hang.
    assert!(during.len() >= SENDERS, "only {} requests sent and answered during the outage", during.len());
    for request in &during {
        match &request.outcome {
            Outcome::Answered { status: 503, body } => {
                let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("503 body is not JSON: {body}"));
                let message = body.get("error").and_then(Value::as_str).unwrap_or_default();
                assert!(
                    !message.is_empty() && body.as_object().unwrap().len() == 1,
                    "503 body is not {{\"error\": ...}}: {body}"
                );
            }
            other => {
                panic!("during the outage {} got {other:?} after {:.2?}, not a 503", request.user_id, request.took())
            }
        }
        assert!(request.took() < ANSWER_WITHIN, "a 503 took {:.2?} (limit {ANSWER_WITHIN:?})", request.took());
    }
    // Around the kill and the restart, either answer is fair, but still no hang.
    for request in straddling.iter().chain(&after) {
        assert!(
            matches!(request.outcome, Outcome::Queued | Outcome::Answered { status: 503, .. }),
            "around the kill or after the restart {} got {:?}",
            request.user_id,
            request.outcome
        );
        assert!(request.took() < ANSWER_WITHIN + Duration::from_secs(1), "a request took {:.2?}", request.took());
    }

    // Back without restarting the service.
    assert!(recovered, "no event accepted within 30 s of the database's return; log:\n{}", tail(&log, 40));
    assert!(
        traffic_after,
        "fewer than {ACKNOWLEDGED_AFTER} events accepted within 30 s of the first after the recovery; log:\n{}",
        tail(&log, 40)
    );
    assert!(still_running, "the service exited during the outage; log:\n{}", tail(&log_before_stop, 40));
    assert_eq!(service.pid, service_pid, "the same service process throughout");

    // Every acknowledged event processed, exactly once.
    assert!(drained, "the queue was not emptied within 60 s of the recovery; log:\n{}", tail(&log, 40));
    let processed = user_id_counts(store.events()).await;
    let lost: Vec<&str> =
        acknowledged.iter().filter(|s| !processed.contains_key(&s.user_id)).map(|s| s.user_id.as_str()).collect();
    let lost_before_kill: Vec<&str> = acknowledged
        .iter()
        .filter(|s| s.finished < killing && !processed.contains_key(&s.user_id))
        .map(|s| s.user_id.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events never reached `events` ({} acknowledged before the kill began), e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost_before_kill.len(),
        &lost[..lost.len().min(5)]
    );
    let doubled: Vec<(&String, &usize)> = processed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "events processed more than once: {:?}", &doubled[..doubled.len().min(5)]);

    // The worker reported losing the database once, and once that it was back
    // (its metrics count what it logs: once per outage, not once per lane or retry).
    assert_eq!(outages, 1, "the worker should report the outage once; log:\n{}", tail(&log, 60));
    assert_eq!(recoveries, 1, "the worker should report its recovery once; log:\n{}", tail(&log, 60));
    assert!(status.success(), "the service stops cleanly on SIGTERM after the outage: {status:?}");
    store.shutdown().await;
    drop(server);
}

/// The Prometheus text of the API at `base`.
async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    let metrics = http.get(format!("{base}/metrics")).send().await.expect("GET /metrics");
    metrics.text().await.expect("metrics text")
}

/// The value of the unlabelled counter `name` in `metrics`, the text of `whose` `/metrics`.
fn counter(metrics: &str, name: &str, whose: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics of {whose}:\n{metrics}"))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// 5. A flood of good and abusive requests: answers stay proper, memory bounded
// ---------------------------------------------------------------------------

/// Peak resident memory of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line");
    kib / 1024.0
}

#[tokio::test]
async fn a_flood_of_good_and_abusive_requests_gets_proper_answers_and_memory_stays_bounded() {
    const CLIENTS: usize = 256;
    /// The flood lasts at least this long, and until enough of each kind of
    /// request has been answered (at most FLOOD_LIMIT).
    const FLOOD: Duration = Duration::from_secs(4);
    const FLOOD_LIMIT: Duration = Duration::from_secs(60);
    /// Valid events acknowledged during the flood, more than.
    const ACKNOWLEDGED: u64 = 100;
    let _heavy = HEAVY.lock().await;
    let RunningApi { url, _dir, base, mut api, http } = start_api().await;
    let idle_mib = peak_rss_mib(api.pid);

    // Each client cycles through: a valid event, a body over the 16 KiB limit,
    // garbage, an operator object.
    let bodies: [Vec<u8>; 4] = [
        br#"{"site_id":"flood","event_type":"page_view","path":"/f","user_id":"u"}"#.to_vec(),
        format!(r#"{{"site_id":"flood","event_type":"e","path":"{}","user_id":"u"}}"#, "x".repeat(64 * 1024))
            .into_bytes(),
        vec![0xff; 4096],
        br#"{"site_id":{"$gt":""},"event_type":"e","path":"/","user_id":"u"}"#.to_vec(),
    ];
    const KINDS: [&str; 4] = ["valid", "oversized", "garbage", "operator"];
    // What the flood has had so far: valid events acknowledged, 413s, 400s for garbage.
    #[derive(Default)]
    struct Seen {
        acknowledged: std::sync::atomic::AtomicU64,
        too_large: AtomicBool,
        garbage_refused: AtomicBool,
    }
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flood_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, url, bodies) = (http.clone(), format!("{base}/event"), bodies.clone());
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                // (body kind, status; 0 when no HTTP answer came) → count
                let mut answers: HashMap<(&str, u16), u64> = HashMap::new();
                let mut slowest = Duration::ZERO;
                let mut i = client;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let sent =
                        http.post(&url).header("content-type", "application/json").body(bodies[i % 4].clone()).send();
                    let status = sent.await.map(|r| r.status().as_u16()).unwrap_or(0);
                    slowest = slowest.max(started.elapsed());
                    match (KINDS[i % 4], status) {
                        ("valid", 200) => {
                            seen.acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        ("oversized", 413) => seen.too_large.store(true, Ordering::SeqCst),
                        ("garbage", 400) => seen.garbage_refused.store(true, Ordering::SeqCst),
                        _ => {}
                    }
                    *answers.entry((KINDS[i % 4], status)).or_default() += 1;
                    i += 1;
                }
                (answers, slowest)
            })
        })
        .collect();
    let enough = || {
        seen.acknowledged.load(Ordering::SeqCst) > ACKNOWLEDGED
            && seen.too_large.load(Ordering::SeqCst)
            && seen.garbage_refused.load(Ordering::SeqCst)
    };
    common::eventually(FLOOD_LIMIT, || async { flood_started.elapsed() >= FLOOD && enough() }).await;
    stop.store(true, Ordering::SeqCst);
    let flooded = flood_started.elapsed();
    let mut answers: BTreeMap<(&str, u16), u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for client in futures_util::future::join_all(clients).await {
        let (client_answers, client_slowest) = client.unwrap();
        for (key, n) in client_answers {
            *answers.entry(key).or_default() += n;
        }
        slowest = slowest.max(client_slowest);
    }
    let peak_mib = peak_rss_mib(api.pid);
    let total: u64 = answers.values().sum();
    eprintln!(
        "[faults] flood: {CLIENTS} clients for {flooded:.1?}: {total} requests, answers by (body, status) {answers:?}, \
         slowest {slowest:?}; API peak RSS {peak_mib:.1} MiB (idle {idle_mib:.1} MiB)"
    );

    assert!(api.is_running(), "the API survived the flood");
    let acknowledged = answers.get(&("valid", 200)).copied().unwrap_or(0);
    for (&(kind, status), n) in &answers {
        // An oversized body is refused (413) without being read, and the
        // connection closed: a client still sending it may see the close instead.
        let proper = match kind {
            "valid" => [200, 503].contains(&status),
            "oversized" => [413, 503, 0].contains(&status),
            _ => [400, 503].contains(&status),
        };
        assert!(proper, "{n} {kind} requests answered {status}: {answers:?}");
    }
    assert!(
        acknowledged > ACKNOWLEDGED
            && answers.contains_key(&("oversized", 413))
            && answers.contains_key(&("garbage", 400)),
        "not every kind of request had its answer within {FLOOD_LIMIT:?}: {answers:?}"
    );
    assert!(peak_mib < 200.0, "memory bounded under the flood: {peak_mib:.1} MiB");
    let store = connect(&url).await;
    let stored = count(store.queue()).await;
    assert_eq!(stored, acknowledged, "exactly the acknowledged events are stored");
    store.shutdown().await;
    api.kill().await;
}
