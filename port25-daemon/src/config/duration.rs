//! Go's `time.Duration` text, as the CrowdSec Local API writes a decision's remaining time
//! ("3h59m59.571536521s", "-17.418095ms" for one that just ended) and as `report_ban` is written
//! ("4h", "90m").

/// Text that is no Go duration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as \"4h\", \"90m\" or \"1h30m\"")]
pub(crate) struct NotADuration(String);

/// Nanoseconds, signed: a decision deleted or just expired has a negative remaining time.
pub(crate) fn parse_nanos(text: &str) -> Result<i128, NotADuration> {
    let bad = || NotADuration(text.to_owned());
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        // Digits past a nanosecond are below what any unit can express: ignored, as Go does.
        let mut place = scale;
        for digit in fraction.bytes() {
            if !digit.is_ascii_digit() {
                return Err(bad());
            }
            place /= 10;
            part += i128::from(digit - b'0') * place;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = next;
    }
    // Go's Duration is an i64 of nanoseconds (about 292 years): no real LAPI writes more.
    if total > i128::from(i64::MAX) {
        return Err(bad());
    }
    Ok(if negative { -total } else { total })
}

/// Whole seconds, rounded down; negative durations are 0 (the decision is over).
pub(crate) fn parse_secs(text: &str) -> Result<u64, NotADuration> {
    let nanos = parse_nanos(text)?;
    Ok(u64::try_from(nanos / 1_000_000_000).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_lapi_sends() {
        assert_eq!(
            parse_nanos("3h59m59.571536521s"),
            Ok(((3 * 60 + 59) * 60 + 59) * 1_000_000_000 + 571_536_521)
        );
        assert_eq!(parse_nanos("29m59.4398s"), Ok(1_799_439_800_000));
        assert_eq!(parse_nanos("-173.44ms"), Ok(-173_440_000));
        assert_eq!(parse_nanos("-17.418095ms"), Ok(-17_418_095));
        assert_eq!(parse_nanos("1.5µs"), Ok(1_500));
        assert_eq!(parse_nanos("0"), Ok(0));
        assert_eq!(
            parse_nanos("2562047h"),
            Ok(2_562_047 * 3_600 * 1_000_000_000)
        );
        assert_eq!(parse_secs("4h"), Ok(14_400));
        assert_eq!(parse_secs("1h30m"), Ok(5_400));
        assert_eq!(parse_secs("-5.8s"), Ok(0));
        assert_eq!(parse_secs("59.999s"), Ok(59));
    }

    #[test]
    fn what_is_not_a_duration() {
        for text in [
            "",
            "4",
            "h",
            "4d",
            "1h-3m",
            "1..5s",
            "-",
            ".s",
            "4 h",
            "99999999999999999999999999999999999999h",
            // Past Go's range (an i64 of nanoseconds).
            "99999999999h",
            "2562048h",
        ] {
            let err = parse_nanos(text).expect_err(text).to_string();
            assert!(err.contains("is not a duration"), "{text}: {err}");
        }
    }
}
