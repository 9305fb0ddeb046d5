//! What is measured: the mock upstream itself (the floor), fly-fallback, the peers installed by
//! `setup-peers.sh`, and the Worker on bare workerd. Each target is a command to start (or
//! none), a port, and the headers its clients send; everything else is the same for all.
//!
//! To add a target, add a `TargetSpec` in [`plan`]: a launch command, its port, the headers a
//! client sends, and a way to tell its version.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

/// Model names the bench sends (the mock's grammar): an ordinary answer, a 50-event stream
/// (each event stamped with the mock's send time), and a long stream to hold open.
pub const CHAT_MODEL: &str = "bench-model";
pub const STREAM_EVENTS: usize = 50;
pub const STREAM_GAP_MS: u64 = 20;
pub const STREAM_MODEL: &str = "mock-stream-50x20ms-stamped";
pub const HOLD_MODEL: &str = "mock-stream-90x1000ms";
pub const MODELS: &[&str] = &[CHAT_MODEL, STREAM_MODEL, HOLD_MODEL];

pub const MOCK_KEY: &str = "sk-bench-mock-upstream";
pub const CLIENT_KEY: &str = "sk-bench-client";

/// A second client key, configured in `GATEWAY_CONFIG` `keys` of this project's targets with
/// every kind of limit (issue 14), so each of its requests goes through the limiter's store
/// (reserve before the upstream, settle after). The limits are far above anything the bench
/// sends, so it is never refused: what is measured is the cost of the store calls.
pub const LIMITED_KEY: &str = "sk-bench-limited";
pub const LIMITED_KEY_ID: &str = "bench-limited";
/// `printf %s sk-bench-limited | fly-fallback hash-key` (the start-up check fails if it is not:
/// the key would be a 401).
pub const LIMITED_KEY_SHA256: &str =
    "ac8d55e868f20d2d95aeb3c850a7048e3e2917b9b651d3ef992d1aa86093f613";
/// The model of the limited-key scenario (for both keys), priced in `GATEWAY_CONFIG` `prices`:
/// a key with a budget may only use priced models. The other scenarios keep [`CHAT_MODEL`],
/// which stays unpriced, so they run exactly as before.
pub const PRICED_MODEL: &str = "bench-model-priced";
pub const LIMITED_RPM: u64 = 100_000_000;
pub const LIMITED_TPM: u64 = 1_000_000_000_000;
pub const LIMITED_BUDGET_USD: u64 = 1_000_000;
/// The header every answer to a key with `rpm` carries (the start-up check looks for it).
pub const RATELIMIT_HEADER: &str = "x-ratelimit-limit-requests";
pub const LITELLM_MASTER_KEY: &str = "sk-bench-litellm-master";

/// Process groups started here, killed on exit or interruption.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub fn kill_all_started() {
    if let Ok(g) = GROUPS.lock() {
        for pgid in g.iter() {
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub repo: PathBuf,
    pub bin_dir: PathBuf,
    pub peers: PathBuf,
    pub work: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Where stdout goes; `None` discards it (fly-fallback's per-request log lines).
    pub stdout_log: Option<PathBuf>,
    pub stderr_log: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSpec {
    pub name: String,
    pub description: String,
    pub version: String,
    #[serde(skip)]
    pub launch: Option<Launch>,
    pub port: u16,
    pub prefix: String,
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// The headers of a client of the limited key ([`LIMITED_KEY`]), for targets configured
    /// with it; `None` for the others.
    #[serde(skip)]
    pub limited_headers: Option<Vec<(String, String)>>,
    /// Where that target keeps the limited key's counters (for the report).
    #[serde(skip)]
    pub limiter_store: Option<String>,
    #[serde(skip)]
    pub startup: Duration,
    /// For a bundle on workerd: how to read its isolate's memory (`crate::isolate`).
    #[serde(skip)]
    pub isolate: Option<crate::isolate::Probe>,
}

impl TargetSpec {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

pub enum Planned {
    Ready(Box<TargetSpec>),
    Skipped { name: String, reason: String },
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A started process (its own process group), stopped when dropped.
pub struct Proc {
    pub pid: u32,
    child: Child,
}

impl Proc {
    pub fn start(l: &Launch) -> Result<Proc, String> {
        let stderr = fs::File::create(&l.stderr_log)
            .map_err(|e| format!("{}: {e}", l.stderr_log.display()))?;
        let stdout = match &l.stdout_log {
            Some(p) if p == &l.stderr_log => {
                Stdio::from(stderr.try_clone().map_err(|e| e.to_string())?)
            }
            Some(p) => {
                Stdio::from(fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => Stdio::null(),
        };
        let mut cmd = Command::new(&l.program);
        cmd.args(&l.args)
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(stderr))
            .process_group(0);
        if let Some(d) = &l.cwd {
            cmd.current_dir(d);
        }
        unsafe {
            cmd.pre_exec(|| {
                // Die with the bench, even if it is killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", l.program.display()))?;
        let pid = child.id();
        if let Ok(mut g) = GROUPS.lock() {
            g.push(pid as i32);
        }
        Ok(Proc { pid, child })
    }

    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub fn stop(&mut self) {
        let pgid = self.pid as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        if let Ok(mut g) = GROUPS.lock() {
            g.retain(|p| *p != pgid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until something accepts connections on the port.
pub fn wait_port(port: u16, proc_: &mut Proc, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = proc_.exited() {
            return Err(format!("exited before listening ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("not listening on port {port} after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn mock_launch(paths: &Paths, port: u16) -> Launch {
    Launch {
        program: paths.bin_dir.join("mock-upstream"),
        args: vec![
            "--port".into(),
            port.to_string(),
            "--api-key".into(),
            MOCK_KEY.into(),
            "--name".into(),
            "bench-mock".into(),
        ],
        env: vec![],
        cwd: None,
        stdout_log: Some(paths.work.join("mock.log")),
        stderr_log: paths.work.join("mock.log"),
    }
}

fn read_version(package_json: &Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(package_json).ok()?).ok()?;
    v.get("version")?.as_str().map(str::to_string)
}

fn bearer(key: &str) -> (String, String) {
    ("authorization".into(), format!("Bearer {key}"))
}

/// `GATEWAY_CONFIG` of this project's targets: the limited key (one limiter object:
/// `shard_rpm` = `rpm`) and a price for [`PRICED_MODEL`]. The plain key of
/// `GATEWAY_API_KEYS` ([`CLIENT_KEY`]) has no limits, as before.
pub fn gateway_config() -> String {
    json!({
        "keys": [{
            "id": LIMITED_KEY_ID,
            "name": "bench: limited key (issue 14)",
            "key_sha256": LIMITED_KEY_SHA256,
            "rpm": LIMITED_RPM,
            "tpm": LIMITED_TPM,
            "budget_usd": {"amount": LIMITED_BUDGET_USD, "period": "day"},
        }],
        "limits": {"shard_rpm": LIMITED_RPM},
        "prices": {PRICED_MODEL: {"input": 1.0, "output": 2.0}},
    })
    .to_string()
}

/// A Cap'n Proto text literal (the workerd config) holding `s`.
fn capnp_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The targets, in report order. `names` filters them (empty: all).
pub fn plan(paths: &Paths, mock_port: u16, names: &[String]) -> Vec<Planned> {
    let mock_v1 = format!("http://127.0.0.1:{mock_port}/v1");
    let wanted = |n: &str| names.is_empty() || names.iter().any(|w| w == n);
    let mut out = Vec::new();

    if wanted("direct") {
        out.push(Planned::Ready(Box::new(TargetSpec {
            name: "direct".into(),
            description: "the mock upstream itself, no gateway (the floor)".into(),
            version: "mock-upstream (tests/mock-upstream)".into(),
            launch: None,
            port: mock_port,
            prefix: "/v1".into(),
            headers: vec![bearer(MOCK_KEY)],
            limited_headers: None,
            limiter_store: None,
            startup: Duration::from_secs(5),
            isolate: None,
        })));
    }

    if wanted("fly-fallback") {
        let program = paths.bin_dir.join("fly-fallback");
        if !program.exists() {
            out.push(Planned::Skipped {
                name: "fly-fallback".into(),
                reason: format!("{} not built", program.display()),
            });
        } else {
            let port = free_port();
            out.push(Planned::Ready(Box::new(TargetSpec {
                name: "fly-fallback".into(),
                description: "this project's native runtime (release build)".into(),
                version: git_describe(&paths.repo),
                launch: Some(Launch {
                    program,
                    args: vec![],
                    env: vec![
                        ("UPSTREAM_BASE_URL".into(), mock_v1.clone()),
                        ("UPSTREAM_API_KEY".into(), MOCK_KEY.into()),
                        ("GATEWAY_API_KEYS".into(), CLIENT_KEY.into()),
                        ("GATEWAY_CONFIG".into(), gateway_config()),
                        ("PORT".into(), port.to_string()),
                        ("BIND_ADDR".into(), "127.0.0.1".into()),
                        ("METRICS_PORT".into(), "off".into()),
                    ],
                    cwd: None,
                    stdout_log: None,
                    stderr_log: paths.work.join("fly-fallback.log"),
                }),
                port,
                prefix: "/v1".into(),
                headers: vec![bearer(CLIENT_KEY)],
                limited_headers: Some(vec![bearer(LIMITED_KEY)]),
                limiter_store: Some("in-process counters (no REDIS_URL)".into()),
                startup: Duration::from_secs(10),
                isolate: None,
            })));
        }
    }

    if wanted("portkey") {
        let dir = paths.peers.join("portkey/node_modules/@portkey-ai/gateway");
        let script = dir.join("build/start-server.js");
        if !script.exists() {
            out.push(Planned::Skipped {
                name: "portkey".into(),
                reason: "not installed (run bench/setup-peers.sh)".into(),
            });
        } else {
            let port = free_port();
            let hono = read_version(
                &paths
                    .peers
                    .join("portkey/node_modules/@hono/node-server/package.json"),
            )
            .unwrap_or_else(|| "?".into());
            let node = crate::sys::command_output("node", &["--version"])
                .unwrap_or_else(|| "node ?".into());
            out.push(Planned::Ready(Box::new(TargetSpec {
                name: "portkey".into(),
                description: "Portkey AI gateway, Node.js, --headless".into(),
                version: format!(
                    "@portkey-ai/gateway {} (@hono/node-server {hono}, node {node})",
                    read_version(&dir.join("package.json")).unwrap_or_else(|| "?".into())
                ),
                launch: Some(Launch {
                    program: "node".into(),
                    args: vec![
                        script.display().to_string(),
                        "--headless".into(),
                        format!("--port={port}"),
                    ],
                    env: vec![("NODE_ENV".into(), "production".into())],
                    cwd: Some(paths.peers.join("portkey")),
                    stdout_log: Some(paths.work.join("portkey.log")),
                    stderr_log: paths.work.join("portkey.log"),
                }),
                port,
                prefix: "/v1".into(),
                headers: vec![
                    bearer(MOCK_KEY),
                    ("x-portkey-provider".into(), "openai".into()),
                    ("x-portkey-custom-host".into(), mock_v1.clone()),
                ],
                limited_headers: None,
                limiter_store: None,
                startup: Duration::from_secs(30),
                isolate: None,
            })));
        }
    }

    if wanted("litellm") {
        let venv = paths.peers.join("litellm-venv");
        let program = venv.join("bin/litellm");
        if !program.exists() {
            out.push(Planned::Skipped {
                name: "litellm".into(),
                reason: "not installed (run bench/setup-peers.sh)".into(),
            });
        } else {
            let port = free_port();
            let config = paths.work.join("litellm.yaml");
            let _ = fs::write(&config, litellm_config(&mock_v1));
            let version = crate::sys::command_output(
                &venv.join("bin/python").display().to_string(),
                &["-c", "import importlib.metadata as m, sys; print(m.version('litellm'), 'python', sys.version.split()[0])"],
            )
            .unwrap_or_else(|| "?".into());
            out.push(Planned::Ready(Box::new(TargetSpec {
                name: "litellm".into(),
                description: "LiteLLM proxy, Python, one worker, no callbacks, no retries".into(),
                version: format!("litellm {version}"),
                launch: Some(Launch {
                    program,
                    args: vec![
                        "--config".into(),
                        config.display().to_string(),
                        "--host".into(),
                        "127.0.0.1".into(),
                        "--port".into(),
                        port.to_string(),
                        "--num_workers".into(),
                        "1".into(),
                    ],
                    env: vec![
                        ("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into()),
                        ("LITELLM_TELEMETRY".into(), "False".into()),
                        ("LITELLM_LOG".into(), "ERROR".into()),
                        ("PYTHONUNBUFFERED".into(), "1".into()),
                    ],
                    cwd: Some(paths.work.clone()),
                    stdout_log: Some(paths.work.join("litellm.log")),
                    stderr_log: paths.work.join("litellm.log"),
                }),
                port,
                prefix: "/v1".into(),
                headers: vec![bearer(LITELLM_MASTER_KEY)],
                limited_headers: None,
                limiter_store: None,
                startup: Duration::from_secs(120),
                isolate: None,
            })));
        }
    }

    for bundle in [Bundle::Gateway, Bundle::JsFloor] {
        if wanted(bundle.name()) {
            out.push(match workerd_target(paths, &mock_v1, bundle) {
                Ok(t) => Planned::Ready(Box::new(t)),
                Err(reason) => Planned::Skipped {
                    name: bundle.name().into(),
                    reason,
                },
            });
        }
    }
    out
}

/// What a workerd target serves.
#[derive(Clone, Copy)]
enum Bundle {
    /// This project's Worker (`dist/`, or `BENCH_WORKER_DIST`).
    Gateway,
    /// `bench/worker-floors/js-gateway`: a gateway's least work in plain JavaScript, the floor
    /// the Worker is measured against in the same run.
    JsFloor,
}

impl Bundle {
    fn name(self) -> &'static str {
        match self {
            Bundle::Gateway => "worker-workerd",
            Bundle::JsFloor => "worker-js-floor",
        }
    }
}

fn litellm_config(mock_v1: &str) -> String {
    let mut s = String::from("model_list:\n");
    for m in MODELS {
        s.push_str(&format!(
            "  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n      api_base: {mock_v1}\n      api_key: {MOCK_KEY}\n      max_retries: 0\n"
        ));
    }
    s.push_str(&format!(
        "litellm_settings:\n  num_retries: 0\n  request_timeout: 120\n  drop_params: true\n  callbacks: []\n  success_callback: []\n  failure_callback: []\n  turn_off_message_logging: true\n\
         router_settings:\n  num_retries: 0\n  disable_cooldowns: true\n\
         general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n  disable_spend_logs: true\n  disable_error_logs: true\n"
    ));
    s
}

pub fn git_describe(repo: &Path) -> String {
    crate::sys::command_output(
        "git",
        &[
            "-C",
            &repo.display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ],
    )
    .map(|c| format!("git {c}"))
    .unwrap_or_else(|| "unknown".into())
}

/// The Worker's bundle (`wrangler deploy --dry-run --outdir dist`) served by bare workerd, with a
/// generated config. Skipped when the bundle or the workerd binary is absent.
fn workerd_target(paths: &Paths, mock_v1: &str, bundle: Bundle) -> Result<TargetSpec, String> {
    let dist = match bundle {
        Bundle::Gateway => std::env::var_os("BENCH_WORKER_DIST")
            .map(PathBuf::from)
            .unwrap_or_else(|| paths.repo.join("dist")),
        Bundle::JsFloor => paths.repo.join("bench/worker-floors/js-gateway"),
    };
    if !dist.is_dir() {
        return Err(format!(
            "no Worker bundle at {} (build it with `npx wrangler deploy --dry-run --outdir dist`)",
            dist.display()
        ));
    }
    let workerd = std::env::var_os("BENCH_WORKERD")
        .map(PathBuf::from)
        .or_else(|| {
            [
                "node_modules/@cloudflare/workerd-linux-64/bin/workerd",
                "node_modules/.bin/workerd",
            ]
            .iter()
            .map(|p| paths.repo.join(p))
            .find(|p| p.exists())
        })
        .ok_or(
            "no workerd binary (npm install in the repository root installs it with wrangler)",
        )?;
    let mut files: Vec<PathBuf> = fs::read_dir(&dist)
        .map_err(|e| format!("{}: {e}", dist.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let is_js = |p: &PathBuf| matches!(p.extension().and_then(|e| e.to_str()), Some("js" | "mjs"));
    let entry_names = ["index.js", "shim.js", "shim.mjs", "worker.js", "index.mjs"];
    let entry = entry_names
        .iter()
        .map(|n| dist.join(n))
        .find(|p| p.exists())
        .or_else(|| {
            let js: Vec<&PathBuf> = files.iter().filter(|p| is_js(p)).collect();
            (js.len() == 1).then(|| js[0].clone())
        })
        .ok_or_else(|| format!("no entry module in {}", dist.display()))?;
    let (date, flags) = wrangler_compat(&paths.repo.join("wrangler.toml"));
    let port = free_port();
    let dir = paths.work.join(bundle.name());
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // workerd embeds files relative to its config: copy the bundle next to it (which also keeps
    // the run's bundle fixed if dist/ is rebuilt meanwhile).
    let mut modules = Vec::new();
    let mut ordered = vec![entry.clone()];
    ordered.extend(files.iter().filter(|p| **p != entry).cloned());
    for f in &ordered {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let kind = match f.extension().and_then(|e| e.to_str()) {
            Some("js" | "mjs") => "esModule",
            Some("wasm") => "wasm",
            Some("bin") => "data",
            _ => continue,
        };
        fs::copy(f, dir.join(&name)).map_err(|e| format!("{}: {e}", f.display()))?;
        modules.push(format!("(name = \"{name}\", {kind} = embed \"{name}\")"));
    }
    let text = |k: &str, v: &str| format!("(name = {}, text = {})", capnp_text(k), capnp_text(v));
    let config = workerd_config(
        port,
        &modules,
        &date,
        &flags,
        &[
            text("UPSTREAM_BASE_URL", mock_v1),
            text("UPSTREAM_API_KEY", MOCK_KEY),
            text("GATEWAY_API_KEYS", CLIENT_KEY),
            text("GATEWAY_CONFIG", &gateway_config()),
        ],
    );
    let cfg = dir.join("config.capnp");
    fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let version = crate::sys::command_output(&workerd.display().to_string(), &["--version"])
        .unwrap_or_else(|| "workerd ?".into());
    let log = paths.work.join(format!("{}.log", bundle.name()));
    let (description, version, limited_headers, limiter_store) = match bundle {
        Bundle::Gateway => (
            "this project's Worker bundle on bare workerd",
            format!("{} ({version})", git_describe(&paths.repo)),
            Some(vec![bearer(LIMITED_KEY)]),
            Some(format!(
                "Durable Object `{LIMITER_CLASS}` bound as `{LIMITER_BINDING}` (workerd, in-memory storage)"
            )),
        ),
        Bundle::JsFloor => (
            "the floor: a gateway's least work in plain JavaScript on the same workerd (bench/worker-floors/js-gateway)",
            format!("bench/worker-floors/js-gateway ({version})"),
            None,
            None,
        ),
    };
    Ok(TargetSpec {
        name: bundle.name().into(),
        description: description.into(),
        version,
        launch: Some(Launch {
            program: workerd.clone(),
            args: vec!["serve".into(), cfg.display().to_string()],
            env: vec![],
            cwd: Some(dir.clone()),
            stdout_log: Some(log.clone()),
            stderr_log: log,
        }),
        port,
        prefix: "/v1".into(),
        headers: vec![bearer(CLIENT_KEY)],
        limited_headers,
        limiter_store,
        startup: Duration::from_secs(30),
        isolate: Some(crate::isolate::Probe {
            node: paths.repo.join("node_modules/node/bin/node"),
            script: paths.repo.join("bench/profile-worker.mjs"),
            // The run's copy of the bundle, as the bench's workerd serves it.
            dist: dir,
            workerd,
            mock: paths.bin_dir.join("mock-upstream"),
        }),
    })
}

/// The Durable Object class of the limiter (exported by the bundle) and its binding's name, as
/// in wrangler.toml.
pub const LIMITER_CLASS: &str = "Limiter";
pub const LIMITER_BINDING: &str = "LIMITER";
/// The line the Worker logs when it has no `LIMITER` binding and counts per isolate instead.
pub const PER_ISOLATE_EVENT: &str = "limiter_per_isolate";

/// workerd's config: the bundle's modules, the settings as text bindings, and the limiter's
/// Durable Object namespace (SQLite-backed as `new_sqlite_classes` in wrangler.toml makes it,
/// stored in memory: a bench needs no data after it ends) bound as `LIMITER`.
fn workerd_config(
    port: u16,
    modules: &[String],
    date: &str,
    flags: &[String],
    text_bindings: &[String],
) -> String {
    let mut bindings: Vec<String> = text_bindings.to_vec();
    bindings.push(format!(
        "(name = \"{LIMITER_BINDING}\", durableObjectNamespace = \"{LIMITER_CLASS}\")"
    ));
    format!(
        "using Workerd = import \"/workerd/workerd.capnp\";\n\
         const config :Workerd.Config = (\n  services = [\n    (name = \"main\", worker = .gateway),\n    \
         (name = \"internet\", network = (allow = [\"public\", \"private\", \"local\"])),\n  ],\n  \
         sockets = [ (name = \"http\", address = \"127.0.0.1:{port}\", http = (), service = \"main\") ],\n);\n\
         const gateway :Workerd.Worker = (\n  modules = [\n    {}\n  ],\n  compatibilityDate = \"{date}\",\n  \
         compatibilityFlags = [{}],\n  bindings = [\n    {}\n  ],\n  \
         durableObjectNamespaces = [\n    (className = \"{LIMITER_CLASS}\", uniqueKey = \"ai-edge-gateway-limiter\", enableSql = true)\n  ],\n  \
         durableObjectStorage = (inMemory = void),\n);\n",
        modules.join(",\n    "),
        flags.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "),
        bindings.join(",\n    "),
    )
}

/// `compatibility_date` and `compatibility_flags` from wrangler.toml (simple one-line forms).
fn wrangler_compat(path: &Path) -> (String, Vec<String>) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let value = |key: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with('='))
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().to_string())
    };
    let date = value("compatibility_date")
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "2025-01-01".into());
    let flags = value("compatibility_flags")
        .map(|v| {
            v.trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    (date, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litellm_config_names_every_model_and_no_retries() {
        let c = litellm_config("http://127.0.0.1:9/v1");
        for m in MODELS {
            assert!(c.contains(&format!("model_name: {m}\n")));
            assert!(c.contains(&format!("model: openai/{m}\n")));
        }
        assert!(c.contains("num_retries: 0"));
        assert!(c.contains("api_base: http://127.0.0.1:9/v1"));
    }

    #[test]
    fn compatibility_settings_come_from_wrangler_toml() {
        let dir = std::env::temp_dir().join(format!("bench-wrangler-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("wrangler.toml");
        fs::write(&p, "name = \"x\"\ncompatibility_date = \"2025-06-01\"\ncompatibility_flags = [\"nodejs_compat\"]\n").unwrap();
        assert_eq!(
            wrangler_compat(&p),
            ("2025-06-01".to_string(), vec!["nodejs_compat".to_string()])
        );
        assert_eq!(wrangler_compat(&dir.join("absent.toml")).0, "2025-01-01");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_gateway_config_has_one_limited_key_that_is_never_refused() {
        let v: serde_json::Value = serde_json::from_str(&gateway_config()).unwrap();
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["id"], LIMITED_KEY_ID);
        let digest = k["key_sha256"].as_str().unwrap();
        assert_eq!(digest.len(), 64);
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
        // Every limit, each within what the gateway accepts, and one limiter object.
        assert_eq!(k["rpm"], 100_000_000u64);
        assert_eq!(k["tpm"], 1_000_000_000_000u64);
        assert_eq!(k["budget_usd"]["amount"], 1_000_000u64);
        assert_eq!(k["budget_usd"]["period"], "day");
        assert_eq!(v["limits"]["shard_rpm"], k["rpm"]);
        // The scenario's model is priced (a budgeted key may use no other); the others' is not.
        assert!(v["prices"][PRICED_MODEL]["input"].is_number());
        assert!(v["prices"].get(CHAT_MODEL).is_none());
        assert_ne!(LIMITED_KEY, CLIENT_KEY);
    }

    #[test]
    fn capnp_text_literals_escape_json() {
        assert_eq!(capnp_text("plain"), "\"plain\"");
        assert_eq!(capnp_text(r#"{"a":"b\\c"}"#), r#""{\"a\":\"b\\\\c\"}""#);
        assert_eq!(capnp_text("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn the_workerd_config_binds_the_limiter_durable_object() {
        let c = workerd_config(
            8787,
            &["(name = \"index.js\", esModule = embed \"index.js\")".into()],
            "2026-01-01",
            &[],
            &["(name = \"A\", text = \"b\")".into()],
        );
        assert!(c.contains("(name = \"LIMITER\", durableObjectNamespace = \"Limiter\")"));
        assert!(c.contains(
            "(className = \"Limiter\", uniqueKey = \"ai-edge-gateway-limiter\", enableSql = true)"
        ));
        assert!(c.contains("durableObjectStorage = (inMemory = void)"));
        assert!(c.contains("(name = \"A\", text = \"b\"),\n    (name = \"LIMITER\""));
        assert!(c.contains("address = \"127.0.0.1:8787\""));
    }

    #[test]
    fn the_stream_model_matches_the_constants() {
        assert_eq!(
            STREAM_MODEL,
            format!("mock-stream-{STREAM_EVENTS}x{STREAM_GAP_MS}ms-stamped")
        );
    }
}
