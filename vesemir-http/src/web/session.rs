//! Session cookies, CSRF tokens and the same-origin check of form posts.
//!
//! A session id is 32 random bytes (hex) in an `HttpOnly` cookie; the store keeps only its
//! SHA-256. Every sign-in makes a new id (a cookie planted before sign-in is never promoted:
//! no fixation). Each session has its own CSRF token, sent back in every form that changes
//! something and compared in constant time; every form post must also come from this origin
//! (`Origin`, else `Sec-Fetch-Site`).

use axum::http::{header, HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

use super::config::SameSite;
use crate::auth::sha256_hex;

/// The session cookie's name.
pub const COOKIE: &str = "vesemir_session";

/// 32 random bytes from the operating system, as 64 hex digits.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The store's key for a session id.
pub fn id_hash(id: &str) -> String {
    sha256_hex(id.as_bytes())
}

/// The session id the request's cookie carries, if it is well-formed (64 lowercase hex).
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| {
            value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// How the session cookie is sent.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    /// Over HTTPS only.
    pub secure: bool,
    /// Its `SameSite`.
    pub same_site: SameSite,
}

impl CookiePolicy {
    /// `Set-Cookie` for session `id`, living `max_age_secs`.
    pub fn set(&self, id: &str, max_age_secs: u64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{COOKIE}={id}; {}; Max-Age={max_age_secs}", self.attributes())).ok()
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{COOKIE}=; {}; Max-Age=0", self.attributes())).ok()
    }

    fn attributes(&self) -> String {
        let same_site = match self.same_site {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        };
        let secure = if self.secure { "; Secure" } else { "" };
        format!("Path=/; HttpOnly; SameSite={same_site}{secure}")
    }
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Whether a form post comes from this server's own pages: its `Origin` names the `Host` it
/// was sent to, or (without `Origin`) `Sec-Fetch-Site` says same-origin or a typed URL.
/// Clients that send neither (not a browser) pass this check; the CSRF token still applies.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else { return false };
        let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        return match (authority, host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
            _ => false,
        };
    }
    match headers.get("sec-fetch-site").and_then(|s| s.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_a_well_formed_session_cookie_is_read() {
        let id = "a".repeat(64);
        let cookie: &'static str = Box::leak(format!("theme=dark; {COOKIE}={id}").into_boxed_str());
        assert_eq!(cookie_id(&headers(&[("cookie", cookie)])), Some(id));
        assert_eq!(cookie_id(&headers(&[("cookie", "vesemir_session=../../etc")])), None);
        assert_eq!(cookie_id(&headers(&[("cookie", "other=1")])), None);
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        assert!(same_origin(&headers(&[("host", "deploy.internal"), ("origin", "https://deploy.internal")])));
        assert!(!same_origin(&headers(&[("host", "deploy.internal"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "deploy.internal"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("host", "deploy.internal"), ("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[("host", "deploy.internal"), ("sec-fetch-site", "same-origin")])));
    }

    #[test]
    fn the_cookie_is_http_only_and_secure_when_asked() {
        let policy = CookiePolicy { secure: true, same_site: SameSite::Strict };
        let set = policy.set("ab", 60).expect("a header value");
        assert_eq!(set, "vesemir_session=ab; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=60");
        let plain = CookiePolicy { secure: false, same_site: SameSite::Lax };
        assert_eq!(
            plain.clear().expect("a header value"),
            "vesemir_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
        assert!(csrf_matches("abc", "abc") && !csrf_matches("abc", "abd") && !csrf_matches("abc", "ab"));
    }
}
