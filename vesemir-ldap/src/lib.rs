//! Vesemir's directory adapter: signs a person in against an LDAP directory and reads which
//! groups they belong to, so the server can open a session for them (a directory session is
//! just another principal).
//!
//! Sign-in ([`Directory::authenticate`]) is the usual search-then-bind:
//! 1. connect (plain `ldap://`, `ldap://` upgraded with StartTLS, or `ldaps://`), bind as the
//!    configured service account (or stay anonymous when none is set);
//! 2. search `user_base` (subtree) with `user_filter`, where `{username}` is replaced by the
//!    name typed, escaped per RFC 4515 (so `*`, `(`, `)`, `\` and NUL are data, never filter
//!    syntax); exactly one entry must match;
//! 3. bind as that entry's DN with the password typed (an empty password is refused before
//!    any network call: LDAP treats it as an anonymous bind that "succeeds");
//! 4. search `group_base` with `group_filter` (`{dn}`: the person's DN, `{username}`: the name,
//!    both escaped) and answer the `group_attribute` of each group found.
//!
//! Errors are typed ([`DirectoryError`]): a wrong password, an unknown user or an ambiguous
//! one are all [`DirectoryError::InvalidCredentials`], so a caller cannot reveal which;
//! a directory that cannot be reached, does not answer in time or whose certificate is not
//! trusted is [`DirectoryError::Unavailable`]; a directory that refuses StartTLS, the service
//! account or the search is [`DirectoryError::Refused`] (an operator's problem, not the
//! person's). TLS never falls back to plain: a failed handshake or a refused StartTLS ends the
//! attempt before anything else is sent.
//!
//! [`Directory::lookup`] answers whether a person exists (for provisioning), with the service
//! account, without binding as them.
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

/// LDAP's result code for a bind with a wrong DN or password (RFC 4511, A.1).
const INVALID_CREDENTIALS: u32 = 49;
/// The longest username accepted (anything longer is not a name a person types).
const MAX_USERNAME_CHARS: usize = 256;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain LDAP (`ldap://`): only sensible on loopback or a trusted network.
    Plain,
    /// `ldap://` upgraded with StartTLS before anything is sent.
    StartTls,
    /// LDAP over TLS from the first byte (`ldaps://`).
    Ldaps,
}

/// Where the directory is and how people and groups are found in it.
#[derive(Clone)]
pub struct DirectoryConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// A PEM file with the CA that signed the directory's certificate (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// The service account that searches (none: search anonymously).
    pub bind_dn: Option<String>,
    /// The service account's password.
    pub bind_password: Option<Secret>,
    /// Where people are searched (subtree).
    pub user_base: String,
    /// The filter that finds a person; `{username}` is replaced by the escaped name.
    pub user_filter: String,
    /// Where groups are searched (subtree).
    pub group_base: String,
    /// The filter that finds a person's groups; `{dn}` and `{username}` are replaced, escaped.
    pub group_filter: String,
    /// The group attribute answered as the group's name (`cn`).
    pub group_attribute: String,
    /// Bound on connecting and on each operation.
    pub timeout: Duration,
}

impl std::fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("bind_dn", &self.bind_dn)
            .field("user_base", &self.user_base)
            .field("user_filter", &self.user_filter)
            .field("group_base", &self.group_base)
            .field("group_filter", &self.group_filter)
            .field("group_attribute", &self.group_attribute)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DirectoryConfig {
    /// A directory at `url` with people under `user_base` found by `(uid={username})` and
    /// `groupOfNames` groups under `group_base` named by `cn`, searched anonymously, 5 s bound.
    pub fn new(url: &str, user_base: &str, group_base: &str) -> Self {
        Self {
            url: url.to_owned(),
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            user_base: user_base.to_owned(),
            user_filter: "(uid={username})".to_owned(),
            group_base: group_base.to_owned(),
            group_filter: "(&(objectClass=groupOfNames)(member={dn}))".to_owned(),
            group_attribute: "cn".to_owned(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A password or other secret: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, to send to the directory.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// A person the directory signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The name as typed (and found).
    pub username: String,
    /// The person's entry.
    pub dn: String,
    /// The `group_attribute` of every group the person belongs to.
    pub groups: Vec<String>,
}

/// Why a sign-in or a lookup did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A wrong password, an unknown or ambiguous user, an empty password or a name that
    /// cannot be one: deliberately one variant, so no caller can tell which.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The directory could not be reached, or did not answer within the timeout.
    #[error("the directory cannot be reached: {reason}")]
    Unavailable {
        /// What failed (connection refused, timeout, TLS).
        reason: String,
    },
    /// The directory answered but refused StartTLS, the service account or a search.
    #[error("the directory refused the request (code {code}): {message}")]
    Refused {
        /// The LDAP result code.
        code: u32,
        /// The directory's diagnostic text.
        message: String,
    },
}

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not `ldap://` or `ldaps://`, or asks StartTLS over `ldaps://`.
    #[error("ldap url: {0}")]
    Url(String),
    /// A filter lacks its placeholder or is not parenthesised.
    #[error("{field}: {message}")]
    Filter {
        /// `user_filter` or `group_filter`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The CA file cannot be read or is not a PEM certificate.
    #[error("ca_file: {0}")]
    CaFile(String),
    /// A service DN without a password, or the reverse.
    #[error("bind_dn and bind_password go together")]
    ServiceAccount,
}

/// A directory people sign in against. Cheap to clone; each call opens its own connection.
#[derive(Clone)]
pub struct Directory {
    config: DirectoryConfig,
    transport: Transport,
    connector: Option<native_tls::TlsConnector>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("config", &self.config).field("transport", &self.transport).finish()
    }
}

impl Directory {
    /// Checks `config` and reads its CA file (once, here, not per sign-in).
    pub fn new(config: DirectoryConfig) -> Result<Self, ConfigError> {
        let transport = match (config.url.split_once("://").map(|(s, _)| s), config.starttls) {
            (Some("ldap"), false) => Transport::Plain,
            (Some("ldap"), true) => Transport::StartTls,
            (Some("ldaps"), false) => Transport::Ldaps,
            (Some("ldaps"), true) => {
                return Err(ConfigError::Url(
                    "starttls applies to ldap:// URLs; ldaps:// is TLS already".into(),
                ))
            }
            _ => return Err(ConfigError::Url(format!("`{}` is not an ldap:// or ldaps:// URL", config.url))),
        };
        if !config.user_filter.contains("{username}") {
            return Err(ConfigError::Filter {
                field: "user_filter",
                message: "must contain {username}".into(),
            });
        }
        if !config.group_filter.contains("{dn}") && !config.group_filter.contains("{username}") {
            return Err(ConfigError::Filter {
                field: "group_filter",
                message: "must contain {dn} or {username}".into(),
            });
        }
        for (field, filter) in [("user_filter", &config.user_filter), ("group_filter", &config.group_filter)]
        {
            if !(filter.starts_with('(') && filter.ends_with(')')) {
                return Err(ConfigError::Filter { field, message: "must be parenthesised".into() });
            }
        }
        if config.bind_dn.is_some() != config.bind_password.is_some() {
            return Err(ConfigError::ServiceAccount);
        }
        let connector = match &config.ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ConfigError::CaFile(format!("cannot read {}: {e}", path.display())))?;
                let ca = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                    ConfigError::CaFile(format!("{} is not a PEM certificate: {e}", path.display()))
                })?;
                let connector = native_tls::TlsConnector::builder()
                    .add_root_certificate(ca)
                    .build()
                    .map_err(|e| ConfigError::CaFile(e.to_string()))?;
                Some(connector)
            }
        };
        Ok(Self { config, transport, connector })
    }

    /// How connections are protected.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Signs `username` in with `password`: search, bind as them, read their groups.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<DirectoryUser, DirectoryError> {
        if !plausible_username(username) || password.expose().is_empty() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let bound = self.config.timeout.saturating_mul(6);
        tokio::time::timeout(bound, self.authenticate_inner(username, password))
            .await
            .unwrap_or_else(|_| Err(unavailable("no answer in time")))
    }

    async fn authenticate_inner(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<DirectoryUser, DirectoryError> {
        let mut ldap = self.connect().await?;
        let result = async {
            let dn = match self.find_user(&mut ldap, username).await? {
                Some(dn) => dn,
                None => return Err(DirectoryError::InvalidCredentials),
            };
            let bind = ldap.with_timeout(self.config.timeout).simple_bind(&dn, password.expose()).await;
            match bind.map_err(from_ldap)?.success() {
                Ok(_) => {}
                Err(LdapError::LdapResult { result }) if result.rc == INVALID_CREDENTIALS => {
                    return Err(DirectoryError::InvalidCredentials)
                }
                Err(e) => return Err(from_ldap(e)),
            }
            let filter = self
                .config
                .group_filter
                .replace("{dn}", &ldap3::ldap_escape(dn.as_str()))
                .replace("{username}", &ldap3::ldap_escape(username));
            let attribute = self.config.group_attribute.as_str();
            let (entries, _) = ldap
                .with_timeout(self.config.timeout)
                .search(&self.config.group_base, Scope::Subtree, &filter, vec![attribute])
                .await
                .and_then(|r| r.success())
                .map_err(from_ldap)?;
            let mut groups: Vec<String> = entries
                .into_iter()
                .flat_map(|entry| {
                    let entry = SearchEntry::construct(entry);
                    entry
                        .attrs
                        .into_iter()
                        .filter(|(name, _)| name.eq_ignore_ascii_case(attribute))
                        .flat_map(|(_, values)| values)
                        .collect::<Vec<_>>()
                })
                .collect();
            groups.sort();
            groups.dedup();
            Ok(DirectoryUser { username: username.to_owned(), dn, groups })
        }
        .await;
        let _ = ldap.unbind().await;
        result
    }

    /// Whether `username` names exactly one person in the directory (searched with the service
    /// account; nobody is bound as them).
    pub async fn lookup(&self, username: &str) -> Result<bool, DirectoryError> {
        if !plausible_username(username) {
            return Ok(false);
        }
        let bound = self.config.timeout.saturating_mul(4);
        let work = async {
            let mut ldap = self.connect().await?;
            let found = self.find_user(&mut ldap, username).await;
            let _ = ldap.unbind().await;
            found.map(|dn| dn.is_some())
        };
        tokio::time::timeout(bound, work).await.unwrap_or_else(|_| Err(unavailable("no answer in time")))
    }

    /// Connects (TLS as configured) and binds as the service account, if any.
    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.timeout)
            .set_starttls(self.transport == Transport::StartTls);
        if let Some(connector) = &self.connector {
            settings = settings.set_connector(connector.clone());
        }
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.config.url)
            .await
            .map_err(|e| connect_error(self.transport, e))?;
        ldap3::drive!(connection);
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.config.bind_password) {
            let bind = ldap.with_timeout(self.config.timeout).simple_bind(dn, password.expose()).await;
            if let Err(e) = bind.and_then(|r| r.success()) {
                tracing::warn!(error = %e, "the directory refused the service account");
                let _ = ldap.unbind().await;
                return Err(match from_ldap(e) {
                    DirectoryError::InvalidCredentials => DirectoryError::Refused {
                        code: INVALID_CREDENTIALS,
                        message: "the service account's credentials were refused".into(),
                    },
                    other => other,
                });
            }
        }
        Ok(ldap)
    }

    /// The DN of the one entry `user_filter` finds for `username`, or `None` (none, or
    /// several: an ambiguous name signs nobody in).
    async fn find_user(
        &self,
        ldap: &mut ldap3::Ldap,
        username: &str,
    ) -> Result<Option<String>, DirectoryError> {
        let filter = self.config.user_filter.replace("{username}", &ldap3::ldap_escape(username));
        let (entries, _) = ldap
            .with_timeout(self.config.timeout)
            .search(&self.config.user_base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(from_ldap)?;
        if entries.len() > 1 {
            tracing::warn!(
                matches = entries.len(),
                "the user filter matched several entries; nobody signs in"
            );
            return Ok(None);
        }
        Ok(entries.into_iter().next().map(|entry| SearchEntry::construct(entry).dn))
    }
}

/// Whether `username` could be a name a person types (not empty, bounded, no control
/// characters). Anything else is treated like an unknown user.
fn plausible_username(username: &str) -> bool {
    !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && !username.chars().any(char::is_control)
}

fn unavailable(reason: &str) -> DirectoryError {
    DirectoryError::Unavailable { reason: reason.to_owned() }
}

/// Sorts the errors of opening a connection. TLS never falls back to plain: a handshake that
/// fails (a certificate no configured CA signed, a name that does not match) means the
/// directory cannot be reached safely, and a StartTLS the directory refuses is its
/// operator's problem; both say TLS.
fn connect_error(transport: Transport, error: LdapError) -> DirectoryError {
    match error {
        LdapError::NativeTLS { source } => DirectoryError::Unavailable {
            reason: format!("TLS handshake failed (nothing was sent in plain): {source}"),
        },
        LdapError::LdapResult { result } if transport == Transport::StartTls => DirectoryError::Refused {
            code: result.rc,
            message: format!(
                "the directory refused StartTLS (nothing was sent in plain): {}",
                if result.text.is_empty() { "no reason given" } else { result.text.as_str() }
            ),
        },
        other => from_ldap(other),
    }
}

/// Sorts ldap3's errors: result codes are the directory's answer, everything else (I/O,
/// timeouts, TLS, a dropped connection) means it cannot be reached.
fn from_ldap(error: LdapError) -> DirectoryError {
    match error {
        LdapError::LdapResult { result } if result.rc == INVALID_CREDENTIALS => {
            DirectoryError::InvalidCredentials
        }
        LdapError::LdapResult { result } => DirectoryError::Refused { code: result.rc, message: result.text },
        other => DirectoryError::Unavailable { reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_that_cannot_be_names_are_not_plausible() {
        assert!(plausible_username("alice"));
        assert!(plausible_username("o'brien*(x)"));
        assert!(!plausible_username(""));
        assert!(!plausible_username("a\0b"));
        assert!(!plausible_username("a\nb"));
        assert!(!plausible_username(&"x".repeat(MAX_USERNAME_CHARS + 1)));
    }

    #[test]
    fn filter_values_are_escaped_per_rfc_4515() {
        assert_eq!(ldap3::ldap_escape("a*b(c)d\\e\0"), "a\\2ab\\28c\\29d\\5ce\\00");
    }

    #[test]
    fn the_config_is_checked() {
        let base = DirectoryConfig::new("ldap://127.0.0.1:389", "ou=people", "ou=groups");
        assert_eq!(Directory::new(base.clone()).map(|d| d.transport()).ok(), Some(Transport::Plain));
        let tls = DirectoryConfig { starttls: true, ..base.clone() };
        assert_eq!(Directory::new(tls).map(|d| d.transport()).ok(), Some(Transport::StartTls));
        let ldaps = DirectoryConfig { url: "ldaps://dir:636".into(), ..base.clone() };
        assert_eq!(Directory::new(ldaps).map(|d| d.transport()).ok(), Some(Transport::Ldaps));
        let both = DirectoryConfig { url: "ldaps://dir:636".into(), starttls: true, ..base.clone() };
        assert!(matches!(Directory::new(both), Err(ConfigError::Url(_))));
        let http = DirectoryConfig { url: "http://dir".into(), ..base.clone() };
        assert!(matches!(Directory::new(http), Err(ConfigError::Url(_))));
        let filter = DirectoryConfig { user_filter: "(uid=alice)".into(), ..base.clone() };
        assert!(matches!(Directory::new(filter), Err(ConfigError::Filter { field: "user_filter", .. })));
        let half = DirectoryConfig { bind_dn: Some("cn=x".into()), ..base };
        assert!(matches!(Directory::new(half), Err(ConfigError::ServiceAccount)));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let config = DirectoryConfig {
            bind_dn: Some("cn=svc".into()),
            bind_password: Some(Secret::new("hunter2")),
            ..DirectoryConfig::new("ldap://127.0.0.1:389", "ou=people", "ou=groups")
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
