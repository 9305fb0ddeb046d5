//! Starting and stopping the processes under test: one mock upstream, and one gateway per target.
//!
//! Every child writes its output to a log file under `<target dir>/conformance-logs/`, and every
//! child is killed when [`Processes`] is dropped (after the trials, or while a panic unwinds).

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, HttpClient};

/// The upstream key the mock accepts and the gateway is configured with. It must never reach a
/// client; [`crate::client`] checks every response for it.
pub const UPSTREAM_KEY: &str = "mock-upstream-key";
/// The client keys the gateway accepts (`GATEWAY_API_KEYS`).
pub const CLIENT_KEY: &str = "test-client-key";
pub const SECOND_CLIENT_KEY: &str = "second-client-key";
pub const REGION: &str = "test-region";
pub const MOCK_NAME: &str = "mock-a";
/// The `stream_idle_timeout_ms` of [`GATEWAY_CONFIG`].
pub const STREAM_IDLE_TIMEOUT_MS: u64 = 1000;
/// The budget of the `keys-budget` key (USD a day): five worst-case requests of the burst case
/// (`cases/keys.rs`) and less than a sixth.
macro_rules! keys_budget_usd {
    () => {
        "0.00197"
    };
}
/// The budget of the `keys-cache` key (USD a day): one worst-case request of the cache case,
/// and less than that once its actual cost is spent.
macro_rules! keys_cache_budget_usd {
    () => {
        "0.000202"
    };
}
/// `GATEWAY_CONFIG` for every target: small limits so the limit cases run quickly; prices and
/// tiers for the cost cases (`cases/cost.rs`):
/// - `priced-chat` (input 2, cached input 1, output 8, reasoning 4 USD per million tokens) and
///   `priced-plain` (input 3, output 6); the cases use them with a provider prefix
///   (`<case>_<target>/priced-chat`), which the gateway prices as the bare name.
/// - The default tiers, written out because `tiers` replaces them whole, and per target a
///   [`fallback_tier`] whose first model always fails (503) and whose second answers. Its
///   first model is priced, high: an unpriced model is never excluded by a cost budget, and
///   `auto` looks through every tier's models when nothing else fits.
/// - `keys` for the keys and limits cases (`cases/keys.rs`): one configured key per case, their
///   client keys in [`keys`] (`GATEWAY_API_KEYS` keeps its two plain keys).
pub const GATEWAY_CONFIG: &str = concat!(
    r#"{"models":[{"id":"mock-model","owned_by":"mock"},{"id":"mock-embedding","owned_by":"mock"}],"#,
    r#""max_body_bytes":262144,"body_timeout_ms":2000,"upstream_timeout_ms":1500,"stream_idle_timeout_ms":1000,"#,
    r#""prices":{"priced-chat":{"input":2,"cached_input":1,"output":8,"reasoning":4},"#,
    r#""priced-plain":{"input":3,"output":6},"#,
    r#""mock-error-503@tier_fallback_fly":{"input":50,"output":50},"#,
    r#""mock-error-503@tier_fallback_worker":{"input":50,"output":50}},"#,
    r#""tiers":{"high-quality":["gpt-4.1","claude-sonnet-4-5"],"#,
    r#""balanced":["gemini-2.5-flash","claude-sonnet-4-5"],"#,
    r#""cost-effective":["deepseek-v3.2","gemini-2.5-flash"],"#,
    r#""ultra-cheap":["deepseek-v3.2"],"#,
    r#""fallback-fly":["mock-error-503@tier_fallback_fly","tier_fallback_fly/priced-chat"],"#,
    r#""fallback-worker":["mock-error-503@tier_fallback_worker","tier_fallback_worker/priced-chat"]},"#,
    // `keys` for `cases/keys.rs`: one key per case (see [`keys`]); `key_sha256` is
    // `printf %s KEY | sha256sum` of the key named in the comment.
    r#""keys":["#,
    // keys-disabled-client-key
    r#"{"id":"keys-disabled","key_sha256":"de81f09bd3fca2853c54fc5ea0b850abca5c2e4342d16c79f97be831eeb05af6","disabled":true},"#,
    // keys-models-client-key
    r#"{"id":"keys-models","key_sha256":"2f7c9241b7c127874601e400e87c424a7a9c04718ccfec82c7f976591f9ec010","#,
    r#""models":["mock-model@keys_models_fly","mock-model@keys_models_worker","tier:ultra-cheap","deepseek-v3.2","tier:balanced","claude-sonnet-4-5"]},"#,
    // keys-rpm-client-key
    r#"{"id":"keys-rpm","key_sha256":"0bb141b3a613d905d73390dfc1679bb29fd1a23311a3f8ce40b6729ecb7e94d4","rpm":3},"#,
    // keys-tpm-client-key
    r#"{"id":"keys-tpm","key_sha256":"8436460f09302080ed1102085e7bd160859ee587199e44b27e3038711f451c80","tpm":1000},"#,
    // keys-budget-client-key
    r#"{"id":"keys-budget","key_sha256":"0fa8c795d14898a41d6234d5090387c8bc06021489b321f02bf70da67dfa06ce","#,
    r#""budget_usd":{"amount":""#,
    keys_budget_usd!(),
    r#"","period":"day"}},"#,
    // keys-cache-client-key
    r#"{"id":"keys-cache","key_sha256":"c41b121f5ff6e5fdf22c257e183d05901430b3dfeadb57895ec4afad1b16f4d1","rpm":10,"#,
    r#""budget_usd":{"amount":""#,
    keys_cache_budget_usd!(),
    r#"","period":"day"}},"#,
    // keys-info-client-key
    r#"{"id":"keys-info","name":"Conformance info key","key_sha256":"9276ad8936804a8934a09cb5e06e5beef4df69429e42816ab54193f41a61a6af","#,
    r#""models":["keys_info_*"],"rpm":10,"tpm":100000,"budget_usd":{"amount":5,"period":"month"}},"#,
    // keys-stream-client-key
    r#"{"id":"keys-stream","key_sha256":"0c0ec5890a1bb6be4344b9b42f7fce155a7095680b0768469ff117d83b7bc47a","tpm":100000}"#,
    r#"]}"#
);
/// The client keys of the `keys` of [`GATEWAY_CONFIG`], one per case of `cases/keys.rs` (the
/// targets are separate gateways, so each target has its own counters for the same key).
pub mod keys {
    /// `disabled: true`.
    pub const DISABLED: &str = "keys-disabled-client-key";
    /// `models`: `mock-model@keys_models_<target>`, `tier:ultra-cheap` and its
    /// `deepseek-v3.2`, `tier:balanced` with only `claude-sonnet-4-5` of its models.
    pub const MODELS: &str = "keys-models-client-key";
    /// `rpm: 3`.
    pub const RPM: &str = "keys-rpm-client-key";
    pub const RPM_LIMIT: u64 = 3;
    /// `tpm: 1000`.
    pub const TPM: &str = "keys-tpm-client-key";
    pub const TPM_LIMIT: u64 = 1000;
    /// A daily budget of [`BUDGET_USD`].
    pub const BUDGET: &str = "keys-budget-client-key";
    pub const BUDGET_USD: &str = keys_budget_usd!();
    /// `rpm: 10` and a daily budget of [`CACHE_BUDGET_USD`].
    pub const CACHE: &str = "keys-cache-client-key";
    pub const CACHE_RPM: u64 = 10;
    pub const CACHE_BUDGET_USD: &str = keys_cache_budget_usd!();
    /// A name, `models: ["keys_info_*"]`, `rpm: 10`, `tpm: 100000`, a monthly budget of 5 USD.
    pub const INFO: &str = "keys-info-client-key";
    pub const INFO_NAME: &str = "Conformance info key";
    pub const INFO_RPM: u64 = 10;
    pub const INFO_TPM: u64 = 100_000;
    /// `tpm: 100000`.
    pub const STREAM: &str = "keys-stream-client-key";
    pub const STREAM_TPM: u64 = 100_000;
}
/// The tier of [`GATEWAY_CONFIG`] for `target`'s tier fallback case (without `tier:`).
pub fn fallback_tier(target: &str) -> String {
    format!("fallback-{target}")
}
/// The models of [`fallback_tier`]: (the failing first one, the answering second one).
pub fn fallback_tier_models(target: &str) -> (String, String) {
    (
        format!("mock-error-503@tier_fallback_{target}"),
        format!("tier_fallback_{target}/priced-chat"),
    )
}
pub const MAX_BODY_BYTES: usize = 262_144;

const MOCK_START_TIMEOUT: Duration = Duration::from_secs(30);
const FLY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The first `wrangler dev` compiles the Worker.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root (where the root `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The targets to test, from `CONFORMANCE_TARGETS` (comma-separated; default `fly`).
pub fn requested_targets() -> Result<Vec<String>, String> {
    let raw = std::env::var("CONFORMANCE_TARGETS").unwrap_or_else(|_| "fly".into());
    let mut out: Vec<String> = Vec::new();
    for t in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t != "fly" && t != "worker" {
            return Err(format!(
                "CONFORMANCE_TARGETS: unknown target '{t}' (known: fly, worker)"
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.is_empty() {
        return Err("CONFORMANCE_TARGETS lists no target (known: fly, worker)".into());
    }
    Ok(out)
}

/// The directory holding the workspace's binaries: next to the test executable
/// (`target/debug/deps/conformance-…` → `target/debug`), else `$CARGO_TARGET_DIR/debug`, else
/// `<repo>/target/debug`.
fn binary_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            dirs.push(dir.to_path_buf());
        }
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("debug"));
    }
    dirs.push(repo_root().join("target").join("debug"));
    dirs
}

pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    let dirs = binary_dirs();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "the '{name}' binary was not found (looked in {}); run `cargo build --workspace` before `cargo test --test conformance`",
                looked.join(", ")
            )
        })
}

pub fn log_dir() -> PathBuf {
    let base = binary_dirs()
        .into_iter()
        .next()
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = base.join("conformance-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A port that was free a moment ago, below the kernel's ephemeral range.
///
/// Port 0 would hand out an ephemeral port, and a target binds its port only after it has
/// started (the Worker: after `wrangler dev` has built it, tens of seconds later); meanwhile the
/// suite's own client connections take ephemeral ports as their local ports, and one of them
/// could take the target's ("Address already in use"). Ports below the range are never given
/// to outgoing connections; a counter keeps one run from handing out the same port twice.
pub fn free_port() -> Result<u16, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (20_000u32, ephemeral_low().clamp(20_500, 32_768));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + (seed + n) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            drop(l);
            return Ok(port as u16);
        }
    }
    Err(format!("no free port between {low} and {high}"))
}

/// The first port the kernel uses for outgoing connections.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

struct Managed {
    name: String,
    child: Arc<Mutex<Child>>,
    /// Spawned in its own process group, which is signalled as a whole.
    group: bool,
}

/// Every child process started for the run; all of them are killed on drop.
#[derive(Default)]
pub struct Processes {
    children: Vec<Managed>,
}

/// A started child, for health waiting and error messages.
#[derive(Clone)]
pub struct Started {
    pub name: String,
    pub child: Arc<Mutex<Child>>,
    pub log: PathBuf,
}

impl Processes {
    /// Spawns `cmd` with its output in `<log dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, group: bool) -> Result<Started, String> {
        let log = log_dir().join(format!("{name}.log"));
        let out =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        let child = Arc::new(Mutex::new(child));
        self.children.push(Managed {
            name: name.to_string(),
            child: child.clone(),
            group,
        });
        Ok(Started {
            name: name.to_string(),
            child,
            log,
        })
    }
}

/// If the test process dies without running its destructors (killed by a signal), its children
/// get SIGTERM from the kernel instead of living on.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn signal_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; a group that no longer exists gives ESRCH, which is fine.
        unsafe {
            libc::killpg(pid, signal);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for m in self.children.drain(..).rev() {
            let mut child = match m.child.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            let pid = child.id();
            if m.group {
                // wrangler: let it stop workerd and its other children, then make sure.
                signal_group(pid, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                signal_group(pid, libc::SIGKILL);
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
            eprintln!("conformance: stopped {} (pid {pid})", m.name);
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail.join("\n")
    }
}

/// Polls `GET <base>/health` until it answers 200, the process exits, or `timeout` passes.
pub async fn wait_healthy(
    http: &HttpClient,
    started: &Started,
    base: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let url = format!("{base}/health");
    let mut last;
    loop {
        let exited = started
            .child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            return Err(format!(
                "{} exited ({status}) before answering {url}; its log ({}):\n{}",
                started.name,
                started.log.display(),
                log_tail(&started.log)
            ));
        }
        match client::get_status(http, &url, Duration::from_secs(3)).await {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer 200 on {url} within {}s (last: {last}); its log ({}):\n{}",
                started.name,
                timeout.as_secs(),
                started.log.display(),
                log_tail(&started.log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running mock upstream.
#[derive(Clone)]
pub struct Mock {
    /// `http://127.0.0.1:PORT` (no path).
    pub base: String,
}

pub async fn start_mock(procs: &mut Processes, http: &HttpClient) -> Result<Mock, String> {
    let bin = find_binary("mock-upstream")?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string()])
        .args(["--api-key", UPSTREAM_KEY])
        .args(["--name", MOCK_NAME])
        .args(["--host", "127.0.0.1"]);
    let started = procs.spawn("mock-upstream", cmd, false)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(http, &started, &base, MOCK_START_TIMEOUT).await?;
    Ok(Mock { base })
}

/// The settings every target gets, as (name, value) pairs.
fn gateway_settings(mock: &Mock) -> Vec<(&'static str, String)> {
    vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", mock.base)),
        ("UPSTREAM_API_KEY", UPSTREAM_KEY.to_string()),
        (
            "GATEWAY_API_KEYS",
            format!("{CLIENT_KEY},{SECOND_CLIENT_KEY}"),
        ),
        ("GATEWAY_CONFIG", GATEWAY_CONFIG.to_string()),
        ("FLY_REGION", REGION.to_string()),
    ]
}

/// The command that runs the native runtime.
pub fn fly_command(bin: &Path, port: u16, settings: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(bin);
    for (k, v) in settings {
        cmd.env(k, v);
    }
    cmd.env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("SHUTDOWN_GRACE_SECS", "1");
    // Several gateways run at once: none takes the default metrics port unless asked to.
    if !settings.iter().any(|(k, _)| *k == "METRICS_PORT") {
        cmd.env("METRICS_PORT", "off");
    }
    cmd
}

/// The command that runs the Worker locally with `wrangler dev` (Node 22 from `node_modules`).
/// Spawned in its own process group so that wrangler, workerd and their helpers can be stopped
/// together.
pub fn worker_command(
    repo: &Path,
    port: u16,
    inspector_port: u16,
    settings: &[(&str, String)],
) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(repo.join("node_modules/.bin/wrangler"));
    cmd.current_dir(repo)
        .args(["dev", "--local", "--ip", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--inspector-port", &inspector_port.to_string()]);
    for (k, v) in settings {
        cmd.arg("--var").arg(format!("{k}:{v}"));
    }
    let node_bin = repo.join("node_modules/node/bin");
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut all = vec![node_bin];
            all.extend(std::env::split_paths(&p));
            std::env::join_paths(all).unwrap_or(p)
        }
        None => node_bin.into_os_string(),
    };
    cmd.env("PATH", path)
        .env("CI", "true")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false");
    cmd.process_group(0);
    cmd
}

/// A second Worker (its own port, config and local state) serving the bundle that `build/`
/// holds, for cases that need the Worker set up differently from the target. Each one gets its
/// own `--persist-to` directory: two `wrangler dev` sharing a state directory can fail to start
/// on SQLite's lock.
pub fn extra_worker_command(
    repo: &Path,
    name: &str,
    port: u16,
    inspector_port: u16,
    settings: &[(&str, String)],
) -> Command {
    let mut cmd = worker_command(repo, port, inspector_port, settings);
    cmd.arg("--config")
        .arg(repo.join("tests/conformance/wrangler-without-kv.toml"))
        .arg("--persist-to")
        .arg(log_dir().join(format!("{name}-state")));
    cmd
}

/// A target that answers `/health`.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub addr: SocketAddr,
}

/// Spawns a target's process (quick); [`wait_target`] then waits for it to be ready.
pub fn spawn_target(
    procs: &mut Processes,
    name: &str,
    mock: &Mock,
) -> Result<(Started, Target, Duration), String> {
    let settings = gateway_settings(mock);
    let port = free_port()?;
    let (cmd, group, timeout) = match name {
        "fly" => (
            fly_command(&find_binary("fly-fallback")?, port, &settings),
            false,
            FLY_START_TIMEOUT,
        ),
        "worker" => {
            let repo = repo_root();
            let wrangler = repo.join("node_modules/.bin/wrangler");
            if !wrangler.exists() {
                return Err(format!(
                    "{} is missing; run the setup script (scripts/test installs the npm packages; or `npm install` in {})",
                    wrangler.display(),
                    repo.display()
                ));
            }
            let inspector = free_port()?;
            // Fresh local state (KV) every run: an entry cached by an earlier run would turn
            // this run's first request into a hit.
            let state = log_dir().join("worker-state");
            let _ = std::fs::remove_dir_all(&state);
            let mut cmd = worker_command(&repo, port, inspector, &settings);
            cmd.arg("--persist-to").arg(state);
            (cmd, true, WORKER_START_TIMEOUT)
        }
        other => return Err(format!("unknown target '{other}'")),
    };
    let started = procs.spawn(name, cmd, group)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let target = Target {
        name: name.to_string(),
        base: format!("http://{addr}"),
        addr,
    };
    Ok((started, target, timeout))
}

pub async fn wait_target(
    http: &HttpClient,
    started: &Started,
    target: Target,
    timeout: Duration,
) -> Result<Target, String> {
    let t0 = Instant::now();
    wait_healthy(http, started, &target.base, timeout).await?;
    eprintln!(
        "conformance: target '{}' ready on {} after {:.1}s (log: {})",
        target.name,
        target.base,
        t0.elapsed().as_secs_f64(),
        started.log.display()
    );
    Ok(target)
}

// ---------------------------------------------------------------------------------------------
// Multi-region routing: a gateway in front of three mock upstreams (and one closed port).
// ---------------------------------------------------------------------------------------------

/// One mock upstream of the multi-region fixture: (name, region, latitude, longitude, the
/// variable holding its key). Every mock of every fixture has the same name, so the parity
/// case sees the same `x-mock-upstream` from both runtimes.
pub const REGION_MOCKS: [(&str, &str, f64, f64, &str); 3] = [
    ("seoul", "ap-northeast", 37.57, 126.98, "UPSTREAM_KEY_SEOUL"),
    (
        "frankfurt",
        "eu-central",
        50.11,
        8.68,
        "UPSTREAM_KEY_FRANKFURT",
    ),
    ("dallas", "us-south", 32.78, -96.80, "UPSTREAM_KEY_DALLAS"),
];
/// Each upstream's fallbacks, in the order of [`REGION_MOCKS`].
const REGION_FALLBACKS: [[&str; 2]; 3] = [
    ["frankfurt", "dallas"],
    ["dallas", "seoul"],
    ["seoul", "frankfurt"],
];
/// The fourth upstream: a port nothing listens on (connections are refused).
pub const CLOSED_UPSTREAM: &str = "closed";
/// The Fly region of the fixture's fly-fallback machine: Dallas, so that without a pin or a
/// `fly-region` header both runtimes pick `dallas` (the Worker's `request.cf` under `wrangler
/// dev` is always Austin, Texas).
pub const REGIONS_FLY_REGION: &str = "dfw";

/// The fixture's `routing`: short enough that the cases take seconds.
pub mod region_routing {
    pub const MAX_ATTEMPTS: u32 = 3;
    pub const FIRST_BYTE_TIMEOUT_MS: u64 = 1200;
    pub const KEEPALIVE_AFTER_MS: u64 = 400;
    pub const KEEPALIVE_INTERVAL_MS: u64 = 300;
    pub const EJECT_DEFAULT_SECS: u64 = 1;
    pub const EJECT_MAX_SECS: u64 = 3;
    pub const BREAKER_FAILURES: u32 = 3;
    pub const BREAKER_COOLDOWN_SECS: u64 = 2;
    pub const HEALTH_INTERVAL_SECS: u64 = 1;
}

/// The key of a region mock: contains [`UPSTREAM_KEY`], so the client's check that no response
/// carries an upstream key covers these too.
pub fn region_key(name: &str) -> String {
    format!("{UPSTREAM_KEY}-{name}")
}

/// A mock upstream of the fixture.
#[derive(Clone, Debug)]
pub struct RegionMock {
    pub name: &'static str,
    pub region: &'static str,
    /// `http://127.0.0.1:PORT` (no path).
    pub base: String,
}

/// The multi-region fixture of one target: its own three mocks and its own gateway.
pub struct Regions {
    /// `fly` or `worker`.
    pub target: String,
    /// The gateway, `http://127.0.0.1:PORT`.
    pub gateway: String,
    pub mocks: Vec<RegionMock>,
    /// The closed upstream's port.
    pub closed_port: u16,
    /// The gateway's output (fly: its stdout log lines; Worker: wrangler's console).
    pub log: PathBuf,
    /// The cases that use the fixture run one at a time: they set faults on shared mocks and
    /// read the gateway's per-upstream state.
    pub lock: Arc<tokio::sync::Mutex<()>>,
}

impl Regions {
    pub fn mock(&self, name: &str) -> &RegionMock {
        self.mocks
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no region mock named {name}"))
    }
}

/// `GATEWAY_CONFIG` of a multi-region gateway: the three mocks (and the closed port, if given);
/// probes every [`region_routing::HEALTH_INTERVAL_SECS`] when `probes`, else off.
pub fn region_config(mocks: &[RegionMock], closed_port: Option<u16>, probes: bool) -> String {
    use region_routing as r;
    let mut upstreams: Vec<serde_json::Value> = mocks
        .iter()
        .map(|m| {
            let i = REGION_MOCKS
                .iter()
                .position(|x| x.0 == m.name)
                .expect("a fixture mock");
            let (_, region, lat, lon, var) = REGION_MOCKS[i];
            serde_json::json!({
                "name": m.name,
                "base_url": format!("{}/v1", m.base),
                "api_key_secret": var,
                "region": region,
                "location": {"lat": lat, "lon": lon},
                "fallbacks": REGION_FALLBACKS[i],
            })
        })
        .collect();
    if let Some(port) = closed_port {
        upstreams.push(serde_json::json!({
            "name": CLOSED_UPSTREAM,
            "base_url": format!("http://127.0.0.1:{port}/v1"),
            "region": "nowhere",
            "fallbacks": ["seoul"],
        }));
    }
    serde_json::json!({
        "models": [{"id": "mock-model", "owned_by": "mock"}],
        "max_body_bytes": MAX_BODY_BYTES,
        "body_timeout_ms": 1000,
        "upstreams": upstreams,
        "routing": {
            "max_attempts": r::MAX_ATTEMPTS,
            "deadline_ms": 15000,
            "connect_timeout_ms": 1000,
            "first_byte_timeout_ms": r::FIRST_BYTE_TIMEOUT_MS,
            "stream_idle_timeout_ms": 2000,
            "keepalive_after_ms": r::KEEPALIVE_AFTER_MS,
            "keepalive_interval_ms": r::KEEPALIVE_INTERVAL_MS,
            "eject_default_secs": r::EJECT_DEFAULT_SECS,
            "eject_max_secs": r::EJECT_MAX_SECS,
            "retry_backoff_ms": 50,
            "breaker": {"failures": r::BREAKER_FAILURES, "cooldown_secs": r::BREAKER_COOLDOWN_SECS},
            "health": {
                "interval_secs": if probes { r::HEALTH_INTERVAL_SECS } else { 0 },
                "unhealthy_after": 2,
                "healthy_after": 1
            }
        }
    })
    .to_string()
}

/// The settings of a multi-region gateway (never `UPSTREAM_BASE_URL` / `UPSTREAM_API_KEY`).
pub fn region_settings(config: String) -> Vec<(&'static str, String)> {
    let mut s = vec![
        (
            "GATEWAY_API_KEYS",
            format!("{CLIENT_KEY},{SECOND_CLIENT_KEY}"),
        ),
        ("GATEWAY_CONFIG", config),
        ("FLY_REGION", REGIONS_FLY_REGION.to_string()),
    ];
    for (name, _, _, _, var) in REGION_MOCKS {
        s.push((var, region_key(name)));
    }
    s
}

/// A Worker for the multi-region cases: the bundle in `build/` with a KV namespace (for the
/// probes' shared results), fresh local state, and, with `test_scheduled`, the `/__scheduled`
/// route that fires the Cron Trigger.
pub fn regions_worker_command(
    repo: &Path,
    name: &str,
    port: u16,
    inspector_port: u16,
    settings: &[(&str, String)],
    test_scheduled: bool,
) -> Command {
    let state = log_dir().join(format!("{name}-state"));
    // Probe results from an earlier run must not leak into this one.
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = worker_command(repo, port, inspector_port, settings);
    cmd.arg("--config")
        .arg(repo.join("tests/conformance/wrangler-regions.toml"))
        .arg("--persist-to")
        .arg(state);
    if test_scheduled {
        cmd.arg("--test-scheduled");
    }
    cmd
}

/// The command of a multi-region gateway of `target` (`fly` or `worker`) on `port`; for the
/// Worker also whether it runs in its own process group.
pub fn region_gateway_command(
    target: &str,
    name: &str,
    port: u16,
    settings: &[(&str, String)],
    test_scheduled: bool,
) -> Result<(Command, bool), String> {
    match target {
        "fly" => {
            let mut cmd = fly_command(&find_binary("fly-fallback")?, port, settings);
            cmd.env_remove("UPSTREAM_BASE_URL")
                .env_remove("UPSTREAM_API_KEY");
            Ok((cmd, false))
        }
        "worker" => {
            let repo = repo_root();
            let inspector = free_port()?;
            Ok((
                regions_worker_command(&repo, name, port, inspector, settings, test_scheduled),
                true,
            ))
        }
        other => Err(format!("unknown target '{other}'")),
    }
}

/// How long a gateway of `target` may take to answer `/health`.
pub fn start_timeout(target: &str) -> Duration {
    if target == "worker" {
        WORKER_START_TIMEOUT
    } else {
        FLY_START_TIMEOUT
    }
}

/// Starts the three mocks of a region fixture (named `<prefix>-mock-<name>`); returns them
/// with what to wait for.
pub fn spawn_region_mocks(
    procs: &mut Processes,
    prefix: &str,
) -> Result<(Vec<RegionMock>, Vec<Started>), String> {
    let bin = find_binary("mock-upstream")?;
    let mut mocks = Vec::new();
    let mut started = Vec::new();
    for (name, region, _, _, _) in REGION_MOCKS {
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--api-key", &region_key(name)])
            .args(["--name", name])
            .args(["--host", "127.0.0.1"]);
        started.push(procs.spawn(&format!("{prefix}-mock-{name}"), cmd, false)?);
        mocks.push(RegionMock {
            name,
            region,
            base: format!("http://127.0.0.1:{port}"),
        });
    }
    Ok((mocks, started))
}

/// A region fixture being started: [`wait_regions`] makes it ready.
pub struct SpawnedRegions {
    regions: Regions,
    mocks: Vec<Started>,
    gateway: Started,
}

/// Spawns the region fixture of `target`: three mocks and a gateway (`<target>-regions`) in
/// front of them and of a closed port, probes off. The Worker's serves the bundle that the
/// target's own `wrangler dev` built, so it is spawned once that one is ready.
pub fn spawn_regions(procs: &mut Processes, target: &str) -> Result<SpawnedRegions, String> {
    let (mocks, mock_procs) = spawn_region_mocks(procs, &format!("{target}-regions"))?;
    let closed_port = free_port()?;
    let settings = region_settings(region_config(&mocks, Some(closed_port), false));
    let port = free_port()?;
    let name = format!("{target}-regions");
    let (cmd, group) = region_gateway_command(target, &name, port, &settings, false)?;
    let gateway = procs.spawn(&name, cmd, group)?;
    Ok(SpawnedRegions {
        regions: Regions {
            target: target.to_string(),
            gateway: format!("http://127.0.0.1:{port}"),
            mocks,
            closed_port,
            log: gateway.log.clone(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        },
        mocks: mock_procs,
        gateway,
    })
}

pub async fn wait_regions(http: &HttpClient, s: SpawnedRegions) -> Result<Regions, String> {
    let t0 = Instant::now();
    for (m, started) in s.regions.mocks.iter().zip(&s.mocks) {
        wait_healthy(http, started, &m.base, MOCK_START_TIMEOUT).await?;
    }
    let timeout = start_timeout(&s.regions.target);
    wait_healthy(http, &s.gateway, &s.regions.gateway, timeout).await?;
    eprintln!(
        "conformance: multi-region fixture of '{}' ready on {} after {:.1}s (log: {})",
        s.regions.target,
        s.regions.gateway,
        t0.elapsed().as_secs_f64(),
        s.gateway.log.display()
    );
    Ok(s.regions)
}
