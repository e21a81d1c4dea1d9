//! Structured logs through tracing: text for people, one JSON object per line (with the current
//! span and its parents) for a central log platform. Every deployment has a `deployment` span
//! and every host a `host` span inside it (see [`crate::runner`]).
//!
//! What is logged: `RUST_LOG` when it is set (any `tracing_subscriber` filter, e.g.
//! `vesemir_http=debug,sqlx=warn`), else the configured `log.level` (default `info`).

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogConfig;

/// The filter: `RUST_LOG` if set and valid, else `config.level` for everything.
fn filter(config: &LogConfig) -> EnvFilter {
    let level = match config.level.as_deref().unwrap_or("info") {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    EnvFilter::builder().with_default_directive(level.into()).from_env_lossy()
}

/// A subscriber writing to `writer` as `config` says.
pub fn subscriber<W>(config: &LogConfig, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter(config)).with_target(true).with_writer(writer);
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
