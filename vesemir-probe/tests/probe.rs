//! The HTTP probe against a real HTTP server on loopback (a tokio listener answering raw
//! HTTP/1.1, keep-alive): status, body text, refused connections, slow answers, bad URLs, and
//! connection reuse while polling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vesemir_core::ports::{HealthProbe, HttpCheck, ProbeOutcome};
use vesemir_probe::HttpProbe;

/// A server answering every request on a connection with `status` and `body` (after `delay`);
/// counts the connections it accepted.
async fn serve(status: u16, body: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{address}/health"), connections)
}

fn check(url: &str, status: u16, body_contains: Option<&str>) -> HttpCheck {
    HttpCheck {
        url: url.to_owned(),
        status,
        body_contains: body_contains.map(str::to_owned),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn passes_on_the_status_and_text_asked_for_and_says_why_not_otherwise() {
    let probe = HttpProbe::new().expect("probe");
    let (ok, _) = serve(200, "{\"status\":\"ok\",\"version\":\"2.0.0\"}", Duration::ZERO).await;
    assert_eq!(probe.check(&check(&ok, 200, None)).await.expect("checks"), ProbeOutcome::Passed);
    assert_eq!(probe.check(&check(&ok, 200, Some("2.0.0"))).await.expect("checks"), ProbeOutcome::Passed);
    assert_eq!(
        probe.check(&check(&ok, 200, Some("3.0.0"))).await.expect("checks"),
        ProbeOutcome::NotPassed("status 200, but the body does not contain \"3.0.0\"".into())
    );
    assert_eq!(
        probe.check(&check(&ok, 204, None)).await.expect("checks"),
        ProbeOutcome::NotPassed("status 200, expected 204".into())
    );
    let (starting, _) = serve(503, "starting", Duration::ZERO).await;
    assert_eq!(
        probe.check(&check(&starting, 200, None)).await.expect("checks"),
        ProbeOutcome::NotPassed("status 503, expected 200".into())
    );
}

#[tokio::test]
async fn no_answer_is_not_passed_and_a_bad_url_is_rejected() {
    let probe = HttpProbe::new().expect("probe");
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("address");
    let refused = probe.check(&check(&format!("http://{closed}/health"), 200, None)).await.expect("checks");
    let ProbeOutcome::NotPassed(why) = refused else { panic!("passed with nothing listening") };
    assert!(why.starts_with("connect failed: ") && why.contains("refused"), "{why}");

    let (slow, _) = serve(200, "ok", Duration::from_secs(5)).await;
    let mut short = check(&slow, 200, None);
    short.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    assert_eq!(
        probe.check(&short).await.expect("checks"),
        ProbeOutcome::NotPassed("no answer within 200ms".into())
    );
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the check's timeout");

    let bad = probe.check(&check("http://[::1:8080/health", 200, None)).await.expect_err("not a URL");
    assert!(bad.to_string().contains("not a URL"), "{bad}");
}

#[tokio::test]
async fn polling_reuses_one_connection() {
    let probe = HttpProbe::new().expect("probe");
    let (url, connections) = serve(200, "ok", Duration::ZERO).await;
    for _ in 0..50 {
        assert_eq!(probe.check(&check(&url, 200, Some("ok"))).await.expect("checks"), ProbeOutcome::Passed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1, "50 checks over one kept-alive connection");
}
