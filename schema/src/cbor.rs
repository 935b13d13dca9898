//! Canonical CBOR (RFC 8949 §4.2.1, core deterministic encoding): the strict gate every byte
//! string from outside passes before it is trusted, and the encoder for what we sign.
//!
//! cbor4ii's serde layer encodes and decodes values but accepts non-minimal integers,
//! indefinite lengths, unsorted or duplicate keys and trailing bytes. So decoding here is three
//! steps: [`check_canonical`] walks the bytes once (well-formed, bounded depth, minimal heads,
//! definite lengths, keys strictly ascending in bytewise order of their encodings, no floats,
//! valid UTF-8, nothing trailing); serde decodes the typed value; and the value is re-encoded and
//! must reproduce the input byte for byte, so no two byte strings decode to the same value.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest nesting of arrays, maps and tags we accept.
pub const MAX_DEPTH: usize = 24;

/// Why a byte string is not canonical CBOR of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("truncated CBOR at byte {at}")]
    Truncated { at: usize },
    #[error("{count} trailing bytes after the CBOR item")]
    Trailing { count: usize },
    #[error("non-minimal length or integer encoding at byte {at}")]
    NonMinimal { at: usize },
    #[error("indefinite-length item at byte {at}")]
    Indefinite { at: usize },
    #[error("map keys not in canonical order (or duplicated) at byte {at}")]
    KeyOrder { at: usize },
    #[error("floating-point or reserved simple value at byte {at}: not used by this format")]
    Float { at: usize },
    #[error("nesting deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
    #[error("invalid UTF-8 in text string at byte {at}")]
    Utf8 { at: usize },
    #[error("too large: {len} bytes, the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("does not match the expected structure: {0}")]
    Shape(String),
    #[error("decodes but does not re-encode to the same bytes (a field in a non-canonical form)")]
    NotCanonical,
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Major types of RFC 8949 §3.1.
pub mod major {
    pub const UNSIGNED: u8 = 0;
    pub const NEGATIVE: u8 = 1;
    pub const BYTES: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const ARRAY: u8 = 4;
    pub const MAP: u8 = 5;
    pub const TAG: u8 = 6;
    pub const SIMPLE: u8 = 7;
}

/// A cursor over CBOR bytes that reads heads strictly (minimal, definite).
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(CborError::Truncated { at: self.pos })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Reads one head: (major type, argument). Refuses indefinite lengths, non-minimal
    /// arguments and (for major 7) anything but false, true and null.
    pub fn head(&mut self) -> Result<(u8, u64), CborError> {
        let at = self.pos;
        let initial = self.take(1)?[0];
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => {
                let v = u64::from(self.take(1)?[0]);
                if v < 24 {
                    return Err(CborError::NonMinimal { at });
                }
                v
            }
            25 => {
                let b = self.take(2)?;
                let v = u64::from(u16::from_be_bytes([b[0], b[1]]));
                if v <= 0xff {
                    return Err(CborError::NonMinimal { at });
                }
                v
            }
            26 => {
                let b = self.take(4)?;
                let v = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if v <= 0xffff {
                    return Err(CborError::NonMinimal { at });
                }
                v
            }
            27 => {
                let b = self.take(8)?;
                let v = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                if v <= 0xffff_ffff {
                    return Err(CborError::NonMinimal { at });
                }
                v
            }
            31 => return Err(CborError::Indefinite { at }),
            _ => return Err(CborError::Truncated { at }),
        };
        if major == major::SIMPLE && !(info == 20 || info == 21 || info == 22) {
            return Err(CborError::Float { at });
        }
        Ok((major, arg))
    }

    fn expect_head(&mut self, want_major: u8, what: &str) -> Result<u64, CborError> {
        let (major, arg) = self.head()?;
        if major != want_major {
            return Err(CborError::Shape(format!("expected {what}")));
        }
        Ok(arg)
    }

    fn len(&self, arg: u64) -> Result<usize, CborError> {
        usize::try_from(arg).map_err(|_| CborError::Truncated { at: self.pos })
    }

    /// Reads a byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        let len = self.expect_head(major::BYTES, "a byte string")?;
        let len = self.len(len)?;
        self.take(len)
    }

    /// Reads a text string.
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        let at = self.pos;
        let len = self.expect_head(major::TEXT, "a text string")?;
        let len = self.len(len)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| CborError::Utf8 { at })
    }

    /// Reads an unsigned integer.
    pub fn unsigned(&mut self) -> Result<u64, CborError> {
        self.expect_head(major::UNSIGNED, "an unsigned integer")
    }

    /// Reads any integer that fits an i64.
    pub fn integer(&mut self) -> Result<i64, CborError> {
        let (major, arg) = self.head()?;
        let out_of_range = || CborError::Shape("integer out of range".into());
        match major {
            major::UNSIGNED => i64::try_from(arg).map_err(|_| out_of_range()),
            major::NEGATIVE => i64::try_from(arg)
                .map(|v| -1 - v)
                .map_err(|_| out_of_range()),
            _ => Err(CborError::Shape("expected an integer".into())),
        }
    }

    /// Reads an array head and returns its length.
    pub fn array(&mut self) -> Result<u64, CborError> {
        self.expect_head(major::ARRAY, "an array")
    }

    /// Reads a map head and returns its number of pairs.
    pub fn map(&mut self) -> Result<u64, CborError> {
        self.expect_head(major::MAP, "a map")
    }

    /// Reads a tag number.
    pub fn tag(&mut self) -> Result<u64, CborError> {
        self.expect_head(major::TAG, "a tag")
    }

    /// Skips one whole item, checking it is canonical; returns its bytes.
    pub fn item(&mut self) -> Result<&'a [u8], CborError> {
        self.item_at(0)
    }

    /// [`Reader::item`] for an item nested `depth` levels inside the one being read, whose
    /// nesting counts toward [`MAX_DEPTH`] as in a walk of the whole.
    pub fn item_at(&mut self, depth: usize) -> Result<&'a [u8], CborError> {
        let start = self.pos;
        self.check_item(depth)?;
        Ok(&self.bytes[start..self.pos])
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn check_item(&mut self, depth: usize) -> Result<(), CborError> {
        let at = self.pos;
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep { at });
        }
        let (major, arg) = self.head()?;
        match major {
            major::UNSIGNED | major::NEGATIVE | major::SIMPLE => {}
            major::BYTES => {
                let len = self.len(arg)?;
                self.take(len)?;
            }
            major::TEXT => {
                let len = self.len(arg)?;
                std::str::from_utf8(self.take(len)?).map_err(|_| CborError::Utf8 { at })?;
            }
            major::ARRAY => {
                for _ in 0..arg {
                    self.check_item(depth + 1)?;
                }
            }
            major::MAP => {
                let mut previous: Option<&[u8]> = None;
                for _ in 0..arg {
                    let key_at = self.pos;
                    self.check_item(depth + 1)?;
                    let key = &self.bytes[key_at..self.pos];
                    // RFC 8949 §4.2.1: keys sorted by the bytewise order of their encodings.
                    if previous.is_some_and(|p| p >= key) {
                        return Err(CborError::KeyOrder { at: key_at });
                    }
                    previous = Some(key);
                    self.check_item(depth + 1)?;
                }
            }
            major::TAG => self.check_item(depth + 1)?,
            _ => unreachable!("a major type has three bits"),
        }
        Ok(())
    }
}

/// Checks that `bytes` is exactly one canonical CBOR item of at most `max_len` bytes.
pub fn check_canonical(bytes: &[u8], max_len: usize) -> Result<(), CborError> {
    if bytes.len() > max_len {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let mut reader = Reader::new(bytes);
    reader.check_item(0)?;
    if !reader.is_empty() {
        return Err(CborError::Trailing {
            count: bytes.len() - reader.position(),
        });
    }
    Ok(())
}

/// Writes CBOR heads and simple items into a buffer, always in the minimal form.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

/// The length of a CBOR head (initial byte and argument) for `arg`, as [`Writer::head`] writes it.
pub fn head_len(arg: u64) -> usize {
    match arg {
        0..24 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn head(&mut self, major: u8, arg: u64) -> &mut Self {
        let m = major << 5;
        if arg < 24 {
            self.buf.push(m | arg as u8);
        } else if arg <= 0xff {
            self.buf.extend_from_slice(&[m | 24, arg as u8]);
        } else if arg <= 0xffff {
            self.buf.push(m | 25);
            self.buf.extend_from_slice(&(arg as u16).to_be_bytes());
        } else if arg <= 0xffff_ffff {
            self.buf.push(m | 26);
            self.buf.extend_from_slice(&(arg as u32).to_be_bytes());
        } else {
            self.buf.push(m | 27);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        }
        self
    }

    pub fn integer(&mut self, value: i64) -> &mut Self {
        if value >= 0 {
            self.head(major::UNSIGNED, value.unsigned_abs())
        } else {
            self.head(major::NEGATIVE, (-1 - value).unsigned_abs())
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.head(major::BYTES, bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.head(major::TEXT, text.len() as u64);
        self.buf.extend_from_slice(text.as_bytes());
        self
    }

    /// Appends an already-encoded item.
    pub fn raw(&mut self, item: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(item);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Encodes a value to canonical CBOR.
///
/// Wire structs declare their fields in canonical key order (shorter names first, then
/// bytewise), so cbor4ii's output is already canonical and this costs one check; the
/// `all_wire_types_encode_canonically` tests hold every type to that. A value that would still
/// encode non-canonically (say a map with text keys in Rust order) is refused rather than signed.
pub fn to_canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    let bytes =
        cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CborError::Encode(e.to_string()))?;
    check_canonical(&bytes, usize::MAX)
        .map_err(|e| CborError::Encode(format!("not canonical: {e}")))?;
    Ok(bytes)
}

/// Decodes a value that must be canonical CBOR of at most `max_len` bytes: strict structure,
/// then serde, then the re-encoding must reproduce the input exactly.
pub fn from_canonical<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, CborError> {
    check_canonical(bytes, max_len)?;
    from_checked_item(bytes)
}

/// [`from_canonical`] of one item a strict walk already found canonical ([`Reader::item`]):
/// serde, then the re-encoding must reproduce it.
pub fn from_checked_item<T: Serialize + DeserializeOwned>(item: &[u8]) -> Result<T, CborError> {
    let value: T = cbor4ii::serde::from_slice(item).map_err(|e| CborError::Shape(e.to_string()))?;
    if !encodes_to(&value, item)? {
        return Err(CborError::NotCanonical);
    }
    Ok(value)
}

/// Whether `value` encodes to exactly `expected`: the re-encoding is compared as it is
/// written, without building it (the decoders' hot path: one comparison, no allocation).
fn encodes_to<T: Serialize>(value: &T, expected: &[u8]) -> Result<bool, CborError> {
    let mut writer = Compare {
        expected,
        at: 0,
        differs: false,
    };
    match value.serialize(&mut cbor4ii::serde::Serializer::new(&mut writer)) {
        Ok(()) => Ok(!writer.differs && writer.at == expected.len()),
        Err(_) if writer.differs => Ok(false),
        Err(e) => Err(CborError::Encode(e.to_string())),
    }
}

/// A cbor4ii writer that checks the bytes written against `expected` instead of storing them.
struct Compare<'a> {
    expected: &'a [u8],
    at: usize,
    differs: bool,
}

/// The first byte where a re-encoding left the expected bytes.
#[derive(Debug)]
struct Differs;

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the encoding differs from the expected bytes")
    }
}

impl std::error::Error for Differs {}

impl cbor4ii::core::enc::Write for Compare<'_> {
    type Error = Differs;

    fn push(&mut self, input: &[u8]) -> Result<(), Differs> {
        let end = self.at + input.len();
        if self.expected.get(self.at..end) != Some(input) {
            self.differs = true;
            return Err(Differs);
        }
        self.at = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap()
    }

    fn check(input: &str, want: Result<(), CborError>) {
        assert_eq!(
            check_canonical(&hex(input), usize::MAX),
            want,
            "input {input}"
        );
    }

    #[test]
    fn strictness_table() {
        check("17", Ok(()));
        check("1818", Ok(()));
        check("1817", Err(CborError::NonMinimal { at: 0 }));
        check("190017", Err(CborError::NonMinimal { at: 0 }));
        check("1a0000ffff", Err(CborError::NonMinimal { at: 0 }));
        check("1b00000000ffffffff", Err(CborError::NonMinimal { at: 0 }));
        check("0000", Err(CborError::Trailing { count: 1 }));
        check("5f4100ff", Err(CborError::Indefinite { at: 0 }));
        check("9f00ff", Err(CborError::Indefinite { at: 0 }));
        // {"a": 1, "b": 2} is fine; {"b": 2, "a": 1} and {"a": 1, "a": 2} are not.
        check("a2616101616202", Ok(()));
        check("a2616202616101", Err(CborError::KeyOrder { at: 4 }));
        check("a2616101616102", Err(CborError::KeyOrder { at: 4 }));
        // Length-first: "c" before "bb".
        check("a261630162626202", Ok(()));
        check("a262626202616301", Err(CborError::KeyOrder { at: 5 }));
        check("f93c00", Err(CborError::Float { at: 0 }));
        check("fb3ff8000000000000", Err(CborError::Float { at: 0 }));
        check("f4", Ok(()));
        check("f6", Ok(()));
        check("62c328", Err(CborError::Utf8 { at: 0 }));
        check("43010203", Ok(()));
        check("4401", Err(CborError::Truncated { at: 1 }));
        check("5b7fffffffffffffff00", Err(CborError::Truncated { at: 9 }));
        check("d24100", Ok(()));
    }

    #[test]
    fn depth_is_bounded() {
        let mut deep = vec![0x81u8; MAX_DEPTH];
        deep.push(0x00);
        assert_eq!(check_canonical(&deep, usize::MAX), Ok(()));
        let mut deeper = vec![0x81u8; MAX_DEPTH + 1];
        deeper.push(0x00);
        assert!(matches!(
            check_canonical(&deeper, usize::MAX),
            Err(CborError::TooDeep { .. })
        ));
        let huge = vec![0x81u8; 100_000];
        assert!(matches!(
            check_canonical(&huge, usize::MAX),
            Err(CborError::TooDeep { .. })
        ));
    }

    #[test]
    fn size_is_bounded() {
        assert_eq!(
            check_canonical(&[0x40; 3], 2),
            Err(CborError::TooLarge { len: 3, max: 2 })
        );
    }

    #[test]
    fn writer_is_minimal() {
        for value in [
            0i64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            -1,
            -24,
            -25,
            -500,
            i64::MIN,
            i64::MAX,
        ] {
            let mut w = Writer::new();
            w.integer(value);
            let bytes = w.into_bytes();
            assert_eq!(check_canonical(&bytes, usize::MAX), Ok(()), "{value}");
            assert_eq!(Reader::new(&bytes).integer().unwrap(), value);
        }
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        a: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bb: Option<String>,
    }

    #[test]
    fn explicit_null_for_an_absent_field_is_not_canonical() {
        let with_null = hex("a2616101626262f6");
        assert_eq!(
            from_canonical::<Sample>(&with_null, 100),
            Err(CborError::NotCanonical)
        );
        let plain = to_canonical(&Sample { a: 1, bb: None }).unwrap();
        assert_eq!(plain, hex("a1616101"));
        assert_eq!(
            from_canonical::<Sample>(&plain, 100).unwrap(),
            Sample { a: 1, bb: None }
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let extra = hex("a2616101617a01");
        assert!(matches!(
            from_canonical::<Sample>(&extra, 100),
            Err(CborError::Shape(_))
        ));
    }

    #[test]
    fn the_re_encoding_is_compared_byte_for_byte() {
        let value = Sample {
            a: 1,
            bb: Some("xy".into()),
        };
        let bytes = to_canonical(&value).unwrap();
        assert_eq!(encodes_to(&value, &bytes), Ok(true));
        // A differing byte, a missing tail, an extra tail.
        let mut changed = bytes.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(encodes_to(&value, &changed), Ok(false));
        assert_eq!(encodes_to(&value, &bytes[..bytes.len() - 1]), Ok(false));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(encodes_to(&value, &longer), Ok(false));
        assert_eq!(encodes_to(&value, &[]), Ok(false));
    }
}
