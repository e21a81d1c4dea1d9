//! A small Chef server API client: every request Mixlib-signed, bounded by timeouts, retried
//! with backoff on 5xx answers, timeouts and refused connections.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use vesemir_core::backoff::Backoff;
use vesemir_core::PortError;

use crate::config::{ChefConfig, ConfigError, ServerFlavor};
use crate::error::ChefError;
use crate::key::ClientKey;
use crate::sign::{sign, timestamp_now, RequestToSign, SignVersion};

/// A signed client of one Chef server organization. Cheap to clone (shares the connection pool).
#[derive(Debug, Clone)]
pub struct ChefClient {
    http: reqwest::Client,
    base: Url,
    client_name: String,
    key: ClientKey,
    version: SignVersion,
    retry: Backoff,
    request_timeout: Duration,
}

/// A failure worth another attempt.
enum Transient {
    Server { status: u16, message: String },
    Timeout,
    Connect(reqwest::Error),
}

/// A successful answer: its JSON body and whether goiardi sent it.
pub(crate) struct Answer {
    pub(crate) body: Value,
    /// goiardi marks every answer with `X-Goiardi: yes`; Chef Infra Server does not.
    pub(crate) goiardi: bool,
}

enum AttemptError {
    Transient(Transient),
    Fatal(ChefError),
}

impl ChefClient {
    /// A client for `config`'s server, client name and key.
    pub fn new(config: &ChefConfig) -> Result<Self, ConfigError> {
        let mut base = Url::parse(&config.server_url)
            .map_err(|e| ConfigError::Url { url: config.server_url.clone(), reason: e.to_string() })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ConfigError::Url {
                url: config.server_url.clone(),
                reason: "use http:// or https://".into(),
            });
        }
        if base.query().is_some() || !base.username().is_empty() || base.password().is_some() {
            return Err(ConfigError::Url {
                url: config.server_url.clone(),
                reason: "give no query string and no credentials in the URL".into(),
            });
        }
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        if config.client_name.is_empty() {
            return Err(ConfigError::Invalid("client_name is empty".into()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .danger_accept_invalid_certs(!config.tls_verify)
            .user_agent(concat!("vesemir-chef/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| ConfigError::CaBundle {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ConfigError::CaBundle { path: path.display().to_string(), reason: e.to_string() }
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base,
            client_name: config.client_name.clone(),
            key: config.key()?,
            version: config.sign_version,
            retry: Backoff::new(
                config.retries.saturating_add(1),
                config.retry_backoff,
                config.max_retry_backoff,
            )
            .with_jitter(Backoff::default().jitter),
            request_timeout: config.request_timeout,
        })
    }

    /// The server URL (with the organization path), as configured.
    pub fn server_url(&self) -> &str {
        self.base.as_str()
    }

    /// A signed `GET` of `endpoint` (e.g. `/nodes/web-01`), relative to the server URL.
    pub async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value, PortError> {
        Ok(self.call(Method::GET, endpoint, query, None).await?)
    }

    /// A signed `POST` of a JSON body.
    pub async fn post(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, PortError> {
        Ok(self.call(Method::POST, endpoint, query, Some(body)).await?)
    }

    /// Which server implementation answers: one signed `GET /search` (the list of indexes),
    /// judged by goiardi's `X-Goiardi` header.
    pub async fn detect_flavor(&self) -> Result<ServerFlavor, PortError> {
        let answer = self.call_answer(Method::GET, "/search", &[], None).await?;
        Ok(if answer.goiardi { ServerFlavor::Goiardi } else { ServerFlavor::ChefInfra })
    }

    pub(crate) fn url(&self, endpoint: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/{}", self.base.path().trim_end_matches('/'), endpoint.trim_start_matches('/'));
        url.set_path(&path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One API call with retries; the answer's JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ChefError> {
        Ok(self.call_answer(method, endpoint, query, body).await?.body)
    }

    /// One API call with retries; the whole answer.
    pub(crate) async fn call_answer(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ChefError> {
        let url = self.url(endpoint, query);
        let shown = self.url(endpoint, &[]).to_string();
        let body = match body {
            Some(value) => serde_json::to_vec(value)
                .map_err(|e| ChefError::Decode { url: shown.clone(), reason: e.to_string() })?,
            None => Vec::new(),
        };
        let mut retries = self.retry.retries(seed());
        loop {
            let transient = match self.attempt(&method, &url, &shown, &body).await {
                Ok(value) => return Ok(value),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Transient(transient)) => transient,
            };
            let Some(delay) = retries.after_failure() else {
                let attempt = retries.failures();
                return Err(match transient {
                    Transient::Server { status, message } => {
                        ChefError::ServerError { url: shown, status, message, attempts: attempt }
                    }
                    Transient::Timeout => {
                        ChefError::Timeout { url: shown, after: self.request_timeout, attempts: attempt }
                    }
                    Transient::Connect(source) => {
                        ChefError::Connect { url: shown, attempts: attempt, source }
                    }
                });
            };
            let attempt = retries.failures();
            tracing::debug!(url = %shown, attempt, ?delay, "Chef request failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        shown: &str,
        body: &[u8],
    ) -> Result<Answer, AttemptError> {
        let timestamp = timestamp_now();
        let to_sign = RequestToSign {
            method: method.as_str(),
            path: url.path(),
            body,
            client_name: &self.client_name,
            timestamp: &timestamp,
        };
        let headers = sign(&self.key, self.version, &to_sign).map_err(|e| AttemptError::Fatal(e.into()))?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Accept", "application/json")
            .header("X-Chef-Version", "18.0.0");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() || *method == Method::POST || *method == Method::PUT {
            request = request.header("Content-Type", "application/json").body(body.to_vec());
        }
        let response = request.send().await.map_err(|e| classify_send_error(e, shown))?;
        let status = response.status();
        let goiardi =
            response.headers().get("x-goiardi").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"yes"));
        let bytes = response.bytes().await.map_err(|e| classify_send_error(e, shown))?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(AttemptError::Fatal(ChefError::EmptyBody { url: shown.to_owned() }));
            }
            let body = serde_json::from_slice(&bytes).map_err(|e| {
                AttemptError::Fatal(ChefError::Decode { url: shown.to_owned(), reason: e.to_string() })
            })?;
            return Ok(Answer { body, goiardi });
        }
        let message = server_message(&bytes);
        let url = shown.to_owned();
        let client = self.client_name.clone();
        Err(match status {
            StatusCode::UNAUTHORIZED => AttemptError::Fatal(ChefError::Unauthorized { url, client, message }),
            StatusCode::FORBIDDEN => AttemptError::Fatal(ChefError::Forbidden { url, client, message }),
            StatusCode::NOT_FOUND => AttemptError::Fatal(ChefError::NotFound { url, message }),
            status if status.is_server_error() => {
                AttemptError::Transient(Transient::Server { status: status.as_u16(), message })
            }
            status => AttemptError::Fatal(ChefError::BadRequest { url, status: status.as_u16(), message }),
        })
    }
}

fn classify_send_error(error: reqwest::Error, shown: &str) -> AttemptError {
    if error.is_timeout() {
        AttemptError::Transient(Transient::Timeout)
    } else if error.is_connect() || error.is_request() {
        AttemptError::Transient(Transient::Connect(error))
    } else {
        AttemptError::Fatal(ChefError::Decode { url: shown.to_owned(), reason: error.to_string() })
    }
}

/// The server's own explanation: Chef answers `{"error": ["..."]}`; anything else is shown cut short.
fn server_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(map).to_string(),
        },
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim().to_owned();
    if text.chars().count() > 300 {
        format!("{}...", text.chars().take(300).collect::<String>())
    } else if text.is_empty() {
        "no message".to_owned()
    } else {
        text
    }
}

/// A seed for the retry jitter that differs between calls and processes (std's random hash
/// keys), so that clients failing together do not retry in step.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
