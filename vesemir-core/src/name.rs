//! Validated names: every string that reaches a protocol (HAProxy, Chef, a remote shell) is one of
//! these newtypes, parsed once at the edge ("parse, don't validate").

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string was refused as a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}: {rule}")]
pub struct NameError {
    /// What kind of name was expected, e.g. "HAProxy server name".
    pub kind: &'static str,
    /// The refused value (names are never secrets).
    pub value: String,
    /// What is allowed.
    pub rule: &'static str,
}

/// The name rules as ECMA-262 regular expressions (the OpenAPI document's `pattern`s):
/// every name a pattern matches is accepted by its rule (`tests::patterns_agree_with_the_rules`),
/// and the rules' descriptions say the same.
pub mod pattern {
    /// Application, environment, team, host and playbook names: 1 to 64 letters, digits, `-`,
    /// `_` or `.`, starting with a letter or digit.
    pub const IDENTIFIER: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
    /// HAProxy backend and server names: 1 to 64 letters, digits, `-`, `_`, `.` or `:`.
    pub const HAPROXY: &str = "^[A-Za-z0-9._:-]{1,64}$";
    /// Versions: 1 to 128 letters, digits, `-_.:+~`, starting with a letter or digit.
    pub const VERSION: &str = "^[A-Za-z0-9][A-Za-z0-9._:+~-]{0,127}$";
    /// Template variable names: 1 to 64 lower-case letters, digits or `_`, not starting with a
    /// digit.
    pub const VARIABLE: &str = "^[a-z_][a-z0-9_]{0,63}$";
    /// Chef terms and requesters: printable text without control characters or surrounding
    /// white space (at most 255 bytes: `maxLength` 255 counts characters, so a long name of
    /// multi-byte characters is refused although it matches).
    pub const PRINTABLE: &str =
        "^[^\\s\\x00-\\x1f\\x7f-\\x9f]([^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f])?$";
}

/// The character rules a name can follow.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Letters, digits, `-`, `_`, `.`; starts with a letter or digit.
    Identifier,
    /// HAProxy object names: letters, digits, `-`, `_`, `.`, `:`.
    Haproxy,
    /// Letters, digits and `-_.:+~`: package versions, release tags.
    Version,
    /// Lower-case letters, digits and `_`, starting with a letter or `_`.
    Variable,
    /// Any printable text without control characters (Chef tags, people).
    Printable,
    /// Shell identifiers: letters, digits and `_`, not starting with a digit.
    EnvVar,
}

impl Rule {
    fn describe(self) -> &'static str {
        match self {
            Rule::Identifier => {
                "use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            }
            Rule::Haproxy => "use 1 to 64 letters, digits, '-', '_', '.' or ':' (HAProxy's legal characters)",
            Rule::Version => {
                "use 1 to 128 letters, digits, '-', '_', '.', ':', '+' or '~', starting with a letter or digit"
            }
            Rule::Variable => {
                "use 1 to 64 lower-case letters, digits or '_', starting with a letter or '_'"
            }
            Rule::Printable => "use 1 to 255 characters with no control characters (newlines, tabs)",
            Rule::EnvVar => {
                "use 1 to 255 letters, digits or '_', not starting with a digit (a shell identifier)"
            }
        }
    }

    fn max_len(self) -> usize {
        match self {
            Rule::Identifier | Rule::Haproxy | Rule::Variable => 64,
            Rule::Version => 128,
            Rule::Printable | Rule::EnvVar => 255,
        }
    }

    fn accepts(self, value: &str) -> bool {
        if value.is_empty() || value.len() > self.max_len() {
            return false;
        }
        let first = value.chars().next().unwrap_or(' ');
        match self {
            Rule::Identifier => {
                first.is_ascii_alphanumeric()
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            }
            Rule::Haproxy => {
                value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
            }
            Rule::Version => {
                first.is_ascii_alphanumeric()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+' | '~'))
            }
            Rule::Variable => {
                (first.is_ascii_lowercase() || first == '_')
                    && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            }
            Rule::Printable => value.trim() == value && !value.chars().any(char::is_control),
            Rule::EnvVar => {
                (first.is_ascii_alphabetic() || first == '_')
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
        }
    }
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses `value`, refusing anything outside the allowed characters.
            pub fn new(value: impl AsRef<str>) -> Result<Self, NameError> {
                let value = value.as_ref();
                if $rule.accepts(value) {
                    Ok(Self(Arc::from(value)))
                } else {
                    Err(NameError { kind: $kind, value: value.to_owned(), rule: $rule.describe() })
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, NameError> {
                Self::new(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// An application's name, e.g. `shop-web`.
    AppName, "application name", Rule::Identifier
);
validated_name!(
    /// A deployment environment's name, e.g. `production` (not an environment variable: see
    /// [`EnvVarName`]).
    EnvironmentName, "environment name", Rule::Identifier
);
validated_name!(
    /// A team's name, e.g. `payments`.
    TeamName, "team name", Rule::Identifier
);
validated_name!(
    /// A host's name as the inventory knows it, e.g. `web-01.example.com`.
    HostName, "host name", Rule::Identifier
);
validated_name!(
    /// A named playbook of changeset steps configured by the operator.
    PlaybookName, "playbook name", Rule::Identifier
);
validated_name!(
    /// An HAProxy backend's name.
    BackendName, "HAProxy backend name", Rule::Haproxy
);
validated_name!(
    /// An HAProxy server's name within a backend.
    ServerName, "HAProxy server name", Rule::Haproxy
);
validated_name!(
    /// The changeset's identity: the version being deployed, e.g. `2026.11.21-1`.
    Version, "version", Rule::Version
);
validated_name!(
    /// The name of a template variable, e.g. `version` in `{version}`.
    VariableName, "variable name", Rule::Variable
);
validated_name!(
    /// A Chef tag, role or recipe value. Any printable text: the Chef adapter escapes it for Lucene.
    ChefTerm, "Chef tag, role or recipe", Rule::Printable
);
validated_name!(
    /// The name of an environment variable set for a remote command, e.g. `VESEMIR_VERSION`.
    /// A shell identifier, so it can be written into a command line unquoted.
    EnvVarName, "environment variable name", Rule::EnvVar
);
validated_name!(
    /// Who asked for a deployment: a person or a pipeline.
    Requester, "requester", Rule::Printable
);

impl EnvVarName {
    /// A name the code itself spells, such as `VESEMIR_HOST`: checked in debug builds, and by
    /// the driver's tests that run every command.
    pub fn builtin(value: &'static str) -> Self {
        debug_assert!(Rule::EnvVar.accepts(value), "{value:?} is not a shell identifier");
        Self(Arc::from(value))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Strings matching `pattern` (its anchors dropped: the generator matches whole strings).
    fn matching(pattern: &'static str) -> impl Strategy<Value = String> {
        let inner = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(inner).expect("a pattern the generator reads")
    }

    proptest! {
        #[test]
        fn patterns_agree_with_the_rules(
            identifier in matching(pattern::IDENTIFIER),
            haproxy in matching(pattern::HAPROXY),
            version in matching(pattern::VERSION),
            variable in matching(pattern::VARIABLE),
            printable in matching(pattern::PRINTABLE),
        ) {
            prop_assert!(Rule::Identifier.accepts(&identifier), "{identifier:?}");
            prop_assert!(Rule::Haproxy.accepts(&haproxy), "{haproxy:?}");
            prop_assert!(Rule::Version.accepts(&version), "{version:?}");
            prop_assert!(Rule::Variable.accepts(&variable), "{variable:?}");
            prop_assert!(printable.len() > 255 || Rule::Printable.accepts(&printable), "{printable:?}");
        }
    }

    #[test]
    fn haproxy_names_refuse_command_separators() {
        for bad in ["web;shutdown", "web\nshow", "web 1", "", "web/1", "web#"] {
            let err = ServerName::new(bad).expect_err(bad);
            assert_eq!(err.kind, "HAProxy server name");
            assert!(err.to_string().contains("HAProxy's legal characters"), "{err}");
        }
        assert_eq!(ServerName::new("web-01.a:b_c").map(|n| n.to_string()).ok(), Some("web-01.a:b_c".into()));
    }

    #[test]
    fn identifiers_must_start_with_alphanumeric() {
        assert!(AppName::new("-shop").is_err());
        assert!(AppName::new(".shop").is_err());
        assert!(AppName::new("shop.web_2-x").is_ok());
        assert!(AppName::new("a".repeat(65)).is_err());
    }

    #[test]
    fn printable_refuses_control_characters() {
        assert!(ChefTerm::new("web server").is_ok());
        assert!(ChefTerm::new("a\nb").is_err());
        assert!(ChefTerm::new(" padded").is_err());
        assert!(Requester::new("alice@example.com").is_ok());
    }

    #[test]
    fn env_var_names_are_shell_identifiers() {
        for bad in ["", "1A", "A B", "A=B", "A;B", "$(x)", "X;id", "BAD NAME"] {
            assert!(EnvVarName::new(bad).is_err(), "{bad:?}");
        }
        for good in ["A_1", "_x", "VESEMIR_VERSION", "GOOD_NAME_1"] {
            assert!(EnvVarName::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn deserializing_validates() {
        let ok: Result<BackendName, _> = serde_json::from_str("\"be_web\"");
        assert!(ok.is_ok());
        let bad: Result<BackendName, _> = serde_json::from_str("\"be;web\"");
        let message = bad.expect_err("must refuse").to_string();
        assert!(message.contains("HAProxy backend name"), "{message}");
    }
}
