//! fly-fallback: the native runtime. It reads settings from the environment, accepts HTTP
//! connections, and drives the core's state machine for each request. No gateway decision lives
//! here.

mod body;
mod cache;
mod clock;
mod cost_report;
mod driver;
mod limiter;
mod log_sink;
mod probes;
mod server;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Gateway, Settings};

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_GRACE_SECS: u64 = 25;
const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn fail(setting: &str, message: &str) -> ! {
    let message = gateway_core::error::mask_credentials(message);
    eprintln!("fly-fallback: invalid configuration: {setting}: {message}");
    std::process::exit(2);
}

fn parse_env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match env(name) {
        None => default,
        Some(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| fail(name, &format!("'{v}' is not a valid number"))),
    }
}

fn parse_bool(name: &str, default: bool) -> bool {
    match env(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => default,
        Some(v) if v.is_empty() => default,
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => fail(name, &format!("'{v}' is not true or false")),
        },
    }
}

fn main() {
    // `fly-fallback cost-report ...`: a report from the logs, not the server.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "cost-report")
    {
        std::process::exit(cost_report::run(std::env::args_os().skip(2)));
    }
    let settings = match Settings::from_lookup(env) {
        Ok(s) => s,
        Err(e) => fail(&e.setting, &e.message),
    };
    if let Some(url) = env(cache::REDIS_URL).filter(|u| !u.trim().is_empty()) {
        if let Err(e) = cache::check_redis_url(&url) {
            fail(cache::REDIS_URL, &e);
        }
    }
    let port: u16 = parse_env("PORT", DEFAULT_PORT);
    let grace = Duration::from_secs(parse_env("SHUTDOWN_GRACE_SECS", DEFAULT_GRACE_SECS));
    let host = env("BIND_ADDR").unwrap_or_else(|| "0.0.0.0".into());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fly-fallback: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let gateway = Arc::new(Gateway::new(settings, "fly-fallback"));
    let log_queue: usize = parse_env("LOG_QUEUE_LINES", log_sink::DEFAULT_QUEUE);
    if log_queue == 0 {
        fail("LOG_QUEUE_LINES", "must be at least 1");
    }
    log_sink::start(log_queue, parse_bool("LOG_LOSSLESS", false));
    let header_read_timeout = Duration::from_secs(parse_env(
        "HEADER_READ_TIMEOUT_SECS",
        DEFAULT_HEADER_READ_TIMEOUT_SECS,
    ));
    if header_read_timeout.is_zero() {
        fail("HEADER_READ_TIMEOUT_SECS", "must be at least 1");
    }
    let max_connections: usize = parse_env("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        fail("MAX_CONNECTIONS", "must be at least 1");
    }
    let limits = server::Limits {
        header_read_timeout,
        max_connections,
        grace,
    };
    let result = runtime.block_on(server::serve(gateway, &host, port, limits));
    log_sink::flush(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("fly-fallback: {e}");
        std::process::exit(1);
    }
}
