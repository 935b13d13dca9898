//! Reference-material catalogue codes (`RmCode`), parsed loosely.
//!
//! Real codes do not always follow their scheme, so the parser only normalises and classifies; it
//! never refuses a code for its shape. Normalisation: full-width ASCII forms (`ＧＢＷ`, `（Ｅ）`) and
//! the ideographic space become ASCII, the text is trimmed and inner whitespace collapsed to one
//! space. Codes starting with `GBW` (any case) are further compacted: spaces removed, `GBW` and
//! `(E)` upper-cased (`gbw (e) 130113` → `GBW(E)130113`, `GBW 07406` → `GBW07406`). Foreign codes
//! keep their form (`NIST SRM 2709a`, `BAM-M375a`, `GSB 04-1767-2004`).
//!
//! [`RmCode::parse`] normalises user input; `FromStr` and `Deserialize` accept only text that is
//! already normalised, so stored bytes are canonical. Codes are 1 to 64 characters without
//! control characters. Serialized as a text string.

use std::fmt;
use std::str::FromStr;

const MAX_CHARS: usize = 64;

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RmCodeError {
    #[error("RM code is empty")]
    Empty,
    #[error("RM code {text:?}: longer than {MAX_CHARS} characters")]
    TooLong { text: String },
    #[error("RM code {text:?}: control character {ch:?}")]
    ControlChar { text: String, ch: char },
    #[error("RM code {text:?}: not in normalised form (expected {normalised:?})")]
    NotNormalised { text: String, normalised: String },
}

/// The coding scheme a code appears to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeScheme {
    /// `GBW` + digits: Chinese primary CRM (一级).
    Gbw,
    /// `GBW(E)` + digits: Chinese secondary CRM (二级).
    GbwE,
    /// `GSB`: Chinese national standard sample (国家实物标准).
    Gsb,
    /// `NIST SRM …`, `SRM …`, `NIST …`.
    NistSrm,
    /// `BAM-…`.
    Bam,
    /// `ERM-…`.
    Erm,
    /// Anything else, including GBW-like codes not followed by a digit.
    Other,
}

/// The grade implied by the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Primary,
    Secondary,
    Foreign,
    NationalStandardSample,
    Unknown,
}

/// A normalised RM catalogue code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RmCode(String);

fn normalise(text: &str) -> Result<String, RmCodeError> {
    if let Some(ch) = text.chars().find(|c| c.is_control()) {
        return Err(RmCodeError::ControlChar {
            text: text.into(),
            ch,
        });
    }
    let widened: String = text
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        })
        .collect();
    let mut out = widened.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.is_empty() {
        return Err(RmCodeError::Empty);
    }
    if out.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("GBW")) {
        let rest: String = out[3..].chars().filter(|c| *c != ' ').collect();
        let rest = match rest.get(..3) {
            Some(e) if e.eq_ignore_ascii_case("(E)") => format!("(E){}", &rest[3..]),
            _ => rest,
        };
        out = format!("GBW{rest}");
    }
    if out.chars().count() > MAX_CHARS {
        return Err(RmCodeError::TooLong { text: text.into() });
    }
    Ok(out)
}

impl RmCode {
    /// Lenient parse for user input: normalises, then checks length and characters.
    pub fn parse(text: &str) -> Result<RmCode, RmCodeError> {
        normalise(text).map(RmCode)
    }

    /// Strict parse: the text must already be normalised.
    pub fn parse_strict(text: &str) -> Result<RmCode, RmCodeError> {
        let normalised = normalise(text)?;
        if normalised != text {
            return Err(RmCodeError::NotNormalised {
                text: text.into(),
                normalised,
            });
        }
        Ok(RmCode(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after `GBW` / `GBW(E)` for GBW codes.
    fn gbw_body(&self) -> Option<&str> {
        let s = self.0.as_str();
        let body = s.strip_prefix("GBW(E)").or_else(|| s.strip_prefix("GBW"))?;
        body.starts_with(|c: char| c.is_ascii_digit())
            .then_some(body)
    }

    pub fn scheme(&self) -> CodeScheme {
        let s = self.0.as_str();
        if self.gbw_body().is_some() {
            if s.starts_with("GBW(E)") {
                CodeScheme::GbwE
            } else {
                CodeScheme::Gbw
            }
        } else if s.starts_with("GSB") {
            CodeScheme::Gsb
        } else if s.starts_with("NIST ") || s.starts_with("SRM") {
            CodeScheme::NistSrm
        } else if s.starts_with("BAM-") || s.starts_with("BAM ") {
            CodeScheme::Bam
        } else if s.starts_with("ERM-") || s.starts_with("ERM ") || s.starts_with("ERM®") {
            CodeScheme::Erm
        } else {
            CodeScheme::Other
        }
    }

    pub fn tier(&self) -> Tier {
        match self.scheme() {
            CodeScheme::Gbw => Tier::Primary,
            CodeScheme::GbwE => Tier::Secondary,
            CodeScheme::Gsb => Tier::NationalStandardSample,
            CodeScheme::NistSrm | CodeScheme::Bam | CodeScheme::Erm => Tier::Foreign,
            CodeScheme::Other => Tier::Unknown,
        }
    }

    /// The 2-digit class of a GBW / GBW(E) code (e.g. `07` = geology), if present.
    pub fn class_code(&self) -> Option<&str> {
        let class = self.gbw_body()?.get(..2)?;
        class.bytes().all(|b| b.is_ascii_digit()).then_some(class)
    }

    /// The trailing lower-case batch letter of a GBW / GBW(E) code (`GBW10010a` → `a`).
    pub fn batch_letter(&self) -> Option<char> {
        let body = self.gbw_body()?;
        let mut rev = body.chars().rev();
        let last = rev.next()?;
        let before = rev.next()?;
        (last.is_ascii_lowercase() && before.is_ascii_digit()).then_some(last)
    }
}

impl fmt::Display for RmCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RmCode {
    type Err = RmCodeError;
    /// Strict: see [`RmCode::parse_strict`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RmCode::parse_strict(s)
    }
}

impl serde::Serialize for RmCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RmCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RmCode::parse_strict(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `expected`: `Ok((normalised, scheme, class, batch))` or `Err(substring of the message)`.
    #[allow(clippy::type_complexity)]
    fn check(input: &str, expected: Result<(&str, CodeScheme, Option<&str>, Option<char>), &str>) {
        match (RmCode::parse(input), expected) {
            (Ok(c), Ok((text, scheme, class, batch))) => {
                assert_eq!(c.as_str(), text, "{input}");
                assert_eq!(c.scheme(), scheme, "{input}");
                assert_eq!(c.class_code(), class, "{input}");
                assert_eq!(c.batch_letter(), batch, "{input}");
                assert_eq!(
                    RmCode::parse_strict(text),
                    Ok(c.clone()),
                    "normalised is strict"
                );
                assert_eq!(c.to_string(), text);
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
        use CodeScheme::*;
        check("GBW07406", Ok(("GBW07406", Gbw, Some("07"), None)));
        check(" GBW 07406 ", Ok(("GBW07406", Gbw, Some("07"), None)));
        check("gbw10010a", Ok(("GBW10010a", Gbw, Some("10"), Some('a'))));
        check(
            "GBW（E）130113",
            Ok(("GBW(E)130113", GbwE, Some("13"), None)),
        );
        check("GBW(e)130113", Ok(("GBW(E)130113", GbwE, Some("13"), None)));
        check(
            "ＧＢＷ　０７４０６",
            Ok(("GBW07406", Gbw, Some("07"), None)),
        );
        check("GBW10010A", Ok(("GBW10010A", Gbw, Some("10"), None)));
        check("GBW7", Ok(("GBW7", Gbw, None, None)));
        check("GBW-X", Ok(("GBW-X", Other, None, None)));
        check(
            "NIST  SRM 2709a",
            Ok(("NIST SRM 2709a", NistSrm, None, None)),
        );
        check("SRM 2709a", Ok(("SRM 2709a", NistSrm, None, None)));
        check("BAM-M375a", Ok(("BAM-M375a", Bam, None, None)));
        check("ERM-CC141", Ok(("ERM-CC141", Erm, None, None)));
        check(
            "GSB 04-1767-2004",
            Ok(("GSB 04-1767-2004", Gsb, None, None)),
        );
        check("BW3301", Ok(("BW3301", Other, None, None)));
        check("", Err("RM code is empty"));
        check(" \u{3000} ", Err("RM code is empty"));
        check("GBW\n07406", Err("control character '\\n'"));
        check(&"X".repeat(65), Err("longer than 64"));
        check(&"标".repeat(64), Ok((&"标".repeat(64), Other, None, None)));
    }

    #[test]
    fn tiers_and_strictness() {
        let tier = |s: &str| RmCode::parse(s).unwrap().tier();
        assert_eq!(tier("GBW07406"), Tier::Primary);
        assert_eq!(tier("GBW(E)130113"), Tier::Secondary);
        assert_eq!(tier("GSB 04-1767-2004"), Tier::NationalStandardSample);
        assert_eq!(tier("ERM-CC141"), Tier::Foreign);
        assert_eq!(tier("foo"), Tier::Unknown);
        let e = RmCode::parse_strict("GBW 07406").unwrap_err().to_string();
        assert_eq!(
            e,
            "RM code \"GBW 07406\": not in normalised form (expected \"GBW07406\")"
        );
        assert!("GBW(e)130113".parse::<RmCode>().is_err());
    }

    #[test]
    fn serde_json_round_trip() {
        let c = RmCode::parse("GBW(E)130113").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"GBW(E)130113\"");
        assert_eq!(serde_json::from_str::<RmCode>(&json).unwrap(), c);
        assert!(serde_json::from_str::<RmCode>("\"GBW 07406\"").is_err());
    }

    proptest! {
        #[test]
        fn prop_normalise_idempotent(s in "\\PC{0,40}") {
            if let Ok(c) = RmCode::parse(&s) {
                prop_assert_eq!(RmCode::parse_strict(c.as_str()), Ok(c.clone()));
            }
        }

        #[test]
        fn prop_gbw_like(s in "[gGbBwW( )eE0-9a-z\u{3000}（）]{0,20}") {
            if let Ok(c) = RmCode::parse(&s) {
                prop_assert_eq!(RmCode::parse_strict(c.as_str()), Ok(c.clone()));
                let _ = (c.scheme(), c.class_code(), c.batch_letter());
            }
        }
    }
}
