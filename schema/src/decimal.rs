//! Exact decimal numbers as reported on certificates (`Decimal`).
//!
//! A certified value such as `12.50` is stored as an integer mantissa and a decimal scale, never
//! as a binary float. The text form is canonical: `Decimal::parse(s)?.to_string() == s` for every
//! accepted `s`, so a signed record re-encodes byte-identically. Trailing zeros are significant
//! and kept (`12.50` and `12.5` are different texts), while comparison (`PartialEq`, `Ord`) is
//! numeric (`12.50 == 12.5`); use [`Decimal::text_eq`] to compare texts.
//!
//! Accepted text: optional `-`, one or more digits without superfluous leading zeros, then an
//! optional `.` followed by one or more digits. At most 38 significant digits and 30 fraction
//! digits. Negative zero (`-0`, `-0.00`), `+`, exponents, `1.` and `.5` are refused.
//!
//! Serialized (CBOR, JSON, TOML) as a text string.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Largest number of fraction digits.
pub const MAX_SCALE: u32 = 30;
/// Largest number of significant digits of the mantissa.
pub const MAX_DIGITS: u32 = 38;
/// Exclusive upper bound of `|mantissa|` (10^38).
const MANTISSA_LIMIT: i128 = 100_000_000_000_000_000_000_000_000_000_000_000_000;

/// Why a decimal text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("decimal \"\": empty text")]
    Empty,
    #[error("decimal {text:?}: a leading '+' is not allowed")]
    LeadingPlus { text: String },
    #[error("decimal {text:?}: exponent notation is not allowed")]
    Exponent { text: String },
    #[error("decimal {text:?}: unexpected character {ch:?}")]
    UnexpectedChar { text: String, ch: char },
    #[error("decimal {text:?}: missing digits before '.'")]
    MissingIntegerDigits { text: String },
    #[error("decimal {text:?}: missing digits after '.'")]
    MissingFractionDigits { text: String },
    #[error("decimal {text:?}: leading zeros are not allowed")]
    LeadingZero { text: String },
    #[error("decimal {text:?}: negative zero is not allowed")]
    NegativeZero { text: String },
    #[error("decimal {text:?}: more than {MAX_DIGITS} significant digits")]
    TooManyDigits { text: String },
    #[error("decimal {text:?}: more than {MAX_SCALE} digits after '.'")]
    ScaleTooLarge { text: String },
}

/// An exact decimal: `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

impl Decimal {
    /// Zero with scale 0 (`"0"`).
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };

    /// Builds `mantissa × 10^-scale`; `None` if it exceeds 38 digits or scale 30.
    pub fn new(mantissa: i128, scale: u32) -> Option<Decimal> {
        if scale > MAX_SCALE || mantissa <= -MANTISSA_LIMIT || mantissa >= MANTISSA_LIMIT {
            return None;
        }
        Some(Decimal { mantissa, scale })
    }

    /// An integer with scale 0.
    pub fn from_i64(value: i64) -> Decimal {
        Decimal {
            mantissa: i128::from(value),
            scale: 0,
        }
    }

    /// Strict parse of the canonical text form.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let owned = || text.to_string();
        if text.is_empty() {
            return Err(DecimalError::Empty);
        }
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.starts_with('+') {
            return Err(DecimalError::LeadingPlus { text: owned() });
        }
        if let Some(ch) = body.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
            return Err(if ch == 'e' || ch == 'E' {
                DecimalError::Exponent { text: owned() }
            } else {
                DecimalError::UnexpectedChar { text: owned(), ch }
            });
        }
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int.is_empty() {
            return Err(DecimalError::MissingIntegerDigits { text: owned() });
        }
        if let Some(f) = frac {
            if f.is_empty() {
                return Err(DecimalError::MissingFractionDigits { text: owned() });
            }
            if f.contains('.') {
                return Err(DecimalError::UnexpectedChar {
                    text: owned(),
                    ch: '.',
                });
            }
        }
        if int.len() > 1 && int.starts_with('0') {
            return Err(DecimalError::LeadingZero { text: owned() });
        }
        let frac = frac.unwrap_or("");
        if frac.len() > MAX_SCALE as usize {
            return Err(DecimalError::ScaleTooLarge { text: owned() });
        }
        let digits = int.bytes().chain(frac.bytes()).skip_while(|b| *b == b'0');
        let mut mantissa: i128 = 0;
        let mut count = 0u32;
        for b in digits {
            count += 1;
            if count > MAX_DIGITS {
                return Err(DecimalError::TooManyDigits { text: owned() });
            }
            mantissa = mantissa * 10 + i128::from(b - b'0');
        }
        if negative {
            if mantissa == 0 {
                return Err(DecimalError::NegativeZero { text: owned() });
            }
            mantissa = -mantissa;
        }
        Ok(Decimal {
            mantissa,
            scale: frac.len() as u32,
        })
    }

    /// The integer mantissa (`value = mantissa × 10^-scale`).
    pub fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// Number of digits after the decimal point, as written.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn is_positive(&self) -> bool {
        self.mantissa > 0
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// True when both texts are identical (same value and same scale).
    pub fn text_eq(&self, other: &Decimal) -> bool {
        self.mantissa == other.mantissa && self.scale == other.scale
    }

    /// Nearest `f64` (for display and statistics only; never stored).
    pub fn to_f64(&self) -> f64 {
        // Rust's float parser rounds correctly; the canonical text always parses.
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// Exact `self × 10^exp`. The result has the smallest scale that keeps the written fraction
    /// digits (e.g. `0.21 × 10^-4 = 0.000021`, `0.21 × 10^3 = 210`). `None` if out of range.
    pub fn checked_mul_pow10(&self, exp: i32) -> Option<Decimal> {
        if exp >= 0 {
            let e = exp.unsigned_abs();
            if e <= self.scale {
                Decimal::new(self.mantissa, self.scale - e)
            } else {
                let m = self.mantissa.checked_mul(pow10(e - self.scale)?)?;
                Decimal::new(m, 0)
            }
        } else {
            Decimal::new(self.mantissa, self.scale.checked_add(exp.unsigned_abs())?)
        }
    }

    /// Both mantissas at the larger scale.
    fn aligned(&self, other: &Decimal) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(pow10(scale - self.scale)?)?;
        let b = other.mantissa.checked_mul(pow10(scale - other.scale)?)?;
        Some((a, b, scale))
    }

    /// Exact sum at the larger of the two scales.
    pub fn checked_add(&self, other: &Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Decimal::new(a.checked_add(b)?, scale)
    }

    /// Exact difference at the larger of the two scales.
    pub fn checked_sub(&self, other: &Decimal) -> Option<Decimal> {
        let (a, b, scale) = self.aligned(other)?;
        Decimal::new(a.checked_sub(b)?, scale)
    }

    /// Exact product (scales add).
    pub fn checked_mul(&self, other: &Decimal) -> Option<Decimal> {
        Decimal::new(
            self.mantissa.checked_mul(other.mantissa)?,
            self.scale.checked_add(other.scale)?,
        )
    }

    /// The same value with trailing fraction zeros removed (`12.50` → `12.5`, `3.00` → `3`).
    pub fn normalized(&self) -> Decimal {
        let mut d = *self;
        while d.scale > 0 && d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.scale -= 1;
        }
        d
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl Hash for Decimal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let n = self.normalized();
        n.mantissa.hash(state);
        n.scale.hash(state);
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = self.mantissa.signum().cmp(&other.mantissa.signum());
        if sign != Ordering::Equal || self.mantissa == 0 {
            return sign;
        }
        // Same non-zero sign. Scale up the side with the smaller scale; if that overflows i128,
        // its magnitude exceeds the other side's (which is < 10^38).
        let magnitude = match self.scale.cmp(&other.scale) {
            Ordering::Equal => self.mantissa.abs().cmp(&other.mantissa.abs()),
            Ordering::Less => match pow10(other.scale - self.scale)
                .and_then(|p| self.mantissa.abs().checked_mul(p))
            {
                Some(a) => a.cmp(&other.mantissa.abs()),
                None => Ordering::Greater,
            },
            Ordering::Greater => match pow10(self.scale - other.scale)
                .and_then(|p| other.mantissa.abs().checked_mul(p))
            {
                Some(b) => self.mantissa.abs().cmp(&b),
                None => Ordering::Less,
            },
        };
        if self.mantissa > 0 {
            magnitude
        } else {
            magnitude.reverse()
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let mut out = String::with_capacity(digits.len() + scale + 3);
        if self.mantissa < 0 {
            out.push('-');
        }
        if scale == 0 {
            out.push_str(&digits);
        } else if digits.len() > scale {
            let (i, fr) = digits.split_at(digits.len() - scale);
            out.push_str(i);
            out.push('.');
            out.push_str(fr);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', scale - digits.len()));
            out.push_str(&digits);
        }
        f.write_str(&out)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::parse(s)
    }
}

impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Decimal::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    /// `expected`: `Ok((mantissa, scale))` or `Err(substring of the error message)`.
    fn check(input: &str, expected: Result<(i128, u32), &str>) {
        match (Decimal::parse(input), expected) {
            (Ok(v), Ok((m, s))) => {
                assert_eq!((v.mantissa(), v.scale()), (m, s), "{input}");
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
        check("0", Ok((0, 0)));
        check("0.21", Ok((21, 2)));
        check("-3", Ok((-3, 0)));
        check("12.50", Ok((1250, 2)));
        check("0.5", Ok((5, 1)));
        check("0.000", Ok((0, 3)));
        check("-0.000021", Ok((-21, 6)));
        check(
            "99999999999999999999999999999999999999",
            Ok((MANTISSA_LIMIT - 1, 0)),
        );
        check("0.000000000000000000000000000001", Ok((1, 30)));
        check("", Err("empty text"));
        check("+1", Err("leading '+'"));
        check("-+1", Err("leading '+'"));
        check("1e5", Err("exponent"));
        check("1E5", Err("exponent"));
        check("1,5", Err("decimal \"1,5\": unexpected character ','"));
        check(" 1", Err("unexpected character ' '"));
        check("1.2.3", Err("unexpected character '.'"));
        check("-", Err("missing digits before"));
        check(".5", Err("missing digits before"));
        check("1.", Err("missing digits after"));
        check("007", Err("leading zeros"));
        check("00.5", Err("leading zeros"));
        check("-0", Err("negative zero"));
        check("-0.00", Err("negative zero"));
        check(
            "100000000000000000000000000000000000000",
            Err("significant digits"),
        );
        check("0.0000000000000000000000000000001", Err("digits after '.'"));
        check("١", Err("unexpected character"));
    }

    #[test]
    fn numeric_equality_and_text() {
        assert_eq!(d("12.50"), d("12.5"));
        assert!(!d("12.50").text_eq(&d("12.5")));
        assert!(d("-1") < d("0") && d("0") < d("0.001"));
        assert!(d("-2.5") < d("-2.4"));
        assert_eq!(d("0.000").cmp(&d("0")), Ordering::Equal);
        assert!(
            d("99999999999999999999999999999999999999") > d("0.000000000000000000000000000001")
        );
        assert!(
            d("-99999999999999999999999999999999999999") < d("-0.000000000000000000000000000001")
        );
        assert_eq!(d("12.50").normalized().to_string(), "12.5");
        assert_eq!(d("0.21").to_f64(), 0.21);
        assert!(d("1").is_positive() && d("-1").is_negative() && d("0.0").is_zero());
    }

    #[test]
    fn arithmetic() {
        let t = |x: Option<Decimal>| x.map(|v| v.to_string());
        assert_eq!(t(d("0.21").checked_mul_pow10(-4)), Some("0.000021".into()));
        assert_eq!(t(d("0.21").checked_mul_pow10(3)), Some("210".into()));
        assert_eq!(t(d("0.21").checked_mul_pow10(1)), Some("2.1".into()));
        assert_eq!(t(d("1").checked_mul_pow10(-3)), Some("0.001".into()));
        assert_eq!(t(d("1").checked_mul_pow10(-31)), None);
        assert_eq!(t(d("1").checked_mul_pow10(38)), None);
        assert_eq!(t(d("1").checked_mul_pow10(i32::MIN)), None);
        assert_eq!(t(d("1").checked_mul_pow10(i32::MAX)), None);
        assert_eq!(t(d("25").checked_add(&d("273.15"))), Some("298.15".into()));
        assert_eq!(
            t(d("298.15").checked_sub(&d("273.15"))),
            Some("25.00".into())
        );
        assert_eq!(t(d("1.5").checked_mul(&d("-0.20"))), Some("-0.300".into()));
        assert_eq!(
            t(Some(Decimal::from_i64(i64::MIN))),
            Some(i64::MIN.to_string())
        );
        let big = d("99999999999999999999999999999999999999");
        assert_eq!(big.checked_add(&d("1")), None);
        assert_eq!(big.checked_mul(&big), None);
    }

    #[test]
    fn serde_json_round_trip() {
        let v = d("12.50");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"12.50\"");
        let back: Decimal = serde_json::from_str(&json).unwrap();
        assert!(back.text_eq(&v));
        assert!(serde_json::from_str::<Decimal>("\"1.\"").is_err());
        assert!(serde_json::from_str::<Decimal>("1.5").is_err());
    }

    fn arb_decimal() -> impl Strategy<Value = Decimal> {
        (-(MANTISSA_LIMIT - 1)..MANTISSA_LIMIT, 0u32..=MAX_SCALE)
            .prop_map(|(m, s)| Decimal::new(m, s).unwrap())
    }

    proptest! {
        #[test]
        fn prop_round_trip(x in arb_decimal()) {
            let back = Decimal::parse(&x.to_string()).unwrap();
            prop_assert!(back.text_eq(&x));
        }

        #[test]
        fn prop_parse_never_panics(s in "[-+0-9.eE,]{0,45}") {
            if let Ok(v) = Decimal::parse(&s) {
                prop_assert_eq!(v.to_string(), s);
            }
        }

        #[test]
        fn prop_mul_pow10_exact(m in -1_000_000_000i128..1_000_000_000, s in 0u32..10, e in -15i32..15) {
            let x = Decimal::new(m, s).unwrap();
            let y = x.checked_mul_pow10(e).unwrap();
            prop_assert_eq!(y.checked_mul_pow10(-e).unwrap(), x);
            let factor = if e >= 0 {
                Decimal::new(10i128.pow(e as u32), 0).unwrap()
            } else {
                Decimal::new(1, e.unsigned_abs()).unwrap()
            };
            prop_assert_eq!(y, x.checked_mul(&factor).unwrap());
            let want_scale = if e >= 0 { s.saturating_sub(e as u32) } else { s + e.unsigned_abs() };
            prop_assert_eq!(y.scale(), want_scale);
        }

        #[test]
        fn prop_order_matches_i128(a in -(MANTISSA_LIMIT - 1)..MANTISSA_LIMIT, b in -(MANTISSA_LIMIT - 1)..MANTISSA_LIMIT, s in 0u32..=MAX_SCALE) {
            let x = Decimal::new(a, s).unwrap();
            let y = Decimal::new(b, s).unwrap();
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }

        #[test]
        fn prop_order_across_scales(a in -1_000_000i128..1_000_000, sa in 0u32..8, b in -1_000_000i128..1_000_000, sb in 0u32..8) {
            let x = Decimal::new(a, sa).unwrap();
            let y = Decimal::new(b, sb).unwrap();
            let lhs = a * 10i128.pow(8 - sa);
            let rhs = b * 10i128.pow(8 - sb);
            prop_assert_eq!(x.cmp(&y), lhs.cmp(&rhs));
        }
    }
}
