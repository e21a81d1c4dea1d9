//! A unit's package source watched by three servers on one PostgreSQL database (a real cluster
//! this test starts) over one fake fleet: each new version in the `Packages` index starts
//! exactly one deployment, whichever instance saw it first; a lower version or a broken index
//! starts none and stops nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::Value;
use support::{call, config, Fleet, ADMIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vesemir_http::source::SourceConfig;
use vesemir_http::{Database, FixedPorts, PostgresUrl, Server};
use vesemir_testkit::postgres::Postgres;

/// Serves `index` at any path on loopback (with an `ETag`, honouring `If-None-Match`); returns
/// its port.
async fn serve_index(index: Arc<Mutex<String>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let index = index.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let body = index.lock().unwrap().clone();
                let etag = format!("\"{}\"", &vesemir_http::auth::sha256_hex(body.as_bytes())[..12]);
                let answer = if head.contains(&format!("if-none-match: {etag}")) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n")
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

fn index(versions: &[&str]) -> String {
    versions
        .iter()
        .map(|v| format!("Package: shop\nVersion: {v}\nArchitecture: all\nDescription: the shop\n more\n\n"))
        .collect()
}

async fn open(url: &str, instance: &str, fleet: &Fleet, repository: u16) -> (Server, Router) {
    let mut config = config(std::path::Path::new("unused.db"));
    config.database = Database::Postgres(PostgresUrl::parse(url).unwrap());
    config.cluster.instance = Some(instance.into());
    let unit =
        config.units.iter_mut().find(|u| u.application == "shop" && u.environment == "production").unwrap();
    unit.source = Some(SourceConfig {
        apt: format!("http://127.0.0.1:{repository}"),
        suite: "stable".into(),
        component: None,
        architecture: "amd64".into(),
        package: "shop".into(),
        interval: Duration::from_millis(1000),
    });
    let server = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.unwrap();
    let router = server.router();
    (server, router)
}

async fn deployments(router: &Router) -> Vec<Value> {
    let path = "/v1/deployments?application=shop&environment=production";
    let reply = call(router, Method::GET, path, Some(ADMIN), None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["deployments"].as_array().cloned().unwrap()
}

/// Waits (at most 30 s) until the unit's newest deployment is `version` and has ended, then
/// three more polling intervals: the unit's deployments by then.
async fn settled_on(router: &Router, version: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = deployments(router).await;
        if all.first().is_some_and(|d| d["version"] == version && d["status"] == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{version} was never deployed: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    deployments(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deploy_each_new_version_once() {
    let cluster = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = cluster.database();
    let fleet = Fleet::new(2);
    let packages = Arc::new(Mutex::new(index(&["1.0"])));
    let repository = serve_index(packages.clone()).await;
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        instances.push(open(&url, name, &fleet, repository).await);
    }
    let router = &instances[0].1;

    let all = settled_on(router, "1.0").await;
    assert_eq!(all.len(), 1, "one deployment for 1.0 across three instances: {all:?}");
    assert_eq!(all[0]["requested_by"], "apt:shop");

    // Two new versions at once and a lower one: only the highest is deployed.
    *packages.lock().unwrap() = index(&["0.9", "1.0", "1.1~rc1", "1.1", "1.0.9"]);
    let all = settled_on(router, "1.1").await;
    let versions: Vec<&str> = all.iter().filter_map(|d| d["version"].as_str()).collect();
    assert_eq!(versions, ["1.1", "1.0"], "{all:?}");

    // A lower version alone, then a broken index: nothing starts, the servers go on.
    *packages.lock().unwrap() = index(&["0.8", "1.1"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    *packages.lock().unwrap() = "<html>not an index</html>".into();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployments(router).await.len(), 2);
    let metrics = call(router, Method::GET, "/metrics", Some(ADMIN), None, &[]).await;
    assert!(
        metrics.text.contains("vesemir_source_up{unit=\"payments/shop/production\"} 0"),
        "{}",
        metrics.text
    );

    // Fixed, with a newer version: deployed once.
    *packages.lock().unwrap() = index(&["1.1", "1.2"]);
    let all = settled_on(&instances[2].1, "1.2").await;
    assert_eq!(all.len(), 3, "{all:?}");
}
