//! Accepting connections and shutting down gracefully: on SIGINT or SIGTERM the listener closes,
//! in-flight requests and streams get the grace period to finish, then the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::driver::Driver;
use crate::shared::Shared;

pub async fn serve(
    gateway: Arc<Gateway>,
    host: &str,
    port: u16,
    grace: Duration,
) -> Result<(), String> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("invalid BIND_ADDR/PORT {host}:{port}: {e}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let driver = Arc::new(Driver::new(gateway, Arc::new(Shared::default())));
    eprintln!(
        "fly-fallback {} listening on http://{}",
        gateway_core::VERSION,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());

    loop {
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
                let service = service_fn(move |req| {
                    let driver = driver.clone();
                    async move { Ok::<_, std::convert::Infallible>(driver.handle(req).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
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
