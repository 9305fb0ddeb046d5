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
mod metrics;
mod probe;
mod probes;
mod server;
mod shared;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Gateway, Settings};

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_GRACE_SECS: u64 = 25;
const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_METRICS_PORT: u16 = 9091;
const MAX_WORKER_THREADS: usize = 1024;

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

const HASH_KEY_USAGE: &str = "\
Usage: fly-fallback hash-key < keyfile
       printf %s \"$KEY\" | fly-fallback hash-key

Reads a client key from standard input (its first line, without the line ending) and prints
its SHA-256 as 64 lowercase hex digits: the `key_sha256` of the key's entry in the `keys` of
GATEWAY_CONFIG. The key itself is never printed or stored.

Exit status: 0 printed, 2 no key, or a key with spaces or control characters (or bad arguments).
";

/// `fly-fallback hash-key`: returns the exit status.
fn hash_key(mut args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    use std::io::BufRead;
    const NAME: &str = "fly-fallback hash-key";
    match args.next() {
        None => {}
        Some(a) if a == "--help" || a == "-h" => {
            print!("{HASH_KEY_USAGE}");
            return 0;
        }
        Some(_) => {
            // Not echoed: it may be the key, given where it does not belong.
            eprintln!(
                "{NAME}: unexpected argument: the key is read from standard input, never from \
                 the command line\n(see {NAME} --help)"
            );
            return 2;
        }
    }
    let mut line = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_until(b'\n', &mut line) {
        eprintln!("{NAME}: cannot read standard input: {e}");
        return 2;
    }
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let refuse = |why: &str| {
        eprintln!("{NAME}: {why}\n(see {NAME} --help)");
        2
    };
    let Ok(key) = std::str::from_utf8(line) else {
        return refuse("the key is not UTF-8 text");
    };
    if key.is_empty() {
        return refuse("no key on standard input (its first line is empty)");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse(
            "the key contains spaces or control characters (was it quoted or pasted with them?)",
        );
    }
    println!("{}", gateway_core::auth::sha256_hex(key));
    0
}

fn main() {
    // `fly-fallback cost-report ...`: a report from the logs, not the server.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "cost-report")
    {
        std::process::exit(cost_report::run(std::env::args_os().skip(2)));
    }
    // `fly-fallback probe --url URL --model M`: a client measuring a gateway, not the server.
    if std::env::args_os().nth(1).is_some_and(|a| a == "probe") {
        std::process::exit(probe::run(std::env::args_os().skip(2)));
    }
    // `fly-fallback hash-key < keyfile`: a key's `key_sha256`, not the server.
    if std::env::args_os().nth(1).is_some_and(|a| a == "hash-key") {
        std::process::exit(hash_key(std::env::args_os().skip(2)));
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
    let idle_timeout =
        Duration::from_secs(parse_env("IDLE_TIMEOUT_SECS", DEFAULT_IDLE_TIMEOUT_SECS));
    if idle_timeout.is_zero() {
        fail("IDLE_TIMEOUT_SECS", "must be at least 1");
    }
    let max_connections: usize = parse_env("MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        fail("MAX_CONNECTIONS", "must be at least 1");
    }
    // `off` for no metrics listener at all.
    let metrics_port = match env("METRICS_PORT").map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "off" => None,
        _ => Some(parse_env("METRICS_PORT", DEFAULT_METRICS_PORT)),
    };
    if metrics_port.is_some() && metrics_port == Some(port) {
        fail(
            "METRICS_PORT",
            "must differ from PORT (metrics are never served on the API port)",
        );
    }
    let workers = match env("WORKER_THREADS").filter(|v| !v.trim().is_empty()) {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(_) => parse_env("WORKER_THREADS", 1),
    };
    if !(1..=MAX_WORKER_THREADS).contains(&workers) {
        fail(
            "WORKER_THREADS",
            &format!("must be from 1 to {MAX_WORKER_THREADS}"),
        );
    }
    let limits = server::Limits {
        header_read_timeout,
        idle_timeout,
        max_connections,
        grace,
        metrics_port,
        workers,
    };
    let result = server::run(gateway, &host, port, limits);
    log_sink::flush(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("fly-fallback: {e}");
        std::process::exit(1);
    }
}
