//! The result of a run, row by row: what the table and the chart show, and `--json` prints
//! whole (every sample included).

use serde::Serialize;

use super::args::Options;
use super::measure::Sample;
use super::run::{GatewayInfo, Target};
use super::stats::{summarize, Summary};

#[derive(Debug, Serialize)]
pub struct Report {
    pub gateway: GatewayInfo,
    pub settings: Settings,
    /// Calls made (planned calls less those an interruption left out).
    pub calls: u64,
    pub calls_planned: u64,
    /// Ctrl-C stopped the run; the rows hold the calls made until then.
    pub interrupted: bool,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub calls_per_row: u32,
    pub modes: Vec<&'static str>,
    pub prompt: String,
    /// 0: none sent.
    pub max_tokens: u32,
    pub timeout_secs: u64,
    pub concurrency: usize,
    /// How `p50` and `p90` are taken.
    pub percentiles: &'static str,
}

impl Settings {
    pub fn of(o: &Options) -> Settings {
        Settings {
            calls_per_row: o.calls,
            modes: o.modes.iter().map(|m| m.as_str()).collect(),
            prompt: o.prompt.clone(),
            max_tokens: o.max_tokens,
            timeout_secs: o.timeout.as_secs(),
            concurrency: o.concurrency,
            percentiles: "nearest-rank over successful calls",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub model: String,
    /// The pin sent as `x-gateway-region`; `null`: none (the gateway's own choice).
    pub region: Option<String>,
    pub mode: &'static str,
    pub calls: u32,
    pub ok: u32,
    pub errors: u32,
    /// Over the successful calls; `null` when there were none.
    pub ttft_ms: Option<Summary>,
    pub total_ms: Option<Summary>,
    /// Who answered (`x-gateway-upstream`), most calls first; failed calls included when the
    /// gateway named an upstream.
    pub served_by: Vec<Served>,
    /// Calls answered by an upstream that the pin does not name (failover, or an unknown pin).
    pub off_pin: u32,
    /// Calls answered from the gateway's cache (`x-gateway-cache: HIT`): none expected.
    pub cache_hits: u32,
    pub errors_by_kind: Vec<ErrorCount>,
    pub samples: Vec<SampleOut>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Served {
    pub upstream: String,
    /// The upstream's region, from the gateway's status.
    pub region: Option<String>,
    pub calls: u32,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorCount {
    pub kind: String,
    pub count: u32,
    /// The first call's detail.
    pub example: String,
}

#[derive(Debug, Serialize)]
pub struct SampleOut {
    pub ok: bool,
    pub status: Option<u16>,
    pub head_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub upstream: Option<String>,
    pub attempts: Option<u32>,
    pub cache: Option<String>,
    /// `server-timing`: the gateway's own time and its wait on upstreams, as of the head.
    pub gateway_ms: Option<f64>,
    pub upstream_ms: Option<f64>,
    pub error: Option<ErrorOut>,
}

#[derive(Debug, Serialize)]
pub struct ErrorOut {
    pub kind: String,
    pub detail: String,
}

fn ms(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_micros() as f64 / 1000.0)
}

/// A row from its target and samples.
pub fn row(target: &Target, samples: &[Sample], info: &GatewayInfo) -> Row {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok()).collect();
    let ttft: Vec<_> = ok.iter().filter_map(|s| s.ttft).collect();
    let total: Vec<_> = ok.iter().filter_map(|s| s.total).collect();

    let mut served: Vec<Served> = Vec::new();
    for name in samples.iter().filter_map(|s| s.upstream.as_deref()) {
        match served.iter_mut().find(|x| x.upstream == name) {
            Some(x) => x.calls += 1,
            None => served.push(Served {
                upstream: name.to_string(),
                region: info.region_of(name).map(str::to_string),
                calls: 1,
            }),
        }
    }
    // Most calls first; ties keep the order of first answer.
    served.sort_by_key(|s| std::cmp::Reverse(s.calls));

    let mut errors: Vec<ErrorCount> = Vec::new();
    for f in samples.iter().filter_map(|s| s.error.as_ref()) {
        match errors.iter_mut().find(|e| e.kind == f.kind) {
            Some(e) => e.count += 1,
            None => errors.push(ErrorCount {
                kind: f.kind.clone(),
                count: 1,
                example: f.detail.clone(),
            }),
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.count));

    let off_pin = match &target.region {
        Some(pin) => samples
            .iter()
            .filter_map(|s| s.upstream.as_deref())
            .filter(|u| !info.matches_pin(u, pin))
            .count() as u32,
        None => 0,
    };

    Row {
        model: target.model.clone(),
        region: target.region.clone(),
        mode: target.mode.as_str(),
        calls: samples.len() as u32,
        ok: ok.len() as u32,
        errors: (samples.len() - ok.len()) as u32,
        ttft_ms: summarize(&ttft),
        total_ms: summarize(&total),
        served_by: served,
        off_pin,
        cache_hits: samples
            .iter()
            .filter(|s| {
                s.cache
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case("hit"))
            })
            .count() as u32,
        errors_by_kind: errors,
        samples: samples
            .iter()
            .map(|s| SampleOut {
                ok: s.ok(),
                status: s.status,
                head_ms: ms(s.head),
                ttft_ms: ms(s.ttft),
                total_ms: ms(s.total),
                upstream: s.upstream.clone(),
                attempts: s.attempts,
                cache: s.cache.clone(),
                gateway_ms: s.gateway_ms,
                upstream_ms: s.upstream_ms,
                error: s.error.as_ref().map(|f| ErrorOut {
                    kind: f.kind.clone(),
                    detail: f.detail.clone(),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::probe::args::Mode;
    use crate::probe::measure::Failure;
    use crate::probe::run::Upstream;

    fn ok(ttft: u64, total: u64, upstream: &str) -> Sample {
        Sample {
            status: Some(200),
            ttft: Some(Duration::from_millis(ttft)),
            total: Some(Duration::from_millis(total)),
            upstream: Some(upstream.into()),
            cache: Some("BYPASS".into()),
            ..Sample::default()
        }
    }

    #[test]
    fn failures_are_counted_and_left_out_of_the_figures() {
        let info = GatewayInfo {
            upstreams: Some(vec![Upstream {
                name: "eu-1".into(),
                region: "eu".into(),
                state: "healthy".into(),
            }]),
            ..GatewayInfo::default()
        };
        let target = Target {
            model: "m".into(),
            region: Some("eu".into()),
            mode: Mode::Stream,
        };
        let mut failed = ok(1, 9_999, "us-1");
        failed.status = Some(503);
        failed.error = Some(Failure {
            kind: "http_503".into(),
            detail: "busy".into(),
        });
        let samples = [
            ok(10, 100, "eu-1"),
            failed,
            ok(30, 300, "eu-1"),
            ok(20, 200, "eu-1"),
        ];
        let r = row(&target, &samples, &info);
        assert_eq!((r.calls, r.ok, r.errors), (4, 3, 1));
        let t = r.ttft_ms.unwrap();
        assert_eq!((t.p50, t.p90, t.min, t.max), (20.0, 30.0, 10.0, 30.0));
        assert_eq!(r.total_ms.unwrap().max, 300.0);
        assert_eq!(
            r.served_by,
            [
                Served {
                    upstream: "eu-1".into(),
                    region: Some("eu".into()),
                    calls: 3
                },
                Served {
                    upstream: "us-1".into(),
                    region: None,
                    calls: 1
                }
            ]
        );
        assert_eq!(r.off_pin, 1);
        assert_eq!(r.cache_hits, 0);
        assert_eq!(
            r.errors_by_kind,
            [ErrorCount {
                kind: "http_503".into(),
                count: 1,
                example: "busy".into()
            }]
        );
        assert_eq!(r.samples.len(), 4);
        assert_eq!(r.samples[1].error.as_ref().unwrap().kind, "http_503");
    }

    #[test]
    fn a_row_without_success_has_no_figures() {
        let target = Target {
            model: "m".into(),
            region: None,
            mode: Mode::Plain,
        };
        let r = row(&target, &[], &GatewayInfo::default());
        assert_eq!((r.calls, r.ok, r.errors), (0, 0, 0));
        assert!(r.ttft_ms.is_none() && r.total_ms.is_none());
    }
}
