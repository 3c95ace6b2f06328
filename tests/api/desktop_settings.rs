//! The Settings tab's fields beyond the first six (issue #16 item 7), through
//! the desktop Controller as its commands use it: each new field validated by
//! the engine's rules (nothing saved when one is wrong), the API_TOKEN masked
//! like a password, a non-loopback HOST saved without a token getting one (so
//! Start works), and the data folder shown.

use std::path::Path;

use analytics_desk::config::desktop_settings::{SECRET_MASK, Values};
use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part};

use crate::common;

fn controller(dir: &Path, dotenv: &str) -> Controller {
    common::write_file(dir, ".env", dotenv);
    Controller::new(DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: None,
        export_dir: dir.join("Downloads"),
    })
}

fn with(mut values: Values, pairs: &[(&str, &str)]) -> Values {
    values.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    values
}

#[tokio::test]
async fn every_new_field_is_validated_and_a_bad_one_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path(), "POLL_MS=50\n");
    let view = controller.settings_view().await;
    for field in ["API_TOKEN", "ALLOWED_SITES", "PUBLIC_HOSTS", "TRUSTED_PROXIES", "RETENTION_DAYS", "GEOIP_DB"] {
        assert_eq!(view.values.get(field).map(String::as_str), Some(""), "{field} shown, empty by default");
    }
    assert_eq!(view.values["EXCLUDED_IPS"], "");
    assert_eq!(Path::new(&view.data_dir), dir.path().join("data"), "the data folder for Open folder");

    let cases = [
        ("EXCLUDED_IPS", "192.168.0.0/40", "neither an IP address nor a CIDR range"),
        ("RETENTION_DAYS", "0", "days, a whole number from 1 to 36500"),
        ("RETENTION_DAYS", "a month", "days, a whole number from 1 to 36500"),
        ("TRUSTED_PROXIES", "my-proxy", "neither an IP address nor a CIDR range"),
        ("PUBLIC_HOSTS", "https://stats.example.com", "host names"),
        ("API_TOKEN", "too-short", "at least 16 characters"),
        ("GEOIP_DB", "/nonexistent/GeoLite2-City.mmdb", "no such file"),
    ];
    for (field, value, needle) in cases {
        let edited = with(view.values.clone(), &[(field, value)]);
        let errors = controller.validate(edited.clone()).await;
        assert_eq!(errors.keys().collect::<Vec<_>>(), [field], "{field}={value}");
        assert!(errors[field].contains(needle), "{field}={value}: {}", errors[field]);
        let refused = controller.save_settings(edited).await.unwrap_err();
        assert!(refused.contains(field) && refused.contains(needle), "{refused}");
        assert!(!dir.path().join("config/settings.json").exists(), "{field}={value}: nothing saved");
    }

    let good = with(
        view.values,
        &[("EXCLUDED_IPS", "203.0.113.7, 10.0.0.0/8"), ("RETENTION_DAYS", "90"), ("ALLOWED_SITES", "blog,shop")],
    );
    assert!(controller.validate(good.clone()).await.is_empty());
    let outcome = controller.save_settings(good).await.unwrap();
    assert_eq!(outcome.generated_token, None, "loopback: no token needed");
    let config = controller.engine().config().clone();
    assert_eq!(config.retention_days, Some(90));
    assert_eq!(config.allowed_sites, Some(vec!["blog".to_string(), "shop".to_string()]));
    assert!(config.excluded_ips.contains("10.1.2.3".parse().unwrap()));
}

#[tokio::test]
async fn a_non_loopback_host_saved_without_a_token_gets_one_and_starts() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let controller =
        controller(dir.path(), &format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url()));
    let edited = with(controller.settings_view().await.values, &[("HOST", "0.0.0.0")]);
    assert!(controller.validate(edited.clone()).await.is_empty(), "saving will generate the token");

    let outcome = controller.save_settings(edited).await.unwrap();
    let token = outcome.generated_token.expect("a token generated, shown once");
    assert!(token.len() >= 32, "{token}");
    assert_eq!(outcome.values["API_TOKEN"], SECRET_MASK, "masked in the saved values");
    let shown = controller.settings_view().await.values;
    assert_eq!(shown["API_TOKEN"], SECRET_MASK, "masked afterwards");
    let settings_file = std::fs::read_to_string(dir.path().join("config/settings.json")).unwrap();
    assert!(settings_file.contains(&token), "stored in the settings file (owner-only)");

    // Saved again as shown: the mask stands for the stored token; none generated.
    let again = controller.save_settings(shown).await.unwrap();
    assert_eq!((again.generated_token, again.restarted.len()), (None, 0));
    assert_eq!(controller.engine().config().api_token.as_deref(), Some(token.as_str()));

    // Start no longer fails with "set API_TOKEN", and the token guards the stats.
    controller.start(Part::Api).await.expect("the exposed API starts with the generated token");
    let http = reqwest::Client::new();
    let stats = format!("http://127.0.0.1:{port}/stats?site_id=s");
    assert_eq!(http.get(&stats).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&stats).bearer_auth(&token).send().await.unwrap().status(), 200);
    controller.shutdown().await;
}
