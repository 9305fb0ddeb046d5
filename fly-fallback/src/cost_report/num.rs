//! Integer formatting: percentages from exact ratios, thousands separators, dollar amounts.

use gateway_core::pricing::Money;

/// Basis points (hundredths of a percent) in a whole.
pub const BASIS: u32 = 10_000;

/// `num / den` rounded half up.
fn div_round(num: u128, den: u128) -> u128 {
    num / den + u128::from(num % den >= den - num % den)
}

fn fixed(units: u128, decimals: u32) -> String {
    if decimals == 0 {
        return units.to_string();
    }
    let scale = 10u128.pow(decimals);
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = decimals as usize
    )
}

/// `part / whole` as a percentage with `decimals` decimals, rounded half up; `None` when
/// `whole` is zero.
pub fn share_pct(part: u128, whole: u128, decimals: u32) -> Option<String> {
    if whole == 0 {
        return None;
    }
    let num = part.checked_mul(100 * 10u128.pow(decimals))?;
    Some(fixed(div_round(num, whole), decimals))
}

/// How much cheaper `x` is than `base`, as a percentage (negative: dearer), rounded half away
/// from zero; `None` when `base` is zero.
pub fn saving_pct(base: Money, x: Money, decimals: u32) -> Option<String> {
    let (b, x) = (base.picos(), x.picos());
    let (diff, sign) = if x <= b { (b - x, "") } else { (x - b, "-") };
    let s = share_pct(diff, b, decimals)?;
    let zero = s.bytes().all(|c| c == b'0' || c == b'.');
    Some(if zero { s } else { format!("{sign}{s}") })
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u128) -> String {
    let digits = n.to_string();
    // The first group holds 1 to 3 digits, every later one 3.
    let head = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let (first, rest) = digits.split_at(head);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(first);
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

/// An exact amount with a dollar sign and thousands separators: `$1,234.000184`.
pub fn usd(m: Money) -> String {
    let s = m.to_string();
    let (whole, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(w, f)| (w, Some(f)));
    let whole = whole.parse::<u128>().map_or(whole.to_string(), thousands);
    match frac {
        Some(f) => format!("${whole}.{f}"),
        None => format!("${whole}"),
    }
}

/// A share in basis points as a fraction with at least two decimals: 500 → `0.05`,
/// 1000 → `0.10`, 1250 → `0.125`, 10000 → `1.00`.
pub fn fraction(bp: u32) -> String {
    let s = format!("{}.{:04}", bp / BASIS, bp % BASIS);
    let trimmed = s.trim_end_matches('0');
    let decimals = trimmed.len() - trimmed.find('.').map_or(trimmed.len(), |d| d + 1);
    if decimals < 2 {
        s[..s.len() - (4 - 2)].to_string()
    } else {
        trimmed.to_string()
    }
}

/// A rate in picodollars per token as dollars per million tokens (exact).
pub fn per_million(picos_per_token: u64) -> Money {
    Money::from_picos(u128::from(picos_per_token) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd_of(s: &str) -> Money {
        Money::parse_usd(s).unwrap()
    }

    #[test]
    fn shares_round_half_up() {
        assert_eq!(share_pct(1, 3, 1).as_deref(), Some("33.3"));
        assert_eq!(share_pct(2, 3, 1).as_deref(), Some("66.7"));
        assert_eq!(share_pct(1, 8, 1).as_deref(), Some("12.5"));
        assert_eq!(share_pct(1, 16, 1).as_deref(), Some("6.3")); // 6.25
        assert_eq!(share_pct(5, 5, 2).as_deref(), Some("100.00"));
        assert_eq!(share_pct(0, 5, 0).as_deref(), Some("0"));
        assert_eq!(share_pct(1, 0, 1), None);
    }

    #[test]
    fn the_designs_saving_is_62_69_percent_not_87() {
        // (8 - 2.985) / 8 = 0.626875.
        let (all, mix) = (usd_of("8"), usd_of("2.985"));
        assert_eq!(saving_pct(all, mix, 2).as_deref(), Some("62.69"));
        assert_eq!(saving_pct(all, mix, 1).as_deref(), Some("62.7"));
        // Dearer is negative: 12 vs 8 is 50% more.
        assert_eq!(saving_pct(all, usd_of("12"), 1).as_deref(), Some("-50.0"));
        assert_eq!(saving_pct(all, all, 1).as_deref(), Some("0.0"));
        // Less than half a unit dearer rounds to zero, without a sign.
        assert_eq!(
            saving_pct(all, usd_of("8.0000001"), 1).as_deref(),
            Some("0.0")
        );
        assert_eq!(saving_pct(Money::ZERO, all, 1), None);
    }

    #[test]
    fn numbers_and_money_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(123_456), "123,456");
        assert_eq!(thousands(12_345), "12,345");
        assert_eq!(usd(usd_of("1234.000184")), "$1,234.000184");
        assert_eq!(usd(usd_of("8")), "$8");
        assert_eq!(usd(Money::ZERO), "$0");
    }

    #[test]
    fn fractions_keep_two_decimals() {
        assert_eq!(fraction(500), "0.05");
        assert_eq!(fraction(1000), "0.10");
        assert_eq!(fraction(3500), "0.35");
        assert_eq!(fraction(1250), "0.125");
        assert_eq!(fraction(1), "0.0001");
        assert_eq!(fraction(10_000), "1.00");
    }

    #[test]
    fn rates_per_token_are_dollars_per_million() {
        assert_eq!(per_million(8_000_000).to_string(), "8");
        assert_eq!(per_million(420_000).to_string(), "0.42");
    }
}
