//! What a page's URL tells: its `hostname` (lower case) and its campaign
//! parameters (`utm_source` … `utm_content`, and `ref`, which some sites use
//! for the source). The URL itself is never stored.

use url::Url;

/// The campaign parameters read from a URL, in the order they are stored.
pub const UTM_PARAMETERS: [&str; 5] = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
/// Longest parameter value kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_PARAMETER_BYTES: usize = 256;

/// A page URL's parts that enrichment keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageUrl {
    /// The host, lower case (`example.com`).
    pub hostname: Option<String>,
    /// `(name, value)` for each UTM parameter present and not blank, in [`UTM_PARAMETERS`] order.
    pub utm: Vec<(&'static str, String)>,
    /// The `ref` parameter (`?ref=producthunt`), when present and not blank.
    pub ref_param: Option<String>,
}

impl PageUrl {
    /// The value of one UTM parameter.
    pub fn utm(&self, name: &str) -> Option<&str> {
        self.utm.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }
}

/// Reads a page URL (the first occurrence of a parameter wins).
pub fn read(url: &Url) -> PageUrl {
    let hostname = url.host_str().map(|host| host.trim_end_matches('.').to_ascii_lowercase()).filter(|h| !h.is_empty());
    let parameter = |name: &str| {
        url.query_pairs().find(|(key, _)| key == name).map(|(_, value)| clean(&value)).filter(|value| !value.is_empty())
    };
    let utm = UTM_PARAMETERS.iter().filter_map(|name| Some((*name, parameter(name)?))).collect();
    PageUrl { hostname, utm, ref_param: parameter("ref") }
}

/// A parameter's value trimmed, without control characters, within [`MAX_PARAMETER_BYTES`].
fn clean(value: &str) -> String {
    let mut text: String = value.trim().chars().filter(|c| !c.is_control()).collect();
    if text.len() > MAX_PARAMETER_BYTES {
        let mut end = MAX_PARAMETER_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hostname_utm_and_ref() {
        let url = Url::parse(
            "https://Shop.Example.COM/p?utm_source=newsletter&utm_medium=email&utm_campaign=spring%20sale\
             &utm_term=&utm_content=hero&ref=ph&utm_source=second",
        )
        .unwrap();
        let page = read(&url);
        assert_eq!(page.hostname.as_deref(), Some("shop.example.com"));
        assert_eq!(
            page.utm,
            [
                ("utm_source", "newsletter".to_string()),
                ("utm_medium", "email".to_string()),
                ("utm_campaign", "spring sale".to_string()),
                ("utm_content", "hero".to_string()),
            ],
            "blank ones are absent, the first occurrence wins"
        );
        assert_eq!(page.utm("utm_medium"), Some("email"));
        assert_eq!(page.ref_param.as_deref(), Some("ph"));
    }

    #[test]
    fn a_plain_url_has_only_its_hostname() {
        let page = read(&Url::parse("http://example.com:8080/").unwrap());
        assert_eq!(page, PageUrl { hostname: Some("example.com".into()), ..PageUrl::default() });
        let long = read(&Url::parse(&format!("https://e.com/?utm_source={}", "é".repeat(200))).unwrap());
        assert_eq!(long.utm("utm_source").unwrap().len(), 256, "cut at a character boundary");
    }
}
