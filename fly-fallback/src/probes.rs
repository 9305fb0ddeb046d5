//! Active health probes: every `routing.health.interval_secs`, `GET {base_url}/models` on each
//! upstream with its key (costs no tokens). What a result means is the core's decision
//! ([`gateway_core::Router::probe_result`]); this task only makes the calls.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::{Gateway, TransportError};

use crate::clock;
use crate::driver::{send, upstream_client};
use crate::shared::Shared;

/// A probe that takes longer than this failed (and never longer than the interval).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn(gateway: Arc<Gateway>, shared: Arc<Shared>) {
    let Some(interval) = gateway.settings().routing.health_interval else {
        return;
    };
    let client = upstream_client(gateway.settings().routing.connect_timeout);
    let timeout = PROBE_TIMEOUT.min(interval);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let mut probes = tokio::task::JoinSet::new();
            for i in 0..gateway.settings().upstreams.len() {
                let Some(attempt) = gateway.probe(i) else {
                    continue;
                };
                let client = client.clone();
                probes.spawn(async move {
                    let answer = match tokio::time::timeout(timeout, send(client, attempt)).await {
                        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(TransportError::TimedOut),
                    };
                    (i, answer)
                });
            }
            while let Some(Ok((i, answer))) = probes.join_next().await {
                let (ok, detail) = gateway.probe_verdict(answer);
                let now = clock::now();
                let unix = now.unix;
                let change =
                    shared.with(|r| r.probe_result(gateway.settings(), i, ok, detail, now));
                if let Some(c) = change {
                    let mut line = c.to_line(unix);
                    line.push('\n');
                    crate::log_sink::write(line);
                }
            }
        }
    });
}
