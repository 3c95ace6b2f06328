//! Which User-Agents are bots, not visitors: headless browsers (automation:
//! HeadlessChrome, PhantomJS, Playwright, Puppeteer, Selenium, ...) and
//! crawlers (the `isbot` crate's kept pattern list). HTTP libraries (curl,
//! reqwest, python-requests, ...) and a missing User-Agent are not bots: they
//! are the server-side senders this API serves.

use isbot::Bots;

/// Why an event is dropped as a bot: the `reason` label of
/// `analytics_events_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotKind {
    /// A crawler, spider or monitor (in the crawler list).
    Crawler,
    /// A headless or automated browser.
    Headless,
}

impl BotKind {
    /// The metric's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BotKind::Crawler => "crawler",
            BotKind::Headless => "headless",
        }
    }
}

/// Markers of headless and automated browsers, matched case-insensitively.
const HEADLESS_MARKERS: [&str; 7] =
    ["headless", "phantomjs", "playwright", "puppeteer", "selenium", "webdriver", "slimerjs"];

/// Patterns of the crawler list that match HTTP libraries and command-line
/// clients: those are server-side senders, not crawlers (see the module doc).
const HTTP_LIBRARY_PATTERNS: [&str; 22] = [
    "^curl",
    "^java/",
    "^lua-resty-http",
    "^php-curl-class",
    "aiohttp",
    "axios",
    "go-http-client",
    "guzzlehttp",
    "http_get",
    "httpclient",
    "httpurlconnection",
    "httpx",
    "libwww-perl",
    "node-fetch/",
    "okhttp",
    "pycurl",
    "python-requests",
    "python-urllib",
    "wget",
    "jetty",
    "httpunit",
    "^apache-httpclient",
];

/// Tells bots from visitors by their User-Agent.
#[derive(Debug)]
pub struct BotDetector {
    crawlers: Bots,
}

impl Default for BotDetector {
    fn default() -> Self {
        let mut crawlers = Bots::default();
        crawlers.remove(&HTTP_LIBRARY_PATTERNS);
        BotDetector { crawlers }
    }
}

impl BotDetector {
    /// What kind of bot sent `user_agent`, or `None` for a visitor (or a server-side sender).
    pub fn classify(&self, user_agent: &str) -> Option<BotKind> {
        let lower = user_agent.to_ascii_lowercase();
        if HEADLESS_MARKERS.iter().any(|marker| lower.contains(marker)) {
            return Some(BotKind::Headless);
        }
        self.crawlers.is_bot(&lower).then_some(BotKind::Crawler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawlers_and_headless_browsers_are_bots() {
        let detector = BotDetector::default();
        for agent in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        ] {
            assert_eq!(detector.classify(agent), Some(BotKind::Crawler), "{agent}");
        }
        for agent in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
        ] {
            assert_eq!(detector.classify(agent), Some(BotKind::Headless), "{agent}");
        }
    }

    #[test]
    fn browsers_and_http_libraries_are_not_bots() {
        let detector = BotDetector::default();
        for agent in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "curl/8.5.0",
            "reqwest/0.12.4",
            "python-requests/2.32.3",
            "Wget/1.21.4",
            "Go-http-client/1.1",
            "axios/1.7.2",
            "node-fetch/3.3.2",
            "okhttp/4.12.0",
            "Java/17.0.2",
            "",
        ] {
            assert_eq!(detector.classify(agent), None, "{agent}");
        }
    }
}
