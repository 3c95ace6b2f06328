//! Telemetry: log output through `tracing`, filtered by `RUST_LOG` (default
//! `info`), and, for the desktop app, a [`LogBuffer`] of recent lines that the UI
//! shows and follows live.

pub mod counters;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How many recent lines a [`LogBuffer`] keeps.
pub const RECENT_LINES: usize = 200;

/// Installs the process-wide log subscriber, writing to standard error (in
/// colour only on a terminal). Safe to call more than once (later calls do nothing).
pub fn init() {
    let _ = tracing_subscriber::registry().with(stderr_layer()).try_init();
}

/// Like [`init`], and also keeps recent lines in the returned buffer.
pub fn init_with_buffer() -> Arc<LogBuffer> {
    let buffer = Arc::new(LogBuffer::new());
    let _ = tracing_subscriber::registry()
        .with(stderr_layer())
        .with(BufferLayer(buffer.clone()).with_filter(default_filter()))
        .try_init();
    buffer
}

fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

fn stderr_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(default_filter())
}

/// One log line as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// RFC 3339 time.
    pub time: String,
    /// `INFO`, `WARN`, ...
    pub level: String,
    /// The module that logged.
    pub target: String,
    /// The message, followed by its fields as `key=value`.
    pub message: String,
}

/// The most recent log lines, and a channel announcing each new one.
#[derive(Debug)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
    sender: broadcast::Sender<LogLine>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::new()
    }
}

impl LogBuffer {
    /// An empty buffer.
    pub fn new() -> LogBuffer {
        LogBuffer { lines: Mutex::new(VecDeque::with_capacity(RECENT_LINES)), sender: broadcast::channel(256).0 }
    }

    /// The kept lines, oldest first.
    pub fn recent(&self) -> Vec<LogLine> {
        self.lines.lock().expect("log lock").iter().cloned().collect()
    }

    /// New lines as they are logged.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.sender.subscribe()
    }

    /// Adds a line, dropping the oldest beyond [`RECENT_LINES`].
    pub fn push(&self, line: LogLine) {
        {
            let mut lines = self.lines.lock().expect("log lock");
            if lines.len() == RECENT_LINES {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        let _ = self.sender.send(line); // no receiver is fine
    }
}

struct BufferLayer(Arc<LogBuffer>);

impl<S: Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        self.0.push(LogLine {
            time: mongodb::bson::DateTime::now().try_to_rfc3339_string().unwrap_or_default(),
            level: metadata.level().to_string(),
            target: metadata.target().to_string(),
            message: visitor.message + &visitor.fields,
        });
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_the_latest_lines_and_announces_each() {
        let buffer = Arc::new(LogBuffer::new());
        let mut receiver = buffer.subscribe();
        let subscriber = tracing_subscriber::registry().with(BufferLayer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..RECENT_LINES + 5 {
                tracing::info!(batch = i, queue = "events_queue", "Processing batch...");
            }
        });
        let recent = buffer.recent();
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent[0].message, "Processing batch... batch=5 queue=events_queue");
        assert_eq!(recent.last().unwrap().level, "INFO");
        assert_eq!(receiver.try_recv().unwrap().message, "Processing batch... batch=0 queue=events_queue");
    }
}
