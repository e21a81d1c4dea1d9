//! Event streams (replay and live follow), a restart with a deployment in flight, and the
//! OpenAPI document checked against real responses.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::*;
use vesemir_http::{FixedPorts, Server};

fn seqs(events: &[Sse]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

fn assert_consistent(events: &[Sse]) {
    for e in events {
        assert_eq!(e.data["seq"].as_u64(), Some(e.id), "id and seq agree: {e:?}");
        assert_eq!(e.data["type"].as_str(), Some(e.event.as_str()), "event name is the type: {e:?}");
    }
}

#[tokio::test]
async fn live_followers_get_every_event_once_in_order_until_the_deployment_ends() {
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(100));
    let t = TestServer::start(fleet).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    let path = format!("/v1/deployments/{id}/events");
    let from_start = {
        let router = t.router.clone();
        let path = path.clone();
        tokio::spawn(async move { call(&router, Method::GET, &path, Some(PAYMENTS), None, &[]).await })
    };
    t.wait_for(id, "a host started", |d| d["hosts"][0]["started_seconds"].is_number()).await;
    let joined_late = {
        let router = t.router.clone();
        let path = path.clone();
        tokio::spawn(async move {
            call(&router, Method::GET, &path, Some(PAYMENTS), None, &[("last-event-id", "2")]).await
        })
    };
    let from_start = from_start.await.expect("follower");
    let joined_late = joined_late.await.expect("follower");
    assert_eq!(from_start.status, StatusCode::OK);
    assert_eq!(from_start.headers["content-type"], "text/event-stream");
    let all = parse_sse(&from_start.text);
    assert_consistent(&all);
    let n = all.len() as u64;
    assert!(n > 10, "{}", from_start.text);
    assert_eq!(seqs(&all), (1..=n).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(all[0].event, "deployment_started");
    assert_eq!(all.last().expect("events").event, "deployment_finished");
    assert_eq!(all.last().expect("events").data["outcome"], "succeeded");
    let late = parse_sse(&joined_late.text);
    assert_eq!(seqs(&late), (3..=n).collect::<Vec<_>>(), "replay after Last-Event-ID, then live");
    assert_eq!(t.wait_finished(id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_finished_deployment_replays_from_last_event_id_and_the_stream_ends() {
    let t = TestServer::start(Fleet::new(2)).await;
    let id = id_of(&t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await);
    t.wait_finished(id).await;
    let path = format!("/v1/deployments/{id}/events");
    let all = parse_sse(&t.get(PAYMENTS, &path).await.text);
    let n = all.len() as u64;
    assert_eq!(seqs(&all), (1..=n).collect::<Vec<_>>());
    let rest = t.raw(Method::GET, &path, Some(PAYMENTS), None, &[("last-event-id", "5")]).await;
    let rest = parse_sse(&rest.text);
    assert_eq!(seqs(&rest), (6..=n).collect::<Vec<_>>());
    assert_eq!(rest[0].data, all[5].data, "the replay is the stored event");
    let none = t.raw(Method::GET, &path, Some(PAYMENTS), None, &[("last-event-id", &n.to_string())]).await;
    assert_eq!(parse_sse(&none.text).len(), 0);
    let bad = t.raw(Method::GET, &path, Some(PAYMENTS), None, &[("last-event-id", "seven")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["problems"][0]["field"], "Last-Event-ID");
}

#[test]
fn a_restart_marks_a_running_deployment_interrupted_with_the_hosts_that_may_be_out_of_rotation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("vesemir.db");
    let fleet = Fleet::new(3);
    // Steps take long: the first host stays drained, in its step, when the server stops.
    fleet.executor.set_latency(Duration::from_secs(50));
    let first = {
        let (database, fleet) = (database.clone(), fleet.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let id = runtime.block_on(async {
                let server = Server::open(&config(&database), Arc::new(FixedPorts(fleet.ports())))
                    .await
                    .expect("server opens");
                let router = server.router();
                let body = fleet.body("shop", "production", "payments").to_string();
                let reply =
                    call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[]).await;
                let id = id_of(&reply);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let d =
                        call(&router, Method::GET, &format!("/v1/deployments/{id}"), Some(ADMIN), None, &[])
                            .await;
                    if d.json["hosts"][0]["phase"].as_str().is_some_and(|p| p.starts_with("step")) {
                        break;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "never reached a step: {}", d.text);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                id
            });
            // The server dies with its runtime, mid-deployment.
            runtime.shutdown_timeout(Duration::from_millis(100));
            id
        })
        .join()
        .expect("first server thread")
    };
    assert_eq!(fleet.lb.out_of_rotation().len(), 1, "one host was left drained");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let fresh = Fleet::new(3);
        let server =
            Server::open(&config(&database), Arc::new(FixedPorts(fresh.ports()))).await.expect("reopens");
        let router = server.router();
        let d = call(&router, Method::GET, &format!("/v1/deployments/{first}"), Some(ADMIN), None, &[]).await;
        assert_eq!(d.json["status"], "interrupted", "{}", d.text);
        assert_eq!(d.json["out_of_rotation"], serde_json::json!(["web-01"]), "{}", d.text);
        assert!(d.json["error"].as_str().expect("error").contains("out_of_rotation"));
        assert_eq!(d.json["hosts"][0]["rotation"], "out_of_rotation");
        assert!(d.json["timings"]["finished_at"].is_string());
        let listed =
            call(&router, Method::GET, "/v1/deployments?status=interrupted", Some(ADMIN), None, &[]).await;
        assert_eq!(listed.json["deployments"][0]["id"], first);

        let metrics = call(&router, Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
        let labels = r#"application="shop",environment="production",team="payments""#;
        assert!(
            metrics
                .text
                .contains(&format!("vesemir_deployments_total{{{labels},outcome=\"interrupted\"}} 1")),
            "{}",
            metrics.text
        );
        assert!(
            metrics.text.contains(&format!("vesemir_interrupted_hosts_out_of_rotation_total{{{labels}}} 1")),
            "{}",
            metrics.text
        );

        let events =
            call(&router, Method::GET, &format!("/v1/deployments/{first}/events"), Some(ADMIN), None, &[])
                .await;
        let events = parse_sse(&events.text);
        assert!(events.iter().any(|e| e.event == "host_phase"), "stored events survive the restart");

        // Nothing is running any more: the same application and environment can deploy again.
        let body = fresh.body("shop", "production", "payments").to_string();
        let again = call(&router, Method::POST, "/v1/deployments", Some(PAYMENTS), Some(&body), &[]).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
        assert!(id_of(&again) > first);
    });
}

/// Checks `value` against an OpenAPI 3.1 schema (the subset utoipa emits), strictly: every
/// property of an object must be documented.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling {reference}");
        return check(doc, target, value, at, problems);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let fits = options.iter().any(|o| {
                let mut p = Vec::new();
                check(doc, o, value, at, &mut p);
                p.is_empty()
            });
            if !fits {
                problems.push(format!("{at}: {value} fits none of {key}"));
            }
            return;
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, value, at, problems);
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !fits {
            problems.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            problems.push(format!("{at}: {value} not in {options:?}"));
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                problems.push(format!("{at}.{name}: required but missing"));
            }
        }
        for (name, v) in object {
            match properties.get(name) {
                Some(s) => check(doc, s, v, &format!("{at}.{name}"), problems),
                None => problems.push(format!("{at}.{name}: not documented")),
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            check(doc, schema, v, &format!("{at}[{i}]"), problems);
        }
    }
}

fn check_response(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let code = reply.status.as_u16().to_string();
    let response = &doc["paths"][path][method]["responses"][code.as_str()];
    assert!(!response.is_null(), "{method} {path} answered {code}, which is not documented");
    // The schema documented for the media type answered (errors are application/problem+json).
    let media = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    let schema = &response["content"][media]["schema"];
    assert!(!schema.is_null(), "{method} {path} {code} has no schema for {media}");
    let mut problems = Vec::new();
    check(doc, schema, &reply.json, "$", &mut problems);
    assert!(problems.is_empty(), "{method} {path} {code}: {problems:#?}\n{}", reply.text);
}

#[tokio::test]
async fn openapi_json_describes_the_real_responses() {
    let fleet = Fleet::new(2);
    fleet.executor.set_latency(Duration::from_millis(100));
    let t = TestServer::start(fleet).await;
    let doc = t.raw(Method::GET, "/openapi.json", None, None, &[]).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    for path in [
        "/v1/deployments",
        "/v1/deployments/{id}",
        "/v1/deployments/{id}/events",
        "/v1/deployments/{id}/cancel",
        "/v1/deployments/{id}/confirm",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not described");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Rotation"]["enum"], serde_json::json!(["in_rotation", "out_of_rotation", "unknown"]));
    assert!(schemas["HostOutcome"]["enum"].as_array().is_some_and(|e| e.contains(&Value::from("failed"))));

    let body = t.fleet.body("shop", "production", "payments");
    let accepted = t.post(PAYMENTS, &body).await;
    check_response(&doc, "/v1/deployments", "post", &accepted);
    let id = id_of(&accepted);
    let conflict = t.post(PAYMENTS, &body).await;
    check_response(&doc, "/v1/deployments", "post", &conflict);
    let running = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    check_response(&doc, "/v1/deployments/{id}", "get", &running);
    t.wait_finished(id).await;
    let done = t.get(PAYMENTS, &format!("/v1/deployments/{id}")).await;
    check_response(&doc, "/v1/deployments/{id}", "get", &done);
    // The checker is strict: a wrong type or an undocumented field is caught.
    let mut altered = done.json.clone();
    altered["extra"] = Value::from(1);
    altered["hosts"][0]["outcome"] = Value::from(7);
    let mut problems = Vec::new();
    check(
        &doc,
        &serde_json::json!({ "$ref": "#/components/schemas/Deployment" }),
        &altered,
        "$",
        &mut problems,
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    let cancel = t.call(Method::POST, &format!("/v1/deployments/{id}/cancel"), Some(PAYMENTS), None).await;
    check_response(&doc, "/v1/deployments/{id}/cancel", "post", &cancel);
    let list = t.get(PAYMENTS, "/v1/deployments").await;
    check_response(&doc, "/v1/deployments", "get", &list);
    let mut invalid = body.clone();
    invalid["version"] = Value::from("no spaces allowed");
    check_response(&doc, "/v1/deployments", "post", &t.post(PAYMENTS, &invalid).await);
    check_response(&doc, "/v1/deployments", "post", &t.post("nope", &body).await);
    check_response(&doc, "/v1/deployments", "post", &t.post(SEARCH, &body).await);
    check_response(&doc, "/v1/deployments/{id}", "get", &t.get(PAYMENTS, "/v1/deployments/999").await);
    check_response(&doc, "/healthz", "get", &t.raw(Method::GET, "/healthz", None, None, &[]).await);
    check_response(&doc, "/readyz", "get", &t.raw(Method::GET, "/readyz", None, None, &[]).await);
}
