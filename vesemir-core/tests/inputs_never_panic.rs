//! Property: the request parser answers every document, however odd (huge numbers, deep
//! nesting, odd Unicode, NUL, long strings, wrong types, negative numbers, floats where integers
//! go), with a request or with problems that each name a field. Never a panic.

use proptest::prelude::*;
use serde_json::{json, Value};
use vesemir_core::request::{DeploymentRequest, RequestPolicy, ValidationErrors};

/// A valid request, as JSON: mutations of it reach deep into validation.
fn valid() -> Value {
    json!({
        "application": "shop", "environment": "production", "team": "payments", "version": "2.0.0",
        "requested_by": "alice",
        "targets": { "hosts": [{ "name": "web-01", "address": "10.0.0.1" }, { "name": "web-02", "address": "10.0.0.2" }] },
        "load_balancer": {
            "backend": "be_web", "instances": [{ "address": "127.0.0.1", "port": 9001 }],
            "drain_timeout": "60s", "on_drain_timeout": "force",
            "ramp": [{ "weight": "10%", "hold": "30s" }, { "weight": 50, "hold": "1m" }]
        },
        "strategy": { "concurrency": 2, "max_failures": "10%", "pause_between_batches": "5s",
                      "canary": { "hosts": 1, "hold": "5m" } },
        "changeset": {
            "steps": [{ "name": "install", "run": "install {version} {channel}", "timeout": "5m" },
                      { "name": "copy", "upload": "a.tar", "to": "/tmp/{host}.tar", "mode": "0644" }],
            "health": { "command": "check", "timeout": "60s", "interval": "2s", "load_balancer_up": true, "up_timeout": "30s" }
        },
        "variables": { "channel": "stable" }
    })
}

/// Odd leaves: huge and negative numbers, floats, NUL, odd Unicode, long strings, durations
/// past every bound.
fn odd_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1.5)),
        Just(json!(1e308)),
        Just(json!(null)),
        Just(json!(true)),
        Just(json!("")),
        Just(json!("\u{0}")),
        Just(json!("a\u{0}b")),
        Just(json!("10000000000000000000s")),
        Just(json!("999999999999999999999999d")),
        Just(json!("-5s")),
        Just(json!("101%")),
        Just(json!("%")),
        Just(json!("{")),
        Just(json!("{nope}")),
        Just(json!("\u{202e}\u{200b}🦀\u{fffd}é\u{10ffff}")),
        Just(json!("x".repeat(100_000))),
        Just(json!([])),
        Just(json!({})),
        ".{0,40}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Arbitrary JSON, nested up to 6 levels.
fn any_json() -> impl Strategy<Value = Value> {
    odd_leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value in `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// `nesting` arrays deep around `inner`.
fn nested(nesting: usize, inner: Value) -> Value {
    (0..nesting).fold(inner, |v, _| Value::Array(vec![v]))
}

/// A valid request with 1 to 4 of its values (or the whole) replaced, removed, nested deep.
fn mutated() -> impl Strategy<Value = Value> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, any_json(), 0..400usize), 1..5);
    edits.prop_map(|edits| {
        let mut doc = valid();
        for (index, kind, value, depth) in edits {
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            let at = index.get(&all).clone();
            let (parent, key) = at.rsplit_once('/').unwrap_or(("", ""));
            let replacement = match kind {
                0 => value,
                1 => nested(depth, value),
                2 => Value::Null,
                _ => json!(format!("{}\u{0}{}", "é".repeat(depth), "\u{1F980}")),
            };
            if at.is_empty() {
                doc = replacement;
                continue;
            }
            match (doc.pointer_mut(parent), kind) {
                (Some(Value::Object(m)), 2) => {
                    m.remove(key);
                }
                (Some(Value::Object(m)), _) => {
                    m.insert(key.to_owned(), replacement);
                }
                (Some(Value::Array(a)), _) => {
                    if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                        *slot = replacement;
                    }
                }
                _ => {}
            }
        }
        doc
    })
}

/// Each problem names a field.
fn fields_named(result: Result<DeploymentRequest, ValidationErrors>) -> Result<(), TestCaseError> {
    if let Err(errors) = result {
        prop_assert!(!errors.errors().is_empty());
        for e in errors.errors() {
            prop_assert!(!e.field.is_empty(), "a problem without a field: {e:?}");
            prop_assert!(!e.message.is_empty(), "a problem without a message: {e:?}");
        }
    }
    Ok(())
}

fn check_document(doc: &Value) -> Result<(), TestCaseError> {
    let policy = RequestPolicy::permissive();
    fields_named(DeploymentRequest::from_json(&doc.to_string(), &policy))?;
    // The same document as TOML, where TOML can hold it (no nulls, a table at the top).
    if let Ok(text) = toml::to_string(doc) {
        fields_named(DeploymentRequest::from_toml(&text, &policy))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutations_of_a_valid_request_are_answered_naming_fields(doc in mutated()) {
        check_document(&doc)?;
    }

    #[test]
    fn arbitrary_documents_are_answered_naming_fields(doc in any_json()) {
        check_document(&doc)?;
    }

    #[test]
    fn arbitrary_text_is_answered_naming_fields(text in "\\PC{0,200}") {
        let policy = RequestPolicy::permissive();
        fields_named(DeploymentRequest::from_json(&text, &policy))?;
        fields_named(DeploymentRequest::from_toml(&text, &policy))?;
    }
}

#[test]
fn the_valid_request_is_valid() {
    DeploymentRequest::from_json(&valid().to_string(), &RequestPolicy::permissive()).expect("valid");
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let policy = RequestPolicy::permissive();
    for depth in [200, 5_000, 100_000] {
        let json = format!("{{\"application\": {}1{}}}", "[".repeat(depth), "]".repeat(depth));
        fields_named(DeploymentRequest::from_json(&json, &policy)).expect("fields");
        let toml = format!("application = {}1{}", "[".repeat(depth), "]".repeat(depth));
        fields_named(DeploymentRequest::from_toml(&toml, &policy)).expect("fields");
        let tables = format!("application = {}{}", "{ a = ".repeat(depth), "}".repeat(depth));
        fields_named(DeploymentRequest::from_toml(&tables, &policy)).expect("fields");
    }
}
