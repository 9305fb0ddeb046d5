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

/// Model names the bench sends (the mock's grammar): an ordinary answer, a 50-event stream, and
/// a long stream to hold open.
pub const CHAT_MODEL: &str = "bench-model";
pub const STREAM_EVENTS: usize = 50;
pub const STREAM_GAP_MS: u64 = 20;
pub const STREAM_MODEL: &str = "mock-stream-50x20ms";
pub const HOLD_MODEL: &str = "mock-stream-90x1000ms";
pub const MODELS: &[&str] = &[CHAT_MODEL, STREAM_MODEL, HOLD_MODEL];

pub const MOCK_KEY: &str = "sk-bench-mock-upstream";
pub const CLIENT_KEY: &str = "sk-bench-client";
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
    #[serde(skip)]
    pub startup: Duration,
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
            startup: Duration::from_secs(5),
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
                        ("PORT".into(), port.to_string()),
                        ("BIND_ADDR".into(), "127.0.0.1".into()),
                    ],
                    cwd: None,
                    stdout_log: None,
                    stderr_log: paths.work.join("fly-fallback.log"),
                }),
                port,
                prefix: "/v1".into(),
                headers: vec![bearer(CLIENT_KEY)],
                startup: Duration::from_secs(10),
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
                startup: Duration::from_secs(30),
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
                startup: Duration::from_secs(120),
            })));
        }
    }

    if wanted("worker-workerd") {
        out.push(match workerd_target(paths, &mock_v1) {
            Ok(t) => Planned::Ready(Box::new(t)),
            Err(reason) => Planned::Skipped {
                name: "worker-workerd".into(),
                reason,
            },
        });
    }
    out
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
fn workerd_target(paths: &Paths, mock_v1: &str) -> Result<TargetSpec, String> {
    let dist = std::env::var_os("BENCH_WORKER_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.repo.join("dist"));
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
    let dir = paths.work.join("workerd");
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
    let text = |k: &str, v: &str| format!("(name = \"{k}\", text = \"{v}\")");
    let config = format!(
        "using Workerd = import \"/workerd/workerd.capnp\";\n\
         const config :Workerd.Config = (\n  services = [\n    (name = \"main\", worker = .gateway),\n    \
         (name = \"internet\", network = (allow = [\"public\", \"private\", \"local\"])),\n  ],\n  \
         sockets = [ (name = \"http\", address = \"127.0.0.1:{port}\", http = (), service = \"main\") ],\n);\n\
         const gateway :Workerd.Worker = (\n  modules = [\n    {}\n  ],\n  compatibilityDate = \"{date}\",\n  \
         compatibilityFlags = [{}],\n  bindings = [\n    {},\n    {},\n    {}\n  ],\n);\n",
        modules.join(",\n    "),
        flags.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", "),
        text("UPSTREAM_BASE_URL", mock_v1),
        text("UPSTREAM_API_KEY", MOCK_KEY),
        text("GATEWAY_API_KEYS", CLIENT_KEY),
    );
    let cfg = dir.join("config.capnp");
    fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let version = crate::sys::command_output(&workerd.display().to_string(), &["--version"])
        .unwrap_or_else(|| "workerd ?".into());
    Ok(TargetSpec {
        name: "worker-workerd".into(),
        description: "this project's Worker bundle on bare workerd".into(),
        version: format!("{} ({version})", git_describe(&paths.repo)),
        launch: Some(Launch {
            program: workerd,
            args: vec!["serve".into(), cfg.display().to_string()],
            env: vec![],
            cwd: Some(dir),
            stdout_log: Some(paths.work.join("workerd.log")),
            stderr_log: paths.work.join("workerd.log"),
        }),
        port,
        prefix: "/v1".into(),
        headers: vec![bearer(CLIENT_KEY)],
        startup: Duration::from_secs(30),
    })
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
    fn the_stream_model_matches_the_constants() {
        assert_eq!(
            STREAM_MODEL,
            format!("mock-stream-{STREAM_EVENTS}x{STREAM_GAP_MS}ms")
        );
    }
}
