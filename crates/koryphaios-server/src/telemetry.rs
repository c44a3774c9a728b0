//! Structured logs: text or JSON lines, filtered by `KORYPHAIOS_LOG_LEVEL`. Request ids come from
//! the request span, so every line a request writes carries it.
//!
//! Lines are handed to a writer thread that writes stderr, so a slow reader of stderr (a pipe, a
//! terminal, a log shipper) never holds up a request. The hand-off is lossless: when the queue is
//! full, the logging call waits instead of dropping the line, so access log lines stay complete
//! and in order. [`LogGuard`] flushes the queue when `main` returns.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Lines queued for the writer thread before a logging call waits for it.
const QUEUED_LINES: usize = 64 * 1024;

/// Keeps the log writer thread; dropping it writes every queued line, then stops the thread.
#[derive(Debug)]
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[expect(dead_code, reason = "held for its Drop")] WorkerGuard);

/// Installs the global subscriber. Call once, from `main`, and keep the guard until it returns;
/// logs go to stderr.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::builder().parse(level)?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("koryphaios-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))?;
    Ok(LogGuard(guard))
}
