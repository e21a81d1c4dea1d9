//! Client mode: the same commands against a Vesemir server (`--server URL`, token from
//! `VESEMIR_TOKEN`): submit and follow a deployment, read its status and logs, list, cancel.

use std::time::Duration;

use reqwest::StatusCode;
use vesemir_core::event::{Event, EventKind, Rotation};
use vesemir_core::request::spec::RequestSpec;
use vesemir_http::wire::{Accepted, Deployment, DeploymentList, ErrorBody};
use vesemir_http::Status;

use crate::exit::{Exit, Failure};
use crate::output::Reporter;

/// A connection to a Vesemir server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Filters of `vesemir list`.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Application.
    pub application: Option<String>,
    /// Environment.
    pub environment: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// How many.
    pub limit: Option<u32>,
}

impl Client {
    /// A client of `server`, with the token in `VESEMIR_TOKEN` if set.
    pub fn new(server: &str) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::input(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base: format!("{}/v1", server.trim_end_matches('/')),
            token: std::env::var("VESEMIR_TOKEN").ok().filter(|t| !t.is_empty()),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = builder.send().await.map_err(|e| {
            Failure::unreachable(format!("cannot reach the Vesemir server at {}: {e}", self.base))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Option<ErrorBody> = response.json().await.ok();
        let mut message = body.as_ref().map_or_else(|| status.to_string(), |b| b.error.clone());
        if let Some(body) = &body {
            for problem in &body.problems {
                message.push_str(&format!("\n  {}: {}", problem.field, problem.message));
            }
            if let Some(running) = &body.running {
                message
                    .push_str(&format!("\n  running: deployment {} ({})", running.id, running.links.self_));
            }
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => "\n  set VESEMIR_TOKEN to your token",
            _ => "",
        };
        let message = format!("the server answered {status}: {message}{hint}");
        Err(match status {
            StatusCode::CONFLICT => Failure { exit: Exit::DeploymentFailed, message },
            s if s.is_server_error() => Failure::unreachable(message),
            _ => Failure::input(message),
        })
    }

    /// Submits a deployment.
    pub async fn submit(
        &self,
        spec: &RequestSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, Failure> {
        let mut builder = self.request(reqwest::Method::POST, "/deployments").json(spec);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.send(builder).await?.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// A deployment's status.
    pub async fn get(&self, id: i64) -> Result<Deployment, Failure> {
        let response = self.send(self.request(reqwest::Method::GET, &format!("/deployments/{id}"))).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// The deployment once the server has recorded its end (the last event can arrive a moment
    /// before the record is written), waiting at most 30 seconds.
    pub async fn wait_until_ended(&self, id: i64) -> Result<Deployment, Failure> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let deployment = self.get(id).await?;
            let running = matches!(deployment.status, Status::Queued | Status::Running);
            if !running || tokio::time::Instant::now() >= deadline {
                return Ok(deployment);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deployments, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<DeploymentList, Failure> {
        let mut query: Vec<(&str, String)> = Vec::new();
        for (key, value) in [
            ("application", &filter.application),
            ("environment", &filter.environment),
            ("team", &filter.team),
            ("status", &filter.status),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        if let Some(limit) = filter.limit {
            query.push(("limit", limit.to_string()));
        }
        let response = self.send(self.request(reqwest::Method::GET, "/deployments").query(&query)).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Asks the server to cancel a deployment.
    pub async fn cancel(&self, id: i64) -> Result<(), Failure> {
        self.send(self.request(reqwest::Method::POST, &format!("/deployments/{id}/cancel"))).await?;
        Ok(())
    }

    /// Streams a deployment's events to `sink` (from the start), until the deployment ends or,
    /// without `follow`, until the events stored so far are shown.
    pub async fn events(&self, id: i64, sink: &dyn Reporter, follow: bool) -> Result<(), Failure> {
        let mut last: Option<u64> = None;
        let mut attempts = 0;
        loop {
            let mut builder = self.request(reqwest::Method::GET, &format!("/deployments/{id}/events"));
            if let Some(last) = last {
                builder = builder.header("Last-Event-ID", last.to_string());
            }
            let mut response = match self.send(builder).await {
                Ok(response) => response,
                Err(e) if e.exit == Exit::Unreachable && attempts < 5 && last.is_some() => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut parser = SseParser::default();
            loop {
                let chunk = if follow {
                    response.chunk().await
                } else {
                    match tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
                        Ok(chunk) => chunk,
                        Err(_) => return Ok(()),
                    }
                };
                let chunk = match chunk {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return Ok(()),
                    Err(_) => break,
                };
                for data in parser.push(&chunk) {
                    let Ok(event) = serde_json::from_str::<Event>(&data) else { continue };
                    last = Some(event.seq);
                    sink.emit(&event);
                    if matches!(event.kind, EventKind::DeploymentFinished { .. }) {
                        return Ok(());
                    }
                }
            }
            attempts += 1;
            if attempts > 5 {
                return Err(Failure::unreachable("the event stream broke five times: see `vesemir status`"));
            }
        }
    }
}

/// Splits a server-sent event stream into the `data` of each event.
#[derive(Default)]
struct SseParser {
    buffer: String,
    data: String,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(std::mem::take(&mut self.data));
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
            }
        }
        out
    }
}

/// The exit code for a deployment's final status.
pub fn exit_for(status: Status) -> Exit {
    match status {
        Status::Succeeded => Exit::Success,
        _ => Exit::DeploymentFailed,
    }
}

/// A deployment's status for a person.
pub fn describe(d: &Deployment) -> String {
    let mut out = format!(
        "deployment {}: {} {} to {} (team {}), asked by {}: {}\n",
        d.id,
        d.application,
        d.version,
        d.environment,
        d.team,
        d.requested_by,
        serde_json::to_value(d.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    if let Some(error) = &d.error {
        out.push_str(&format!("  why: {error}\n"));
    }
    if let Some(t) = &d.totals {
        out.push_str(&format!(
            "  {} succeeded, {} failed, {} unreachable, {} skipped, {} cancelled\n",
            t.succeeded, t.failed, t.unreachable, t.skipped, t.cancelled
        ));
    }
    for host in &d.hosts {
        let outcome = host.outcome.map_or_else(|| "in flight".to_owned(), |o| o.to_string());
        out.push_str(&format!("  {:20} {:12} {}", host.name, outcome, host.phase));
        if let Some(error) = &host.error {
            out.push_str(&format!(": {error}"));
        }
        if host.rotation != Rotation::InRotation {
            let rotation =
                serde_json::to_value(host.rotation).ok().and_then(|v| v.as_str().map(str::to_owned));
            out.push_str(&format!(" [{}]", rotation.unwrap_or_default().replace('_', " ")));
        }
        out.push('\n');
    }
    // The server lists them for interrupted deployments; for the others, the hosts say it.
    let mut out_of_rotation: Vec<&str> = d.out_of_rotation.iter().map(String::as_str).collect();
    for host in d.hosts.iter().filter(|h| h.rotation != Rotation::InRotation) {
        if !out_of_rotation.contains(&host.name.as_str()) {
            out_of_rotation.push(&host.name);
        }
    }
    if !out_of_rotation.is_empty() {
        out.push_str(&format!("  out of rotation now: {}\n", out_of_rotation.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_splits_events_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"id: 1\nevent: x\ndata: {\"a\"").is_empty());
        let events = parser.push(b":1}\n\nid: 2\ndata: two\n\n: keep-alive\n\n");
        assert_eq!(events, ["{\"a\":1}", "two"]);
    }
}
