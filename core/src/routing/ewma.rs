//! A latency moving average: recent enough to follow an upstream that slows down, smooth
//! enough that one slow request does not reorder the upstreams.

/// How much the newest sample weighs against the history.
pub const EWMA_WEIGHT: f64 = 0.3;

/// An exponentially weighted moving average of latencies in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    /// An average with no sample yet.
    pub const fn new() -> Ewma {
        Ewma { value: None }
    }

    /// Folds in one latency: `0.7 × old + 0.3 × sample`, or the sample itself if it is the
    /// first. A negative or non-finite reading is a measurement bug, not a latency: ignored.
    pub fn observe(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        self.value = Some(match self.value {
            None => ms,
            Some(old) => (1.0 - EWMA_WEIGHT) * old + EWMA_WEIGHT * ms,
        });
    }

    /// The current average, or `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn empty_until_the_first_sample() {
        assert_eq!(Ewma::new().get(), None);
        assert_eq!(Ewma::default(), Ewma::new());
    }

    #[test]
    fn the_first_sample_sets_the_average() {
        let mut e = Ewma::new();
        e.observe(120.0);
        assert!(close(e.get(), 120.0));
    }

    #[test]
    fn the_newest_sample_weighs_three_tenths() {
        let mut e = Ewma::new();
        e.observe(100.0);
        e.observe(200.0);
        assert!(close(e.get(), 130.0));
        e.observe(0.0);
        assert!(close(e.get(), 91.0));
    }

    #[test]
    fn a_steady_latency_converges_to_itself() {
        let mut e = Ewma::new();
        e.observe(1000.0);
        for _ in 0..100 {
            e.observe(50.0);
        }
        assert!(close(e.get(), 50.0));
    }

    #[test]
    fn negative_and_non_finite_samples_are_ignored() {
        let mut e = Ewma::new();
        for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            e.observe(bad);
        }
        assert_eq!(e.get(), None);
        e.observe(80.0);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            e.observe(bad);
        }
        assert!(close(e.get(), 80.0));
    }
}
