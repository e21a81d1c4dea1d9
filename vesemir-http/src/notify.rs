//! Notifications: outgoing webhooks per unit when a deployment starts, waits for confirmation,
//! is paused, succeeds, fails or is cancelled. JSON (or a Slack-compatible `{ "text" }`),
//! signed with HMAC-SHA256 when the target has a secret, retried with backoff, every attempt
//! recorded in the store ([`Store::record_notification`]) and listed by `GET
//! /v1/deployments/{id}/notifications` (target names, never URLs). A promotion that waits for a
//! person ([`crate::promotion`]) is `waiting_for_confirmation` too, told to the targets of both
//! units with a `promotion` member ([`Notifier::promotion_waiting`]).
//!
//! ```toml
//! [[units.notify]]
//! name = "chatops"                                  # recorded with each attempt; unique per unit
//! url = "https://chat.example/hooks/T000/B000"      # never logged or stored (it may hold a token)
//! secret_file = "/etc/vesemir/notify/chatops"       # optional, mode 0600: X-Vesemir-Signature
//! events = ["started", "succeeded", "failed"]       # default: all six
//! format = "slack"                                  # or "json" (the default)
//! attempts = 5                                      # tries in all, 0.5 s, 1 s, 2 s... apart
//! ```
//!
//! A failing or slow receiver never slows a rollout: the runner hands each admitted
//! deployment's live events to a watcher ([`Runner::set_on_admitted`](crate::runner::Runner::set_on_admitted))
//! that only reads them (a watcher that falls behind loses events; the sender never waits), and
//! puts notifications on a bounded queue (`try_send`: a full queue drops the notification with a
//! warning); deliveries run in their own tasks, at most [`MAX_IN_FLIGHT`] at once, each attempt
//! bounded by [`ATTEMPT_TIMEOUT`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, Semaphore};
use vesemir_core::event::{EventKind, WaitReason};
use vesemir_core::request::FieldError;
use vesemir_core::Backoff;

use crate::catalog::UnitConfig;
use crate::clock::now_ms;
use crate::promotion::UnitKey;
use crate::runner::LiveEvents;
use crate::store::{NotificationAttempt, Status, Store};

/// Notifications waiting for delivery, at most.
pub const QUEUE: usize = 1024;
/// Deliveries in flight at once, at most.
pub const MAX_IN_FLIGHT: usize = 16;
/// The bound on one attempt (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// The deployment started (its first batch is planned).
    Started,
    /// Its canary waits for a person's confirmation.
    WaitingForConfirmation,
    /// Someone paused it.
    Paused,
    /// Every host succeeded.
    Succeeded,
    /// It ended otherwise than succeeded or cancelled (`status` says how).
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl NotifyEvent {
    /// Every event, the default of `events`.
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::Started,
        NotifyEvent::WaitingForConfirmation,
        NotifyEvent::Paused,
        NotifyEvent::Succeeded,
        NotifyEvent::Failed,
        NotifyEvent::Cancelled,
    ];

    /// The event as sent and recorded.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::WaitingForConfirmation => "waiting_for_confirmation",
            NotifyEvent::Paused => "paused",
            NotifyEvent::Succeeded => "succeeded",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Cancelled => "cancelled",
        }
    }

    fn of_status(status: Status) -> Option<Self> {
        match status {
            Status::Queued | Status::Running => None,
            Status::Succeeded => Some(NotifyEvent::Succeeded),
            Status::Cancelled => Some(NotifyEvent::Cancelled),
            Status::CompletedWithFailures | Status::Stopped | Status::Failed | Status::Interrupted => {
                Some(NotifyEvent::Failed)
            }
        }
    }
}

/// The body's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// `{ event, deployment: { id, team, application, environment, version, status,
    /// requested_by, error }, at_ms, link }`.
    #[default]
    Json,
    /// `{ "text": "..." }`, as Slack's (and Mattermost's) incoming webhooks take it.
    Slack,
}

/// One notification target of a unit (`[[units.notify]]`).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Its name in logs and the delivery log (the URL is never shown).
    pub name: String,
    /// Where to POST: `http://` or `https://`.
    pub url: String,
    /// A file holding the signing secret (mode 0600): each body is signed in
    /// `X-Vesemir-Signature: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The events it wants.
    #[serde(default = "all_events")]
    pub events: Vec<NotifyEvent>,
    /// The body's shape.
    #[serde(default)]
    pub format: NotifyFormat,
    /// Tries in all (1 to 10).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("name", &self.name)
            .field("url", &"(hidden)")
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("attempts", &self.attempts)
            .finish()
    }
}

fn all_events() -> Vec<NotifyEvent> {
    NotifyEvent::ALL.to_vec()
}

fn default_attempts() -> u32 {
    5
}

/// Checks every unit's notification targets: names unique per unit, `http(s)://` URLs,
/// attempts 1 to 10; every problem at once.
pub fn check(units: &[UnitConfig]) -> Vec<FieldError> {
    let mut problems = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let mut names = std::collections::BTreeSet::new();
        for (j, target) in unit.notify.iter().enumerate() {
            let at = format!("units[{i}].notify[{j}]");
            if target.name.is_empty() || target.name.len() > 64 || !names.insert(target.name.clone()) {
                problems.push(FieldError::new(
                    format!("{at}.name"),
                    "must be 1 to 64 characters, unique in the unit",
                ));
            }
            let scheme_ok = target.url.starts_with("http://") || target.url.starts_with("https://");
            if !scheme_ok || reqwest::Url::parse(&target.url).is_err() {
                problems.push(FieldError::new(format!("{at}.url"), "must be an http:// or https:// URL"));
            }
            if !(1..=10).contains(&target.attempts) {
                problems.push(FieldError::new(format!("{at}.attempts"), "must be 1 to 10"));
            }
        }
    }
    problems
}

/// A target ready to deliver to.
struct Target {
    config: NotifyConfig,
    secret: Option<Vec<u8>>,
}

/// One notification to deliver.
struct Job {
    deployment: i64,
    /// `X-Vesemir-Delivery`: unique per deployment and notification.
    delivery: String,
    event: NotifyEvent,
    target: Arc<Target>,
    body: String,
}

/// The units' notification targets and the delivery queue.
pub struct Notifier {
    targets: HashMap<UnitKey, Vec<Arc<Target>>>,
    queue: mpsc::Sender<Job>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("units", &self.targets.len()).finish()
    }
}

impl Notifier {
    /// Reads the targets' secret files (each problem naming its field) and starts the delivery
    /// task (only when a unit has targets).
    pub fn start(units: &[UnitConfig], store: Arc<dyn Store>) -> Result<Arc<Self>, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut targets: HashMap<UnitKey, Vec<Arc<Target>>> = HashMap::new();
        for (i, unit) in units.iter().enumerate() {
            for (j, config) in unit.notify.iter().enumerate() {
                let secret = match &config.secret_file {
                    None => None,
                    Some(path) => match crate::hooks::read_secret(path) {
                        Ok(secret) => Some(secret),
                        Err(message) => {
                            problems.push(FieldError::new(
                                format!("units[{i}].notify[{j}].secret_file"),
                                message,
                            ));
                            continue;
                        }
                    },
                };
                let key = (unit.team.clone(), unit.application.clone(), unit.environment.clone());
                targets.entry(key).or_default().push(Arc::new(Target { config: config.clone(), secret }));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let (queue, jobs) = mpsc::channel(QUEUE);
        if !targets.is_empty() {
            tokio::spawn(deliver_all(jobs, store.clone()));
        }
        Ok(Arc::new(Self { targets, queue, store }))
    }

    /// Watches admitted deployment `id`'s live events (the runner's callback): notifies its
    /// unit's targets of the events they want, and of its end once its channel closes.
    pub fn watch(self: &Arc<Self>, id: i64, events: LiveEvents) {
        if self.targets.is_empty() {
            return;
        }
        let notifier = self.clone();
        tokio::spawn(async move { notifier.follow(id, events).await });
    }

    async fn follow(self: Arc<Self>, id: i64, mut events: LiveEvents) {
        let record = match self.store.get(id).await {
            Ok(Some(record)) => record,
            _ => return,
        };
        let key = (record.team.clone(), record.application.clone(), record.environment.clone());
        let Some(targets) = self.targets.get(&key) else { return };
        loop {
            match events.recv().await {
                Ok(event) => {
                    let kind = match &event.kind {
                        EventKind::DeploymentStarted { .. } => NotifyEvent::Started,
                        EventKind::Waiting { reason: WaitReason::CanaryConfirmation } => {
                            NotifyEvent::WaitingForConfirmation
                        }
                        EventKind::Paused { .. } => NotifyEvent::Paused,
                        _ => continue,
                    };
                    self.enqueue(targets, id, kind).await;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        deployment = id,
                        missed,
                        "the notification watcher fell behind: events skipped"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        // The channel closes once the end is stored.
        let end = self.store.get(id).await.ok().flatten().and_then(|r| NotifyEvent::of_status(r.status));
        if let Some(end) = end {
            self.enqueue(targets, id, end).await;
        }
    }

    async fn enqueue(&self, targets: &[Arc<Target>], id: i64, event: NotifyEvent) {
        self.enqueue_about(targets, id, event, None).await;
    }

    /// Tells the targets of deployment `id`'s unit (`unit`) and of the next unit (`to`) that its
    /// promotion waits for a person's confirmation: event `waiting_for_confirmation`, with a
    /// `promotion` member (JSON) or sentence (Slack) naming the next unit and how to confirm.
    pub async fn promotion_waiting(&self, id: i64, unit: &UnitKey, to: &UnitKey) {
        let targets: Vec<Arc<Target>> =
            [unit, to].into_iter().filter_map(|key| self.targets.get(key)).flatten().cloned().collect();
        let next = format!("{}/{}", to.1, to.2);
        self.enqueue_about(&targets, id, NotifyEvent::WaitingForConfirmation, Some(&next)).await;
    }

    /// Queues `event` about deployment `id` for each of `targets` that wants it; `promotion`
    /// names the next unit when the event is about a promotion.
    async fn enqueue_about(
        &self,
        targets: &[Arc<Target>],
        id: i64,
        event: NotifyEvent,
        promotion: Option<&str>,
    ) {
        let Ok(Some(record)) = self.store.get(id).await else { return };
        let delivery = match promotion {
            Some(_) => format!("{id}-promotion-{}", event.as_str()),
            None => format!("{id}-{}", event.as_str()),
        };
        for target in targets.iter().filter(|t| t.config.events.contains(&event)) {
            let body = body(target.config.format, event, &record, promotion);
            let job = Job { deployment: id, delivery: delivery.clone(), event, target: target.clone(), body };
            if self.queue.try_send(job).is_err() {
                tracing::warn!(deployment = id, target = %target.config.name, event = event.as_str(), "the notification queue is full: notification dropped");
            }
        }
    }
}

/// The body of `event` about `record`, in `format`; `promotion` names the next unit of a
/// promotion that waits for a person.
fn body(
    format: NotifyFormat,
    event: NotifyEvent,
    record: &crate::store::DeploymentRecord,
    promotion: Option<&str>,
) -> String {
    match format {
        NotifyFormat::Json => {
            let mut body = json_body(event, record);
            if let Some(to) = promotion {
                body["promotion"] = serde_json::json!({
                    "to": to,
                    "status": "waiting_confirmation",
                    "confirm": format!("/v1/deployments/{}/promotion/confirm", record.id),
                    "decline": format!("/v1/deployments/{}/promotion/decline", record.id),
                });
            }
            body.to_string()
        }
        NotifyFormat::Slack => {
            let what = event.as_str().replace('_', " ");
            let mut text = format!(
                "{} {} to {} (team {}): {what}, deployment {} asked by {}",
                record.application,
                record.version,
                record.environment,
                record.team,
                record.id,
                record.requested_by
            );
            if let (NotifyEvent::Failed, Some(error)) = (event, &record.error) {
                text.push_str(&format!(": {error}"));
            }
            if let Some(to) = promotion {
                text = format!(
                    "{} {} to {} (team {}) succeeded, deployment {}: its promotion to {to} is {what} (`vesemir promote confirm {}`)",
                    record.application, record.version, record.environment, record.team, record.id, record.id
                );
            }
            serde_json::json!({ "text": text }).to_string()
        }
    }
}

/// The JSON body of `event` about `record`.
fn json_body(event: NotifyEvent, record: &crate::store::DeploymentRecord) -> serde_json::Value {
    serde_json::json!({
        "event": event.as_str(),
        "deployment": {
            "id": record.id,
            "team": record.team,
            "application": record.application,
            "environment": record.environment,
            "version": record.version,
            "status": record.status,
            "requested_by": record.requested_by,
            "error": record.error,
        },
        "at_ms": now_ms(),
        "link": format!("/v1/deployments/{}", record.id),
    })
}

/// Delivers queued notifications, each in its own task, at most [`MAX_IN_FLIGHT`] at once, one
/// deployment's to one target in order.
async fn deliver_all(mut jobs: mpsc::Receiver<Job>, store: Arc<dyn Store>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the notification HTTP client could not be built: no notification is sent");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The last delivery to each (deployment, target): the next one waits for it, so a receiver
    // gets one deployment's notifications in the order they happened.
    let mut last: HashMap<(i64, String), tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (client, store) = (client.clone(), store.clone());
        last.retain(|_, delivery| !delivery.is_finished());
        let key = (job.deployment, job.target.config.name.clone());
        let before = last.remove(&key);
        let delivery = tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            deliver(&client, &*store, job).await;
            drop(slot);
        });
        last.insert(key, delivery);
    }
}

/// Delivers one notification: up to `attempts` tries, 0.5 s doubling to 30 s apart, each
/// recorded.
async fn deliver(client: &reqwest::Client, store: &dyn Store, job: Job) {
    let config = &job.target.config;
    let backoff = Backoff::new(config.attempts, Duration::from_millis(500), Duration::from_secs(30));
    for attempt in 1..=config.attempts {
        let mut request = client
            .post(&config.url)
            .header("content-type", "application/json")
            .header("x-vesemir-event", job.event.as_str())
            .header("x-vesemir-delivery", &job.delivery)
            .body(job.body.clone());
        if let Some(secret) = &job.target.secret {
            request = request.header("x-vesemir-signature", crate::hooks::sign(secret, job.body.as_bytes()));
        }
        let (delivered, http_status, error) = match request.send().await {
            Ok(response) if response.status().is_success() => (true, Some(response.status().as_u16()), None),
            Ok(response) => {
                (false, Some(response.status().as_u16()), Some(format!("answered {}", response.status())))
            }
            // Without the URL: it may hold a token.
            Err(e) => (false, None, Some(describe(&e))),
        };
        let record = NotificationAttempt {
            deployment_id: job.deployment,
            target: config.name.clone(),
            event: job.event.as_str().to_owned(),
            attempt: i64::from(attempt),
            delivered,
            http_status: http_status.map(i64::from),
            error: error.clone(),
            at_ms: now_ms(),
        };
        if let Err(e) = store.record_notification(&record).await {
            tracing::warn!(error = %e, target = %config.name, "a notification attempt could not be recorded");
        }
        if delivered {
            return;
        }
        tracing::warn!(deployment = job.deployment, target = %config.name, event = job.event.as_str(), attempt, error = error.as_deref().unwrap_or(""), "a notification was not delivered");
        if attempt < config.attempts {
            tokio::time::sleep(backoff.base_delay(attempt)).await;
        }
    }
}

/// What went wrong with a request, without its URL (it may hold a token).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}
