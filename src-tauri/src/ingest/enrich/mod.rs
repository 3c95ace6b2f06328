//! Enrichment at ingestion (issue #14, docs/visits.md section 1): what an
//! event's request says of its visitor, added to the queue document. This is
//! the only place the client's address and User-Agent are read for it; neither
//! is stored nor logged. In order, in [`Enricher`]:
//!
//! 1. the User-Agent: a bot ([`bots`]) is dropped before anything else; a
//!    visitor's browser, OS and device are parsed ([`user_agent`]), each parse
//!    remembered in a bounded cache ([`agent_cache`]);
//! 2. the page's URL: `hostname` and the campaign parameters ([`page_url`]);
//! 3. the referrer: normalised, self-referrals dropped, the source named from
//!    the referrer list ([`source`]), and the channel ([`channel`]);
//! 4. the address: country, and region and city with a GeoLite2-City ([`geo`]).
//!
//! A missing data set skips its part of the enrichment, with one warning at start.

pub mod agent_cache;
pub mod bots;
pub mod channel;
pub mod geo;
pub mod page_url;
pub mod source;
pub mod user_agent;

use std::net::IpAddr;
use std::sync::Arc;

use mongodb::bson::Document;
use tracing::{info, warn};
use url::Url;

use crate::config::DataSets;
use crate::ingest::page_context::PageContext;
use agent_cache::{Agent, AgentCache};
use bots::BotKind;
use geo::Geo;
use source::Referrers;

/// The enrichment stage: the data sets, loaded once, and the User-Agent cache.
#[derive(Debug, Default)]
pub struct Enricher {
    agents: AgentCache,
    geo: Geo,
    referrers: Referrers,
}

/// What a request says of its sender, as read by the API (never stored).
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    /// The `User-Agent` header, when sent and readable.
    pub user_agent: Option<&'a str>,
    /// The client's address (behind trusted proxies), when known.
    pub ip: Option<IpAddr>,
}

impl Enricher {
    /// Loads the data sets at `data_sets`' paths; a missing or unreadable one
    /// is skipped with a warning (events are still accepted, without that part).
    pub fn load(data_sets: &DataSets) -> Enricher {
        let city = data_sets.geoip_city_db.as_deref().and_then(|path| {
            geo::open(path).map_err(|error| warn!(%error, "GEOIP_DB unusable: no region nor city")).ok()
        });
        let country = geo::open(&data_sets.country_db)
            .map_err(|error| {
                warn!(%error, "country database missing: events get no country (run scripts/install-data-sets.sh or set COUNTRY_DB)")
            })
            .ok();
        let referrers = Referrers::load(&data_sets.referrers)
            .map_err(|error| {
                warn!(%error, "referrer list missing: sources are the referrers' domains and channels less precise (run scripts/install-data-sets.sh or set REFERRERS_DB)")
            })
            .unwrap_or_default();
        info!(
            referrers = referrers.len(),
            country = country.is_some(),
            city = city.is_some(),
            "enrichment data loaded"
        );
        Enricher { agents: AgentCache::default(), geo: Geo::new(country, city), referrers }
    }

    /// What the User-Agent says (a bot, or the visitor's software), from the cache when seen before.
    pub fn agent(&self, user_agent: Option<&str>) -> Arc<Agent> {
        self.agents.get(user_agent.unwrap_or(""))
    }

    /// Whether `user_agent` is a bot's, and which kind.
    pub fn bot(&self, user_agent: Option<&str>) -> Option<BotKind> {
        self.agent(user_agent).bot
    }

    /// The enrichment fields of an event with `context` from `client`: only
    /// those known, in the contract's order (docs/visits.md section 1).
    pub fn fields(&self, context: &PageContext, client: Client<'_>) -> Document {
        let mut fields = Document::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                fields.insert(name, value);
            }
        };
        let page = context.url.as_ref().map(page_url::read).unwrap_or_default();
        let referrer = context.referrer.as_ref().filter(|r| !source::is_self_referral(r, page.hostname.as_deref()));
        let known_by_referrer = referrer.and_then(|url| self.referrers.by_url(url));
        let utm_source = page.utm("utm_source");
        let named_source = utm_source.or(page.ref_param.as_deref());
        let source = match named_source {
            Some(named) => Some(named.to_string()),
            None => referrer.and_then(|url| referrer_source(url, known_by_referrer)),
        };
        let known = match named_source {
            Some(named) => self.referrers.by_source(named),
            None => known_by_referrer,
        };
        let channel = channel::channel(channel::Arrival {
            source: source.as_deref(),
            known,
            utm_medium: page.utm("utm_medium"),
            utm_campaign: page.utm("utm_campaign"),
        });
        put("hostname", page.hostname.clone());
        put("referrer", referrer.and_then(source::normalise));
        put("source", source);
        put("channel", Some(channel.to_string()));
        for (name, value) in &page.utm {
            put(name, Some(value.clone()));
        }
        let location = client.ip.map(|ip| self.geo.locate(ip)).unwrap_or_default();
        put("country", location.country);
        put("region", location.region);
        put("city", location.city);
        let agent = self.agent(client.user_agent);
        let software = &agent.software;
        put("browser", software.browser.clone());
        put("browser_version", software.browser_version.clone());
        put("os", software.os.clone());
        let device = software.device.or_else(|| context.screen_width.map(user_agent::device_from_screen_width));
        put("device", device.map(String::from));
        fields
    }
}

/// A referrer's source: its name in the list, else its domain without `www.`.
fn referrer_source(referrer: &Url, known: Option<&source::KnownSource>) -> Option<String> {
    match known {
        Some(known) => Some(known.name.clone()),
        None => referrer.host_str().map(source::without_www).filter(|host| !host.is_empty()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use maxminddb::WithinOptions;
    use serde_json::json;

    use super::*;
    use crate::ingest::enrich::user_agent::tests::{CHROME_WINDOWS, SAFARI_IPHONE};

    /// An IPv4 address the country database maps to a country, and that code.
    pub(crate) fn an_address_in_a_country(path: &Path) -> (IpAddr, String) {
        let reader = geo::open(path).unwrap();
        let network = "8.0.0.0/8".parse().unwrap();
        for found in reader.within(network, WithinOptions::default()).unwrap().take(10_000) {
            let found = found.unwrap();
            let code: Option<String> = found.decode_path(&[maxminddb::PathElement::Key("country_code")]).unwrap();
            if let Some(code) = code.filter(|code| code.len() == 2) {
                return (found.network().unwrap().ip(), code);
            }
        }
        panic!("no network of 8.0.0.0/8 has a country in {}", path.display());
    }

    fn context(fields: serde_json::Value) -> PageContext {
        let field = |name: &str| fields.get(name).cloned();
        PageContext::parse(field("url"), field("referrer"), field("screen_width"), field("props")).unwrap()
    }

    #[test]
    fn a_browser_visit_from_google_gets_every_field() {
        let data_sets = DataSets::default();
        let enricher = Enricher::load(&data_sets);
        let (ip, country) = an_address_in_a_country(&data_sets.country_db);
        let context = context(json!({
            "url": "https://www.example.com/pricing?utm_medium=cpc&utm_campaign=spring",
            "referrer": "https://www.google.com/search?q=analytics",
        }));
        let fields = enricher.fields(&context, Client { user_agent: Some(CHROME_WINDOWS), ip: Some(ip) });
        let expected = mongodb::bson::doc! {
            "hostname": "www.example.com", "referrer": "google.com/search", "source": "Google",
            "channel": "Paid Search", "utm_medium": "cpc", "utm_campaign": "spring", "country": country,
            "browser": "Chrome", "browser_version": "126", "os": "Windows", "device": "desktop",
        };
        assert_eq!(fields, expected);
    }

    #[test]
    fn sources_by_precedence_and_self_referrals_dropped() {
        let enricher = Enricher::load(&DataSets::default());
        let source = |fields: serde_json::Value| {
            let found = enricher.fields(&context(fields), Client::default());
            let text = |name: &str| found.get_str(name).ok().map(String::from);
            (text("source"), text("referrer"), text("channel").unwrap())
        };
        let owned = |s: &str| Some(s.to_string());
        assert_eq!(source(json!({})), (None, None, "Direct".into()));
        assert_eq!(
            source(json!({"url": "https://example.com/", "referrer": "https://example.com/blog"})),
            (None, None, "Direct".into()),
            "a self-referral is no referrer"
        );
        assert_eq!(
            source(
                json!({"url": "https://example.com/?utm_source=newsletter&ref=ph", "referrer": "https://www.google.com/"})
            ),
            (owned("newsletter"), owned("google.com"), "Email".into()),
            "utm_source first"
        );
        assert_eq!(
            source(json!({"url": "https://example.com/?ref=producthunt", "referrer": "https://www.google.com/"})),
            (owned("producthunt"), owned("google.com"), "Referral".into()),
            "then ref"
        );
        assert_eq!(
            source(json!({"referrer": "https://news.ycombinator.com/item?id=1"})),
            (owned("Hacker News"), owned("news.ycombinator.com/item"), "Organic Social".into()),
        );
        assert_eq!(
            source(json!({"referrer": "https://www.blog.example.org/post/"})),
            (owned("blog.example.org"), owned("blog.example.org/post"), "Referral".into()),
            "an unknown referrer's source is its domain"
        );
    }

    #[test]
    fn device_falls_back_to_the_screen_width_and_nothing_is_invented() {
        let enricher = Enricher::default();
        let fields = enricher
            .fields(&context(json!({"screen_width": 390})), Client { user_agent: Some("curl/8.5.0"), ip: None });
        assert_eq!(fields, mongodb::bson::doc! { "channel": "Direct", "device": "mobile" });
        let iphone = enricher
            .fields(&context(json!({"screen_width": 1920})), Client { user_agent: Some(SAFARI_IPHONE), ip: None });
        assert_eq!(iphone.get_str("device"), Ok("mobile"), "the User-Agent first");
    }
}
