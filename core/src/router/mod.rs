//! State shared across requests, held by the runtime (behind a mutex natively, one per isolate on
//! the Worker) and consulted by each [`crate::Exchange`] with the time passed in.
//!
//! Today it holds the response cache's shared state:
//! - **flights**: identical concurrent misses make one upstream call. The first miss for a key
//!   leads; later ones wait for its answer. A finished flight lingers briefly so a request that
//!   arrives just after it (before the store has the entry) is answered from it instead of
//!   starting a second call. A leader relaying a recorded event stream makes its flight *live*:
//!   waiting streams follow it as it is relayed ([`Live`]) instead of waiting for its end.
//! - **store health**: after a failure of the shared store (Redis, Workers KV), the store is left
//!   alone for a back-off period, so a dead store costs requests nothing.
//!
//! - **upstreams**: each upstream's latency average, calls in flight, breaker, ejection and
//!   probe results (see [`order`] for how they decide the order of attempts). Per process on
//!   `fly-fallback`, per isolate on the Worker (probe results are shared through KV there).
//!
//! # What the runtime does
//! - Calls the exchange's methods that take `&mut Router` while holding it (briefly: no IO).
//! - After any such call, checks [`Router::take_wakeup`]: when true, wakes every request parked
//!   on [`crate::Action::AwaitFlight`] (they re-check their flight, or the stream they follow;
//!   spurious wakes are harmless).
//! - Reports the outcome of shared-store calls with [`Router::store_result`].

mod flights;
mod order;
mod store;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheEntry, CacheKey};
use crate::time::Instant;

pub use flights::{FlightId, FlightState, Join, Live};
pub use order::{OrderRequest, SAME_PLACE_KM};
pub use store::StoreChange;
pub use upstreams::{LastError, LastProbe, Report, UpstreamStatus, Verdict};

use crate::config::Settings;
use crate::time::UnixMillis;
use upstreams::Upstreams;

use flights::Flights;
use store::StoreHealth;

/// How long a finished flight stays visible to late arrivals and slow waiters.
pub const FLIGHT_LINGER: Duration = Duration::from_secs(2);
/// How long the shared store is left alone after a failure.
pub const STORE_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Router {
    flights: Flights,
    store: StoreHealth,
    /// The limiter's store (Redis, Durable Objects): left alone for a while after a failure,
    /// so a silent store does not add its timeout to every request.
    limiter: StoreHealth,
    upstreams: Upstreams,
    /// What this instance has served.
    tally: crate::metrics::Tally,
    /// When probe results shared by another instance were last read (the Worker's KV).
    probes_read: Option<Instant>,
    wakeup: bool,
}

/// How often an isolate re-reads the probe results its cron shared.
pub const PROBE_SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Probe results as shared between instances (the Worker's cron writes them to KV).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProbeSnapshot {
    pub upstreams: Vec<ProbeEntry>,
}

impl ProbeSnapshot {
    /// The snapshot as JSON, as it is shared. (De)serialized here rather than by the Worker so
    /// that the Worker's bundle holds one copy of serde_json's code.
    pub fn to_json(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    /// A shared snapshot; `None` when `bytes` is not one.
    pub fn from_json(bytes: &[u8]) -> Option<ProbeSnapshot> {
        serde_json::from_slice(bytes).ok()
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProbeEntry {
    pub name: String,
    pub down: bool,
    /// Consecutive failed (or good) probes so far.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub successes: u32,
    pub ok: Option<bool>,
    pub detail: Option<String>,
    pub at_ms: Option<u64>,
}

/// A change of an upstream's probe state, worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeChange {
    pub upstream: String,
    pub down: bool,
    pub detail: String,
}

impl ProbeChange {
    /// The log line for it: one JSON object, like the request lines.
    pub fn to_line(&self, at: UnixMillis) -> String {
        let line = serde_json::json!({
            "time": crate::log::format_time(at.as_millis()),
            "event": if self.down { "upstream_down" } else { "upstream_up" },
            "upstream": self.upstream,
            "detail": self.detail,
        });
        // The same text as `line.to_string()`, through the serializer every other JSON goes
        // through (`Value`'s `Display` would add two more copies of it to the Worker).
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// `GET /v1/gateway/status`.
#[derive(Debug, serde::Serialize)]
pub struct Status<'a> {
    pub object: &'static str,
    pub runtime: &'static str,
    pub region: Option<&'a str>,
    pub time: String,
    pub upstreams: Vec<UpstreamStatus<'a>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// A request's identical miss: lead a flight, wait for the current one, or take its answer.
    /// `max_wait` bounds how long a leader may keep others waiting.
    pub fn join(&mut self, key: CacheKey, now: Instant, max_wait: Duration) -> Join {
        self.flights.join(key, now, max_wait)
    }

    /// The state of the flight a waiter waits on.
    pub fn flight(&self, key: &CacheKey, id: FlightId, now: Instant) -> FlightState {
        self.flights.state(key, id, now)
    }

    /// A leader's flight is over: `entry` is its answer to share (`None`: nothing to share, the
    /// waiters call the upstream themselves).
    pub fn land(
        &mut self,
        key: CacheKey,
        id: FlightId,
        entry: Option<Arc<CacheEntry>>,
        now: Instant,
    ) {
        if self.flights.land(key, id, entry, now.plus(FLIGHT_LINGER)) {
            self.wakeup = true;
        }
    }

    /// A leader's stream can be followed: wakes its waiters.
    pub fn go_live(&mut self, key: &CacheKey, id: FlightId, live: Arc<Live>) {
        if self.flights.go_live(key, id, live) {
            self.wakeup = true;
        }
    }

    /// A followed stream has news (a chunk, its end): wakes the parked requests.
    pub fn publish(&mut self) {
        self.wakeup = true;
    }

    /// Whether parked waiters must be woken (and clears the flag).
    pub fn take_wakeup(&mut self) -> bool {
        std::mem::take(&mut self.wakeup)
    }

    /// Number of flights tracked (in progress or lingering).
    pub fn flights_len(&self) -> usize {
        self.flights.len()
    }

    /// Whether the shared store may be used now.
    pub fn store_usable(&self, now: Instant) -> bool {
        self.store.usable(now)
    }

    /// The order in which to try the upstreams for a request (indices into
    /// `settings.upstreams`); see [`order`].
    pub fn order(&self, settings: &Settings, req: &OrderRequest<'_>) -> Vec<usize> {
        order::order(&settings.upstreams, &self.upstreams, req)
    }

    /// Whether upstream `i` may be tried now (not ejected, open-circuited or down).
    pub fn available(&self, i: usize, now: Instant) -> bool {
        self.upstreams.availability(i, now) == upstreams::Availability::Available
    }

    /// An attempt is sent to upstream `i` (in flight until [`Router::release`]).
    pub fn begin(&mut self, i: usize, now: Instant) {
        self.upstreams.begin(i, now);
    }

    /// An attempt's verdict; returns the end of the ejection it caused, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn verdict(
        &mut self,
        settings: &Settings,
        i: usize,
        verdict: Verdict,
        kind: &'static str,
        latency: Option<Duration>,
        now: Instant,
        unix: UnixMillis,
    ) -> Option<Instant> {
        let report = Report {
            verdict,
            kind,
            latency,
            started: None,
        };
        self.report(settings, i, report, now, unix)
    }

    /// An attempt's verdict, knowing when it was sent: a failure of an attempt sent before the
    /// upstream last came back (probes) says nothing of it now, and does not count towards its
    /// breaker. Returns the end of the ejection it caused, if any.
    pub fn report(
        &mut self,
        settings: &Settings,
        i: usize,
        report: Report,
        now: Instant,
        unix: UnixMillis,
    ) -> Option<Instant> {
        self.upstreams
            .verdict(i, report, &settings.routing, now, unix)
    }

    /// The attempt on upstream `i` is over.
    pub fn release(&mut self, i: usize) {
        self.upstreams.release(i);
    }

    /// An attempt ended with no verdict on the upstream (the client went away first): a
    /// half-open breaker lets another trial through.
    pub fn release_trial(&mut self, i: usize) {
        self.upstreams.release_trial(i);
    }

    /// When the soonest of these upstreams becomes available again, if any is waited on.
    pub fn soonest_available(&self, indices: &[usize], now: Instant) -> Option<Instant> {
        indices
            .iter()
            .filter_map(|&i| match self.upstreams.availability(i, now) {
                upstreams::Availability::Later(t) if t > now => Some(t),
                _ => None,
            })
            .min()
    }

    /// A probe's result for upstream `i` (`ok`: it answered 2xx). Returns a change of its
    /// up/down state, worth one log line.
    pub fn probe_result(
        &mut self,
        settings: &Settings,
        i: usize,
        ok: bool,
        detail: String,
        now: crate::time::Now,
    ) -> Option<ProbeChange> {
        let changed = self.upstreams.probe_result(
            i,
            ok,
            detail.clone(),
            &settings.routing,
            now.instant,
            now.unix,
        );
        let u = settings.upstreams.get(i)?;
        changed.then(|| ProbeChange {
            upstream: u.name.clone(),
            down: !ok,
            detail,
        })
    }

    /// The probe results to share with other instances.
    pub fn probe_snapshot(&self, settings: &Settings) -> ProbeSnapshot {
        ProbeSnapshot {
            upstreams: settings
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let p = self.upstreams.probe_of(i);
                    let last = p.last.as_ref();
                    ProbeEntry {
                        name: u.name.clone(),
                        down: p.down,
                        failures: p.failures,
                        successes: p.successes,
                        ok: last.map(|l| l.0),
                        detail: last.map(|l| l.1.clone()),
                        at_ms: last.map(|l| l.2.as_millis()),
                    }
                })
                .collect(),
        }
    }

    /// Whether this instance should re-read the shared probe results now (and notes that it
    /// does).
    pub fn probe_snapshot_due(&mut self, now: Instant) -> bool {
        let due = self
            .probes_read
            .is_none_or(|t| now.since(t) >= PROBE_SNAPSHOT_EVERY);
        if due {
            self.probes_read = Some(now);
        }
        due
    }

    /// Takes shared probe results (entries are matched by upstream name).
    pub fn apply_probe_snapshot(&mut self, settings: &Settings, snapshot: &ProbeSnapshot) {
        for e in &snapshot.upstreams {
            if let Some(i) = settings.upstreams.iter().position(|u| u.name == e.name) {
                let last = match (e.ok, &e.detail, e.at_ms) {
                    (Some(ok), Some(d), Some(at)) => Some((ok, d.clone(), UnixMillis(at))),
                    _ => None,
                };
                self.upstreams.set_probe(
                    i,
                    upstreams::SharedProbe {
                        down: e.down,
                        failures: e.failures,
                        successes: e.successes,
                        last,
                    },
                );
            }
        }
    }

    /// `GET /v1/gateway/status`.
    pub fn status<'a>(
        &self,
        settings: &'a Settings,
        runtime: &'static str,
        now: Instant,
        unix: UnixMillis,
    ) -> Status<'a> {
        Status {
            object: "gateway.status",
            runtime,
            region: settings.region.as_deref(),
            time: crate::log::format_time(unix.as_millis()),
            upstreams: settings
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| self.upstreams.status(i, u, now, unix))
                .collect(),
        }
    }

    /// `GET /v1/gateway/summary`.
    pub fn summary<'a>(
        &'a self,
        settings: &'a Settings,
        runtime: &'static str,
        viewer: crate::metrics::Viewer<'a>,
        unix: UnixMillis,
    ) -> crate::metrics::Summary<'a> {
        let mut s = self.tally.summary(settings, viewer, unix);
        s.runtime = runtime;
        if runtime == "worker" {
            s.scope = "isolate";
        }
        for a in &mut s.attempts {
            if let Some(i) = settings.upstreams.iter().position(|u| u.name == a.upstream) {
                a.ejections = self.upstreams.ejections(i);
            }
        }
        s
    }

    /// What this instance has served (for a runtime's `/metrics`).
    pub fn tally(&self) -> &crate::metrics::Tally {
        &self.tally
    }

    /// Counts a finished request (the exchange does it when it gives its log record).
    pub(crate) fn count(
        &mut self,
        log: &crate::log::RequestLog,
        settings: &Settings,
        unix: UnixMillis,
    ) {
        self.tally.record(log, settings, unix);
    }

    /// Times upstream `i` was ejected (asked to be left alone, or its key refused).
    pub fn ejections(&self, i: usize) -> u64 {
        self.upstreams.ejections(i)
    }

    /// The outcome of a shared-store call. Returns a change worth one log line (down, back up).
    pub fn store_result(&mut self, ok: bool, now: Instant) -> Option<StoreChange> {
        self.store.result(ok, now, STORE_BACKOFF)
    }

    /// Whether the limiter's store may be called now.
    pub fn limiter_usable(&self, now: Instant) -> bool {
        self.limiter.usable(now)
    }

    /// The outcome of a limiter call (the exchange reports it).
    pub(crate) fn limiter_result(&mut self, ok: bool, now: Instant) -> Option<StoreChange> {
        self.limiter.result(ok, now, STORE_BACKOFF)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod order_tests;
