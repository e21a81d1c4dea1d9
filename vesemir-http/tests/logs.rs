//! Structured logs: JSON lines with one span per deployment and one per host.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use support::*;
use vesemir_http::LogConfig;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// A current-thread runtime: the scoped subscriber sees the spawned deployment tasks too.
#[tokio::test(flavor = "current_thread")]
async fn json_logs_carry_a_span_per_deployment_and_per_host() {
    let buffer = Buffer::default();
    let config = LogConfig { json: true, level: Some("info".into()) };
    let _guard =
        tracing::subscriber::set_default(vesemir_http::telemetry::subscriber(&config, buffer.clone()));

    let t = TestServer::start(Fleet::new(2)).await;
    let reply = t.post(PAYMENTS, &t.fleet.body("shop", "production", "payments")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = id_of(&reply);
    t.wait_finished(id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let text = String::from_utf8(buffer.0.lock().expect("not poisoned").clone()).expect("utf-8");
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    let host_lines: Vec<&Value> =
        lines.iter().filter(|l| l["span"]["name"] == "host" && l["span"]["host"] == "web-02").collect();
    assert!(!host_lines.is_empty(), "no line in web-02's span:\n{text}");
    let spans = host_lines[0]["spans"].as_array().expect("span list");
    let deployment = spans.iter().find(|s| s["name"] == "deployment").expect("inside the deployment span");
    assert_eq!(deployment["deployment"], id);
    assert_eq!(deployment["application"], "shop");
    assert_eq!(deployment["requested_by"], "payments-ci");
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "ended" && l["fields"]["status"] == "succeeded"),
        "{text}"
    );
    assert!(!text.contains(PAYMENTS), "tokens never reach the logs");
}
