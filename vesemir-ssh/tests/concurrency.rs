//! 200 hosts at once: every libssh2 call runs on the blocking pool, so the async workers stay
//! free and a timer task keeps ticking on time meanwhile. And the driver's connect ahead over
//! real sshd: the next host's session is opened (its host key checked) while the host before it
//! works, never further ahead than the window.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vesemir_core::event::{Event, EventKind, EventSink};
use vesemir_core::fake::FakeFleet;
use vesemir_core::ports::{Executor, LbEndpoint, OutputSink, RemoteCommand};
use vesemir_core::request::{DeploymentRequest, RequestPolicy};
use vesemir_core::{Control, DriverConfig, Ports};

use common::{command, host, Lab};

/// The tests of this file measure time: one at a time, so 200 sessions at once do not slow the
/// other's connects.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hosts_at_once_do_not_stall_the_runtime() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let mut config = lab.config();
    config.connect_timeout = Duration::from_secs(60);
    let executor = vesemir_ssh::SshExecutor::new(config);
    let n = 200;
    let hosts: Vec<_> = (0..n).map(|i| host(&format!("web-{i:03}"), lab.sshd.address())).collect();

    let done = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let done = done.clone();
        async move {
            let mut worst = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                let before = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                worst = worst.max(before.elapsed());
            }
            worst
        }
    });
    let started = Instant::now();
    let tasks: Vec<_> = hosts
        .iter()
        .cloned()
        .map(|host| {
            let executor = executor.clone();
            tokio::spawn(async move {
                let (sink, _receiver) = OutputSink::channel();
                // Generous: sshd on this same 2-core machine starts 200 shells at once.
                let echo = RemoteCommand { timeout: Duration::from_secs(120), ..command("echo ok") };
                executor.run(&host, &echo, sink).await
            })
        })
        .collect();
    for task in tasks {
        let status = task.await.expect("task").unwrap_or_else(|e| panic!("{}", e.chain()));
        assert!(status.success());
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let worst = ticker.await.expect("ticker");
    assert_eq!(executor.sessions(), n);
    // A 10 ms timer never waited for SSH work: only for CPU shared with sshd on this machine.
    assert!(worst < Duration::from_secs(1), "a 10 ms tick took {worst:?} while 200 hosts ran ({took:?})");
    println!("200 hosts: {took:?}, worst 10 ms tick {worst:?}");
    for host in &hosts {
        executor.close(host).await;
    }
}

/// When each connection reached a relay.
type Accepted = Arc<Mutex<Vec<Instant>>>;

/// A relay to sshd on `listener` that holds each connection `delay` before relaying it (a slow
/// network: the SSH handshake waits that long), recording when each one came.
fn slow_relay(listener: tokio::net::TcpListener, sshd: SocketAddr, delay: Duration) -> Accepted {
    let accepted = Accepted::default();
    let seen = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.lock().expect("lock").push(Instant::now());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(sshd).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    accepted
}

/// When each host's turn began (its first phase event).
#[derive(Default)]
struct Turns(Mutex<Vec<(String, Instant)>>);

impl EventSink for Turns {
    fn emit(&self, event: &Event) {
        if let EventKind::HostPhase { host, .. } = &event.kind {
            let mut turns = self.0.lock().expect("lock");
            if !turns.iter().any(|(h, _)| h == host.as_str()) {
                turns.push((host.to_string(), Instant::now()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_ahead_opens_the_next_hosts_session_while_the_one_before_works() {
    const HOSTS: usize = 4;
    let _alone = ONE_AT_A_TIME.lock().await;
    let delay = Duration::from_millis(500);
    let lab = Lab::start();
    let sshd = SocketAddr::from(([127, 0, 0, 1], lab.sshd.port()));
    // One relay per host, each on the host's own address (FakeFleet's 127.0.1.i) and one port.
    let first = tokio::net::TcpListener::bind("127.0.1.1:0").await.expect("bind");
    let port = first.local_addr().expect("address").port();
    let mut listeners = vec![first];
    for i in 2..=HOSTS {
        let address = FakeFleet::address(i);
        listeners.push(tokio::net::TcpListener::bind((address.as_str(), port)).await.expect("bind"));
    }
    let line = lab.sshd.known_hosts_line();
    let key = line.split_once(' ').map(|(_, key)| key.to_owned()).expect("key");
    let known_hosts: String =
        (1..=HOSTS).map(|i| format!("[{}]:{port} {key}", FakeFleet::address(i))).collect();
    std::fs::write(&lab.known_hosts, known_hosts).expect("known_hosts");
    let mut config = lab.config();
    config.port = port;
    let hosts: Vec<String> = (1..=HOSTS)
        .map(|i| format!("{{ name = \"{}\", address = \"{}\" }}", FakeFleet::host(i), FakeFleet::address(i)))
        .collect();
    let request = format!(
        "application = \"shop\"\nenvironment = \"production\"\nteam = \"payments\"\nversion = \"2.0.0\"\nrequested_by = \"tests\"\n\
         [targets]\nhosts = [{}]\n\
         [load_balancer]\nbackend = \"be_web\"\ninstances = [{{ address = \"127.0.0.1\", port = 9001 }}]\n\
         [strategy]\nconcurrency = 1\n\
         [changeset]\nsteps = [{{ name = \"work\", run = \"sleep 0.6\", timeout = \"10s\" }}]\n",
        hosts.join(", ")
    );
    let request =
        Arc::new(DeploymentRequest::from_toml(&request, &RequestPolicy::permissive()).expect("valid"));

    let relays: Vec<Accepted> =
        listeners.into_iter().map(|listener| slow_relay(listener, sshd, delay)).collect();
    let mut walls = Vec::new();
    for connect_ahead in [true, false] {
        let before: Vec<usize> = relays.iter().map(|r| r.lock().expect("lock").len()).collect();
        let fleet = FakeFleet::new(HOSTS, vec![LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9001 }]);
        let ports = Ports {
            inventory: Arc::new(fleet.inventory.clone()),
            load_balancer: Arc::new(fleet.lb.clone()),
            executor: Arc::new(vesemir_ssh::SshExecutor::new(config.clone())),
        };
        let driver = DriverConfig { connect_ahead, ..DriverConfig::default() };
        let prepared = vesemir_core::prepare(request.clone(), &ports, &driver).await.expect("prepares");
        let turns = Turns::default();
        let started = Instant::now();
        let report = vesemir_core::run(&prepared, &ports, &turns, &Control::new(), &driver).await;
        walls.push(started.elapsed());
        assert!(report.succeeded(), "{}", vesemir_core::render::summary(&report));
        let accepted: Vec<Vec<Instant>> =
            relays.iter().zip(&before).map(|(r, from)| r.lock().expect("lock")[*from..].to_vec()).collect();
        let turns = turns.0.lock().expect("lock").clone();
        assert_eq!(turns.len(), HOSTS);
        for (i, (host, _)) in turns.iter().enumerate() {
            assert_eq!(*host, FakeFleet::host(i + 1).to_string(), "hosts in order");
        }
        for (i, times) in accepted.iter().enumerate() {
            assert_eq!(times.len(), 1, "one session for web-0{}, at its turn or ahead", i + 1);
        }
        let turn = |i: usize| turns[i].1;
        let opened = |i: usize| accepted[i][0];
        for i in 1..HOSTS {
            if connect_ahead {
                // Opened while the host before it worked (its work takes 0.6 s), and not
                // before that host's turn: one ahead at most with a window of 1.
                assert!(opened(i) < turn(i), "web-0{} opened at its turn, not ahead", i + 1);
                assert!(
                    opened(i) + Duration::from_millis(400) > turn(i - 1),
                    "web-0{} opened before web-0{}'s turn: further ahead than the window",
                    i + 1,
                    i
                );
            } else {
                // At its own turn: after the host before it connected (0.5 s) and worked
                // (0.6 s). (Its own turn's event and its connect race by a few ms.)
                assert!(
                    opened(i) > turn(i - 1) + Duration::from_millis(900),
                    "web-0{} opened while web-0{} worked, without connect ahead",
                    i + 1,
                    i
                );
            }
        }
    }
    // Each host after the first saves most of a 0.5 s connect.
    let (ahead, at_turn) = (walls[0], walls[1]);
    println!("4 hosts, 0.5 s connects, 0.6 s steps: connect ahead {ahead:?}, at each turn {at_turn:?}");
    assert!(ahead + Duration::from_millis(800) < at_turn, "ahead {ahead:?}, at each turn {at_turn:?}");
}
