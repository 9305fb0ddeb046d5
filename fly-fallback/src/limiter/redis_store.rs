//! The limiter's counters in Redis: each operation is one Lua script (`apply.lua`), run with
//! `EVALSHA` (`EVAL` when the server does not have it yet), so that every machine sharing the
//! Redis sees one atomic store. The script names its counters as `KEYS` (they share the `{object}`
//! hash tag the core puts in their names, so Redis Cluster finds them in one slot) and is
//! `MemoryCounters::apply` line for line; expired counters are absent keys.
//!
//! A failure is `Err(())`, for the core to apply `limits.on_store_error`; failures are logged
//! when they start, then counted and reported at most once a minute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway_core::limits::{Op, Reply, MAX_COUNT};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, ServerErrorKind};

/// The script, and its SHA-1 for `EVALSHA` (a test checks it against `SCRIPT LOAD`).
pub(super) const SCRIPT: &str = include_str!("apply.lua");
pub(super) const SCRIPT_SHA1: &str = "3d43eebf9e01355699643bf23d8236d36bfd6d7e";

/// Errors are reported at most this often (the first of a run of failures at once).
const REPORT_EVERY: Duration = Duration::from_secs(60);

pub struct RedisCounters {
    conn: ConnectionManager,
    timeout: Duration,
    health: Health,
}

impl RedisCounters {
    /// A client for `url`; it connects on first use (and reconnects after a failure).
    pub fn connect(url: &str, timeout: Duration) -> Result<RedisCounters, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.min(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(RedisCounters {
            conn,
            timeout,
            health: Health::default(),
        })
    }

    /// Applies `op` atomically (see `gateway_core::limits::Op`). An op that is not well formed
    /// is refused without a call, as the reference does.
    pub async fn apply(&self, op: &Op) -> Result<Reply, ()> {
        if !op.is_well_formed() {
            return Ok(Reply {
                granted: false,
                totals: vec![0; op.checks.len()],
            });
        }
        if op.checks.is_empty() && op.adjust.is_empty() {
            return Ok(Reply {
                granted: true,
                totals: Vec::new(),
            });
        }
        let (keys, args) = encode(op);
        let outcome = match tokio::time::timeout(self.timeout, self.run(&keys, &args)).await {
            Err(_) => Err("timed out"),
            Ok(Err(_)) => Err("failed"),
            Ok(Ok(reply)) => decode(&reply, op.checks.len()).ok_or("gave an unexpected reply"),
        };
        match outcome {
            Ok(reply) => {
                self.health.ok();
                Ok(reply)
            }
            Err(what) => {
                self.health.failed(what);
                Err(())
            }
        }
    }

    async fn run(&self, keys: &[&str], args: &[String]) -> redis::RedisResult<Vec<i64>> {
        let mut conn = self.conn.clone();
        let call = |command: &str, script: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match call("EVALSHA", SCRIPT_SHA1)
            .query_async::<Vec<i64>>(&mut conn)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // EVAL also leaves the script in the server's cache for the next EVALSHA.
                call("EVAL", SCRIPT).query_async(&mut conn).await
            }
            other => other,
        }
    }
}

/// The script's `KEYS` (`op.keys()`) and `ARGV` (see `apply.lua`).
fn encode(op: &Op) -> (Vec<&str>, Vec<String>) {
    let keys = op.keys();
    let index = |k: &str| keys.iter().position(|&n| n == k).map_or(0, |i| i + 1);
    let ttl = |t: u64| t.clamp(1, MAX_COUNT as u64);
    let mut args = Vec::new();
    args.push(op.checks.len().to_string());
    for c in &op.checks {
        args.push(c.sum.len().to_string());
        args.extend(c.sum.iter().map(|k| index(k).to_string()));
        args.push(c.limit.to_string());
        args.push(c.add.to_string());
        args.push(ttl(c.ttl_ms).to_string());
    }
    args.push(op.adjust.len().to_string());
    for a in &op.adjust {
        args.push(index(&a.key).to_string());
        args.push(a.delta.to_string());
        args.push(ttl(a.ttl_ms).to_string());
        args.push(u8::from(a.only_existing).to_string());
    }
    (keys, args)
}

fn decode(reply: &[i64], checks: usize) -> Option<Reply> {
    let (&granted, totals) = reply.split_first()?;
    if totals.len() != checks || !(granted == 0 || granted == 1) {
        return None;
    }
    Some(Reply {
        granted: granted == 1,
        totals: totals.to_vec(),
    })
}

/// The error log: a line when calls start failing, then a count at most once a minute while
/// they go on failing, and a line when they succeed again; at most two lines in
/// [`QUIET`] when Redis flaps (the failures in between are counted in the next line).
#[derive(Default)]
struct Health {
    /// Whether the last call failed (a success reads only this, unless it did).
    failing: AtomicBool,
    log: Mutex<ErrorLog>,
}

#[derive(Default)]
struct ErrorLog {
    /// Failures not yet reported.
    unreported: u64,
    last_line: Option<Instant>,
    /// The last line said Redis fails.
    said_down: bool,
}

/// The least time between a line and the next one about a new failure or a recovery.
const QUIET: Duration = Duration::from_secs(10);

impl ErrorLog {
    fn quiet_for(&self, gap: Duration) -> bool {
        self.last_line.is_none_or(|t| t.elapsed() >= gap)
    }

    fn line(&mut self, message: std::fmt::Arguments<'_>) {
        eprintln!("fly-fallback: limits: {message}");
        self.unreported = 0;
        self.last_line = Some(Instant::now());
    }
}

impl Health {
    fn failed(&self, what: &str) {
        self.failing.store(true, Ordering::Release);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.unreported += 1;
        let gap = if log.said_down { REPORT_EVERY } else { QUIET };
        if log.quiet_for(gap) {
            let n = log.unreported;
            log.line(format_args!(
                "Redis call {what}; {n} failed call(s) since the last report \
                 (limits.on_store_error applies to them)"
            ));
            log.said_down = true;
        }
    }

    fn ok(&self) {
        if !self.failing.load(Ordering::Acquire) || !self.failing.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.said_down || (log.unreported > 0 && log.quiet_for(QUIET)) {
            let n = log.unreported;
            log.line(format_args!(
                "Redis answers again ({n} more failed call(s) since the last report)"
            ));
            log.said_down = false;
        }
    }
}
