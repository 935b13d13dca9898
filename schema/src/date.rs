//! Civil dates (`Date`) and validity periods (`Period`), without a clock or a time-zone database.
//!
//! `Date` is a proleptic Gregorian date written `YYYY-MM-DD` (years 1900 to 9999, always two-digit
//! month and day). Day arithmetic uses Howard Hinnant's days-from-civil algorithm. Instants are
//! Unix milliseconds, mapped to dates through an explicit fixed UTC offset in minutes.
//!
//! `Period` is an ISO-8601-like duration with exactly one component: `P3Y`, `P36M` or `P30D`,
//! value 1 to 1200 without leading zeros. Both types serialize as text strings.

use std::fmt;
use std::str::FromStr;

const MIN_YEAR: i32 = 1900;
const MAX_YEAR: i32 = 9999;
const MS_PER_DAY: i64 = 86_400_000;
const MAX_PERIOD: u32 = 1200;

/// Why a date, a period or date arithmetic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date {text:?}: expected YYYY-MM-DD")]
    Format { text: String },
    #[error("date {text:?}: year outside {MIN_YEAR}..={MAX_YEAR}")]
    Year { text: String },
    #[error("date {text:?}: month must be 01 to 12")]
    Month { text: String },
    #[error("date {text:?}: day does not exist in that month")]
    Day { text: String },
    #[error("date arithmetic left the range {MIN_YEAR}-01-01..={MAX_YEAR}-12-31")]
    OutOfRange,
    #[error("period {text:?}: expected P<n>Y, P<n>M or P<n>D")]
    PeriodFormat { text: String },
    #[error("period {text:?}: leading zeros are not allowed")]
    PeriodLeadingZero { text: String },
    #[error("period {text:?}: value must be 1 to {MAX_PERIOD}")]
    PeriodValue { text: String },
}

/// A civil date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    year: i32,
    month: u32,
    day: u32,
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Hinnant, `days_from_civil`).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(if m <= 2 { y - 1 } else { y });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`] (Hinnant, `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn in_range(y: i64) -> Option<i32> {
    i32::try_from(y)
        .ok()
        .filter(|y| (MIN_YEAR..=MAX_YEAR).contains(y))
}

impl Date {
    /// A date from its parts, checked.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date, DateError> {
        let text = || format!("{year:04}-{month:02}-{day:02}");
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(DateError::Year { text: text() });
        }
        if !(1..=12).contains(&month) {
            return Err(DateError::Month { text: text() });
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Day { text: text() });
        }
        Ok(Date { year, month, day })
    }

    /// Strict parse of `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date, DateError> {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 10
            || b[4] != b'-'
            || b[7] != b'-'
            || !digits(0..4)
            || !digits(5..7)
            || !digits(8..10)
        {
            return Err(DateError::Format { text: text.into() });
        }
        let num =
            |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
        Date::new(num(0..4) as i32, num(5..7), num(8..10)).map_err(|e| match e {
            DateError::Year { .. } => DateError::Year { text: text.into() },
            DateError::Month { .. } => DateError::Month { text: text.into() },
            _ => DateError::Day { text: text.into() },
        })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u32 {
        self.month
    }

    pub fn day(&self) -> u32 {
        self.day
    }

    pub fn days_since_unix_epoch(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    pub fn from_days_since_unix_epoch(days: i64) -> Result<Date, DateError> {
        // Keep the arithmetic far from overflow before converting.
        if !(-1_000_000..=3_000_000).contains(&days) {
            return Err(DateError::OutOfRange);
        }
        let (y, month, day) = civil_from_days(days);
        let year = in_range(y).ok_or(DateError::OutOfRange)?;
        Ok(Date { year, month, day })
    }

    /// `n` days later (earlier if negative).
    pub fn add_days(&self, n: i64) -> Result<Date, DateError> {
        let days = self
            .days_since_unix_epoch()
            .checked_add(n)
            .ok_or(DateError::OutOfRange)?;
        Date::from_days_since_unix_epoch(days)
    }

    /// `n` months later (earlier if negative), clamping the day to the end of the month
    /// (2024-01-31 + 1 month = 2024-02-29).
    pub fn add_months(&self, n: i64) -> Result<Date, DateError> {
        let index = i64::from(self.year) * 12 + i64::from(self.month - 1);
        let index = index.checked_add(n).ok_or(DateError::OutOfRange)?;
        let year = in_range(index.div_euclid(12)).ok_or(DateError::OutOfRange)?;
        let month = index.rem_euclid(12) as u32 + 1;
        let day = self.day.min(days_in_month(year, month));
        Ok(Date { year, month, day })
    }

    /// The date after a period (years are 12 months, so 2024-02-29 + P1Y = 2025-02-28).
    pub fn add_period(&self, period: &Period) -> Result<Date, DateError> {
        match *period {
            Period::Years(n) => self.add_months(i64::from(n) * 12),
            Period::Months(n) => self.add_months(i64::from(n)),
            Period::Days(n) => self.add_days(i64::from(n)),
        }
    }

    /// Unix milliseconds of the moment this date begins at the given fixed UTC offset
    /// (e.g. +480 for China Standard Time).
    pub fn start_unix_ms(&self, utc_offset_minutes: i32) -> i64 {
        self.days_since_unix_epoch() * MS_PER_DAY - i64::from(utc_offset_minutes) * 60_000
    }

    /// The date at instant `ms` (Unix milliseconds) at the given fixed UTC offset.
    pub fn from_unix_ms(ms: i64, utc_offset_minutes: i32) -> Result<Date, DateError> {
        let local = ms
            .checked_add(i64::from(utc_offset_minutes) * 60_000)
            .ok_or(DateError::OutOfRange)?;
        Date::from_days_since_unix_epoch(local.div_euclid(MS_PER_DAY))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s)
    }
}

impl serde::Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Date::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A validity or shelf-life period with exactly one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Years(u32),
    Months(u32),
    Days(u32),
}

impl Period {
    /// Strict parse of `P<n>Y`, `P<n>M` or `P<n>D`.
    pub fn parse(text: &str) -> Result<Period, DateError> {
        let format = || DateError::PeriodFormat { text: text.into() };
        let body = text.strip_prefix('P').ok_or_else(format)?;
        let unit = body.chars().last().ok_or_else(format)?;
        let num = &body[..body.len() - unit.len_utf8()];
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format());
        }
        let ctor = match unit {
            'Y' => Period::Years,
            'M' => Period::Months,
            'D' => Period::Days,
            _ => return Err(format()),
        };
        if num.starts_with('0') && num != "0" {
            return Err(DateError::PeriodLeadingZero { text: text.into() });
        }
        let value = match num.parse::<u32>() {
            Ok(v) if (1..=MAX_PERIOD).contains(&v) => v,
            _ => return Err(DateError::PeriodValue { text: text.into() }),
        };
        Ok(ctor(value))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Years(n) => write!(f, "P{n}Y"),
            Period::Months(n) => write!(f, "P{n}M"),
            Period::Days(n) => write!(f, "P{n}D"),
        }
    }
}

impl FromStr for Period {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An elapsed time written `30d`, `12h`, `15m`, `90s` or `500ms`, as milliseconds: the audit's
/// deadlines, in the CLI's options and the node's `[audit]` settings. The error names the text.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?}: write a whole number and a unit, e.g. 30d, 12h, 15m, 90s, 500ms")
    })?;
    let scale = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        "ms" => 1,
        _ => return Err(format!("{text:?}: the unit must be d, h, m, s or ms")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    /// Parses `input` as a date (or a period when it starts with 'P'); `expected` is `Ok(())` for a
    /// round trip or `Err(substring of the message)`.
    fn check(input: &str, expected: Result<(), &str>) {
        let got = if input.starts_with('P') {
            Period::parse(input).map(|p| p.to_string())
        } else {
            Date::parse(input).map(|d| d.to_string())
        };
        match (got, expected) {
            (Ok(text), Ok(())) => assert_eq!(text, input),
            (Err(e), Err(msg)) => {
                let text = e.to_string();
                assert!(text.contains(msg), "{input}: {text:?} lacks {msg:?}");
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parse_table() {
        check("2025-02-01", Ok(()));
        check("1900-01-01", Ok(()));
        check("9999-12-31", Ok(()));
        check("2024-02-29", Ok(()));
        check("2025-2-1", Err("expected YYYY-MM-DD"));
        check("2025-02-01T00:00", Err("expected YYYY-MM-DD"));
        check("2025/02/01", Err("expected YYYY-MM-DD"));
        check("+025-02-01", Err("expected YYYY-MM-DD"));
        check("２025-02-01", Err("expected YYYY-MM-DD"));
        check("", Err("expected YYYY-MM-DD"));
        check("1899-12-31", Err("year outside"));
        check("2025-13-01", Err("month must be"));
        check("2025-00-01", Err("month must be"));
        check("2025-02-29", Err("day does not exist"));
        check("1900-02-29", Err("day does not exist"));
        check("2025-04-00", Err("day does not exist"));
        check("P3Y", Ok(()));
        check("P36M", Ok(()));
        check("P30D", Ok(()));
        check("P1200D", Ok(()));
        check("P", Err("expected P<n>Y"));
        check("PY", Err("expected P<n>Y"));
        check("P3W", Err("expected P<n>Y"));
        check("P3y", Err("expected P<n>Y"));
        check("P1Y6M", Err("expected P<n>Y"));
        check("P-3Y", Err("expected P<n>Y"));
        check("P3Ü", Err("expected P<n>Y"));
        check("P03Y", Err("leading zeros"));
        check("P0Y", Err("value must be 1 to 1200"));
        check("P1201M", Err("value must be 1 to 1200"));
        check("P99999999999D", Err("value must be 1 to 1200"));
    }

    #[test]
    fn arithmetic() {
        assert_eq!(date("1970-01-01").days_since_unix_epoch(), 0);
        assert_eq!(date("2000-03-01").days_since_unix_epoch(), 11_017);
        assert_eq!(date("1900-01-01").days_since_unix_epoch(), -25_567);
        assert_eq!(
            date("2024-01-31").add_months(1).unwrap(),
            date("2024-02-29")
        );
        assert_eq!(
            date("2024-03-31").add_months(-1).unwrap(),
            date("2024-02-29")
        );
        assert_eq!(
            date("2024-12-15").add_months(1).unwrap(),
            date("2025-01-15")
        );
        assert_eq!(
            date("2024-02-29").add_period(&Period::Years(1)).unwrap(),
            date("2025-02-28")
        );
        assert_eq!(
            date("2025-01-01").add_period(&Period::Days(30)).unwrap(),
            date("2025-01-31")
        );
        assert_eq!(
            date("2025-01-01").add_period(&Period::Months(36)).unwrap(),
            date("2028-01-01")
        );
        assert_eq!(date("2024-12-31").add_days(1).unwrap(), date("2025-01-01"));
        assert_eq!(date("9999-12-31").add_days(1), Err(DateError::OutOfRange));
        assert_eq!(
            date("9999-01-01").add_period(&Period::Years(1)),
            Err(DateError::OutOfRange)
        );
        assert_eq!(date("1900-01-01").add_days(-1), Err(DateError::OutOfRange));
        assert_eq!(
            date("2000-01-01").add_days(i64::MAX),
            Err(DateError::OutOfRange)
        );
        assert_eq!(
            date("2000-01-01").add_months(i64::MIN),
            Err(DateError::OutOfRange)
        );
        assert!(date("2025-01-02") > date("2024-12-31"));
    }

    #[test]
    fn instants() {
        let d = date("2025-01-01");
        assert_eq!(d.start_unix_ms(0), 1_735_689_600_000);
        // Beijing (UTC+8) midnight is 16:00 UTC the day before.
        assert_eq!(d.start_unix_ms(480), 1_735_689_600_000 - 8 * 3_600_000);
        assert_eq!(Date::from_unix_ms(d.start_unix_ms(480), 480).unwrap(), d);
        assert_eq!(
            Date::from_unix_ms(d.start_unix_ms(480) - 1, 480).unwrap(),
            date("2024-12-31")
        );
        assert_eq!(
            Date::from_unix_ms(d.start_unix_ms(480), 0).unwrap(),
            date("2024-12-31")
        );
        assert_eq!(Date::from_unix_ms(i64::MAX, 60), Err(DateError::OutOfRange));
        assert_eq!(
            Date::from_unix_ms(i64::MIN, -60),
            Err(DateError::OutOfRange)
        );
    }

    #[test]
    fn serde_json_round_trip() {
        let d = date("2025-02-01");
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2025-02-01\"");
        assert_eq!(serde_json::from_str::<Date>("\"2025-02-01\"").unwrap(), d);
        assert!(serde_json::from_str::<Date>("\"2025-2-1\"").is_err());
        let p = Period::Years(3);
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"P3Y\"");
        assert_eq!(serde_json::from_str::<Period>("\"P3Y\"").unwrap(), p);
        assert!(serde_json::from_str::<Period>("\"P03Y\"").is_err());
    }

    proptest! {
        #[test]
        fn prop_days_round_trip(days in -25_567i64..2_932_896) {
            let d = Date::from_days_since_unix_epoch(days).unwrap();
            prop_assert_eq!(d.days_since_unix_epoch(), days);
            prop_assert_eq!(Date::parse(&d.to_string()).unwrap(), d);
            if let Ok(next) = d.add_days(1) {
                prop_assert!(next > d);
            }
        }

        #[test]
        fn prop_parse_never_panics(s in "[0-9P-]{0,12}[YMD]?") {
            if let Ok(d) = Date::parse(&s) {
                prop_assert_eq!(d.to_string(), s.clone());
            }
            if let Ok(p) = Period::parse(&s) {
                prop_assert_eq!(p.to_string(), s);
            }
        }
    }

    #[test]
    fn durations_parse_with_their_unit_and_name_bad_text() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms(" 12h "), Ok(12 * 3_600_000));
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert!(parse_duration_ms("d").unwrap_err().contains("whole number"));
        assert!(
            parse_duration_ms("3w")
                .unwrap_err()
                .contains("unit must be")
        );
        assert!(parse_duration_ms("-1d").unwrap_err().contains("\"-1d\""));
        assert!(
            parse_duration_ms("99999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }
}
