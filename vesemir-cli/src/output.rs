//! How a deployment shows: live bars on a terminal, timestamped lines in a log, or JSON lines for
//! machines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vesemir_core::event::{Event, EventKind, EventSink, HostOutcome};
use vesemir_core::name::HostName;
use vesemir_core::{render, DeploymentReport};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: live progress on a terminal, timestamped lines otherwise.
    Text,
    /// JSON lines: one per event, then the report.
    Json,
}

/// Writes one line to stdout, ignoring a closed pipe (`| head`).
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The sink for `format`, and whether it draws a live terminal.
pub fn sink(format: OutputFormat) -> Box<dyn Reporter> {
    match format {
        OutputFormat::Json => Box::new(JsonLines),
        OutputFormat::Text if std::io::stdout().is_terminal() => Box::new(Terminal::new()),
        OutputFormat::Text => Box::new(PlainLines),
    }
}

/// An event sink that also shows the final report.
pub trait Reporter: EventSink {
    /// Shows the report when the deployment is over.
    fn finish(&self, report: &DeploymentReport);
}

/// Timestamped lines, for logs and CI.
pub struct PlainLines;

impl EventSink for PlainLines {
    fn emit(&self, event: &Event) {
        if let Some(line) = render::line(event) {
            out(&line);
        }
    }
}

impl Reporter for PlainLines {
    fn finish(&self, report: &DeploymentReport) {
        out("");
        out(render::summary(report).trim_end());
    }
}

/// JSON lines: `{"event": ...}` per event, then `{"report": ...}`.
pub struct JsonLines;

impl EventSink for JsonLines {
    fn emit(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(&serde_json::json!({ "event": event })) {
            out(&line);
        }
    }
}

impl Reporter for JsonLines {
    fn finish(&self, report: &DeploymentReport) {
        if let Ok(line) = serde_json::to_string(&serde_json::json!({ "report": report })) {
            out(&line);
        }
    }
}

/// Live progress: an overall bar with ok/failed/remaining and one line per host in flight;
/// finished hosts and warnings scroll above.
pub struct Terminal {
    bars: MultiProgress,
    overall: ProgressBar,
    state: Mutex<TerminalState>,
}

#[derive(Default)]
struct TerminalState {
    hosts: HashMap<HostName, ProgressBar>,
    total: u64,
    ok: u64,
    failed: u64,
}

impl Terminal {
    fn new() -> Self {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = bars.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30.green/red}] {pos}/{len} hosts  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Self { bars, overall, state: Mutex::new(TerminalState::default()) }
    }

    fn print(&self, line: &str) {
        let _ = self.bars.println(line);
    }

    fn counts(&self, state: &TerminalState) {
        let remaining = state.total.saturating_sub(state.ok + state.failed);
        self.overall
            .set_message(format!("ok {}  failed {}  remaining {}", state.ok, state.failed, remaining));
    }
}

impl EventSink for Terminal {
    fn emit(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &event.kind {
            EventKind::DeploymentStarted { hosts, .. } => {
                state.total = *hosts as u64;
                self.overall.set_length(state.total);
                self.counts(&state);
                if let Some(line) = render::line(event) {
                    self.print(&line);
                }
            }
            EventKind::HostPhase { host, phase } => {
                let bar = state.hosts.entry(host.clone()).or_insert_with(|| {
                    let bar = self.bars.insert_before(&self.overall, ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix:.bold}: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(host.to_string());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(phase.to_string());
            }
            EventKind::HostOutput { .. } => {}
            EventKind::HostRetry { .. } => {
                // Its unreachable end was counted failed: it is in flight again.
                state.failed = state.failed.saturating_sub(1);
                self.overall.set_position(state.ok + state.failed);
                self.counts(&state);
                if let Some(line) = render::line(event) {
                    self.print(&line);
                }
            }
            EventKind::HostFinished { host, outcome, .. } => {
                if let Some(bar) = state.hosts.remove(host) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
                match outcome {
                    HostOutcome::Succeeded => state.ok += 1,
                    HostOutcome::Failed
                    | HostOutcome::Unreachable
                    | HostOutcome::Skipped
                    | HostOutcome::Cancelled => {
                        state.failed +=
                            u64::from(matches!(outcome, HostOutcome::Failed | HostOutcome::Unreachable));
                    }
                }
                self.overall.set_position(state.ok + state.failed);
                self.counts(&state);
                if let Some(line) = render::line(event) {
                    self.print(&line);
                }
            }
            _ => {
                if let Some(line) = render::line(event) {
                    self.print(&line);
                }
            }
        }
    }
}

impl Reporter for Terminal {
    fn finish(&self, report: &DeploymentReport) {
        self.overall.finish_and_clear();
        let _ = self.bars.clear();
        out("");
        out(render::summary(report).trim_end());
    }
}
