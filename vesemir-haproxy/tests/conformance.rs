//! The shared `LoadBalancer` conformance suite, run against the core's fake and against this
//! adapter on two real haproxy instances, over unix sockets and over TCP.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{dead_endpoint, server_name, Lab};
use vesemir_core::fake::{FakeLoadBalancer, FakeServer};
use vesemir_core::name::BackendName;
use vesemir_core::ports::LbEndpoint;
use vesemir_haproxy::HaproxyLoadBalancer;
use vesemir_testkit::conformance::load_balancer::{
    a_failing_server_is_down_and_out_of_rotation, run_all, LoadBalancerFixture,
};

fn lab_fixture(lab: &Lab, backend: vesemir_core::ports::Backend) -> LoadBalancerFixture {
    LoadBalancerFixture {
        backend,
        servers: (0..lab.servers.len()).map(|i| (server_name(&lab.servers[i].name), lab.ip(i))).collect(),
        unknown_server: server_name("web-unknown"),
        unknown_address: "127.0.0.254".into(),
        unreachable_instance: dead_endpoint(),
        up_timeout: Duration::from_secs(10),
        health_checks: true,
    }
}

/// Makes a lab server fail (`/health` answers 503) or pass its HTTP health checks: a real
/// server going DOWN, seen by both haproxy instances' checks.
fn lab_health(lab: &Lab) -> impl Fn(&vesemir_core::name::ServerName, bool) + '_ {
    |server, healthy| {
        let s = lab.servers.iter().find(|s| s.name == server.as_str()).expect("a lab server");
        s.set_healthy(healthy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_passes_the_conformance_suite() {
    let instances = vec![
        LbEndpoint::Unix { socket: "/run/haproxy/a.sock".into() },
        LbEndpoint::Tcp { address: "10.0.0.2".into(), port: 9999 },
    ];
    let servers: Vec<FakeServer> = (0..3)
        .map(|i| FakeServer {
            configured_weight: 10,
            ..FakeServer::new(server_name(&format!("web{i}")), format!("10.0.1.{i}"))
        })
        .collect();
    let fake = FakeLoadBalancer::new(BackendName::new("be_web").unwrap(), instances, servers);
    let fixture = LoadBalancerFixture {
        backend: fake.backend(),
        servers: (0..3).map(|i| (server_name(&format!("web{i}")), format!("10.0.1.{i}"))).collect(),
        unknown_server: server_name("web-unknown"),
        unknown_address: "10.0.9.9".into(),
        unreachable_instance: LbEndpoint::Tcp { address: "10.0.0.3".into(), port: 9999 },
        up_timeout: Duration::from_secs(1),
        health_checks: true,
    };
    run_all(&fake, &fixture).await;
    a_failing_server_is_down_and_out_of_rotation(&fake, &fixture, |server, healthy| {
        fake.set_healthy(server, healthy)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_over_unix_sockets_passes_the_conformance_suite() {
    let lab = Lab::start(3).await;
    let fixture = lab_fixture(&lab, lab.unix_backend());
    run_all(&HaproxyLoadBalancer::default(), &fixture).await;
    a_failing_server_is_down_and_out_of_rotation(&HaproxyLoadBalancer::default(), &fixture, lab_health(&lab))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_over_tcp_passes_the_conformance_suite() {
    let lab = Lab::start(3).await;
    let mut fixture = lab_fixture(&lab, lab.tcp_backend());
    let missing = std::env::temp_dir().join(format!("vesemir-no-such-haproxy-{}.sock", std::process::id()));
    fixture.unreachable_instance = LbEndpoint::Unix { socket: missing };
    run_all(&HaproxyLoadBalancer::default(), &fixture).await;
    a_failing_server_is_down_and_out_of_rotation(&HaproxyLoadBalancer::default(), &fixture, lab_health(&lab))
        .await;
}
