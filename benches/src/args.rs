//! Value parsers the scenarios' command lines share.
//!
//! ```text
//! --rate 20000 | 20000/s | 20k/s ──▶ parse_rate ──▶ 20_000 per second (0: unpaced)
//! ```

/// Parses a rate per second: `20000`, `20000/s`, `20k/s` or `20K`.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let number = text.trim().trim_end_matches("/s");
    let (digits, scale) = match number.strip_suffix(['k', 'K']) {
        Some(digits) => (digits, 1_000),
        None => (number, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is not a rate (e.g. 20000, 20000/s, 20k/s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("20000"), Ok(20_000));
        assert_eq!(parse_rate("20000/s"), Ok(20_000));
        assert_eq!(parse_rate("20k/s"), Ok(20_000));
        assert_eq!(parse_rate("40K"), Ok(40_000));
        assert_eq!(parse_rate(" 500/s "), Ok(500));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("k").is_err());
        assert!(parse_rate("18446744073709552k").is_err());
    }
}
