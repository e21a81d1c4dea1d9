//! `vesemir unlock` and `vesemir locks`: the host locks of a deployment file's hosts, read or
//! broken on the hosts themselves (the same lock directory every deployer uses).

use tokio::task::JoinSet;
use vesemir_core::ports::Executor;
use vesemir_core::request::Targets;
use vesemir_core::{Host, PortError};

use crate::cli::HostsArgs;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use crate::{compose, request};

/// Breaks the locks of `names` (hosts of the deployment file), printing who held each.
pub async fn unlock(args: &HostsArgs, names: &[String], config: &Config) -> Result<Exit, Failure> {
    let (hosts, executor) = hosts(args, config).await?;
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        match hosts.iter().find(|h| h.name.as_str() == name) {
            Some(host) => chosen.push(host.clone()),
            None => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Failure::input(format!(
            "{} {} not among the hosts of {} ({}): nothing was unlocked",
            unknown.join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
            args.file.display(),
            known.join(", ")
        )));
    }
    let results = each(chosen, executor, |executor, host| async move {
        let result = executor.break_lock(&host).await;
        executor.close(&host).await;
        result
    })
    .await;
    let mut failed = false;
    for (host, result) in results {
        match result {
            Ok(Some(held)) => println!("{}: unlocked; it was held by {held}", host.name),
            Ok(None) => println!("{}: was not locked", host.name),
            Err(e) => {
                failed = true;
                println!("{}: NOT unlocked: {}", host.name, e.chain());
            }
        }
    }
    Ok(if failed { Exit::Unreachable } else { Exit::Success })
}

/// Prints who holds the lock of each host of the deployment file.
pub async fn list(args: &HostsArgs, config: &Config) -> Result<Exit, Failure> {
    let (hosts, executor) = hosts(args, config).await?;
    let results = each(hosts, executor, |executor, host| async move {
        let result = executor.read_lock(&host).await;
        executor.close(&host).await;
        result
    })
    .await;
    let width = results.iter().map(|(h, _)| h.name.as_str().len()).max().unwrap_or(4);
    let mut failed = false;
    for (host, result) in &results {
        let name = host.name.as_str();
        match result {
            Ok(Some(held)) => println!("{name:width$}  locked by {held}"),
            Ok(None) => println!("{name:width$}  free"),
            Err(e) => {
                failed = true;
                println!("{name:width$}  UNKNOWN: {}", e.chain());
            }
        }
    }
    Ok(if failed { Exit::Unreachable } else { Exit::Success })
}

/// The hosts of the deployment file (listed, or found by the inventory) and the executor that
/// keeps their locks.
async fn hosts(
    args: &HostsArgs,
    config: &Config,
) -> Result<(Vec<Host>, std::sync::Arc<dyn Executor>), Failure> {
    let request = request::load(&args.file, &args.sets, None, &config.playbooks)?;
    let ports = compose::ports(config, &request)?;
    let hosts = match &request.targets {
        Targets::Hosts(hosts) => hosts.clone(),
        Targets::Search(selector) => {
            let bound = compose::driver_config(config).call_timeout;
            match tokio::time::timeout(bound, ports.inventory.discover(selector)).await {
                Ok(Ok(hosts)) => hosts,
                Ok(Err(e)) => {
                    return Err(Failure::unreachable(format!(
                        "finding the hosts ({selector}): {}",
                        e.chain()
                    )))
                }
                Err(_) => {
                    return Err(Failure::unreachable(format!("finding the hosts ({selector}) timed out")))
                }
            }
        }
    };
    Ok((hosts, ports.executor))
}

/// `call` on every host, 16 at a time, each within a minute; results in host order.
async fn each<F, Fut, T>(
    hosts: Vec<Host>,
    executor: std::sync::Arc<dyn Executor>,
    call: F,
) -> Vec<(Host, Result<T, PortError>)>
where
    F: Fn(std::sync::Arc<dyn Executor>, Host) -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>> + Send + 'static,
    T: Send + 'static,
{
    let bound = std::time::Duration::from_secs(60);
    let mut results: Vec<Option<Result<T, PortError>>> = hosts.iter().map(|_| None).collect();
    let mut pending = JoinSet::new();
    let mut next = hosts.iter().cloned().enumerate();
    loop {
        while pending.len() < 16 {
            let Some((index, host)) = next.next() else { break };
            let what = format!("lock call on {}", host.name);
            let call = call(executor.clone(), host);
            pending.spawn(async move {
                let result = match tokio::time::timeout(bound, call).await {
                    Ok(result) => result,
                    Err(_) => Err(PortError::timeout(what, bound)),
                };
                (index, result)
            });
        }
        let Some(done) = pending.join_next().await else { break };
        if let Ok((index, result)) = done {
            results[index] = Some(result);
        }
    }
    hosts
        .into_iter()
        .zip(results)
        .map(|(host, result)| {
            let result = result.unwrap_or_else(|| {
                Err(PortError::Adapter { adapter: "ssh", source: "the lock call panicked".into() })
            });
            (host, result)
        })
        .collect()
}
