//! Latency figures of one row: nearest-rank percentiles over the successful calls.
//!
//! Nearest rank (no interpolation): the p-th percentile of n sorted samples is the sample of
//! rank ⌈p/100 × n⌉ (1-based), so every figure printed is a time that was really measured. With
//! the default five calls p50 is the 3rd fastest and p90 the slowest; with three calls p50 is
//! the middle one and p90 the slowest.

use std::time::Duration;

use serde::Serialize;

/// Percentiles, extremes and mean of a set of durations, in milliseconds (to the microsecond).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub p50: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// The sample of nearest rank ⌈p/100 × n⌉ in `sorted` (ascending); `None` when empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: u32) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // ⌈p × n / 100⌉ in integers, at least rank 1, at most rank n.
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

fn ms(micros: u128) -> f64 {
    micros as f64 / 1000.0
}

/// The summary of `samples` (any order); `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    // Whole microseconds: integers sort totally (no NaN) and a microsecond is below any
    // network time worth reporting.
    let mut us: Vec<u128> = samples.iter().map(Duration::as_micros).collect();
    us.sort_unstable();
    let min = *us.first()?;
    let max = *us.last()?;
    let sum: u128 = us.iter().sum();
    let mean = (sum + us.len() as u128 / 2) / us.len() as u128;
    Some(Summary {
        p50: ms(nearest_rank(&us, 50)?),
        p90: ms(nearest_rank(&us, 90)?),
        min: ms(min),
        max: ms(max),
        mean: ms(mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_measured_samples() {
        let five = [10, 20, 30, 40, 50];
        assert_eq!(nearest_rank(&five, 50), Some(30)); // ⌈2.5⌉ = 3
        assert_eq!(nearest_rank(&five, 90), Some(50)); // ⌈4.5⌉ = 5
        assert_eq!(nearest_rank(&five, 0), Some(10));
        assert_eq!(nearest_rank(&five, 100), Some(50));
        let three = [1, 2, 3];
        assert_eq!(nearest_rank(&three, 50), Some(2)); // ⌈1.5⌉ = 2
        assert_eq!(nearest_rank(&three, 90), Some(3)); // ⌈2.7⌉ = 3
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(nearest_rank(&ten, 50), Some(5)); // exactly rank 5, not 5.5
        assert_eq!(nearest_rank(&ten, 90), Some(9));
        assert_eq!(nearest_rank(&[7], 90), Some(7));
        assert_eq!(nearest_rank::<u32>(&[], 50), None);
    }

    #[test]
    fn summaries_are_in_milliseconds_whatever_the_order() {
        let d = |ms: u64| Duration::from_millis(ms);
        let s = summarize(&[d(300), d(100), d(500), d(200), d(400)]).unwrap();
        assert_eq!(
            s,
            Summary {
                p50: 300.0,
                p90: 500.0,
                min: 100.0,
                max: 500.0,
                mean: 300.0
            }
        );
        let s = summarize(&[Duration::from_micros(1_500)]).unwrap();
        assert_eq!(
            (s.p50, s.p90, s.min, s.max, s.mean),
            (1.5, 1.5, 1.5, 1.5, 1.5)
        );
        assert_eq!(summarize(&[]), None);
    }
}
