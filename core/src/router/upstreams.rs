//! What the gateway has learnt of each upstream: its latency average, the calls in flight, its
//! breaker, its ejection, its probes, and the counters the status endpoint shows. Fixed-size per
//! upstream, whatever the traffic.

use std::time::Duration;

use serde::Serialize;

use crate::config::{RoutingSettings, UpstreamSettings};
use crate::log::format_time;
use crate::routing::breaker::{Breaker, BreakerSettings, BreakerState};
use crate::routing::eject::Ejection;
use crate::routing::ewma::Ewma;
use crate::time::{Instant, UnixMillis};

/// How an attempt on an upstream went, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (content, or a client error that is the client's own).
    Healthy,
    /// It failed (refused, reset, a timeout, a 5xx, a stream that broke before content): counts
    /// towards the breaker.
    Failed,
    /// It asked to be left alone (429, a 503 with a hint, a spent quota): ejected for `hint`
    /// (else the default), growing when it happens again soon after.
    Eject(Option<Duration>),
    /// The operator's key was refused (401/403) or the quota is spent: ejected for the maximum.
    EjectMax,
}

/// An upstream's probe state as shared between instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedProbe {
    pub down: bool,
    pub failures: u32,
    pub successes: u32,
    pub last: Option<(bool, String, UnixMillis)>,
}

/// An attempt's outcome as the router records it.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub verdict: Verdict,
    /// For the status endpoint's `last_error`.
    pub kind: &'static str,
    /// From the send to the first content (or answer).
    pub latency: Option<Duration>,
    /// When the attempt was sent.
    pub started: Option<Instant>,
}

/// What an upstream's probes say.
#[derive(Debug, Clone, Default)]
struct Probe {
    down: bool,
    failures: u32,
    successes: u32,
    last: Option<(bool, String, UnixMillis)>,
}

#[derive(Debug, Default)]
pub(crate) struct UpstreamState {
    latency: Ewma,
    in_flight: u32,
    requests: u64,
    errors: u64,
    last_error: Option<(&'static str, UnixMillis)>,
    breaker: Breaker,
    ejection: Ejection,
    probe: Probe,
    /// When probes last brought it back up.
    up_since: Option<Instant>,
    /// Times it was ejected.
    ejections: u64,
}

/// Whether an upstream may be tried now, and if not, when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Availability {
    Available,
    /// Ejected or open-circuited until then.
    Later(Instant),
    /// Marked down by probes.
    Down,
}

#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    states: Vec<UpstreamState>,
}

fn breaker_settings(r: &RoutingSettings) -> BreakerSettings {
    BreakerSettings {
        failures: r.breaker_failures,
        cooldown: r.breaker_cooldown,
        max_cooldown: r.breaker_max_cooldown,
    }
}

impl Upstreams {
    fn state(&mut self, i: usize) -> Option<&mut UpstreamState> {
        if i >= self.states.len() && i < 4096 {
            self.states.resize_with(i + 1, UpstreamState::default);
        }
        self.states.get_mut(i)
    }

    fn peek(&self, i: usize) -> Option<&UpstreamState> {
        self.states.get(i)
    }

    pub(crate) fn availability(&self, i: usize, now: Instant) -> Availability {
        let Some(s) = self.peek(i) else {
            return Availability::Available;
        };
        if s.probe.down {
            return Availability::Down;
        }
        let ejected = s.ejection.until(now);
        let open = match s.breaker.state(now) {
            BreakerState::Open { until } => Some(until),
            // One request at a time while half-open.
            BreakerState::HalfOpen if !s.breaker.allows(now) => Some(now),
            _ => None,
        };
        match (ejected, open) {
            (None, None) => Availability::Available,
            (Some(a), Some(b)) => Availability::Later(if a > b { a } else { b }),
            (Some(t), None) | (None, Some(t)) => Availability::Later(t),
        }
    }

    /// Lower is better: the latency average times the load, per unit of weight. An upstream
    /// with no sample yet is scored as the best known one, so it gets tried.
    pub(crate) fn score(&self, i: usize, weight: u32, best_known: f64) -> f64 {
        let (latency, in_flight) = match self.peek(i) {
            Some(s) => (s.latency.get().unwrap_or(best_known), s.in_flight),
            None => (best_known, 0),
        };
        latency.max(0.001) * f64::from(in_flight.saturating_add(1)) / f64::from(weight.max(1))
    }

    pub(crate) fn best_latency(&self) -> f64 {
        self.states
            .iter()
            .filter_map(|s| s.latency.get())
            .fold(None, |best: Option<f64>, l| {
                Some(best.map_or(l, |b| b.min(l)))
            })
            .unwrap_or(1.0)
    }

    /// An attempt is sent to upstream `i`: it is in flight until [`Upstreams::release`]. A
    /// half-open breaker's one trial is taken by it (an attempt sent when no upstream was
    /// available goes whatever its breaker says).
    pub(crate) fn begin(&mut self, i: usize, now: Instant) {
        if let Some(s) = self.state(i) {
            let _trial = s.breaker.try_acquire(now);
            s.in_flight = s.in_flight.saturating_add(1);
            s.requests = s.requests.saturating_add(1);
        }
    }

    /// The attempt's outcome.
    pub(crate) fn verdict(
        &mut self,
        i: usize,
        report: Report,
        routing: &RoutingSettings,
        now: Instant,
        unix: UnixMillis,
    ) -> Option<Instant> {
        let Report {
            verdict,
            kind,
            latency,
            started,
        } = report;
        let s = self.state(i)?;
        let stale = matches!((started, s.up_since), (Some(a), Some(b)) if a < b);
        if let Some(l) = latency {
            if verdict == Verdict::Healthy {
                s.latency.observe(l.as_secs_f64() * 1000.0);
            }
        }
        match verdict {
            Verdict::Healthy => {
                s.breaker.on_success();
                None
            }
            Verdict::Failed => {
                s.errors = s.errors.saturating_add(1);
                s.last_error = Some((kind, unix));
                if stale {
                    s.breaker.release();
                } else {
                    s.breaker.on_failure(now, &breaker_settings(routing));
                }
                None
            }
            Verdict::Eject(hint) => {
                s.errors = s.errors.saturating_add(1);
                s.last_error = Some((kind, unix));
                // Asked to wait is not broken: the breaker's trial (if this was one) is over.
                s.breaker.release();
                s.ejections = s.ejections.saturating_add(1);
                Some(
                    s.ejection
                        .eject(now, hint, routing.eject_default, routing.eject_max),
                )
            }
            Verdict::EjectMax => {
                s.errors = s.errors.saturating_add(1);
                s.last_error = Some((kind, unix));
                s.breaker.release();
                s.ejections = s.ejections.saturating_add(1);
                Some(s.ejection.eject(
                    now,
                    Some(routing.eject_max),
                    routing.eject_default,
                    routing.eject_max,
                ))
            }
        }
    }

    /// The attempt is over (its response ended, it failed over, or the client went away).
    pub(crate) fn release(&mut self, i: usize) {
        if let Some(s) = self.state(i) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// A half-open breaker's trial that ended without a verdict.
    pub(crate) fn release_trial(&mut self, i: usize) {
        if let Some(s) = self.state(i) {
            s.breaker.release();
        }
    }

    /// A probe's result; returns true when it changed the upstream's up/down state.
    pub(crate) fn probe_result(
        &mut self,
        i: usize,
        ok: bool,
        detail: String,
        routing: &RoutingSettings,
        now: Instant,
        unix: UnixMillis,
    ) -> bool {
        let Some(s) = self.state(i) else {
            return false;
        };
        let p = &mut s.probe;
        p.last = Some((ok, detail, unix));
        if ok {
            p.failures = 0;
            p.successes = p.successes.saturating_add(1);
            if p.down && p.successes >= routing.healthy_after {
                p.down = false;
                // Back: failures of attempts sent while it was down are not held against it.
                s.up_since = Some(now);
                s.breaker.on_success();
                return true;
            }
        } else {
            p.successes = 0;
            p.failures = p.failures.saturating_add(1);
            if !p.down && p.failures >= routing.unhealthy_after {
                p.down = true;
                return true;
            }
        }
        false
    }

    /// Probe states as another instance saw them (the Worker's cron): taken as they are.
    pub(crate) fn set_probe(&mut self, i: usize, shared: SharedProbe) {
        if let Some(s) = self.state(i) {
            s.probe.down = shared.down;
            s.probe.failures = shared.failures;
            s.probe.successes = shared.successes;
            s.probe.last = shared.last;
        }
    }

    pub(crate) fn probe_of(&self, i: usize) -> SharedProbe {
        match self.peek(i) {
            Some(s) => SharedProbe {
                down: s.probe.down,
                failures: s.probe.failures,
                successes: s.probe.successes,
                last: s.probe.last.clone(),
            },
            None => SharedProbe::default(),
        }
    }

    pub(crate) fn ejections(&self, i: usize) -> u64 {
        self.peek(i).map_or(0, |s| s.ejections)
    }

    /// The status endpoint's view of upstream `i`.
    pub(crate) fn status<'a>(
        &self,
        i: usize,
        u: &'a UpstreamSettings,
        now: Instant,
        unix: UnixMillis,
    ) -> UpstreamStatus<'a> {
        let empty = UpstreamState::default();
        let s = self.peek(i).unwrap_or(&empty);
        let to_unix = |t: Instant| {
            let ahead = t.since(now);
            format_time(unix.as_millis().saturating_add(ahead.as_millis() as u64))
        };
        let ejected_until = s.ejection.until(now);
        let breaker = s.breaker.state(now);
        let state = if s.probe.down {
            "down"
        } else if matches!(breaker, BreakerState::Open { .. }) {
            "open"
        } else if matches!(breaker, BreakerState::HalfOpen) {
            "half_open"
        } else if ejected_until.is_some() {
            "ejected"
        } else {
            "healthy"
        };
        UpstreamStatus {
            name: &u.name,
            region: &u.region,
            host: &u.host,
            location: u
                .location
                .or_else(|| crate::routing::geo::fly_region(&u.region))
                .map(|(lat, lon)| Location { lat, lon }),
            state,
            ejected_until: ejected_until.map(to_unix),
            breaker_open_until: match breaker {
                BreakerState::Open { until } => Some(to_unix(until)),
                _ => None,
            },
            latency_ms: s.latency.get().map(|l| (l * 10.0).round() / 10.0),
            in_flight: s.in_flight,
            requests: s.requests,
            errors: s.errors,
            last_error: s.last_error.map(|(kind, at)| LastError {
                kind,
                at: format_time(at.as_millis()),
            }),
            last_probe: s.probe.last.as_ref().map(|(ok, detail, at)| LastProbe {
                ok: *ok,
                detail: detail.clone(),
                at: format_time(at.as_millis()),
            }),
        }
    }
}

/// One upstream in `GET /v1/gateway/status`.
#[derive(Debug, Serialize)]
pub struct UpstreamStatus<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub host: &'a str,
    /// Where it is, for the dashboard's map: its `location`, else its region's when that is a
    /// Fly.io region code.
    pub location: Option<Location>,
    /// `down` over `open` over `half_open` over `ejected` over `healthy`.
    pub state: &'static str,
    pub ejected_until: Option<String>,
    pub breaker_open_until: Option<String>,
    pub latency_ms: Option<f64>,
    pub in_flight: u32,
    pub requests: u64,
    pub errors: u64,
    pub last_error: Option<LastError>,
    pub last_probe: Option<LastProbe>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize)]
pub struct LastError {
    pub kind: &'static str,
    pub at: String,
}

#[derive(Debug, Serialize)]
pub struct LastProbe {
    pub ok: bool,
    pub detail: String,
    pub at: String,
}
