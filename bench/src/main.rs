//! `bench`: measures ai-edge-gateway (fly-fallback, and the Worker on workerd when built)
//! against the mock upstream alone and against the gateways users would otherwise pick
//! (Portkey, LiteLLM), on one machine, in one run. See bench/README.md.
//!
//! - `bench run`   the whole comparison; writes bench/results/
//! - `bench smoke` a few seconds, direct and fly-fallback only; exit 0 when both answered right
//! - `bench soak`  a long fixed-rate run reporting memory growth
//! - `bench report` re-renders the tables and charts from results.json
//! - `bench regions` the region simulation (bench/regions.sh); writes bench/results/regions/

mod charts;
mod isolate;
mod load;
mod progress;
mod regions;
mod report;
mod scenarios;
mod sys;
mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::progress::Progress;
use crate::scenarios::{Knobs, Results, SoakResult};
use crate::targets::Paths;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmark ai-edge-gateway against the mock upstream, Portkey and LiteLLM"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario against every target; writes results.md, results.json, machine.md,
    /// README-snippet.md and charts.
    Run(RunArgs),
    /// A few seconds against direct and fly-fallback only; exit status 0 when both answered
    /// correctly and without errors.
    Smoke(Common),
    /// A long fixed-rate run against one target, reporting resident-memory growth.
    Soak(SoakArgs),
    /// Re-renders results.md, the snippet and the charts from results.json.
    Report(Common),
    /// The region simulation: five regions behind simulated latency, one cut and brought
    /// back, load from several client locations; writes bench/results/regions/.
    Regions(regions::RegionsArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The repository root (default: the one this binary was built from).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Where mock-upstream and fly-fallback are (default: target/release; built if missing).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where setup-peers.sh installed the peers (default: bench/.peers).
    #[arg(long)]
    peers: Option<PathBuf>,
    /// Where results are written (default: bench/results; smoke: bench/.work/smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Comma-separated target names (direct, fly-fallback, portkey, litellm, worker-workerd, worker-js-floor).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Do not run `cargo build` for mock-upstream and fly-fallback first.
    #[arg(long)]
    no_build: bool,
    /// Threads of the load generator's runtime (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Fixed rates to try, requests per second.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Seconds measured at each fixed rate.
    #[arg(long)]
    rate_seconds: Option<f64>,
    /// Streams held open for the memory scenario.
    #[arg(long)]
    hold_streams: Option<usize>,
    /// Shorter everything (for trying the bench out, not for figures).
    #[arg(long)]
    quick: bool,
    /// Longest wait, in seconds, for other processes to leave the machine alone before starting.
    #[arg(long)]
    quiet_wait: Option<f64>,
}

#[derive(Args, Clone)]
struct SoakArgs {
    #[command(flatten)]
    common: Common,
    /// Length of the soak, e.g. 600s or 10m.
    #[arg(long, default_value = "10m")]
    duration: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds per sample window.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = n.parse().map_err(|_| format!("bad duration '{s}'"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "ms" => n / 1000.0,
        _ => return Err(format!("bad duration unit in '{s}'")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn repo_root(c: &Common) -> PathBuf {
    c.repo.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Finds (or builds) the release binaries of the mock and fly-fallback.
fn paths(c: &Common, work_sub: &str) -> Result<Paths, String> {
    let repo = repo_root(c);
    let bin_dir = c.bin_dir.clone().unwrap_or_else(|| {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        match here {
            // Built by cargo: the mock and fly-fallback land in the same target directory.
            Some(d) if d.ends_with("release") => d,
            _ => repo.join("target/release"),
        }
    });
    // Unless told where the binaries are, make sure they are built from the current sources (a
    // no-op for cargo when they are): a stale fly-fallback must not be what gets measured.
    let need = ["mock-upstream", "fly-fallback"];
    let missing = need.iter().any(|b| !bin_dir.join(b).exists());
    if missing || (c.bin_dir.is_none() && !c.no_build) {
        eprintln!("bench: cargo build --release -p mock-upstream -p fly-fallback");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "mock-upstream",
                "-p",
                "fly-fallback",
            ])
            .current_dir(&repo)
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build of mock-upstream and fly-fallback failed".into());
        }
    }
    Ok(Paths {
        peers: c.peers.clone().unwrap_or_else(|| repo.join("bench/.peers")),
        // One directory per process: logs and generated configs of concurrent runs stay apart.
        work: repo
            .join("bench/.work")
            .join(format!("{work_sub}-{}", std::process::id())),
        bin_dir,
        repo,
    })
}

fn versions(live_versions: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = vec![];
    for (label, prog, args) in [
        ("rustc", "rustc", &["--version"][..]),
        ("node", "node", &["--version"][..]),
        ("python3", "python3", &["--version"][..]),
    ] {
        if let Some(o) = sys::command_output(prog, args) {
            v.push((label.to_string(), o));
        }
    }
    v.extend(live_versions.iter().cloned());
    v
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    rt.expect("tokio runtime")
}

fn install_interrupt_handler() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            targets::kill_all_started();
            eprintln!("\nbench: interrupted; stopped everything it started");
            std::process::exit(130);
        }
    });
}

/// Starts the targets, runs every scenario, returns the results (targets stopped on return).
async fn measure(c: &Common, knobs: Knobs, work_sub: &str) -> Result<Results, String> {
    let wall = Instant::now();
    let paths = paths(c, work_sub)?;
    let nofile = sys::raise_nofile();
    if (nofile as usize) < knobs.hold_streams * 3 + 100 {
        eprintln!(
            "bench: warning: open-file limit {nofile} may be too low for {} streams",
            knobs.hold_streams
        );
    }
    let progress = Progress::new(1);
    let mut notes = Vec::new();
    scenarios::set_wait_budget(knobs.quiet_wait_s as u64);
    if knobs.quiet_wait_s > 0.0 {
        progress.set("checking that the machine is quiet");
        let f = scenarios::wait_quiet(Duration::from_secs_f64(knobs.quiet_wait_s), &progress).await;
        if f >= 0.1 {
            notes.push(format!("Other processes were using {f:.2} cores when the run started (waited {:.0} s for quiet).", knobs.quiet_wait_s));
        }
    }
    let mut started = scenarios::start_all(&paths, &c.targets, &progress).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mock_idle_kib = sys::tree_rss_kib(started.mock.pid);
    for l in &started.live {
        if let Some(r) = started.results.iter_mut().find(|r| r.name == l.spec.name) {
            r.memory.idle_kib = sys::tree_rss_kib(l.pid);
        }
    }
    progress.set_length(2 + started.live.len() as u64 * scenarios::steps_per_target(&knobs));
    let seq = scenarios::sequential(&started.live, &knobs, &progress).await;
    progress.inc();
    for (l, s) in started.live.iter().zip(seq) {
        if let Some(r) = started.results.iter_mut().find(|r| r.name == l.spec.name) {
            r.sequential = Some(s);
        }
    }
    // Issue 14: a key with limits against the unlimited one, on this project's targets.
    for (i, lk) in scenarios::limited_key(&started.live, &knobs, &progress).await {
        let name = &started.live[i].spec.name;
        if let Some(r) = started.results.iter_mut().find(|r| &r.name == name) {
            r.limited_key = Some(lk);
        }
    }
    progress.inc();
    for l in &started.live {
        let Some(r) = started.results.iter_mut().find(|r| r.name == l.spec.name) else {
            continue;
        };
        let direct = started.live.iter().find(|d| d.spec.name == "direct");
        scenarios::per_target(l, direct, started.mock.pid, &knobs, r, &progress).await;
    }
    scenarios::relate_streams(&mut started.results);
    progress.finish();
    let steps: Vec<f64> = started
        .results
        .iter()
        .flat_map(|r| {
            r.rates
                .iter()
                .filter_map(|p| p.stats.as_ref())
                .chain(r.closed.iter().map(|c| &c.stats))
                .chain(r.search.iter().map(|(_, s)| s))
                .filter_map(|s| s.foreign_cores)
                .collect::<Vec<_>>()
        })
        .collect();
    if !steps.is_empty() {
        let mean = steps.iter().sum::<f64>() / steps.len() as f64;
        let max = steps.iter().cloned().fold(0.0, f64::max);
        let disturbed = steps.iter().filter(|f| **f >= 0.2).count();
        notes.push(format!(
            "Other processes on the machine used {mean:.2} cores on average (at most {max:.2}) during the {} load steps; {disturbed} step(s) kept a figure measured while they used 0.2 cores or more, after one repeat (`foreign_cores` in results.json).",
            steps.len()
        ));
    }
    for r in &started.results {
        if let Some(s) = &r.skipped {
            notes.push(format!("{} was skipped: {s}", r.name));
        }
        if let Some(f) = &r.failed {
            notes.push(format!("{} failed: {f}", r.name));
        }
    }
    notes.push(format!(
        "The load generator runs {} in this process; the mock (`tests/mock-upstream`, release build) and every target are separate processes on the same {} cores.",
        if c.client_threads <= 1 { "on one thread".to_string() } else { format!("on {} threads", c.client_threads) },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    let live_versions: Vec<(String, String)> = started
        .results
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let results = Results {
        knobs,
        machine: sys::machine(versions(&live_versions)),
        mock_idle_kib,
        targets: started.results,
        notes,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    for mut l in started.live {
        if let Some(p) = l.proc_.as_mut() {
            p.stop();
        }
    }
    drop(started.mock);
    // Keep the logs only when something failed (the notes point to them).
    if results.targets.iter().all(|r| r.failed.is_none()) {
        let _ = std::fs::remove_dir_all(&paths.work);
    }
    Ok(results)
}

fn write_all(results: &Results, out: &Path) -> Result<(), String> {
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    report::write(out, "results.json", &json)?;
    render(results, out)
}

fn render(results: &Results, out: &Path) -> Result<(), String> {
    let soak: Option<SoakResult> = std::fs::read_to_string(out.join("soak.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let mut results = results.clone();
    match charts::init_font() {
        Ok(_) => {
            let (_, failed) = charts::all(&results, out);
            for f in failed {
                results.notes.push(format!("chart not drawn: {f}"));
            }
        }
        Err(e) => results.notes.push(format!("charts not drawn: {e}")),
    }
    report::write(
        out,
        "results.md",
        &report::results_md(&results, soak.as_ref()),
    )?;
    report::write(out, "machine.md", &report::machine_md(&results))?;
    report::write(
        out,
        "README-snippet.md",
        &report::snippet(&results, soak.as_ref()),
    )?;
    Ok(())
}

fn out_dir(c: &Common, default: &str) -> PathBuf {
    c.out.clone().unwrap_or_else(|| repo_root(c).join(default))
}

fn cmd_run(a: RunArgs) -> Result<(), String> {
    let mut knobs = if a.quick {
        let mut k = Knobs::full();
        k.seq_batches = 5;
        k.seq_batch = 100;
        k.rate_s = 2.0;
        k.closed_s = 1.5;
        k.cpu_level_s = None;
        k.closed_levels = vec![1, 32];
        k.search_steps = 2;
        k.search_s = 1.5;
        k.streams = 10;
        k.hold_streams = 200;
        k
    } else {
        Knobs::full()
    };
    if !a.rates.is_empty() {
        knobs.rates = a.rates.clone();
    }
    if let Some(s) = a.rate_seconds {
        knobs.rate_s = s;
    }
    if let Some(q) = a.quiet_wait {
        knobs.quiet_wait_s = q;
    }
    if let Some(h) = a.hold_streams {
        knobs.hold_streams = h;
    }
    let out = out_dir(&a.common, "bench/results");
    let rt = runtime(a.common.client_threads);
    let results = rt.block_on(async {
        install_interrupt_handler();
        measure(&a.common, knobs, "run").await
    })?;
    write_all(&results, &out)?;
    println!("{}", report::snippet(&results, None));
    println!("bench: wrote {}", out.display());
    Ok(())
}

/// Exit 0 only when direct and fly-fallback both answered everything correctly.
fn cmd_smoke(mut c: Common) -> Result<(), String> {
    if c.targets.is_empty() {
        c.targets = vec!["direct".into(), "fly-fallback".into()];
    }
    let out = out_dir(&c, "bench/.work/smoke");
    let rt = runtime(c.client_threads);
    let results = rt.block_on(async {
        install_interrupt_handler();
        measure(&c, Knobs::smoke(), "smoke").await
    })?;
    write_all(&results, &out)?;
    let mut problems = Vec::new();
    for name in &c.targets {
        let Some(r) = results.targets.iter().find(|r| &r.name == name) else {
            problems.push(format!("{name}: not measured"));
            continue;
        };
        if let Some(s) = r.skipped.as_ref().or(r.failed.as_ref()) {
            problems.push(format!("{name}: {s}"));
            continue;
        }
        let seq_err = r.sequential.as_ref().map_or(1, |s| s.errors);
        let load_err: u64 = r
            .rates
            .iter()
            .filter_map(|p| p.stats.as_ref())
            .chain(r.closed.iter().map(|c| &c.stats))
            .map(|s| s.errors)
            .sum();
        let load_ok: u64 = r.closed.iter().map(|c| c.stats.ok).sum();
        let streams = r.streaming.as_ref().map_or(0, |s| s.complete);
        if seq_err > 0 || load_err > 0 || load_ok == 0 {
            problems.push(format!(
                "{name}: {seq_err} sequential errors, {load_err} load errors, {load_ok} answered"
            ));
        }
        if streams < results.knobs.streams {
            problems.push(format!(
                "{name}: {streams}/{} streams complete",
                results.knobs.streams
            ));
        }
        if r.memory.streams_open < results.knobs.hold_streams {
            problems.push(format!(
                "{name}: {}/{} streams held open",
                r.memory.streams_open, results.knobs.hold_streams
            ));
        }
        println!(
            "smoke: {name}: sequential p50 {}, {} req/s at {} connections, {} streams, {} held open, RSS {}",
            report::ms(r.sequential.as_ref().map_or(0.0, |s| s.p50_us)),
            report::num(r.closed.first().map_or(0.0, |c| c.stats.rps)),
            results.knobs.closed_levels.first().copied().unwrap_or(0),
            streams,
            r.memory.streams_open,
            r.memory.idle_kib.map(report::mib).unwrap_or_default()
        );
    }
    if problems.is_empty() {
        println!("smoke: ok ({})", out.display());
        Ok(())
    } else {
        Err(format!("smoke failed: {}", problems.join("; ")))
    }
}

fn cmd_soak(a: SoakArgs) -> Result<(), String> {
    let total = parse_duration(&a.duration)?;
    let mut c = a.common.clone();
    if c.targets.is_empty() {
        c.targets = vec!["fly-fallback".into()];
    }
    if c.targets.len() != 1 {
        return Err("soak measures one target at a time (--targets NAME)".into());
    }
    let out = out_dir(&c, "bench/results");
    let rt = runtime(c.client_threads);
    let result = rt.block_on(async {
        install_interrupt_handler();
        let paths = paths(&c, "soak")?;
        sys::raise_nofile();
        let window = Duration::from_secs_f64(a.window);
        let steps = (total.as_secs_f64() / a.window).round() as u64;
        let progress = Progress::new(steps.max(1));
        let started = scenarios::start_all(&paths, &c.targets, &progress).await?;
        let Some(l) = started.live.first() else {
            return Err(format!(
                "{} did not start: {:?}",
                c.targets[0],
                started
                    .results
                    .first()
                    .and_then(|r| r.failed.clone().or(r.skipped.clone()))
            ));
        };
        let r = scenarios::soak(l, a.rate, total, window, &Knobs::full(), &progress).await;
        progress.finish();
        drop(started);
        let _ = std::fs::remove_dir_all(&paths.work);
        Ok::<_, String>(r)
    })?;
    report::write(
        &out,
        "soak.json",
        &serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?,
    )?;
    report::write(&out, "soak.md", &report::soak_md(&result))?;
    if charts::init_font().is_ok() {
        if let Err(e) = charts::soak(&result, &out.join("soak.png")) {
            eprintln!("bench: soak chart not drawn: {e}");
        }
    }
    // Refresh the main report so that its goals table includes the soak.
    if let Ok(s) = std::fs::read_to_string(out.join("results.json")) {
        if let Ok(res) = serde_json::from_str::<Results>(&s) {
            render(&res, &out)?;
        }
    }
    println!("{}", report::soak_md(&result));
    Ok(())
}

fn cmd_report(c: Common) -> Result<(), String> {
    let out = out_dir(&c, "bench/results");
    let text = std::fs::read_to_string(out.join("results.json"))
        .map_err(|e| format!("{}: {e}", out.join("results.json").display()))?;
    let res: Results = serde_json::from_str(&text).map_err(|e| format!("results.json: {e}"))?;
    render(&res, &out)?;
    println!("bench: re-rendered {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Smoke(c) => cmd_smoke(c),
        Cmd::Soak(a) => cmd_soak(a),
        Cmd::Report(c) => cmd_report(c),
        Cmd::Regions(a) => regions::run(a),
    };
    targets::kill_all_started();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
