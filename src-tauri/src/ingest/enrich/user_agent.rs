//! What a User-Agent says of the visitor's software: browser, its major
//! version, OS family and device class, parsed with `woothee` (its rules are
//! compiled into the crate). The User-Agent itself is never stored.

use woothee::parser::Parser;

/// The browser, OS and device a User-Agent names; each `None` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Software {
    /// Browser name, such as `Chrome`, `Firefox`, `Safari`, `Edge`.
    pub browser: Option<String>,
    /// Browser's major version, as a string (`128`).
    pub browser_version: Option<String>,
    /// OS family: `Windows`, `macOS`, `iOS`, `Android`, `Linux`, `ChromeOS`, ...
    pub os: Option<String>,
    /// `desktop`, `mobile` or `tablet`, when the User-Agent tells.
    pub device: Option<&'static str>,
}

/// Parses a User-Agent (woothee's `Parser` holds no state, so this is a plain function).
pub fn parse(user_agent: &str) -> Software {
    let Some(parsed) = Parser::new().parse(user_agent) else {
        return Software::default();
    };
    fn known(value: &str) -> Option<&str> {
        Some(value).filter(|v| !v.is_empty() && *v != "UNKNOWN")
    }
    let browser = known(parsed.name).filter(|_| parsed.browser_type == "browser").map(String::from);
    let browser_version = browser
        .as_ref()
        .and(known(parsed.version))
        .and_then(|version| version.split('.').next())
        .filter(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
        .map(String::from);
    let os = known(parsed.os).map(os_family);
    let device = match parsed.category {
        "pc" => Some("desktop"),
        "smartphone" | "mobilephone" if is_tablet(parsed.os, user_agent) => Some("tablet"),
        "smartphone" | "mobilephone" => Some("mobile"),
        _ => None,
    };
    Software { browser, browser_version, os, device }
}

/// The device from the screen's width, when the User-Agent does not tell: the
/// contract's breakpoints (below 576 px mobile, below 992 px tablet).
pub fn device_from_screen_width(width: u32) -> &'static str {
    match width {
        0..576 => "mobile",
        576..992 => "tablet",
        _ => "desktop",
    }
}

/// An iPad, or an Android device that does not say `Mobile` (Google's rule for tablets).
fn is_tablet(os: &str, user_agent: &str) -> bool {
    os == "iPad" || user_agent.contains("Tablet") || (os == "Android" && !user_agent.contains("Mobile"))
}

/// woothee's OS names folded into families (`Windows 10` → `Windows`, `iPhone` → `iOS`).
fn os_family(os: &str) -> String {
    let family = match os {
        os if os.starts_with("Windows") => "Windows",
        "Mac OSX" | "Mac OS Classic" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        other => other,
    };
    family.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    pub(crate) const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    pub(crate) const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const EDGE_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87";
    const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

    fn software(browser: &str, version: &str, os: &str, device: &'static str) -> Software {
        Software {
            browser: Some(browser.into()),
            browser_version: Some(version.into()),
            os: Some(os.into()),
            device: Some(device),
        }
    }

    #[test]
    fn known_user_agents_give_browser_version_os_and_device() {
        for (agent, expected) in [
            (CHROME_WINDOWS, software("Chrome", "126", "Windows", "desktop")),
            (FIREFOX_LINUX, software("Firefox", "128", "Linux", "desktop")),
            (SAFARI_IPHONE, software("Safari", "17", "iOS", "mobile")),
            (SAFARI_IPAD, software("Safari", "16", "iOS", "tablet")),
            (CHROME_ANDROID_PHONE, software("Chrome", "126", "Android", "mobile")),
            (CHROME_ANDROID_TABLET, software("Chrome", "126", "Android", "tablet")),
            (EDGE_WINDOWS, software("Edge", "126", "Windows", "desktop")),
            (SAFARI_MAC, software("Safari", "17", "macOS", "desktop")),
        ] {
            assert_eq!(parse(agent), expected, "{agent}");
        }
    }

    #[test]
    fn unknown_user_agents_give_nothing() {
        for agent in ["", "curl/8.5.0", "something odd", "python-requests/2.32.3"] {
            let parsed = parse(agent);
            assert_eq!((parsed.browser_version.as_deref(), parsed.device), (None, None), "{agent}: {parsed:?}");
        }
    }

    #[test]
    fn screen_width_breakpoints() {
        assert_eq!(device_from_screen_width(0), "mobile");
        assert_eq!(device_from_screen_width(575), "mobile");
        assert_eq!(device_from_screen_width(576), "tablet");
        assert_eq!(device_from_screen_width(991), "tablet");
        assert_eq!(device_from_screen_width(992), "desktop");
    }
}
