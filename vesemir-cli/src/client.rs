//! Client mode: the same commands against a Vesemir server (`--server URL`, token from
//! `VESEMIR_TOKEN`): submit and follow a deployment, read its status and logs, list, cancel.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::StatusCode;
use vesemir_core::backoff::Backoff;
use vesemir_core::event::{Event, HostOutcome, Rotation};
use vesemir_core::progress::Progress;
use vesemir_core::provision::{ProvisionEvent, ProvisionEventKind, VmName};
use vesemir_http::catalog::UnitRequest;
use vesemir_http::vm_wire::{VmCreateRequest, VmList, VmView};
use vesemir_http::wire::{
    Accepted, Deployment, DeploymentList, ErrorBody, History, RecoveryReport, RestoreBody, RetryBody,
    RollbackBody,
};
use vesemir_http::Status;

use crate::exit::{Exit, Failure};
use crate::output::{OutputFormat, Reporter};

/// A connection to a Vesemir server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Filters of `vesemir list`, sent as the query string of `GET /v1/deployments`; each one
/// left `None` is not sent and the server does not filter on it.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// `application=`: only deployments of this application.
    pub application: Option<String>,
    /// `environment=`: only deployments to this environment.
    pub environment: Option<String>,
    /// `team=`: only deployments of this team's applications.
    pub team: Option<String>,
    /// `status=`: only deployments in this status (the wire's snake_case name).
    pub status: Option<String>,
    /// `limit=`: at most this many, newest first.
    pub limit: Option<u32>,
}

/// `--ca-file` (or `VESEMIR_CA_FILE`): the CA certificates every client of this run trusts
/// besides the system's roots. Set once by `main`.
static CA_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Makes every [`Client`] of this run trust the CA certificates in `file` (PEM, one or more)
/// besides the system's roots. Only the first call counts.
pub fn trust_ca_file(file: Option<std::path::PathBuf>) {
    let _ = CA_FILE.set(file);
}

fn ca_file() -> Option<&'static std::path::Path> {
    CA_FILE.get().and_then(Option::as_deref)
}

/// The CA certificates of `file`, refused by name when unreadable or not PEM certificates.
fn ca_certificates(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Failure> {
    let pem = std::fs::read(file)
        .map_err(|e| Failure::input(format!("--ca-file {}: cannot read it: {e}", file.display())))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        _ => Err(Failure::input(format!(
            "--ca-file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.display()
        ))),
    }
}

/// Whether `error` (a failed request) is a TLS certificate the client did not trust.
fn is_untrusted_certificate(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("certificate verify failed") || text.contains("self-signed certificate") {
            return true;
        }
        source = e.source();
    }
    false
}

/// `error` and its causes, `: `-separated (reqwest's own text names only the URL).
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = e.source();
    }
    text
}

/// What to say when the server's certificate is not trusted: which option gives the CA.
fn untrusted_hint() -> String {
    match ca_file() {
        Some(file) => format!(
            "\n  the server's TLS certificate is not signed by the CA in --ca-file {} (nor by a CA the system trusts): give the CA that signed it with --ca-file (or VESEMIR_CA_FILE)",
            file.display()
        ),
        None => "\n  the server's TLS certificate is not signed by a CA the system trusts: if a private CA signed it, give its certificate with --ca-file FILE (or VESEMIR_CA_FILE)".to_owned(),
    }
}

impl Client {
    /// A client of `server`, with the token in `VESEMIR_TOKEN` if set, trusting the system's
    /// roots and `--ca-file`.
    pub fn new(server: &str) -> Result<Self, Failure> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(file) = ca_file() {
            for certificate in ca_certificates(file)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http =
            builder.build().map_err(|e| Failure::input(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base: format!("{}/v1", server.trim_end_matches('/')),
            token: std::env::var("VESEMIR_TOKEN").ok().filter(|t| !t.is_empty()),
            http,
        })
    }

    /// A request that got no answer, saying why (and which option fixes an untrusted
    /// certificate).
    fn unreachable(&self, error: &reqwest::Error) -> Failure {
        let hint = if is_untrusted_certificate(error) { untrusted_hint() } else { String::new() };
        Failure::unreachable(format!(
            "cannot reach the Vesemir server at {}: {}{hint}",
            self.base,
            chain(error)
        ))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        // Problem details (RFC 9457): `detail` says what, `problems` lists each field's problem.
        let body: Option<ErrorBody> = response.json().await.ok();
        let mut message = body.as_ref().map_or_else(|| status.to_string(), |b| b.detail.clone());
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

    /// Submits a deployment of a unit of the server's catalog; with `idempotency_key`, a retry
    /// gets the first submission's answer.
    pub async fn submit(
        &self,
        spec: &UnitRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, Failure> {
        let mut builder = self.request(reqwest::Method::POST, "/deployments").json(spec);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.send(builder).await?.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// A deployment's record as the server has it now (status, totals, hosts).
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

    /// Asks the server to put back what a deployment's journal left out of rotation, and waits
    /// for its answer (health gates included).
    pub async fn recover(&self, id: i64) -> Result<RecoveryReport, Failure> {
        let response =
            self.send(self.request(reqwest::Method::POST, &format!("/deployments/{id}/recover"))).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// The history of an application in an environment.
    pub async fn history(&self, application: &str, environment: &str) -> Result<History, Failure> {
        let path = format!("/applications/{application}/environments/{environment}/history");
        let response = self.send(self.request(reqwest::Method::GET, &path)).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Asks the server to retry deployment `id`'s hosts that did not succeed.
    pub async fn retry(&self, id: i64, body: &RetryBody) -> Result<Accepted, Failure> {
        let builder = self.request(reqwest::Method::POST, &format!("/deployments/{id}/retry")).json(body);
        self.send(builder).await?.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Asks the server to put back the servers deployment `id` left out (of `hosts`, or all),
    /// and waits for its answer (health gates included).
    pub async fn restore(&self, id: i64, hosts: &[String]) -> Result<RecoveryReport, Failure> {
        let body = RestoreBody { hosts: hosts.to_vec() };
        let builder = self.request(reqwest::Method::POST, &format!("/deployments/{id}/restore")).json(&body);
        self.send(builder).await?.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Asks the server to roll an application in an environment back.
    pub async fn rollback(
        &self,
        application: &str,
        environment: &str,
        to: Option<&str>,
    ) -> Result<Accepted, Failure> {
        let path = format!("/applications/{application}/environments/{environment}/rollback");
        let body = RollbackBody { to: to.map(str::to_owned) };
        let builder = self.request(reqwest::Method::POST, &path).json(&body);
        self.send(builder).await?.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Confirms or declines (`decision`) deployment `id`'s waiting promotion: the deployment as
    /// the server answers it (its `promotion` names the next unit's deployment once started).
    pub async fn promotion(&self, id: i64, decision: &str) -> Result<Deployment, Failure> {
        let path = format!("/deployments/{id}/promotion/{decision}");
        let response = self.send(self.request(reqwest::Method::POST, &path)).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// Asks the server to cancel a deployment.
    pub async fn cancel(&self, id: i64) -> Result<(), Failure> {
        self.order(id, "cancel").await
    }

    /// Sends an order to a deployment: `POST /v1/deployments/{id}/{order}` (`cancel`, `pause`,
    /// `resume`, `confirm`).
    pub async fn order(&self, id: i64, order: &str) -> Result<(), Failure> {
        self.send(self.request(reqwest::Method::POST, &format!("/deployments/{id}/{order}"))).await?;
        Ok(())
    }

    /// Streams a deployment's events to `sink` (from the start), until the deployment ends or,
    /// without `follow`, until the events stored so far are shown. A broken stream is resumed
    /// after the last event shown (`Last-Event-ID`), waiting as [`FOLLOW_BACKOFF`] says.
    pub async fn events(&self, id: i64, sink: &dyn Reporter, follow: bool) -> Result<(), Failure> {
        let mut progress = Progress::new();
        let mut retries = FOLLOW_BACKOFF.retries(jitter_seed());
        loop {
            let mut builder = self.request(reqwest::Method::GET, &format!("/deployments/{id}/events"));
            if progress.last_seq() > 0 {
                builder = builder.header("Last-Event-ID", progress.last_seq().to_string());
            }
            let broke = match self.send(builder).await {
                Ok(response) => match forward(response, &mut progress, sink, follow).await {
                    Followed::Ended => return Ok(()),
                    Followed::Broke => {
                        Failure::unreachable("the event stream broke five times: see `vesemir status`")
                    }
                },
                Err(e) if e.exit == Exit::Unreachable && progress.last_seq() > 0 => e,
                Err(e) => return Err(e),
            };
            match retries.after_failure() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(broke),
            }
        }
    }
}

/// `GET /v1/vms` filters of `vesemir vm list`; `None` is not sent.
#[derive(Debug, Default)]
pub struct VmFilter {
    /// `owner=`: only this directory user's VMs.
    pub owner: Option<String>,
    /// `status=`: only VMs in this status (`creating`, `ready`...).
    pub status: Option<String>,
    /// `limit=`: at most this many, newest first.
    pub limit: Option<u32>,
}

/// The VM calls (issue 19, `vesemir vm`). A conflict (a name in use, a VM busy) changed
/// nothing, so it is bad input here (exit 2), not a failed run.
impl Client {
    async fn send_vm(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        self.send(builder).await.map_err(|failure| match failure.exit {
            Exit::DeploymentFailed => Failure::input(failure.message),
            _ => failure,
        })
    }

    async fn vm_answer(&self, builder: reqwest::RequestBuilder) -> Result<VmView, Failure> {
        let response = self.send_vm(builder).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// `POST /v1/vms`: asks for a new VM; the server answers it `creating`.
    pub async fn create_vm(&self, body: &VmCreateRequest) -> Result<VmView, Failure> {
        self.vm_answer(self.request(reqwest::Method::POST, "/vms").json(body)).await
    }

    /// `GET /v1/vms/{name}`.
    pub async fn vm(&self, name: &VmName) -> Result<VmView, Failure> {
        self.vm_answer(self.request(reqwest::Method::GET, &format!("/vms/{name}"))).await
    }

    /// `GET /v1/vms`, newest first.
    pub async fn vms(&self, filter: &VmFilter) -> Result<VmList, Failure> {
        let mut query: Vec<(&str, String)> = Vec::new();
        for (key, value) in [("owner", &filter.owner), ("status", &filter.status)] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        if let Some(limit) = filter.limit {
            query.push(("limit", limit.to_string()));
        }
        let response = self.send_vm(self.request(reqwest::Method::GET, "/vms").query(&query)).await?;
        response.json().await.map_err(|e| Failure::input(format!("unexpected answer: {e}")))
    }

    /// `POST /v1/vms/{name}/cancel`: the create stops and undoes its steps.
    pub async fn cancel_vm(&self, name: &VmName) -> Result<VmView, Failure> {
        self.vm_answer(self.request(reqwest::Method::POST, &format!("/vms/{name}/cancel"))).await
    }

    /// `DELETE /v1/vms/{name}`: the VM is taken down.
    pub async fn destroy_vm(&self, name: &VmName) -> Result<VmView, Failure> {
        self.vm_answer(self.request(reqwest::Method::DELETE, &format!("/vms/{name}"))).await
    }

    /// Reads VM `name`'s events after stream id `after` (0: from the first), giving each to
    /// `on_event`, and answers the last id read. With `until_finished` it follows until a
    /// `finished` event or the server ends the stream (nothing running); without, it stops once
    /// the stored events are read (the stream ends, or stays quiet for a moment). A broken
    /// stream is resumed after the last id read, waiting as [`FOLLOW_BACKOFF`] says.
    pub async fn vm_events(
        &self,
        name: &VmName,
        after: u64,
        until_finished: bool,
        on_event: &mut (dyn FnMut(&ProvisionEvent) + Send),
    ) -> Result<u64, Failure> {
        let mut last = after;
        let mut retries = FOLLOW_BACKOFF.retries(jitter_seed());
        loop {
            let mut builder = self
                .request(reqwest::Method::GET, &format!("/vms/{name}/events"))
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if last > 0 {
                builder = builder.header("Last-Event-ID", last.to_string());
            }
            let broke = match self.send_vm(builder).await {
                Ok(response) => match forward_vm(response, &mut last, on_event, until_finished).await {
                    Followed::Ended => return Ok(last),
                    Followed::Broke => Failure::unreachable(format!(
                        "the event stream of VM {name} broke six times: see `vesemir vm show {name}`"
                    )),
                },
                Err(e) if e.exit == Exit::Unreachable && last > after => e,
                Err(e) => return Err(e),
            };
            match retries.after_failure() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(broke),
            }
        }
    }
}

/// Shows the VM events of one connection; `last` is the stream id of the last one shown.
async fn forward_vm(
    response: reqwest::Response,
    last: &mut u64,
    on_event: &mut (dyn FnMut(&ProvisionEvent) + Send),
    until_finished: bool,
) -> Followed {
    let mut stream = response.bytes_stream().eventsource();
    loop {
        let next = if until_finished {
            stream.next().await
        } else {
            match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
                Ok(next) => next,
                Err(_) => return Followed::Ended,
            }
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(_)) => return Followed::Broke,
            None => return Followed::Ended,
        };
        let Ok(event) = serde_json::from_str::<ProvisionEvent>(&message.data) else { continue };
        let id = message.id.parse::<u64>().unwrap_or(event.seq);
        if id <= *last {
            continue;
        }
        *last = id;
        on_event(&event);
        if until_finished && matches!(event.kind, ProvisionEventKind::Finished { .. }) {
            return Followed::Ended;
        }
    }
}

/// How the follower reconnects: five more tries, from a quarter second doubling to two seconds,
/// with jitter so that many followers of a restarted server do not come back in step.
pub const FOLLOW_BACKOFF: Backoff =
    Backoff { attempts: 6, initial: Duration::from_millis(250), max: Duration::from_secs(2), jitter: 0.5 };

/// A seed for the reconnect jitter that differs between processes (std's per-process hash keys).
fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// How one connection to the event stream ended.
enum Followed {
    /// The deployment ended, or (without follow) the stored events were shown.
    Ended,
    /// The connection broke: resume after the last event shown.
    Broke,
}

/// Shows the events of one connection, folding them into `progress`.
async fn forward(
    response: reqwest::Response,
    progress: &mut Progress,
    sink: &dyn Reporter,
    follow: bool,
) -> Followed {
    let mut stream = response.bytes_stream().eventsource();
    loop {
        let next = if follow {
            stream.next().await
        } else {
            match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                Ok(next) => next,
                Err(_) => return Followed::Ended,
            }
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(_)) => return Followed::Broke,
            None => return Followed::Ended,
        };
        let Ok(event) = serde_json::from_str::<Event>(&message.data) else { continue };
        if event.seq <= progress.last_seq() {
            continue;
        }
        progress.apply(&event);
        sink.emit(&event);
        if progress.outcome().is_some() {
            return Followed::Ended;
        }
    }
}

/// Follows a deployment the server accepted to its end, then shows it.
pub async fn follow(client: &Client, accepted: &Accepted, output: OutputFormat) -> Result<Exit, Failure> {
    let id = accepted.id;
    eprintln!(
        "vesemir: deployment {id} accepted for {} (following {})",
        accepted.requested_by, accepted.links.events
    );
    let reporter = crate::output::sink(output);
    client.events(id, &*reporter, true).await?;
    let deployment = client.wait_until_ended(id).await?;
    if output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "deployment": deployment }));
    } else {
        println!("\n{}", describe(&deployment).trim_end());
    }
    Ok(exit_for(deployment.status))
}

/// `vesemir promote confirm|decline ID --server URL`: a confirmed promotion's deployment is
/// followed to its end, like a retry's.
pub async fn promote(command: &crate::cli::PromoteCommand) -> Result<Exit, Failure> {
    use crate::cli::PromoteCommand;
    let (args, decision) = match command {
        PromoteCommand::Confirm(args) => (args, "confirm"),
        PromoteCommand::Decline(args) => (args, "decline"),
    };
    let client = Client::new(&args.server.server)?;
    let source = client.promotion(args.id, decision).await?;
    let to = source.promotion.as_ref().map_or("the next unit", |p| p.to.as_str());
    let promoted = source.promotion.as_ref().and_then(|p| p.deployment);
    match promoted.filter(|_| decision == "confirm") {
        Some(promoted) => {
            eprintln!("vesemir: deployment {}: promotion to {to} confirmed", args.id);
            let started = client.get(promoted).await?;
            let accepted = Accepted {
                id: started.id,
                status: started.status,
                requested_by: started.requested_by,
                links: started.links,
            };
            follow(&client, &accepted, args.output).await
        }
        None => {
            if args.output == OutputFormat::Json {
                println!("{}", serde_json::json!({ "deployment": source }));
            } else {
                let done = if decision == "confirm" { "confirmed" } else { "declined" };
                println!("deployment {}: promotion to {to} {done}", args.id);
            }
            Ok(Exit::Success)
        }
    }
}

/// `vesemir retry --server URL ID`.
pub async fn retry_remote(args: &crate::followup::RetryArgs, server: &str) -> Result<Exit, Failure> {
    if !args.sets.iter().all(|s| s.starts_with("variables.")) {
        return Err(Failure::input(
            "with --server, --set changes only variables (--set variables.NAME=VALUE): the server runs the deployment's own request",
        ));
    }
    let id: i64 = args.id.parse().map_err(|_| {
        Failure::input(format!(
            "{:?} is not a deployment id of the server {server}: a local run needs no --server",
            args.id
        ))
    })?;
    let mut body = RetryBody::default();
    if let Some(concurrency) = &args.concurrency {
        body.concurrency = Some(match concurrency.parse::<u64>() {
            Ok(n) => serde_json::json!(n),
            Err(_) => serde_json::json!(concurrency),
        });
    }
    for set in &args.sets {
        if let Some((key, value)) = set.strip_prefix("variables.").and_then(|s| s.split_once('=')) {
            body.variables.insert(key.to_owned(), value.to_owned());
        }
    }
    let client = Client::new(server)?;
    let accepted = client.retry(id, &body).await?;
    follow(&client, &accepted, args.output).await
}

/// `vesemir rollback --server URL APP ENV`.
pub async fn rollback_remote(args: &crate::followup::RollbackArgs, server: &str) -> Result<Exit, Failure> {
    let client = Client::new(server)?;
    let accepted = client.rollback(&args.application, &args.environment, args.to.as_deref()).await?;
    follow(&client, &accepted, args.output).await
}

/// `vesemir restore --server URL --deployment ID [HOST…]`.
pub async fn restore_remote(args: &crate::followup::RestoreArgs, server: &str) -> Result<Exit, Failure> {
    let id: i64 = args
        .deployment
        .as_deref()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Failure::input("with --server, give the deployment's id: --deployment ID"))?;
    let report = Client::new(server)?.restore(id, &args.hosts).await?;
    crate::recover::print_remote_recovery(id, &report, server, args.output);
    Ok(if report.servers.iter().any(|s| s.result == vesemir_http::wire::RecoveryResult::LeftOut) {
        Exit::DeploymentFailed
    } else {
        Exit::Success
    })
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
    if d.paused {
        out.push_str(&format!("  PAUSED: no new host starts until `vesemir resume --server URL {}`\n", d.id));
    }
    if d.links.confirm.is_some() {
        out.push_str(&format!(
            "  the canary waits for confirmation: `vesemir confirm --server URL {}`\n",
            d.id
        ));
    }
    if let Some(promotion) = &d.promotion {
        let status = serde_json::to_value(promotion.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        out.push_str(&format!("  promotion to {}: {}", promotion.to, status.unwrap_or_default()));
        if let Some(promoted) = promotion.deployment {
            out.push_str(&format!(", deployment {promoted}"));
        }
        if promotion.confirm.is_some() {
            out.push_str(&format!(" (`vesemir promote confirm --server URL {}`, or decline)", d.id));
        }
        out.push('\n');
    }
    if let Some(error) = &d.error {
        out.push_str(&format!("  why: {error}\n"));
    }
    if let Some(t) = &d.totals {
        out.push_str(&format!(
            "  {} succeeded, {} failed, {} unreachable, {} skipped, {} cancelled\n",
            t.succeeded, t.failed, t.unreachable, t.skipped, t.cancelled
        ));
    }
    let mut out_of_rotation: Vec<&str> = d.out_of_rotation.iter().map(String::as_str).collect();
    for host in &d.hosts {
        let outcome: Option<HostOutcome> = host.outcome;
        let outcome = outcome.map_or_else(|| "in flight".to_owned(), |o| o.to_string());
        out.push_str(&format!("  {:20} {:12} {}", host.name, outcome, host.phase));
        if let Some(error) = &host.error {
            out.push_str(&format!(": {error}"));
        }
        // A rotation this client does not know is as good as unknown: check the host.
        let rotation = host.rotation;
        let label = match rotation {
            Rotation::InRotation => None,
            Rotation::OutOfRotation => Some("out of rotation"),
            Rotation::Unknown => Some("unknown"),
        };
        if let Some(label) = label {
            out.push_str(&format!(" [{label}]"));
            // The server lists them for interrupted deployments; for the others, the hosts say it.
            if !out_of_rotation.contains(&host.name.as_str()) {
                out_of_rotation.push(&host.name);
            }
        }
        out.push('\n');
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
    fn the_follower_gives_up_after_a_bounded_wait() {
        assert!(FOLLOW_BACKOFF.check().is_ok());
        let mut retries = FOLLOW_BACKOFF.retries(jitter_seed());
        let waits: Vec<Duration> = std::iter::from_fn(|| retries.after_failure()).collect();
        assert_eq!(waits.len(), 5, "five reconnects, as before");
        assert!(waits.iter().sum::<Duration>() <= Duration::from_millis(250 + 500 + 1000 + 2000 + 2000));
    }
}
