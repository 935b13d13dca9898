//! Judging an independent measurement against a certificate's property value (domain.md §6).
//!
//! The measurement is first brought to the reference's unit exactly (decimal arithmetic), its
//! relative uncertainty (if any) resolved to an absolute one; only then are the scores computed
//! in `f64`, which is fine for a statistic that is compared with 1 and never stored as a value.
//!
//! Coverage factors are never assumed: each expanded uncertainty is divided by its own k to get
//! a standard uncertainty, and En re-expands both with k = 2. When both sides state k = 2 this is
//! exactly the textbook `En = (x_lab − x_ref) / sqrt(U_lab² + U_ref²)`.

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::records::{PropertyValue, Uncertainty, ValueKind, Verdict};
use crate::units::{self, Unit, UnitError};

/// A verification is inconclusive when the lab's (k = 2) expanded uncertainty is more than this
/// many times the reference's: the test can then hardly detect any bias (ISO Guide 33).
pub const INCONCLUSIVE_RATIO: f64 = 3.0;

/// The common coverage factor both sides are re-expanded with for En.
pub const EN_COVERAGE_FACTOR: f64 = 2.0;

/// Slack on `|En| ≤ 1` and on the inconclusive ratio: the inputs are exact decimals but the score is computed in `f64`, so a
/// result exactly on the boundary in decimal arithmetic may come out a few ulps above 1.
const EN_TOLERANCE: f64 = 1e-9;

/// The scores of one comparison, all in the reference's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Normalised error with both uncertainties re-expanded with k = 2.
    pub en: f64,
    /// ζ score: the difference over the combined standard uncertainty.
    pub zeta: f64,
    /// `x_lab − x_ref`.
    pub difference: f64,
    /// The lab's standard uncertainty `U_lab / k_lab`.
    pub u_lab: f64,
    /// The reference's standard uncertainty `U_ref / k_ref`.
    pub u_ref: f64,
    /// Pass, fail or inconclusive; `None` when the reference value is not certified, because
    /// only certified values may decide (reference and information values never do).
    pub verdict: Option<Verdict>,
}

/// Why a comparison could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error(
        "incompatible-unit: the measurement is in {measured} and the reference value in {reference}"
    )]
    IncompatibleUnit { measured: Unit, reference: Unit },
    #[error("out-of-range: {0}")]
    OutOfRange(String),
    #[error("no-reference-uncertainty: the {quantity} value states no uncertainty to compare with")]
    NoReferenceUncertainty { quantity: String },
    #[error("bad-uncertainty: the {side} uncertainty {detail}")]
    BadUncertainty { side: &'static str, detail: String },
}

impl From<UnitError> for CompareError {
    fn from(e: UnitError) -> Self {
        match e {
            UnitError::Incompatible { from, to, .. } => CompareError::IncompatibleUnit {
                measured: from,
                reference: to,
            },
            other => CompareError::OutOfRange(other.to_string()),
        }
    }
}

/// Compares `measured_value ± measured_u` (in `measured_unit`) with the reference value.
pub fn compare(
    reference: &PropertyValue,
    measured_value: &Decimal,
    measured_unit: Unit,
    measured_u: &Uncertainty,
) -> Result<Comparison, CompareError> {
    let ref_u =
        reference
            .uncertainty
            .as_ref()
            .ok_or_else(|| CompareError::NoReferenceUncertainty {
                quantity: reference.quantity.clone(),
            })?;
    // The value converts with offsets (°C → K), the uncertainty as a difference (no offset).
    let x_lab = units::convert(measured_value, measured_unit, reference.unit)?;
    let lab_expanded = absolute_expanded(measured_u, &x_lab, measured_unit, reference.unit)?;
    let ref_expanded = absolute_expanded(ref_u, &reference.value, reference.unit, reference.unit)?;

    let u_lab = standard("lab", lab_expanded, measured_u)?;
    let u_ref = standard("reference", ref_expanded, ref_u)?;
    let difference = x_lab.to_f64() - reference.value.to_f64();
    let combined = (u_lab * u_lab + u_ref * u_ref).sqrt();
    if combined.is_nan() || combined <= 0.0 || !combined.is_finite() {
        return Err(CompareError::BadUncertainty {
            side: "combined",
            detail: format!("is not a positive finite number ({combined})"),
        });
    }
    let zeta = difference / combined;
    let en = difference / (EN_COVERAGE_FACTOR * combined);

    let verdict = (reference.kind == ValueKind::Certified).then(|| {
        let (lab_u2, ref_u2) = (EN_COVERAGE_FACTOR * u_lab, EN_COVERAGE_FACTOR * u_ref);
        // The same f64 slack as for En, so that exactly 3 × U_ref (in decimals) still decides.
        if lab_u2 > INCONCLUSIVE_RATIO * ref_u2 * (1.0 + EN_TOLERANCE) {
            Verdict::Inconclusive
        } else if en.abs() <= 1.0 + EN_TOLERANCE {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    });
    Ok(Comparison {
        en,
        zeta,
        difference,
        u_lab,
        u_ref,
        verdict,
    })
}

/// U as an absolute value in `to`: a relative U is a percentage of `value_in_to` (already in
/// `to`), so it needs no unit conversion; an absolute U converts as a difference.
fn absolute_expanded(
    u: &Uncertainty,
    value_in_to: &Decimal,
    from: Unit,
    to: Unit,
) -> Result<f64, CompareError> {
    if u.relative {
        // Exact up to the last step: |x| × U, shifted two places for the percent.
        let product = value_in_to
            .checked_mul(&u.expanded)
            .and_then(|p| p.checked_mul_pow10(-2))
            .ok_or_else(|| {
                CompareError::OutOfRange(format!("{} % of {value_in_to}", u.expanded))
            })?;
        Ok(product.to_f64().abs())
    } else {
        Ok(units::convert_difference(&u.expanded, from, to)?.to_f64())
    }
}

/// `u = U / k`, refusing what static validation would have refused (U ≤ 0, k ≤ 0), because
/// this function is public and may be handed unvalidated values.
fn standard(side: &'static str, expanded: f64, u: &Uncertainty) -> Result<f64, CompareError> {
    let k = u.coverage_factor.to_f64();
    if !(k > 0.0 && k.is_finite()) {
        return Err(CompareError::BadUncertainty {
            side,
            detail: format!("has coverage factor k = {}, not > 0", u.coverage_factor),
        });
    }
    if !(expanded > 0.0 && expanded.is_finite()) {
        return Err(CompareError::BadUncertainty {
            side,
            detail: format!("U = {} is not > 0", u.expanded),
        });
    }
    Ok(expanded / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn unc(expanded: &str, k: &str, relative: bool) -> Uncertainty {
        Uncertainty {
            expanded: d(expanded),
            relative,
            coverage_factor: d(k),
            coverage_probability: None,
        }
    }

    fn reference(
        kind: ValueKind,
        value: &str,
        unit: Unit,
        u: Option<Uncertainty>,
    ) -> PropertyValue {
        PropertyValue {
            kind,
            unit,
            basis: None,
            value: d(value),
            method: None,
            quantity: "Cd".into(),
            uncertainty: u,
        }
    }

    /// Soil Cd certified 0.21 ± 0.01 mg/kg (k = 2), the worked example's reference.
    fn soil_cd() -> PropertyValue {
        reference(
            ValueKind::Certified,
            "0.21",
            Unit::MgPerKg,
            Some(unc("0.01", "2", false)),
        )
    }

    /// `expected`: `Ok((en, verdict))` with En to ±0.001, or `Err(substring of the message)`.
    fn check(
        name: &str,
        reference: PropertyValue,
        (value, unit, u): (&str, Unit, Uncertainty),
        expected: Result<(f64, Option<Verdict>), &str>,
    ) {
        match (compare(&reference, &d(value), unit, &u), expected) {
            (Ok(c), Ok((en, verdict))) => {
                assert!((c.en - en).abs() < 0.001, "{name}: En {} != {en}", c.en);
                assert_eq!(c.verdict, verdict, "{name}");
                assert!((c.zeta - 2.0 * c.en).abs() < 1e-9, "{name}: ζ = 2·En");
            }
            (Err(e), Err(msg)) => {
                let text = e.to_string();
                assert!(text.contains(msg), "{name}: {text:?} lacks {msg:?}");
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn comparison_table() {
        use Verdict::*;
        let k2 = |u: &str| unc(u, "2", false);
        check(
            "worked example",
            soil_cd(),
            ("0.23", Unit::MgPerKg, k2("0.02")),
            Ok((0.894, Some(Pass))),
        );
        check(
            "fail",
            soil_cd(),
            ("0.26", Unit::MgPerKg, k2("0.02")),
            Ok((2.236, Some(Fail))),
        );
        check(
            "negative difference fails too",
            soil_cd(),
            ("0.16", Unit::MgPerKg, k2("0.02")),
            Ok((-2.236, Some(Fail))),
        );
        check(
            "inconclusive: U_lab 0.04 > 3 × 0.01",
            soil_cd(),
            ("0.23", Unit::MgPerKg, k2("0.04")),
            Ok((0.485, Some(Inconclusive))),
        );
        check(
            "exactly 3 × U_ref still decides",
            soil_cd(),
            ("0.23", Unit::MgPerKg, k2("0.03")),
            Ok((0.632, Some(Pass))),
        );
        check(
            "lab in ug/g (same scale as mg/kg)",
            soil_cd(),
            ("0.23", Unit::UgPerG, k2("0.02")),
            Ok((0.894, Some(Pass))),
        );
        check(
            "lab in %",
            soil_cd(),
            ("0.000023", Unit::Percent, k2("0.000002")),
            Ok((0.894, Some(Pass))),
        );
        check(
            "lab in ug/kg",
            soil_cd(),
            ("230", Unit::UgPerKg, k2("20")),
            Ok((0.894, Some(Pass))),
        );
        // k = 3 on the lab side: u_lab = 0.03/3 = 0.01, re-expanded with k = 2 to 0.02: the
        // same as the worked example.
        check(
            "k=3 vs k=2",
            soil_cd(),
            ("0.23", Unit::MgPerKg, unc("0.03", "3", false)),
            Ok((0.894, Some(Pass))),
        );
        // Had k = 3 been taken as 2, En would be 0.02/sqrt(0.03² + 0.01²) = 0.632.
        check(
            "k=2 reference vs k=3 lab, bigger difference",
            soil_cd(),
            ("0.235", Unit::MgPerKg, unc("0.03", "3", false)),
            Ok((1.118, Some(Fail))),
        );
        // 8.695... % of 0.23 = 0.02 mg/kg.
        check(
            "relative lab U",
            soil_cd(),
            ("0.23", Unit::MgPerKg, unc("8.695652", "2", true)),
            Ok((0.894, Some(Pass))),
        );
        check(
            "relative reference U",
            reference(
                ValueKind::Certified,
                "100.0",
                Unit::MgPerL,
                Some(unc("1", "2", true)),
            ),
            ("101.0", Unit::MgPerL, k2("1.0")),
            Ok((0.707, Some(Pass))),
        );
        check(
            "reference value: scores but no verdict",
            reference(
                ValueKind::Reference,
                "0.21",
                Unit::MgPerKg,
                Some(k2("0.01")),
            ),
            ("0.26", Unit::MgPerKg, k2("0.02")),
            Ok((2.236, None)),
        );
        check(
            "information value: no verdict",
            reference(
                ValueKind::Information,
                "0.21",
                Unit::MgPerKg,
                Some(k2("0.01")),
            ),
            ("0.23", Unit::MgPerKg, k2("0.02")),
            Ok((0.894, None)),
        );
        check(
            "information value without U",
            reference(ValueKind::Information, "0.21", Unit::MgPerKg, None),
            ("0.23", Unit::MgPerKg, k2("0.02")),
            Err("no-reference-uncertainty"),
        );
        check(
            "incompatible unit names both",
            soil_cd(),
            ("0.23", Unit::MgPerL, k2("0.02")),
            Err("measurement is in mg/L and the reference value in mg/kg"),
        );
        check(
            "k = 0 refused",
            soil_cd(),
            ("0.23", Unit::MgPerKg, unc("0.02", "0", false)),
            Err("bad-uncertainty: the lab uncertainty has coverage factor k = 0"),
        );
        check(
            "temperature: value converts with offset, U without",
            reference(ValueKind::Certified, "298.15", Unit::K, Some(k2("0.10"))),
            ("25.05", Unit::Cel, k2("0.10")),
            Ok((0.354, Some(Pass))),
        );
    }

    #[test]
    fn worked_example_details() {
        let c = compare(
            &soil_cd(),
            &d("0.23"),
            Unit::MgPerKg,
            &unc("0.02", "2", false),
        )
        .unwrap();
        assert!((c.difference - 0.02).abs() < 1e-12);
        assert!((c.u_lab - 0.01).abs() < 1e-12);
        assert!((c.u_ref - 0.005).abs() < 1e-12);
        assert!((c.en - 0.02 / 0.000_5f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn boundary_en_of_one_passes() {
        // 0.21 ± 0.03 vs 0.26 ± 0.04: En = 0.05 / 0.05 = 1 exactly in decimals.
        let reference = reference(
            ValueKind::Certified,
            "0.21",
            Unit::MgPerKg,
            Some(unc("0.03", "2", false)),
        );
        let c = compare(
            &reference,
            &d("0.26"),
            Unit::MgPerKg,
            &unc("0.04", "2", false),
        )
        .unwrap();
        assert_eq!(c.verdict, Some(Verdict::Pass), "En = {}", c.en);
    }
}
