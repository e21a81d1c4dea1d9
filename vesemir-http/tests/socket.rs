//! The server on a real loopback socket: HTTP/1.1 requests, an event stream, and a stop that
//! cancels the deployment in flight and ends the stream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vesemir_http::{FixedPorts, Server};

async fn exchange(address: std::net::SocketAddr, request: String) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("answer within 20 s")
        .expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("")
}

#[tokio::test]
async fn the_server_answers_on_loopback_and_a_stop_cancels_what_runs_and_ends_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(&dir.path().join("v.db"));
    let fleet = Fleet::new(3);
    fleet.executor.set_latency(Duration::from_millis(200));
    let server = Server::open(&config, Arc::new(FixedPorts(fleet.ports()))).await.expect("opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve_on(listener, async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    let health =
        exchange(address, "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".into()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(body_of(&health).contains("\"ok\""), "{health}");

    let body = fleet.body("shop", "production", "payments").to_string();
    let post = format!(
        "POST /v1/deployments HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {PAYMENTS}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let accepted = exchange(address, post).await;
    assert!(accepted.starts_with("HTTP/1.1 202"), "{accepted}");
    let id = serde_json::from_str::<Value>(body_of(&accepted)).expect("json")["id"].as_i64().expect("id");

    let follow = tokio::spawn(exchange(
        address,
        format!(
            "GET /v1/deployments/{id}/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {PAYMENTS}\r\n\
             Connection: close\r\n\r\n"
        ),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(20), serving).await.expect("stops within 20 s");
    result.expect("task").expect("served without error");

    let stream = follow.await.expect("follower");
    assert!(stream.contains("text/event-stream"), "{stream}");
    assert!(stream.contains("event: deployment_finished"), "the stream ends with the deployment: {stream}");
    let refused =
        tokio::time::timeout(Duration::from_secs(5), async { TcpStream::connect(address).await.is_err() })
            .await
            .unwrap_or(false);
    assert!(refused, "no longer listening");

    let router = server.router();
    let done =
        call(&router, axum::http::Method::GET, &format!("/v1/deployments/{id}"), Some(ADMIN), None, &[])
            .await;
    assert_eq!(done.json["status"], "cancelled", "{}", done.text);
    assert!(fleet.lb.out_of_rotation().is_empty(), "the host in flight finished before the stop");
}
