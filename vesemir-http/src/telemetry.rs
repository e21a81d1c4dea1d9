//! Structured logs through tracing: text for people, one JSON object per line for a central log
//! platform. Deployments and hosts each get a span (see [`crate::runner`]).

use tracing_subscriber::filter::LevelFilter;

use crate::config::LogConfig;

/// Installs the global subscriber. Returns false if one was already installed (tests, or an
/// embedding program that set up its own).
pub fn init(config: &LogConfig) -> bool {
    let level = match config.level.as_deref().unwrap_or("info") {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(true);
    if config.json {
        builder.json().with_current_span(true).with_span_list(true).try_init().is_ok()
    } else {
        builder.try_init().is_ok()
    }
}
