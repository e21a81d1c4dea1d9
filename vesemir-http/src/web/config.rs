//! The `[ldap]` section: where the directory is, how people and groups are found, which
//! directory groups give which teams and roles, and how sign-in sessions behave.
//!
//! ```toml
//! [ldap]
//! url = "ldaps://ldap.internal:636"          # or ldap://… with starttls = true
//! ca_file = "/etc/vesemir/ldap-ca.pem"       # optional, besides the system's CAs
//! bind_dn = "cn=vesemir,ou=services,dc=example,dc=com"   # optional: anonymous search otherwise
//! bind_password_file = "/etc/vesemir/ldap-password"      # read once at start
//! user_base = "ou=people,dc=example,dc=com"
//! user_filter = "(uid={username})"           # the default
//! group_base = "ou=groups,dc=example,dc=com"
//! group_filter = "(&(objectClass=groupOfNames)(member={dn}))"   # the default
//! group_attribute = "cn"                     # the default
//! timeout = "5s"
//! session_ttl = "8h"
//! same_site = "lax"                          # or "strict"
//! secure_cookie = true                       # default: false only when listen is loopback
//! max_failures_per_user = 5                  # within failure_window
//! max_failures_per_address = 20
//! failure_window = "5m"
//!
//! [[ldap.groups]]
//! group = "payments-developers"
//! teams = ["payments"]
//! roles = ["deploy", "read"]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vesemir_core::request::FieldError;

use crate::auth::Role;

/// The `[ldap]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file with the directory's CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for people.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the service account's password (read once at start).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where people are searched.
    pub user_base: String,
    /// How a person is found; `{username}` is the escaped name typed.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Where groups are searched.
    pub group_base: String,
    /// How a person's groups are found; `{dn}` and `{username}` are replaced, escaped.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// The group attribute that names it in `groups` mappings.
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    /// Bound on connecting to the directory and on each operation.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a session lasts after sign-in.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The session cookie's `SameSite`.
    #[serde(default)]
    pub same_site: SameSite,
    /// Whether the session cookie is `Secure` (sent over HTTPS only). Default: yes, unless the
    /// server listens on loopback only (plain HTTP for a person on the same machine).
    #[serde(default)]
    pub secure_cookie: Option<bool>,
    /// Failed sign-ins for one username within `failure_window` before more are refused.
    #[serde(default = "default_per_user")]
    pub max_failures_per_user: u32,
    /// Failed sign-ins from one address within `failure_window` before more are refused.
    #[serde(default = "default_per_address")]
    pub max_failures_per_address: u32,
    /// The window failures are counted in.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub failure_window: Duration,
    /// Directory groups and the teams and roles they give.
    #[serde(default)]
    pub groups: Vec<GroupMapping>,
}

/// One directory group's teams and roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// The group's `group_attribute` value (e.g. its `cn`), compared case-insensitively.
    pub group: String,
    /// The teams its members act for.
    #[serde(default)]
    pub teams: Vec<String>,
    /// What they may do (`deploy`, `read`, `admin`); `read` by default.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// The session cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (links into the page work).
    #[default]
    Lax,
    /// Never sent from other sites.
    Strict,
}

fn default_user_filter() -> String {
    "(uid={username})".to_owned()
}
fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".to_owned()
}
fn default_group_attribute() -> String {
    "cn".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_per_user() -> u32 {
    5
}
fn default_per_address() -> u32 {
    20
}
fn default_window() -> Duration {
    Duration::from_secs(300)
}

impl LdapConfig {
    /// The teams and roles of a person in `groups`, or `None` when no group of theirs is
    /// mapped (they may not sign in).
    pub fn map_groups(&self, groups: &[String]) -> Option<(Vec<String>, Vec<Role>)> {
        let mut teams = std::collections::BTreeSet::new();
        let mut roles = std::collections::BTreeSet::new();
        let mut mapped = false;
        for mapping in &self.groups {
            if groups.iter().any(|g| g.eq_ignore_ascii_case(&mapping.group)) {
                mapped = true;
                teams.extend(mapping.teams.iter().cloned());
                if mapping.roles.is_empty() {
                    roles.insert(Role::Read);
                }
                roles.extend(mapping.roles.iter().copied());
            }
        }
        mapped.then(|| (teams.into_iter().collect(), roles.into_iter().collect()))
    }

    /// Every problem of the section, by field path.
    pub fn check(&self, problems: &mut Vec<FieldError>) {
        if let Err(e) = vesemir_ldap::Directory::new(self.directory(None)) {
            let field = match &e {
                vesemir_ldap::ConfigError::Url(_) => "ldap.url",
                vesemir_ldap::ConfigError::Filter { field, .. } => {
                    if *field == "user_filter" {
                        "ldap.user_filter"
                    } else {
                        "ldap.group_filter"
                    }
                }
                vesemir_ldap::ConfigError::CaFile(_) => "ldap.ca_file",
                _ => "ldap.bind_dn",
            };
            // A service account is checked below, with its password file.
            if field != "ldap.bind_dn" {
                problems.push(FieldError::new(field, e.to_string()));
            }
        }
        if self.bind_dn.is_some() != self.bind_password_file.is_some() {
            problems.push(FieldError::new(
                "ldap.bind_password_file",
                "bind_dn and bind_password_file go together",
            ));
        }
        for (field, value) in [("ldap.timeout", self.timeout), ("ldap.failure_window", self.failure_window)] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                problems.push(FieldError::new(field, "must be between 1ms and 1h"));
            }
        }
        if self.session_ttl < Duration::from_secs(1) || self.session_ttl > Duration::from_secs(30 * 86400) {
            problems.push(FieldError::new("ldap.session_ttl", "must be between 1s and 30d"));
        }
        if self.max_failures_per_user == 0 || self.max_failures_per_address == 0 {
            problems.push(FieldError::new("ldap.max_failures_per_user", "limits must be at least 1"));
        }
        if self.groups.is_empty() {
            problems.push(FieldError::new(
                "ldap.groups",
                "map at least one directory group to teams and roles: nobody could sign in",
            ));
        }
        for (i, mapping) in self.groups.iter().enumerate() {
            if mapping.teams.is_empty() && !mapping.roles.contains(&Role::Admin) {
                problems.push(FieldError::new(
                    format!("ldap.groups[{i}].teams"),
                    "name at least one team (or roles = [\"admin\"])",
                ));
            }
        }
    }

    /// The adapter's configuration, with the service password once read.
    pub fn directory(&self, bind_password: Option<vesemir_ldap::Secret>) -> vesemir_ldap::DirectoryConfig {
        let bind_password = match (&self.bind_dn, bind_password) {
            (Some(_), Some(password)) => Some(password),
            // Checked as its own problem; the adapter's check must not report it again.
            (Some(_), None) => Some(vesemir_ldap::Secret::new("")),
            (None, _) => None,
        };
        vesemir_ldap::DirectoryConfig {
            url: self.url.clone(),
            starttls: self.starttls,
            ca_file: self.ca_file.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password,
            user_base: self.user_base.clone(),
            user_filter: self.user_filter.clone(),
            group_base: self.group_base.clone(),
            group_filter: self.group_filter.clone(),
            group_attribute: self.group_attribute.clone(),
            timeout: self.timeout,
        }
    }
}
