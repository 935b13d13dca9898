//! Units of measure (`Unit`): UCUM codes from a fixed table, with exact conversion.
//!
//! Each unit belongs to one [`Dimension`] and is a power of ten of that dimension's base unit
//! (plus an exact offset for `Cel`, 273.15 K). Conversion between units of one dimension is exact
//! ([`Decimal::checked_mul_pow10`]); converting across dimensions is refused, because guessing is
//! how 1000× errors happen. Unknown units are refused too.
//!
//! The stored and serialized form is always the UCUM code (`ug/g`, `Cel`, `[ppm]`). Strict parsing
//! (`FromStr`, `Deserialize`) accepts exact codes only, so stored bytes stay canonical;
//! [`Unit::parse_lenient`] also accepts display aliases such as `µg/g`, `ppm` or `°C` for user input.
//! [`Unit::display`] gives the human form.
//!
//! `%`, `[ppm]`, `g/kg` and the like are all *mass fractions* here. Whether a property is a mass
//! fraction or a volume fraction is carried by the property's quantity name, not by the unit.

use std::fmt;
use std::str::FromStr;

use crate::decimal::Decimal;

/// The kind of quantity a unit measures; only units of one dimension convert into each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// A dimensionless ratio of masses (base `1` = g/g).
    MassFraction,
    /// Mass per volume (base g/L).
    MassConcentration,
    /// Amount of substance per volume (base mol/L).
    AmountConcentration,
    /// Amount of substance per mass (base mol/kg).
    AmountContent,
    /// Base g.
    Mass,
    /// Base L.
    Volume,
    /// Base m.
    Length,
    /// Base K.
    Temperature,
    /// pH (no conversion).
    Ph,
    /// Base S/m.
    ElectricalConductivity,
    /// Activity per mass (base Bq/kg).
    ActivityContent,
}

impl Dimension {
    /// Lower-case English name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::MassFraction => "mass fraction",
            Dimension::MassConcentration => "mass concentration",
            Dimension::AmountConcentration => "amount concentration",
            Dimension::AmountContent => "amount content",
            Dimension::Mass => "mass",
            Dimension::Volume => "volume",
            Dimension::Length => "length",
            Dimension::Temperature => "temperature",
            Dimension::Ph => "pH",
            Dimension::ElectricalConductivity => "electrical conductivity",
            Dimension::ActivityContent => "activity content",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a unit text or a conversion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "unknown unit {text:?}; known units are listed by Unit::all() (e.g. mg/kg, ug/g, %, mg/L, mol/L)"
    )]
    Unknown { text: String },
    #[error("unit {text:?} is a display alias; the stored form is the UCUM code {code:?}")]
    Alias { text: String, code: &'static str },
    #[error("cannot convert {from} to {to}: {from_dim} vs {to_dim}")]
    Incompatible {
        from: Unit,
        to: Unit,
        from_dim: Dimension,
        to_dim: Dimension,
    },
    #[error("cannot convert {value} {from} to {to}: result out of decimal range")]
    OutOfRange { value: String, from: Unit, to: Unit },
}

macro_rules! units {
    ($( $variant:ident => ($code:literal, $display:literal, $dim:ident, $exp:literal) ),* $(,)?) => {
        /// A unit of measure from the fixed table (see [`Unit::all`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Unit { $( #[doc = $code] $variant ),* }

        const TABLE: &[Info] = &[ $( Info {
            unit: Unit::$variant, code: $code, display: $display, dim: Dimension::$dim, exp: $exp,
        } ),* ];
    };
}

struct Info {
    unit: Unit,
    code: &'static str,
    display: &'static str,
    dim: Dimension,
    /// Power of ten relative to the dimension's base unit.
    exp: i32,
}

units! {
    One => ("1", "g/g", MassFraction, 0),
    Percent => ("%", "%", MassFraction, -2),
    GPer100G => ("g/100g", "g/100 g", MassFraction, -2),
    GPerKg => ("g/kg", "g/kg", MassFraction, -3),
    MgPerG => ("mg/g", "mg/g", MassFraction, -3),
    Ppm => ("[ppm]", "ppm", MassFraction, -6),
    MgPerKg => ("mg/kg", "mg/kg", MassFraction, -6),
    UgPerG => ("ug/g", "µg/g", MassFraction, -6),
    Ppb => ("[ppb]", "ppb", MassFraction, -9),
    UgPerKg => ("ug/kg", "µg/kg", MassFraction, -9),
    NgPerG => ("ng/g", "ng/g", MassFraction, -9),
    NgPerKg => ("ng/kg", "ng/kg", MassFraction, -12),
    GPerL => ("g/L", "g/L", MassConcentration, 0),
    KgPerM3 => ("kg/m3", "kg/m³", MassConcentration, 0),
    MgPerML => ("mg/mL", "mg/mL", MassConcentration, 0),
    MgPerL => ("mg/L", "mg/L", MassConcentration, -3),
    UgPerML => ("ug/mL", "µg/mL", MassConcentration, -3),
    UgPerL => ("ug/L", "µg/L", MassConcentration, -6),
    NgPerML => ("ng/mL", "ng/mL", MassConcentration, -6),
    NgPerL => ("ng/L", "ng/L", MassConcentration, -9),
    MolPerL => ("mol/L", "mol/L", AmountConcentration, 0),
    MmolPerL => ("mmol/L", "mmol/L", AmountConcentration, -3),
    MolPerM3 => ("mol/m3", "mol/m³", AmountConcentration, -3),
    UmolPerL => ("umol/L", "µmol/L", AmountConcentration, -6),
    NmolPerL => ("nmol/L", "nmol/L", AmountConcentration, -9),
    MolPerKg => ("mol/kg", "mol/kg", AmountContent, 0),
    MmolPerG => ("mmol/g", "mmol/g", AmountContent, 0),
    MmolPerKg => ("mmol/kg", "mmol/kg", AmountContent, -3),
    UmolPerKg => ("umol/kg", "µmol/kg", AmountContent, -6),
    Kg => ("kg", "kg", Mass, 3),
    G => ("g", "g", Mass, 0),
    Mg => ("mg", "mg", Mass, -3),
    Ug => ("ug", "µg", Mass, -6),
    L => ("L", "L", Volume, 0),
    ML => ("mL", "mL", Volume, -3),
    UL => ("uL", "µL", Volume, -6),
    M => ("m", "m", Length, 0),
    Mm => ("mm", "mm", Length, -3),
    Um => ("um", "µm", Length, -6),
    Nm => ("nm", "nm", Length, -9),
    K => ("K", "K", Temperature, 0),
    Cel => ("Cel", "°C", Temperature, 0),
    Ph => ("[pH]", "pH", Ph, 0),
    SPerM => ("S/m", "S/m", ElectricalConductivity, 0),
    MSPerCm => ("mS/cm", "mS/cm", ElectricalConductivity, -1),
    USPerCm => ("uS/cm", "µS/cm", ElectricalConductivity, -4),
    BqPerKg => ("Bq/kg", "Bq/kg", ActivityContent, 0),
    BqPerG => ("Bq/g", "Bq/g", ActivityContent, 3),
}

/// Offset added after scaling to reach the base unit: `Cel` → K is +273.15 (exact).
fn offset(unit: Unit) -> Option<Decimal> {
    match unit {
        Unit::Cel => Decimal::new(27315, 2),
        _ => None,
    }
}

impl Unit {
    fn info(self) -> &'static Info {
        &TABLE[self as usize]
    }

    /// Every unit in the table, in documentation order.
    pub fn all() -> impl Iterator<Item = Unit> {
        TABLE.iter().map(|i| i.unit)
    }

    /// The UCUM code (the stored form).
    pub fn code(self) -> &'static str {
        self.info().code
    }

    /// The human form, e.g. `µg/g`, `°C`, `%`.
    pub fn display(self) -> &'static str {
        self.info().display
    }

    pub fn dimension(self) -> Dimension {
        self.info().dim
    }

    /// Strict parse: the exact UCUM code only.
    pub fn parse(text: &str) -> Result<Unit, UnitError> {
        if let Some(info) = TABLE.iter().find(|i| i.code == text) {
            return Ok(info.unit);
        }
        match Unit::parse_lenient(text) {
            Ok(unit) => Err(UnitError::Alias {
                text: text.to_string(),
                code: unit.code(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Lenient parse for user input: also accepts `µ`/`μ` for `u`, `ppm`, `ppb`, `°C`, `℃`, `pH`,
    /// `g/g`, `m³` and whitespace.
    pub fn parse_lenient(text: &str) -> Result<Unit, UnitError> {
        let trimmed = text.trim();
        let mapped: String = match trimmed {
            "ppm" => "[ppm]".into(),
            "ppb" => "[ppb]".into(),
            "°C" | "℃" => "Cel".into(),
            "pH" => "[pH]".into(),
            "g/g" => "1".into(),
            _ => trimmed
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| match c {
                    'µ' | 'μ' => 'u',
                    '³' => '3',
                    c => c,
                })
                .collect(),
        };
        TABLE
            .iter()
            .find(|i| i.code == mapped)
            .map(|i| i.unit)
            .ok_or_else(|| UnitError::Unknown {
                text: text.to_string(),
            })
    }

    /// True when values convert between the two units.
    pub fn is_compatible(self, other: Unit) -> bool {
        self.dimension() == other.dimension()
    }
}

fn check_compatible(from: Unit, to: Unit) -> Result<(), UnitError> {
    if from.is_compatible(to) {
        Ok(())
    } else {
        Err(UnitError::Incompatible {
            from,
            to,
            from_dim: from.dimension(),
            to_dim: to.dimension(),
        })
    }
}

/// Exact conversion of a value (applies offsets, e.g. 25 Cel = 298.15 K).
pub fn convert(value: &Decimal, from: Unit, to: Unit) -> Result<Decimal, UnitError> {
    check_compatible(from, to)?;
    if from == to {
        return Ok(*value);
    }
    let out_of_range = || UnitError::OutOfRange {
        value: value.to_string(),
        from,
        to,
    };
    let (off_from, off_to) = (offset(from), offset(to));
    if off_from.is_none() && off_to.is_none() {
        return value
            .checked_mul_pow10(from.info().exp - to.info().exp)
            .ok_or_else(out_of_range);
    }
    let mut base = value
        .checked_mul_pow10(from.info().exp)
        .ok_or_else(out_of_range)?;
    if let Some(o) = off_from {
        base = base.checked_add(&o).ok_or_else(out_of_range)?;
    }
    if let Some(o) = off_to {
        base = base.checked_sub(&o).ok_or_else(out_of_range)?;
    }
    base.checked_mul_pow10(-to.info().exp)
        .ok_or_else(out_of_range)
}

/// Exact conversion of a difference or an uncertainty (no offsets: 1 Cel difference = 1 K).
pub fn convert_difference(value: &Decimal, from: Unit, to: Unit) -> Result<Decimal, UnitError> {
    check_compatible(from, to)?;
    value
        .checked_mul_pow10(from.info().exp - to.info().exp)
        .ok_or_else(|| UnitError::OutOfRange {
            value: value.to_string(),
            from,
            to,
        })
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Unit {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Unit::parse(s)
    }
}

impl serde::Serialize for Unit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Unit::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    /// Converts `value from` to `to`; `expected` is the result text or a substring of the error.
    fn check(value: &str, from: &str, to: &str, expected: Result<&str, &str>) {
        let from_u = Unit::parse(from).unwrap();
        let to_u = Unit::parse(to).unwrap();
        match (convert(&dec(value), from_u, to_u), expected) {
            (Ok(v), Ok(want)) => assert_eq!(v.to_string(), want, "{value} {from} -> {to}"),
            (Err(e), Err(msg)) => {
                let text = e.to_string();
                assert!(text.contains(msg), "{text:?} lacks {msg:?}");
            }
            (got, want) => panic!("{value} {from} -> {to}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, info) in TABLE.iter().enumerate() {
            assert_eq!(info.unit as usize, i, "{}", info.code);
            assert_eq!(Unit::parse(info.code), Ok(info.unit));
            assert_eq!(info.unit.to_string(), info.code);
            assert_eq!(
                Unit::parse_lenient(info.display),
                Ok(info.unit),
                "{}",
                info.display
            );
        }
        let mut codes: Vec<_> = TABLE.iter().map(|i| i.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TABLE.len());
    }

    #[test]
    fn conversions() {
        check("0.21", "mg/kg", "%", Ok("0.000021"));
        check("0.21", "mg/kg", "ug/g", Ok("0.21"));
        check("0.000021", "%", "mg/kg", Ok("0.21"));
        check("1", "mmol/L", "mol/L", Ok("0.001"));
        check("25", "Cel", "K", Ok("298.15"));
        check("298.15", "K", "Cel", Ok("25.00"));
        check("0", "Cel", "Cel", Ok("0"));
        check("1.5", "[ppm]", "mg/kg", Ok("1.5"));
        check("3", "ng/g", "ug/kg", Ok("3"));
        check("1", "mS/cm", "uS/cm", Ok("1000"));
        check("1", "mS/cm", "S/m", Ok("0.1"));
        check("2", "Bq/g", "Bq/kg", Ok("2000"));
        check("1", "kg/m3", "g/L", Ok("1"));
        check("5", "mol/m3", "mmol/L", Ok("5"));
        check("12.5", "g/100g", "%", Ok("12.5"));
        check(
            "1",
            "mg/L",
            "mg/kg",
            Err("cannot convert mg/L to mg/kg: mass concentration vs mass fraction"),
        );
        check("7", "[pH]", "K", Err("pH vs temperature"));
        check("1", "ng/kg", "1", Ok("0.000000000001"));
        check(
            "99999999999999999999999999999999999999",
            "kg",
            "ug",
            Err("out of decimal range"),
        );
    }

    #[test]
    fn differences_ignore_offset() {
        let u = convert_difference(&dec("0.5"), Unit::Cel, Unit::K).unwrap();
        assert_eq!(u.to_string(), "0.5");
        let u = convert_difference(&dec("0.02"), Unit::MgPerKg, Unit::Percent).unwrap();
        assert_eq!(u.to_string(), "0.000002");
        assert!(convert_difference(&dec("1"), Unit::MgPerL, Unit::MgPerKg).is_err());
    }

    #[test]
    fn parsing() {
        assert_eq!(Unit::parse_lenient("µg/g"), Ok(Unit::UgPerG));
        assert_eq!(Unit::parse_lenient("μg/g"), Ok(Unit::UgPerG));
        assert_eq!(Unit::parse_lenient(" ppm "), Ok(Unit::Ppm));
        assert_eq!(Unit::parse_lenient("ppb"), Ok(Unit::Ppb));
        assert_eq!(Unit::parse_lenient("°C"), Ok(Unit::Cel));
        assert_eq!(Unit::parse_lenient("℃"), Ok(Unit::Cel));
        assert_eq!(Unit::parse_lenient("µS/cm"), Ok(Unit::USPerCm));
        assert_eq!(Unit::UgPerG.display(), "µg/g");
        assert_eq!(Unit::Cel.display(), "°C");
        let e = Unit::parse("µg/g").unwrap_err().to_string();
        assert_eq!(
            e,
            "unit \"µg/g\" is a display alias; the stored form is the UCUM code \"ug/g\""
        );
        let e = Unit::parse("mg/kgg").unwrap_err().to_string();
        assert!(e.starts_with("unknown unit \"mg/kgg\"; known units"), "{e}");
        assert!(Unit::parse_lenient("").is_err());
        assert!(Unit::parse("MG/KG").is_err());
        assert_eq!(Unit::all().count(), TABLE.len());
        assert_eq!(Unit::Percent.dimension(), Dimension::MassFraction);
    }

    #[test]
    fn serde_json_round_trip() {
        let json = serde_json::to_string(&Unit::UgPerG).unwrap();
        assert_eq!(json, "\"ug/g\"");
        assert_eq!(serde_json::from_str::<Unit>(&json).unwrap(), Unit::UgPerG);
        assert!(serde_json::from_str::<Unit>("\"µg/g\"").is_err());
        assert!(serde_json::from_str::<Unit>("\"ppm\"").is_err());
    }
}
