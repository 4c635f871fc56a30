//! Times in query parameters: an RFC 3339 time or a duration back from now, read exactly
//! as `TimeParam` in `docs/openapi.yaml` describes them, so the API accepts what its
//! specification allows and nothing else.
//!
//! Written for hostile input: no byte-index slicing, no indexing, no unchecked arithmetic
//! (the lints below enforce it). Fuzzed by `fuzz/fuzz_targets/api_query.rs`.

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// Most terms in a duration (`1h 30m` has two).
const MAX_TERMS: usize = 8;
/// Most digits in a number of a duration term.
const MAX_DIGITS: usize = 9;
/// Most digits of a fraction of a second.
const MAX_FRACTION_DIGITS: usize = 9;

/// Parses a time: RFC 3339 (`2026-11-28T15:00:00Z`, a fraction of up to 9 digits, `Z` or
/// an offset `±hh:mm`, `T` or a space between date and time), or a duration back from
/// `now_ms` (`24h`, `90m`, `1h 30m`, `7d`; units `ms`, `s`, `m`, `h`, `d`, `w`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(back) = parse_duration_ms(s) {
        return Ok(now_ms.saturating_sub(back));
    }
    if let Some(ms) = parse_rfc3339(s) {
        return Ok(ms);
    }
    Err(format!(
        "`{s}` is neither an RFC 3339 time (2026-11-28T15:00:00Z) nor a duration back from now (24h, 1h 30m)"
    ))
}

/// A duration: 1 to [`MAX_TERMS`] terms of 1 to [`MAX_DIGITS`] digits and a unit, each
/// after the first optionally preceded by one space. Milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut total: i64 = 0;
    let mut terms = 0usize;
    while !rest.is_empty() {
        if terms > 0 {
            if let Some(after_space) = rest.strip_prefix(' ') {
                if after_space.is_empty() {
                    return None;
                }
                rest = after_space;
            }
        }
        let (digits, after) = leading(rest, |c| c.is_ascii_digit(), MAX_DIGITS)?;
        let n: i64 = digits.parse().ok()?;
        let (unit, after) = leading(after, |c| c.is_ascii_lowercase(), 2)?;
        let unit_ms: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        terms = terms.checked_add(1)?;
        if terms > MAX_TERMS {
            return None;
        }
        rest = after;
    }
    (terms > 0).then_some(total)
}

/// Splits off the longest run of 1 to `max` leading characters that `keep`, or `None`
/// when there is none or it is longer.
fn leading(s: &str, keep: impl Fn(char) -> bool, max: usize) -> Option<(&str, &str)> {
    let end = s.find(|c: char| !keep(c)).unwrap_or(s.len());
    let (run, rest) = s.split_at_checked(end)?;
    (!run.is_empty() && run.len() <= max).then_some((run, rest))
}

/// Reads exactly `n` ASCII digits off the front of `s`.
fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    let (head, tail) = s.split_at_checked(n)?;
    if head.len() != n || !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, tail))
}

fn expect(s: &str, c: char) -> Option<&str> {
    s.strip_prefix(c)
}

fn is_leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), after Howard Hinnant's
/// `days_from_civil`. The inputs are bounded (year 0 to 9999), so the arithmetic is too;
/// it is still checked.
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y.div_euclid(400);
    let yoe = y.checked_sub(era.checked_mul(400)?)?;
    let mp = month.checked_add(9)?.rem_euclid(12);
    let doy = (153i64.checked_mul(mp)?.checked_add(2)?)
        .checked_div(5)?
        .checked_add(day)?
        .checked_sub(1)?;
    let doe = yoe
        .checked_mul(365)?
        .checked_add(yoe.checked_div(4)?)?
        .checked_sub(yoe.checked_div(100)?)?
        .checked_add(doy)?;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

/// RFC 3339 (years 0000 to 9999) to milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (year, s) = digits(s, 4)?;
    let (month, s) = digits(expect(s, '-')?, 2)?;
    let (day, s) = digits(expect(s, '-')?, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let s = s.strip_prefix(['T', 't', ' '])?;
    let (hour, s) = digits(s, 2)?;
    let (minute, s) = digits(expect(s, ':')?, 2)?;
    let (second, mut s) = digits(expect(s, ':')?, 2)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut millis = 0i64;
    if let Some(fraction) = s.strip_prefix('.') {
        let (frac, tail) = leading(fraction, |c| c.is_ascii_digit(), MAX_FRACTION_DIGITS)?;
        // Milliseconds: the first three digits, padded.
        for (i, b) in frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .enumerate()
        {
            let weight = match i {
                0 => 100,
                1 => 10,
                _ => 1,
            };
            millis = millis.checked_add(i64::from(b.checked_sub(b'0')?).checked_mul(weight)?)?;
        }
        s = tail;
    }
    let offset_minutes = match s {
        "Z" | "z" => 0,
        _ => {
            let (negative, rest) = match s.strip_prefix('+') {
                Some(rest) => (false, rest),
                None => (true, s.strip_prefix('-')?),
            };
            let (oh, rest) = digits(rest, 2)?;
            let (om, rest) = digits(expect(rest, ':')?, 2)?;
            if !rest.is_empty() || oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh.checked_mul(60)?.checked_add(om)?;
            if negative {
                minutes.checked_neg()?
            } else {
                minutes
            }
        }
    };
    let days = days_from_civil(year, month, day)?;
    let seconds = days
        .checked_mul(86_400)?
        .checked_add(hour.checked_mul(3_600)?)?
        .checked_add(minute.checked_mul(60)?)?
        .checked_add(second)?
        .checked_sub(offset_minutes.checked_mul(60)?)?;
    seconds.checked_mul(1_000)?.checked_add(millis)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_grammar() {
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("1h 30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(
            parse_duration_ms("999999999w"),
            Some(999_999_999 * 604_800_000)
        );
        for bad in [
            "",
            " 1h",
            "1h ",
            "1h  2m",
            "h",
            "1",
            "1x",
            "1H",
            "1234567890s",
            "éééé",
            "1é",
            "1h 1h 1h 1h 1h 1h 1h 1h 1h",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_is_checked_against_the_calendar() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29 00:00:00z"), Some(951_782_400_000));
        assert_eq!(
            parse_rfc3339("0000-01-01T00:00:00Z"),
            Some(-62_167_219_200_000)
        );
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.123456789+23:59"),
            Some(253_402_214_459_123)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-11-28T24:00:00Z",
            "2025-11-28T23:59:60Z",
            "2025-11-28T14:26:40",
            "2025-11-28T14:26:40.Z",
            "2025-11-28T14:26:40.1234567890Z",
            "2025-11-28T14:26:40+24:00",
            "2025-11-28T14:26:40+01:00 ",
            "éééé-11-28T14:26:40Z",
            "2025-11-28Té4:26:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn multibyte_input_is_refused_not_a_panic() {
        for s in [
            "ééééa",
            "\u{10FFFF}\u{10FFFF}",
            "a+é:é",
            "2025-11-28T14:26:40+é:é",
        ] {
            assert!(parse_time(s, 0).is_err(), "{s:?}");
        }
    }
}
