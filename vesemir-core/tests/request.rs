//! Parsing and validating deployment requests: the happy path in TOML and JSON, and bad input
//! that must be refused with every problem named by its field path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vesemir_core::name::PlaybookName;
use vesemir_core::ports::{LbEndpoint, Weight};
use vesemir_core::request::spec::{ChangesetSpec, RequestSpec};
use vesemir_core::request::{
    Amount, CanaryGate, DeploymentRequest, DrainTimeoutPolicy, InlineChangesets, LbInstances, Playbooks,
    RawQueries, RequestPolicy, ServerMapping, StepAction, Targets,
};

const FULL: &str = r#"
application = "shop-web"
environment = "production"
team = "payments"
version = "2026.11.21-1"
requested_by = "alice"

[targets]
tags = ["shop-web", "blue pool"]
roles = ["web"]

[load_balancer]
backend = "be_shop"
discover = { tags = ["haproxy"], port = 9999 }
match_servers_by = "address"
drain_timeout = "2m"
on_drain_timeout = "force"
servers_not_in_rotation = "include"
ramp = [{ weight = "10%", hold = "30s" }, { weight = 50, hold = "1m" }]

[strategy]
concurrency = "25%"
max_failures = 2
pause_between_batches = "10s"
canary = { hosts = 1, hold = "5m" }

[changeset]
steps = [
  { name = "fetch", upload = "dist/shop.tar.gz", to = "/tmp/shop-{version}.tar.gz", mode = "0600" },
  { name = "install", run = "install-shop {version} {channel}", timeout = "5m" },
]
[changeset.health]
command = "curl -fsS http://127.0.0.1:8080/health"
timeout = "90s"
interval = "3s"
load_balancer_up = false

[variables]
channel = "stable"
"#;

fn errors_of(text: &str, policy: &RequestPolicy<'_>) -> Vec<String> {
    match DeploymentRequest::from_toml(text, policy) {
        Ok(_) => panic!("should have been refused:\n{text}"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn a_full_request_parses_into_validated_types() {
    let r = DeploymentRequest::from_toml(FULL, &RequestPolicy::permissive()).expect("valid");
    assert_eq!(r.application.as_str(), "shop-web");
    let Targets::Search(selector) = &r.targets else { panic!("search expected") };
    assert_eq!(selector.tags.len(), 2);
    assert_eq!(
        selector.environment.as_ref().map(|e| e.as_str()),
        Some("production"),
        "defaults to the request's"
    );
    assert_eq!(
        r.load_balancer.instances,
        LbInstances::Discover {
            selector: vesemir_core::ports::Selector {
                tags: vec![vesemir_core::name::ChefTerm::new("haproxy").expect("term")],
                ..Default::default()
            },
            port: 9999
        }
    );
    assert_eq!(r.load_balancer.server, ServerMapping::ByAddress);
    assert_eq!(r.load_balancer.drain_timeout, Duration::from_secs(120));
    assert_eq!(r.load_balancer.on_drain_timeout, DrainTimeoutPolicy::Force);
    assert_eq!(r.load_balancer.servers_not_in_rotation, vesemir_core::request::NotInRotationPolicy::Include);
    let ramp: Vec<(Weight, Duration)> = r.load_balancer.ramp.iter().map(|s| (s.weight, s.hold)).collect();
    assert_eq!(
        ramp,
        [
            (Weight::percent(10).expect("w"), Duration::from_secs(30)),
            (Weight::percent(50).expect("w"), Duration::from_secs(60))
        ]
    );
    assert_eq!(r.strategy.concurrency, Amount::Percent(25));
    assert_eq!(r.strategy.max_failures, Amount::Count(2));
    assert_eq!(r.strategy.canary.map(|c| c.gate), Some(CanaryGate::Hold(Duration::from_secs(300))));
    assert!(matches!(&r.changeset.steps[0].action, StepAction::Upload { mode: 0o600, .. }));
    assert_eq!(r.changeset.steps[1].timeout, Duration::from_secs(300));
    assert_eq!(r.changeset.health.load_balancer_up, None);
    let health = r.changeset.health.command.as_ref().expect("command");
    assert_eq!((health.timeout, health.interval), (Duration::from_secs(90), Duration::from_secs(3)));
}

#[test]
fn json_and_toml_give_the_same_request() {
    let spec = RequestSpec::from_toml(FULL).expect("toml");
    let json = serde_json::to_string(&spec).expect("serializes");
    let again = RequestSpec::from_json(&json).expect("json");
    assert_eq!(spec, again);
    let policy = RequestPolicy::permissive();
    assert_eq!(spec.validate(&policy).expect("valid"), again.validate(&policy).expect("valid"));
}

#[test]
fn every_problem_is_reported_at_once_with_its_field() {
    let text = FULL
        .replace("application = \"shop-web\"", "application = \"shop web\"")
        .replace("backend = \"be_shop\"", "backend = \"be;shop\"")
        .replace("drain_timeout = \"2m\"", "drain_timeout = \"two minutes\"")
        .replace("{ weight = 50, hold = \"1m\" }", "{ weight = 5, hold = \"1m\" }")
        .replace("channel = \"stable\"", "chanel = \"stable\"");
    let errors = errors_of(&text, &RequestPolicy::permissive());
    let fields: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
    assert_eq!(
        fields,
        [
            "application",
            "load_balancer.backend",
            "load_balancer.drain_timeout",
            "load_balancer.ramp[1].weight",
            "changeset.steps[1].run",
        ],
        "{errors:#?}"
    );
    assert!(errors[1].contains("HAProxy's legal characters"), "{}", errors[1]);
    assert!(errors[2].contains("like \"30s\""), "{}", errors[2]);
    assert!(errors[3].contains("a ramp only goes up"), "{}", errors[3]);
    assert!(errors[4].contains("uses {channel}, which is neither built in"), "{}", errors[4]);
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let text = FULL.replace("team = \"payments\"", "team = \"payments\"\nteem = \"x\"");
    let errors = errors_of(&text, &RequestPolicy::permissive());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("teem: unknown field `teem`, expected one of `application`"), "{errors:?}");

    let text = FULL.replace("concurrency = \"25%\"", "concurrency = \"25%\"\nconcurency = 3");
    let errors = errors_of(&text, &RequestPolicy::permissive());
    assert!(errors[0].starts_with("strategy.concurency: unknown field `concurency`"), "{errors:?}");

    let json = r#"{"application":"a","environment":"e","team":"t","version":"1","targets":{"tags":["x"]},
                   "load_balancer":{"backend":"b","instances":[{"address":"127.0.0.1","port":"x"}]}}"#;
    let error = RequestSpec::from_json(json).expect_err("bad port");
    assert!(error.to_string().starts_with("load_balancer.instances[0].port: invalid type"), "{error}");
}

#[test]
fn whole_numbers_written_with_a_fraction_are_integers_as_json_schema_says() {
    let json = |port: &str, hosts: &str| {
        format!(
            r#"{{"application":"a","environment":"e","team":"t","version":"1","targets":{{"tags":["x"]}},
               "load_balancer":{{"backend":"b","instances":[{{"address":"127.0.0.1","port":{port}}}]}},
               "strategy":{{"concurrency":2.0,"canary":{{"hosts":{hosts}}}}}}}"#
        )
    };
    let spec = RequestSpec::from_json(&json("9001.0", "1e0")).expect("whole numbers");
    assert_eq!(spec.load_balancer.instances[0].port, Some(9001));
    assert_eq!(spec.strategy.canary.map(|c| c.hosts), Some(1));
    assert_eq!(spec.strategy.concurrency, Some(vesemir_core::request::Amount::Count(2)));
    let error = RequestSpec::from_json(&json("9001.5", "1")).expect_err("a fraction");
    assert!(
        error.to_string().starts_with("load_balancer.instances[0].port: invalid type: floating point"),
        "{error}"
    );
}

#[test]
fn an_unknown_policy_for_servers_not_in_rotation_names_the_choices() {
    let text = FULL.replace("servers_not_in_rotation = \"include\"", "servers_not_in_rotation = \"ignore\"");
    let errors = errors_of(&text, &RequestPolicy::permissive());
    assert_eq!(
        errors,
        ["load_balancer.servers_not_in_rotation: \"ignore\" is not known: use \"refuse\", \"skip\" or \"include\""]
    );
}

#[test]
fn on_failure_is_stop_by_default_rollback_when_asked_and_nothing_else() {
    use vesemir_core::request::OnFailure;
    let policy = RequestPolicy::permissive();
    let parsed = |text: &str| DeploymentRequest::from_toml(text, &policy).expect("valid").strategy.on_failure;
    assert_eq!(parsed(FULL), OnFailure::Stop);
    let rollback = FULL.replace("[strategy]\n", "[strategy]\non_failure = \"rollback\"\n");
    assert_eq!(parsed(&rollback), OnFailure::Rollback);
    let wrong = FULL.replace("[strategy]\n", "[strategy]\non_failure = \"retry\"\n");
    assert_eq!(
        errors_of(&wrong, &policy),
        ["strategy.on_failure: is \"retry\": write \"stop\" (the default) or \"rollback\""]
    );
}

#[test]
fn malformed_documents_say_so() {
    let error = RequestSpec::from_toml("application = ").expect_err("bad toml");
    assert!(error.to_string().contains("is not valid TOML"), "{error}");
    let error = RequestSpec::from_json("{").expect_err("bad json");
    assert!(error.to_string().contains("is not valid JSON"), "{error}");
}

#[test]
fn the_server_refuses_inline_commands_and_raw_queries() {
    let playbook: Playbooks = BTreeMap::new();
    let policy = RequestPolicy {
        playbooks: &playbook,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    };
    let text = FULL.replace("roles = [\"web\"]", "query = \"name:*\"");
    let errors = errors_of(&text, &policy);
    assert!(errors.iter().any(|e| e.starts_with("targets.query: raw queries are not allowed")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.starts_with("changeset: inline changesets are not allowed")),
        "{errors:?}"
    );
}

#[test]
fn playbooks_are_looked_up_and_their_variables_checked() {
    let changeset = ChangesetSpec::from_toml(
        "steps = [{ name = \"install\", run = \"install {version} {channel}\" }]\n[health]\ncommand = \"true\"\n",
    )
    .expect("parses")
    .validate()
    .expect("valid");
    let mut playbooks = Playbooks::new();
    playbooks.insert(PlaybookName::new("shop").expect("name"), changeset);
    let policy = RequestPolicy {
        playbooks: &playbooks,
        inline_changesets: InlineChangesets::Refused,
        raw_queries: RawQueries::Refused,
    };
    let start = FULL.find("[changeset]").expect("has changeset");
    let end = FULL.find("[variables]").expect("has variables");
    let with_playbook = format!("playbook = \"shop\"\n{}{}", &FULL[..start], &FULL[end..]);
    let request = DeploymentRequest::from_toml(&with_playbook, &policy).expect("valid");
    assert_eq!(request.playbook.as_ref().map(|p| p.as_str()), Some("shop"));

    let without_variable = with_playbook.replace("channel = \"stable\"", "");
    let errors = errors_of(&without_variable, &policy);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("playbook shop.steps[0].run: uses {channel}"), "{errors:?}");

    let unknown = with_playbook.replace("playbook = \"shop\"", "playbook = \"shoe\"");
    let errors = errors_of(&unknown, &policy);
    assert_eq!(errors, ["playbook: shoe is not a configured playbook (known: shop)"]);
}

#[test]
fn static_hosts_and_explicit_instances() {
    let text = r#"
application = "a"
environment = "e"
team = "t"
version = "1"
requested_by = "ci"
[targets]
hosts = [{ name = "web-1", address = "10.0.0.1" }, { name = "web-1", address = "10.0.0.2" }, { name = "web-3", address = "x;y" }]
[load_balancer]
backend = "b"
instances = [{ socket = "/run/haproxy.sock" }, { address = "127.0.0.1" }]
[changeset]
steps = [{ name = "s", run = "true" }]
"#;
    let errors = errors_of(text, &RequestPolicy::permissive());
    assert_eq!(
        errors,
        [
            "targets.hosts[1].name: web-1 is listed twice",
            "targets.hosts[2].address: \"x;y\" is not a valid address: use an IPv4 or IPv6 address or a DNS name",
            "load_balancer.instances[1]: must be either { address = \"...\", port = N } or { socket = \"/path\" }",
        ]
    );
    let fixed = text
        .replace("web-1\", address = \"10.0.0.2", "web-2\", address = \"10.0.0.2")
        .replace("x;y", "web-3.example.com")
        .replace("{ address = \"127.0.0.1\" }", "{ address = \"127.0.0.1\", port = 9999 }");
    let request = DeploymentRequest::from_toml(&fixed, &RequestPolicy::permissive()).expect("valid");
    let LbInstances::Listed(endpoints) = &request.load_balancer.instances else { panic!("listed") };
    assert_eq!(endpoints[1], LbEndpoint::Tcp { address: "127.0.0.1".into(), port: 9999 });
    assert!(request.changeset.health.load_balancer_up.is_some(), "LB UP is the default gate");
}

#[test]
fn a_request_without_targets_or_health_is_refused() {
    let text = r#"
application = "a"
environment = "e"
team = "t"
version = "1"
[targets]
[load_balancer]
backend = "b"
instances = [{ address = "127.0.0.1", port = 1 }]
[strategy]
concurrency = 0
canary = { hosts = 1 }
[changeset]
steps = []
[changeset.health]
load_balancer_up = false
"#;
    let errors = errors_of(text, &RequestPolicy::permissive());
    let fields: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
    assert_eq!(
        fields,
        [
            "requested_by",
            "targets",
            "strategy.concurrency",
            "strategy.canary",
            "changeset.steps",
            "changeset.health"
        ],
        "{errors:#?}"
    );
}

#[test]
fn type_errors_are_reported_with_every_other_problem() {
    let policy_playbooks: Playbooks = [(
        PlaybookName::new("web").expect("name"),
        ChangesetSpec::from_toml("steps = [{ name = \"a\", run = \"true\" }]")
            .expect("toml")
            .validate()
            .expect("valid"),
    )]
    .into_iter()
    .collect();
    let policy = RequestPolicy {
        playbooks: &policy_playbooks,
        inline_changesets: InlineChangesets::Allowed,
        raw_queries: RawQueries::Allowed,
    };
    let text = r#"
application = "shop web"
environment = "production"
team = "payments"
version = "bad version!"
requested_by = "alice"
playbook = "no such playbook"

[targets]
tags = ["shop-web"]

[load_balancer]
backend = "be shop"
instances = [{ address = "127.0.0.1", port = 99999 }]

[strategy]
concurrency = "zero"
canary = { hosts = -1, hold = "5m" }
"#;
    let errors = errors_of(text, &policy);
    let fields: BTreeSet<&str> = errors.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
    for field in [
        "application",
        "version",
        "playbook",
        "load_balancer.backend",
        "load_balancer.instances[0].port",
        "strategy.concurrency",
        "strategy.canary.hosts",
    ] {
        assert!(fields.contains(field), "{field} is not reported: {errors:#?}");
    }
    assert_eq!(errors.len(), 7, "each problem once, no echo of a stand-in value: {errors:#?}");

    let json = r#"{"application":"a b","environment":"e","team":"t","version":1.5,"requested_by":"x",
                   "targets":{"tags":["x"]},"playbook":"web",
                   "load_balancer":{"backend":"b","instances":[{"address":"127.0.0.1","port":"x"}]}}"#;
    let errors: Vec<String> = match DeploymentRequest::from_json(json, &policy) {
        Ok(_) => panic!("should have been refused"),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    };
    let fields: BTreeSet<&str> = errors.iter().map(|e| e.split(':').next().unwrap_or("")).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["application", "version", "load_balancer.instances[0].port"]),
        "{errors:#?}"
    );

    let missing = RequestSpec::from_toml("application = 5\nenvironment = []\n").expect_err("bad types");
    let fields: Vec<&str> = missing.errors().iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"application") && fields.contains(&"environment"), "{missing}");
}

#[test]
fn playbooks_are_checked_once_for_every_front_end() {
    let good = ChangesetSpec::from_toml("steps = [{ name = \"a\", run = \"true\" }]").expect("toml");
    let empty = ChangesetSpec::default();
    let specs: BTreeMap<String, ChangesetSpec> =
        [("web".to_owned(), good.clone()), ("bad name".to_owned(), good), ("db".to_owned(), empty)]
            .into_iter()
            .collect();
    let errors = vesemir_core::request::validate_playbooks(&specs).expect_err("two problems");
    let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["playbooks.bad name", "playbooks.db.steps"], "{errors}");
    let only_web: BTreeMap<String, ChangesetSpec> = specs.into_iter().filter(|(n, _)| n == "web").collect();
    let playbooks = vesemir_core::request::validate_playbooks(&only_web).expect("valid");
    assert!(playbooks.contains_key(&PlaybookName::new("web").expect("name")));
}
