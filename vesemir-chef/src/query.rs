//! Chef search queries: Lucene escaping, and the query a [`Selector`] turns into.
//!
//! Chef Infra Server hands the query to Solr/Elasticsearch, which honours a backslash before any
//! special character. goiardi 0.11.10 (tested by experiment against its "ersatz Solr" in-memory
//! index) parses only part of that syntax: `\ ` (escaped space), `\+`, `\/` and a leading `?`
//! are parse errors, `\*` still acts as a wildcard, and phrase queries (`"a b"`) match the words
//! anywhere. So for goiardi a term with anything beyond letters, digits and `_ . @ : -` is left
//! out of the server's query, and every row the server returns is checked against the whole
//! selector on this side (in the private `search` module): the server narrows, the adapter decides exactly.

use vesemir_core::name::ChefTerm;
use vesemir_core::ports::Selector;

use crate::config::ServerFlavor;

/// Characters Lucene's query parser treats specially, plus whitespace. `&&` and `||` are covered
/// by escaping every `&` and `|`.
const SPECIAL: &[char] =
    &['\\', '+', '-', '!', '(', ')', '{', '}', '[', ']', '^', '"', '~', '*', '?', ':', '/', '&', '|', ' '];

/// `term` with every Lucene special character and every whitespace character backslash-escaped.
pub fn escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len() * 2);
    for c in term.chars() {
        if SPECIAL.contains(&c) || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether goiardi 0.11.10 parses the escaped form of `term` and matches it exactly.
fn goiardi_can_express(term: &str) -> bool {
    !term.is_empty()
        && term.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && term.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | ':' | '-'))
}

/// The query a selector turns into for `flavor` (`Auto` is treated like goiardi: the narrower
/// query; callers resolve `Auto` first): the terms joined with `AND`. A raw query is
/// returned as it is. When no term can be expressed (goiardi), every node is searched
/// (`*:*`) and the selector is applied to the rows.
pub fn build(selector: &Selector, flavor: ServerFlavor) -> String {
    if let Some(raw) = &selector.raw_query {
        return raw.clone();
    }
    let mut clauses = Vec::new();
    let mut add = |field: &str, terms: &[ChefTerm]| {
        for term in terms {
            let term = term.as_str();
            if flavor != ServerFlavor::ChefInfra && !goiardi_can_express(term) {
                continue;
            }
            clauses.push(format!("{field}:{}", escape(term)));
        }
    };
    add("tags", &selector.tags);
    add("roles", &selector.roles);
    add("recipes", &selector.recipes);
    if let Some(env) = &selector.environment {
        clauses.push(format!("chef_environment:{}", escape(env.as_str())));
    }
    if clauses.is_empty() {
        "*:*".to_owned()
    } else {
        clauses.join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::name::EnvironmentName;

    fn term(value: &str) -> ChefTerm {
        ChefTerm::new(value).expect("valid term")
    }

    #[test]
    fn escapes_every_special_character_backslash_and_space() {
        assert_eq!(escape(r#"a b"#), r"a\ b");
        assert_eq!(escape(r"back\slash"), r"back\\slash");
        assert_eq!(escape("shop::web"), r"shop\:\:web");
        assert_eq!(escape(r#"+-&&||!(){}[]^"~*?:/"#), r#"\+\-\&\&\|\|\!\(\)\{\}\[\]\^\"\~\*\?\:\/"#);
        assert_eq!(escape("plain_name.1"), "plain_name.1");
    }

    #[test]
    fn selector_becomes_an_and_of_fields() {
        let selector = Selector {
            tags: vec![term("shop"), term("a b")],
            roles: vec![term("web")],
            recipes: vec![term("shop::web")],
            environment: Some(EnvironmentName::new("production").expect("env")),
            raw_query: None,
        };
        assert_eq!(
            build(&selector, ServerFlavor::ChefInfra),
            r"tags:shop AND tags:a\ b AND roles:web AND recipes:shop\:\:web AND chef_environment:production"
        );
        assert_eq!(
            build(&selector, ServerFlavor::Goiardi),
            r"tags:shop AND roles:web AND recipes:shop\:\:web AND chef_environment:production"
        );
    }

    #[test]
    fn goiardi_falls_back_to_every_node_when_no_term_is_expressible() {
        let selector = Selector { tags: vec![term("a b")], ..Selector::default() };
        assert_eq!(build(&selector, ServerFlavor::Goiardi), "*:*");
    }

    #[test]
    fn raw_query_is_used_as_is() {
        let selector = Selector { raw_query: Some("role:web OR role:api".into()), ..Selector::default() };
        assert_eq!(build(&selector, ServerFlavor::ChefInfra), "role:web OR role:api");
    }
}
