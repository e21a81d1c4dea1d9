//! The instance's side of deployment leases: a task renews the lease of every deployment this
//! instance runs every third of the lease time, stops (aborts) any whose lease was lost,
//! cancels those cancelled on another instance and applies the pauses, resumes and
//! confirmations given there; when renewals fail for a whole lease time it
//! stops them all, before another instance may end them. Every lease time it also takes over
//! the deployments no live instance holds (an instance that died, or lost the database), as the
//! server does at startup (`runner::takeover`); a store that takes none over (SQLite)
//! ends them `interrupted` ([`Runner::recover`]). Then it marks `interrupted` the VMs whose
//! instance died while creating or destroying them (`Store::interrupt_unfinished_vms`), so any
//! instance can take down what was built.
//!
//! The fence itself is the store's: every write about a deployment checks the lease in the same
//! transaction ([`crate::store`]), so an instance that lost a lease cannot journal (and so cannot
//! make) another load balancer change for it, even before this task notices.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, warn};

use crate::api::App;
#[cfg(doc)]
use crate::runner::Runner;

/// Renews this instance's leases and takes over (or ends) dead instances' deployments until
/// `app` is dropped. `lease` is the store's lease time.
pub async fn keep(app: Weak<App>, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut renewed = Instant::now();
    let mut swept = Instant::now();
    let mut stopped_all = false;
    loop {
        tokio::time::sleep(every).await;
        let Some(app) = app.upgrade() else { return };
        let runner = &app.runner;
        // Bounded: a database that does not answer must not hold this loop past the lease.
        let renewal = tokio::time::timeout(every, runner.store().renew_leases()).await;
        match renewal {
            Ok(Ok(renewal)) => {
                renewed = Instant::now();
                stopped_all = false;
                runner.apply_renewal(&renewal);
                // Pause, resume, confirm given to another instance.
                match tokio::time::timeout(every, runner.store().take_orders()).await {
                    Ok(Ok(orders)) => runner.apply_orders(&orders),
                    Ok(Err(e)) => warn!(error = %e, "reading orders given to other instances failed"),
                    Err(_) => warn!("reading orders given to other instances took longer than {every:?}"),
                }
            }
            failed => {
                match failed {
                    Ok(Err(e)) => warn!(error = %e, "renewing deployment leases failed"),
                    _ => warn!("renewing deployment leases took longer than {every:?}"),
                }
                // Stop before the lease can expire: one renewal period of margin.
                if !stopped_all && renewed.elapsed() + every >= lease {
                    error!("leases not renewed for a whole lease time: stopping every deployment of this instance");
                    runner.abort_all();
                    stopped_all = true;
                }
            }
        }
        if swept.elapsed() >= lease {
            swept = Instant::now();
            match tokio::time::timeout(lease, crate::runner::takeover::sweep(&app)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "looking for deployments of dead instances failed"),
                Err(_) => warn!("looking for deployments of dead instances took longer than {lease:?}"),
            }
            // VMs whose instance died while creating or destroying them: `interrupted`, so
            // that any instance destroys what was built (a restart of the dead one is not
            // waited for).
            match tokio::time::timeout(lease, crate::vms::Vms::interrupt_unfinished(&app.store)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "looking for VMs of dead instances failed"),
                Err(_) => warn!("looking for VMs of dead instances took longer than {lease:?}"),
            }
        }
    }
}
