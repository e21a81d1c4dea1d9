//! What both engines share: how typed values become column text and back, and how the hosts
//! that may be out of rotation are found in a deployment's events or journal.

use std::time::Duration;

use vesemir_core::journal::{replay, JournalEntry};
use vesemir_core::{Event, Progress};

use super::StoreError;

/// The message of a deployment interrupted because the server stopped (one server per database).
pub const STOPPED: &str =
    "the server stopped while this deployment was running: check the hosts listed in out_of_rotation";

/// The message of a deployment interrupted because `instance` stopped renewing its lease.
pub fn lease_expired(instance: &str) -> String {
    format!(
        "the server instance running it ({instance}) stopped renewing its lease (it died or lost \
         the database): check the hosts listed in out_of_rotation"
    )
}

/// A unit enum's serde name (`in_rotation`, `succeeded`), the text its column holds.
pub fn to_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        Ok(other) => Err(StoreError::new("encoding a column", format!("{other} is not a name"))),
        Err(e) => Err(StoreError::new("encoding a column", e)),
    }
}

/// The unit enum named `text` by serde, as [`to_text`] wrote it.
pub fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    use serde::de::IntoDeserializer;
    T::deserialize(text.into_deserializer())
        .map_err(|e: serde::de::value::Error| StoreError::new("reading a column", e))
}

/// A duration as whole milliseconds (saturating).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Stored milliseconds as a duration (negative ones as zero).
pub fn from_millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Hosts that may be out of rotation after the deployment's `events`, by name: the core's fold
/// says which ([`Progress::out_of_rotation`]).
pub fn hosts_out_of_rotation(events: &[Event]) -> Vec<String> {
    let mut names: Vec<String> =
        Progress::from_events(events).out_of_rotation().map(|h| h.name.to_string()).collect();
    names.sort();
    names
}

/// Hosts a journal leaves unfinished (interrupted mid-change, or ended out of rotation), by name,
/// sorted; `None` when the journal has no header (no journal).
pub fn hosts_left_by_journal(entries: &[JournalEntry]) -> Option<Vec<String>> {
    let unfinished = replay(entries.iter().cloned());
    unfinished.header.as_ref()?;
    let mut names: Vec<String> = unfinished.servers.iter().map(|s| s.host.to_string()).collect();
    names.sort();
    Some(names)
}

/// Which deployments a lease renewal lost: those `held` (id, epoch) that the database did not
/// renew at the same epoch (`renewed`: id, epoch, cancel requested).
pub fn lost_leases(held: &[(i64, i64)], renewed: &[(i64, i64, bool)]) -> Vec<i64> {
    let renewed: std::collections::HashSet<(i64, i64)> = renewed.iter().map(|(id, e, _)| (*id, *e)).collect();
    let mut lost: Vec<i64> = held.iter().filter(|held| !renewed.contains(held)).map(|(id, _)| *id).collect();
    lost.sort_unstable();
    lost
}

/// A list of host names as stored (JSON), or NULL.
pub fn encode_hosts(hosts: Option<&[String]>) -> Result<Option<String>, StoreError> {
    hosts.map(|h| serde_json::to_string(h).map_err(|e| StoreError::new("encoding hosts", e))).transpose()
}

/// A stored list of host names.
pub fn decode_hosts(text: Option<&str>) -> Result<Option<Vec<String>>, StoreError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| StoreError::new("decoding hosts", e))).transpose()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vesemir_core::event::{EventKind, Phase};

    use super::*;

    fn at(seq: u64, kind: EventKind) -> Event {
        Event { seq, elapsed: Duration::from_millis(seq), kind }
    }

    fn phase(seq: u64, host: &str, phase: Phase) -> Event {
        at(seq, EventKind::HostPhase { host: vesemir_core::name::HostName::new(host).expect("valid"), phase })
    }

    fn finished(seq: u64, host: &str, rotation: vesemir_core::event::Rotation) -> Event {
        at(
            seq,
            EventKind::HostFinished {
                host: vesemir_core::name::HostName::new(host).expect("valid"),
                outcome: vesemir_core::event::HostOutcome::Failed,
                phase: Phase::Done,
                error: None,
                rotation,
                out_of_rotation_ms: None,
            },
        )
    }

    #[test]
    fn hosts_out_of_rotation_are_drained_unfinished_ones_and_finished_ones_not_in_rotation() {
        use vesemir_core::event::Rotation;
        let events = vec![
            phase(1, "connected-only", Phase::Connecting),
            phase(2, "drained", Phase::Connecting),
            phase(3, "drained", Phase::Draining),
            phase(4, "in-step", Phase::Step { number: 1, name: "install".into() }),
            phase(5, "back", Phase::Draining),
            finished(6, "back", Rotation::InRotation),
            phase(7, "failed-out", Phase::Draining),
            finished(8, "failed-out", Rotation::OutOfRotation),
            phase(9, "unknown", Phase::Draining),
            finished(10, "unknown", Rotation::Unknown),
        ];
        assert_eq!(hosts_out_of_rotation(&events), vec!["drained", "failed-out", "in-step", "unknown"]);
    }

    #[test]
    fn a_lease_renewed_at_another_epoch_or_not_at_all_is_lost() {
        let held = [(1, 1), (2, 1), (3, 4)];
        let renewed = [(1, 1, false), (2, 2, false)];
        assert_eq!(lost_leases(&held, &renewed), vec![2, 3]);
    }
}
