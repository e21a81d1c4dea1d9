//! `[vms]` as decisions: which flavors a principal's teams may create, for which team a VM is
//! recorded, and how many VMs an owner may hold. Pure functions over the rules.

use std::collections::BTreeSet;

use vesemir_core::provision::{Catalog, FlavorName};
use vesemir_core::request::FieldError;

use crate::auth::Principal;
use crate::config::VmRules;

/// Every problem of `rules` against the provisioning's `catalog`: a flavor it does not define,
/// an empty team, a limit of 0.
pub fn check(rules: &VmRules, catalog: &Catalog) -> Vec<FieldError> {
    let mut problems = Vec::new();
    let known: Vec<&str> = catalog.flavors.keys().map(FlavorName::as_str).collect();
    if rules.max_per_owner == 0 {
        problems.push(FieldError::new("vms.max_per_owner", "is 0: nobody could create a VM; set 1 or more"));
    }
    for (i, allow) in rules.allow.iter().enumerate() {
        if allow.team.trim().is_empty() {
            problems.push(FieldError::new(format!("vms.allow[{i}].team"), "is empty: name a team"));
        }
        if allow.max_per_owner == Some(0) {
            problems.push(FieldError::new(
                format!("vms.allow[{i}].max_per_owner"),
                "is 0: the team could create no VM; set 1 or more, or remove the entry",
            ));
        }
        for (j, flavor) in allow.flavors.iter().enumerate() {
            let defined =
                FlavorName::new(flavor).ok().is_some_and(|name| catalog.flavors.contains_key(&name));
            if !defined {
                problems.push(FieldError::new(
                    format!("vms.allow[{i}].flavors[{j}]"),
                    format!(
                        "names flavor {flavor:?}, which [provision] does not define: use one of {}, or add it to [provision]",
                        list(&known)
                    ),
                ));
            }
        }
    }
    problems
}

/// `a, b, c`, or `(none)`.
pub(crate) fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

/// A create the rules allow: the team it is recorded for and the owner's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The team the VM is recorded for.
    pub team: String,
    /// How many VMs its owner may hold at most.
    pub max_per_owner: u32,
}

/// Why the rules refuse a create: a message for a 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The teams `principal` creates VMs for: its teams with the deploy role, or every team of the
/// rules for an admin.
fn creating_teams<'a>(rules: &'a VmRules, principal: &'a Principal) -> Vec<&'a str> {
    if principal.is_admin() {
        let mut teams: Vec<&str> = rules.allow.iter().map(|a| a.team.as_str()).collect();
        teams.dedup();
        return teams;
    }
    principal.teams.iter().filter(|t| principal.may_deploy_for(t)).map(String::as_str).collect()
}

/// Whether `principal` may create `flavor`: the first of its teams (in order) that the rules
/// allow it, with that team's limit (else the global one).
pub fn allow(rules: &VmRules, principal: &Principal, flavor: &FlavorName) -> Result<Allowed, Refused> {
    let teams = creating_teams(rules, principal);
    for team in &teams {
        for entry in rules.allow.iter().filter(|a| a.team == *team) {
            if entry.flavors.iter().any(|f| f == flavor.as_str()) {
                return Ok(Allowed {
                    team: (*team).to_owned(),
                    max_per_owner: entry.max_per_owner.unwrap_or(rules.max_per_owner),
                });
            }
        }
    }
    if teams.is_empty() {
        return Err(Refused(format!(
            "{} creates no VMs: it deploys for no team ([vms.allow] names the teams that may)",
            principal.name
        )));
    }
    let may = flavors_of(rules, principal);
    let may: Vec<&str> = may.iter().map(String::as_str).collect();
    Err(Refused(format!(
        "team {} may not create flavor {flavor} ([vms.allow]): it may create {}",
        teams.join(", "),
        list(&may)
    )))
}

/// The flavors `principal`'s teams may create, by name.
pub fn flavors_of(rules: &VmRules, principal: &Principal) -> BTreeSet<String> {
    let teams = creating_teams(rules, principal);
    rules
        .allow
        .iter()
        .filter(|a| teams.contains(&a.team.as_str()))
        .flat_map(|a| a.flavors.iter().cloned())
        .collect()
}

/// The tightest limit that applies to `principal`'s creates (the global one unless each of its
/// teams has its own).
pub fn max_per_owner_of(rules: &VmRules, principal: &Principal) -> u32 {
    let teams = creating_teams(rules, principal);
    rules
        .allow
        .iter()
        .filter(|a| teams.contains(&a.team.as_str()))
        .map(|a| a.max_per_owner.unwrap_or(rules.max_per_owner))
        .max()
        .unwrap_or(rules.max_per_owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmAllow;

    fn rules() -> VmRules {
        VmRules {
            max_per_owner: 2,
            allow: vec![
                VmAllow { team: "payments".into(), flavors: vec!["small".into()], max_per_owner: Some(1) },
                VmAllow {
                    team: "search".into(),
                    flavors: vec!["small".into(), "large".into()],
                    max_per_owner: None,
                },
            ],
        }
    }

    fn flavor(name: &str) -> FlavorName {
        FlavorName::new(name).expect("a flavor name")
    }

    #[test]
    fn a_team_creates_its_flavors_with_its_limit_and_is_told_what_it_may_create() {
        let payments = Principal::team_token("ci", ["payments"]);
        assert_eq!(
            allow(&rules(), &payments, &flavor("small")),
            Ok(Allowed { team: "payments".into(), max_per_owner: 1 })
        );
        let Err(Refused(message)) = allow(&rules(), &payments, &flavor("large")) else { panic!("refused") };
        assert!(
            message.contains("payments") && message.contains("large") && message.contains("small"),
            "{message}"
        );
        let search = Principal::team_token("ci", ["search"]);
        assert_eq!(allow(&rules(), &search, &flavor("large")).map(|a| a.max_per_owner), Ok(2));
        let mut reader = Principal::team_token("dash", ["search"]);
        reader.roles = [crate::auth::Role::Read].into();
        assert!(allow(&rules(), &reader, &flavor("small")).is_err());
        assert_eq!(
            allow(&rules(), &Principal::admin_token("root"), &flavor("large")).map(|a| a.team),
            Ok("search".into())
        );
    }
}
