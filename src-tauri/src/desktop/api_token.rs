//! The desktop app's `API_TOKEN`: a fresh random one for the **Generate** /
//! **Rotate** button, and one made when settings expose the API to other
//! machines (a non-loopback `HOST`) without a token, which the engine would
//! otherwise refuse to start with.

use std::net::IpAddr;

use rand::distr::{Alphanumeric, SampleString};

use crate::config::desktop_settings::Values;

/// Length of a generated token: 43 letters and digits, about 256 bits.
pub const GENERATED_TOKEN_LENGTH: usize = 43;

/// A new random token (letters and digits, so it pastes anywhere: a header, a
/// shell, a `.env`), from the operating system's secure generator.
pub fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), GENERATED_TOKEN_LENGTH)
}

/// Gives `values` a generated `API_TOKEN` when their `HOST` is a valid address
/// other than loopback and they hold no token; returns it, to show once.
pub fn fill_for_exposed_host(values: &mut Values) -> Option<String> {
    let host = values.get("HOST")?.trim().parse::<IpAddr>().ok()?;
    let has_token = values.get("API_TOKEN").is_some_and(|token| !token.trim().is_empty());
    if host.is_loopback() || has_token {
        return None;
    }
    let token = generate();
    values.insert("API_TOKEN".into(), token.clone());
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_plain() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), GENERATED_TOKEN_LENGTH);
        assert!(a.bytes().all(|byte| byte.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn only_an_exposed_host_without_a_token_gets_one() {
        let mut exposed = values(&[("HOST", "0.0.0.0")]);
        let token = fill_for_exposed_host(&mut exposed).expect("generated");
        assert_eq!(exposed["API_TOKEN"], token);
        for mut kept in [
            values(&[("HOST", "127.0.0.1")]),
            values(&[("HOST", "::1")]),
            values(&[]),
            values(&[("HOST", "not an address")]),
            values(&[("HOST", "0.0.0.0"), ("API_TOKEN", "an-existing-token-value")]),
        ] {
            let before = kept.clone();
            assert_eq!(fill_for_exposed_host(&mut kept), None, "{before:?}");
            assert_eq!(kept, before);
        }
    }
}
