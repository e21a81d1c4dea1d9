//! Paging as Chef Infra Server does it (stable order, `total` = all matches), which goiardi
//! cannot show: Chef Infra Server is not packaged for Debian, so a loopback responder plays its
//! search endpoint. It checks the request is Mixlib-signed and answers windows of a sorted
//! node list by `rows` and `start`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vesemir_chef::{ChefConfig, ChefInventory, ClientKey, ServerFlavor};
use vesemir_core::ports::Inventory;
use vesemir_testkit::conformance::inventory::selector;

const TEST_KEY: &str = include_str!("fixtures/test-client.pem");

struct Responder {
    port: u16,
    requests: Arc<AtomicUsize>,
}

/// Serves `nodes` nodes, at most `max_rows` per answer; with `shift_once`, the first request
/// with `start > 0` answers its window one row early (a node added while paging), repeating
/// one node and missing another.
fn responder(nodes: usize, shift_once: bool, max_rows: usize) -> Responder {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    let shifted = Arc::new(AtomicUsize::new(if shift_once { 1 } else { 0 }));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = Arc::clone(&seen);
            let shifted = Arc::clone(&shifted);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut length = 0usize;
                let mut signed = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    signed |= lower.starts_with("x-ops-authorization-1:");
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                seen.fetch_add(1, Ordering::SeqCst);
                let target = request_line.split_whitespace().nth(1).unwrap_or("/");
                let url = reqwest::Url::parse(&format!("http://x{target}")).expect("url");
                let param = |name: &str| {
                    url.query_pairs().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<usize>().ok())
                };
                let (rows, start) =
                    (param("rows").unwrap_or(1000).min(max_rows), param("start").unwrap_or(0));
                let mut start = start;
                if start > 0 && shifted.swap(0, Ordering::SeqCst) == 1 {
                    start -= 1;
                }
                let page: Vec<_> = (start..(start + rows).min(nodes))
                    .map(|i| {
                        let name = format!("node-{i:05}");
                        json!({ "url": format!("/nodes/{name}"), "data": {
                            "name": name, "ipaddress": format!("10.9.{}.{}", i / 256, i % 256),
                            "vesemir_address": format!("10.9.{}.{}", i / 256, i % 256), "tags": ["paged"],
                        }})
                    })
                    .collect();
                let (status, answer) = if signed && url.path() == "/organizations/acme/search/node" {
                    ("200 OK", json!({ "rows": page, "start": start, "total": nodes }).to_string())
                } else if signed && url.path() == "/organizations/acme/search" {
                    ("200 OK", json!({ "node": "/organizations/acme/search/node" }).to_string())
                } else {
                    ("401 Unauthorized", json!({ "error": ["unsigned or wrong path"] }).to_string())
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    Responder { port, requests }
}

fn chef_infra(port: u16, page_size: usize) -> ChefInventory {
    with_flavor(port, page_size, ServerFlavor::ChefInfra)
}

fn with_flavor(port: u16, page_size: usize, flavor: ServerFlavor) -> ChefInventory {
    let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("key");
    let mut config = ChefConfig::new(format!("http://127.0.0.1:{port}/organizations/acme/"), "vesemir", key);
    config.flavor = flavor;
    config.page_size = page_size;
    config.retries = 0;
    ChefInventory::new(config).expect("inventory")
}

fn expected(nodes: usize) -> BTreeSet<String> {
    (0..nodes).map(|i| format!("node-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chef_infra_server_is_paged_with_rows_and_start_until_total() {
    let server = responder(2345, false, 10_000);
    let hosts =
        chef_infra(server.port, 1000).discover(&selector(&["paged"], &[], &[], None)).await.expect("search");
    let names: BTreeSet<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    assert_eq!(hosts.len(), 2345);
    assert_eq!(names, expected(2345));
    assert_eq!(server.requests.load(Ordering::SeqCst), 3, "pages at 0, 1000 and 2000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_change_while_paging_is_detected_and_searched_again() {
    let server = responder(250, true, 10_000);
    let hosts =
        chef_infra(server.port, 100).discover(&selector(&["paged"], &[], &[], None)).await.expect("search");
    let names: BTreeSet<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    assert_eq!(names, expected(250), "the second pass is complete");
    assert_eq!(hosts.len(), 250, "each node once");
    assert_eq!(server.requests.load(Ordering::SeqCst), 6, "two passes of three pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chef_infra_server_taken_for_goiardi_is_refused_not_answered_in_part() {
    let server = responder(2345, false, 1000);
    let inventory = with_flavor(server.port, 1000, ServerFlavor::Goiardi);
    let error = inventory.discover(&selector(&["paged"], &[], &[], None)).await.expect_err("capped answer");
    let text = error.chain();
    assert!(
        text.contains("reported 2345 matching nodes but answered 1000") && text.contains("chef-infra"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_flavor_detects_chef_infra_server_and_pages() {
    let server = responder(1500, false, 1000);
    let inventory = with_flavor(server.port, 1000, ServerFlavor::Auto);
    let hosts = inventory.discover(&selector(&["paged"], &[], &[], None)).await.expect("search");
    assert_eq!(inventory.flavor().await.expect("detected"), ServerFlavor::ChefInfra);
    assert_eq!(hosts.len(), 1500);
    assert_eq!(server.requests.load(Ordering::SeqCst), 3, "one detection request, then two pages");
}
