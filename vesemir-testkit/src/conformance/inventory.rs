//! The `Inventory` conformance suite: a small fleet every implementation is loaded with, and the
//! answers every implementation must give about it.

use std::collections::BTreeSet;

use vesemir_core::name::{ChefTerm, EnvironmentName};
use vesemir_core::ports::{Inventory, Selector};
use vesemir_core::PortError;

/// One node of the conformance fleet.
#[derive(Debug, Clone)]
pub struct FleetNode {
    /// The node's name (a valid host name).
    pub name: &'static str,
    /// The address a search must answer for it.
    pub address: &'static str,
    /// Its tags; the decoys' tags differ from real ones by a space, a prefix or a character.
    pub tags: &'static [&'static str],
    /// Its roles.
    pub roles: &'static [&'static str],
    /// The recipes of its run list (`cookbook::recipe`).
    pub recipes: &'static [&'static str],
    /// Its Chef environment (`production` or `staging`).
    pub environment: &'static str,
}

/// The fleet an implementation must hold before [`run_all`]. It includes decoys a sloppy
/// search would wrongly match: a node tagged `blue` and `green` separately (a phrase or
/// unescaped-space search for `blue green` catches it) and one tagged `shopping` (a prefix or
/// wildcard search for `shop` catches it).
pub fn fleet() -> Vec<FleetNode> {
    vec![
        FleetNode {
            name: "web-01",
            address: "10.0.0.1",
            tags: &["shop", "blue green"],
            roles: &["web"],
            recipes: &["shop::web"],
            environment: "production",
        },
        FleetNode {
            name: "web-02",
            address: "10.0.0.2",
            tags: &["shop"],
            roles: &["web"],
            recipes: &["shop::web"],
            environment: "production",
        },
        FleetNode {
            name: "web-03",
            address: "10.0.0.3",
            tags: &["shop", "blue green"],
            roles: &["web"],
            recipes: &["shop::web"],
            environment: "staging",
        },
        FleetNode {
            name: "api-01",
            address: "10.0.1.1",
            tags: &["api", "x:y(1)*"],
            roles: &["api"],
            recipes: &["shop::api"],
            environment: "production",
        },
        FleetNode {
            name: "lb-01",
            address: "10.0.2.1",
            tags: &["haproxy"],
            roles: &["lb"],
            recipes: &["haproxy"],
            environment: "production",
        },
        FleetNode {
            name: "decoy-01",
            address: "10.0.3.1",
            tags: &["blue", "green", "shopping", "x:y(1)"],
            roles: &["webby"],
            recipes: &["shop::web2"],
            environment: "production",
        },
    ]
}

fn terms(values: &[&str]) -> Vec<ChefTerm> {
    values.iter().map(|v| ChefTerm::new(v).unwrap_or_else(|e| panic!("bad test term: {e}"))).collect()
}

fn env(name: &str) -> Option<EnvironmentName> {
    Some(EnvironmentName::new(name).unwrap_or_else(|e| panic!("bad test environment: {e}")))
}

/// A selector from tags, roles, recipes and an environment.
pub fn selector(tags: &[&str], roles: &[&str], recipes: &[&str], environment: Option<&str>) -> Selector {
    Selector {
        tags: terms(tags),
        roles: terms(roles),
        recipes: terms(recipes),
        environment: environment.and_then(env),
        raw_query: None,
    }
}

async fn names_of(inventory: &dyn Inventory, selector: &Selector) -> Vec<String> {
    let hosts = inventory
        .discover(selector)
        .await
        .unwrap_or_else(|e| panic!("{inventory:?} failed to discover {selector}: {}", e.chain()));
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{selector}: a host was answered twice: {names:?}");
    let fleet = fleet();
    for host in &hosts {
        let node = fleet
            .iter()
            .find(|n| n.name == host.name.as_str())
            .unwrap_or_else(|| panic!("{selector}: unknown host {}", host.name));
        assert_eq!(host.address, node.address, "{selector}: address of {}", host.name);
    }
    let mut sorted = names;
    sorted.sort();
    sorted
}

async fn expect(inventory: &dyn Inventory, selector: Selector, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(names_of(inventory, &selector).await, expected, "hosts matching {selector}");
}

/// A tag finds exactly the hosts carrying it (not `shopping` for `shop`), each once, with
/// their addresses.
pub async fn tag_finds_exactly_its_hosts(inventory: &dyn Inventory) {
    expect(inventory, selector(&["shop"], &[], &[], None), &["web-01", "web-02", "web-03"]).await;
}

/// Every term must match: tags AND roles AND recipes AND the environment.
pub async fn every_term_must_match(inventory: &dyn Inventory) {
    expect(inventory, selector(&["shop", "blue green"], &[], &[], None), &["web-01", "web-03"]).await;
    expect(inventory, selector(&["shop"], &["web"], &["shop::web"], Some("staging")), &["web-03"]).await;
    expect(inventory, selector(&[], &["lb"], &["haproxy"], None), &["lb-01"]).await;
}

/// The environment narrows the search.
pub async fn environment_narrows(inventory: &dyn Inventory) {
    expect(inventory, selector(&["shop"], &[], &[], Some("production")), &["web-01", "web-02"]).await;
}

/// Spaces and Lucene special characters in a term match literally (`blue green` is one tag,
/// not `blue` and `green`; `x:y(1)*` is not a wildcard).
pub async fn special_characters_match_literally(inventory: &dyn Inventory) {
    expect(inventory, selector(&["blue green"], &[], &[], None), &["web-01", "web-03"]).await;
    expect(inventory, selector(&["x:y(1)*"], &[], &[], None), &["api-01"]).await;
    expect(inventory, selector(&["x:y(1)"], &[], &[], None), &["decoy-01"]).await;
}

/// Nothing matching is an error ("not found"), never a successful answer with no hosts.
pub async fn no_match_is_not_found(inventory: &dyn Inventory) {
    let selector = selector(&["no-such-tag"], &[], &[], None);
    match inventory.discover(&selector).await {
        Err(PortError::NotFound { what }) => assert!(!what.is_empty()),
        other => panic!("{selector}: expected NotFound, got {other:?}"),
    }
}

/// A selector that names nothing is refused rather than answered with every host.
pub async fn empty_selector_is_refused(inventory: &dyn Inventory) {
    match inventory.discover(&Selector::default()).await {
        Err(PortError::Rejected { reason, .. }) => assert!(reason.contains("selector"), "{reason}"),
        other => panic!("an empty selector must be refused, got {other:?}"),
    }
}

/// Every check of the suite, one after the other.
pub async fn run_all(inventory: &dyn Inventory) {
    tag_finds_exactly_its_hosts(inventory).await;
    every_term_must_match(inventory).await;
    environment_narrows(inventory).await;
    special_characters_match_literally(inventory).await;
    no_match_is_not_found(inventory).await;
    empty_selector_is_refused(inventory).await;
}
