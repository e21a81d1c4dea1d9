//! The fake application each lab host runs: `GET /` answers its version, `GET /health` 200 (or
//! 500 when its release is broken). It restarts like a real service: the deploy step writes the
//! new version and a `restart` marker; the app stops listening and drops its connections, is
//! down for about a second (or its host's own time: [`RESTART_TIME_FILE`]), comes back with the new version, and removes the marker (the step
//! waits for that). It runs in the lab's own process, on the lab's runtime, so that every user of
//! the lab (tests of any crate, the demo, the benchmark) has it without building a binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The file holding the version the app serves.
pub const VERSION_FILE: &str = "version";
/// The file the deploy step writes the next version to.
pub const NEXT_VERSION_FILE: &str = "version.next";
/// The marker that asks the app to restart; the app removes it once it serves again.
pub const RESTART_MARKER: &str = "restart";
/// When this file exists as the app starts, its `/health` answers 500 (a broken release): every
/// release when it is empty, only the version it names otherwise.
pub const BROKEN_RELEASE_MARKER: &str = "broken-release";
/// How long the app is down while it restarts, unless the host's `restart-ms` file says otherwise.
pub const RESTART_DOWNTIME: Duration = Duration::from_secs(1);
/// The file holding this host's downtime per restart in milliseconds (read at each restart;
/// written by [`crate::lab::Lab::set_restart_times`]).
pub const RESTART_TIME_FILE: &str = "restart-ms";

/// Runs the app of the host whose files are in `dir`, listening at `address`, until `shutdown`
/// turns true.
pub async fn supervise(address: SocketAddr, dir: PathBuf, mut shutdown: watch::Receiver<bool>) {
    loop {
        let version = read_trimmed(&dir.join(VERSION_FILE)).unwrap_or_else(|| "unknown".to_owned());
        let healthy = healthy_release(&dir, &version);
        let Some(listener) = bind(address, &mut shutdown).await else { return };
        // Serving again: a restart in progress is over.
        let _ = std::fs::remove_file(dir.join(RESTART_MARKER));
        let mut connections = JoinSet::new();
        let mut poll = tokio::time::interval(Duration::from_millis(25));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(answer(stream, version.clone(), healthy));
                    }
                }
                _ = poll.tick() => {
                    while connections.try_join_next().is_some() {}
                    if dir.join(RESTART_MARKER).exists() {
                        break;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        // Stop like a process that exits: no listener, every connection closed.
        drop(listener);
        connections.abort_all();
        let downtime = read_trimmed(&dir.join(RESTART_TIME_FILE))
            .and_then(|ms| ms.parse().ok())
            .map_or(RESTART_DOWNTIME, Duration::from_millis);
        tokio::select! {
            _ = tokio::time::sleep(downtime) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(next) = read_trimmed(&dir.join(NEXT_VERSION_FILE)) {
            let _ = std::fs::write(dir.join(VERSION_FILE), next);
            let _ = std::fs::remove_file(dir.join(NEXT_VERSION_FILE));
        }
    }
}

async fn bind(address: SocketAddr, shutdown: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Some(listener),
            Err(e) if tokio::time::Instant::now() > deadline => {
                eprintln!("lab app: cannot listen on {address} for 10 s: {e}");
                return None;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

async fn answer(mut stream: TcpStream, version: String, healthy: bool) {
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/health" if healthy => ("200 OK", "ok\n".to_owned()),
        "/health" => ("500 Internal Server Error", "broken release\n".to_owned()),
        "/" => ("200 OK", version),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Whether the release `version` of the host whose files are in `dir` is healthy: no
/// broken-release marker, or one naming another version.
fn healthy_release(dir: &Path, version: &str) -> bool {
    match std::fs::read_to_string(dir.join(BROKEN_RELEASE_MARKER)) {
        Err(_) => true,
        Ok(broken) => !broken.trim().is_empty() && broken.trim() != version,
    }
}

/// One `GET path` to `address`: the status code and the body, or why it failed.
pub async fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| format!("receive: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let status =
            text.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| {
                format!("not an HTTP answer: {:?}", text.chars().take(80).collect::<String>())
            })?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}
