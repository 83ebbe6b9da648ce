//! Log set-up. Logs go to standard error, so that standard output carries only results
//! (`notes add` prints just the key). `RUST_LOG` wins; otherwise the book's `DEBUG=notes:*`
//! turns on debug logs; otherwise info.

use tracing_subscriber::EnvFilter;

/// The filter from the environment: `RUST_LOG`, else `DEBUG=notes:*`, else `default`.
pub fn filter_from_env(default: &str) -> EnvFilter {
    if let Ok(spec) = std::env::var("RUST_LOG")
        && let Ok(filter) = EnvFilter::try_new(&spec)
    {
        return filter;
    }
    let debug = std::env::var("DEBUG").is_ok_and(|d| {
        d.split(',')
            .any(|part| part.trim() == "*" || part.trim().starts_with("notes"))
    });
    EnvFilter::new(if debug {
        "notesctl=debug,info"
    } else {
        default
    })
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter_from_env(default))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
