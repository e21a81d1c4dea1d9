//! Pause, resume and confirm given to any instance sharing the database: the order is applied
//! here when this instance runs the deployment, and recorded in the store
//! ([`Store::order`](crate::store::Store::order)) for whichever instance runs it, which applies
//! it at its next lease renewal ([`crate::lease`]). A pause or resume is recorded as the wanted
//! state, so the last one given wins wherever it was given; a confirmation is taken once. With
//! one server per database (SQLite) the order goes to this runner only, as before.

use tracing::info;

use super::{ResumeRefused, Runner};
use crate::store::{Order, OrderTaken, Orders, StoreError};

impl Runner {
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
            }
        }
        drop(set);
        self.count_paused();
    }
}
