//! Structured logs: one JSON object per line (CloudWatch parses them as fields).

use tracing_subscriber::EnvFilter;

/// Installs JSON logging to stdout (Lambda) or stderr (CLI). `RUST_LOG` overrides `default`.
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init_json(default: &str, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter);
    let _ = if to_stderr {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.with_writer(std::io::stdout).try_init()
    };
}

/// Installs JSON logging appended to `path` (the local fleet keeps request logs out of the
/// terminal). `RUST_LOG` overrides `default`.
pub fn init_json_to_file(default: &str, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}
