//! Moments given on the command line and shown to people: RFC 3339 with an offset, or a civil
//! date read in the federation's time zone; printed in that zone.

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use rmledger_schema::date::Date;

/// The current time in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Parses `now`, an RFC 3339 time (`2027-03-01T12:00:00+08:00`, `…Z`) or a date (`2027-03-01`,
/// meaning 00:00 that day in the federation's offset) into Unix milliseconds.
pub fn parse_time(text: &str, utc_offset_minutes: i32) -> Result<u64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_unix_ms());
    }
    let ms = if text.len() == 10 {
        Date::parse(text)
            .map_err(|e| format!("{text:?}: {e}"))?
            .start_unix_ms(utc_offset_minutes)
    } else {
        text.parse::<Timestamp>()
            .map_err(|e| {
                format!(
                    "{text:?} is not a time: give RFC 3339 with an offset (2027-03-01T12:00:00+08:00), a date (2027-03-01) or now ({e})"
                )
            })?
            .as_millisecond()
    };
    u64::try_from(ms).map_err(|_| format!("{text:?} is before 1970"))
}

/// `2027-03-01 12:00:00 +08:00` in the given offset.
pub fn format_time(unix_ms: u64, utc_offset_minutes: i32) -> String {
    let zone = Offset::from_seconds(utc_offset_minutes * 60)
        .map(TimeZone::fixed)
        .unwrap_or(TimeZone::UTC);
    match i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    {
        Some(ts) => ts
            .to_zoned(zone)
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => format!("{unix_ms} ms"),
    }
}

/// RFC 3339 with milliseconds in the given offset, e.g. `2027-03-01T12:00:00.000+08:00`: what
/// [`parse_time`] reads back exactly.
pub fn rfc3339(unix_ms: u64, utc_offset_minutes: i32) -> String {
    let zone = Offset::from_seconds(utc_offset_minutes * 60)
        .map(TimeZone::fixed)
        .unwrap_or(TimeZone::UTC);
    match i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    {
        Some(ts) => ts
            .to_zoned(zone)
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        None => format!("{unix_ms} ms"),
    }
}

/// The civil date of `unix_ms` in the given offset.
pub fn format_date(unix_ms: u64, utc_offset_minutes: i32) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Date::from_unix_ms(ms, utc_offset_minutes).ok())
        .map_or_else(|| format!("{unix_ms} ms"), |d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_dates_and_prints_in_the_offset() {
        let ms = parse_time("2027-03-01T12:00:00+08:00", 480).unwrap();
        assert_eq!(ms, parse_time("2027-03-01T04:00:00Z", 0).unwrap());
        assert_eq!(format_time(ms, 480), "2027-03-01 12:00:00 +08:00");
        let day = parse_time("2027-03-01", 480).unwrap();
        assert_eq!(format_time(day, 480), "2027-03-01 00:00:00 +08:00");
        assert_eq!(format_date(day, 480), "2027-03-01");
        let odd = ms + 1234;
        assert_eq!(rfc3339(odd, 480), "2027-03-01T12:00:01.234+08:00");
        assert_eq!(parse_time(&rfc3339(odd, -300), 480).unwrap(), odd);
        assert!(parse_time("2027-03-01 12:00", 480).is_err());
        assert!(parse_time("yesterday", 480).is_err());
        assert!(parse_time("2027-02-30", 480).is_err());
    }
}
