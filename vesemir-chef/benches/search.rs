//! Search time for 10,000 nodes on a real goiardi: creates the nodes through signed API calls,
//! then times `ChefInventory::discover` (partial search, deduplication, host mapping) and the
//! Mixlib signing alone. Run with `cargo bench -p vesemir-chef`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{admin, create_client, create_nodes, inventory, Node};
use vesemir_chef::sign::{sign, RequestToSign};
use vesemir_chef::{ClientKey, SignVersion};
use vesemir_core::ports::Inventory;
use vesemir_testkit::conformance::inventory::selector;
use vesemir_testkit::goiardi::Goiardi;

const NODES: usize = 10_000;
const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let server = Goiardi::start();
    let admin = admin(&server, SignVersion::V1_3);
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            Node::new(
                &format!("node-{i:05}"),
                &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                &["bench"],
            )
        })
        .collect();
    let started = Instant::now();
    create_nodes(&admin, nodes, 16).await;
    let created = started.elapsed();
    println!(
        "created and indexed {NODES} nodes through signed API calls (16 concurrent): {created:.2?} ({:.0} nodes/s)",
        NODES as f64 / created.as_secs_f64()
    );

    let key = create_client(&admin, "bench").await;
    let inventory = inventory(&server, "bench", key);
    let wanted = selector(&["bench"], &[], &[], None);
    // The first search also detects the server flavor (one extra request).
    let hosts = inventory.discover(&wanted).await.expect("search");
    assert_eq!(hosts.len(), NODES);
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let hosts = inventory.discover(&wanted).await.expect("search");
        times.push(started.elapsed());
        assert_eq!(hosts.len(), NODES, "every node once");
    }
    times.sort();
    println!(
        "discover {NODES} of {NODES} nodes (goiardi, partial search): min {:.2?}, median {:.2?}, max {:.2?} over {ROUNDS} rounds",
        times[0],
        times[ROUNDS / 2],
        times[ROUNDS - 1]
    );

    // Where the time goes: the same partial search as one bare signed request (server work and
    // transfer), against the 1000-row answer goiardi gives for the same query.
    let keys = serde_json::json!({ "name": ["name"], "ipaddress": ["ipaddress"] });
    for rows in ["1000000", "1000"] {
        let started = Instant::now();
        let answer = admin
            .post("/search/node", &[("q", "tags:bench"), ("rows", rows), ("start", "0")], &keys)
            .await
            .expect("search");
        let count = answer["rows"].as_array().map_or(0, Vec::len);
        println!("one signed partial-search request, rows={rows}: {count} rows in {:.2?}", started.elapsed());
    }

    let key = ClientKey::from_file(&server.admin_key_path).expect("key");
    for version in [SignVersion::V1_3, SignVersion::V1_0] {
        let count = 2000u32;
        let started = Instant::now();
        for _ in 0..count {
            let request = RequestToSign {
                method: "POST",
                path: "/search/node",
                body: br#"{"name":["name"]}"#,
                client_name: "bench",
                timestamp: "2026-11-21T12:00:00Z",
            };
            std::hint::black_box(sign(&key, version, &request).expect("sign"));
        }
        let each: Duration = started.elapsed() / count;
        println!("Mixlib {version:?} signature (RSA 2048): {each:.2?} per request");
    }
}
