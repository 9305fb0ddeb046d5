//! The Redis store against the reference (`MemoryCounters`), on a throwaway `redis-server`
//! (skipped, with a message, where redis-server is not installed; `scripts/lib/env.sh`
//! installs it).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_core::limits::{Adjust, Check, MemoryCounters, Op, Reply, MAX_COUNT};

use super::redis_store::{SCRIPT, SCRIPT_SHA1};
use super::RedisCounters;

const TIMEOUT: Duration = Duration::from_secs(2);

/// A redis-server on a free loopback port, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts a redis-server, or `None` (with a message) when it is not installed.
fn start_redis(test: &str) -> Option<Server> {
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED {test}: redis-server is not installed (Debian: apt-get install -y \
                 redis-server; scripts/lib/env.sh installs it)"
            );
            return None;
        }
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let server = Server {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port} within 10s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

async fn direct(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url.as_str())
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test's redis-server")
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<i64> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

fn counters(server: &Server) -> RedisCounters {
    RedisCounters::connect(&server.url, TIMEOUT).expect("a client")
}

fn check(keys: &[&str], limit: i64, add: i64, ttl_ms: u64) -> Check {
    Check {
        sum: keys.iter().map(|k| k.to_string()).collect(),
        limit,
        add,
        ttl_ms,
    }
}

fn adjust(key: &str, delta: i64, ttl_ms: u64, only_existing: bool) -> Adjust {
    Adjust {
        key: key.into(),
        delta,
        ttl_ms,
        only_existing,
    }
}

fn op(checks: Vec<Check>, adjust: Vec<Adjust>) -> Op {
    Op { checks, adjust }
}

fn unix_ms() -> u64 {
    super::unix_ms()
}

#[tokio::test]
async fn the_scripts_sha1_is_the_one_redis_computes() {
    let Some(server) = start_redis("the_scripts_sha1_is_the_one_redis_computes") else {
        return;
    };
    let mut conn = direct(&server).await;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(&mut conn)
        .await
        .expect("SCRIPT LOAD");
    assert_eq!(
        sha, SCRIPT_SHA1,
        "apply.lua changed: set SCRIPT_SHA1 to its SHA-1 (sha1sum apply.lua)"
    );
}

/// An amount for the random ops: mostly small, sometimes zero, negative or near 2^53.
fn amount(rng: &mut fastrand::Rng) -> i64 {
    match rng.u8(0..100) {
        0..=19 => 0,
        20..=64 => rng.i64(1..=5),
        65..=79 => rng.i64(-4..=-1),
        80..=89 => MAX_COUNT - rng.i64(0..=3),
        _ => -MAX_COUNT + rng.i64(0..=3),
    }
}

fn limit(rng: &mut fastrand::Rng) -> i64 {
    match rng.u8(0..100) {
        0..=59 => rng.i64(-3..=25),
        60..=79 => MAX_COUNT - rng.i64(0..=2),
        80..=89 => -MAX_COUNT + rng.i64(0..=2),
        _ => rng.i64(-MAX_COUNT..=MAX_COUNT),
    }
}

fn random_op(rng: &mut fastrand::Rng, names: &[String]) -> Op {
    let name = |rng: &mut fastrand::Rng| names[rng.usize(..names.len())].clone();
    let ttl = |rng: &mut fastrand::Rng| rng.u64(120_000..=300_000);
    let mut op = Op::default();
    for _ in 0..rng.usize(0..=3) {
        // Names may repeat within a sum (each mention counts), as the reference allows.
        let sum = (0..rng.usize(1..=4)).map(|_| name(rng)).collect();
        op.checks.push(Check {
            sum,
            limit: limit(rng),
            add: amount(rng),
            ttl_ms: ttl(rng),
        });
    }
    for _ in 0..rng.usize(0..=2) {
        op.adjust.push(Adjust {
            key: name(rng),
            delta: amount(rng),
            ttl_ms: ttl(rng),
            only_existing: rng.bool(),
        });
    }
    // Now and then an op a store must refuse.
    match rng.u8(0..100) {
        0 => op.checks.push(check(&[], 1, 1, 1000)),
        1 => op.checks.push(check(&["x"], 10, MAX_COUNT + 1, 1000)),
        2 => op.adjust.push(adjust("", 1, 1000, false)),
        3 => op.adjust.push(adjust(&names[0], i64::MIN, 1000, false)),
        _ => {}
    }
    op
}

/// Random op sequences (fixed seeds): the Redis store's every reply, and every counter at the
/// end, are the reference's.
#[tokio::test]
async fn redis_replies_are_memory_counters_replies_on_random_ops() {
    let Some(server) = start_redis("redis_replies_are_memory_counters_replies_on_random_ops")
    else {
        return;
    };
    let store = counters(&server);
    let mut conn = direct(&server).await;
    let now = unix_ms();
    let (mut granted, mut refused) = (0, 0);
    for seed in [1u64, 2, 3, 0x5eed] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let names: Vec<String> = (0..5).map(|i| format!("{{prop-{seed}}}:k{i}")).collect();
        let mut memory = MemoryCounters::new();
        for step in 0..500 {
            let op = random_op(&mut rng, &names);
            let expected = memory.apply(&op, now);
            let got = store.apply(&op).await;
            assert_eq!(
                got,
                Ok(expected.clone()),
                "seed {seed}, step {step}: {op:?}"
            );
            if expected.granted {
                granted += 1;
            } else {
                refused += 1;
            }
        }
        for n in &names {
            let value = get(&mut conn, n).await;
            let reference = memory.value(n, now);
            assert_eq!(
                value.unwrap_or(0),
                reference,
                "seed {seed}: counter {n} at the end"
            );
            if value.is_some() {
                assert!(pttl(&mut conn, n).await > 0, "{n} has an expiry");
            }
        }
    }
    // The sequences exercise both outcomes.
    assert!(granted > 300 && refused > 300, "{granted} / {refused}");
}

#[tokio::test]
async fn counters_expire_at_their_ttl_from_creation() {
    let Some(server) = start_redis("counters_expire_at_their_ttl_from_creation") else {
        return;
    };
    let store = counters(&server);
    let mut conn = direct(&server).await;
    let reserve = op(vec![check(&["{e}:r"], 1, 1, 400)], vec![]);
    assert!(store.apply(&reserve).await.expect("a reply").granted);
    let ttl = pttl(&mut conn, "{e}:r").await;
    assert!((1..=400).contains(&ttl), "PTTL {ttl}");
    // An addition to a live counter keeps its expiry.
    let more = op(vec![], vec![adjust("{e}:r", 5, 1_000_000, false)]);
    assert!(store.apply(&more).await.expect("a reply").granted);
    assert_eq!(get(&mut conn, "{e}:r").await, Some(6));
    assert!(pttl(&mut conn, "{e}:r").await <= 400);
    let refused = store.apply(&reserve).await.expect("a reply");
    assert_eq!(
        refused,
        Reply {
            granted: false,
            totals: vec![6]
        }
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&mut conn, "{e}:r").await, None, "expired");
    let again = store.apply(&reserve).await.expect("a reply");
    assert_eq!(
        again,
        Reply {
            granted: true,
            totals: vec![1]
        },
        "a new counter after expiry"
    );
}

#[tokio::test]
async fn only_existing_adjustments_skip_absent_counters() {
    let Some(server) = start_redis("only_existing_adjustments_skip_absent_counters") else {
        return;
    };
    let store = counters(&server);
    let mut conn = direct(&server).await;
    let settle =
        |key: &str, only_existing| op(vec![], vec![adjust(key, -30, 60_000, only_existing)]);
    // Absent: skipped when only_existing, created otherwise.
    assert!(
        store
            .apply(&settle("{o}:a", true))
            .await
            .expect("a reply")
            .granted
    );
    assert_eq!(get(&mut conn, "{o}:a").await, None);
    assert!(
        store
            .apply(&settle("{o}:b", false))
            .await
            .expect("a reply")
            .granted
    );
    assert_eq!(get(&mut conn, "{o}:b").await, Some(-30));
    assert!(pttl(&mut conn, "{o}:b").await > 0);
    // Present: changed either way.
    let reserve = op(vec![check(&["{o}:a"], 100, 40, 60_000)], vec![]);
    assert!(store.apply(&reserve).await.expect("a reply").granted);
    assert!(
        store
            .apply(&settle("{o}:a", true))
            .await
            .expect("a reply")
            .granted
    );
    assert_eq!(get(&mut conn, "{o}:a").await, Some(10));
    // A reservation that expired is not brought back by its settlement.
    let short = op(vec![check(&["{o}:c"], 100, 30, 100)], vec![]);
    assert!(store.apply(&short).await.expect("a reply").granted);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        store
            .apply(&settle("{o}:c", true))
            .await
            .expect("a reply")
            .granted
    );
    assert_eq!(get(&mut conn, "{o}:c").await, None);
}

#[tokio::test]
async fn a_zero_add_check_never_fails_and_never_creates() {
    let Some(server) = start_redis("a_zero_add_check_never_fails_and_never_creates") else {
        return;
    };
    let store = counters(&server);
    let mut conn = direct(&server).await;
    let peek = op(vec![check(&["{z}:a", "{z}:b"], -5, 0, 60_000)], vec![]);
    let r = store.apply(&peek).await.expect("a reply");
    assert_eq!(
        r,
        Reply {
            granted: true,
            totals: vec![0]
        }
    );
    let dbsize: i64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    assert_eq!(dbsize, 0);
}

/// 100 concurrent +1 reservations against a limit of 10, from two clients (two machines):
/// exactly 10 are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_from_two_clients_grant_exactly_the_limit() {
    let Some(server) =
        start_redis("concurrent_reservations_from_two_clients_grant_exactly_the_limit")
    else {
        return;
    };
    let clients = [Arc::new(counters(&server)), Arc::new(counters(&server))];
    let reserve = op(vec![check(&["{c}:r"], 10, 1, 60_000)], vec![]);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = clients[i % 2].clone();
            let reserve = reserve.clone();
            tokio::spawn(async move { client.apply(&reserve).await })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        let reply = t.await.expect("the task").expect("a reply");
        if reply.granted {
            granted += 1;
            assert!((1..=10).contains(&reply.totals[0]), "{reply:?}");
        } else {
            assert_eq!(reply.totals, [10]);
        }
    }
    assert_eq!(granted, 10);
    let mut conn = direct(&server).await;
    assert_eq!(get(&mut conn, "{c}:r").await, Some(10));
}

/// The first call after the server lost the script (a restart, `SCRIPT FLUSH`) sends it again.
#[tokio::test]
async fn a_server_without_the_script_gets_it_again() {
    let Some(server) = start_redis("a_server_without_the_script_gets_it_again") else {
        return;
    };
    let store = counters(&server);
    let mut conn = direct(&server).await;
    let reserve = op(vec![check(&["{s}:r"], 10, 1, 60_000)], vec![]);
    assert!(store.apply(&reserve).await.expect("a reply").granted);
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    let r = store.apply(&reserve).await.expect("a reply");
    assert_eq!(r.totals, [2]);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(SCRIPT_SHA1)
        .query_async(&mut conn)
        .await
        .expect("SCRIPT EXISTS");
    assert_eq!(exists, [1], "EVAL cached it for the next EVALSHA");
}

#[tokio::test]
async fn a_dead_redis_is_an_error_quickly_and_a_malformed_op_never_calls() {
    // Port 1 on loopback: nothing listens there.
    let store =
        RedisCounters::connect("redis://127.0.0.1:1/", Duration::from_secs(1)).expect("a client");
    let reserve = op(vec![check(&["{d}:r"], 10, 1, 60_000)], vec![]);
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(store.apply(&reserve).await, Err(()));
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
    let malformed = op(vec![check(&["{d}:r"], 10, MAX_COUNT + 1, 60_000)], vec![]);
    assert_eq!(
        store.apply(&malformed).await,
        Ok(Reply {
            granted: false,
            totals: vec![0]
        }),
        "refused before any call"
    );
}

/// A hung Redis (it accepts connections and never answers) is an error after the bound.
#[tokio::test]
async fn a_silent_redis_is_an_error_after_the_timeout() {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a listener");
    let port = listener.local_addr().expect("its address").port();
    let store = RedisCounters::connect(
        &format!("redis://127.0.0.1:{port}/"),
        Duration::from_millis(300),
    )
    .expect("a client");
    let reserve = op(vec![check(&["{h}:r"], 10, 1, 60_000)], vec![]);
    let t = Instant::now();
    assert_eq!(store.apply(&reserve).await, Err(()));
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    drop(listener);
}

/// One limiter call's latency on loopback: p50 and p99 of 1000 sequential calls (printed; run
/// with `--nocapture` to see them).
#[tokio::test]
async fn one_call_latency_on_loopback() {
    let Some(server) = start_redis("one_call_latency_on_loopback") else {
        return;
    };
    let store = counters(&server);
    let reserve = op(
        vec![
            check(&["{l}:r:1"], 1_000_000, 1, 60_000),
            check(&["{l}:t:1"], 1_000_000_000, 500, 60_000),
        ],
        vec![],
    );
    assert!(store.apply(&reserve).await.expect("a reply").granted);
    let mut times = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let r = store.apply(&reserve).await.expect("a reply");
        times.push(t.elapsed());
        assert!(r.granted);
    }
    times.sort();
    let (p50, p99) = (times[499], times[989]);
    eprintln!("Redis limiter call on loopback, 1000 sequential calls: p50 {p50:?}, p99 {p99:?}");
    assert!(p50 < Duration::from_millis(20), "p50 {p50:?}");
}
