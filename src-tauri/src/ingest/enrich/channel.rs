//! The channel of a visit's arrival (`Organic Search`, `Paid Social`, `Email`, ...):
//! from the source's kind in the referrer list and the `utm_medium`, by rules
//! like Plausible's (themselves Google Analytics' default channel grouping).

use super::source::{KnownSource, Medium};

/// Every channel, as stored.
pub const CHANNELS: [&str; 13] = [
    "Direct",
    "Organic Search",
    "Paid Search",
    "Organic Social",
    "Paid Social",
    "Email",
    "Referral",
    "Affiliates",
    "Display",
    "Organic Video",
    "Paid Video",
    "Paid Other",
    "Other",
];

/// Sources that are video sites (the referrer list files them under social).
const VIDEO_SOURCES: [&str; 6] = ["youtube", "vimeo", "twitch", "dailymotion", "wistia", "tiktok"];
/// `utm_medium` values meaning display advertising.
const DISPLAY_MEDIUMS: [&str; 5] = ["display", "banner", "expandable", "interstitial", "cpm"];
/// `utm_medium` values meaning social.
const SOCIAL_MEDIUMS: [&str; 6] = ["social", "social-network", "social-media", "sm", "social network", "social media"];

/// What a channel is decided from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrival<'a> {
    /// The visit's source, when it has one (`utm_source`, `ref` or the referrer's).
    pub source: Option<&'a str>,
    /// The source as the referrer list knows it.
    pub known: Option<&'a KnownSource>,
    /// `utm_medium`, when sent.
    pub utm_medium: Option<&'a str>,
    /// `utm_campaign`, when sent.
    pub utm_campaign: Option<&'a str>,
}

/// The channel of an arrival: one of [`CHANNELS`].
pub fn channel(arrival: Arrival<'_>) -> &'static str {
    let medium = arrival.utm_medium.map(|m| m.trim().to_lowercase()).unwrap_or_default();
    let source = arrival.source.map(|s| s.trim().to_lowercase()).unwrap_or_default();
    let kind = arrival.known.map(|known| known.medium);
    if source.is_empty() && medium.is_empty() && arrival.utm_campaign.is_none() {
        return "Direct";
    }
    let paid = is_paid_medium(&medium);
    let known_name = arrival.known.map(|known| known.name.to_lowercase()).unwrap_or_default();
    let video =
        VIDEO_SOURCES.iter().any(|name| source.contains(name) || known_name == *name) || medium.contains("video");
    let search = kind == Some(Medium::Search);
    let social = kind == Some(Medium::Social) || SOCIAL_MEDIUMS.contains(&medium.as_str());
    let email = kind == Some(Medium::Email)
        || ["email", "e-mail", "e_mail", "e mail", "newsletter"]
            .iter()
            .any(|m| medium.contains(m) || source.contains(m));

    if search && paid {
        "Paid Search"
    } else if video && paid {
        "Paid Video"
    } else if social && paid {
        "Paid Social"
    } else if DISPLAY_MEDIUMS.contains(&medium.as_str()) {
        "Display"
    } else if paid || kind == Some(Medium::Paid) {
        "Paid Other"
    } else if video {
        "Organic Video"
    } else if social {
        "Organic Social"
    } else if search {
        "Organic Search"
    } else if email {
        "Email"
    } else if medium == "affiliate" || medium == "affiliates" {
        "Affiliates"
    } else if medium == "referral" || medium == "link" || (medium.is_empty() && !source.is_empty()) {
        "Referral"
    } else {
        "Other"
    }
}

/// `cpc`, `ppc`, `paid...`, `retargeting` and the like.
fn is_paid_medium(medium: &str) -> bool {
    medium.contains("cp") || medium == "ppc" || medium == "retargeting" || medium.starts_with("paid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str, medium: Medium) -> KnownSource {
        KnownSource { name: name.into(), medium }
    }

    fn of(source: Option<&str>, known: Option<&KnownSource>, utm_medium: Option<&str>) -> &'static str {
        channel(Arrival { source, known, utm_medium, utm_campaign: None })
    }

    #[test]
    fn channels_from_source_kind_and_medium() {
        let google = known("Google", Medium::Search);
        let facebook = known("Facebook", Medium::Social);
        let youtube = known("Youtube", Medium::Social);
        let gmail = known("Gmail", Medium::Email);
        let criteo = known("Criteo", Medium::Paid);
        let cases = [
            (of(None, None, None), "Direct"),
            (of(Some("Google"), Some(&google), None), "Organic Search"),
            (of(Some("google"), Some(&google), Some("cpc")), "Paid Search"),
            (of(Some("google"), Some(&google), Some("paidsearch")), "Paid Search"),
            (of(Some("Facebook"), Some(&facebook), None), "Organic Social"),
            (of(Some("facebook"), Some(&facebook), Some("paid_social")), "Paid Social"),
            (of(Some("Youtube"), Some(&youtube), None), "Organic Video"),
            (of(Some("youtube"), Some(&youtube), Some("cpv")), "Paid Video"),
            (of(Some("Gmail"), Some(&gmail), None), "Email"),
            (of(Some("newsletter"), None, Some("email")), "Email"),
            (of(Some("Criteo"), Some(&criteo), None), "Paid Other"),
            (of(Some("partner"), None, Some("cpc")), "Paid Other"),
            (of(Some("partner"), None, Some("banner")), "Display"),
            (of(Some("partner"), None, Some("affiliate")), "Affiliates"),
            (of(Some("news.ycombinator.com"), None, None), "Referral"),
            (of(Some("blog.example.org"), None, Some("referral")), "Referral"),
            (of(Some("partner"), None, Some("print")), "Other"),
            (of(None, None, Some("social")), "Organic Social"),
        ];
        for (index, (found, expected)) in cases.into_iter().enumerate() {
            assert_eq!(found, expected, "case {index}");
            assert!(CHANNELS.contains(&found));
        }
        let campaign_only = channel(Arrival { utm_campaign: Some("spring"), ..Arrival::default() });
        assert_eq!(campaign_only, "Other", "a campaign without source or medium is not Direct");
    }
}
