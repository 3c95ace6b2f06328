//! The secrets a `MONGO_URL` can hold beyond its password, and the rules that
//! keep every one of them out of sight: masking a URL the driver cannot parse
//! (where "which part is the password" is unknown), masking secret query
//! options, and giving a masked secret back only to the server it belongs to.

use mongodb::options::ConnectionString;

/// What a masked secret is shown as.
pub const MASK: &str = "****";

/// Query options whose values are secrets. MongoDB option names are
/// case-insensitive, and so is the match. `authMechanismProperties` carries AWS
/// session tokens; `proxyPassword` the SOCKS5 proxy's password.
pub const SECRET_OPTIONS: [&str; 3] = ["tlsCertificateKeyFilePassword", "authMechanismProperties", "proxyPassword"];

/// True when the driver parses `url`: only then do we know where its password
/// starts and ends (an unescaped `@`, `/` or `?` in it makes the parse fail).
pub fn is_well_formed(url: &str) -> bool {
    ConnectionString::parse(url).is_ok()
}

/// A URL that does not parse, with everything between `://` and the last `@`
/// replaced by `****`: its password may hold a `/`, `:` or `@` of its own, so no
/// narrower cut is safe. Unchanged when it has no `://` or no `@` after it.
pub fn mask_whole_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    match url[scheme_end..].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_string(),
    }
}

/// `url` with the value of every [`SECRET_OPTIONS`] option in its query string
/// replaced by `****`.
pub fn mask_query_secrets(url: &str) -> String {
    let Some((head, query)) = split_query(url) else { return url.to_string() };
    let options: Vec<String> = query
        .split(['&', ';'])
        .map(|option| match option.split_once('=') {
            Some((name, _)) if is_secret_option(name) => format!("{name}={MASK}"),
            _ => option.to_string(),
        })
        .collect();
    // Keep the separators as they were (`&` or `;`).
    let separators = query.chars().filter(|c| matches!(c, '&' | ';'));
    let mut masked = format!("{head}?");
    let mut options = options.into_iter();
    masked.push_str(&options.next().unwrap_or_default());
    for (separator, option) in separators.zip(options) {
        masked.push(separator);
        masked.push_str(&option);
    }
    masked
}

/// True when `url` still holds a mask where a secret goes (a `****` password or
/// secret option): the edited URL asked for a stored secret it may not have.
pub fn holds_mask(url: &str) -> bool {
    let password_masked = super::url_parts(url).and_then(|parts| parts.password).is_some_and(|(p, _)| p == MASK);
    let option_masked = split_query(url).is_some_and(|(_, query)| {
        query
            .split(['&', ';'])
            .any(|option| option.split_once('=').is_some_and(|(n, v)| is_secret_option(n) && v == MASK))
    });
    password_masked || option_masked
}

/// The stored URL's secrets put back into `edited` (the URL as the UI sent it,
/// secrets shown as `****`), or `None` when `edited` would send them elsewhere.
///
/// Secrets go back only when `edited` is the stored URL, masked, but for its
/// database name: same scheme, user, hosts and options. A changed host or user
/// would hand the password to whoever runs that server; a changed option could
/// too (`proxyHost` through a proxy of theirs, `authMechanism=PLAIN` in clear),
/// so any change but the database asks for the password again.
pub fn restore_secrets(stored: &str, edited: &str) -> Option<String> {
    // The stored URL was validated, so its password is where `url_parts` says.
    let masked = match super::url_parts(stored).and_then(|parts| parts.password) {
        Some((_, range)) => mask_query_secrets(&format!("{}{MASK}{}", &stored[..range.start], &stored[range.end..])),
        None => mask_query_secrets(stored),
    };
    let (stored_head, _, stored_query) = split_path(&masked)?;
    let (edited_head, edited_path, edited_query) = split_path(edited)?;
    if stored_head != edited_head || stored_query != edited_query {
        return None;
    }
    let (head, _, query) = split_path(stored)?;
    Some(format!("{head}{edited_path}{query}"))
}

fn is_secret_option(name: &str) -> bool {
    SECRET_OPTIONS.iter().any(|secret| secret.eq_ignore_ascii_case(name))
}

/// `(everything before the query, the query)`, the query after the first `?`
/// that follows the authority.
fn split_query(url: &str) -> Option<(&str, &str)> {
    let (head, path, query) = split_path(url)?;
    let query = query.strip_prefix('?')?;
    Some((&url[..head.len() + path.len()], query))
}

/// `scheme://authority`, `/path` (maybe empty), `?query` (maybe empty).
fn split_path(url: &str) -> Option<(&str, &str, &str)> {
    let authority_start = url.find("://")? + 3;
    let authority_end = url[authority_start..].find(['/', '?']).map_or(url.len(), |i| authority_start + i);
    let query_start = url[authority_end..].find('?').map_or(url.len(), |i| authority_end + i);
    Some((&url[..authority_end], &url[authority_end..query_start], &url[query_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mask_url_password;

    #[test]
    fn a_url_that_does_not_parse_is_masked_up_to_its_last_at() {
        // Unescaped '@' and '/' in the password: the naive cut would show "word".
        assert_eq!(mask_url_password("mongodb://admin:p@ss/word@db:27017/app"), "mongodb://****@db:27017/app");
        assert_eq!(mask_url_password("mongodb://admin:pa/ss@db/app"), "mongodb://****@db/app");
        assert_eq!(mask_url_password("mongodb://admin:pa:ss@db:notaport/app"), "mongodb://****@db:notaport/app");
        assert_eq!(mask_url_password("not a url"), "not a url");
        // An '@' in the query of a URL that does not parse: more is hidden, never less.
        assert_eq!(mask_url_password("mongodb://h/db?x=a@b"), "mongodb://****@b");
    }

    #[test]
    fn secret_query_options_are_masked_whatever_their_case() {
        let url = "mongodb://db/app?tls=true&tlsCertificateKeyFilePassword=k3y&authmechanismproperties=AWS_SESSION_TOKEN:t0k\
                   ;proxyPassword=pr0xy&appName=desk";
        assert_eq!(
            mask_query_secrets(url),
            "mongodb://db/app?tls=true&tlsCertificateKeyFilePassword=****&authmechanismproperties=****\
             ;proxyPassword=****&appName=desk"
        );
        let shown = mask_url_password(
            "mongodb://u:pw@db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t0k",
        );
        assert!(shown.ends_with("@db/?authMechanism=MONGODB-AWS&authMechanismProperties=****"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(holds_mask("mongodb://db/app?proxyPassword=****") && holds_mask("mongodb://u:****@db/app"));
        assert!(!holds_mask("mongodb://u:pw@db/app?appName=****"));
    }

    #[test]
    fn secrets_go_back_only_to_the_same_server_user_and_options() {
        let stored = "mongodb://app:pw@db:27017/site?tls=true&authMechanismProperties=AWS_SESSION_TOKEN:t0k";
        let shown = "mongodb://app:****@db:27017/site?tls=true&authMechanismProperties=****";
        assert_eq!(restore_secrets(stored, shown).as_deref(), Some(stored));
        let renamed = shown.replace("/site?", "/other?");
        assert_eq!(
            restore_secrets(stored, &renamed).as_deref(),
            Some("mongodb://app:pw@db:27017/other?tls=true&authMechanismProperties=AWS_SESSION_TOKEN:t0k")
        );
        for elsewhere in [
            shown.replace("@db:27017", "@evil.example:27017"),
            shown.replace("app:****", "root:****"),
            shown.replace("mongodb://", "mongodb+srv://").replace(":27017", ""),
            format!("{shown}&proxyHost=evil.example"),
            shown.replace("tls=true", "tls=false"),
        ] {
            assert_eq!(restore_secrets(stored, &elsewhere), None, "{elsewhere}");
        }
    }
}
