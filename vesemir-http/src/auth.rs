//! Who is asking, and what they may do. A [`Principal`] is an authenticated identity: its name
//! (recorded as `requested_by`), where it comes from (a bearer token today; a directory session
//! is just another [`PrincipalSource`]), the teams it belongs to and its [`Role`]s.
//!
//! Bearer tokens are configured as SHA-256 hashes; a request's token is hashed and compared
//! against every configured hash in constant time.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a principal may do for its teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Start deployments of its teams' units, and cancel, pause, resume, confirm and recover
    /// its teams' deployments (reading them too).
    Deploy,
    /// Read, list and follow its teams' deployments.
    Read,
    /// Everything, for every team, and `/metrics`.
    Admin,
}

/// Where an identity was established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrincipalSource {
    /// A bearer token configured under `[[tokens]]`.
    Token,
    /// A web session opened by signing in against the directory (`[ldap]`).
    Directory,
    /// A CI hook's signed delivery (`[[units.hooks]]`): deploys its unit only.
    Hook,
    /// A promotion from the unit before (`promote_to`): named after who requested the first
    /// deployment of the chain.
    Promotion,
    /// A unit's watched package source (`source = { apt = ... }`): deploys its unit only.
    Source,
}

/// Who is asking: an authenticated identity, its teams and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name, recorded as `requested_by` of every deployment it starts.
    pub name: String,
    /// How it was authenticated.
    pub source: PrincipalSource,
    /// The teams it belongs to (an admin acts for every team besides).
    pub teams: BTreeSet<String>,
    /// What it may do.
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// A token of `teams` that deploys and reads.
    pub fn team_token<T: Into<String>>(name: &str, teams: impl IntoIterator<Item = T>) -> Self {
        Self {
            name: name.to_owned(),
            source: PrincipalSource::Token,
            teams: teams.into_iter().map(Into::into).collect(),
            roles: [Role::Deploy, Role::Read].into(),
        }
    }

    /// An admin token.
    pub fn admin_token(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            source: PrincipalSource::Token,
            teams: BTreeSet::new(),
            roles: [Role::Admin].into(),
        }
    }

    /// Whether it acts for every team.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether it may start deployments of `team`, and cancel, pause, resume, confirm and
    /// recover them.
    pub fn may_deploy_for(&self, team: &str) -> bool {
        self.is_admin() || (self.roles.contains(&Role::Deploy) && self.teams.contains(team))
    }

    /// Whether it may see `team`'s deployments.
    pub fn may_read(&self, team: &str) -> bool {
        self.is_admin()
            || ((self.roles.contains(&Role::Read) || self.roles.contains(&Role::Deploy))
                && self.teams.contains(team))
    }

    /// The teams whose deployments it sees, or `None` for every team (an admin).
    pub fn readable_teams(&self) -> Option<Vec<&str>> {
        if self.is_admin() {
            return None;
        }
        Some(self.teams.iter().filter(|t| self.may_read(t)).map(String::as_str).collect())
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

    fn entry(principal: Principal, token: &str) -> (TokenHash, Principal) {
        let hash = TokenHash::from_hex(&sha256_hex(token.as_bytes())).expect("64 hex digits");
        (hash, principal)
    }

    #[test]
    fn a_configured_token_authenticates_and_others_do_not() {
        let tokens = Tokens::new([
            entry(Principal::team_token("ci", ["payments", "search"]), "s3cret"),
            entry(Principal::admin_token("root"), "adm"),
        ]);
        let ci = tokens.authenticate("s3cret").expect("known");
        assert!(ci.may_deploy_for("payments") && ci.may_deploy_for("search") && !ci.may_deploy_for("web"));
        assert!(tokens.authenticate("adm").expect("known").is_admin());
        assert!(tokens.authenticate("s3cre").is_none());
        assert!(!format!("{tokens:?}").contains(&sha256_hex(b"s3cret")));
    }

    #[test]
    fn a_reader_reads_its_teams_and_deploys_nothing() {
        let mut reader = Principal::team_token("dash", ["payments"]);
        reader.roles = [Role::Read].into();
        assert!(reader.may_read("payments") && !reader.may_read("search"));
        assert!(!reader.may_deploy_for("payments"));
        assert_eq!(reader.readable_teams(), Some(vec!["payments"]));
        assert_eq!(Principal::admin_token("root").readable_teams(), None);
    }
}
