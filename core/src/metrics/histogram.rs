//! Fixed-bucket histograms, and the bucket boundaries the OpenTelemetry GenAI conventions
//! recommend (so dashboards built for them read ours without rebucketing).

/// `gen_ai.client.token.usage`, in tokens.
pub const TOKEN_USAGE: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.server.request.duration` (and the gateway's own request durations), in seconds.
pub const REQUEST_DURATION: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token`, in seconds.
pub const TIME_TO_FIRST_TOKEN: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token`, in seconds.
pub const TIME_PER_OUTPUT_TOKEN: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// The gateway's own time per request, in seconds: it is meant to be well under a millisecond,
/// so the buckets start at 50 µs.
pub const OVERHEAD: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// The summary's latency figures (p50, p90), in seconds: fine at the low end, where a gateway
/// in front of a cache or a fast model answers.
pub const SUMMARY_LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let value = value.max(0.0);
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.sum += value;
        self.count = self.count.saturating_add(1);
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// `(upper bound, cumulative count)` per finite bucket, as Prometheus exposes them (the
    /// `+Inf` bucket is [`Histogram::count`]).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut running = 0u64;
        self.bounds.iter().zip(&self.counts).map(move |(b, c)| {
            running = running.saturating_add(*c);
            (*b, running)
        })
    }

    /// `(upper bound, count)` per finite bucket, not cumulative (what an encoder that adds
    /// them up itself takes).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds.iter().zip(&self.counts).map(|(b, c)| (*b, *c))
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus' `histogram_quantile`
    /// does; `None` without observations. Beyond the last bound: the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, c) in self.counts.iter().enumerate() {
            let upper = match self.bounds.get(i) {
                Some(b) => *b,
                None => return Some(lower),
            };
            let through = below.saturating_add(*c);
            if *c > 0 && through as f64 >= rank {
                let within = (rank - below as f64) / *c as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below = through;
            lower = upper;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_is_not_below_them() {
        let mut h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 9.0] {
            h.observe(v);
        }
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum, vec![(1.0, 2), (2.0, 3), (4.0, 4)]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), 15.0);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_prometheus() {
        let mut h = Histogram::new(&[1.0, 2.0, 4.0]);
        for _ in 0..10 {
            h.observe(1.5);
        }
        // All ten in (1, 2]: the median is halfway through it.
        assert_eq!(h.quantile(0.5), Some(1.5));
        assert_eq!(h.quantile(1.0), Some(2.0));
        assert_eq!(Histogram::new(&[1.0]).quantile(0.5), None);
        h.observe(100.0);
        assert_eq!(h.quantile(1.0), Some(4.0));
    }

    #[test]
    fn nan_and_negative_values_do_not_corrupt_the_sum() {
        let mut h = Histogram::new(&[1.0]);
        h.observe(f64::NAN);
        h.observe(f64::INFINITY);
        h.observe(-3.0);
        assert_eq!(h.count(), 1);
        assert_eq!(h.sum(), 0.0);
    }

    #[test]
    fn the_genai_bounds_are_increasing() {
        for b in [
            TOKEN_USAGE,
            REQUEST_DURATION,
            TIME_TO_FIRST_TOKEN,
            TIME_PER_OUTPUT_TOKEN,
            OVERHEAD,
            SUMMARY_LATENCY,
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
