//! Architecture invariants made mechanical: the core pulls in no network, SSH or database crate,
//! and no adapter depends on another adapter.

use std::process::Command;

fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_core_does_no_network_ssh_or_database_io() {
    let forbidden = [
        "reqwest",
        "hyper",
        "axum",
        "ssh2",
        "libssh2-sys",
        "openssl",
        "sqlx",
        "rusqlite",
        "postgres",
        "tokio-postgres",
        "mio",
    ];
    let deps = normal_dependencies("vesemir-core");
    assert!(deps.iter().any(|d| d == "tokio"), "the tree was read: {deps:?}");
    let found: Vec<&String> = deps.iter().filter(|d| forbidden.contains(&d.as_str())).collect();
    assert!(found.is_empty(), "vesemir-core must stay free of IO crates, but depends on {found:?}");
}

#[test]
fn adapters_never_depend_on_each_other_or_on_front_ends() {
    let adapters = ["vesemir-chef", "vesemir-haproxy", "vesemir-ssh", "vesemir-probe", "vesemir-provision"];
    for adapter in adapters {
        let deps = normal_dependencies(adapter);
        let found: Vec<&String> = deps
            .iter()
            .filter(|d| {
                d.as_str() != adapter && (adapters.contains(&d.as_str()) || d.as_str() == "vesemir-http")
            })
            .collect();
        assert!(found.is_empty(), "{adapter} depends on {found:?}: adapters depend on the core only");
        assert!(deps.iter().any(|d| d == "vesemir-core"), "{adapter} builds on vesemir-core");
    }
}
