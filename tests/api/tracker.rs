//! `GET /script.js` and its extensions: the tracker scripts, with their type,
//! caching headers and size (gzipped, as a web server or proxy compresses them).

use std::io::Write;

use analytics_desk::http::routes::tracker::{self, Script};

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_script_is_served_as_cacheable_javascript_under_a_kilobyte() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/script.js")).header("origin", "https://shop.example").send().await.unwrap();

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/javascript; charset=utf-8");
    assert_eq!(headers["cache-control"], "public, max-age=3600");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    let etag = headers["etag"].to_str().unwrap();
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "a strong ETag: {etag}");
    let body = response.bytes().await.unwrap();
    let gzipped = gzipped_len(&body);
    println!("/script.js: {} bytes, {gzipped} gzipped", body.len());
    assert!(gzipped <= 1024, "script.js is {gzipped} bytes gzipped: keep it at most 1024 (1 KB)");
    assert_eq!(body, tracker::script().as_bytes());
    assert!(std::str::from_utf8(&body).unwrap().contains("sendBeacon"));

    let head = app.http.head(app.url("/script.js")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
}

/// `body`'s size gzipped at the default level.
fn gzipped_len(body: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap().len()
}

#[tokio::test]
async fn the_extensions_are_served_like_the_script_each_with_its_own_etag() {
    let app = spawn_app().await;
    let mut etags = Vec::new();
    for script in Script::ALL {
        // Under any Host name: a site's pages load them from wherever the API is.
        let response = app.http.get(app.url(script.path())).header("host", "shop.example").send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", script.path());
        assert_eq!(response.headers()["content-type"], "application/javascript; charset=utf-8");
        assert_eq!(response.headers()["cache-control"], "public, max-age=3600");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        etags.push(response.headers()["etag"].to_str().unwrap().to_string());
        let body = response.bytes().await.unwrap();
        println!("{}: {} bytes, {} gzipped", script.path(), body.len(), gzipped_len(&body));
        assert_eq!(body, script.served().as_bytes());
    }
    let unique: std::collections::HashSet<&String> = etags.iter().collect();
    assert_eq!(unique.len(), Script::ALL.len(), "one ETag per script: {etags:?}");
    let again = app.http.get(app.url("/script.404.js")).header("if-none-match", &etags[3]).send().await.unwrap();
    assert_eq!(again.status(), 304);
}

#[tokio::test]
async fn a_current_copy_gets_a_304_and_a_stale_one_the_script() {
    let app = spawn_app().await;
    let first = app.http.get(app.url("/script.js")).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    for if_none_match in [etag.clone(), format!("W/{etag}"), format!("\"stale\", {etag}"), "*".to_string()] {
        let again = app.http.get(app.url("/script.js")).header("if-none-match", &if_none_match).send().await.unwrap();
        assert_eq!(again.status(), 304, "If-None-Match: {if_none_match}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(again.headers()["cache-control"], "public, max-age=3600");
        assert!(again.bytes().await.unwrap().is_empty());
    }

    let stale = app.http.get(app.url("/script.js")).header("if-none-match", "\"0000\"").send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap(), tracker::script().as_bytes());
}
