//! Property: the server's configuration loader and `POST /v1/deployments` (the real router,
//! in-process) answer every document, however odd (huge numbers, deep nesting, odd Unicode,
//! NUL, long strings, wrong types, negative numbers, floats), naming a field. Never a panic,
//! never a 5xx.

mod support;

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::*;
use vesemir_http::ServerConfig;

fn odd_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(2.5)),
        Just(json!(null)),
        Just(json!(false)),
        Just(json!("")),
        Just(json!("a\u{0}b")),
        Just(json!("10000000000000000000s")),
        Just(json!("99999999999999999999999h")),
        Just(json!("\u{202e}🦀\u{200b}\u{10ffff}")),
        Just(json!("y".repeat(20_000))),
        Just(json!([])),
        Just(json!({})),
        ".{0,30}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    odd_leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// `base` with 1 to 4 values replaced by odd ones, removed, or nested 0..300 arrays deep.
fn mutations_of(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, any_json(), 0..300usize), 1..5).prop_map(
        move |edits| {
            let mut doc = base.clone();
            for (index, kind, value, depth) in edits {
                let mut all = Vec::new();
                pointers(&doc, String::new(), &mut all);
                let at = index.get(&all).clone();
                let Some((parent, key)) = at.rsplit_once('/') else { continue };
                let value =
                    if kind == 1 { (0..depth).fold(value, |v, _| Value::Array(vec![v])) } else { value };
                match doc.pointer_mut(parent) {
                    Some(Value::Object(m)) if kind == 2 => {
                        m.remove(key);
                    }
                    Some(Value::Object(m)) => {
                        m.insert(key.to_owned(), value);
                    }
                    Some(Value::Array(a)) => {
                        if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                            *slot = value;
                        }
                    }
                    _ => {}
                }
            }
            doc
        },
    )
}

fn valid_config() -> Value {
    json!({
        "listen": "127.0.0.1:8080", "database": "/tmp/v.db",
        "tokens": [{ "name": "ci", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "team": "payments" }],
        "units": [{ "team": "payments", "application": "shop", "environment": "production", "playbooks": ["web"],
                    "targets": { "tags": ["web"], "chef_environment": "fleet" },
                    "load_balancer": { "backend": "be_web", "instances": [{ "address": "127.0.0.1", "port": 9001 }] },
                    "strategy": { "max_concurrency": 2, "canary": true },
                    "variables": { "channel": { "pattern": "^[a-z]+$", "secret": false } } }],
        "playbooks": { "web": { "steps": [{ "name": "install", "run": "install {version}", "timeout": "1m" }],
                                "health": { "command": "check", "timeout": "10s", "interval": "1s" } } },
        "limits": { "max_body_bytes": 65536, "max_concurrent_deployments": 4, "max_queued_deployments": 10,
                    "request_timeout": "30s", "deployment_timeout": "4h", "call_timeout": "30s", "shutdown_grace": "60s" },
        "log": { "json": true, "level": "info" }
    })
}

fn config_answers(text: &str) -> Result<(), TestCaseError> {
    if let Err(error) = ServerConfig::from_toml(text) {
        prop_assert!(!error.errors().is_empty());
        for p in error.errors() {
            prop_assert!(!p.field.is_empty(), "a problem without a field: {p:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn server_configs_are_answered_naming_fields(doc in mutations_of(valid_config())) {
        // TOML cannot hold null: such a document is one TOML cannot express, so skip the value.
        if let Ok(text) = toml::to_string(&doc) {
            config_answers(&text)?;
        }
    }

    #[test]
    fn arbitrary_config_text_is_answered_naming_fields(text in "\\PC{0,200}") {
        config_answers(&text)?;
    }
}

/// One server for every case, on a runtime of its own.
fn post_cases(docs: impl Strategy<Value = Value>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let fleet = Fleet::new(2);
    let server = runtime.block_on(TestServer::start(fleet.clone()));
    let config = ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() };
    proptest::test_runner::TestRunner::new(config)
        .run(&docs, |doc| {
            let reply = runtime.block_on(server.post(PAYMENTS, &doc));
            prop_assert!(!reply.status.is_server_error(), "{} {}", reply.status, reply.text);
            // Refusals of the input name its fields (403, 409 and 429 are about who and when).
            let input =
                [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::UNPROCESSABLE_ENTITY];
            if input.contains(&reply.status) {
                let problems = reply.json["problems"].as_array().cloned().unwrap_or_default();
                prop_assert!(!problems.is_empty(), "a {} without problems: {}", reply.status, reply.text);
                for p in problems {
                    prop_assert!(
                        p["field"].as_str().is_some_and(|f| !f.is_empty()),
                        "a problem without a field: {}",
                        reply.text
                    );
                }
            }
            if reply.status == StatusCode::ACCEPTED {
                // Let it end so the next case is not refused as a second one of shop.
                runtime.block_on(server.wait_finished(id_of(&reply)));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn post_deployments_answers_mutated_requests_naming_fields() {
    post_cases(mutations_of(Fleet::new(2).body("shop", "production", "payments")));
}

#[test]
fn post_deployments_answers_arbitrary_documents_naming_fields() {
    post_cases(any_json());
}
