//! Accepting connections and shutting down gracefully: on SIGINT or SIGTERM the listeners close,
//! in-flight requests and streams get the grace period to finish, then the process exits.
//!
//! `WORKER_THREADS` threads each run a single-threaded tokio runtime with a listener of its own
//! on the same address (`SO_REUSEPORT`: the kernel spreads new connections over them). A
//! connection, its requests and their upstream calls then stay on the thread that accepted it,
//! instead of being handed between the workers of one multi-threaded runtime. What is shared
//! stays shared: the core's router, the limiter, the cache, the connection bound. Thread 0 also
//! runs the background tasks (signals, health probes, `/metrics`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::cache::Cache;
use crate::driver::Driver;
use crate::shared::Shared;

/// The listen backlog of each listener (as tokio's `TcpListener::bind`).
const BACKLOG: i32 = 1024;

/// How the listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a whole request head once it has begun it (and a new
    /// connection to begin its first): a slow client is closed.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen queue until one closes.
    pub max_connections: usize,
    pub grace: Duration,
    /// The port of `/metrics` (on the same address as the API); `None`: not served.
    pub metrics_port: Option<u16>,
    /// Threads serving connections, each with its own runtime and listener (at least 1).
    pub workers: usize,
}

/// What every worker thread shares.
struct Common {
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
    cache: Option<Arc<Cache>>,
    limits: Limits,
    /// The connection bound, over all threads.
    permits: Arc<Semaphore>,
    /// Becomes `true` at SIGINT/SIGTERM (or when a worker fails): every thread stops accepting.
    stop: watch::Sender<bool>,
    /// Worker threads still serving or draining.
    running: watch::Sender<usize>,
}

/// Marks its worker finished when dropped (also when unwinding), and stops the others if they
/// were not stopping already, so that none waits for it forever.
struct Running<'a>(&'a Common);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.stop.send_replace(true);
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves on `host:port` until SIGINT or SIGTERM, then drains; returns when every thread has.
pub fn run(gateway: Arc<Gateway>, host: &str, port: u16, limits: Limits) -> Result<(), String> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("invalid BIND_ADDR/PORT {host}:{port}: {e}"))?;
    let workers = limits.workers.max(1);
    let listeners = bind(addr, workers).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let runtimes = (0..workers)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let Some(rt0) = runtimes.first() else {
        return Err("no worker thread".into());
    };
    // Shared state, Redis clients and background tasks are created on thread 0's runtime.
    let common = rt0.block_on(start(gateway, host, limits, workers))?;
    eprintln!(
        "fly-fallback {} listening on http://{local} ({workers} worker thread{})",
        gateway_core::VERSION,
        if workers == 1 { "" } else { "s" }
    );

    let results = std::thread::scope(|scope| {
        let mut pairs = runtimes.iter().zip(listeners);
        let zeroth = pairs.next();
        let mut threads = Vec::new();
        for (i, (rt, listener)) in pairs.enumerate() {
            let c = common.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fly-worker-{}", i + 1))
                .spawn_scoped(scope, move || rt.block_on(worker(listener, &c)));
            match spawned {
                Ok(t) => threads.push(Ok(t)),
                Err(e) => {
                    // Counted as finished at once; the others stop.
                    drop(Running(&common));
                    threads.push(Err(format!("cannot start a worker thread: {e}")));
                }
            }
        }
        let mut results = Vec::with_capacity(workers);
        // Thread 0 is this one.
        if let Some((rt, listener)) = zeroth {
            results.push(rt.block_on(worker(listener, &common)));
        }
        for t in threads {
            results.push(t.and_then(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            }));
        }
        results
    });
    let mut drained = true;
    for r in results {
        drained &= r?;
    }
    if drained {
        eprintln!("fly-fallback: all connections closed");
    } else {
        eprintln!("fly-fallback: grace period over, exiting");
    }
    Ok(())
}

/// Binds `workers` listeners on `addr` (nonblocking, for tokio). One is a plain listener; more
/// share the address with `SO_REUSEPORT`.
fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if workers <= 1 {
        return Ok(vec![listen(socket(addr, false)?)?]);
    }
    // `SO_REUSEPORT` would also let another process of this user join an address already in
    // use (and take part of its connections): a socket without it claims the address first, so
    // that a taken port still fails. It also fixes the port when `PORT` is 0.
    let addr = socket(addr, false)?
        .local_addr()?
        .as_socket()
        .unwrap_or(addr);
    (0..workers).map(|_| listen(socket(addr, true)?)).collect()
}

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's `TcpListener::bind`: a restart is not refused for the last run's connections.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    if reuse_port {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "WORKER_THREADS above 1 needs SO_REUSEPORT",
        ));
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn listen(socket: socket2::Socket) -> std::io::Result<std::net::TcpListener> {
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The shared state and the background tasks (on the runtime this runs in).
async fn start(
    gateway: Arc<Gateway>,
    host: &str,
    limits: Limits,
    workers: usize,
) -> Result<Arc<Common>, String> {
    let limiter = crate::limiter::Limiter::from_env(&gateway.settings().limits);
    let shared = Arc::new(Shared::with_limiter(limiter));
    crate::probes::spawn(gateway.clone(), shared.clone());
    if let Some(metrics_port) = limits.metrics_port {
        let maddr: SocketAddr = format!("{host}:{metrics_port}")
            .parse()
            .map_err(|e| format!("invalid BIND_ADDR/METRICS_PORT {host}:{metrics_port}: {e}"))?;
        let mlistener = TcpListener::bind(maddr)
            .await
            .map_err(|e| format!("cannot listen on {maddr} (METRICS_PORT): {e}"))?;
        eprintln!(
            "fly-fallback: metrics on http://{}/metrics",
            mlistener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let registry = crate::metrics::registry(gateway.clone(), shared.clone());
        tokio::spawn(crate::metrics::serve(mlistener, registry));
    }
    let cache = Cache::from_env(&gateway.settings().cache, shared.clone());
    let common = Arc::new(Common {
        gateway,
        shared,
        cache,
        limits,
        permits: Arc::new(Semaphore::new(
            limits.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        stop: watch::Sender::new(false),
        running: watch::Sender::new(workers),
    });
    let signal = shutdown_signal();
    let c = common.clone();
    tokio::spawn(async move {
        signal.await;
        eprintln!(
            "fly-fallback: shutting down, waiting up to {}s for in-flight requests",
            c.limits.grace.as_secs()
        );
        c.stop.send_replace(true);
    });
    Ok(common)
}

/// One worker thread's life: serves until told to stop, drains, then keeps its runtime running
/// until every other thread has drained too (a task here, such as a Redis connection, may be
/// serving their requests). `Ok(false)`: the grace period ended with connections still open.
async fn worker(listener: std::net::TcpListener, common: &Common) -> Result<bool, String> {
    let served = {
        let _running = Running(common);
        serve(listener, common).await
    };
    let mut running = common.running.subscribe();
    let _ = running.wait_for(|n| *n == 0).await;
    served
}

async fn serve(listener: std::net::TcpListener, common: &Common) -> Result<bool, String> {
    let limits = common.limits;
    let listener = TcpListener::from_std(listener).map_err(|e| format!("cannot listen: {e}"))?;
    let driver = Arc::new(Driver::new(
        common.gateway.clone(),
        common.shared.clone(),
        common.cache.clone(),
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper applies no header-read timeout at all (slow clients would hold
    // their connections forever).
    // hyper's timer also runs while a keep-alive connection waits, so it cannot tell idle from
    // slow: it is only a backstop here; `watch` closes connections at the right time.
    // Header fields up to the core's limit reach the core, which answers beyond it with a 431 in
    // the OpenAI shape (hyper's own 431 has no body). Above 100, hyper parses into a heap
    // buffer of this many slots: about 12 KB per request head, a malloc among many.
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(gateway_core::headers::MAX_REQUEST_HEADER_FIELDS + 56)
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    let timeouts = crate::watch::Timeouts {
        header: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut stop = common.stop.subscribe();
    let mut shutdown = std::pin::pin!(async move {
        let _ = stop.wait_for(|s| *s).await;
    });

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("fly-fallback: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the connection bound, this connection waits unread (its timers not started) until
        // another closes, and this thread accepts no other meanwhile: later ones wait in the
        // listen queue. The wait is first come, first served over all threads. (A thread that
        // took a permit before accepting could hold it while connections wait on another
        // thread's listener.)
        let permit = match common.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = common.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = &mut shutdown => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let driver = driver.clone();
        let watch = crate::watch::Watch::new(timeouts);
        let io = TokioIo::new(crate::watch::WatchedIo::new(stream, watch.clone()));
        let requests = watch.clone();
        let service = service_fn(move |req| {
            let driver = driver.clone();
            let busy = requests.request();
            async move {
                let mut response = driver.handle(req).await;
                response.body_mut().hold(busy);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                let deadline = watch.deadline();
                let expiry = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = watch.changed() => {}
                    _ = expiry => {
                        // Dropping the connection closes it: nothing is in flight.
                        if watch.deadline().is_some_and(|d| d <= tokio::time::Instant::now()) {
                            break;
                        }
                    }
                }
            }
            drop(permit);
        });
    }

    drop(listener);
    Ok(tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(limits.grace) => false,
    })
}

/// Resolves at SIGINT or SIGTERM. The handlers are installed now, not when first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        let recv = |s: Option<Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        async move {
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn workers_share_one_port_and_a_taken_port_still_fails() {
        let group = bind(loopback(), 3).unwrap_or_else(|e| panic!("bind: {e}"));
        let ports: Vec<u16> = group
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(
            ports[0] != 0 && ports.iter().all(|&p| p == ports[0]),
            "{ports:?}"
        );
        let taken = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        // Another gateway on the same port must not join the group (and take part of its
        // connections): it fails, with one worker or several.
        for workers in [1, 2] {
            let err = bind(taken, workers).err().map(|e| e.kind());
            assert_eq!(
                err,
                Some(std::io::ErrorKind::AddrInUse),
                "{workers} workers"
            );
        }
        // Nor can a single listener's port be joined.
        let single = bind(loopback(), 1).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = single[0].local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            bind(addr, 2).err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn each_worker_listener_accepts() {
        let group = bind(loopback(), 2).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = group[0].local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Connections land on one listener or the other; between them, every one is accepted.
        let clients: Vec<_> = (0..16)
            .map(|_| std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut accepted = 0;
        while accepted < clients.len() && std::time::Instant::now() < deadline {
            for l in &group {
                if l.accept().is_ok() {
                    accepted += 1;
                }
            }
        }
        assert_eq!(accepted, clients.len());
    }
}
