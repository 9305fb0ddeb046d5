//! `bench regions`: the region simulation (issue 9).
//!
//! Five mock upstreams stand for the design's five relay regions, each behind its own simulated
//! network latency; one `fly-fallback` routes across them; several simulated client locations
//! (the `fly-region` header) send chat completions at a fixed rate each. Three phases: steady,
//! one region cut (its packets dropped, so connects time out rather than being refused), and
//! the region brought back. The report tells, per client location and phase, which upstream
//! served what share, the latency the client saw, how many requests needed more than one
//! attempt, what `GET /v1/gateway/status` said, and a timeline chart.
//!
//! - [`net`]: the simulated network (one network namespace per region, or loopback), and the cut.
//! - [`load`]: the clients.
//! - [`analysis`]: figures from the raw records; [`report`] and [`chart`] render them.
//!
//! `bench/regions.sh` is the one command: it builds, runs this, and removes whatever is left.

pub mod analysis;
pub mod chart;
pub mod load;
pub mod net;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::targets::{self, Launch, Proc};

/// One of the design's relay regions (`shared/DESIGN-FACTS.md`).
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub name: &'static str,
    pub city: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub weight: u32,
    pub fallbacks: &'static [&'static str],
    /// The design's measured "relayed" round trip, low and high, in ms.
    pub rtt_ms: (u32, u32),
    /// The environment variable that holds this region's upstream key.
    pub key_env: &'static str,
}

impl Region {
    /// The simulated round trip: the middle of the design's range.
    pub fn rtt(&self) -> f64 {
        f64::from(self.rtt_ms.0 + self.rtt_ms.1) / 2.0
    }
}

pub const REGIONS: [Region; 5] = [
    Region {
        name: "ap-northeast",
        city: "Seoul",
        lat: 37.57,
        lon: 126.98,
        weight: 10,
        fallbacks: &["ap-southeast", "us-west"],
        rtt_ms: (45, 80),
        key_env: "KEY_SEOUL",
    },
    Region {
        name: "ap-southeast",
        city: "Singapore",
        lat: 1.35,
        lon: 103.82,
        weight: 8,
        fallbacks: &["ap-northeast", "us-west"],
        rtt_ms: (55, 90),
        key_env: "KEY_SINGAPORE",
    },
    Region {
        name: "us-west",
        city: "San Francisco",
        lat: 37.77,
        lon: -122.42,
        weight: 5,
        fallbacks: &["us-east", "eu-central"],
        rtt_ms: (55, 90),
        key_env: "KEY_SAN_FRANCISCO",
    },
    Region {
        name: "us-east",
        city: "Ashburn, Virginia",
        lat: 39.04,
        lon: -77.49,
        weight: 6,
        fallbacks: &["us-west", "eu-central"],
        rtt_ms: (40, 70),
        key_env: "KEY_VIRGINIA",
    },
    Region {
        name: "eu-central",
        city: "Frankfurt",
        lat: 50.11,
        lon: 8.68,
        weight: 7,
        fallbacks: &["us-east", "ap-southeast"],
        rtt_ms: (50, 85),
        key_env: "KEY_FRANKFURT",
    },
];

/// Fly.io region codes a simulated client may stand in, with the coordinates the gateway's
/// table gives them (core/src/routing/geo.rs).
pub const CLIENT_LOCATIONS: &[(&str, &str, f64, f64)] = &[
    ("nrt", "Tokyo", 35.68, 139.69),
    ("hkg", "Hong Kong", 22.32, 114.17),
    ("sin", "Singapore", 1.35, 103.82),
    ("syd", "Sydney", -33.87, 151.21),
    ("bom", "Mumbai", 19.08, 72.88),
    ("sjc", "San Jose", 37.34, -121.89),
    ("sea", "Seattle", 47.61, -122.33),
    ("iad", "Ashburn", 39.04, -77.49),
    ("ord", "Chicago", 41.88, -87.63),
    ("fra", "Frankfurt", 50.11, 8.68),
    ("lhr", "London", 51.51, -0.13),
    ("gru", "São Paulo", -23.55, -46.63),
    ("jnb", "Johannesburg", -26.20, 28.05),
];

/// The great-circle distance in km (haversine), as the gateway computes it.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().min(1.0).asin()
}

/// The region nearest to a point, and its distance.
pub fn nearest(point: (f64, f64)) -> (&'static str, f64) {
    REGIONS
        .iter()
        .map(|r| (r.name, distance_km(point, (r.lat, r.lon))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(("?", 0.0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Network namespaces when this machine allows them (root, iproute2), else loopback.
    Auto,
    /// One network namespace per region (fails when not allowed).
    Netns,
    /// Every mock on 127.0.0.1; the cut is the mock's `hang` fault.
    Loopback,
}

#[derive(Args, Clone)]
pub struct RegionsArgs {
    /// The repository root (default: the one this binary was built from).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Where mock-upstream and fly-fallback are (default: next to this binary; built if missing).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` for mock-upstream and fly-fallback first.
    #[arg(long)]
    no_build: bool,
    /// Where results are written (default: bench/results/regions).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How regions are separated: namespaces (packets really dropped by the cut) or loopback.
    #[arg(long, value_enum, default_value_t = NetMode::Auto)]
    net: NetMode,
    /// Simulated client locations (Fly region codes), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nrt,hkg,sin,syd,sjc,iad,fra,gru"
    )]
    clients: Vec<String>,
    /// Requests per second from each client location.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of each phase (steady, cut, restored).
    #[arg(long, default_value_t = 20.0)]
    phase_secs: f64,
    /// Seconds of load before the steady phase, not reported (connections, latency averages).
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// The region cut in the second phase.
    #[arg(long, default_value = "ap-northeast")]
    cut: String,
    /// 6-second phases: to try it out, not for figures.
    #[arg(long)]
    quick: bool,
    /// Only re-render results.md, the snippet and the chart from results.json.
    #[arg(long)]
    report: bool,
}

/// The gateway's `routing` for the simulation: the example.
pub fn routing_config() -> serde_json::Value {
    json!({
        "max_attempts": 3,
        "deadline_ms": 30000,
        "connect_timeout_ms": 1000,
        "first_byte_timeout_ms": 5000,
        "eject_default_secs": 3,
        "eject_max_secs": 60,
        "breaker": {"failures": 5, "cooldown_secs": 5},
        "health": {"interval_secs": 2, "unhealthy_after": 2, "healthy_after": 1}
    })
}

pub const CLIENT_KEY: &str = "sk-region-sim-client";
const MOCK_PORT_IN_NS: u16 = 8000;

fn mock_key(r: &Region) -> String {
    format!("sk-region-sim-{}", r.name)
}

pub fn gateway_config(addrs: &[SocketAddr]) -> serde_json::Value {
    let upstreams: Vec<_> = REGIONS
        .iter()
        .zip(addrs)
        .map(|(r, a)| {
            json!({
                "name": r.name,
                "base_url": format!("http://{a}/v1"),
                "api_key_secret": r.key_env,
                "region": r.name,
                "location": {"lat": r.lat, "lon": r.lon},
                "weight": r.weight,
                "fallbacks": r.fallbacks,
            })
        })
        .collect();
    json!({"upstreams": upstreams, "routing": routing_config()})
}

/// The phases, in order: name and length in seconds.
pub const PHASES: [&str; 3] = ["steady", "cut", "restored"];

pub fn run(a: RegionsArgs) -> Result<(), String> {
    let common = crate::Common {
        repo: a.repo.clone(),
        bin_dir: a.bin_dir.clone(),
        peers: None,
        out: a.out.clone(),
        targets: vec![],
        no_build: a.no_build,
        client_threads: 1,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| crate::repo_root(&common).join("bench/results/regions"));
    if a.report {
        let text = std::fs::read_to_string(out.join("results.json"))
            .map_err(|e| format!("{}: {e}", out.join("results.json").display()))?;
        let res: analysis::RegionsResult =
            serde_json::from_str(&text).map_err(|e| format!("results.json: {e}"))?;
        render(&res, &out)?;
        println!("bench regions: re-rendered {}", out.display());
        return Ok(());
    }
    let cut = REGIONS
        .iter()
        .position(|r| r.name == a.cut)
        .ok_or_else(|| format!("--cut {}: not one of the five regions", a.cut))?;
    let mut clients = Vec::new();
    for code in &a.clients {
        let (c, city, lat, lon) = CLIENT_LOCATIONS
            .iter()
            .find(|(c, ..)| c.eq_ignore_ascii_case(code))
            .ok_or_else(|| format!("client location '{code}' is not in CLIENT_LOCATIONS"))?;
        clients.push(load::ClientLoc {
            code: c.to_string(),
            city: city.to_string(),
            point: (*lat, *lon),
        });
    }
    if a.rate <= 0.0 || a.phase_secs <= 0.0 {
        return Err("--rate and --phase-secs must be positive".into());
    }
    let phase_secs = if a.quick { 6.0 } else { a.phase_secs };
    let paths = crate::paths(&common, "regions")?;
    std::fs::create_dir_all(&paths.work).map_err(|e| format!("{}: {e}", paths.work.display()))?;
    crate::sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let plan = Plan {
        clients,
        cut,
        rate: a.rate,
        phase_secs,
        warmup_secs: a.warmup_secs.max(0.0),
        mode: a.net,
        command: std::env::var("REGIONS_COMMAND").unwrap_or_else(|_| {
            std::env::args()
                .map(|s| s.rsplit('/').next().unwrap_or(&s).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }),
    };
    let result = rt.block_on(async {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                targets::kill_all_started();
                net::remove_leftovers();
                eprintln!("\nbench regions: interrupted; stopped everything it started");
                std::process::exit(130);
            }
        });
        simulate(&paths, &plan).await
    });
    let result = match result {
        Ok(r) => {
            let _ = std::fs::remove_dir_all(&paths.work);
            r
        }
        Err(e) => return Err(format!("{e} (logs kept in {})", paths.work.display())),
    };
    let json = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    crate::report::write(&out, "results.json", &json)?;
    render(&result, &out)?;
    println!("{}", report::snippet(&result));
    println!("bench regions: wrote {}", out.display());
    Ok(())
}

fn render(res: &analysis::RegionsResult, out: &Path) -> Result<(), String> {
    let mut res = res.clone();
    match crate::charts::init_font() {
        Ok(_) => {
            if let Err(e) = chart::timeline(&res, &out.join("timeline.png")) {
                res.notes.push(format!("chart not drawn: {e}"));
            }
        }
        Err(e) => res.notes.push(format!("chart not drawn: {e}")),
    }
    crate::report::write(out, "results.md", &report::results_md(&res))?;
    crate::report::write(out, "README-snippet.md", &report::snippet(&res))?;
    Ok(())
}

pub struct Plan {
    pub clients: Vec<load::ClientLoc>,
    pub cut: usize,
    pub rate: f64,
    pub phase_secs: f64,
    pub warmup_secs: f64,
    pub mode: NetMode,
    pub command: String,
}

/// Starts the network, the mocks and the gateway, runs the phases, and returns the analysed
/// results; everything started is stopped (and the namespaces removed) on return.
async fn simulate(paths: &targets::Paths, plan: &Plan) -> Result<analysis::RegionsResult, String> {
    let wall_start = SystemTime::now();
    let delays: Vec<f64> = REGIONS.iter().map(Region::rtt).collect();
    let network = net::Network::setup(plan.mode, &delays)?;
    eprintln!("bench regions: network: {}", network.describe());

    // The mocks, one per region.
    let mut mocks: Vec<Proc> = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        let addr = network.mock_addr(i, MOCK_PORT_IN_NS);
        let mut args = vec![
            "--host".to_string(),
            addr.ip().to_string(),
            "--port".into(),
            addr.port().to_string(),
            "--api-key".into(),
            mock_key(r),
            "--name".into(),
            r.name.into(),
        ];
        if let Some(ms) = network.mock_delay_ms(i) {
            args.push("--delay-ms".into());
            args.push(ms.to_string());
        }
        let (program, args) = network.wrap(i, paths.bin_dir.join("mock-upstream"), args);
        let log = paths.work.join(format!("mock-{}.log", r.name));
        let mut p = Proc::start(&Launch {
            program,
            args,
            env: vec![],
            cwd: None,
            stdout_log: Some(log.clone()),
            stderr_log: log,
        })
        .map_err(|e| format!("mock {}: {e}", r.name))?;
        wait_listening(addr, &mut p, Duration::from_secs(10))
            .map_err(|e| format!("mock {} ({addr}): {e}", r.name))?;
        mocks.push(p);
        addrs.push(addr);
    }

    // The gateway, on loopback, in the root namespace.
    let port = targets::free_port();
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = gateway_config(&addrs);
    let mut env = vec![
        ("GATEWAY_CONFIG".to_string(), config.to_string()),
        ("GATEWAY_API_KEYS".to_string(), CLIENT_KEY.to_string()),
        ("PORT".to_string(), port.to_string()),
        ("BIND_ADDR".to_string(), "127.0.0.1".to_string()),
        ("METRICS_PORT".to_string(), "off".to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ];
    for r in &REGIONS {
        env.push((r.key_env.to_string(), mock_key(r)));
    }
    let gw_log = paths.work.join("gateway.log");
    // `env -u`: the simulation's gateway must not see a single-upstream setting of the shell.
    let mut args: Vec<String> = [
        "-u",
        "UPSTREAM_BASE_URL",
        "-u",
        "UPSTREAM_API_KEY",
        "-u",
        "FLY_REGION",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(paths.bin_dir.join("fly-fallback").display().to_string());
    let mut gateway = Proc::start(&Launch {
        program: PathBuf::from("env"),
        args,
        env,
        cwd: None,
        stdout_log: Some(gw_log.clone()),
        stderr_log: paths.work.join("gateway.err"),
    })
    .map_err(|e| format!("fly-fallback: {e}"))?;
    wait_listening(gw_addr, &mut gateway, Duration::from_secs(10)).map_err(|e| {
        let err = std::fs::read_to_string(paths.work.join("gateway.err")).unwrap_or_default();
        format!("fly-fallback: {e}: {}", err.trim())
    })?;

    let client = load::http_client();
    let gw = Arc::new(load::Gateway {
        addr: gw_addr,
        client: client.clone(),
    });
    // Every location must get an answer before anything is measured.
    for c in &plan.clients {
        let rec = load::one(&gw, c, 0, Instant::now(), 0.0).await;
        if rec.status != 200 {
            return Err(format!(
                "check: a request from {} got {} ({})",
                c.code,
                rec.status,
                rec.error.unwrap_or_default()
            ));
        }
    }
    let t_cut = plan.phase_secs;
    let t_restore = 2.0 * plan.phase_secs;
    let t_end = 3.0 * plan.phase_secs;
    eprintln!(
        "bench regions: {} client locations at {} req/s each; phases of {} s (warm-up {} s); cutting {} at t={t_cut} s",
        plan.clients.len(),
        plan.rate,
        plan.phase_secs,
        plan.warmup_secs,
        REGIONS[plan.cut].name
    );

    // t = 0 is the start of the steady phase; the warm-up runs before it.
    let lead = Duration::from_secs_f64(plan.warmup_secs + 0.2);
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    let t0 = now + lead;
    let t0_unix = unix_secs(wall_now + lead);
    let run = load::start(
        gw.clone(),
        &plan.clients,
        plan.rate,
        t0,
        -plan.warmup_secs,
        t_end,
    );
    let poller = load::poll_status(gw.clone(), t0, -plan.warmup_secs, t_end, 0.5);

    let cpu_start = crate::sys::cpu_snapshot();
    let mut events = vec![];
    let mut snapshots = vec![];
    let at = |t: f64| t0 + Duration::from_secs_f64(t);
    tokio::time::sleep_until(at(t_cut).into()).await;
    snapshots.push(analysis::PhaseStatus {
        phase: PHASES[0].into(),
        at_s: rel(t0),
        status: load::status(&gw).await,
    });
    let applied = network.cut(plan.cut, &gw.client).await?;
    events.push(analysis::Event {
        at_s: rel(t0),
        what: format!("{} cut: {applied}", REGIONS[plan.cut].name),
    });
    eprintln!(
        "bench regions: t={:.1} s: {} cut",
        rel(t0),
        REGIONS[plan.cut].name
    );
    tokio::time::sleep_until(at(t_restore).into()).await;
    snapshots.push(analysis::PhaseStatus {
        phase: PHASES[1].into(),
        at_s: rel(t0),
        status: load::status(&gw).await,
    });
    let restored = network.restore(plan.cut, &gw.client).await?;
    events.push(analysis::Event {
        at_s: rel(t0),
        what: format!("{} brought back: {restored}", REGIONS[plan.cut].name),
    });
    eprintln!(
        "bench regions: t={:.1} s: {} brought back",
        rel(t0),
        REGIONS[plan.cut].name
    );
    tokio::time::sleep_until(at(t_end).into()).await;
    snapshots.push(analysis::PhaseStatus {
        phase: PHASES[2].into(),
        at_s: rel(t0),
        status: load::status(&gw).await,
    });
    let foreign_cores = crate::sys::foreign_cores(&cpu_start, &crate::sys::cpu_snapshot());
    eprintln!("bench regions: t={t_end:.0} s: load stopped; waiting for the last answers");
    let records = run.finish().await;
    let status_timeline = poller.await.unwrap_or_default();

    // The gateway's own account of the probes (its log lines).
    let log = std::fs::read_to_string(&gw_log).unwrap_or_default();
    events.extend(analysis::probe_events(&log, t0_unix));
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let net_info = network.info();

    drop(gateway);
    drop(mocks);
    drop(network);

    Ok(analysis::analyse(analysis::Input {
        plan,
        net: net_info,
        records,
        status_timeline,
        snapshots,
        events,
        wall_start,
        foreign_cores,
    }))
}

/// Seconds since `t0` (negative before it).
fn rel(t0: Instant) -> f64 {
    let now = Instant::now();
    if now >= t0 {
        (now - t0).as_secs_f64()
    } else {
        -(t0 - now).as_secs_f64()
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn wait_listening(addr: SocketAddr, p: &mut Proc, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = p.exited() {
            return Err(format!("exited before listening ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("not listening after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
