//! Bearer tokens: configured as SHA-256 hashes, each bound to a team or to admin. A request's
//! token is hashed and compared against every configured hash in constant time.

use sha2::{Digest, Sha256};

use crate::config::TokenConfig;

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

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish()
    }
}

impl Tokens {
    /// From the configuration (hashes already checked by [`ServerConfig::validate`](crate::ServerConfig::validate);
    /// a malformed hash matches nothing).
    pub fn from_config(tokens: &[TokenConfig]) -> Self {
        let entries = tokens
            .iter()
            .filter_map(|t| {
                let hash = decode_hex32(&t.sha256)?;
                let scope = match (&t.team, t.admin) {
                    (_, true) => Scope::Admin,
                    (Some(team), false) => Scope::Team(team.clone()),
                    (None, false) => return None,
                };
                Some((hash, Principal { name: t.name.clone(), scope }))
            })
            .collect();
        Self { entries }
    }

    /// The principal holding `token`, if it is configured.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Compare against every entry, without stopping early, in constant time per entry.
        for (candidate, principal) in &self.entries {
            if constant_time_eq(candidate, &hash) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }
}

/// SHA-256 of `text`, as 64 lowercase hex digits (what the configuration stores).
pub fn sha256_hex(text: &[u8]) -> String {
    Sha256::digest(text).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` is 64 hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    decode_hex32(text).is_some()
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, token: &str, team: Option<&str>) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: sha256_hex(token.as_bytes()),
            team: team.map(Into::into),
            admin: team.is_none(),
        }
    }

    #[test]
    fn a_configured_token_authenticates_and_others_do_not() {
        let tokens =
            Tokens::from_config(&[config("ci", "s3cret", Some("payments")), config("root", "adm", None)]);
        let ci = tokens.authenticate("s3cret").expect("known");
        assert_eq!(ci.scope, Scope::Team("payments".into()));
        assert!(ci.may_act_for("payments") && !ci.may_act_for("search"));
        assert_eq!(tokens.authenticate("adm").expect("known").scope, Scope::Admin);
        assert!(tokens.authenticate("s3cre").is_none());
        assert!(!format!("{tokens:?}").contains(&sha256_hex(b"s3cret")));
    }
}
