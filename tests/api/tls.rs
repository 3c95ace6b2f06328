//! TLS to MongoDB when the URL asks for it (`tls=true`, as Atlas's URLs imply):
//! a TLS terminator (socat, with a certificate made here) in front of the test
//! database, and the engine connecting through it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::helpers::{event_json, spawn_app_on, test_config};

/// A `socat` TLS terminator; killed when dropped.
struct TlsProxy(Child);

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_engine_talks_tls_to_the_database_when_the_url_asks() {
    let target = common::single_host(common::server_url()).expect("a single-host test database");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (ca, key, cert) = (path("ca.pem"), path("key.pem"), path("cert.pem"));
    let (ca_key, csr, ext) = (path("ca.key"), path("server.csr"), path("ext.cnf"));
    std::fs::write(&ext, "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    // A throw-away CA, and a server certificate for localhost that it signs.
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
        vec!["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let made = Command::new("openssl")
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (installed by scripts/setup.sh)");
        assert!(made.success(), "openssl {args:?}");
    }
    let port = common::free_port();
    let listen = format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={cert},key={key}");
    let _proxy = TlsProxy(
        Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:{target}"))
            .spawn()
            .expect("socat (installed by scripts/setup.sh)"),
    );
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await
    );
    let database = common::fresh_database_url().rsplit('/').next().unwrap().to_string();

    // Without our CA the certificate is refused: TLS is really in use.
    let untrusted = format!("mongodb://localhost:{port}/{database}?tls=true&directConnection=true");
    let error = analytics_desk::Engine::new(test_config(&untrusted)).start_worker().await.unwrap_err();
    assert!(error.to_string().starts_with("database unreachable"), "{error}");

    let trusted = format!("{untrusted}&tlsCAFile={ca}");
    let app = spawn_app_on(test_config(&trusted)).await;
    assert_eq!(app.post_event(event_json("tls-site", "/secure", "u")).await.status(), 200);
    app.drain_queue().await;
    assert_eq!(app.stats("tls-site").await["total_events"], 1);
}
