//! Prices: parsed once at load from `"$0.01"` (US dollars) or atomic units, into integers.

use alloy::primitives::U256;

/// Parses a price for an asset with `decimals` decimals (USDC: 6).
///
/// `"$0.01"` is dollars and becomes `10000`; `"10000"` (or a TOML integer) is already atomic units.
/// The error text says what was expected, for the caller to prefix with the config key.
pub fn parse_price(s: &str, decimals: u8) -> Result<U256, String> {
    let s = s.trim();
    let amount = if let Some(usd) = s.strip_prefix('$') {
        parse_usd(usd, decimals)
            .ok_or_else(|| format!("'{s}' is not a USD amount like '$0.01' (at most {decimals} decimal places)"))?
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        U256::from_str_radix(s, 10).map_err(|_| format!("'{s}' is too large"))?
    } else {
        return Err(format!(
            "'{s}' is neither a USD amount like '$0.01' nor atomic units like '10000'"
        ));
    };
    if amount.is_zero() {
        return Err(format!(
            "'{s}' is zero; leave the route out (or unpriced) to make it free"
        ));
    }
    Ok(amount)
}

fn parse_usd(s: &str, decimals: u8) -> Option<U256> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) || frac.len() > decimals as usize {
        return None;
    }
    if s.ends_with('.') {
        return None;
    }
    let scale = U256::from(10u64).pow(U256::from(decimals));
    let whole = if whole.is_empty() {
        U256::ZERO
    } else {
        U256::from_str_radix(whole, 10).ok()?
    };
    let frac_padded = format!("{frac:0<width$}", width = decimals as usize);
    let frac = if frac_padded.is_empty() {
        U256::ZERO
    } else {
        U256::from_str_radix(&frac_padded, 10).ok()?
    };
    whole.checked_mul(scale)?.checked_add(frac)
}

/// Formats atomic units as dollars for messages (`10000` → `$0.01`).
pub fn format_usd(amount: U256, decimals: u8) -> String {
    let scale = U256::from(10u64).pow(U256::from(decimals));
    let (whole, frac) = (amount / scale, amount % scale);
    let frac = format!("{:0>width$}", frac.to_string(), width = decimals as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("${whole}")
    } else {
        format!("${whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_become_atomic_units() {
        let p = |s| parse_price(s, 6).map(|v| v.to::<u64>());
        assert_eq!(p("$0.01"), Ok(10_000));
        assert_eq!(p("$1"), Ok(1_000_000));
        assert_eq!(p("$.5"), Ok(500_000));
        assert_eq!(p("$0.000001"), Ok(1));
        assert_eq!(p("$12.345"), Ok(12_345_000));
        assert_eq!(p("1000"), Ok(1000));
    }

    #[test]
    fn refuses_what_is_not_a_price() {
        for bad in [
            "$0.0x",
            "$0.0000001",
            "$",
            "$1.",
            "-1",
            "$-1",
            "1.5",
            "",
            "$0",
            "0",
            "€1",
        ] {
            assert!(parse_price(bad, 6).is_err(), "{bad} accepted");
        }
        assert!(parse_price("$0.0x", 6)
            .unwrap_err()
            .contains("is not a USD amount like '$0.01'"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_usd(U256::from(10_000u64), 6), "$0.01");
        assert_eq!(format_usd(U256::from(2_000_000u64), 6), "$2");
    }
}
