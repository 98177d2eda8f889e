//! Cron expressions with seconds: `sec min hour day-of-month month day-of-week [year]`, in UTC.
//!
//! Each field is `*`, `?` (day fields: any), a number, a name (`JAN`–`DEC`, `SUN`–`SAT`), a
//! range `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a comma list of those. Day of week is 0–7
//! with Sunday as 0 or 7. When both day of month and day of week are restricted, a day must
//! match both. Years run 1970–2097.
//!
//! Written here rather than taken from a crate: the cron crates for Rust bring a date-time
//! library with them, while the whole job is these two hundred lines and the calendar
//! arithmetic at the bottom.

use std::fmt;

/// A parsed expression: for each field, which values match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Bit `y - 1970`.
    years: u128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const FIRST_YEAR: i64 = 1970;
/// The last year a set of 128 bits can hold.
const LAST_YEAR: i64 = 2097;

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value names count from (1 for months, 0 for days).
    names_from: u32,
    question_mark: bool,
}

const FIELDS: [Field; 7] = [
    Field {
        name: "seconds",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
        question_mark: false,
    },
    Field {
        name: "minutes",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
        question_mark: false,
    },
    Field {
        name: "hours",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
        question_mark: false,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
        question_mark: true,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
        question_mark: false,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        names_from: 0,
        question_mark: true,
    },
    Field {
        name: "year",
        min: FIRST_YEAR as u32,
        max: LAST_YEAR as u32,
        names: &[],
        names_from: 0,
        question_mark: false,
    },
];

fn value(f: &Field, s: &str) -> Result<u32, ParseError> {
    let upper = s.to_ascii_uppercase();
    if let Some(i) = f.names.iter().position(|n| *n == upper) {
        return Ok(i as u32 + f.names_from);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| ParseError(format!("{}: {s:?} is not a number", f.name)))?;
    if v < f.min || v > f.max {
        return Err(ParseError(format!(
            "{}: {v} is outside {}-{}",
            f.name, f.min, f.max
        )));
    }
    Ok(v)
}

/// The set of values one field matches, as a bit set over `min..=max` (bit `v - min`).
fn field(f: &Field, text: &str) -> Result<u128, ParseError> {
    let mut set = 0u128;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ParseError(format!("{}: bad step {s:?}", f.name)))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" => (f.min, f.max),
            "?" if f.question_mark => (f.min, f.max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(f, a)?, value(f, b)?),
                // `a/n` runs from a to the end of the field.
                None if step > 1 => (value(f, r)?, f.max),
                None => {
                    let v = value(f, r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(ParseError(format!(
                "{}: range {lo}-{hi} is backwards",
                f.name
            )));
        }
        let mut v = lo;
        while v <= hi {
            set |= 1u128 << (v - f.min);
            v += step;
        }
    }
    Ok(set)
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Schedule, ParseError> {
        let parts: Vec<&str> = expression.split_whitespace().collect();
        if parts.len() != 6 && parts.len() != 7 {
            return Err(ParseError(format!(
                "{expression:?}: expected 6 fields (sec min hour day month weekday) or 7 (+ year), found {}",
                parts.len()
            )));
        }
        let mut sets = [0u128; 7];
        for (i, f) in FIELDS.iter().enumerate() {
            sets[i] = match parts.get(i) {
                Some(p) => field(f, p)?,
                None => field(f, "*")?,
            };
        }
        // Sunday is 0 and 7.
        let mut dow = sets[5] as u8;
        if dow & 0x80 != 0 {
            dow = (dow & 0x7f) | 1;
        }
        Ok(Schedule {
            seconds: sets[0] as u64,
            minutes: sets[1] as u64,
            hours: sets[2] as u32,
            days_of_month: sets[3] as u32,
            months: sets[4] as u16,
            days_of_week: dow,
            years: sets[6],
        })
    }

    fn day_matches(&self, days: i64) -> bool {
        let (y, m, d) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        (FIRST_YEAR..=LAST_YEAR).contains(&y)
            && self.years & (1u128 << (y - FIRST_YEAR)) != 0
            && self.months & (1 << (m - 1)) != 0
            && self.days_of_month & (1 << (d - 1)) != 0
            && self.days_of_week & (1 << weekday) != 0
    }

    /// The first time-of-day at or after `from` seconds into a day that matches, if any.
    fn time_at_or_after(&self, from: u32) -> Option<u32> {
        let (h0, m0, s0) = (from / 3600, from / 60 % 60, from % 60);
        for h in h0..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let mstart = if h == h0 { m0 } else { 0 };
            for m in mstart..60 {
                if self.minutes & (1 << m) == 0 {
                    continue;
                }
                let sstart = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(s) = (sstart..60).find(|s| self.seconds & (1 << s) != 0) {
                    return Some(h * 3600 + m * 60 + s);
                }
            }
        }
        None
    }

    /// The first matching second strictly after `after` (Unix seconds, UTC); `None` when the
    /// expression never matches again before 2100.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let t = after + 1;
        let mut day = t.div_euclid(86_400);
        let mut from = t.rem_euclid(86_400) as u32;
        let last_day = days_from_civil(LAST_YEAR, 12, 31);
        while day <= last_day {
            if self.day_matches(day) {
                if let Some(tod) = self.time_at_or_after(from) {
                    return Some(day * 86_400 + tod as i64);
                }
            }
            day += 1;
            from = 0;
        }
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-05-20T17:00:00.142+00:00` for a time in milliseconds since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    }

    #[test]
    fn calendar_round_trips() {
        for z in [-1000, 0, 59, 60, 11_016, 20_000, 47_482] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            rfc3339_ms(at(2026, 5, 20, 17, 0, 0) * 1000 + 142),
            "2026-05-20T17:00:00.142+00:00"
        );
    }

    #[test]
    fn next_times() {
        let every = Schedule::parse("*/1 * * * * *").unwrap();
        let t = at(2026, 12, 31, 23, 59, 59);
        assert_eq!(every.next_after(t), Some(t + 1));
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 10, 3, 0)),
            Some(at(2026, 1, 1, 10, 5, 0))
        );
        let s = Schedule::parse("0 0 9-17 * * MON-FRI").unwrap();
        // 2026-12-05 is a Saturday: next is Monday 09:00.
        assert_eq!(
            s.next_after(at(2026, 12, 4, 18, 0, 0)),
            Some(at(2026, 12, 7, 9, 0, 0))
        );
        let s = Schedule::parse("30 15 10 29 FEB ? *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 0, 0, 0)),
            Some(at(2028, 2, 29, 10, 15, 30))
        );
        let s = Schedule::parse("0 0 0 * * 7").unwrap(); // Sunday as 7
        assert_eq!(
            s.next_after(at(2026, 12, 2, 0, 0, 0)),
            Some(at(2026, 12, 6, 0, 0, 0))
        );
        let s = Schedule::parse("0 0 0 1 1 * 2030").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 0, 0, 0)),
            Some(at(2030, 1, 1, 0, 0, 0))
        );
        assert_eq!(s.next_after(at(2030, 1, 1, 0, 0, 0)), None);
        let s = Schedule::parse("0 0 0 31 2 *").unwrap();
        assert_eq!(s.next_after(0), None);
        let s = Schedule::parse("5/20 * * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 0, 0, 26)),
            Some(at(2026, 1, 1, 0, 0, 45))
        );
        let s = Schedule::parse("1,2,3-4 * * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 1, 0, 0, 2)),
            Some(at(2026, 1, 1, 0, 0, 3))
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (e, needle) in [
            ("* * * * *", "expected 6 fields"),
            ("60 * * * * *", "seconds: 60 is outside 0-59"),
            ("* * * * 13 *", "month: 13"),
            ("* * * * * FUNDAY", "day of week"),
            ("*/0 * * * * *", "bad step"),
            ("5-1 * * * * *", "backwards"),
            ("? * * * * *", "seconds"),
        ] {
            let err = Schedule::parse(e).unwrap_err().0;
            assert!(err.contains(needle), "{e}: {err}");
        }
    }
}
