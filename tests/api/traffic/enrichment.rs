//! The fixed table of what the generator sends (User-Agents, referrers, UTM
//! tags, client addresses) and what ingestion must make of it, written from
//! docs/visits.md §1 (and, for countries, the bundled `geo-whois-asn-country`
//! data set, looked up once by hand). The truth model takes its enrichment from
//! here, never from the server: a wrong name here or there is a failed test
//! that says which of the two is wrong.

/// A browser the generator sends, and how ingestion must name it.
#[derive(Debug, Clone, Copy)]
pub struct Agent {
    /// The `User-Agent` header.
    pub header: &'static str,
    /// `browser`, `browser_version`, `os`, `device`; `None` for a bot (dropped).
    pub expected: Option<(&'static str, &'static str, &'static str, &'static str)>,
    /// The `screen_width` a real page of this browser sends (consistent with the device).
    pub screen_width: u32,
}

/// The browsers of the traffic (the last one a crawler, which is dropped).
pub const AGENTS: [Agent; 4] = [
    Agent {
        header: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/130.0.0.0 Safari/537.36",
        expected: Some(("Chrome", "130", "Windows", "desktop")),
        screen_width: 1920,
    },
    Agent {
        header: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
        expected: Some(("Firefox", "128", "Windows", "desktop")),
        screen_width: 1440,
    },
    Agent {
        header: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                 Version/17.5 Mobile/15E148 Safari/604.1",
        expected: Some(("Safari", "17", "iOS", "mobile")),
        screen_width: 390,
    },
    Agent {
        header: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        expected: None,
        screen_width: 1024,
    },
];

/// Index of the crawler in [`AGENTS`].
pub const BOT: usize = 3;

/// Where a visit comes from: the `referrer` sent and the UTM query of its URL,
/// with the `referrer`, `source` and `channel` ingestion must store.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// The `referrer` field sent (`None`: none sent); `{host}` is the page's own host.
    pub sent_referrer: Option<&'static str>,
    /// The query string added to the page's URL (empty: none).
    pub query: &'static str,
    /// Stored `referrer` (absent for a self-referral or none).
    pub referrer: Option<&'static str>,
    /// Stored `source` (absent: the row `Direct / None`).
    pub source: Option<&'static str>,
    /// Stored `channel` (always set).
    pub channel: &'static str,
    /// Stored `utm_source`, `utm_medium`, `utm_campaign`.
    pub utm: Option<(&'static str, &'static str, &'static str)>,
}

/// The origins of visits: none, a search engine, a social network, a plain
/// site, a self-referral, a newsletter's tagged link.
pub const ORIGINS: [Origin; 6] = [
    Origin { sent_referrer: None, query: "", referrer: None, source: None, channel: "Direct", utm: None },
    Origin {
        sent_referrer: Some("https://www.google.com/search?q=analytics"),
        query: "",
        referrer: Some("google.com/search"),
        source: Some("Google"),
        channel: "Organic Search",
        utm: None,
    },
    Origin {
        sent_referrer: Some("https://m.facebook.com/story.php?id=7#top"),
        query: "",
        referrer: Some("m.facebook.com/story.php"),
        source: Some("Facebook"),
        channel: "Organic Social",
        utm: None,
    },
    Origin {
        sent_referrer: Some("https://www.blog.example.org/posts/tools?x=1"),
        query: "",
        referrer: Some("blog.example.org/posts/tools"),
        source: Some("blog.example.org"),
        channel: "Referral",
        utm: None,
    },
    Origin {
        sent_referrer: Some("https://{host}/from/inside"),
        query: "",
        referrer: None,
        source: None,
        channel: "Direct",
        utm: None,
    },
    Origin {
        sent_referrer: None,
        query: "?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
        referrer: None,
        source: Some("newsletter"),
        channel: "Email",
        utm: Some(("newsletter", "email", "spring")),
    },
];

/// Client address blocks (`prefix` + a last octet) and their country in the
/// bundled data set (`None`: not in it).
pub const NETWORKS: [(&str, Option<&str>); 6] = [
    ("8.8.8.", Some("US")),
    ("193.99.144.", Some("DE")),
    ("212.58.244.", Some("GB")),
    ("133.242.0.", Some("JP")),
    ("195.154.0.", Some("FR")),
    ("100.64.0.", None),
];
