//! Accepting connections and shutting down gracefully: on SIGINT or SIGTERM the listener closes,
//! in-flight requests and streams get the grace period to finish, then the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::driver::Driver;
use crate::shared::Shared;

/// How the listener treats connections.
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
}

pub async fn serve(
    gateway: Arc<Gateway>,
    host: &str,
    port: u16,
    limits: Limits,
) -> Result<(), String> {
    let grace = limits.grace;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("invalid BIND_ADDR/PORT {host}:{port}: {e}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
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
    let driver = Arc::new(Driver::new(gateway, shared));
    eprintln!(
        "fly-fallback {} listening on http://{}",
        gateway_core::VERSION,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

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
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());

    loop {
        // At the connection bound, stop accepting: new connections wait in the listen queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        eprintln!("fly-fallback: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
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
            _ = &mut shutdown => break,
        }
    }

    drop(listener);
    eprintln!(
        "fly-fallback: shutting down, waiting up to {}s for in-flight requests",
        grace.as_secs()
    );
    tokio::select! {
        _ = graceful.shutdown() => eprintln!("fly-fallback: all connections closed"),
        _ = tokio::time::sleep(grace) => eprintln!("fly-fallback: grace period over, exiting"),
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
