//! Exponential backoff with full jitter: retries spread uniformly over a window that doubles
//! each time, so that clients refused together do not come back together.
//!
//! The randomness is an argument, drawn by the runtime: the core never reads the OS's RNG.

use std::time::Duration;

/// The wait before retry number `retry` (0 for the first retry): uniform in
/// `[0, min(cap, base × 2^retry)]`, placed by `random` (any `u64` from the runtime's RNG).
/// Never overflows, however large `retry`.
pub fn backoff(retry: u32, base: Duration, cap: Duration, random: u64) -> Duration {
    let window = if base.is_zero() {
        Duration::ZERO
    } else {
        1u32.checked_shl(retry)
            .and_then(|factor| base.checked_mul(factor))
            .map_or(cap, |d| d.min(cap))
    };
    // Nanoseconds beyond u64 are 584 years: clamping there loses nothing real.
    let span = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    // Multiply-shift maps `random` onto `0..=span` without the bias of a modulo and without
    // overflow: (2^64 - 1) × 2^64 still fits in a u128.
    let scaled = (u128::from(random) * (u128::from(span) + 1)) >> 64;
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn zero_random_waits_nothing() {
        for retry in [0, 1, 5, 31, 32, 64, u32::MAX] {
            assert_eq!(backoff(retry, BASE, CAP, 0), Duration::ZERO);
        }
    }

    #[test]
    fn the_largest_random_reaches_the_window() {
        assert_eq!(backoff(0, BASE, CAP, u64::MAX), BASE);
        assert_eq!(backoff(1, BASE, CAP, u64::MAX), BASE * 2);
        assert_eq!(backoff(3, BASE, CAP, u64::MAX), BASE * 8);
    }

    #[test]
    fn the_window_doubles_with_each_retry() {
        let half = u64::MAX / 2 + 1;
        assert_eq!(backoff(0, BASE, CAP, half), BASE / 2);
        assert_eq!(backoff(1, BASE, CAP, half), BASE);
        assert_eq!(backoff(2, BASE, CAP, half), BASE * 2);
    }

    #[test]
    fn the_window_stops_at_the_cap() {
        assert_eq!(backoff(7, BASE, CAP, u64::MAX), CAP);
        assert_eq!(backoff(20, BASE, CAP, u64::MAX), CAP);
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        for retry in [31, 32, 33, 63, 64, 65, 1000, u32::MAX] {
            let d = backoff(retry, BASE, CAP, u64::MAX);
            assert_eq!(d, CAP, "retry {retry}");
            assert!(backoff(retry, BASE, CAP, 12_345) <= CAP);
        }
        assert_eq!(
            backoff(40, Duration::MAX, Duration::MAX, u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn every_wait_is_within_the_window() {
        let mut random: u64 = 0x9E37_79B9_7F4A_7C15;
        for retry in 0..12 {
            let window = (BASE * 2u32.pow(retry)).min(CAP);
            for _ in 0..200 {
                random = random
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                assert!(backoff(retry, BASE, CAP, random) <= window);
            }
        }
    }

    #[test]
    fn waits_spread_over_the_whole_window() {
        // 16 evenly spaced random values cover the window's 16 sixteenths.
        let mut buckets = [0u32; 16];
        for i in 0..16u64 {
            let random = i * (u64::MAX / 16) + u64::MAX / 32;
            let d = backoff(2, BASE, CAP, random);
            let bucket = (d.as_nanos() * 16 / (BASE * 4).as_nanos()) as usize;
            buckets[bucket.min(15)] += 1;
        }
        assert!(buckets.iter().all(|&n| n == 1), "{buckets:?}");
    }

    #[test]
    fn a_zero_base_or_cap_means_no_wait() {
        assert_eq!(backoff(3, Duration::ZERO, CAP, u64::MAX), Duration::ZERO);
        assert_eq!(
            backoff(u32::MAX, Duration::ZERO, CAP, u64::MAX),
            Duration::ZERO
        );
        assert_eq!(backoff(3, BASE, Duration::ZERO, u64::MAX), Duration::ZERO);
    }
}
