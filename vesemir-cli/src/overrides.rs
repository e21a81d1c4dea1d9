//! Edits of a TOML document before it is read: `--set`/`--config-set KEY=VALUE` and
//! `VESEMIR_<SECTION>_<KEY>` environment variables. Shared by the configuration and the
//! deployment file, which both read the edited document afterwards.

use vesemir_core::request::FieldError;

/// Configuration sections that environment variables may override.
const SECTIONS: [&str; 6] = ["chef", "inventory", "ssh", "haproxy", "driver", "provision"];

/// Variables that look like overrides but are not.
const NOT_OVERRIDES: [&str; 3] = ["VESEMIR_SSH_PASSPHRASE", "VESEMIR_CONFIG", "VESEMIR_TOKEN"];

/// Applies one `KEY=VALUE`, where KEY is a dotted path (`version`, `variables.channel`,
/// `strategy.max_failures`). The value replaces a string as a string; elsewhere it is read as a
/// TOML value when it is one (`3`, `true`, `"25%"`), else as a string. `flag` names the option
/// in messages (`--set`).
pub fn apply_set(document: &mut toml::Table, flag: &str, set: &str) -> Result<(), String> {
    let Some((key, value)) = set.split_once('=') else {
        return Err(format!("{flag} {set:?}: write KEY=VALUE, e.g. {flag} version=1.2.3"));
    };
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("{flag} {set:?}: {key:?} is not a key path like version or variables.channel"));
    }
    let (last, parents) = path.split_last().ok_or_else(|| format!("{flag} needs a key"))?;
    let mut table = document;
    for part in parents {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("{flag} {set:?}: {part} is not a table")),
        };
    }
    let new = match table.get(*last) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
        _ if parents.first() == Some(&"variables") => toml::Value::String(value.to_owned()),
        _ => typed(value),
    };
    table.insert(last.to_string(), new);
    Ok(())
}

/// Applies `VESEMIR_<SECTION>_<KEY>=value` overrides from `vars`, typed as by [`apply_set`];
/// answers the problems (a section that is not a table).
pub fn apply_env(
    document: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<FieldError> {
    let mut problems = Vec::new();
    for (name, value) in vars {
        if NOT_OVERRIDES.contains(&name.as_str()) {
            continue;
        }
        let Some(rest) = name.strip_prefix("VESEMIR_") else { continue };
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| lower.starts_with(&format!("{s}_"))) else { continue };
        let key = lower[section.len() + 1..].to_owned();
        let entry =
            document.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(table) => {
                table.insert(key, typed(&value));
            }
            _ => problems.push(FieldError::new(*section, format!("must be a table (set by {name})"))),
        }
    }
    problems
}

/// `value` as a TOML value when it is one (`22`, `true`, `"x"`), else as a string.
fn typed(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keep_strings_strings_and_type_the_rest() {
        let mut document: toml::Table =
            "version = \"1\"\n[strategy]\nconcurrency = 1\n".parse().expect("toml");
        apply_set(&mut document, "--set", "version=2").expect("set");
        apply_set(&mut document, "--set", "strategy.concurrency=25%").expect("set");
        apply_set(&mut document, "--set", "strategy.max_failures=2").expect("set");
        apply_set(&mut document, "--set", "variables.channel=42").expect("set");
        assert_eq!(document["version"].as_str(), Some("2"));
        assert_eq!(document["strategy"]["concurrency"].as_str(), Some("25%"));
        assert_eq!(document["strategy"]["max_failures"].as_integer(), Some(2));
        assert_eq!(document["variables"]["channel"].as_str(), Some("42"));
        assert!(apply_set(&mut document, "--set", "version").is_err());
        assert!(apply_set(&mut document, "--set", "version.x=1").is_err());
    }

    #[test]
    fn environment_overrides_apply_typed_values() {
        let mut document: toml::Table = "[ssh]\nuser = \"a\"\n".parse().expect("toml");
        let vars = vec![
            ("VESEMIR_SSH_USER".to_owned(), "deploy".to_owned()),
            ("VESEMIR_SSH_PORT".to_owned(), "2222".to_owned()),
            ("VESEMIR_SSH_PASSPHRASE".to_owned(), "secret".to_owned()),
            ("VESEMIR_HAPROXY_READ_TIMEOUT".to_owned(), "9s".to_owned()),
            ("VESEMIR_PROVISION_SSH_TIMEOUT".to_owned(), "3m".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let problems = apply_env(&mut document, vars.into_iter());
        assert!(problems.is_empty());
        let ssh = document["ssh"].as_table().expect("table");
        assert_eq!(ssh["user"].as_str(), Some("deploy"));
        assert_eq!(ssh["port"].as_integer(), Some(2222));
        assert!(!ssh.contains_key("passphrase"), "the passphrase is not a config key");
        assert_eq!(document["haproxy"]["read_timeout"].as_str(), Some("9s"));
        assert_eq!(
            document["provision"]["ssh_timeout"].as_str(),
            Some("3m"),
            "a top-level key of [provision]"
        );
    }
}
