//! Slow and abusive clients: a cap on requests in flight that refuses the excess
//! at once (503), a body-read timeout for clients that stall (408), and a
//! header-read timeout that closes slow-headers and idle connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_desk::Config;
use analytics_desk::http::{self, ApiLimits, ApiState};
use analytics_desk::telemetry::counters::PipelineCounters;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, assert_json_error, event_json, spawn_app, stalled_event};

/// Serves the API over `app`'s database with `limits`, on a free port; returns
/// its address and the metrics it records into.
async fn serve_limited(app: &TestApp, limits: ApiLimits) -> (std::net::SocketAddr, Arc<PipelineCounters>) {
    let counters = Arc::new(PipelineCounters::default());
    let state = ApiState::new(app.store.clone(), counters.clone(), &Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = http::router_with_limits(state, limits.clone());
    tokio::spawn(http::serve_with(listener, router, limits, CancellationToken::new()));
    (addr, counters)
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app().await;
    let limits = ApiLimits { header_read_timeout: Duration::from_millis(500), ..ApiLimits::default() };
    let (addr, _) = serve_limited(&app, limits).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Ty").await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();

    for (name, stream) in [("slow headers", &mut slow), ("idle", &mut idle)] {
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(closed.is_ok(), "the server closed the {name} connection");
    }
    assert!(started.elapsed() >= Duration::from_millis(400), "not before the timeout: {:?}", started.elapsed());
    let response = app.http.get(format!("http://{addr}/stats?site_id=s")).send().await.unwrap();
    assert_eq!(response.status(), 200, "normal clients are served");
}

#[tokio::test]
async fn a_flood_beyond_the_cap_gets_quick_503s_and_stalled_bodies_get_408() {
    let app = spawn_app().await; // for its database
    // The stalled bodies must keep their slots until the flood has been answered:
    // a body-read timeout well beyond the flood's own limit (2 s) below.
    let limits = ApiLimits { max_in_flight: 2, body_read_timeout: Duration::from_secs(6), ..ApiLimits::default() };
    let (addr, counters) = serve_limited(&app, limits).await;

    // Two clients that send headers and half a body, then stall: both slots taken.
    // Each asks to continue first: the server says "100 Continue" once its handler
    // reads the body, so the request holds a slot by then.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_event(addr).await);
    }

    let url = format!("http://{addr}/event");
    let flood = (0..20).map(|i| {
        let http = app.http.clone();
        let url = url.clone();
        async move {
            let started = Instant::now();
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .body(event_json("s", &format!("/{i}"), "u"))
                .send()
                .await
                .unwrap();
            (response, started.elapsed())
        }
    });
    for (response, elapsed) in futures_util::future::join_all(flood).await {
        assert!(elapsed < Duration::from_secs(2), "refused at once, not queued: {elapsed:?}");
        assert_json_error(response, 503, "server busy").await;
    }

    for mut stream in stalled {
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request body not received in time"), "{answer}");
    }
    let after = app.http.post(&url).header("content-type", "application/json").body(event_json("s", "/ok", "u"));
    assert_eq!(after.send().await.unwrap().status(), 200, "slots free again");
    let paths: Vec<String> = app.queued().await.iter().map(|e| e.get_str("path").unwrap().to_string()).collect();
    assert_eq!(paths, ["/ok"], "nothing stored for refused or stalled requests");

    // The metrics tell the story: 20 shed at once, 2 timed out, 1 queued.
    let metrics = counters.encode();
    for line in [
        "analytics_events_received_total 23",
        "analytics_events_refused_total{reason=\"overloaded\"} 20",
        "analytics_events_refused_total{reason=\"timeout\"} 2",
        "analytics_events_queued_total 1",
        "analytics_http_request_duration_seconds_count{route=\"/event\",method=\"POST\",status=\"5xx\"} 20",
        "analytics_http_request_duration_seconds_count{route=\"/event\",method=\"POST\",status=\"4xx\"} 2",
        "analytics_http_request_duration_seconds_count{route=\"/event\",method=\"POST\",status=\"2xx\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} not in:\n{metrics}");
    }
}
