//! Unit serial numbers (`SerialRange`, `SerialSet`).
//!
//! A serial is a prefix followed by a zero-padded number: `A-0007` has prefix `A-` and width 4.
//! The prefix is everything before the trailing run of ASCII digits (it may be empty) and is at
//! most 32 printable ASCII characters without spaces or `..`; the width is 1 to 18 digits.
//!
//! A range is written `A-0001..A-0500` (both ends share prefix and width, first <= last) or as a
//! single serial `A-0007`. The text is canonical: a one-serial range must be written as the single
//! serial. A [`SerialSet`] is a list of non-overlapping ranges, serialized as an array of range
//! strings in the order given.

use std::fmt;
use std::str::FromStr;

const MAX_PREFIX: usize = 32;
const MAX_WIDTH: usize = 18;

/// Why a serial, range or set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial {text:?}: empty text")]
    Empty { text: String },
    #[error("serial {text:?}: must end in 1 to {MAX_WIDTH} digits")]
    BadWidth { text: String },
    #[error("serial {text:?}: prefix longer than {MAX_PREFIX} characters")]
    PrefixTooLong { text: String },
    #[error("serial {text:?}: prefix character {ch:?} is not printable ASCII without spaces")]
    BadPrefixChar { text: String, ch: char },
    #[error("serial range {text:?}: more than one '..'")]
    ExtraDots { text: String },
    #[error("serial range {text:?}: both ends must share prefix and digit count")]
    Mismatch { text: String },
    #[error("serial range {text:?}: empty serial range (first > last)")]
    EmptyRange { text: String },
    #[error("serial range {text:?}: first equals last; write the single serial")]
    Degenerate { text: String },
    #[error("serial set: ranges {a} and {b} overlap")]
    Overlap { a: String, b: String },
}

/// A serial split into prefix, numeric value and digit count.
fn split_serial(s: &str, text: &str) -> Result<(String, u64, usize), SerialError> {
    if s.is_empty() {
        return Err(SerialError::Empty { text: text.into() });
    }
    let digits = s.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > MAX_WIDTH {
        return Err(SerialError::BadWidth { text: text.into() });
    }
    let (prefix, num) = s.split_at(s.len() - digits);
    if let Some(ch) = prefix.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(SerialError::BadPrefixChar {
            text: text.into(),
            ch,
        });
    }
    if prefix.contains("..") {
        return Err(SerialError::ExtraDots { text: text.into() });
    }
    if prefix.len() > MAX_PREFIX {
        return Err(SerialError::PrefixTooLong { text: text.into() });
    }
    // At most 18 ASCII digits always fit in u64.
    let value = num
        .parse()
        .map_err(|_| SerialError::BadWidth { text: text.into() })?;
    Ok((prefix.to_string(), value, digits))
}

/// A contiguous range of serials sharing prefix and width.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialRange {
    prefix: String,
    width: usize,
    first: u64,
    last: u64,
}

impl SerialRange {
    /// Strict parse of `P0001..P0500` or `P0007`.
    pub fn parse(text: &str) -> Result<SerialRange, SerialError> {
        match text.split_once("..") {
            None => {
                let (prefix, n, width) = split_serial(text, text)?;
                Ok(SerialRange {
                    prefix,
                    width,
                    first: n,
                    last: n,
                })
            }
            Some((a, b)) => {
                if b.contains("..") {
                    return Err(SerialError::ExtraDots { text: text.into() });
                }
                let (pa, first, wa) = split_serial(a, text)?;
                let (pb, last, wb) = split_serial(b, text)?;
                if pa != pb || wa != wb {
                    return Err(SerialError::Mismatch { text: text.into() });
                }
                match first.cmp(&last) {
                    std::cmp::Ordering::Greater => {
                        Err(SerialError::EmptyRange { text: text.into() })
                    }
                    std::cmp::Ordering::Equal => Err(SerialError::Degenerate { text: text.into() }),
                    std::cmp::Ordering::Less => Ok(SerialRange {
                        prefix: pa,
                        width: wa,
                        first,
                        last,
                    }),
                }
            }
        }
    }

    fn format(&self, n: u64) -> String {
        format!("{}{:0width$}", self.prefix, n, width = self.width)
    }

    /// The first serial, e.g. `A-0001`.
    pub fn first(&self) -> String {
        self.format(self.first)
    }

    /// The last serial, e.g. `A-0500`.
    pub fn last(&self) -> String {
        self.format(self.last)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Digit count of the numeric part.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of serials (at least 1).
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a range holds at least one serial.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True if `serial` (exact text, same prefix and width) lies in the range.
    pub fn contains(&self, serial: &str) -> bool {
        match split_serial(serial, serial) {
            Ok((p, n, w)) => {
                p == self.prefix && w == self.width && (self.first..=self.last).contains(&n)
            }
            Err(_) => false,
        }
    }

    /// Every serial in order.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        (self.first..=self.last).map(|n| self.format(n))
    }

    fn same_family(&self, other: &SerialRange) -> bool {
        self.prefix == other.prefix && self.width == other.width
    }

    /// True if any serial is in both ranges.
    pub fn overlaps(&self, other: &SerialRange) -> bool {
        self.same_family(other) && self.first <= other.last && other.first <= self.last
    }

    /// True if every serial of `self` is in `other`.
    pub fn is_subset_of(&self, other: &SerialRange) -> bool {
        self.same_family(other) && other.first <= self.first && self.last <= other.last
    }
}

impl fmt::Display for SerialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            f.write_str(&self.first())
        } else {
            write!(f, "{}..{}", self.first(), self.last())
        }
    }
}

impl FromStr for SerialRange {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SerialRange::parse(s)
    }
}

impl serde::Serialize for SerialRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for SerialRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SerialRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A list of pairwise non-overlapping ranges, kept in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SerialSet {
    ranges: Vec<SerialRange>,
}

impl SerialSet {
    /// Checks that no two ranges overlap (the error names both).
    pub fn new(ranges: Vec<SerialRange>) -> Result<SerialSet, SerialError> {
        let mut sorted: Vec<&SerialRange> = ranges.iter().collect();
        sorted.sort();
        for pair in sorted.windows(2) {
            if pair[0].overlaps(pair[1]) {
                return Err(SerialError::Overlap {
                    a: pair[0].to_string(),
                    b: pair[1].to_string(),
                });
            }
        }
        Ok(SerialSet { ranges })
    }

    pub fn ranges(&self) -> &[SerialRange] {
        &self.ranges
    }

    /// Total number of serials.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(SerialRange::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.ranges.iter().any(|r| r.contains(serial))
    }

    /// Every serial, range by range.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.ranges.iter().flat_map(SerialRange::iter)
    }

    /// True if any serial is in both sets.
    pub fn overlaps(&self, other: &SerialSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// True if every serial of `self` is in `other`.
    pub fn is_subset_of(&self, other: &SerialSet) -> bool {
        self.ranges.iter().all(|r| {
            let mut covering: Vec<&SerialRange> =
                other.ranges.iter().filter(|o| o.overlaps(r)).collect();
            covering.sort();
            // Ranges in `other` do not overlap, so walk them in order and require no gaps.
            let mut next = r.first;
            for c in covering {
                if c.first > next {
                    return false;
                }
                if c.last >= r.last {
                    return true;
                }
                next = c.last + 1;
            }
            false
        })
    }
}

impl serde::Serialize for SerialSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.ranges.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SerialSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ranges = Vec::<SerialRange>::deserialize(deserializer)?;
        SerialSet::new(ranges).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> SerialRange {
        SerialRange::parse(s).unwrap()
    }

    /// `expected`: `Ok((prefix, width, len))` or `Err(substring of the message)`.
    fn check(input: &str, expected: Result<(&str, usize, u64), &str>) {
        match (SerialRange::parse(input), expected) {
            (Ok(v), Ok((p, w, n))) => {
                assert_eq!((v.prefix(), v.width(), v.len()), (p, w, n), "{input}");
                assert_eq!(v.to_string(), input, "round trip");
            }
            (Err(e), Err(msg)) => {
                let text = e.to_string();
                assert!(text.contains(msg), "{input}: {text:?} lacks {msg:?}");
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parse_table() {
        check("A-0001..A-0500", Ok(("A-", 4, 500)));
        check("A-0007", Ok(("A-", 4, 1)));
        check("0001..0500", Ok(("", 4, 500)));
        check("7", Ok(("", 1, 1)));
        check("X.1..X.9", Ok(("X.", 1, 9)));
        check("B999999999999999999", Ok(("B", 18, 1)));
        check("", Err("empty text"));
        check("A-", Err("1 to 18 digits"));
        check("A-0001..", Err("empty text"));
        check("1234567890123456789", Err("1 to 18 digits"));
        check("A 1", Err("not printable ASCII"));
        check("Ä1", Err("not printable ASCII"));
        check("A-0001..A-0002..A-0003", Err("more than one '..'"));
        check("A-0001..B-0002", Err("share prefix"));
        check("A-0001..A-02", Err("share prefix"));
        check("A-0500..A-0001", Err("empty serial range"));
        check("A-0007..A-0007", Err("write the single serial"));
        check(
            &format!("{}1", "P".repeat(33)),
            Err("prefix longer than 32"),
        );
        check(&format!("{}1", "P".repeat(32)), Ok((&"P".repeat(32), 1, 1)));
    }

    #[test]
    fn range_queries() {
        let a = r("A-0001..A-0500");
        assert_eq!(a.first(), "A-0001");
        assert_eq!(a.last(), "A-0500");
        assert!(a.contains("A-0250"));
        assert!(!a.contains("A-250"));
        assert!(!a.contains("A-0501"));
        assert!(!a.contains("B-0001"));
        assert!(!a.contains("garbage"));
        assert!(a.overlaps(&r("A-0500..A-0600")));
        assert!(!a.overlaps(&r("A-0501..A-0600")));
        assert!(!a.overlaps(&r("B-0001..B-0600")));
        assert!(r("A-0007").is_subset_of(&a));
        assert!(!r("A-0400..A-0501").is_subset_of(&a));
        assert_eq!(
            r("A-08..A-11").iter().collect::<Vec<_>>(),
            ["A-08", "A-09", "A-10", "A-11"]
        );
    }

    #[test]
    fn sets() {
        let set = SerialSet::new(vec![r("A-0001..A-0100"), r("A-0101..A-0200"), r("B-1")]).unwrap();
        assert_eq!(set.len(), 201);
        assert!(set.contains("B-1") && set.contains("A-0150") && !set.contains("A-0201"));
        assert_eq!(set.iter().count(), 201);
        let sub = SerialSet::new(vec![r("A-0050..A-0150")]).unwrap();
        assert!(sub.is_subset_of(&set));
        assert!(sub.overlaps(&set));
        let gap = SerialSet::new(vec![r("A-0001..A-0100"), r("A-0102..A-0200")]).unwrap();
        assert!(!sub.is_subset_of(&gap));
        assert!(!SerialSet::new(vec![r("C-1")]).unwrap().overlaps(&set));
        assert!(SerialSet::default().is_subset_of(&gap));
        let e = SerialSet::new(vec![r("A-0001..A-0100"), r("B-1"), r("A-0100..A-0200")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "serial set: ranges A-0001..A-0100 and A-0100..A-0200 overlap"
        );
    }

    #[test]
    fn serde_json_round_trip() {
        let v = r("A-0001..A-0500");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"A-0001..A-0500\"");
        assert_eq!(serde_json::from_str::<SerialRange>(&json).unwrap(), v);
        let set = SerialSet::new(vec![v, r("B-7")]).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[\"A-0001..A-0500\",\"B-7\"]");
        assert_eq!(serde_json::from_str::<SerialSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<SerialSet>("[\"A-1..A-5\",\"A-5\"]").is_err());
        assert!(serde_json::from_str::<SerialRange>("\"A-5..A-5\"").is_err());
    }

    proptest! {
        #[test]
        fn prop_iter_matches_len(prefix in "[A-Z-]{0,4}", width in 1usize..6, a in 0u64..99_999, n in 0u64..300) {
            let max = 10u64.pow(width as u32) - 1;
            let first = a.min(max);
            let last = (first + n).min(max);
            let text = if first == last {
                format!("{prefix}{first:0width$}")
            } else {
                format!("{prefix}{first:0width$}..{prefix}{last:0width$}")
            };
            let range = SerialRange::parse(&text).unwrap();
            prop_assert_eq!(range.to_string(), text);
            let all: Vec<String> = range.iter().collect();
            prop_assert_eq!(all.len() as u64, range.len());
            for s in &all {
                prop_assert!(range.contains(s));
            }
        }

        #[test]
        fn prop_parse_never_panics(s in "[A0-9. -]{0,24}") {
            if let Ok(v) = SerialRange::parse(&s) {
                prop_assert_eq!(v.to_string(), s);
            }
        }
    }
}
