//! `fly-fallback probe`: the gateway's latency as a client sees it, by model, pinned region
//! and mode.
//!
//! ```text
//! GATEWAY_KEY=... fly-fallback probe --url URL --model M[,M...] [--region R[,R...]] [-n 5]
//!     [--mode plain|stream|both] [--prompt TEXT] [--max-tokens 16] [--timeout-secs 60]
//!     [--concurrency 1] [--key-file PATH] [--json] [--chart out.png]
//! ```
//!
//! For each model × region × mode it makes N chat completions through the gateway (a region
//! pins the first choice with `x-gateway-region`), with `cache-control: no-store` and
//! `temperature: 1` so that no answer comes from (or goes into) the gateway's cache, and prints
//! per row the successful calls' time to first token and total time (p50, p90, min, max: see
//! [`stats`] for the percentiles, [`measure`] for what is timed) and which upstream answered
//! (`x-gateway-upstream`, with its region from `GET /v1/gateway/status`). Failed calls are
//! counted per row and by kind, never averaged in. `--json` prints every figure and sample as
//! one JSON document on standard output (nothing else goes there); `--chart` draws the rows.
//!
//! Modules: [`args`] (command line, key), [`run`] (preflight, schedule, workers, progress),
//! [`measure`] (one timed call), [`stats`], [`report`] (rows, the JSON shape), [`table`],
//! [`chart`].

mod args;
mod chart;
mod measure;
mod report;
mod run;
mod stats;
mod table;

use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;

use args::{Options, Parsed, USAGE};
use report::{Report, Settings};
use run::{GatewayInfo, Run};

const NAME: &str = "fly-fallback probe";

/// The exit statuses (see `--help`).
const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_SOME_FAILED: i32 = 3;
const EXIT_INTERRUPTED: i32 = 130;

/// A failure: its exit status and message.
type Failure = (i32, String);

/// Runs the subcommand with the arguments after `probe`; returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    match try_run(args) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("{NAME}: {message}");
            if code == EXIT_USAGE {
                eprintln!("(see {NAME} --help)");
            }
            code
        }
    }
}

fn try_run(args: impl IntoIterator<Item = OsString>) -> Result<i32, Failure> {
    let opts = match args::parse(args).map_err(|m| (EXIT_USAGE, m))? {
        Parsed::Help => {
            out(USAGE);
            return Ok(EXIT_OK);
        }
        Parsed::Run(o) => *o,
    };
    let (key, _source) =
        args::client_key(opts.key_file.as_deref(), std::env::var_os(args::KEY_ENV))
            .map_err(|m| (EXIT_USAGE, m))?;
    let headers = run::common_headers(&key).map_err(|m| (EXIT_USAGE, m))?;
    let targets = run::targets(&opts);
    let pins = targets
        .iter()
        .map(|t| {
            t.region
                .as_deref()
                .map(|r| {
                    HeaderValue::from_str(r).map_err(|_| {
                        (
                            EXIT_USAGE,
                            format!("--region: '{r}' cannot be sent in an HTTP header"),
                        )
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;

    // One thread: the calls are IO, and one scheduler keeps timestamps free of hand-offs
    // between threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (EXIT_FAILED, format!("cannot start the async runtime: {e}")))?;
    let client = crate::driver::upstream_client(opts.timeout);
    let info = runtime
        .block_on(run::preflight(&client, &opts.url, &headers, opts.timeout))
        .map_err(|m| (EXIT_FAILED, m))?;
    for pin in run::unknown_pins(&info, &opts.regions) {
        eprintln!(
            "{NAME}: warning: --region {pin} names no upstream of the gateway; it ignores the \
             pin and routes as without one"
        );
    }

    let jobs = run::schedule(targets.len(), opts.calls);
    let planned = jobs.len() as u64;
    let progress = run::progress(planned);
    let shared = Arc::new(Run {
        client,
        endpoint: format!("{}/v1/chat/completions", opts.url),
        headers,
        results: Mutex::new(vec![Vec::new(); targets.len()]),
        targets,
        pins,
        prompt: opts.prompt.clone(),
        max_tokens: opts.max_tokens,
        timeout: opts.timeout,
        run_id: run_id(),
        jobs,
        next: AtomicUsize::new(0),
        progress: progress.clone(),
    });
    let interrupted = runtime.block_on(async {
        let ctrl_c = async {
            // Without a handler (it could not be installed) Ctrl-C stops the process as usual;
            // a failed installation must not read as an interruption.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = run::run_all(shared.clone(), opts.concurrency) => false,
            // Dropping the workers aborts the calls in flight; those done are reported.
            _ = ctrl_c => true,
        }
    });
    progress.finish_and_clear();
    drop(runtime);

    let report = build_report(&opts, info, &shared, planned, interrupted);
    if opts.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| (EXIT_FAILED, format!("cannot write the JSON report: {e}")))?;
        out(&format!("{json}\n"));
    } else {
        out(&table::render(&report));
    }
    if let Some(path) = &opts.chart {
        let (w, h) = chart::draw(&report, path).map_err(|m| (EXIT_FAILED, m))?;
        eprintln!("{NAME}: chart written to {} ({w}×{h})", path.display());
    }
    let status = exit_status(&report);
    if status == EXIT_FAILED {
        eprintln!("{NAME}: every call failed (see ERRORS)");
    }
    Ok(status)
}

fn build_report(
    opts: &Options,
    info: GatewayInfo,
    shared: &Run,
    planned: u64,
    interrupted: bool,
) -> Report {
    let samples = shared.samples();
    let rows = shared
        .targets
        .iter()
        .zip(&samples)
        .map(|(t, s)| report::row(t, s, &info))
        .collect();
    Report {
        gateway: info,
        settings: Settings::of(opts),
        calls: shared.done(),
        calls_planned: planned,
        interrupted,
        rows,
    }
}

/// 0 every call succeeded, 3 some failed, 1 none succeeded, 130 interrupted.
fn exit_status(report: &Report) -> i32 {
    let ok: u64 = report.rows.iter().map(|r| u64::from(r.ok)).sum();
    let failed: u64 = report.rows.iter().map(|r| u64::from(r.errors)).sum();
    if report.interrupted {
        EXIT_INTERRUPTED
    } else if ok == 0 {
        EXIT_FAILED
    } else if failed > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

/// A prefix for this run's `x-request-id`s: `probe-<unix ms>-<call number>` finds them in the
/// gateway's log.
fn run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    format!("probe-{ms}")
}

/// Writes to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn out(s: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes());
    let _ = stdout.flush();
}
