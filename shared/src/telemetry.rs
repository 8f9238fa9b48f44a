//! JSON `tracing` logs: one line per event, carrying the request span's fields (request id,
//! function, route, tenant). Bodies, tokens and secrets are never recorded.
use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once; later calls (tests) are no-ops.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
