//! Pause, resume and confirm given to any instance sharing the database: the order is applied
//! here when this instance runs the deployment, and recorded in the store
//! ([`Store::order`](crate::store::Store::order)) for whichever instance runs it, which applies
//! it at its next lease renewal ([`crate::lease`]). A pause or resume is recorded as the wanted
//! state, so the last one given wins wherever it was given; a confirmation is taken once. With
//! one server per database (SQLite) the order goes to this runner only, as before.

use std::sync::atomic::Ordering;

use tracing::info;

use super::{LiveState, ResumeRefused, Runner};
use crate::store::{DeploymentRecord, Order, OrderTaken, Orders, StoreError};

impl Runner {
    /// What a view of `record` shows beyond the record: this instance's live state when it runs
    /// the deployment; else, while another instance holds it queued or running, the pause last
    /// ordered on any instance, so every instance shows it paused (a canary waiting is known
    /// only where it runs). `None` once it has ended.
    pub fn view_state(&self, record: &DeploymentRecord) -> Option<LiveState> {
        self.live_state(record.id).or_else(|| {
            let elsewhere = record.instance.as_deref().is_some_and(|i| i != self.store.instance().as_str());
            (elsewhere && !record.status.is_finished())
                .then_some(LiveState { paused: record.pause_requested, waiting_for_confirmation: false })
        })
    }

    /// Pauses deployment `id` wherever it runs. False if it is not queued or running.
    pub async fn pause_anywhere(&self, id: i64) -> Result<bool, StoreError> {
        let here = self.pause(id);
        let taken = self.store.order(id, Order::Pause).await?;
        Ok(here || taken == OrderTaken::Recorded)
    }

    /// Resumes deployment `id` wherever it runs: refused when no one paused it, or it ended.
    pub async fn resume_anywhere(&self, id: i64) -> Result<Result<(), ResumeRefused>, StoreError> {
        let here = self.resume(id);
        // Recorded even when applied here: a later renewal must not pause it again.
        let taken = self.store.order(id, Order::Resume).await?;
        Ok(match (here, taken) {
            (Ok(()), _) | (_, OrderTaken::Recorded) => Ok(()),
            (Err(ResumeRefused::NotActive), OrderTaken::NotPaused) => Err(ResumeRefused::NotPaused),
            (Err(refused), _) => Err(refused),
        })
    }

    /// Confirms deployment `id`'s canary wherever it runs. False if it is not queued or running.
    pub async fn confirm_anywhere(&self, id: i64) -> Result<bool, StoreError> {
        if self.confirm(id) {
            return Ok(true);
        }
        Ok(self.store.order(id, Order::Confirm).await? == OrderTaken::Recorded)
    }

    /// Applies the orders recorded for deployments this instance runs.
    pub(crate) fn apply_orders(&self, orders: &[Orders]) {
        let set = self.lock_active();
        for order in orders {
            let Some(active) = set.by_id.get(&order.id) else { continue };
            match order.paused {
                Some(true) if !active.control.is_paused() => {
                    info!(deployment = order.id, "paused on another instance: pausing");
                    active.control.pause();
                }
                Some(false) if active.control.is_paused() => {
                    info!(deployment = order.id, "resumed on another instance: resuming");
                    active.control.resume();
                }
                _ => {}
            }
            if order.confirm {
                info!(deployment = order.id, "confirmed on another instance: confirming");
                active.control.confirm();
                // A rollout taken over while its canary waited waits on this flag.
                active.waiting_for_confirmation.store(false, Ordering::SeqCst);
            }
        }
        drop(set);
        self.count_paused();
    }
}
