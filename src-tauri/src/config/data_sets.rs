//! Where the enrichment data sets are (issue #14): the bundled country
//! database (`COUNTRY_DB`), the referrer list (`REFERRERS_DB`), and a user's own
//! GeoLite2-City (`GEOIP_DB`). Only paths: `ingest::enrich` opens them at start.

use std::path::{Path, PathBuf};

/// Where the data sets are: `$ANALYTICS_DESK_CACHE/data-sets` when that variable
/// is set (what `scripts/install-data-sets.sh` fills; the tests and scripts set
/// it), else the copy the package installs beside the program
/// (`/usr/lib/analytics-desk/data-sets` for `/usr/bin/analytics-desk`) when it
/// exists, else `~/.cache/analytics-desk/data-sets`, else `data-sets` in the
/// working directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(cache) = std::env::var_os("ANALYTICS_DESK_CACHE").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(cache).join("data-sets");
    }
    let installed = std::env::current_exe().ok().and_then(|exe| exe.parent().map(packaged_data_dir));
    if let Some(dir) = installed.filter(|dir| dir.is_dir()) {
        return dir;
    }
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join(".cache/analytics-desk/data-sets"))
        .unwrap_or_else(|| PathBuf::from("data-sets"))
}

/// Where the package puts the data sets for programs installed in `bin_dir`:
/// `../lib/analytics-desk/data-sets` (the `.deb`'s layout, `scripts/package.sh`).
pub fn packaged_data_dir(bin_dir: &Path) -> PathBuf {
    bin_dir.join("../lib/analytics-desk/data-sets")
}

/// The enrichment data sets' paths. A missing file is not an error here: that
/// enrichment is skipped, with one warning at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSets {
    /// IP → country (`COUNTRY_DB`; default `country.mmdb` in [`default_data_dir`]).
    pub country_db: PathBuf,
    /// Referrer domain → source and medium (`REFERRERS_DB`; default `referrers.json` there).
    pub referrers: PathBuf,
    /// A user-supplied GeoLite2-City (or GeoIP2-City) database giving region and
    /// city, and the country first (`GEOIP_DB`); none by default, as it is not redistributable.
    pub geoip_city_db: Option<PathBuf>,
}

impl Default for DataSets {
    fn default() -> Self {
        let dir = default_data_dir();
        DataSets { country_db: dir.join("country.mmdb"), referrers: dir.join("referrers.json"), geoip_city_db: None }
    }
}

impl DataSets {
    /// The defaults, with each variable that `var` finds (set and not blank) replacing its path.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> DataSets {
        let defaults = DataSets::default();
        DataSets {
            country_db: var("COUNTRY_DB").map(PathBuf::from).unwrap_or(defaults.country_db),
            referrers: var("REFERRERS_DB").map(PathBuf::from).unwrap_or(defaults.referrers),
            geoip_city_db: var("GEOIP_DB").map(PathBuf::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_data_sets_sit_under_lib_beside_bin() {
        assert_eq!(packaged_data_dir(Path::new("/usr/bin")), Path::new("/usr/bin/../lib/analytics-desk/data-sets"));
    }

    #[test]
    fn variables_replace_the_default_paths() {
        let none = DataSets::from_vars(|_| None);
        assert_eq!(none, DataSets::default());
        assert!(none.country_db.ends_with("data-sets/country.mmdb"), "{:?}", none.country_db);
        assert_eq!(none.geoip_city_db, None, "no city database unless the user gives one");
        let set = DataSets::from_vars(|name| match name {
            "COUNTRY_DB" => Some("/x/c.mmdb".into()),
            "GEOIP_DB" => Some("/x/GeoLite2-City.mmdb".into()),
            _ => None,
        });
        assert_eq!(set.country_db, PathBuf::from("/x/c.mmdb"));
        assert_eq!(set.geoip_city_db, Some(PathBuf::from("/x/GeoLite2-City.mmdb")));
        assert_eq!(set.referrers, none.referrers);
    }
}
