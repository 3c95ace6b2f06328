//! Slow and abusive clients: a cap on requests in flight that refuses the excess
//! at once (503), and a body-read timeout for clients that stall (408).

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_desk::api::{self, AccessRules, ApiLimits, ApiState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_json_error, event_json, spawn_app};

#[tokio::test]
async fn a_flood_beyond_the_cap_gets_quick_503s_and_stalled_bodies_get_408() {
    let app = spawn_app().await; // for its database
    let limits = ApiLimits { max_in_flight: 2, body_read_timeout: Duration::from_secs(3) };
    let state =
        ApiState { store: app.store.clone(), counters: Arc::default(), access: Arc::new(AccessRules::default()) };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(listener, api::router_with_limits(state, limits), CancellationToken::new()));

    // Two clients that send headers and half a body, then stall: both slots taken.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head =
            "POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"site";
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

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
}
