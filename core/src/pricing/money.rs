//! Exact amounts of US dollars, as integer picodollars (10^-12 USD).
//!
//! A price of $X per million tokens is X micro-dollars per token, so any price with up to six
//! decimals per million tokens is a whole number of picodollars per token, and every cost is an
//! integer product: no float rounding, however many requests are added up.

use std::fmt;
use std::ops::{Add, AddAssign};

pub const PICOS_PER_USD: u128 = 1_000_000_000_000;

/// An amount of money, exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(u128);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_picos(picos: u128) -> Money {
        Money(picos)
    }

    pub fn picos(self) -> u128 {
        self.0
    }

    /// For charts and ratios only; sums stay in [`Money`].
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / PICOS_PER_USD as f64
    }

    /// Parses a plain decimal number of dollars (`"0.000184"`, `"12"`, `"8.5"`): at most 12
    /// decimals, no sign, no exponent.
    pub fn parse_usd(s: &str) -> Option<Money> {
        let s = s.trim();
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        if frac.len() > 12
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let w: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut f: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..12 {
            f *= 10;
        }
        w.checked_mul(PICOS_PER_USD)?.checked_add(f).map(Money)
    }

    /// A price in USD per million tokens (from configuration) as picodollars per token, which
    /// is micro-dollars per million: exact for up to six decimals, rounded to the nearest beyond.
    pub fn per_token_from_usd_per_million(usd_per_million: f64) -> Option<u64> {
        if !usd_per_million.is_finite() || !(0.0..=1_000_000.0).contains(&usd_per_million) {
            return None;
        }
        Some((usd_per_million * 1_000_000.0).round() as u64)
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// `self * num / den`, for shares of a total (rounded down).
    pub fn scaled(self, num: u128, den: u128) -> Money {
        if den == 0 {
            return Money::ZERO;
        }
        Money(self.0.saturating_mul(num) / den)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, o: Money) {
        self.0 = self.0.saturating_add(o.0);
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

/// Plain decimal dollars without trailing zeros: `0.000184`, `8`, `2.985`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / PICOS_PER_USD;
        let frac = self.0 % PICOS_PER_USD;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_plain_decimals_without_trailing_zeros() {
        assert_eq!(Money::from_picos(184_000_000).to_string(), "0.000184");
        assert_eq!(Money::from_picos(8 * PICOS_PER_USD).to_string(), "8");
        assert_eq!(Money::from_picos(2_985_000_000_000).to_string(), "2.985");
        assert_eq!(Money::ZERO.to_string(), "0");
        assert_eq!(Money::from_picos(1).to_string(), "0.000000000001");
    }

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        for s in ["0.000184", "8", "2.985", "0", "0.000000000001", "123456.5"] {
            assert_eq!(Money::parse_usd(s).unwrap().to_string(), s);
        }
        assert_eq!(Money::parse_usd(".5"), Money::parse_usd("0.5"));
        for bad in ["", ".", "-1", "1e3", "0.0000000000001", "abc", "1.2.3"] {
            assert_eq!(Money::parse_usd(bad), None, "{bad}");
        }
    }

    #[test]
    fn prices_per_million_are_exact_picodollars_per_token() {
        assert_eq!(Money::per_token_from_usd_per_million(0.42), Some(420_000));
        assert_eq!(Money::per_token_from_usd_per_million(8.0), Some(8_000_000));
        assert_eq!(Money::per_token_from_usd_per_million(0.0375), Some(37_500));
        assert_eq!(Money::per_token_from_usd_per_million(-1.0), None);
        assert_eq!(Money::per_token_from_usd_per_million(f64::NAN), None);
    }

    #[test]
    fn a_million_additions_do_not_drift() {
        // $0.42 per million tokens, one token a request, a million requests: exactly $0.42.
        let one = Money::from_picos(420_000);
        let total: Money = std::iter::repeat_n(one, 1_000_000).sum();
        assert_eq!(total.to_string(), "0.42");
    }
}
