//! `host_key_mode = off` warns: once when the executor is made, and again on every connection.
//! (Its own test binary: it installs a process-wide log collector.)

mod common;

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use vesemir_core::ports::Executor;
use vesemir_ssh::{HostKeyMode, SshExecutor};

use common::Lab;

/// Keeps the message of every warning.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = String::new();
        event.record(&mut Message(&mut text));
        self.0.lock().expect("lock").push(text);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_warns_when_made_and_on_every_connection() {
    let warnings = Warnings::default();
    tracing::subscriber::set_global_default(warnings.clone()).expect("the only subscriber here");
    let lab = Lab::start();
    let mut config = lab.config();
    config.host_key_mode = HostKeyMode::Off;
    let executor = SshExecutor::new(config);
    let host = lab.host();
    for _ in 0..2 {
        executor.connect(&host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
        executor.close(&host).await;
    }
    let seen = warnings.0.lock().expect("lock").clone();
    assert_eq!(seen.iter().filter(|w| w.contains("host key checking is OFF")).count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|w| w.contains("host key NOT verified")).count(), 2, "{seen:?}");
    // Strict mode says nothing of the kind.
    warnings.0.lock().expect("lock").clear();
    let strict = lab.executor();
    strict.connect(&host).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    let seen = warnings.0.lock().expect("lock").clone();
    assert!(seen.is_empty(), "{seen:?}");
}
