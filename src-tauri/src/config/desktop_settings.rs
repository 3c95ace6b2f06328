//! Settings: the desktop app's editable configuration. Values are kept as the
//! strings a person types, under the environment variables' names, stored as JSON
//! in the OS config dir, and validated with the engine's own rules
//! ([`Config::from_lookup`]), so the app and `analytics-service` can never disagree.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, mask_url_password, url_secrets};

/// The editable settings: every variable the engine reads but the data sets
/// the app ships (`COUNTRY_DB`, `REFERRERS_DB`) and the connection limits.
pub const FIELDS: [&str; 13] = [
    "MONGO_URL",
    "PORT",
    "HOST",
    "BATCH_SIZE",
    "POLL_MS",
    "QUEUE_NAME",
    "API_TOKEN",
    "ALLOWED_SITES",
    "PUBLIC_HOSTS",
    "TRUSTED_PROXIES",
    "RETENTION_DAYS",
    "GEOIP_DB",
    "EXCLUDED_IPS",
];

/// What a stored secret (`API_TOKEN`, a `MONGO_URL`'s password) is shown as;
/// sent back unchanged, it stands for the stored one.
pub const SECRET_MASK: &str = "****";

/// Field name → value, as typed.
pub type Values = BTreeMap<String, String>;
/// Field name → what is wrong with its value.
pub type FieldErrors = BTreeMap<String, String>;

/// A complete, valid set of settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    values: Values,
}

/// Why settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file could not be read or written.
    #[error("settings file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The settings file is not the JSON we write.
    #[error("settings file {path} is damaged: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Some values are invalid.
    #[error("invalid settings: {}", describe(.0))]
    Invalid(FieldErrors),
}

fn describe(errors: &FieldErrors) -> String {
    errors.iter().map(|(field, message)| format!("{field}: {message}")).collect::<Vec<_>>().join("; ")
}

#[derive(Serialize, Deserialize)]
struct SettingsFile {
    values: Values,
}

impl Settings {
    /// The values of a configuration.
    pub fn from_config(config: &Config) -> Settings {
        let values = [
            ("MONGO_URL", config.mongo_url.clone()),
            ("PORT", config.port.to_string()),
            ("HOST", config.host.to_string()),
            ("BATCH_SIZE", config.batch_size.to_string()),
            ("POLL_MS", config.poll_interval.as_millis().to_string()),
            ("QUEUE_NAME", config.queue_name.clone()),
            ("API_TOKEN", config.api_token.clone().unwrap_or_default()),
            ("ALLOWED_SITES", config.allowed_sites.as_ref().map(|sites| sites.join(", ")).unwrap_or_default()),
            ("PUBLIC_HOSTS", config.public_hosts.join(", ")),
            ("TRUSTED_PROXIES", config.trusted_proxies.to_string()),
            ("RETENTION_DAYS", config.retention_days.map(|days| days.to_string()).unwrap_or_default()),
            ("GEOIP_DB", config.data_sets.geoip_city_db.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
            ("EXCLUDED_IPS", config.excluded_ips.to_string()),
        ];
        Settings { values: values.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    /// Validates `values` (missing fields take their defaults) into settings.
    pub fn new(values: &Values) -> Result<Settings, SettingsError> {
        let errors = validate(values);
        if !errors.is_empty() {
            return Err(SettingsError::Invalid(errors));
        }
        Ok(Settings::from_config(&to_config(values).expect("validated")))
    }

    /// Reads the settings file; on first run (no file yet) starts from the
    /// defaults, overridden by a `.env` file in `seed_dir` if there is one.
    pub fn load_or_seed(path: &Path, seed_dir: &Path) -> Result<Settings, SettingsError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let file: SettingsFile = serde_json::from_slice(&bytes)
                    .map_err(|source| SettingsError::Format { path: path.to_path_buf(), source })?;
                Settings::new(&file.values)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Settings::new(&seed_from_dotenv(seed_dir)),
            Err(source) => Err(SettingsError::Io { path: path.to_path_buf(), source }),
        }
    }

    /// Writes the settings file (creating its directory), readable by its owner
    /// only since MONGO_URL may hold a password, and replaced atomically.
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let io_error = |source| SettingsError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let json = serde_json::to_vec_pretty(&SettingsFile { values: self.values.clone() }).expect("strings serialize");
        let temporary = path.with_extension("json.tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temporary).map_err(io_error)?;
            io::Write::write_all(&mut file, &json).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
        }
        std::fs::rename(&temporary, path).map_err(io_error)
    }

    /// The engine configuration these settings describe.
    pub fn config(&self) -> Config {
        to_config(&self.values).expect("settings are validated when built")
    }

    /// The values as stored (MONGO_URL password in clear: never send to the UI).
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The values for display: the MONGO_URL password and the API_TOKEN replaced by `****`.
    pub fn masked_values(&self) -> Values {
        let mut values = self.values.clone();
        if let Some(url) = values.get_mut("MONGO_URL") {
            *url = mask_url_password(url);
        }
        if let Some(token) = values.get_mut("API_TOKEN").filter(|token| !token.is_empty()) {
            *token = SECRET_MASK.to_string();
        }
        values
    }

    /// Takes values edited in the UI, where MONGO_URL was shown masked: a `****`
    /// password (or secret option) stands for the one already stored, but only
    /// while the URL still names the same server, user and options (see
    /// [`url_secrets::restore_secrets`]); otherwise the mask stays, and
    /// [`validate`] asks for the password again. A `****` API_TOKEN stands for the stored token.
    pub fn unmask(&self, mut edited: Values) -> Values {
        if let (Some(stored), Some(token)) = (self.values.get("API_TOKEN"), edited.get_mut("API_TOKEN"))
            && token.trim() == SECRET_MASK
            && !stored.is_empty()
        {
            *token = stored.clone();
        }
        if let (Some(stored), Some(url)) = (self.values.get("MONGO_URL"), edited.get_mut("MONGO_URL"))
            && let Some(restored) = url_secrets::restore_secrets(stored, url)
        {
            *url = restored;
        }
        edited
    }
}

/// Why a MONGO_URL still holding `****` is refused: the saved secret is only
/// given back to the same server, user and options.
pub const MASK_NOT_RESTORED: &str = "the server, user or options changed, so the saved password is not sent there: \
     type the password again (**** stands for the saved one only while they stay the same)";

/// Checks each value with the engine's rules; returns an error per invalid field.
pub fn validate(values: &Values) -> FieldErrors {
    let mut errors = FieldErrors::new();
    for (name, value) in values {
        if !FIELDS.contains(&name.as_str()) {
            errors.insert(name.clone(), "unknown setting".into());
            continue;
        }
        if name == "MONGO_URL" && url_secrets::holds_mask(value) {
            // The UI sent a mask the stored secret could not go back into.
            errors.insert(name.clone(), MASK_NOT_RESTORED.into());
            continue;
        }
        if name == "GEOIP_DB" && !value.trim().is_empty() && !Path::new(value.trim()).is_file() {
            // The engine would only warn and skip it: say it now, where it is typed.
            errors.insert(
                name.clone(),
                format!(
                    "no such file: {}; give the path of a GeoLite2-City .mmdb file, or leave it empty",
                    value.trim()
                ),
            );
            continue;
        }
        // Each field alone, so every invalid one is reported, not just the first.
        if let Err(ConfigError::Invalid { allowed, .. }) =
            Config::from_lookup(|k| if k == name { Some(value.clone()) } else { None })
        {
            errors.insert(name.clone(), allowed);
        }
    }
    errors
}

fn to_config(values: &Values) -> Result<Config, ConfigError> {
    Config::from_lookup(|k| values.get(k).cloned())
}

/// The known settings found in `dir/.env`, if that file exists.
fn seed_from_dotenv(dir: &Path) -> Values {
    let Ok(entries) = dotenvy::from_path_iter(dir.join(".env")) else { return Values::new() };
    entries.flatten().filter(|(key, _)| FIELDS.contains(&key.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn first_run_takes_defaults_then_the_dotenv_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/settings.json");
        let defaults = Settings::load_or_seed(&path, dir.path()).unwrap();
        assert_eq!(defaults.config(), Config::default());

        std::fs::write(dir.path().join(".env"), "PORT=8123\nBATCH_SIZE=77\nUNRELATED=1\n").unwrap();
        let seeded = Settings::load_or_seed(&path, dir.path()).unwrap();
        assert_eq!((seeded.config().port, seeded.config().batch_size), (8123, 77));
        assert!(!path.exists(), "seeding does not write");
    }

    #[test]
    fn saved_settings_are_read_back_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/settings.json");
        let settings =
            Settings::new(&values(&[("MONGO_URL", "mongodb://u:pw@db:27017/site"), ("POLL_MS", "50")])).unwrap();
        settings.save(&path).unwrap();

        // A .env would only seed a first run; the saved file wins now.
        std::fs::write(dir.path().join(".env"), "POLL_MS=999\n").unwrap();
        let loaded = Settings::load_or_seed(&path, dir.path()).unwrap();
        assert_eq!(loaded, settings);
        assert_eq!(loaded.config().database, "site");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(Settings::load_or_seed(&path, dir.path()), Err(SettingsError::Format { .. })));
        std::fs::write(&path, r#"{"values":{"PORT":"0"}}"#).unwrap();
        let error = Settings::load_or_seed(&path, dir.path()).unwrap_err().to_string();
        assert!(error.contains("PORT: expected a whole number from 1 to 65535"), "{error}");
    }

    #[test]
    fn validation_reports_every_invalid_field_with_the_engines_rules() {
        let errors = validate(&values(&[
            ("PORT", "0"),
            ("BATCH_SIZE", "lots"),
            ("POLL_MS", "200"),
            ("MONGO_URL", "http://x"),
            ("QUEUE_NAME", "events"),
            ("COLOUR", "blue"),
        ]));
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["BATCH_SIZE", "COLOUR", "MONGO_URL", "PORT", "QUEUE_NAME"]);
        assert_eq!(errors["PORT"], "expected a whole number from 1 to 65535");
        assert!(errors["MONGO_URL"].contains("MongoDB connection string"));
        assert!(validate(&Settings::from_config(&Config::default()).values).is_empty());
        assert!(matches!(Settings::new(&values(&[("PORT", "x")])), Err(SettingsError::Invalid(_))));
    }

    #[test]
    fn the_password_is_masked_for_display_and_restored_from_the_mask() {
        let settings = Settings::new(&values(&[("MONGO_URL", "mongodb://admin:s3cr%40t@db:27017/app")])).unwrap();
        let shown = settings.masked_values();
        assert_eq!(shown["MONGO_URL"], "mongodb://admin:****@db:27017/app");

        assert_eq!(settings.unmask(shown.clone())["MONGO_URL"], "mongodb://admin:s3cr%40t@db:27017/app");
        let mut renamed = shown.clone();
        renamed.insert("MONGO_URL".into(), "mongodb://admin:****@db:27017/other".into());
        assert_eq!(settings.unmask(renamed)["MONGO_URL"], "mongodb://admin:s3cr%40t@db:27017/other", "database edited");
        let typed = values(&[("MONGO_URL", "mongodb://admin:new@db:27017/app")]);
        assert_eq!(settings.unmask(typed.clone()), typed, "a new password is taken as typed");
    }

    #[test]
    fn every_new_field_is_validated_with_the_engines_rules_and_written_back() {
        let errors = validate(&values(&[
            ("RETENTION_DAYS", "0"),
            ("EXCLUDED_IPS", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.local"),
            ("PUBLIC_HOSTS", "http://stats.example.com/"),
            ("API_TOKEN", "short"),
            ("GEOIP_DB", "/nonexistent/GeoLite2-City.mmdb"),
            ("ALLOWED_SITES", "a, b"),
        ]));
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            ["API_TOKEN", "EXCLUDED_IPS", "GEOIP_DB", "PUBLIC_HOSTS", "RETENTION_DAYS", "TRUSTED_PROXIES"]
        );
        assert_eq!(errors["RETENTION_DAYS"], "expected days, a whole number from 1 to 36500");
        assert!(errors["EXCLUDED_IPS"].contains(r#""10.0.0.0/33" is neither an IP address nor a CIDR range"#));
        assert!(errors["API_TOKEN"].contains("at least 16 characters"));
        assert!(errors["GEOIP_DB"].contains("no such file"));

        let typed = values(&[
            ("RETENTION_DAYS", "30"),
            ("EXCLUDED_IPS", "203.0.113.7,192.168.1.9/16"),
            ("TRUSTED_PROXIES", "10.0.0.1"),
            ("PUBLIC_HOSTS", "Stats.Example.com"),
            ("ALLOWED_SITES", "a,b"),
        ]);
        let settings = Settings::new(&typed).unwrap();
        let config = settings.config();
        assert_eq!(config.retention_days, Some(30));
        assert!(config.excluded_ips.contains("192.168.200.1".parse().unwrap()));
        let shown = settings.values();
        assert_eq!(shown["EXCLUDED_IPS"], "203.0.113.7, 192.168.0.0/16");
        assert_eq!((shown["ALLOWED_SITES"].as_str(), shown["PUBLIC_HOSTS"].as_str()), ("a, b", "stats.example.com"));
        assert_eq!(Settings::new(shown).unwrap(), settings, "written back, read the same");
    }

    #[test]
    fn the_api_token_is_masked_and_the_mask_stands_for_it() {
        let settings = Settings::new(&values(&[("API_TOKEN", "0123456789abcdefXYZ")])).unwrap();
        assert_eq!(settings.masked_values()["API_TOKEN"], SECRET_MASK);
        let kept = Settings::new(&settings.unmask(settings.masked_values())).unwrap();
        assert_eq!(kept.config().api_token.as_deref(), Some("0123456789abcdefXYZ"));
        let cleared = settings.unmask(values(&[("API_TOKEN", "")]));
        assert_eq!(Settings::new(&cleared).unwrap().config().api_token, None);
        let none = Settings::new(&values(&[])).unwrap();
        assert_eq!(none.masked_values()["API_TOKEN"], "", "no token, no mask");
        assert!(validate(&none.unmask(values(&[("API_TOKEN", SECRET_MASK)])))["API_TOKEN"].contains("at least 16"));
    }

    #[test]
    fn the_stored_password_never_follows_a_changed_host_or_user() {
        let settings = Settings::new(&values(&[("MONGO_URL", "mongodb://admin:s3cret@db:27017/app")])).unwrap();
        for elsewhere in [
            "mongodb://admin:****@attacker.example:27017/app",
            "mongodb://root:****@db:27017/app",
            "mongodb://admin:****@db:27017/app?proxyHost=attacker.example",
        ] {
            let edited = settings.unmask(values(&[("MONGO_URL", elsewhere)]));
            assert!(!edited["MONGO_URL"].contains("s3cret"), "the password went to {}", edited["MONGO_URL"]);
            let refused = Settings::new(&edited).unwrap_err().to_string();
            assert!(refused.contains("type the password again"), "{refused}");
        }
    }
}
