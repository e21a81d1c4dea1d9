//! Test support: small HTTP servers (tokio, no extra packages) that count the requests they
//! get and can hold one open, a lab of two real haproxy instances fronting them, and a tiny
//! HTTP client.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vesemir_core::name::{BackendName, ServerName};
use vesemir_core::ports::{Backend, LbEndpoint};
use vesemir_testkit::haproxy::{HaproxyInstance, HaproxyOptions};

/// A small HTTP server. `GET /health` answers 200 or 503 as told (not counted); `GET /hold`
/// answers only once released; anything else answers at once with the server's name.
#[derive(Debug, Clone)]
pub struct HttpServer {
    pub name: String,
    pub address: SocketAddr,
    requests: Arc<AtomicU64>,
    active: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    release: watch::Sender<u64>,
}

impl HttpServer {
    /// Starts on `ip` (a loopback address), on a port the system picks.
    pub async fn start(name: &str, ip: Ipv4Addr) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind a loopback address");
        let address = listener.local_addr().expect("local address");
        let (release, _) = watch::channel(0u64);
        let server = Self {
            name: name.to_owned(),
            address,
            requests: Arc::default(),
            active: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
            release,
        };
        let handle = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle.clone().serve(stream));
            }
        });
        server
    }

    async fn serve(self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let status = if path == "/health" {
            if self.healthy.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            }
        } else {
            self.requests.fetch_add(1, Ordering::SeqCst);
            if path == "/hold" {
                self.active.fetch_add(1, Ordering::SeqCst);
                let mut released = self.release.subscribe();
                let start = *released.borrow();
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), released.wait_for(|v| *v > start)).await;
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
            "200 OK"
        };
        let body = &self.name;
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    /// Requests served so far (health checks not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// `/hold` requests waiting now.
    pub fn held(&self) -> u64 {
        self.active.load(Ordering::SeqCst)
    }

    /// Answers every waiting `/hold`.
    pub fn release_held(&self) {
        self.release.send_modify(|v| *v += 1);
    }

    /// Makes `/health` pass or fail.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

/// A response: status code and body.
pub type Response = (u16, String);

/// `GET path` through `frontend`, with an optional `x-target` header (the backend's
/// `use-server` rules send it to that server).
pub async fn get(frontend: SocketAddr, path: &str, target: Option<&str>) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(frontend).await?;
        let header = target.map(|t| format!("x-target: {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{header}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no status line in {text:?}"))
        })?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(40), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")))
}

/// The backends every lab haproxy has.
pub const BACKEND: &str = "be_web";
/// A backend of the same servers with a static algorithm (`balance source`).
pub const STATIC_BACKEND: &str = "be_static";

/// Two haproxy instances fronting the same servers.
pub struct Lab {
    pub servers: Vec<HttpServer>,
    pub instances: Vec<HaproxyInstance>,
}

/// The config of the lab's backends over `servers`.
pub fn backends_config(servers: &[HttpServer]) -> String {
    let mut text = format!(
        "backend {BACKEND}\n    balance roundrobin\n    option httpchk GET /health\n    default-server check inter 100ms fastinter 100ms downinter 100ms rise 2 fall 2 weight 10\n"
    );
    for s in servers {
        text.push_str(&format!("    use-server {0} if {{ req.hdr(x-target) -m str {0} }}\n", s.name));
    }
    for s in servers {
        text.push_str(&format!("    server {} {}\n", s.name, s.address));
    }
    text.push_str(&format!("\nbackend {STATIC_BACKEND}\n    balance source\n"));
    for s in servers {
        text.push_str(&format!("    server {} {} weight 10\n", s.name, s.address));
    }
    if let Some(first) = servers.first() {
        // Follows web0's health and maintenance (`MAINT (via be_web/web0)`).
        text.push_str(&format!(
            "    server trk0 {} weight 10 track {BACKEND}/{}\n",
            first.address, first.name
        ));
        // Configured by DNS name: `show servers state` reports it as srv_fqdn.
        text.push_str(&format!("    server named0 localhost:{} weight 10\n", first.address.port()));
    }
    text
}

impl Lab {
    /// `count` servers (web0, web1...) on 127.0.0.(10+i) behind two haproxy instances.
    pub async fn start(count: u8) -> Self {
        Self::start_with(count, Vec::new()).await
    }

    /// As [`Lab::start`], with extra runtime API sockets on every instance.
    pub async fn start_with(count: u8, extra_sockets: Vec<(String, String)>) -> Self {
        let mut servers = Vec::new();
        for i in 0..count {
            servers.push(HttpServer::start(&format!("web{i}"), Ipv4Addr::new(127, 0, 0, 10 + i)).await);
        }
        let options = HaproxyOptions {
            default_backend: BACKEND.into(),
            backends: backends_config(&servers),
            extra_sockets,
        };
        let instances =
            vec![HaproxyInstance::start_with(options.clone()), HaproxyInstance::start_with(options)];
        let lab = Self { servers, instances };
        lab.wait_all_up().await;
        lab
    }

    /// Waits until every server passed its health checks on every instance.
    async fn wait_all_up(&self) {
        use vesemir_core::ports::LoadBalancer;
        let lb = vesemir_haproxy::HaproxyLoadBalancer::default();
        let backend = self.unix_backend();
        for s in &self.servers {
            lb.wait_up(&backend, &server_name(&s.name), Duration::from_secs(10)).await.unwrap_or_else(|e| {
                panic!("{} never came up: {}\n{}", s.name, e.chain(), self.instances[0].log())
            });
        }
    }

    /// The backend over both instances' unix sockets.
    pub fn unix_backend(&self) -> Backend {
        backend(BACKEND, self.instances.iter().map(HaproxyInstance::unix_endpoint).collect())
    }

    /// The backend over both instances' TCP sockets.
    pub fn tcp_backend(&self) -> Backend {
        backend(BACKEND, self.instances.iter().map(HaproxyInstance::tcp_endpoint).collect())
    }

    /// The backend over the first instance's unix socket and the second's TCP socket.
    pub fn mixed_backend(&self) -> Backend {
        backend(BACKEND, vec![self.instances[0].unix_endpoint(), self.instances[1].tcp_endpoint()])
    }

    /// The address of server `i` as the inventory would give it.
    pub fn ip(&self, i: usize) -> String {
        self.servers[i].address.ip().to_string()
    }
}

/// A backend named `name` on `instances`.
pub fn backend(name: &str, instances: Vec<LbEndpoint>) -> Backend {
    Backend { name: BackendName::new(name).expect("valid backend name"), instances }
}

/// A server name.
pub fn server_name(name: &str) -> ServerName {
    ServerName::new(name).expect("valid server name")
}

/// A loopback TCP endpoint nothing listens on.
pub fn dead_endpoint() -> LbEndpoint {
    LbEndpoint::Tcp { address: "127.0.0.1".into(), port: vesemir_testkit::process::free_port() }
}
