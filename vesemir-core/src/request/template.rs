//! Command and name templates: operator-owned text with `{variable}` placeholders that a request
//! fills in. In shell commands every value is single-quoted, so a value can never become code.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::VariableName;

/// A parsed template such as `apt-get install -y shop={version}`. `{{` and `}}` stand for
/// literal braces.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(VariableName),
}

/// How a variable's value is written into the rendered text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// As a single shell word, whatever it contains (for commands).
    Shell,
    /// As it is (for names that are validated after rendering).
    None,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(TemplateError(format!(
                                    "unclosed '{{{name}' in {source:?}: close it with '}}', or write '{{{{' for a literal brace"
                                )))
                            }
                        }
                    }
                    let variable = VariableName::new(&name)
                        .map_err(|e| TemplateError(format!("{{{name}}} in {source:?}: {e}")))?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Variable(variable));
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "stray '}}' in {source:?}: write '}}}}' for a literal brace"
                    )))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { source: source.to_owned(), parts })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables it uses.
    pub fn variables(&self) -> BTreeSet<&VariableName> {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Variable(name) => Some(name),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// Renders the template. `lookup` gives each variable's value; a variable it does not know
    /// renders as the empty string (validation has already refused templates using unknown
    /// variables).
    pub fn render<'a>(&self, quoting: Quoting, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable(name) => {
                    let value = lookup(name.as_str()).unwrap_or("");
                    match quoting {
                        Quoting::Shell => push_shell_quoted(&mut out, value),
                        Quoting::None => out.push_str(value),
                    }
                }
            }
        }
        out
    }
}

/// Appends `value` as one POSIX shell word in single quotes; a `'` inside becomes `'\''`.
pub fn push_shell_quoted(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
}

/// `value` as one POSIX shell word.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_shell_quoted(&mut out, value);
    out
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Template::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, value: &str) -> String {
        Template::parse(template).expect("parses").render(Quoting::Shell, |_| Some(value))
    }

    #[test]
    fn values_are_single_shell_words() {
        assert_eq!(render("echo {v}", "a b"), "echo 'a b'");
        assert_eq!(render("echo {v}", "it's"), "echo 'it'\\''s'");
        assert_eq!(render("echo {v}", "$(id); `id`\nrm"), "echo '$(id); `id`\nrm'");
    }

    #[test]
    fn braces_and_errors() {
        assert_eq!(render("awk '{{print}}' {v}", "x"), "awk '{print}' 'x'");
        assert!(Template::parse("echo {version").is_err());
        assert!(Template::parse("echo }").is_err());
        let err = Template::parse("echo {Version}").expect_err("upper case");
        assert!(err.to_string().contains("variable name"), "{err}");
    }

    #[test]
    fn lists_variables() {
        let t = Template::parse("{host}-{version}-{host}").expect("parses");
        let names: Vec<&str> = t.variables().into_iter().map(|v| v.as_str()).collect();
        assert_eq!(names, ["host", "version"]);
        assert_eq!(t.render(Quoting::None, |n| Some(if n == "host" { "web1" } else { "2" })), "web1-2-web1");
    }
}
