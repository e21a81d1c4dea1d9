//! Structured logs through tracing: text for people, one JSON object per line (with the current
//! span and its parents) for a central log platform. Every deployment has a `deployment` span
//! and every host a `host` span inside it (see [`crate::runner`]).

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogConfig;

/// A subscriber writing to `writer` as `config` says.
pub fn subscriber<W>(config: &LogConfig, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let level = match config.level.as_deref().unwrap_or("info") {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(true).with_writer(writer);
    if config.json {
        Box::new(builder.json().with_current_span(true).with_span_list(true).finish())
    } else {
        Box::new(builder.with_ansi(false).finish())
    }
}

/// Installs the global subscriber, writing to stderr. Returns false if one was already
/// installed (an embedding program that set up its own).
pub fn init(config: &LogConfig) -> bool {
    tracing::subscriber::set_global_default(subscriber(config, std::io::stderr)).is_ok()
}
