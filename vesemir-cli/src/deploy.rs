//! `vesemir deploy` and `vesemir plan`: local deployments over the real adapters.

use std::sync::Arc;

use tokio::task::JoinSet;
use vesemir_core::{Control, Prepared};

use crate::cli::DeployArgs;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::output::{self, OutputFormat};
use crate::{compose, request};

async fn prepare(args: &DeployArgs, config: &Config) -> Result<(Prepared, vesemir_core::Ports), Failure> {
    let request = request::load(&args.file, &args.sets, args.concurrency.as_deref(), &config.playbooks)?;
    let ports = compose::ports(config, &request)?;
    let prepared = vesemir_core::prepare(Arc::new(request), &ports, &compose::driver_config(config))
        .await
        .map_err(|e| {
            let message = format!("nothing was changed: {e}");
            if e.is_unreachable() {
                Failure::unreachable(message)
            } else {
                Failure::input(message)
            }
        })?;
    for warning in &prepared.warnings {
        eprintln!("vesemir: warning: {warning}");
    }
    Ok((prepared, ports))
}

/// Runs a deployment to its end.
pub async fn deploy(args: &DeployArgs, config: &Config) -> Result<Exit, Failure> {
    let (prepared, ports) = prepare(args, config).await?;
    let reporter = output::sink(args.output);
    let control = Control::new();
    let interrupts = tokio::spawn(handle_interrupts(control.clone()));
    let report =
        vesemir_core::run(&prepared, &ports, &*reporter, &control, &compose::driver_config(config)).await;
    interrupts.abort();
    reporter.finish(&report);
    Ok(if report.succeeded() { Exit::Success } else { Exit::DeploymentFailed })
}

async fn handle_interrupts(control: Control) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    control.cancel();
    eprintln!("\nvesemir: cancelling: hosts in flight finish and go back into rotation, no new host starts. Press Ctrl-C again to stop at once.");
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("\nvesemir: stopping at once: hosts in flight may be left out of rotation (listed below).");
        control.abort();
    }
}

/// Shows what a deployment would do and checks every host can be reached over SSH.
pub async fn plan(args: &DeployArgs, config: &Config) -> Result<Exit, Failure> {
    let (prepared, ports) = prepare(args, config).await?;
    let results = check_ssh(&prepared, &ports).await;
    let unreachable = results.iter().filter(|r| !matches!(r, Some(Ok(())))).count();
    if args.output == OutputFormat::Json {
        println!("{}", plan_json(&prepared, &results));
    } else {
        print_plan(&prepared, &results);
        if unreachable > 0 {
            println!("\n{unreachable} host(s) cannot be reached over SSH: fix them before deploying.");
        } else {
            println!("\nEvery host is reachable. Nothing was changed.");
        }
    }
    Ok(if unreachable == 0 { Exit::Success } else { Exit::Unreachable })
}

/// Each host's SSH check, in plan order (`None`: the check did not finish), 16 at a time.
type SshChecks = Vec<Option<Result<(), String>>>;

async fn check_ssh(prepared: &Prepared, ports: &vesemir_core::Ports) -> SshChecks {
    let hosts = &prepared.plan.hosts;
    let mut checks = JoinSet::new();
    let mut results = vec![None; hosts.len()];
    let mut next = 0;
    loop {
        while checks.len() < 16 && next < hosts.len() {
            let (executor, host, index) = (ports.executor.clone(), hosts[next].host.clone(), next);
            checks.spawn(async move {
                let result = executor.connect(&host).await;
                executor.close(&host).await;
                (index, result.map_err(|e| e.chain()))
            });
            next += 1;
        }
        let Some(done) = checks.join_next().await else { break };
        if let Ok((index, result)) = done {
            results[index] = Some(result);
        }
    }
    results
}

fn plan_json(prepared: &Prepared, results: &SshChecks) -> serde_json::Value {
    let (request, plan) = (&prepared.request, &prepared.plan);
    let hosts: Vec<_> = plan
        .hosts
        .iter()
        .zip(results)
        .map(|(h, r)| {
            serde_json::json!({
                "name": h.host.name, "address": h.host.address, "server": h.server,
                "ssh": match r { Some(Ok(())) => "ok".to_owned(), Some(Err(e)) => e.clone(), None => "not checked".to_owned() },
                "in_rotation": h.was_in_rotation(), "skip": h.skip, "states": h.original,
            })
        })
        .collect();
    let batches: Vec<Vec<&str>> = plan
        .batches
        .iter()
        .map(|b| plan.hosts[b.clone()].iter().map(|h| h.host.name.as_str()).collect())
        .collect();
    serde_json::json!({
        "application": request.application, "environment": request.environment, "version": request.version,
        "backend": prepared.backend.name, "load_balancers": prepared.backend.instances.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "concurrency": plan.concurrency, "max_failures": plan.max_failures, "hosts": hosts, "batches": batches,
        "budget": {
            "concurrency": prepared.budget.concurrency,
            "already_out": prepared.budget.already_out.iter().map(|s| serde_json::json!({ "server": s.name, "states": s.instances })).collect::<Vec<_>>(),
            "effective": prepared.budget.effective(),
        },
        "warnings": prepared.warnings,
    })
}

fn print_plan(prepared: &Prepared, results: &SshChecks) {
    let (request, plan) = (&prepared.request, &prepared.plan);
    println!(
        "Plan: {} {} to {} ({} hosts, {} batches, at most {} out of rotation, stop after {} failed)",
        request.application,
        request.version,
        request.environment,
        plan.hosts.len(),
        plan.batches.len(),
        plan.concurrency,
        plan.max_failures + 1
    );
    let instances: Vec<String> = prepared.backend.instances.iter().map(|i| i.to_string()).collect();
    println!("Backend {} on {}", prepared.backend.name, instances.join(", "));
    println!("Budget: {}", prepared.budget);
    for out in &prepared.budget.already_out {
        println!("  out of rotation: {}: {}", out.name, out.describe());
    }
    let width = plan.hosts.iter().map(|h| h.host.name.as_str().len()).max().unwrap_or(4).max(4);
    for (number, batch) in plan.batches.iter().enumerate() {
        let label = if number == 0 && plan.canary { " (canary)" } else { "" };
        println!("\nbatch {}{label}", number + 1);
        for index in batch.clone() {
            let h = &plan.hosts[index];
            let ssh = match &results[index] {
                Some(Ok(())) => "ssh ok".to_owned(),
                Some(Err(e)) => format!("SSH FAILED: {e}"),
                None => "not checked".to_owned(),
            };
            println!(
                "  {:width$}  {:15}  server {:20}  {ssh}",
                h.host.name.as_str(),
                h.host.address,
                h.server.as_str()
            );
            print_states(h);
        }
    }
    let skipped: Vec<_> = plan.hosts.iter().filter(|h| h.skip).collect();
    if !skipped.is_empty() {
        println!("\nskipped (not in rotation, left as found)");
        for h in skipped {
            println!(
                "  {:width$}  {:15}  server {}",
                h.host.name.as_str(),
                h.host.address,
                h.server.as_str()
            );
            print_states(h);
        }
    }
}

/// A planned host's server, box by box, as it was found.
fn print_states(h: &vesemir_core::plan::PlannedHost) {
    let note = if h.was_in_rotation() { "" } else { "  (NOT IN ROTATION: returned to this state)" };
    for (i, state) in h.original.iter().enumerate() {
        println!("      {state}{}", if i == 0 { note } else { "" });
    }
}

/// Submits the deployment to a server and follows it to its end.
pub async fn deploy_remote(args: &DeployArgs, server: &str) -> Result<Exit, Failure> {
    let spec =
        request::spec(&args.file, &args.sets, args.concurrency.as_deref(), request::Requester::Server)?;
    let client = crate::client::Client::new(server)?;
    let accepted = client.submit(&spec, args.idempotency_key.as_deref()).await?;
    let id = accepted.id;
    eprintln!(
        "vesemir: deployment {id} accepted for {} (following {})",
        accepted.requested_by, accepted.links.events
    );
    let reporter = output::sink(args.output);
    let server = server.to_owned();
    let interrupts = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("\nvesemir: asking the server to cancel deployment {id}: hosts in flight finish. Press Ctrl-C again to stop following.");
        if let Ok(client) = crate::client::Client::new(&server) {
            let _ = client.cancel(id).await;
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nvesemir: stopped following; the server goes on. See `vesemir status {id}`.");
            std::process::exit(Exit::DeploymentFailed as i32);
        }
    });
    let followed = client.events(id, &*reporter, true).await;
    interrupts.abort();
    followed?;
    let deployment = client.wait_until_ended(id).await?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::json!({ "deployment": deployment }));
    } else {
        println!("\n{}", crate::client::describe(&deployment).trim_end());
    }
    Ok(crate::client::exit_for(deployment.status))
}
