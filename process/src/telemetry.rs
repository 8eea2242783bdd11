//! Logging setup: JSON lines in services, filter from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for services.
    Json,
    /// Human-readable, for tools run in a terminal.
    Pretty,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `default_filter`.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
