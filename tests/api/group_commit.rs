//! The group-commit queue writer on a real server: requests share inserts,
//! overload is refused at once, a failed insert fails its requests only.

use std::time::{Duration, Instant};

use analytics_desk::ingest::group_commit::{QueueWriteError, QueueWriter, WriterLimits};
use analytics_desk::storage::Store;
use futures_util::future::join_all;
use mongodb::bson::{Document, doc};

use crate::common::{self, Proxy};
use crate::helpers::{event_json, spawn_app, test_config};

#[tokio::test]
async fn concurrent_requests_share_inserts_and_each_is_stored_once() {
    let app = spawn_app().await;
    let writer = QueueWriter::spawn(app.store.queue().clone());
    let writes = (0..400).map(|i| writer.write(vec![doc! { "n": i }]));
    let outcomes = join_all(writes).await;
    assert!(outcomes.iter().all(Result::is_ok), "every write acknowledged");

    let stored: Vec<i32> = {
        let mut all: Vec<i32> = app.queued().await.iter().map(|d| d.get_i32("n").unwrap()).collect();
        all.sort();
        all
    };
    assert_eq!(stored, (0..400).collect::<Vec<_>>(), "each document once");
    let stats = writer.stats();
    assert_eq!(stats.documents, 400);
    assert!(stats.inserts < 100, "400 waiting requests took {} inserts: they should share", stats.inserts);
}

#[tokio::test]
async fn the_api_groups_concurrent_events() {
    let app = spawn_app().await;
    let posts = (0..200).map(|i| app.post_event(event_json("g", &format!("/{i}"), "u")));
    let statuses: Vec<u16> = join_all(posts).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(app.queue_count().await, 200);
}

/// A store reaching the shared server through a proxy the test can cut or stall.
/// The driver checks the server rarely (every minute), so that a stall is seen
/// by the operations it holds, not cut short by the driver's own monitoring.
async fn store_behind(proxy: &Proxy) -> Store {
    let database = common::fresh_database_url().rsplit('/').next().unwrap().to_string();
    let url = format!("mongodb://{}/{database}?directConnection=true&heartbeatFrequencyMS=60000", proxy.addr);
    Store::connect(&test_config(&url)).await.expect("database reachable through the proxy")
}

/// A writer over a database behind a proxy, holding at most one insert at a time.
async fn one_insert_at_a_time(limits: WriterLimits) -> (Proxy, Store, QueueWriter) {
    let target = common::single_host(common::server_url()).expect("a single-host URL to proxy");
    let proxy = Proxy::start(target).await;
    let store = store_behind(&proxy).await;
    let writer = QueueWriter::spawn_with(store.queue().clone(), WriterLimits { max_inserts_in_flight: 1, ..limits });
    assert!(writer.write(vec![doc! { "before": true }]).await.is_ok(), "the writer works before the stall");
    (proxy, store, writer)
}

/// Starts a write of `document` that hangs on the stalled database, and waits
/// until the writer has taken it (its insert counted).
async fn hanging_write(
    writer: &QueueWriter,
    document: Document,
) -> tokio::task::JoinHandle<Result<(), QueueWriteError>> {
    let inserts_before = writer.stats().inserts;
    let hanging = tokio::spawn({
        let writer = writer.clone();
        async move { writer.write(vec![document]).await }
    });
    let taken =
        common::eventually(Duration::from_secs(10), || async { writer.stats().inserts == inserts_before + 1 }).await;
    assert!(taken, "the writer never took the hanging submission: {:?}", writer.stats());
    hanging
}

async fn queued_documents(store: &Store) -> Vec<Document> {
    use futures_util::TryStreamExt;
    store.queue().find(doc! {}).await.unwrap().try_collect().await.unwrap()
}

#[tokio::test]
async fn a_submission_whose_requester_gave_up_is_never_inserted_later() {
    let (proxy, store, writer) = one_insert_at_a_time(WriterLimits::default()).await;
    proxy.stall();
    let hanging = hanging_write(&writer, doc! { "hanging": true }).await;

    // A request waits behind the stuck insert, then gives up (its request timed
    // out and was answered 503, or its client went away): the future is dropped.
    let mut abandoned = Box::pin(writer.write(vec![doc! { "abandoned": true }]));
    let polled = futures_util::FutureExt::now_or_never(abandoned.as_mut());
    assert!(polled.is_none(), "the write behind the stuck insert did not wait: {polled:?}");
    drop(abandoned);
    assert_eq!(writer.stats().inserts, 2, "still waiting when dropped: {:?}", writer.stats());

    proxy.resume();
    let _ = hanging.await.unwrap(); // whatever became of the stuck insert
    let recovered = common::eventually(Duration::from_secs(30), || async {
        writer.write(vec![doc! { "after": true }]).await.is_ok()
    })
    .await;
    assert!(recovered, "the writer works again once the database answers");
    let stored = queued_documents(&store).await;
    assert!(
        stored.iter().all(|d| !d.contains_key("abandoned")),
        "a submission answered as failed was inserted after all: {stored:?}"
    );
    assert_eq!(writer.stats().abandoned, 1, "{:?}", writer.stats());
}

#[tokio::test]
async fn while_the_database_is_stuck_waiting_bytes_are_bounded() {
    const MIB: usize = 1024 * 1024;
    let (proxy, _store, writer) = one_insert_at_a_time(WriterLimits::default()).await;
    proxy.stall();
    let _hanging = hanging_write(&writer, doc! { "hanging": true }).await;

    // 1 MiB submissions pile up behind the stuck insert, well within the count
    // limit (8,192): beyond the byte limit, they are refused at once.
    let body = "x".repeat(MIB - 100);
    let mut waiting = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        let mut write = Box::pin(writer.write(vec![doc! { "body": &body }]));
        match futures_util::FutureExt::now_or_never(write.as_mut()) {
            None => waiting.push(write),
            Some(Err(QueueWriteError::Overloaded)) => refused += 1,
            Some(other) => panic!("a write behind the stuck insert ended with {other:?}"),
        }
    }
    let limit = analytics_desk::ingest::group_commit::MAX_WAITING_BYTES / MIB;
    assert!(waiting.len() <= limit, "{} MiB waiting, more than the {limit} MiB allowed", waiting.len());
    assert!(waiting.len() >= limit - 2, "only {} MiB allowed to wait, {limit} should be", waiting.len());
    assert_eq!(waiting.len() + refused, 100);
    drop(waiting);
    proxy.resume();
}

#[tokio::test]
async fn an_insert_stuck_longer_than_its_timeout_fails_and_frees_its_slot() {
    let limits = WriterLimits { insert_timeout: Duration::from_millis(500), ..WriterLimits::default() };
    let (proxy, _store, writer) = one_insert_at_a_time(limits).await;
    proxy.stall();
    let hanging = hanging_write(&writer, doc! { "hanging": true }).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), hanging).await;
    let outcome = outcome.expect("a stuck insert must not hang its requester for ever").unwrap();
    assert!(
        matches!(outcome, Err(QueueWriteError::Store(analytics_desk::storage::StoreError::Timeout(_)))),
        "{outcome:?}"
    );
    // Its slot is free: the next submission is taken (and hangs in its turn).
    let _next = hanging_write(&writer, doc! { "next": true }).await;
    proxy.resume();
}

#[tokio::test]
async fn with_the_database_gone_waiting_requests_fail_and_more_are_refused_at_once() {
    let target = common::single_host(common::server_url()).expect("a single-host URL to proxy");
    let proxy = Proxy::start(target).await;
    let store = store_behind(&proxy).await;
    let writer = QueueWriter::spawn_with(
        store.queue().clone(),
        WriterLimits { max_waiting: 2, max_inserts_in_flight: 1, ..WriterLimits::default() },
    );
    assert!(writer.write(vec![doc! { "before": true }]).await.is_ok());

    proxy.cut();
    // One insert hangs on the missing database; two more wait behind it. The
    // writer takes a submission (and counts its insert) before it can take the
    // next: the waiting ones are sent only once it has taken the hanging one,
    // or they could fill the queue in its place.
    let inserts_before = writer.stats().inserts;
    let hanging = tokio::spawn({
        let writer = writer.clone();
        async move { writer.write(vec![doc! { "during": 1 }]).await }
    });
    let taken =
        common::eventually(Duration::from_secs(10), || async { writer.stats().inserts == inserts_before + 1 }).await;
    assert!(taken, "the writer never took the hanging submission: {:?}", writer.stats());
    // A write hands its submission to the writer when first polled, and waits
    // for the outcome after: polled once here, each is waiting (or was refused).
    let mut waiting: Vec<_> = (2..4).map(|i| Box::pin(writer.write(vec![doc! { "during": i }]))).collect();
    for write in &mut waiting {
        let polled = futures_util::FutureExt::now_or_never(write.as_mut());
        assert!(polled.is_none(), "a write behind the hanging insert did not wait: {polled:?}");
    }

    let started = Instant::now();
    let refused = writer.write(vec![doc! { "during": 4 }]).await;
    assert!(matches!(refused, Err(QueueWriteError::Overloaded)), "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(200), "refused at once, not after {:?}", started.elapsed());

    assert!(matches!(hanging.await.unwrap(), Err(QueueWriteError::Store(_))), "the hanging insert fails");
    for waiting in waiting {
        assert!(matches!(waiting.await, Err(QueueWriteError::Store(_))), "so do the ones behind it");
    }

    proxy.restore();
    let recovered = common::eventually(Duration::from_secs(30), || async {
        writer.write(vec![doc! { "after": true }]).await.is_ok()
    })
    .await;
    assert!(recovered, "the writer works again once the database is back");
    let docs: Vec<Document> = {
        use futures_util::TryStreamExt;
        store.queue().find(doc! {}).await.unwrap().try_collect().await.unwrap()
    };
    assert!(docs.iter().all(|d| !d.contains_key("during")), "nothing of the failed inserts stored: {docs:?}");
    assert_eq!(docs.len(), 2, "before and after");
}
