//! The records an entry carries (DESIGN §4), with their static validation.
//!
//! A record is one fact in a certificate's life or in the federation's membership. Its wire form
//! is canonical CBOR inside the entry payload and JSON at the HTTP API; both come from these
//! serde types. **Field order is the canonical CBOR key order** (shorter names first, then
//! bytewise), so a struct encodes canonically as declared; `all_wire_types_encode_canonically`
//! guards this. Static validation ([`Record::validate`]) needs no ledger state: it refuses
//! what can never be right (U ≤ 0, a certified value without U, expiry before issue, an empty
//! serial range, …) and names the field and the rule.

use serde::{Deserialize, Serialize};

use crate::date::{Date, Period};
use crate::decimal::Decimal;
use crate::ids::{CertificateId, Digest, EntryId, KeyId, OrgId, PublicKey, TreeHash};
use crate::rmcode::RmCode;
use crate::serial::SerialSet;
use crate::units::Unit;

/// Roles a member may hold (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Registrar,
    Producer,
    Institute,
    Lab,
    Regulator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Registrar,
        Role::Producer,
        Role::Institute,
        Role::Lab,
        Role::Regulator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Registrar => "registrar",
            Role::Producer => "producer",
            Role::Institute => "institute",
            Role::Lab => "lab",
            Role::Regulator => "regulator",
        }
    }
}

/// One fact, as carried in an entry's `rec` field. Externally tagged: `{"Shipped": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    // Membership, on the registrar's chain.
    Enrol(Enrol),
    KeyAdded(KeyAdded),
    KeyRevoked(KeyRevoked),
    MemberSuspended(MemberStatus),
    MemberReinstated(MemberStatus),
    // The producer's certificate life.
    BatchRegistered(Certificate),
    CertificateRevised(CertificateRevised),
    StabilityCheck(StabilityCheck),
    // The institute's verification and status decisions.
    ValueVerification(ValueVerification),
    Suspended(StatusChange),
    Reinstated(StatusChange),
    Recalled(StatusChange),
    Withdrawn(StatusChange),
    // Units moving and being used.
    Shipped(Shipped),
    Received(Received),
    Opened(Opened),
    Used(Used),
    Disposed(Disposed),
    // The ledger's own housekeeping.
    Anchor(Anchor),
    ForkReported(ForkReported),
    AuditFinding(AuditFinding),
}

/// The kind of a record, without its data: what roles are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    Enrol,
    KeyAdded,
    KeyRevoked,
    MemberSuspended,
    MemberReinstated,
    BatchRegistered,
    CertificateRevised,
    StabilityCheck,
    ValueVerification,
    Suspended,
    Reinstated,
    Recalled,
    Withdrawn,
    Shipped,
    Received,
    Opened,
    Used,
    Disposed,
    Anchor,
    ForkReported,
    AuditFinding,
}

impl RecordKind {
    pub const ALL: [RecordKind; 21] = [
        RecordKind::Enrol,
        RecordKind::KeyAdded,
        RecordKind::KeyRevoked,
        RecordKind::MemberSuspended,
        RecordKind::MemberReinstated,
        RecordKind::BatchRegistered,
        RecordKind::CertificateRevised,
        RecordKind::StabilityCheck,
        RecordKind::ValueVerification,
        RecordKind::Suspended,
        RecordKind::Reinstated,
        RecordKind::Recalled,
        RecordKind::Withdrawn,
        RecordKind::Shipped,
        RecordKind::Received,
        RecordKind::Opened,
        RecordKind::Used,
        RecordKind::Disposed,
        RecordKind::Anchor,
        RecordKind::ForkReported,
        RecordKind::AuditFinding,
    ];

    /// The roles allowed to write this kind (DESIGN §4). Anchors and fork reports: any member.
    pub fn allowed_roles(self) -> &'static [Role] {
        use RecordKind as K;
        use Role as R;
        match self {
            K::Enrol | K::KeyAdded | K::KeyRevoked | K::MemberSuspended | K::MemberReinstated => {
                &[R::Registrar]
            }
            K::BatchRegistered
            | K::CertificateRevised
            | K::StabilityCheck
            | K::Withdrawn
            | K::Shipped => &[R::Producer],
            K::ValueVerification | K::Suspended | K::Reinstated => &[R::Institute],
            K::Recalled => &[R::Producer, R::Institute, R::Regulator],
            K::Received | K::Opened | K::Used => &[R::Lab],
            K::Disposed => &[R::Lab, R::Producer],
            K::AuditFinding => &[R::Regulator],
            K::Anchor | K::ForkReported => &Role::ALL,
        }
    }

    pub fn name(self) -> &'static str {
        use RecordKind as K;
        match self {
            K::Enrol => "Enrol",
            K::KeyAdded => "KeyAdded",
            K::KeyRevoked => "KeyRevoked",
            K::MemberSuspended => "MemberSuspended",
            K::MemberReinstated => "MemberReinstated",
            K::BatchRegistered => "BatchRegistered",
            K::CertificateRevised => "CertificateRevised",
            K::StabilityCheck => "StabilityCheck",
            K::ValueVerification => "ValueVerification",
            K::Suspended => "Suspended",
            K::Reinstated => "Reinstated",
            K::Recalled => "Recalled",
            K::Withdrawn => "Withdrawn",
            K::Shipped => "Shipped",
            K::Received => "Received",
            K::Opened => "Opened",
            K::Used => "Used",
            K::Disposed => "Disposed",
            K::Anchor => "Anchor",
            K::ForkReported => "ForkReported",
            K::AuditFinding => "AuditFinding",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A new member and its first keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    pub org: OrgId,
    pub keys: Vec<PublicKey>,
    pub name: String,
    pub roles: Vec<Role>,
}

/// Another key for a member (rotation); valid from the entry's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAdded {
    pub key: PublicKey,
    pub org: OrgId,
}

/// A key stops being valid from `revoked_from_unix_ms` on, which may be earlier than the
/// revocation entry itself (a compromise discovered late).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRevoked {
    pub kid: KeyId,
    pub org: OrgId,
    #[serde(rename = "from")]
    pub revoked_from_unix_ms: u64,
    pub reason: String,
}

/// A member suspended or reinstated by the registrar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberStatus {
    pub org: OrgId,
    pub reason: String,
}

/// Certificate or product information sheet (ISO 33401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Certificate,
    ProductInformationSheet,
}

/// How long the certificate is valid (DRMD's validity choice plus the Chinese
/// "自定值日期起 N 年").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// Valid through this date (inclusive, in the federation's time zone).
    Until(Date),
    /// Valid for a period counted from the characterization date.
    FromCharacterization(Period),
    /// Each unit valid for a period counted from its dispatch.
    AfterDispatch(Period),
    /// Valid until the producer withdraws it.
    UntilRevoked,
}

/// What happens once a unit is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterOpening {
    /// One use, then the unit is spent ("打开后一次性使用").
    SingleUse,
    /// Usable for this period after first opening.
    Within(Period),
    /// Usable until the certificate expires.
    UntilExpiry,
    NotStated,
}

/// Certified, reference (printed in parentheses) or information value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Certified,
    Reference,
    Information,
}

/// Expanded uncertainty `U = k·u`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uncertainty {
    /// U, in the value's unit, or in percent of the value when `relative`.
    pub expanded: Decimal,
    /// "相对扩展不确定度": U is a percentage of the value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub relative: bool,
    /// k.
    pub coverage_factor: Decimal,
    /// The coverage probability as a fraction, e.g. 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_probability: Option<Decimal>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A value with its unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantity {
    pub unit: Unit,
    pub value: Decimal,
}

/// One property's value on the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyValue {
    pub kind: ValueKind,
    pub unit: Unit,
    /// e.g. "dry mass".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    pub value: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The measurand, e.g. "Cd" or "pH"; unique within a certificate.
    pub quantity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<Uncertainty>,
}

/// The producer's approving officer (ISO 33401 5.3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Officer {
    pub name: String,
    pub function: String,
}

/// A document referenced by digest (certificate PDF, DRMD/DCC XML, raw data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
}

/// The certificate of one batch: what `BatchRegistered` carries, and each revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub code: RmCode,
    pub kind: DocumentKind,
    pub name: String,
    pub batch: String,
    /// The units produced.
    pub units: SerialSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
    pub values: Vec<PropertyValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handling: Option<String>,
    pub validity: Validity,
    pub issue_date: Date,
    /// A certificate this one replaces (a re-characterization issued as a new certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<CertificateId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    pub intended_use: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_content: Option<Quantity>,
    pub after_opening: AfterOpening,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commutability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_safety: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approving_officer: Option<Officer>,
    /// The grading certificate (定级证书) or licence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grading_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub characterization_date: Option<Date>,
}

/// A new revision of a certificate; the previous revision is superseded, never erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRevised {
    pub cert: CertificateId,
    pub reason: String,
    /// 2 for the first revision after registration, and so on.
    pub revision: u32,
    pub certificate: Certificate,
}

/// The producer's stability-monitoring conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StabilityConclusion {
    Stable,
    Trend,
    Unstable,
}

/// A post-release stability monitoring point (ISO 17034 7.11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityCheck {
    pub cert: CertificateId,
    pub unit: Unit,
    pub value: Decimal,
    pub quantity: String,
    pub conclusion: StabilityConclusion,
    pub measured_on: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<Uncertainty>,
}

/// The outcome of comparing a measurement with a certified value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The verifying measurement's uncertainty is too large to decide (U_lab > 3·U_ref).
    Inconclusive,
}

/// The institute's independent measurement of one property (量值核查验证).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueVerification {
    pub cert: CertificateId,
    pub unit: Unit,
    pub value: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The institute's report number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The serial of the unit measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
    /// The institute's stated verdict; when absent the rules decide it from En.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    pub quantity: String,
    /// The certificate revision the measurement was compared with.
    pub revision: u32,
    pub uncertainty: Uncertainty,
}

/// Suspended, Reinstated, Recalled or Withdrawn, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub cert: CertificateId,
    pub reason: String,
}

/// Units sent by the producer to a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shipped {
    pub to: OrgId,
    pub cert: CertificateId,
    pub serials: SerialSet,
}

/// Units accepted by a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Received {
    pub cert: CertificateId,
    pub from: OrgId,
    pub serials: SerialSet,
}

/// A unit opened for the first time: starts the after-opening clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opened {
    pub cert: CertificateId,
    pub serial: String,
}

/// Why a unit was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Calibration,
    MethodValidation,
    QualityControl,
    ValueAssignment,
    ProficiencyTesting,
    Other,
}

/// One use of an opened unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Used {
    pub cert: CertificateId,
    pub serial: String,
    pub purpose: Purpose,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Quantity>,
    /// The test report or job that relied on the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Units disposed of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disposed {
    pub cert: CertificateId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub serials: SerialSet,
}

/// A witness statement: "I verified `chain` up to `size` and its root is `root`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub root: TreeHash,
    pub size: u64,
    pub chain: OrgId,
}

/// What two conflicting signed objects are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Two entries at one (chain, seq).
    Entries,
    /// Two checkpoints that cannot both be true.
    Checkpoints,
    /// An anchor and the chain it names disagree.
    Anchor,
}

/// Byte strings: CBOR bstr on the wire, hex in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&data_encoding::HEXLOWER.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            data_encoding::HEXLOWER
                .decode(text.as_bytes())
                .map(Blob)
                .map_err(serde::de::Error::custom)
        } else {
            serde_bytes::ByteBuf::deserialize(deserializer).map(|b| Blob(b.into_vec()))
        }
    }
}

/// Evidence of a fork or equivocation: both signed objects, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkReported {
    pub seq: u64,
    pub kind: EvidenceKind,
    pub chain: OrgId,
    pub first: Blob,
    pub second: Blob,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

/// A regulator's finding, recorded on its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFinding {
    pub rule: String,
    pub entries: Vec<EntryId>,
    pub subject: String,
    pub summary: String,
    pub severity: Severity,
}

/// A static validation failure: the field (a path such as `values[1].uncertainty.expanded`),
/// the stable id of the rule it breaks (one of [`STATIC_RULES`]) and what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct RecordError {
    pub field: String,
    pub rule: &'static str,
    pub detail: String,
}

/// Every static rule: its stable id and what it refuses. A 422 `invalid` answer names one of
/// these ids in `rule` (docs/api.md lists them; a test keeps the two equal).
pub const STATIC_RULES: &[(&str, &str)] = &[
    (
        "text-empty",
        "a required text field is empty or only spaces",
    ),
    ("text-too-long", "a text field longer than 4000 characters"),
    (
        "text-control-characters",
        "control characters other than newline and tab in a text field",
    ),
    (
        "serial-format",
        "a serial longer than 64 characters or containing spaces",
    ),
    (
        "uncertainty-not-positive",
        "an expanded uncertainty U that is not > 0",
    ),
    (
        "coverage-factor-not-positive",
        "a coverage factor k that is not > 0",
    ),
    (
        "coverage-probability-range",
        "a coverage probability outside (0, 1]",
    ),
    (
        "relative-uncertainty-too-large",
        "a relative uncertainty of 100 % or more",
    ),
    (
        "quantity-not-positive",
        "an amount (unit content, minimum sample size, quantity used) that is not > 0",
    ),
    ("batch-too-long", "a batch name longer than 64 characters"),
    ("no-units", "a batch that produces no unit"),
    ("no-values", "a certificate with no property value"),
    (
        "value-listed-twice",
        "the same quantity (and basis) listed twice",
    ),
    (
        "certified-value-without-uncertainty",
        "a certified value without an expanded uncertainty",
    ),
    (
        "certificate-without-certified-value",
        "a certificate (not a product information sheet) with no certified value",
    ),
    (
        "certificate-without-traceability",
        "a certificate without a metrological traceability statement",
    ),
    (
        "certificate-without-approving-officer",
        "a certificate without an approving officer",
    ),
    (
        "characterization-after-issue",
        "a characterization date after the issue date",
    ),
    (
        "characterization-date-required",
        "validity counted from characterization without a characterization date",
    ),
    (
        "validity-before-issue",
        "a validity that ends on or before the issue date",
    ),
    (
        "validity-out-of-range",
        "a validity period that leaves the supported dates",
    ),
    ("member-without-keys", "an enrolment with no key"),
    ("member-without-roles", "an enrolment with no role"),
    (
        "revision-numbering",
        "a revision number below the first one (2 for a certificate, 1 for a verification)",
    ),
    (
        "no-serials",
        "a shipment, receipt or disposal listing no unit",
    ),
    (
        "fork-objects-identical",
        "a fork report whose two objects are the same",
    ),
];

fn fail<T>(
    field: impl Into<String>,
    rule: &'static str,
    detail: impl Into<String>,
) -> Result<T, RecordError> {
    debug_assert!(STATIC_RULES.iter().any(|(id, _)| *id == rule), "{rule}");
    Err(RecordError {
        field: field.into(),
        rule,
        detail: detail.into(),
    })
}

/// The longest free text we accept in a record field.
pub const MAX_TEXT: usize = 4000;

/// The most records one batch write (`POST /v1/records/batch`) may carry; the node refuses more
/// (422 `batch-size`) and the client checks before sending.
pub const MAX_BATCH_RECORDS: usize = 1000;

fn text(field: &str, value: &str, required: bool) -> Result<(), RecordError> {
    if required && value.trim().is_empty() {
        return fail(field, "text-empty", "must not be empty");
    }
    if value.chars().count() > MAX_TEXT {
        return fail(
            field,
            "text-too-long",
            format!("longer than {MAX_TEXT} characters"),
        );
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return fail(
            field,
            "text-control-characters",
            "contains control characters",
        );
    }
    Ok(())
}

fn opt_text(field: &str, value: &Option<String>) -> Result<(), RecordError> {
    value.as_deref().map_or(Ok(()), |v| text(field, v, true))
}

fn serial(field: &str, value: &str) -> Result<(), RecordError> {
    text(field, value, true)?;
    if value.len() > 64 || value.chars().any(char::is_whitespace) {
        return fail(
            field,
            "serial-format",
            "a serial is at most 64 characters without spaces",
        );
    }
    Ok(())
}

impl Uncertainty {
    fn validate(&self, field: &str) -> Result<(), RecordError> {
        if !self.expanded.is_positive() {
            return fail(
                format!("{field}.expanded"),
                "uncertainty-not-positive",
                "expanded uncertainty U must be > 0",
            );
        }
        if !self.coverage_factor.is_positive() {
            return fail(
                format!("{field}.coverage_factor"),
                "coverage-factor-not-positive",
                "coverage factor k must be > 0",
            );
        }
        if let Some(p) = &self.coverage_probability {
            let one = Decimal::from_i64(1);
            if !p.is_positive() || *p > one {
                return fail(
                    format!("{field}.coverage_probability"),
                    "coverage-probability-range",
                    "must be a fraction in (0, 1], e.g. 0.95",
                );
            }
        }
        if self.relative && self.expanded >= Decimal::from_i64(100) {
            return fail(
                format!("{field}.expanded"),
                "relative-uncertainty-too-large",
                "a relative uncertainty must be below 100 %",
            );
        }
        Ok(())
    }
}

impl Quantity {
    fn validate(&self, field: &str) -> Result<(), RecordError> {
        if !self.value.is_positive() {
            return fail(
                format!("{field}.value"),
                "quantity-not-positive",
                "must be > 0",
            );
        }
        Ok(())
    }
}

impl Certificate {
    /// Static rules of a certificate (ISO 33401, ISO 17034, DESIGN §4).
    pub fn validate(&self) -> Result<(), RecordError> {
        text("name", &self.name, true)?;
        text("batch", &self.batch, true)?;
        if self.batch.len() > 64 {
            return fail("batch", "batch-too-long", "at most 64 characters");
        }
        text("intended_use", &self.intended_use, true)?;
        for (field, value) in [
            ("name_en", &self.name_en),
            ("matrix", &self.matrix),
            ("storage", &self.storage),
            ("handling", &self.handling),
            ("traceability", &self.traceability),
            ("commutability", &self.commutability),
            ("health_safety", &self.health_safety),
            ("grading_certificate", &self.grading_certificate),
        ] {
            opt_text(field, value)?;
        }
        if self.units.is_empty() {
            return fail(
                "units",
                "no-units",
                "a batch must produce at least one unit",
            );
        }
        if self.values.is_empty() {
            return fail(
                "values",
                "no-values",
                "at least one property value is required",
            );
        }
        for (i, value) in self.values.iter().enumerate() {
            let field = format!("values[{i}]");
            text(&format!("{field}.quantity"), &value.quantity, true)?;
            opt_text(&format!("{field}.method"), &value.method)?;
            opt_text(&format!("{field}.basis"), &value.basis)?;
            if self.values[..i]
                .iter()
                .any(|v| v.quantity == value.quantity && v.basis == value.basis)
            {
                return fail(
                    format!("{field}.quantity"),
                    "value-listed-twice",
                    format!("{:?} is listed twice", value.quantity),
                );
            }
            match (&value.uncertainty, value.kind) {
                (None, ValueKind::Certified) => {
                    return fail(
                        format!("{field}.uncertainty"),
                        "certified-value-without-uncertainty",
                        "a certified value needs an expanded uncertainty U",
                    );
                }
                (Some(u), _) => u.validate(&format!("{field}.uncertainty"))?,
                (None, _) => {}
            }
        }
        if self.kind == DocumentKind::Certificate {
            if !self.values.iter().any(|v| v.kind == ValueKind::Certified) {
                return fail(
                    "values",
                    "certificate-without-certified-value",
                    "a certificate needs at least one certified value (else use product_information_sheet)",
                );
            }
            if self.traceability.is_none() {
                return fail(
                    "traceability",
                    "certificate-without-traceability",
                    "a certificate needs a metrological traceability statement",
                );
            }
            if self.approving_officer.is_none() {
                return fail(
                    "approving_officer",
                    "certificate-without-approving-officer",
                    "a certificate needs an approving officer",
                );
            }
        }
        if let Some(officer) = &self.approving_officer {
            text("approving_officer.name", &officer.name, true)?;
            text("approving_officer.function", &officer.function, true)?;
        }
        if let Some(q) = &self.unit_content {
            q.validate("unit_content")?;
        }
        if let Some(q) = &self.min_sample_size {
            q.validate("min_sample_size")?;
        }
        for (i, a) in self.attachments.iter().enumerate() {
            text(&format!("attachments[{i}].name"), &a.name, true)?;
            text(&format!("attachments[{i}].media_type"), &a.media_type, true)?;
        }
        if let Some(characterized) = &self.characterization_date
            && *characterized > self.issue_date
        {
            return fail(
                "characterization_date",
                "characterization-after-issue",
                "is after the issue date",
            );
        }
        match &self.validity {
            Validity::Until(date) if *date <= self.issue_date => {
                return fail(
                    "validity",
                    "validity-before-issue",
                    format!(
                        "expiry {date} is not after the issue date {}",
                        self.issue_date
                    ),
                );
            }
            Validity::FromCharacterization(period) => match &self.characterization_date {
                None => {
                    return fail(
                        "characterization_date",
                        "characterization-date-required",
                        "required when validity is counted from characterization",
                    );
                }
                Some(date) => match date.add_period(period) {
                    Ok(end) if end <= self.issue_date => {
                        return fail(
                            "validity",
                            "validity-before-issue",
                            "the validity period ends before the issue date",
                        );
                    }
                    Ok(_) => {}
                    Err(e) => return fail("validity", "validity-out-of-range", e.to_string()),
                },
            },
            _ => {}
        }
        Ok(())
    }

    /// The property value named `quantity` (the first with that name).
    pub fn value(&self, quantity: &str) -> Option<&PropertyValue> {
        self.values.iter().find(|v| v.quantity == quantity)
    }

    /// The date through which the certificate is valid, when it is fixed by the certificate
    /// itself (`Until` and `FromCharacterization`).
    pub fn expiry_date(&self) -> Option<Date> {
        match &self.validity {
            Validity::Until(date) => Some(*date),
            Validity::FromCharacterization(period) => self
                .characterization_date
                .and_then(|d| d.add_period(period).ok()),
            Validity::AfterDispatch(_) | Validity::UntilRevoked => None,
        }
    }
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        use RecordKind as K;
        match self {
            Record::Enrol(_) => K::Enrol,
            Record::KeyAdded(_) => K::KeyAdded,
            Record::KeyRevoked(_) => K::KeyRevoked,
            Record::MemberSuspended(_) => K::MemberSuspended,
            Record::MemberReinstated(_) => K::MemberReinstated,
            Record::BatchRegistered(_) => K::BatchRegistered,
            Record::CertificateRevised(_) => K::CertificateRevised,
            Record::StabilityCheck(_) => K::StabilityCheck,
            Record::ValueVerification(_) => K::ValueVerification,
            Record::Suspended(_) => K::Suspended,
            Record::Reinstated(_) => K::Reinstated,
            Record::Recalled(_) => K::Recalled,
            Record::Withdrawn(_) => K::Withdrawn,
            Record::Shipped(_) => K::Shipped,
            Record::Received(_) => K::Received,
            Record::Opened(_) => K::Opened,
            Record::Used(_) => K::Used,
            Record::Disposed(_) => K::Disposed,
            Record::Anchor(_) => K::Anchor,
            Record::ForkReported(_) => K::ForkReported,
            Record::AuditFinding(_) => K::AuditFinding,
        }
    }

    /// Whether this record changes the federation's membership (who holds which key and role
    /// when): the records [`crate::federation::Membership`] acts on. A bundle carries exactly
    /// these of the registrar's chain.
    pub fn changes_membership(&self) -> bool {
        matches!(
            self,
            Record::Enrol(_)
                | Record::KeyAdded(_)
                | Record::KeyRevoked(_)
                | Record::MemberSuspended(_)
                | Record::MemberReinstated(_)
        )
    }

    /// The certificate this record is about, if any.
    pub fn certificate(&self) -> Option<&CertificateId> {
        match self {
            Record::CertificateRevised(r) => Some(&r.cert),
            Record::StabilityCheck(r) => Some(&r.cert),
            Record::ValueVerification(r) => Some(&r.cert),
            Record::Suspended(r)
            | Record::Reinstated(r)
            | Record::Recalled(r)
            | Record::Withdrawn(r) => Some(&r.cert),
            Record::Shipped(r) => Some(&r.cert),
            Record::Received(r) => Some(&r.cert),
            Record::Opened(r) => Some(&r.cert),
            Record::Used(r) => Some(&r.cert),
            Record::Disposed(r) => Some(&r.cert),
            _ => None,
        }
    }

    /// Static validation: what no ledger state can make right.
    pub fn validate(&self) -> Result<(), RecordError> {
        match self {
            Record::Enrol(r) => {
                text("name", &r.name, true)?;
                if r.keys.is_empty() {
                    return fail(
                        "keys",
                        "member-without-keys",
                        "a member needs at least one key",
                    );
                }
                if r.roles.is_empty() {
                    return fail(
                        "roles",
                        "member-without-roles",
                        "a member needs at least one role",
                    );
                }
                Ok(())
            }
            Record::KeyAdded(_) => Ok(()),
            Record::KeyRevoked(r) => text("reason", &r.reason, true),
            Record::MemberSuspended(r) | Record::MemberReinstated(r) => {
                text("reason", &r.reason, true)
            }
            Record::BatchRegistered(c) => c.validate(),
            Record::CertificateRevised(r) => {
                text("reason", &r.reason, true)?;
                if r.revision < 2 {
                    return fail(
                        "revision",
                        "revision-numbering",
                        "revisions are numbered from 2 (registration is revision 1)",
                    );
                }
                r.certificate.validate().map_err(|e| RecordError {
                    field: format!("certificate.{}", e.field),
                    ..e
                })
            }
            Record::StabilityCheck(r) => {
                text("quantity", &r.quantity, true)?;
                r.uncertainty
                    .as_ref()
                    .map_or(Ok(()), |u| u.validate("uncertainty"))
            }
            Record::ValueVerification(r) => {
                text("quantity", &r.quantity, true)?;
                opt_text("method", &r.method)?;
                opt_text("report", &r.report)?;
                if let Some(s) = &r.sample {
                    serial("sample", s)?;
                }
                if r.revision < 1 {
                    return fail(
                        "revision",
                        "revision-numbering",
                        "revisions are numbered from 1",
                    );
                }
                r.uncertainty.validate("uncertainty")
            }
            Record::Suspended(r)
            | Record::Reinstated(r)
            | Record::Recalled(r)
            | Record::Withdrawn(r) => text("reason", &r.reason, true),
            Record::Shipped(r) if r.serials.is_empty() => {
                fail("serials", "no-serials", "no units listed")
            }
            Record::Received(r) if r.serials.is_empty() => {
                fail("serials", "no-serials", "no units listed")
            }
            Record::Disposed(r) if r.serials.is_empty() => {
                fail("serials", "no-serials", "no units listed")
            }
            Record::Shipped(_) | Record::Received(_) => Ok(()),
            Record::Disposed(r) => opt_text("reason", &r.reason),
            Record::Opened(r) => serial("serial", &r.serial),
            Record::Used(r) => {
                serial("serial", &r.serial)?;
                opt_text("reference", &r.reference)?;
                r.quantity
                    .as_ref()
                    .map_or(Ok(()), |q| q.validate("quantity"))
            }
            Record::Anchor(_) => Ok(()),
            Record::ForkReported(r) => {
                if r.first == r.second {
                    return fail(
                        "second",
                        "fork-objects-identical",
                        "the two objects are identical: no conflict",
                    );
                }
                Ok(())
            }
            Record::AuditFinding(r) => {
                text("rule", &r.rule, true)?;
                text("subject", &r.subject, true)?;
                text("summary", &r.summary, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_rule_ids_are_unique_kebab_case_and_named_by_failures() {
        let mut ids: Vec<&str> = STATIC_RULES.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.iter()
                .all(|id| id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), STATIC_RULES.len(), "an id is listed twice");

        let mut cert = crate::testkit::soil_certificate("2025a");
        cert.values[0].uncertainty.as_mut().unwrap().coverage_factor = Decimal::from_i64(0);
        let e = Record::BatchRegistered(cert).validate().unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule),
            (
                "values[0].uncertainty.coverage_factor",
                "coverage-factor-not-positive"
            )
        );
        assert_eq!(
            e.to_string(),
            "values[0].uncertainty.coverage_factor: coverage factor k must be > 0"
        );
    }
}
