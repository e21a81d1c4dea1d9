//! The server configuration both secret tests use: one team, and a unit whose playbook takes a
//! variable marked secret (`db_password`).

use vesemir_http::ServerConfig;

use crate::support::PAYMENTS;

/// The secret value the tests pass and then look for everywhere it must not be.
pub const SECRET: &str = "Sup3rS3cretValue42";

/// The server's configuration, its database at `database`.
pub fn config(database: &std::path::Path) -> ServerConfig {
    let text = format!(
        r#"
database = "{db}"

[[tokens]]
name = "payments-ci"
sha256 = "{hash}"
team = "payments"

[playbooks.vault]
steps = [{{ name = "install", run = "install-app {{version}} --password {{db_password}}" }}]

[[units]]
team = "payments"
application = "vault"
environment = "production"
playbooks = ["vault"]
targets = {{ tags = ["web"], chef_environment = "fleet" }}
load_balancer = {{ backend = "be_web", instances = [{{ address = "127.0.0.1", port = 9001 }}] }}
variables.db_password = {{ pattern = "^[A-Za-z0-9]{{8,64}}$", secret = true }}
"#,
        db = database.display(),
        hash = vesemir_http::auth::sha256_hex(PAYMENTS.as_bytes()),
    );
    ServerConfig::from_toml(&text).unwrap_or_else(|e| panic!("valid: {e}"))
}
