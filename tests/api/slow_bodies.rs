//! Slow and refused bodies: a total deadline per request body (a client that
//! trickles a byte now and then cannot hold a connection for hours), caps on
//! connections per client address and in total, `/health` and `/metrics` kept
//! answerable while ingestion is saturated, and the lingering close that lets a
//! client which writes a whole oversized body before reading see its `413`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_desk::Config;
use analytics_desk::http::{self, ApiLimits, ApiState};
use analytics_desk::telemetry::counters::PipelineCounters;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, assert_json_error, event_json, spawn_app, stalled_event};

/// Serves the API over `app`'s database with `limits`, on a free port; returns
/// its address and the metrics it records into.
async fn serve_limited(app: &TestApp, limits: ApiLimits) -> (SocketAddr, Arc<PipelineCounters>) {
    let counters = Arc::new(PipelineCounters::default());
    let state = ApiState::new(app.store.clone(), counters.clone(), &Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = http::router_with_limits(state, limits.clone());
    tokio::spawn(http::serve_with(listener, router, limits, CancellationToken::new()));
    (addr, counters)
}

/// A connection to `server` from the loopback address `from` (any 127.x.y.z is
/// this machine on Linux), so that one test can play several client addresses.
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(server).await
}

/// How many descriptors this process may open, after raising its soft limit to
/// the hard one (the test holds both ends of every connection it makes).
fn open_files_allowed() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// What became of one trickling connection.
#[derive(Debug)]
enum Fate {
    /// The server answered (the status line and all it sent), `after` the connection opened.
    Answered { answer: String, after: Duration },
    /// Closed or reset without an answer.
    ClosedSilently,
    /// Still open when the test stopped waiting.
    StillOpen,
}

/// Opens a `POST /events` from `from` and sends its body one space every
/// `every`, until the server answers or closes (or `give_up` passes).
async fn trickle(from: Ipv4Addr, server: SocketAddr, every: Duration, give_up: Duration) -> Fate {
    let started = Instant::now();
    let Ok(mut stream) = connect_from(from, server).await else { return Fate::ClosedSilently };
    let head = "POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 100000\r\n\r\n[";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Fate::ClosedSilently;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut next_byte = tokio::time::Instant::now() + every;
    loop {
        if started.elapsed() > give_up {
            return Fate::StillOpen;
        }
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    // Answered: stop sending, and wait for the server to close.
                    let rest = tokio::time::timeout(give_up.saturating_sub(started.elapsed()), async {
                        let _ = stream.read_to_end(&mut answer).await;
                    });
                    if rest.await.is_err() {
                        return Fate::StillOpen;
                    }
                    break;
                }
            },
            _ = tokio::time::sleep_until(next_byte) => {
                next_byte += every;
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    if answer.is_empty() {
        Fate::ClosedSilently
    } else {
        Fate::Answered { answer: String::from_utf8_lossy(&answer).into_owned(), after: started.elapsed() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_are_closed_at_their_deadline_while_real_events_get_200() {
    // 1,500 connections as three client addresses of 500 each. The test holds
    // both ends of each, so it needs about two descriptors a connection (and a
    // margin for the database's): fewer connections if the process may not open
    // that many, rather than failing on EMFILE.
    const CONNECTIONS: usize = 1_500;
    let allowed = open_files_allowed();
    let connections = CONNECTIONS.min(allowed.saturating_sub(300) / 2);
    assert!(connections >= 300, "this process may open only {allowed} files: too few for the test");
    let attackers = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)];

    let app = spawn_app().await;
    let deadline = Duration::from_secs(3);
    // A cap per client below the 500 connections each address opens, so that
    // both ways of closing them are seen: refused at once, or at the deadline.
    let limits = ApiLimits { body_deadline: deadline, max_connections_per_client: 256, ..ApiLimits::default() };
    let (addr, _) = serve_limited(&app, limits.clone()).await;
    let url = format!("http://{addr}/event");

    // A real client (127.0.0.1) sends an event every 100 ms for as long as the
    // trickling goes on; each must be stored within 2 s (a generous bound on a
    // loopback server, not a speed measurement).
    let stop = CancellationToken::new();
    let real = tokio::spawn({
        let (http, url, stop) = (app.http.clone(), url.clone(), stop.clone());
        async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                let started = Instant::now();
                let request = http.post(&url).header("content-type", "application/json");
                let request = request.body(event_json("real", &format!("/{n}"), "u")).timeout(Duration::from_secs(2));
                let status = request.send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
                answers.push((status, started.elapsed()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        }
    });

    // Each trickling connection sends a byte every second: well within the
    // 10 s allowed between pieces of a body, so only a total deadline ends it.
    // Opened 100 at a time, 25 ms apart, so that the test's own burst of
    // connecting (client and server share this runtime) stays small.
    let give_up = deadline + Duration::from_secs(30);
    let started = Instant::now();
    let trickles: Vec<_> = (0..connections)
        .map(|i| {
            let from = attackers[i % attackers.len()];
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(25) * (i / 100) as u32).await;
                trickle(from, addr, Duration::from_secs(1), give_up).await
            })
        })
        .collect();
    let mut fates = Vec::new();
    for trickle in trickles {
        fates.push(trickle.await.unwrap());
    }
    let all_closed_after = started.elapsed();
    stop.cancel();
    let answers = real.await.unwrap();

    let still_open = fates.iter().filter(|f| matches!(f, Fate::StillOpen)).count();
    assert_eq!(still_open, 0, "{still_open} of {connections} trickling connections still open after {give_up:?}");
    let mut timed_out = 0;
    let mut refused = 0;
    for fate in &fates {
        if let Fate::Answered { answer, after } = fate {
            if answer.starts_with("HTTP/1.1 408") {
                assert!(answer.contains("request body not received in time"), "{answer}");
                assert!(*after >= deadline - Duration::from_millis(100), "408 before the deadline: {after:?}");
                timed_out += 1;
            } else {
                assert!(answer.starts_with("HTTP/1.1 503"), "a trickling body got: {answer}");
                assert!(answer.contains("too many connections"), "{answer}");
                refused += 1;
            }
        }
    }
    // (How many were admitted depends on how fast they were opened: a place
    // freed by a closed one admits a later one. The cap itself is checked in
    // `one_client_address_is_held_to_its_cap_others_are_not`.)
    assert!(timed_out >= 1, "no trickling body ended by the deadline: {fates:?}");
    eprintln!(
        "{connections} trickling connections: {timed_out} answered 408 at the deadline, {refused} refused with 503 \
         (the rest closed without an answer); all closed after {all_closed_after:?}"
    );

    assert!(answers.len() >= 10, "the real client ran throughout: {} requests", answers.len());
    let worst = answers.iter().map(|(_, elapsed)| *elapsed).max().unwrap();
    for (status, elapsed) in &answers {
        assert_eq!(status, &Ok(200), "a real event was refused or timed out after {elapsed:?}");
    }
    eprintln!("{} real events meanwhile, all 200; slowest {worst:?}", answers.len());
    let stored = app.queued().await.iter().filter(|e| e.get_str("site_id") == Ok("real")).count();
    assert_eq!(stored, answers.len(), "every real event stored");
    assert_eq!(app.queue_count().await as usize, answers.len(), "nothing stored from the trickling bodies");
}

#[tokio::test]
async fn health_and_metrics_answer_while_ingestion_is_saturated() {
    let app = spawn_app().await;
    let limits = ApiLimits { max_in_flight: 2, ..ApiLimits::default() };
    let (addr, _) = serve_limited(&app, limits).await;
    let _stalled = [stalled_event(addr).await, stalled_event(addr).await];

    let event = app.http.post(format!("http://{addr}/event")).header("content-type", "application/json");
    assert_json_error(event.body(event_json("s", "/", "u")).send().await.unwrap(), 503, "server busy").await;
    let health = app.http.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/health while ingestion is saturated");
    let metrics = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200, "/metrics while ingestion is saturated");
    let stats = app.http.get(format!("http://{addr}/stats?site_id=s")).send().await.unwrap();
    assert_eq!(stats.status(), 200, "/stats while ingestion is saturated");
}

/// Reads what the server sends on `stream` until it closes (at most 5 s).
async fn answer_then_close(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn one_client_address_is_held_to_its_cap_others_are_not() {
    let app = spawn_app().await;
    let limits = ApiLimits { max_connections_per_client: 2, ..ApiLimits::default() };
    let (addr, _) = serve_limited(&app, limits).await;
    let client = Ipv4Addr::new(127, 0, 0, 2);
    let _idle = [connect_from(client, addr).await.unwrap(), connect_from(client, addr).await.unwrap()];
    // Accepted in order: the third from the same address is refused, with a 503
    // saying why (or, should its request cross the close, a reset).
    let third = answer_then_close(connect_from(client, addr).await.unwrap()).await;
    assert!(third.is_empty() || third.starts_with("HTTP/1.1 503"), "{third}");
    if !third.is_empty() {
        assert!(third.contains("too many connections from your address"), "{third}");
    }
    // Another address is served.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await.unwrap();
    other.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = answer_then_close(other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_total_cap_are_refused_until_one_closes() {
    let app = spawn_app().await;
    let limits = ApiLimits { max_connections: 3, ..ApiLimits::default() };
    let (addr, _) = serve_limited(&app, limits).await;
    // Three idle connections from three addresses: the total, not the per-client cap.
    let mut idle = Vec::new();
    for last in 2..5 {
        idle.push(connect_from(Ipv4Addr::new(127, 0, 0, last), addr).await.unwrap());
    }
    // A request on a fourth connection is refused with a 503 saying why.
    let wait_until = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let mut fourth = connect_from(Ipv4Addr::new(127, 0, 0, 5), addr).await.unwrap();
        let mut answer = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), fourth.read_to_string(&mut answer)).await;
        assert!(read.is_ok(), "the refused connection was closed");
        // The server may not have accepted all three idle ones yet: retry until it has.
        if !answer.is_empty() || Instant::now() > wait_until {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");

    // Once one closes, requests are served again.
    drop(idle.pop());
    let wait_until = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.http.get(format!("http://{addr}/health")).send().await;
        if response.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < wait_until, "still refused after a connection closed: {response:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writing_a_whole_oversized_body_before_reading_gets_the_413() {
    // As Python's urllib and many SDKs do: the whole body first, then the answer.
    // 8 MiB is far beyond what the socket buffers of both ends hold, so the
    // server must read past its 16 KiB limit for the write to finish.
    const BODY: usize = 8 << 20;
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /event HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut written = 0;
    let wrote = tokio::time::timeout(Duration::from_secs(30), async {
        while written < BODY {
            stream.write_all(&chunk).await?;
            written += chunk.len();
        }
        Ok::<_, io::Error>(())
    })
    .await;
    let wrote = wrote.unwrap_or_else(|_| panic!("the server neither read nor closed: {written} bytes written"));
    wrote.unwrap_or_else(|e| panic!("writing the body failed after {written} of {BODY} bytes: {e}"));

    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let answer_text = String::from_utf8_lossy(&answer).into_owned();
    let read = read.unwrap_or_else(|_| panic!("the server did not close the connection; got {answer_text:?}"));
    read.unwrap_or_else(|e| panic!("reading the answer failed: {e}; got {answer_text:?}"));
    assert!(answer_text.starts_with("HTTP/1.1 413"), "{answer_text}");
    assert!(answer_text.contains("request body is larger than 16384 bytes"), "{answer_text}");
    assert_eq!(app.queue_count().await, 0, "nothing stored");
}
