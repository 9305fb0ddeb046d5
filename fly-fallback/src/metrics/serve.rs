//! The metrics listener: `GET /metrics` and nothing else.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

fn error(status: StatusCode, message: &str, code: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn answer(registry: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return error(
            StatusCode::NOT_FOUND,
            "This port serves only GET /metrics.",
            "not_found",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "/metrics accepts GET only.",
            "method_not_allowed",
        );
    }
    match super::render(registry) {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The metrics could not be encoded.",
            "metrics_unavailable",
        ),
    }
}

/// Serves `/metrics` on `listener` until the process ends (scrapes are short; no grace).
pub async fn serve(listener: TcpListener, registry: Registry) {
    let registry = Arc::new(registry);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A scraper sends its head at once; a client that does not is not kept.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("fly-fallback: metrics: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let registry = registry.clone();
            async move { Ok::<_, Infallible>(answer(&registry, &req)) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
