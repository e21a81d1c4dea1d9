//! `vesemir serve` shares its adapters between deployments: 16 deployments at once on the lab's
//! hosts (16 units, one host each, each host its own backend on two real HAProxy instances with
//! the stats socket's default limit, so that neither host locks nor the backends' budgets make
//! them wait) never have more than the HAProxy adapter's cap of connections open to one runtime
//! API. The connections are counted by a proxy in front of each instance's runtime API, which
//! also holds each reply back a little so that connections overlap the way they do on a busy
//! box.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Served;
use vesemir_core::ports::LbEndpoint;
use vesemir_examples::lab::{Lab, LabOptions};
use vesemir_haproxy::HaproxyConfig;
use vesemir_testkit::haproxy::HaproxyInstance;
use vesemir_testkit::process::free_port;

const TEAM: &str = "lab-team-demo-token";
const ADMIN: &str = "lab-admin-demo-token";
const DEPLOYMENTS: usize = 16;

/// How long the proxy holds each reply back.
const REPLY_DELAY: Duration = Duration::from_millis(40);

/// Connections the proxy has open to HAProxy's runtime API now (what the stats socket sees),
/// the most seen at once, and the total.
#[derive(Default)]
struct Count {
    open: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

/// A TCP proxy on 127.0.0.1 in front of `target`, counting its connections to `target`; it runs
/// until the test process ends.
fn counting_proxy(target: SocketAddr) -> (u16, Arc<Count>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(Count::default());
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let count = counted.clone();
            std::thread::spawn(move || relay(client, target, &count));
        }
    });
    (port, count)
}

/// Passes one runtime API exchange through: the command to HAProxy, then (after
/// [`REPLY_DELAY`]) its reply back. The connection to HAProxy is counted from before it is
/// made until HAProxy has closed it and the whole reply is passed on, and only then is the
/// client told the reply ended: so the count never runs behind the client's own (the adapter
/// frees its slot only after that end), and never counts a connection HAProxy did not hold.
fn relay(mut client: TcpStream, target: SocketAddr, count: &Count) {
    let now = count.open.fetch_add(1, Ordering::SeqCst) + 1;
    count.max.fetch_max(now, Ordering::SeqCst);
    count.total.fetch_add(1, Ordering::SeqCst);
    let mut server = match TcpStream::connect(target) {
        Ok(server) => server,
        Err(_) => {
            count.open.fetch_sub(1, Ordering::SeqCst);
            return;
        }
    };
    let (Ok(mut client_reader), Ok(mut server_writer)) = (client.try_clone(), server.try_clone()) else {
        count.open.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut server_writer);
        let _ = server_writer.shutdown(Shutdown::Write);
    });
    std::thread::sleep(REPLY_DELAY);
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match server.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    drop(server);
    count.open.fetch_sub(1, Ordering::SeqCst);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// One HTTP/1.1 exchange: the status and the body.
fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("writes");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, body.to_owned())
}

/// Two HAProxy instances with one backend per lab host (`be_web-01` holds server `web-01`...),
/// health-checked like the lab's own boxes.
fn haproxy_per_host(lab: &Lab) -> Vec<HaproxyInstance> {
    let backends: String = lab
        .hosts()
        .iter()
        .map(|h| {
            format!(
                "backend be_{name}\n    option httpchk GET /health\n    server {name} {app} weight 100 check inter 300ms fall 2 rise 1\n\n",
                name = h.name,
                app = h.app
            )
        })
        .collect();
    let first = format!("be_{}", lab.hosts()[0].name);
    vec![HaproxyInstance::start(&first, &backends), HaproxyInstance::start(&first, &backends)]
}

/// The lab's server configuration with one unit per host (`app-01`... on `web-01`... behind
/// `be_web-01`...), each behind both instances' runtime APIs through the proxies at `proxies`,
/// on `port`.
fn server_config(lab: &Lab, port: u16, proxies: &[u16]) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.server_config_path()).expect("the lab's server config");
    let head = text.split("[[units]]").next().expect("text before the units");
    let instances: Vec<String> =
        proxies.iter().map(|p| format!("{{ address = \"127.0.0.1\", port = {p} }}")).collect();
    let mut config = head.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    for (i, host) in lab.hosts().iter().enumerate() {
        config.push_str(&format!(
            "[[units]]\nteam = \"lab\"\napplication = \"app-{n:02}\"\nenvironment = \"lab\"\nplaybooks = [\"lab\"]\n\
             targets = {{ hosts = [{{ name = \"{name}\", address = \"{address}\" }}] }}\n\
             load_balancer = {{ backend = \"be_{name}\", instances = [{instances}], drain_timeout = \"10s\" }}\n\
             strategy = {{ max_concurrency = 1, concurrency = 1 }}\n\n",
            n = i + 1,
            name = host.name,
            address = host.address,
            instances = instances.join(", "),
        ));
    }
    let path = lab.dir().join("vesemir-server-adapters.toml");
    std::fs::write(&path, config).expect("server config");
    path
}

#[test]
fn sixteen_deployments_at_once_never_open_more_than_the_cap_to_one_runtime_api() {
    let lab = Lab::start(LabOptions { hosts: DEPLOYMENTS, ..LabOptions::default() }).expect("the lab starts");
    let haproxy = haproxy_per_host(&lab);
    let mut proxies = Vec::new();
    for instance in &haproxy {
        let LbEndpoint::Tcp { address, port } = instance.tcp_endpoint() else {
            panic!("TCP runtime API expected")
        };
        let target: SocketAddr = format!("{address}:{port}").parse().expect("an address");
        proxies.push(counting_proxy(target));
    }
    let port = free_port();
    let ports: Vec<u16> = proxies.iter().map(|(p, _)| *p).collect();
    let server_config = server_config(&lab, port, &ports);
    let served = Served::start(lab.config_path(), lab.dir(), &server_config, port);

    let started = Instant::now();
    let posts: Vec<std::thread::JoinHandle<(u16, String)>> = (1..=DEPLOYMENTS)
        .map(|n| {
            std::thread::spawn(move || {
                let body = format!(
                    r#"{{"application":"app-{n:02}","environment":"lab","team":"lab","version":"2.0.0","playbook":"lab"}}"#
                );
                http(port, "POST", "/v1/deployments", TEAM, &body)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for post in posts {
        let (status, body) = post.join().expect("posts");
        assert_eq!(status, 202, "{body}");
        let accepted: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        ids.push(accepted["id"].as_i64().expect("an id"));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in &ids {
        loop {
            let (status, body) = http(port, "GET", &format!("/v1/deployments/{id}"), ADMIN, "");
            assert_eq!(status, 200, "{body}");
            let record: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            if record["status"] != "queued" && record["status"] != "running" {
                assert_eq!(record["status"], "succeeded", "deployment {id}: {record}");
                break;
            }
            assert!(Instant::now() < deadline, "deployment {id} did not end: {record}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let took = started.elapsed();
    drop(served);

    let cap = HaproxyConfig::default().max_connections_per_instance;
    for (i, (_, count)) in proxies.iter().enumerate() {
        let (max, total) = (count.max.load(Ordering::SeqCst), count.total.load(Ordering::SeqCst));
        eprintln!("haproxy-{}: {total} connections, at most {max} open at once (cap {cap})", i + 1);
        assert!(max <= cap, "haproxy-{}: {max} connections open at once, over the cap of {cap}", i + 1);
        assert!(max >= 2, "haproxy-{}: the deployments' connections never overlapped ({max})", i + 1);
    }
    let instances: Vec<LbEndpoint> = haproxy.iter().map(HaproxyInstance::tcp_endpoint).collect();
    for host in lab.hosts() {
        assert_eq!(lab.served_version(&host.name).ok().as_deref(), Some("2.0.0"), "{}", host.name);
        let backend = vesemir_core::ports::Backend {
            name: vesemir_core::name::BackendName::new(format!("be_{}", host.name)).expect("a name"),
            instances: instances.clone(),
        };
        let server = vesemir_core::name::ServerName::new(&host.name).expect("a name");
        let states = lab
            .block_on(async move {
                use vesemir_core::ports::LoadBalancer;
                vesemir_haproxy::HaproxyLoadBalancer::new(HaproxyConfig::default())
                    .status(&backend, &server)
                    .await
            })
            .expect("HAProxy answers");
        assert!(
            states.iter().all(|s| s.status == vesemir_core::ports::ServerStatus::Up && s.weight == 100),
            "{}: {states:?}",
            host.name
        );
    }
    eprintln!("{DEPLOYMENTS} deployments in {took:?}");
}
