//! Command safety, proved on the wire: a scripted runtime API endpoint records every
//! connection, so the tests can show that each command travels alone on one line and that a
//! server name HAProxy reports but Vesemir refuses never makes it into a command.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{AdminState, Backend, LbEndpoint, LoadBalancer, ServerLookup, Weight};
use vesemir_core::PortError;
use vesemir_haproxy::{HaproxyConfig, HaproxyLoadBalancer};

const STATE_HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

/// A fake runtime API on loopback TCP: answers each connection's bytes with `script` and
/// records them.
struct Scripted {
    endpoint: LbEndpoint,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    async fn start(script: fn(&str) -> Option<String>) -> Self {
        Self::start_slow(script, Duration::ZERO).await
    }

    /// As [`Scripted::start`], answering each command only after `delay`.
    async fn start_slow(script: fn(&str) -> Option<String>, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let mut buf = [0u8; 512];
                    while !bytes.contains(&b'\n') {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => bytes.extend_from_slice(&buf[..n]),
                        }
                    }
                    // Whatever else the client might send after its line is recorded too.
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await
                    {
                        bytes.extend_from_slice(&buf[..n]);
                    }
                    let line = String::from_utf8_lossy(&bytes).into_owned();
                    log.lock().unwrap().push(bytes);
                    tokio::time::sleep(delay).await;
                    match script(line.trim_end()) {
                        Some(reply) => {
                            let _ = stream.write_all(reply.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        Self { endpoint: LbEndpoint::Tcp { address: "127.0.0.1".into(), port }, received }
    }

    fn lines(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    fn backend(&self) -> Backend {
        Backend { name: BackendName::new("be_web").unwrap(), instances: vec![self.endpoint.clone()] }
    }
}

fn lb() -> HaproxyLoadBalancer {
    HaproxyLoadBalancer::new(HaproxyConfig {
        read_timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
        ..HaproxyConfig::default()
    })
}

#[tokio::test]
async fn names_with_separators_or_spaces_cannot_be_made_so_cannot_be_sent() {
    for bad in
        ["web;shutdown sessions server be/web1", "web\nset server be/web1 state maint", "web 1", "web\r"]
    {
        assert!(ServerName::new(bad).is_err(), "{bad:?}");
        assert!(BackendName::new(bad).is_err(), "{bad:?}");
    }
    let from_json: Result<Backend, _> =
        serde_json::from_str(r#"{"name": "be;show stat", "instances": [{"socket": "/run/haproxy.sock"}]}"#);
    assert!(from_json.is_err(), "a backend name from a request is validated too");
}

#[tokio::test]
async fn a_server_name_haproxy_reports_but_vesemir_refuses_is_never_sent() {
    fn script(line: &str) -> Option<String> {
        (line == "show servers state be_web").then(|| {
            let long = "w".repeat(70);
            format!(
                "{STATE_HEADER}3 be_web 1 web;shutdown 10.9.9.1 2 0 10 10 0 6 3 3 6 0 0 0 - 80 - 0 0 - - 0\n\
                 3 be_web 2 web#2 10.9.9.2 2 0 10 10 0 6 3 3 6 0 0 0 - 80 - 0 0 - - 0\n\
                 3 be_web 3 {long} 10.9.9.3 2 0 10 10 0 6 3 3 6 0 0 0 - 80 - 0 0 - - 0\n\n"
            )
        })
    }
    let haproxy = Scripted::start(script).await;
    for address in ["10.9.9.1", "10.9.9.2", "10.9.9.3"] {
        let outcome = lb().resolve(&haproxy.backend(), &ServerLookup::Address(address.into())).await;
        match outcome {
            Err(e @ PortError::Adapter { .. }) => {
                assert!(e.chain().contains("reported a server name Vesemir refuses to use"), "{}", e.chain())
            }
            other => panic!("{address}: expected a refused name, got {other:?}"),
        }
    }
    assert_eq!(haproxy.lines(), vec!["show servers state be_web\n"; 3], "nothing but the lookups was sent");
}

/// An instance that knows one idle, up server `web0`.
fn healthy_instance(line: &str) -> Option<String> {
    if line == "show servers state be_web" {
        Some(format!("{STATE_HEADER}3 be_web 1 web0 10.9.9.1 2 0 10 10 0 6 3 3 6 0 0 0 - 80 - 0 0 - - 0\n\n"))
    } else if line == "show stat be_web 4 -1" {
        Some(
            "# pxname,svname,scur,status,weight,sid,\nbe_web,web0,0,UP,10,1,\nbe_web,BACKEND,0,UP,10,0,\n\n"
                .into(),
        )
    } else if line == "show stat be_web 4 1" {
        Some("# pxname,svname,scur,status,weight,sid,\nbe_web,web0,0,UP,10,1,\n\n".into())
    } else if line.starts_with("set server be_web/web0 ") || line == "shutdown sessions server be_web/web0" {
        Some("\n".into())
    } else {
        Some("Unknown command.\n".into())
    }
}

#[tokio::test]
async fn every_command_travels_alone_on_one_line_of_its_own_connection() {
    let haproxy = Scripted::start(healthy_instance).await;
    let (lb, backend) = (lb(), haproxy.backend());
    let web0 =
        lb.resolve(&backend, &ServerLookup::Name(ServerName::new("web0").unwrap())).await.expect("resolve");
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    lb.wait_drained(&backend, &web0, Duration::from_secs(1)).await.expect("drained");
    lb.shutdown_sessions(&backend, &web0).await.expect("shutdown");
    lb.set_weight(&backend, &web0, Weight::percent(30).unwrap()).await.expect("weight");
    lb.wait_up(&backend, &web0, Duration::from_secs(1)).await.expect("up");
    let states = lb.status(&backend, &web0).await.expect("status");
    assert_eq!((states[0].weight, states[0].configured_weight), (10, 10));

    let lines = haproxy.lines();
    let polls: Vec<&str> =
        lines.iter().map(|l| l.trim_end()).filter(|l| l.starts_with("show stat")).collect();
    assert_eq!(polls[0], "show stat be_web 4 -1", "the first poll learns the server's id");
    assert!(
        polls[1..].iter().all(|l| *l == "show stat be_web 4 1"),
        "later polls ask for its row alone: {polls:?}"
    );
    for line in &lines {
        assert_eq!(line.matches('\n').count(), 1, "one line per connection: {line:?}");
        assert!(line.ends_with('\n') && !line.contains(';'), "{line:?}");
    }
    let changes: Vec<&str> = lines.iter().map(|l| l.trim_end()).filter(|l| !l.starts_with("show ")).collect();
    assert_eq!(
        changes,
        [
            "set server be_web/web0 state drain",
            "shutdown sessions server be_web/web0",
            "set server be_web/web0 weight 30%"
        ]
    );
}

#[tokio::test]
async fn a_server_id_that_names_another_server_after_a_reload_is_not_trusted() {
    fn reloaded(line: &str) -> Option<String> {
        match line {
            "show stat be_web 4 -1" => {
                Some("# pxname,svname,scur,status,weight,sid,\nbe_web,web0,3,UP,10,1,\n".into())
            }
            // After a reload, id 1 is another server.
            "show stat be_web 4 1" => {
                Some("# pxname,svname,scur,status,weight,sid,\nbe_web,web7,0,UP,10,1,\n".into())
            }
            _ => Some("Unknown command.\n".into()),
        }
    }
    let haproxy = Scripted::start(reloaded).await;
    let (lb, backend) = (lb(), haproxy.backend());
    let web0 = ServerName::new("web0").unwrap();
    for _ in 0..2 {
        let outcome = lb.wait_drained(&backend, &web0, Duration::from_millis(100)).await;
        match outcome {
            Err(PortError::Timeout { ref operation, .. }) => {
                assert!(operation.contains("3 sessions"), "{operation}")
            }
            other => panic!("web0's own sessions must be read: {other:?}"),
        }
    }
    let lines = haproxy.lines();
    assert!(lines.iter().any(|l| l == "show stat be_web 4 1\n"), "the id was tried");
    assert!(
        lines.iter().filter(|l| *l == "show stat be_web 4 -1\n").count() >= 2,
        "and found stale: {lines:?}"
    );
}

#[tokio::test]
async fn when_putting_back_fails_too_the_error_says_so_and_what_to_fix() {
    /// Obeys the drain, refuses to undo it.
    fn stubborn(line: &str) -> Option<String> {
        match line {
            "set server be_web/web0 state drain" => Some("\n".into()),
            "set server be_web/web0 state ready" => Some("Permission denied\n\n".into()),
            other => healthy_instance(other),
        }
    }
    /// Refuses every change.
    fn read_only(line: &str) -> Option<String> {
        if line.starts_with("set server") {
            Some("Permission denied\n\n".into())
        } else {
            healthy_instance(line)
        }
    }
    let (first, second) = (Scripted::start(stubborn).await, Scripted::start(read_only).await);
    let backend = Backend {
        name: BackendName::new("be_web").unwrap(),
        instances: vec![first.endpoint.clone(), second.endpoint.clone()],
    };
    let outcome = lb().set_state(&backend, &ServerName::new("web0").unwrap(), AdminState::Drain).await;
    let error = outcome.expect_err("the second instance refuses");
    assert!(matches!(error, PortError::Adapter { .. }), "{error:?}");
    let text = error.chain();
    assert!(text.contains("permission denied"), "{text}");
    assert!(text.contains("`set server be_web/web0 state ready`"), "names the undo that failed: {text}");
    assert!(text.contains("fix them by hand"), "{text}");
    let sent: Vec<String> = first.lines().into_iter().filter(|l| l.starts_with("set ")).collect();
    assert_eq!(sent, ["set server be_web/web0 state drain\n", "set server be_web/web0 state ready\n"]);
}

#[tokio::test]
async fn instances_are_asked_at_once_not_one_after_the_other() {
    let delay = Duration::from_millis(250);
    let slow = [
        Scripted::start_slow(healthy_instance, delay).await,
        Scripted::start_slow(healthy_instance, delay).await,
    ];
    let backend = Backend {
        name: BackendName::new("be_web").unwrap(),
        instances: slow.iter().map(|s| s.endpoint.clone()).collect(),
    };
    let lb = HaproxyLoadBalancer::new(HaproxyConfig {
        read_timeout: Duration::from_secs(5),
        ..HaproxyConfig::default()
    });
    let web0 = ServerName::new("web0").unwrap();
    let started = tokio::time::Instant::now();
    // A snapshot then a change: two round trips, each as slow as one instance.
    lb.set_state(&backend, &web0, AdminState::Drain).await.expect("drain");
    let elapsed = started.elapsed();
    assert!(elapsed >= 2 * delay, "{elapsed:?}");
    assert!(
        elapsed < 4 * delay,
        "two instances asked one after the other would take {:?}: {elapsed:?}",
        4 * delay
    );
}

#[tokio::test]
async fn a_change_whose_reply_is_lost_is_put_back_too() {
    /// Reads fine, never answers a change (it may well have obeyed it).
    fn silent_on_changes(line: &str) -> Option<String> {
        if line.starts_with("set server") {
            None
        } else {
            healthy_instance(line)
        }
    }
    let (good, silent) = (Scripted::start(healthy_instance).await, Scripted::start(silent_on_changes).await);
    let backend = Backend {
        name: BackendName::new("be_web").unwrap(),
        instances: vec![good.endpoint.clone(), silent.endpoint.clone()],
    };
    let outcome = lb().set_state(&backend, &ServerName::new("web0").unwrap(), AdminState::Drain).await;
    let error = outcome.expect_err("the silent instance");
    assert!(
        error.chain().contains("fix them by hand"),
        "the put-back on the silent instance fails too: {}",
        error.chain()
    );
    let changes =
        |s: &Scripted| -> Vec<String> { s.lines().into_iter().filter(|l| l.starts_with("set ")).collect() };
    let expected = ["set server be_web/web0 state drain\n", "set server be_web/web0 state ready\n"];
    assert_eq!(changes(&good), expected, "the instance that obeyed is put back");
    assert_eq!(changes(&silent), expected, "so is the one whose reply was lost");
}

#[tokio::test]
async fn an_instance_that_never_answers_times_out_within_the_read_timeout() {
    let haproxy = Scripted::start(|_| None).await;
    let started = tokio::time::Instant::now();
    let outcome =
        lb().set_state(&haproxy.backend(), &ServerName::new("web0").unwrap(), AdminState::Drain).await;
    assert!(matches!(outcome, Err(ref e) if e.is_timeout()), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(haproxy.lines(), vec!["show servers state be_web\n"], "the change itself was never sent");
}

#[tokio::test]
async fn an_unreadable_reply_is_an_adapter_error_not_a_guess() {
    let haproxy = Scripted::start(|_| Some("1\nsomething else entirely\n".into())).await;
    let outcome = lb().status(&haproxy.backend(), &ServerName::new("web0").unwrap()).await;
    assert!(matches!(outcome, Err(PortError::Adapter { .. })), "{outcome:?}");
}

#[tokio::test]
async fn servers_asks_each_instance_once_for_the_whole_backend() {
    let (first, second) = (Scripted::start(healthy_instance).await, Scripted::start(healthy_instance).await);
    let backend = Backend {
        name: BackendName::new("be_web").unwrap(),
        instances: vec![first.endpoint.clone(), second.endpoint.clone()],
    };
    let servers = lb().servers(&backend).await.expect("servers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].instances.len(), 2);
    assert_eq!(servers[0].instances[0].address.as_deref(), Some("10.9.9.1"));
    for haproxy in [&first, &second] {
        let mut lines = haproxy.lines();
        lines.sort();
        assert_eq!(lines, ["show servers state be_web\n", "show stat be_web 4 -1\n"]);
    }
}

#[tokio::test]
async fn restore_sends_absolute_weights_and_states_and_puts_back_on_refusal() {
    /// Obeys everything but `state drain`.
    fn no_drain(line: &str) -> Option<String> {
        match line {
            "set server be_web/web0 state drain" => Some("Permission denied\n\n".into()),
            other => healthy_instance(other),
        }
    }
    let (first, second) = (Scripted::start(healthy_instance).await, Scripted::start(no_drain).await);
    let backend = Backend {
        name: BackendName::new("be_web").unwrap(),
        instances: vec![first.endpoint.clone(), second.endpoint.clone()],
    };
    let web0 = ServerName::new("web0").unwrap();
    let lb = lb();
    let mut to = lb.status(&backend, &web0).await.expect("status");
    to[0].weight = 37;
    to[0].admin = AdminState::Ready;
    to[1].weight = 5;
    to[1].admin = AdminState::Drain;
    let outcome = lb.restore(&backend, &web0, &to).await;
    assert!(matches!(outcome, Err(PortError::Unauthorized { .. })), "{outcome:?}");
    let changes = |haproxy: &Scripted| -> Vec<String> {
        haproxy
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("set "))
            .map(|l| l.trim_end().to_owned())
            .collect()
    };
    // Ready: the weight first, so it enters rotation at its weight; then put back as read.
    assert_eq!(
        changes(&first),
        [
            "set server be_web/web0 weight 37",
            "set server be_web/web0 state ready",
            "set server be_web/web0 weight 10",
            "set server be_web/web0 state ready",
        ]
    );
    // Drain: the state first, refused, so nothing else was sent there.
    assert_eq!(changes(&second), ["set server be_web/web0 state drain"]);

    to[1].weight = 257;
    let before = first.lines().len();
    let outcome = lb.restore(&backend, &web0, &to).await;
    assert!(matches!(outcome, Err(PortError::Rejected { .. })), "{outcome:?}");
    assert_eq!(first.lines().len(), before, "a weight above 256 is refused before anything is sent");
}
