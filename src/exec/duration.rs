//! Humantime durations for `--timeout`: a sequence of `<number><unit>` terms such as `1500ms`,
//! `30s`, `5m`, `1h` or `1m30s`. Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (and their long
//! spellings). A bare number, an unknown unit or anything else is an error naming the input.

use std::time::Duration;

use crate::{err, Result};

/// Parse a humantime duration. Zero is allowed (`0s`); overflow is an error.
pub fn parse(text: &str) -> Result<Duration> {
    let bad =
        |why: &str| err!("invalid duration {text:?}: {why} (examples: 1500ms, 30s, 5m, 1h, 1m30s)");
    let s = text.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0; // nanoseconds
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        if unit_len == 0 {
            return Err(bad("missing unit"));
        }
        let unit = &rest[..unit_len];
        let nanos_per: u128 = match unit {
            "ns" | "nsec" | "nanos" => 1,
            "us" | "usec" | "micros" => 1_000,
            "ms" | "msec" | "millis" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        total = number
            .checked_mul(nanos_per)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| bad("too large"))?;
        rest = &rest[unit_len..];
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad("too large"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_terms() {
        assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("7us").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("9ns").unwrap(), Duration::from_nanos(9));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse("3 seconds").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn combinations_add_up() {
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse("1h 2m 3s 4ms").unwrap(),
            Duration::from_millis(3_723_004)
        );
        assert_eq!(parse("1s500ms").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn junk_is_an_error_naming_the_input() {
        for bad in [
            "", " ", "30", "s", "1x", "1.5s", "-1s", "1s!", "ms1", "1m30", "abc",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(parse("99999999999999999999999h").is_err());
    }
}
