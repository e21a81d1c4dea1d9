//! A server with the VM pages on, shared by `web_vms.rs` and `browser_vms.rs`: a real slapd
//! (sign-in and the directory of owners), `[vms]` letting team `payments` create `small` VMs,
//! and the provisioning's fakes (`provision_fakes.rs`, declared by the test crate).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::Router;
use serde_json::Value;
use vesemir_core::request::DeploymentRequest;
use vesemir_core::Ports;
use vesemir_http::web::LdapConfig;
use vesemir_http::{PortsError, PortsFactory, Provisioning, Server, VmAllow, VmRules};
use vesemir_testkit::slapd::{Slapd, SlapdUser};

use crate::provision_fakes::{self, World};
use crate::support::{self, ADMIN};

/// Every person's password.
pub const PASSWORD: &str = "pw";

/// The deployment fakes and the provisioning fakes, as a front end composes them.
struct VmPorts {
    fleet: Ports,
    provisioning: Provisioning,
}

impl PortsFactory for VmPorts {
    fn ports(&self, _: &DeploymentRequest) -> Result<Ports, PortsError> {
        Ok(self.fleet.clone())
    }
    fn provisioning(&self) -> Result<Option<Provisioning>, PortsError> {
        Ok(Some(self.provisioning.clone()))
    }
}

/// The server, its directory and the fakes' world.
pub struct VmWeb {
    pub slapd: Slapd,
    _secret: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
    /// What the fakes hold; the switches that make steps fail or SSH stay silent.
    pub world: Arc<World>,
    pub server: Server,
    pub router: Router,
}

/// `alice` and `bob` deploy for `payments`; `rita` only reads its pages.
fn people() -> Vec<SlapdUser> {
    vec![
        SlapdUser::new("alice", PASSWORD, &["devs"]),
        SlapdUser::new("bob", PASSWORD, &["devs"]),
        SlapdUser::new("rita", PASSWORD, &["readers"]),
    ]
}

fn ldap_section(slapd: &Slapd, password_file: &std::path::Path) -> LdapConfig {
    let text = format!(
        r#"
url = "{url}"
bind_dn = "{service}"
bind_password_file = "{password}"
user_base = "{people}"
group_base = "{groups}"
timeout = "2s"
[[groups]]
group = "devs"
teams = ["payments"]
roles = ["deploy", "read"]
[[groups]]
group = "readers"
teams = ["payments"]
roles = ["read"]
"#,
        url = slapd.url(),
        service = Slapd::SERVICE_DN,
        password = password_file.display(),
        people = Slapd::PEOPLE,
        groups = Slapd::GROUPS,
    );
    toml::from_str(&text).expect("a valid [ldap] section")
}

impl VmWeb {
    /// Starts slapd and the server: `payments` may create `small` VMs, `max_per_owner` each.
    pub async fn start(max_per_owner: u32) -> Self {
        Self::start_with(Some(VmRules {
            max_per_owner,
            allow: vec![VmAllow {
                team: "payments".into(),
                flavors: vec!["small".into()],
                max_per_owner: None,
            }],
        }))
        .await
    }

    /// Starts slapd and the server with `[vms]` as `rules` says (`None`: no VM pages).
    pub async fn start_with(rules: Option<VmRules>) -> Self {
        let slapd = tokio::task::spawn_blocking(|| Slapd::start(&people())).await.expect("slapd starts");
        let secret = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(secret.path(), Slapd::SERVICE_PASSWORD).expect("writes");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = support::config(&dir.path().join("vesemir.db"));
        config.ldap = Some(ldap_section(&slapd, secret.path()));
        config.vms = rules;
        let world = Arc::new(World::default());
        let factory = VmPorts {
            fleet: support::Fleet::new(1).ports(),
            provisioning: provision_fakes::provisioning(&world, Duration::from_secs(60)),
        };
        let server = Server::open(&config, Arc::new(factory)).await.expect("the server opens");
        let router = server.router();
        Self { slapd, _secret: secret, _dir: dir, world, server, router }
    }

    /// The API's view of VM `name` (as the admin token reads it).
    pub async fn view(&self, name: &str) -> Value {
        support::call(&self.router, Method::GET, &format!("/v1/vms/{name}"), Some(ADMIN), None, &[])
            .await
            .json
    }

    /// Waits (10 s at most) until VM `name` is in `status`, and answers its view.
    pub async fn wait_status(&self, name: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.view(name).await;
            if view["status"] == status {
                return view;
            }
            assert!(tokio::time::Instant::now() < deadline, "VM {name} never got {status}: {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (10 s at most) until VM `name`'s create or destroy has ended, and answers its view.
    pub async fn wait_ended(&self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.view(name).await;
            if !matches!(view["status"].as_str(), Some("creating" | "destroying")) {
                return view;
            }
            assert!(tokio::time::Instant::now() < deadline, "VM {name} never ended: {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Follows VM `name`'s event stream (as the admin) until an event of `kind` for `step`
    /// (10 s at most), then leaves it.
    pub async fn wait_status_event(&self, name: &str, kind: &str, step: &str) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .uri(format!("/v1/vms/{name}/events"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = self.router.clone().oneshot(request).await.expect("infallible");
        assert!(response.status().is_success(), "VM {name}'s events: {}", response.status());
        let mut body = response.into_body();
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = support::parse_sse(&text)
                .iter()
                .any(|event| event.data["type"] == kind && event.data["step"] == step);
            if seen {
                return;
            }
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .unwrap_or_else(|_| panic!("VM {name} had no {kind} {step} within 10 s: {text}"));
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => panic!("VM {name}'s stream ended without {kind} {step}: {text}"),
            }
        }
    }
}
