//! Per-host state folded from a deployment's events: the one place that knows what a stream of
//! [`Event`]s means for each host (its phase, how it ended, whether it takes traffic).
//!
//! Stores, the CLI's client and live views read events, not the rollout's memory, so they all
//! fold them here instead of re-deriving the rules. While a host is between `draining` and its
//! end it is counted as out of rotation (it may be, whatever the phase's weight says: a crash
//! there leaves it drained or in maintenance); its [`HostFinished`](EventKind::HostFinished)
//! event then says where it really ended.

use std::time::Duration;

use crate::event::{DeploymentOutcome, Event, EventKind, HostOutcome, Phase, Rotation, Totals};
use crate::name::HostName;

/// One host's state as far as the events seen so far tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProgress {
    /// The host, as named in the plan.
    pub name: HostName,
    /// The phase it is in, or the phase it ended in (where it failed, for a failure).
    pub phase: Phase,
    /// How it ended; `None` while it has not.
    pub outcome: Option<HostOutcome>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Whether it takes traffic: out of rotation from its first phase that touches the load
    /// balancer until its end says otherwise.
    pub rotation: Rotation,
    /// When its first phase began, from the deployment's start.
    pub started: Option<Duration>,
    /// When it ended, from the deployment's start.
    pub finished: Option<Duration>,
}

impl HostProgress {
    /// A host of the plan that has not started: pending and in rotation.
    pub fn pending(name: HostName) -> Self {
        Self {
            name,
            phase: Phase::Pending,
            outcome: None,
            error: None,
            rotation: Rotation::InRotation,
            started: None,
            finished: None,
        }
    }

    /// Whether the host has ended.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }
}

/// Whether a host in `phase` may be out of rotation: every phase from the drain on, until the
/// host's end says where it is.
pub fn phase_may_be_out_of_rotation(phase: &Phase) -> bool {
    !matches!(phase, Phase::Pending | Phase::Connecting)
}

/// A deployment's state folded from its events, host by host in the order the plan (or, without
/// one, the events) named them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    hosts: Vec<HostProgress>,
    outcome: Option<DeploymentOutcome>,
    totals: Option<Totals>,
    last_seq: u64,
    paused: bool,
}

impl Progress {
    /// Nothing seen yet, no host known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The plan's hosts, all pending, in plan order.
    pub fn with_hosts(names: impl IntoIterator<Item = HostName>) -> Self {
        Self { hosts: names.into_iter().map(HostProgress::pending).collect(), ..Self::default() }
    }

    /// Folds every event of `events` into a fresh state.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut progress = Self::new();
        progress.apply_all(events);
        progress
    }

    /// Folds each of `events`, in order.
    pub fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.apply(event);
        }
    }

    /// Folds one event. Events about hosts not known yet add them (in the order first seen).
    pub fn apply(&mut self, event: &Event) {
        self.last_seq = self.last_seq.max(event.seq);
        match &event.kind {
            EventKind::BatchStarted { hosts, .. } => {
                for name in hosts {
                    self.host_mut(name);
                }
            }
            EventKind::HostPhase { host, phase } => {
                let progress = self.host_mut(host);
                progress.started.get_or_insert(event.elapsed);
                if phase_may_be_out_of_rotation(phase) {
                    progress.rotation = Rotation::OutOfRotation;
                }
                progress.phase = phase.clone();
            }
            EventKind::HostFinished { host, outcome, phase, error, rotation, .. } => {
                let progress = self.host_mut(host);
                progress.outcome = Some(*outcome);
                progress.phase = phase.clone();
                progress.error.clone_from(error);
                progress.rotation = *rotation;
                progress.finished = Some(event.elapsed);
            }
            EventKind::HostRetry { host, .. } => {
                // Tried again: in flight once more, its earlier end no longer counts.
                let progress = self.host_mut(host);
                progress.outcome = None;
                progress.error = None;
                progress.finished = None;
                progress.phase = Phase::Pending;
            }
            EventKind::Paused { .. } => self.paused = true,
            EventKind::Resumed => self.paused = false,
            EventKind::DeploymentFinished { outcome, totals } => {
                self.outcome = Some(*outcome);
                self.totals = Some(*totals);
                self.paused = false;
            }
            _ => {}
        }
    }

    /// Every host, in plan order (or the order the events named them).
    pub fn hosts(&self) -> &[HostProgress] {
        &self.hosts
    }

    /// One host's state, if the plan or an event named it.
    pub fn host(&self, name: &HostName) -> Option<&HostProgress> {
        self.hosts.iter().find(|h| &h.name == name)
    }

    /// Hosts that are, or may be, out of rotation now: in flight past the drain, or ended out of
    /// rotation or with an unknown rotation.
    pub fn out_of_rotation(&self) -> impl Iterator<Item = &HostProgress> {
        self.hosts.iter().filter(|h| h.rotation != Rotation::InRotation)
    }

    /// How the deployment ended, once its last event was seen.
    pub fn outcome(&self) -> Option<DeploymentOutcome> {
        self.outcome
    }

    /// Host counts by outcome: the deployment's own once it ended, else counted so far.
    pub fn totals(&self) -> Totals {
        self.totals.unwrap_or_else(|| {
            let mut totals = Totals::default();
            for outcome in self.hosts.iter().filter_map(|h| h.outcome) {
                totals.count(outcome);
            }
            totals
        })
    }

    /// Whether the deployment is paused now: a [`Paused`](EventKind::Paused) event not followed
    /// by a [`Resumed`](EventKind::Resumed) one, and the deployment not finished.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The number of the last event folded (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn host_mut(&mut self, name: &HostName) -> &mut HostProgress {
        let index = match self.hosts.iter().position(|h| &h.name == name) {
            Some(index) => index,
            None => {
                self.hosts.push(HostProgress::pending(name.clone()));
                self.hosts.len() - 1
            }
        };
        &mut self.hosts[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Weight;

    fn name(n: &str) -> HostName {
        HostName::new(n).expect("valid host name")
    }

    fn event(seq: u64, kind: EventKind) -> Event {
        Event { seq, elapsed: Duration::from_secs(seq), kind }
    }

    #[test]
    fn a_host_is_out_from_its_drain_until_it_ends_in_rotation() {
        let mut progress = Progress::with_hosts([name("web-1"), name("web-2")]);
        progress.apply(&event(1, EventKind::HostPhase { host: name("web-1"), phase: Phase::Connecting }));
        assert_eq!(progress.out_of_rotation().count(), 0);
        progress.apply(&event(2, EventKind::HostPhase { host: name("web-1"), phase: Phase::Draining }));
        let out: Vec<_> = progress.out_of_rotation().map(|h| h.name.to_string()).collect();
        assert_eq!(out, ["web-1"]);
        progress.apply(&event(
            3,
            EventKind::HostPhase { host: name("web-1"), phase: Phase::Enabling { weight: Weight::FULL } },
        ));
        assert_eq!(progress.out_of_rotation().count(), 1, "in flight is counted out until its end");
        progress.apply(&event(
            4,
            EventKind::HostFinished {
                out_of_rotation_ms: None,
                host: name("web-1"),
                outcome: HostOutcome::Succeeded,
                phase: Phase::Done,
                error: None,
                rotation: Rotation::InRotation,
            },
        ));
        assert_eq!(progress.out_of_rotation().count(), 0);
        let web1 = progress.host(&name("web-1")).expect("web-1");
        assert_eq!(web1.started, Some(Duration::from_secs(1)));
        assert_eq!(web1.finished, Some(Duration::from_secs(4)));
        assert_eq!(progress.totals().succeeded, 1);
        assert_eq!(progress.last_seq(), 4);
    }

    #[test]
    fn a_failed_host_keeps_its_phase_error_and_rotation() {
        let mut progress = Progress::new();
        progress.apply(&event(1, EventKind::HostPhase { host: name("db-1"), phase: Phase::Draining }));
        progress.apply(&event(
            2,
            EventKind::HostFinished {
                out_of_rotation_ms: None,
                host: name("db-1"),
                outcome: HostOutcome::Failed,
                phase: Phase::Step { number: 1, name: "install".into() },
                error: Some("exit 3".into()),
                rotation: Rotation::OutOfRotation,
            },
        ));
        let host = &progress.hosts()[0];
        assert_eq!(host.outcome, Some(HostOutcome::Failed));
        assert_eq!(host.error.as_deref(), Some("exit 3"));
        assert_eq!(host.phase, Phase::Step { number: 1, name: "install".into() });
        assert_eq!(progress.out_of_rotation().count(), 1);
        assert_eq!(progress.totals().failed, 1);
    }

    #[test]
    fn paused_from_a_pause_until_its_resume_or_the_end() {
        let mut progress = Progress::new();
        assert!(!progress.is_paused());
        progress.apply(&event(1, EventKind::Paused { in_flight: 2 }));
        assert!(progress.is_paused());
        progress.apply(&event(2, EventKind::Resumed));
        assert!(!progress.is_paused());
        progress.apply(&event(3, EventKind::Paused { in_flight: 0 }));
        progress.apply(&event(
            4,
            EventKind::DeploymentFinished {
                outcome: DeploymentOutcome::Cancelled,
                totals: Totals::default(),
            },
        ));
        assert!(!progress.is_paused(), "a finished deployment is not paused");
    }

    #[test]
    fn hosts_keep_plan_order_and_unknown_hosts_are_added_in_order_seen() {
        let mut progress = Progress::with_hosts([name("b"), name("a")]);
        progress.apply(&event(1, EventKind::HostPhase { host: name("c"), phase: Phase::Connecting }));
        progress.apply(&event(2, EventKind::HostPhase { host: name("a"), phase: Phase::Connecting }));
        let order: Vec<_> = progress.hosts().iter().map(|h| h.name.to_string()).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }
}
