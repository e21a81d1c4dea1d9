//! Bearer tokens: configured as SHA-256 hashes, each bound to a team or to admin. A request's
//! token is hashed and compared against every configured hash in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only this team's applications and deployments.
    Team(String),
    /// Every team.
    Admin,
}

/// Who is asking: the token's configured name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, recorded as `requested_by`.
    pub name: String,
    /// What it may act for.
    pub scope: Scope,
}

impl Principal {
    /// Whether it may act for `team`.
    pub fn may_act_for(&self, team: &str) -> bool {
        match &self.scope {
            Scope::Admin => true,
            Scope::Team(own) => own == team,
        }
    }

    /// Its team, or `None` for an admin.
    pub fn team(&self) -> Option<&str> {
        match &self.scope {
            Scope::Admin => None,
            Scope::Team(team) => Some(team),
        }
    }
}

/// A token's SHA-256, as configured (the token itself is never stored).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// From 64 hex digits (`printf %s "$TOKEN" | sha256sum`), or `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The hash of `token`.
    pub fn of(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(hidden)")
    }
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(TokenHash, Principal)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish()
    }
}

impl Tokens {
    /// The tokens whose hashes are given, each with who holds it.
    pub fn new(entries: impl IntoIterator<Item = (TokenHash, Principal)>) -> Self {
        Self { entries: entries.into_iter().collect() }
    }

    /// The principal holding `token`, if it is configured.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = TokenHash::of(token.as_bytes());
        let mut found = None;
        // Compare against every entry, without stopping early, each in constant time.
        for (candidate, principal) in &self.entries {
            if bool::from(candidate.0.ct_eq(&hash.0)) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }
}

/// SHA-256 of `text`, as 64 lowercase hex digits (what the configuration stores).
pub fn sha256_hex(text: &[u8]) -> String {
    hex::encode(TokenHash::of(text).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str, team: Option<&str>) -> (TokenHash, Principal) {
        let hash = TokenHash::from_hex(&sha256_hex(token.as_bytes())).expect("64 hex digits");
        let scope = team.map_or(Scope::Admin, |t| Scope::Team(t.into()));
        (hash, Principal { name: name.into(), scope })
    }

    #[test]
    fn a_configured_token_authenticates_and_others_do_not() {
        let tokens = Tokens::new([entry("ci", "s3cret", Some("payments")), entry("root", "adm", None)]);
        let ci = tokens.authenticate("s3cret").expect("known");
        assert_eq!(ci.scope, Scope::Team("payments".into()));
        assert!(ci.may_act_for("payments") && !ci.may_act_for("search"));
        assert_eq!(tokens.authenticate("adm").expect("known").scope, Scope::Admin);
        assert!(tokens.authenticate("s3cre").is_none());
        assert!(!format!("{tokens:?}").contains(&sha256_hex(b"s3cret")));
    }
}
