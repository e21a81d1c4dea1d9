//! The Chef adapter against a real Chef server (goiardi, authentication on): signatures,
//! searches, pagination, partial search, and every error an operator can meet.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{admin, create_client, create_environments, create_nodes, fleet_server, inventory, Node};
use vesemir_chef::{ChefInventory, ClientKey, ServerFlavor, SignVersion};
use vesemir_core::ports::{Inventory, Selector};
use vesemir_core::PortError;
use vesemir_testkit::conformance::inventory::selector;
use vesemir_testkit::goiardi::Goiardi;

const TEST_KEY: &str = include_str!("fixtures/test-client.pem");

fn names(hosts: &[vesemir_core::Host]) -> BTreeSet<String> {
    hosts.iter().map(|h| h.name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goiardi_accepts_mixlib_1_3_and_1_0_signatures() {
    let server = Goiardi::start();
    for version in [SignVersion::V1_3, SignVersion::V1_0] {
        let admin = admin(&server, version);
        let nodes = admin.get("/nodes", &[]).await.unwrap_or_else(|e| panic!("{version:?}: {}", e.chain()));
        assert!(nodes.is_object(), "{version:?}: {nodes}");
    }
    let admin = admin(&server, SignVersion::V1_3);
    create_nodes(&admin, vec![Node::new("web-01", "10.0.0.1", &["shop"])], 1).await;
    let key = create_client(&admin, "old-style").await;
    let mut config = common::config(&server.url, "old-style", key);
    config.sign_version = SignVersion::V1_0;
    let inventory = ChefInventory::new(config).expect("inventory");
    let hosts =
        inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect("search signed with 1.0");
    assert_eq!(names(&hosts), BTreeSet::from(["web-01".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_2500_nodes_returns_every_node_exactly_once() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    let mut nodes: Vec<Node> = (0..2500)
        .map(|i| Node::new(&format!("bulk-{i:04}"), &format!("10.1.{}.{}", i / 250, i % 250), &["bulk"]))
        .collect();
    nodes.extend((0..20).map(|i| Node::new(&format!("other-{i:02}"), "10.2.0.1", &["bulky"])));
    let expected: BTreeSet<String> =
        nodes.iter().filter(|n| n.tags == ["bulk"]).map(|n| n.name.clone()).collect();
    let started = Instant::now();
    create_nodes(&admin, nodes, 16).await;
    eprintln!("created 2520 nodes through signed API calls in {:?}", started.elapsed());
    let key = create_client(&admin, "vesemir").await;

    let inventory = inventory(&server, "vesemir", key.clone());
    assert_eq!(inventory.flavor().await.expect("detected"), ServerFlavor::Goiardi);
    // goiardi answers rows in a new order every time: several searches, each complete.
    for round in 0..3 {
        let started = Instant::now();
        let hosts = inventory.discover(&selector(&["bulk"], &[], &[], None)).await.expect("search");
        eprintln!("round {round}: searched 2500 of 2520 nodes in {:?}", started.elapsed());
        assert_eq!(hosts.len(), 2500, "each node once");
        assert_eq!(names(&hosts), expected, "the set returned equals the set created");
        for host in &hosts {
            assert!(host.address.starts_with("10.1."), "{host}");
        }
    }

    // Told it is a Chef Infra Server, the adapter would page with `start`; goiardi reports the
    // page size as `total`, so it would stop after one page. It must refuse, not answer a subset.
    let mut config = common::config(&server.url, "vesemir", key);
    config.flavor = ServerFlavor::ChefInfra;
    config.page_size = 1000;
    let misconfigured = ChefInventory::new(config).expect("inventory");
    match misconfigured.discover(&selector(&["bulk"], &[], &[], None)).await {
        Err(PortError::Adapter { source, .. }) => {
            assert!(source.to_string().contains("set the server flavor"), "{source}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|h| h.len())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_search_fetches_the_configured_address_and_extra_attributes() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    create_environments(&admin, &["production"]).await;
    let mut node = Node::new("web-01", "10.0.0.1", &["shop"]);
    node.environment = "production".into();
    create_nodes(&admin, vec![node], 1).await;
    let key = create_client(&admin, "vesemir").await;
    let mut config = common::config(&server.url, "vesemir", key);
    config.address_attribute = "fqdn".into();
    config.extra_attributes = vec!["rack.row".into(), "no.such.attribute".into()];
    let inventory = ChefInventory::new(config).expect("inventory");
    let hosts = inventory.discover(&selector(&["shop"], &[], &[], Some("production"))).await.expect("search");
    assert_eq!(hosts.len(), 1);
    let host = &hosts[0];
    assert_eq!(host.address, "web-01.example.com");
    assert_eq!(host.attributes.get("rack.row").map(String::as_str), Some("row-6"));
    assert_eq!(host.attributes.get("ipaddress").map(String::as_str), Some("10.0.0.1"));
    assert_eq!(host.attributes.get("chef_environment").map(String::as_str), Some("production"));
    assert!(!host.attributes.contains_key("no.such.attribute"), "{:?}", host.attributes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_query_from_the_operator_is_used_as_is() {
    let (_server, inventory) = fleet_server().await;
    let raw = Selector {
        raw_query: Some("recipes:shop\\:\\:web AND chef_environment:production".into()),
        ..Selector::default()
    };
    let hosts = inventory.discover(&raw).await.expect("raw search");
    assert_eq!(names(&hosts), BTreeSet::from(["web-01".to_owned(), "web-02".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_boxes_are_found_by_recipe() {
    // The driver turns these hosts into runtime API endpoints (load_balancer.discover).
    let (_server, inventory) = fleet_server().await;
    let boxes = inventory.discover(&selector(&[], &[], &["haproxy"], None)).await.expect("lb discovery");
    assert_eq!(boxes.iter().map(|b| b.address.as_str()).collect::<Vec<_>>(), ["10.0.2.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_unauthorized_with_a_hint_and_no_key_material() {
    let (server, _inventory) = fleet_server().await;
    let wrong = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("test key");
    let inventory = inventory(&server, "vesemir", wrong);
    let mut config =
        common::config(&server.url, "vesemir", ClientKey::from_pem(TEST_KEY.as_bytes()).expect("key"));
    config.flavor = ServerFlavor::Goiardi;
    let configured = ChefInventory::new(config).expect("inventory");
    for inventory in [inventory, configured] {
        let error = inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("wrong key");
        let text = error.chain();
        assert!(matches!(error, PortError::Unauthorized { .. }), "{text}");
        assert!(text.contains("key") && text.contains("clock"), "{text}");
        for line in TEST_KEY.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "key material in the error: {text}");
        }
        assert!(!format!("{inventory:?}").contains(TEST_KEY.lines().nth(1).unwrap_or("-")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_request_is_rejected_with_a_hint() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    let key = create_client(&admin, "reader").await;
    let mut config = common::config(&server.url, "reader", key);
    config.flavor = ServerFlavor::Goiardi;
    let reader = vesemir_chef::ChefClient::new(&config).expect("client");
    let error = reader
        .post("/clients", &[], &serde_json::json!({ "name": "sneaky", "admin": true }))
        .await
        .expect_err("a non-admin client may not create clients");
    match &error {
        PortError::Rejected { reason, .. } => {
            assert!(reason.contains("403") && reason.contains("grant"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_index_is_not_found() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    let error = admin.get("/search/nodez", &[("q", "*:*")]).await.expect_err("no such index");
    match &error {
        PortError::NotFound { what } => assert!(what.contains("404") && what.contains("index"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_organization_is_not_found() {
    let server = Goiardi::start();
    let key = ClientKey::from_file(&server.admin_key_path).expect("admin key");
    let mut config = common::config(&format!("{}/organizations/nope", server.url), "admin", key);
    config.flavor = ServerFlavor::Goiardi;
    let inventory = ChefInventory::new(config).expect("inventory");
    let error =
        inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("no such organization");
    match &error {
        PortError::NotFound { what } => assert!(what.contains("organization"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_cannot_be_a_host_is_reported_by_name() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    let mut nameless = Node::new("no-address", "10.0.0.9", &["broken"]);
    nameless.address = String::new();
    create_nodes(&admin, vec![Node::new("web:01", "10.0.0.1", &["colon"]), nameless], 2).await;
    let key = create_client(&admin, "vesemir").await;
    let inventory = inventory(&server, "vesemir", key);
    let error = inventory.discover(&selector(&["colon"], &[], &[], None)).await.expect_err("invalid name");
    assert!(
        error.chain().contains("\"web:01\"") && error.chain().contains("not a valid host name"),
        "{}",
        error.chain()
    );
    let error = inventory.discover(&selector(&["broken"], &[], &[], None)).await.expect_err("no address");
    assert!(
        error.chain().contains("\"no-address\"") && error.chain().contains("ipaddress"),
        "{}",
        error.chain()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_result_is_an_error_unless_allowed() {
    let (server, inventory) = fleet_server().await;
    let nothing = selector(&["no-such-tag"], &[], &[], None);
    let error = inventory.discover(&nothing).await.expect_err("empty is an error");
    assert!(error.to_string().contains("no hosts match tags no-such-tag"), "{error}");
    let admin = admin(&server, SignVersion::V1_3);
    let key = create_client(&admin, "lenient").await;
    let mut config = common::config(&server.url, "lenient", key);
    config.allow_empty = true;
    let lenient = ChefInventory::new(config).expect("inventory");
    assert_eq!(lenient.discover(&nothing).await.expect("allowed").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable_after_retries() {
    let port = vesemir_testkit::process::free_port();
    let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("key");
    let mut config = common::config(&format!("http://127.0.0.1:{port}"), "vesemir", key);
    config.flavor = ServerFlavor::Goiardi;
    let inventory = ChefInventory::new(config).expect("inventory");
    let error = inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("nothing listens");
    assert!(error.is_unreachable(), "{}", error.chain());
    assert!(error.chain().contains("3 attempts"), "{}", error.chain());
}

/// A loopback listener that reads each request and answers `response`, counting connections.
fn canned_server(response: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buffer = [0u8; 8192];
                let _ = stream.read(&mut buffer);
                if response.is_empty() {
                    // Say nothing for longer than the client waits.
                    std::thread::sleep(Duration::from_secs(2));
                } else {
                    let _ = stream.write_all(response.as_bytes());
                }
            });
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let (port, count) = canned_server(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 27\r\n\r\n{\"error\":[\"down for a bit\"]}",
    );
    let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("key");
    let mut config = common::config(&format!("http://127.0.0.1:{port}"), "vesemir", key);
    config.flavor = ServerFlavor::ChefInfra;
    let inventory = ChefInventory::new(config).expect("inventory");
    let started = Instant::now();
    let error = inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("server down");
    let text = error.chain();
    assert!(text.contains("503") && text.contains("3 attempts") && text.contains("down for a bit"), "{text}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "first attempt and 2 retries");
    // 50 ms then 100 ms, each shortened by up to a fifth at random (the Backoff's jitter).
    assert!(started.elapsed() >= Duration::from_millis(120), "backoff of 50 ms then 100 ms, less jitter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out_after_retries() {
    let (port, count) = canned_server("");
    let key = ClientKey::from_pem(TEST_KEY.as_bytes()).expect("key");
    let mut config = common::config(&format!("http://127.0.0.1:{port}"), "vesemir", key);
    config.flavor = ServerFlavor::ChefInfra;
    config.request_timeout = Duration::from_millis(300);
    config.retries = 1;
    config.retry_backoff = Duration::from_millis(10);
    config.max_retry_backoff = Duration::from_millis(10);
    let inventory = ChefInventory::new(config).expect("inventory");
    let error = inventory.discover(&selector(&["shop"], &[], &[], None)).await.expect_err("no answer");
    assert!(error.is_timeout(), "{}", error.chain());
    assert_eq!(count.load(Ordering::SeqCst), 2);
}
