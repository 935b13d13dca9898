//! A certificate's life as a pure fold over entries (DESIGN §4), and the domain rules a local
//! write must pass.
//!
//! Entries about one certificate come from several chains (the producer's, the institutes',
//! the labs') and are applied in `(time, chain, seq)` order ([`order_key`]). Two operations:
//!
//! - [`CertificateState::check`] judges a record a member wants to write *now* and refuses it
//!   with a [`RuleError`] naming the rule (use of a recalled or expired certificate, a unit never
//!   received, an out-of-order revision, …).
//! - [`CertificateState::apply`] folds an entry that is already on a chain. Entries are facts:
//!   they are never refused, because a node may learn of chains in any order and judging them is
//!   the audit's job. `apply` runs `check` only to note any breach on the timeline
//!   ([`TimelineEvent::anomaly`]).
//!
//! What `apply` adopts into the state: status events (suspension, recall) from anyone; effects
//! that only one party can make (revisions, stability checks, withdrawal, shipping by the
//! producer; receipt by the consignee; opening, use and disposal by the holder) only from that
//! party, so another member's entry can never rewrite a certificate or steal a unit; and unit
//! stages only forwards. Whatever is not adopted still appears on the timeline with its
//! anomaly. Time is always a parameter; nothing here reads a clock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::date::{Date, Period};
use crate::entry::{Entry, Recorded};
use crate::ids::{CertificateId, EntryId, OrgId};
use crate::records::{
    AfterOpening, Certificate, Record, RecordKind, StabilityCheck, StabilityConclusion,
    StatusChange, Validity, ValueKind, ValueVerification, Verdict,
};
use crate::rmcode::RmCode;
use crate::serial::SerialSet;
use crate::verification::{self, Comparison};

/// Batches up to this many units have every unit in [`CertificateState::units`] from
/// registration on; larger ones (a serial range may legally span 10^18 numbers) get a unit
/// entry on its first movement, so a registration can never exhaust a node's memory.
pub const MAX_EAGER_UNITS: u64 = 100_000;

/// The most serials one movement record (ship, receive, dispose) may list for the fold to act
/// on it; beyond that the record is refused locally and only noted on the timeline.
pub const MAX_SERIALS_PER_RECORD: u64 = 100_000;

/// The fold order of entries about one certificate: time, then chain, then sequence number.
pub fn order_key(entry: &Entry) -> (u64, &OrgId, u64) {
    (entry.time_unix_ms(), entry.chain(), entry.seq())
}

// ---------------------------------------------------------------------------------------------
// Rule errors

/// What kind of refusal a rule is, for mapping to HTTP statuses (409, 404, 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Conflict,
    NotFound,
    Forbidden,
}

/// One documented rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// The stable kebab-case id, e.g. `certificate-recalled`.
    pub id: &'static str,
    pub kind: RuleKind,
    /// What the rule refuses, in one English sentence.
    pub summary: &'static str,
}

const fn rule(id: &'static str, kind: RuleKind, summary: &'static str) -> RuleInfo {
    RuleInfo { id, kind, summary }
}

/// Every rule, in documentation order. Ids are stable: clients and audits match on them.
#[rustfmt::skip]
const ALL_RULES: [RuleInfo; 40] = {
    use RuleKind::{Conflict as C, Forbidden as F, NotFound as N};
    [
        rule("not-a-registration", C, "a certificate starts from a BatchRegistered entry"),
        rule("not-a-lifecycle-record", C, "the record is not about a certificate's life"),
        rule("wrong-certificate", N, "the record names another certificate"),
        rule("not-the-producer", F, "only the certificate's producer may write this record"),
        rule("duplicate-registration", C, "a batch with this code and batch id is already registered"),
        rule("supersedes-unknown-certificate", N, "the certificate to supersede is not known"),
        rule("supersedes-foreign-certificate", F, "only a certificate's own producer may supersede it"),
        rule("certificate-already-superseded", C, "the certificate was already superseded"),
        rule("revision-out-of-order", C, "a revision must be numbered current + 1"),
        rule("revision-changes-identity", C, "a revision may not change the code, batch or units"),
        rule("revision-not-found", N, "the named certificate revision does not exist"),
        rule("quantity-not-found", N, "the certificate has no value for this quantity"),
        rule("incompatible-unit", C, "the unit cannot be converted to the certificate's unit"),
        rule("verdict-disagrees", C, "the stated verdict differs from the one En gives"),
        rule("verdict-on-non-certified-value", C, "only a certified value can pass or fail"),
        rule("comparison-failed", C, "the measurement could not be compared with the value"),
        rule("certificate-withdrawn", C, "the certificate was withdrawn"),
        rule("certificate-recalled", C, "the certificate was recalled"),
        rule("certificate-suspended", C, "the certificate is suspended"),
        rule("certificate-expired", C, "the certificate's validity has ended"),
        rule("already-suspended", C, "the certificate is already suspended"),
        rule("not-suspended", C, "only a suspended certificate can be reinstated"),
        rule("already-recalled", C, "the certificate was already recalled"),
        rule("already-withdrawn", C, "the certificate was already withdrawn"),
        rule("too-many-serials", C, "a movement record lists too many serials"),
        rule("unit-not-produced", N, "the serial is not one of the batch's units"),
        rule("unit-already-shipped", C, "the unit has already left the producer"),
        rule("ship-to-self", C, "a producer cannot ship units to itself"),
        rule("unit-not-shipped", C, "the unit was never shipped"),
        rule("unit-shipped-elsewhere", F, "the unit was shipped to another organisation"),
        rule("unit-already-received", C, "the unit was already received"),
        rule("wrong-sender", C, "units come from the certificate's producer"),
        rule("unit-not-received", C, "the unit was not received by this organisation"),
        rule("unit-already-opened", C, "the unit was already opened"),
        rule("unit-not-opened", C, "a unit must be opened before use"),
        rule("unit-disposed", C, "the unit was disposed of"),
        rule("unit-not-held", F, "only the unit's holder may dispose of it"),
        rule("single-use-spent", C, "a single-use unit was already used"),
        rule("after-opening-expired", C, "the period of use after opening has ended"),
        rule("unit-expired", C, "the unit's validity counted from dispatch has ended"),
    ]
};

const RULE_IDS: [&str; 40] = {
    let mut out = [""; 40];
    let mut i = 0;
    while i < ALL_RULES.len() {
        out[i] = ALL_RULES[i].id;
        i += 1;
    }
    out
};

/// Every rule with its kind and summary (for docs and the API's error catalogue).
pub fn rules() -> &'static [RuleInfo] {
    &ALL_RULES
}

/// A domain rule a local write breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct RuleError {
    /// The stable kebab-case rule id (see [`RuleError::rules`]).
    pub rule: &'static str,
    pub detail: String,
    pub kind: RuleKind,
}

impl RuleError {
    /// Every rule id, for documentation.
    pub fn rules() -> &'static [&'static str] {
        &RULE_IDS
    }

    /// The error for rule `id`; its kind comes from the rule table so it can never drift.
    fn new(id: &'static str, detail: impl Into<String>) -> Self {
        let info = ALL_RULES.iter().find(|r| r.id == id);
        debug_assert!(info.is_some(), "rule {id} is not in the table");
        RuleError {
            rule: id,
            detail: detail.into(),
            kind: info.map_or(RuleKind::Conflict, |r| r.kind),
        }
    }
}

fn refuse<T>(id: &'static str, detail: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::new(id, detail))
}

// ---------------------------------------------------------------------------------------------
// State

/// A certificate's status at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Valid,
    Expired,
    Suspended,
    Recalled,
    Withdrawn,
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Expired => "expired",
            Status::Suspended => "suspended",
            Status::Recalled => "recalled",
            Status::Withdrawn => "withdrawn",
            Status::Superseded => "superseded",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revision of the certificate; revision 1 is the registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    pub number: u32,
    pub certificate: Certificate,
    pub entry: EntryId,
    pub time_unix_ms: u64,
    /// Why it was revised (`None` for the registration).
    pub reason: Option<String>,
}

impl Revision {
    /// See [`expiry_unix_ms`].
    pub fn expiry_unix_ms(&self, utc_offset_minutes: i32) -> Option<u64> {
        expiry_unix_ms(&self.certificate, utc_offset_minutes)
    }
}

/// The entry behind a status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub entry: EntryId,
    pub chain: OrgId,
    pub seq: u64,
    pub time_unix_ms: u64,
    pub reason: Option<String>,
}

impl EventRef {
    fn of(entry: &impl Recorded, reason: Option<String>) -> Self {
        EventRef {
            entry: entry.id(),
            chain: entry.chain().clone(),
            seq: entry.seq(),
            time_unix_ms: entry.time_unix_ms(),
            reason,
        }
    }
}

/// One suspension and, once lifted, its reinstatement: kept so that the status at a past time
/// is answered from history, not from the current flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuspensionPeriod {
    pub suspended: EventRef,
    pub reinstated: Option<EventRef>,
}

/// An institute's verification, with the ledger's own comparison against the revision it names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationRecord {
    pub entry: EntryId,
    pub chain: OrgId,
    pub time_unix_ms: u64,
    pub record: ValueVerification,
    pub comparison: Option<Comparison>,
    /// The verdict the rules give (from En); may differ from `record.verdict`.
    pub rule_verdict: Option<Verdict>,
    /// Why there is no comparison, or how the stated verdict disagrees.
    pub note: Option<String>,
}

/// A producer's stability-monitoring point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StabilityRecord {
    pub entry: EntryId,
    pub time_unix_ms: u64,
    pub record: StabilityCheck,
}

/// One line of the certificate's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    pub entry: EntryId,
    pub chain: OrgId,
    pub seq: u64,
    pub time_unix_ms: u64,
    pub kind: RecordKind,
    /// A short English sentence, e.g. "shipped 3 units (A-0001..A-0003) to nclab".
    pub summary: String,
    /// The rule the entry broke when it was applied (`"{rule}: {detail}"`), for the audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<String>,
}

/// Where a unit is in its life. Units only move forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStage {
    Produced,
    Shipped,
    Received,
    Opened,
    Disposed,
}

/// One physical unit (domain.md §13.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub serial: String,
    pub stage: UnitStage,
    /// Who has custody: the producer until a lab records receipt (a unit in transit is still
    /// the producer's responsibility), then the receiving lab.
    pub holder: OrgId,
    pub shipped_to: Option<OrgId>,
    pub shipped_at: Option<u64>,
    pub received_by: Option<OrgId>,
    pub received_at: Option<u64>,
    pub opened_at: Option<u64>,
    pub uses: u32,
    pub last_used_at: Option<u64>,
    pub disposed_at: Option<u64>,
}

impl UnitState {
    fn produced(serial: String, producer: &OrgId) -> Self {
        UnitState {
            serial,
            stage: UnitStage::Produced,
            holder: producer.clone(),
            shipped_to: None,
            shipped_at: None,
            received_by: None,
            received_at: None,
            opened_at: None,
            uses: 0,
            last_used_at: None,
            disposed_at: None,
        }
    }

    /// When this unit stops being valid under `certificate`: for `AfterDispatch(p)` the start
    /// of the day after `shipped date + p` (`None` while not shipped); otherwise the
    /// certificate's own expiry.
    pub fn expiry_unix_ms(
        &self,
        certificate: &Certificate,
        utc_offset_minutes: i32,
    ) -> Option<u64> {
        match &certificate.validity {
            Validity::AfterDispatch(period) => {
                through_period(self.shipped_at?, period, utc_offset_minutes)
            }
            _ => expiry_unix_ms(certificate, utc_offset_minutes),
        }
    }

    /// When use after opening ends under `Within(p)`: the start of the day after
    /// `opened date + p` (valid through that date). `None` for other policies or while closed.
    pub fn open_expiry_unix_ms(
        &self,
        certificate: &Certificate,
        utc_offset_minutes: i32,
    ) -> Option<u64> {
        match &certificate.after_opening {
            AfterOpening::Within(period) => {
                through_period(self.opened_at?, period, utc_offset_minutes)
            }
            _ => None,
        }
    }
}

/// When a certificate stops being valid, in Unix ms: `Until(d)` ends at the start of the day
/// after `d` (valid *through* the expiry date) in the federation's offset;
/// `FromCharacterization(p)` likewise after `characterization_date + p`. `AfterDispatch` is
/// per unit ([`UnitState::expiry_unix_ms`]) and `UntilRevoked` never ends: both `None`.
pub fn expiry_unix_ms(certificate: &Certificate, utc_offset_minutes: i32) -> Option<u64> {
    day_after(certificate.expiry_date()?, utc_offset_minutes)
}

fn day_after(last_valid: Date, utc_offset_minutes: i32) -> Option<u64> {
    let next = last_valid.add_days(1).ok()?;
    Some(u64::try_from(next.start_unix_ms(utc_offset_minutes)).unwrap_or(0))
}

/// The end of "valid through (date of `start_ms`) + `period`".
fn through_period(start_ms: u64, period: &Period, utc_offset_minutes: i32) -> Option<u64> {
    let start = Date::from_unix_ms(i64::try_from(start_ms).ok()?, utc_offset_minutes).ok()?;
    day_after(start.add_period(period).ok()?, utc_offset_minutes)
}

/// Everything the ledger knows about one certificate (DESIGN §4 "certificate state").
#[derive(Debug, Clone, Serialize)]
pub struct CertificateState {
    pub id: CertificateId,
    pub producer: OrgId,
    pub registered_at_unix_ms: u64,
    /// Every revision in the order applied; the last is current. Never erased.
    pub revisions: Vec<Revision>,
    /// The suspension in force, if any.
    pub suspended: Option<EventRef>,
    /// Every suspension, lifted or not.
    pub suspensions: Vec<SuspensionPeriod>,
    pub recalled: Option<EventRef>,
    pub withdrawn: Option<EventRef>,
    /// The registration of the certificate that replaced this one.
    pub superseded_by: Option<EventRef>,
    pub verifications: Vec<VerificationRecord>,
    pub stability: Vec<StabilityRecord>,
    /// The units by serial: all of them from registration for batches up to
    /// [`MAX_EAGER_UNITS`], otherwise those that have moved (the rest are implicitly produced
    /// and held by the producer; [`CertificateState::unit`] answers for both).
    pub units: BTreeMap<String, UnitState>,
    pub timeline: Vec<TimelineEvent>,
}

impl CertificateState {
    /// Starts a certificate from its registration entry; the entry's id is the certificate id.
    pub fn register(entry: &Entry) -> Result<Self, RuleError> {
        let Record::BatchRegistered(certificate) = entry.record() else {
            return refuse(
                "not-a-registration",
                format!("entry {} is a {}", entry.id(), entry.record().kind()),
            );
        };
        let producer = entry.chain().clone();
        let units = if certificate.units.len() <= MAX_EAGER_UNITS {
            certificate
                .units
                .iter()
                .map(|s| (s.clone(), UnitState::produced(s, &producer)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let summary = format!(
            "registered {} batch {} ({}) with {}",
            certificate.code,
            certificate.batch,
            certificate.name,
            units_text(&certificate.units)
        );
        Ok(CertificateState {
            id: entry.id(),
            producer,
            registered_at_unix_ms: entry.time_unix_ms(),
            revisions: vec![Revision {
                number: 1,
                certificate: certificate.clone(),
                entry: entry.id(),
                time_unix_ms: entry.time_unix_ms(),
                reason: None,
            }],
            suspended: None,
            suspensions: Vec::new(),
            recalled: None,
            withdrawn: None,
            superseded_by: None,
            verifications: Vec::new(),
            stability: Vec::new(),
            units,
            timeline: vec![timeline(entry, summary, None)],
        })
    }

    /// Folds a registration and the entries about it, in [`order_key`] order. Registrations
    /// that supersede this certificate are routed to [`CertificateState::apply_superseding`].
    pub fn fold<'a>(
        registration: &Entry,
        entries: impl IntoIterator<Item = &'a Entry>,
        utc_offset_minutes: i32,
    ) -> Result<Self, RuleError> {
        let mut state = Self::register(registration)?;
        let mut entries: Vec<&Entry> = entries.into_iter().collect();
        entries.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        for entry in entries {
            state.apply(entry, utc_offset_minutes);
        }
        Ok(state)
    }

    /// The current revision.
    pub fn current(&self) -> &Revision {
        // `register` creates revision 1 and nothing removes revisions.
        self.revisions.last().expect("a certificate has a revision")
    }

    /// The revision in force at `time` (the first one for times before registration).
    pub fn revision_at(&self, time_unix_ms: u64) -> &Revision {
        self.revisions
            .iter()
            .rev()
            .find(|r| r.time_unix_ms <= time_unix_ms)
            .unwrap_or(&self.revisions[0])
    }

    /// The revision numbered `number` (the last applied one, should a replicated chain carry
    /// two with one number).
    pub fn revision(&self, number: u32) -> Option<&Revision> {
        self.revisions.iter().rev().find(|r| r.number == number)
    }

    /// The registration's certificate (the serial set is fixed by it).
    fn registered(&self) -> &Certificate {
        &self.revisions[0].certificate
    }

    /// One unit, whether or not it has its own entry in [`CertificateState::units`].
    pub fn unit(&self, serial: &str) -> Option<Cow<'_, UnitState>> {
        match self.units.get(serial) {
            Some(unit) => Some(Cow::Borrowed(unit)),
            None if self.registered().units.len() > MAX_EAGER_UNITS
                && self.registered().units.contains(serial) =>
            {
                Some(Cow::Owned(UnitState::produced(
                    serial.into(),
                    &self.producer,
                )))
            }
            None => None,
        }
    }

    fn unit_mut(&mut self, serial: &str) -> Option<&mut UnitState> {
        if !self.units.contains_key(serial) {
            let unit = self.unit(serial)?.into_owned();
            self.units.insert(serial.into(), unit);
        }
        self.units.get_mut(serial)
    }

    /// Whether the certificate is suspended at `time`, from the suspension history.
    pub fn suspended_at(&self, time_unix_ms: u64) -> bool {
        self.suspensions.iter().any(|p| {
            p.suspended.time_unix_ms <= time_unix_ms
                && p.reinstated
                    .as_ref()
                    .is_none_or(|r| r.time_unix_ms > time_unix_ms)
        })
    }

    /// Whether the revision in force at `time` had expired by then.
    pub fn expired_at(&self, time_unix_ms: u64, utc_offset_minutes: i32) -> bool {
        self.revision_at(time_unix_ms)
            .expiry_unix_ms(utc_offset_minutes)
            .is_some_and(|end| time_unix_ms >= end)
    }

    /// The status at `time` as the ledger knows it now: each event counts only from its own
    /// time, so a past time gives the historical answer. Precedence: withdrawn > recalled >
    /// superseded > suspended > expired > valid.
    pub fn status_at(&self, time_unix_ms: u64, utc_offset_minutes: i32) -> Status {
        let by = |event: &Option<EventRef>| {
            event
                .as_ref()
                .is_some_and(|e| e.time_unix_ms <= time_unix_ms)
        };
        if by(&self.withdrawn) {
            Status::Withdrawn
        } else if by(&self.recalled) {
            Status::Recalled
        } else if by(&self.superseded_by) {
            Status::Superseded
        } else if self.suspended_at(time_unix_ms) {
            Status::Suspended
        } else if self.expired_at(time_unix_ms, utc_offset_minutes) {
            Status::Expired
        } else {
            Status::Valid
        }
    }

    // -----------------------------------------------------------------------------------------
    // Rules for local writes

    /// Judges a record `org` wants to write at `time` against the state as folded so far.
    /// Roles are not checked here ([`crate::federation::Membership::check_role`] does that);
    /// static validity neither ([`Record::validate`]).
    pub fn check(
        &self,
        org: &OrgId,
        time_unix_ms: u64,
        record: &Record,
        utc_offset_minutes: i32,
    ) -> Result<(), RuleError> {
        let time = time_unix_ms;
        let off = utc_offset_minutes;
        if let Record::BatchRegistered(certificate) = record {
            return match certificate.supersedes {
                Some(id) if id == self.id => self.check_superseding(org),
                _ => refuse(
                    "wrong-certificate",
                    format!("a new registration does not supersede {}", self.id),
                ),
            };
        }
        match record.certificate() {
            None => {
                return refuse(
                    "not-a-lifecycle-record",
                    format!("{} is not about a certificate", record.kind()),
                );
            }
            Some(id) if *id != self.id => {
                return refuse(
                    "wrong-certificate",
                    format!("the record is about {id}, not {}", self.id),
                );
            }
            Some(_) => {}
        }
        match record {
            Record::CertificateRevised(r) => {
                self.require_producer(org, "revise the certificate")?;
                self.require_not_ended()?;
                let current = self.current();
                if Some(r.revision) != current.number.checked_add(1) {
                    return refuse(
                        "revision-out-of-order",
                        format!(
                            "revision {} follows revision {}, expected {}",
                            r.revision,
                            current.number,
                            u64::from(current.number) + 1
                        ),
                    );
                }
                let (old, new) = (self.registered(), &r.certificate);
                for (field, changed) in [
                    ("code", old.code != new.code),
                    ("batch", old.batch != new.batch),
                    ("units", old.units != new.units),
                ] {
                    if changed {
                        return refuse(
                            "revision-changes-identity",
                            format!("a revision may not change the {field}"),
                        );
                    }
                }
                Ok(())
            }
            Record::StabilityCheck(r) => {
                self.require_producer(org, "record stability checks")?;
                let value = self.quantity(self.current(), &r.quantity)?;
                compatible(r.unit, value.unit, &r.quantity)
            }
            Record::ValueVerification(r) => self.check_verification(r).map(|_| ()),
            Record::Suspended(_) => {
                self.require_not_ended()?;
                if let Some(s) = &self.suspended {
                    return refuse(
                        "already-suspended",
                        format!("suspended by {} (entry {})", s.chain, s.entry),
                    );
                }
                Ok(())
            }
            Record::Reinstated(_) => {
                if self.suspended.is_none() {
                    return refuse("not-suspended", "the certificate is not suspended");
                }
                Ok(())
            }
            Record::Recalled(_) => {
                // Withdrawal ends the certificate's life: say so before "already recalled".
                if let Some(w) = &self.withdrawn {
                    return refuse(
                        "certificate-withdrawn",
                        format!("withdrawn by {} (entry {})", w.chain, w.entry),
                    );
                }
                if let Some(r) = &self.recalled {
                    return refuse(
                        "already-recalled",
                        format!("recalled by {} (entry {})", r.chain, r.entry),
                    );
                }
                Ok(())
            }
            Record::Withdrawn(_) => {
                self.require_producer(org, "withdraw the certificate")?;
                if let Some(w) = &self.withdrawn {
                    return refuse(
                        "already-withdrawn",
                        format!("withdrawn by entry {}", w.entry),
                    );
                }
                Ok(())
            }
            Record::Shipped(r) => {
                self.require_producer(org, "ship units")?;
                if r.to == self.producer {
                    return refuse("ship-to-self", format!("{} cannot ship to itself", r.to));
                }
                self.require_usable(time, off)?;
                self.for_each_unit(&r.serials, |unit| match unit.stage {
                    UnitStage::Produced => Ok(()),
                    UnitStage::Disposed => refuse_unit("unit-disposed", unit, "disposed of"),
                    _ => refuse(
                        "unit-already-shipped",
                        format!(
                            "unit {} was shipped to {}",
                            unit.serial,
                            unit.shipped_to.as_ref().map_or("?", |o| o.as_str())
                        ),
                    ),
                })
            }
            Record::Received(r) => {
                if r.from != self.producer {
                    return refuse(
                        "wrong-sender",
                        format!(
                            "units of this certificate come from {}, not {}",
                            self.producer, r.from
                        ),
                    );
                }
                self.for_each_unit(&r.serials, |unit| {
                    if unit.received_at.is_some() {
                        return refuse(
                            "unit-already-received",
                            format!(
                                "unit {} was received by {}",
                                unit.serial,
                                unit.received_by.as_ref().map_or("?", |o| o.as_str())
                            ),
                        );
                    }
                    match &unit.shipped_to {
                        None => refuse_unit("unit-not-shipped", unit, "never shipped"),
                        Some(to) if to != org => refuse(
                            "unit-shipped-elsewhere",
                            format!("unit {} was shipped to {to}, not {org}", unit.serial),
                        ),
                        Some(_) => Ok(()),
                    }
                })
            }
            Record::Opened(r) => {
                let unit = self.held_unit(org, &r.serial)?;
                if unit.stage >= UnitStage::Opened {
                    return refuse_unit("unit-already-opened", &unit, "already opened");
                }
                self.require_usable(time, off)?;
                self.require_unit_valid(&unit, time, off)
            }
            Record::Used(r) => {
                let unit = self.held_unit(org, &r.serial)?;
                let opened_at = match unit.opened_at {
                    Some(t) if unit.stage == UnitStage::Opened => t,
                    _ => return refuse_unit("unit-not-opened", &unit, "not opened"),
                };
                self.require_usable(time, off)?;
                self.require_unit_valid(&unit, time, off)?;
                let certificate = &self.revision_at(time).certificate;
                match &certificate.after_opening {
                    AfterOpening::SingleUse if unit.uses > 0 => {
                        return refuse_unit("single-use-spent", &unit, "single use, already used");
                    }
                    AfterOpening::Within(period) => {
                        if let Some(end) = unit.open_expiry_unix_ms(certificate, off)
                            && time >= end
                        {
                            return refuse(
                                "after-opening-expired",
                                format!(
                                    "unit {} was opened on {} and may be used for {period}",
                                    unit.serial,
                                    date_text(opened_at, off)
                                ),
                            );
                        }
                    }
                    _ => {}
                }
                if let (Some(used), Some(min)) = (&r.quantity, &certificate.min_sample_size) {
                    compatible(used.unit, min.unit, "the quantity used")?;
                }
                Ok(())
            }
            Record::Disposed(r) => self.for_each_unit(&r.serials, |unit| {
                if unit.stage == UnitStage::Disposed {
                    return refuse_unit("unit-disposed", unit, "already disposed of");
                }
                let holds = if *org == self.producer {
                    unit.stage == UnitStage::Produced
                } else {
                    unit.received_by.as_ref() == Some(org)
                };
                if !holds {
                    return refuse(
                        "unit-not-held",
                        format!(
                            "{org} does not hold unit {} ({:?})",
                            unit.serial, unit.stage
                        ),
                    );
                }
                Ok(())
            }),
            _ => refuse(
                "not-a-lifecycle-record",
                format!("{} is not about a certificate", record.kind()),
            ),
        }
    }

    /// Superseding rules, shared by [`check`](Self::check) and [`check_registration`].
    fn check_superseding(&self, org: &OrgId) -> Result<(), RuleError> {
        if *org != self.producer {
            return refuse(
                "supersedes-foreign-certificate",
                format!("{} belongs to {}, not {org}", self.id, self.producer),
            );
        }
        if let Some(s) = &self.superseded_by {
            return refuse(
                "certificate-already-superseded",
                format!("{} was superseded by {}", self.id, s.entry),
            );
        }
        Ok(())
    }

    /// The verification rules; returns the comparison when one could be made.
    fn check_verification(&self, r: &ValueVerification) -> Result<Option<Comparison>, RuleError> {
        let revision = self.revision(r.revision).ok_or_else(|| {
            RuleError::new(
                "revision-not-found",
                format!(
                    "revision {} (current is {})",
                    r.revision,
                    self.current().number
                ),
            )
        })?;
        let value = self.quantity(revision, &r.quantity)?;
        compatible(r.unit, value.unit, &r.quantity)?;
        let comparison = verification::compare(value, &r.value, r.unit, &r.uncertainty);
        let Some(stated) = r.verdict else {
            // Without a stated verdict a value that cannot be compared (an information value
            // without U) is still worth recording.
            return Ok(comparison.ok());
        };
        if value.kind != ValueKind::Certified {
            return refuse(
                "verdict-on-non-certified-value",
                format!(
                    "{} is a {} value; only certified values decide",
                    r.quantity,
                    match value.kind {
                        ValueKind::Certified => "certified",
                        ValueKind::Reference => "reference",
                        ValueKind::Information => "information",
                    }
                ),
            );
        }
        let comparison =
            comparison.map_err(|e| RuleError::new("comparison-failed", e.to_string()))?;
        if comparison.verdict != Some(stated) {
            return refuse(
                "verdict-disagrees",
                format!(
                    "stated {} but En = {:.3} gives {}",
                    verdict_word(Some(stated)),
                    comparison.en,
                    verdict_word(comparison.verdict)
                ),
            );
        }
        Ok(Some(comparison))
    }

    fn quantity<'a>(
        &self,
        revision: &'a Revision,
        quantity: &str,
    ) -> Result<&'a crate::records::PropertyValue, RuleError> {
        revision.certificate.value(quantity).ok_or_else(|| {
            RuleError::new(
                "quantity-not-found",
                format!("revision {} has no value for {quantity:?}", revision.number),
            )
        })
    }

    fn require_producer(&self, org: &OrgId, what: &str) -> Result<(), RuleError> {
        if *org != self.producer {
            return refuse(
                "not-the-producer",
                format!("only {} may {what}, not {org}", self.producer),
            );
        }
        Ok(())
    }

    /// Neither withdrawn nor recalled, whenever that happened.
    fn require_not_ended(&self) -> Result<(), RuleError> {
        if let Some(w) = &self.withdrawn {
            return refuse(
                "certificate-withdrawn",
                format!("withdrawn by entry {}", w.entry),
            );
        }
        if let Some(r) = &self.recalled {
            return refuse(
                "certificate-recalled",
                format!("recalled by {} (entry {})", r.chain, r.entry),
            );
        }
        Ok(())
    }

    /// Usable at `time`: not withdrawn, recalled, suspended or expired. A superseded
    /// certificate stays usable: the old batch remains what it was certified to be.
    fn require_usable(&self, time: u64, off: i32) -> Result<(), RuleError> {
        let event = |e: &EventRef| {
            format!(
                "by {} on {} (entry {})",
                e.chain,
                date_text(e.time_unix_ms, off),
                e.entry
            )
        };
        match self.status_at(time, off) {
            Status::Withdrawn => refuse(
                "certificate-withdrawn",
                format!(
                    "withdrawn {}",
                    self.withdrawn.as_ref().map(event).unwrap_or_default()
                ),
            ),
            Status::Recalled => refuse(
                "certificate-recalled",
                format!(
                    "recalled {}",
                    self.recalled.as_ref().map(event).unwrap_or_default()
                ),
            ),
            Status::Suspended => refuse(
                "certificate-suspended",
                format!(
                    "suspended {}",
                    self.suspended.as_ref().map(event).unwrap_or_default()
                ),
            ),
            Status::Expired => {
                let end = self.revision_at(time).expiry_unix_ms(off).unwrap_or(0);
                refuse(
                    "certificate-expired",
                    format!("valid through {}", date_text(end.saturating_sub(1), off)),
                )
            }
            Status::Valid | Status::Superseded => Ok(()),
        }
    }

    /// The unit's own validity (counted from dispatch) has not ended at `time`.
    fn require_unit_valid(&self, unit: &UnitState, time: u64, off: i32) -> Result<(), RuleError> {
        let certificate = &self.revision_at(time).certificate;
        if let Validity::AfterDispatch(period) = &certificate.validity
            && let Some(end) = unit.expiry_unix_ms(certificate, off)
            && time >= end
        {
            return refuse(
                "unit-expired",
                format!(
                    "unit {} was dispatched on {} and is valid for {period}",
                    unit.serial,
                    date_text(unit.shipped_at.unwrap_or(0), off)
                ),
            );
        }
        Ok(())
    }

    /// A unit received by `org` and not disposed of.
    fn held_unit(&self, org: &OrgId, serial: &str) -> Result<Cow<'_, UnitState>, RuleError> {
        let unit = self.unit(serial).ok_or_else(|| {
            RuleError::new(
                "unit-not-produced",
                format!("{serial} is not a unit of this batch"),
            )
        })?;
        if unit.stage == UnitStage::Disposed {
            return refuse_unit("unit-disposed", &unit, "disposed of");
        }
        if unit.received_by.as_ref() != Some(org) {
            return refuse(
                "unit-not-received",
                format!("unit {serial} was not received by {org}"),
            );
        }
        Ok(unit)
    }

    fn for_each_unit(
        &self,
        serials: &SerialSet,
        mut rule: impl FnMut(&UnitState) -> Result<(), RuleError>,
    ) -> Result<(), RuleError> {
        if serials.len() > MAX_SERIALS_PER_RECORD {
            return refuse(
                "too-many-serials",
                format!(
                    "{} serials; at most {MAX_SERIALS_PER_RECORD} per record",
                    serials.len()
                ),
            );
        }
        for serial in serials.iter() {
            let unit = self.unit(&serial).ok_or_else(|| {
                RuleError::new(
                    "unit-not-produced",
                    format!("{serial} is not a unit of this batch"),
                )
            })?;
            rule(&unit)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The fold

    /// Applies an entry about this certificate as a fact: never refuses and never panics.
    /// Every entry adds one [`TimelineEvent`] (its anomaly is what [`check`](Self::check)
    /// would have said); the state changes as described in the module documentation. Units
    /// the batch never produced get no [`UnitState`]: such entries only appear on the timeline.
    pub fn apply(&mut self, entry: &impl Recorded, utc_offset_minutes: i32) {
        if entry.id() == self.id {
            // The registration itself is already folded in.
            return;
        }
        if let Record::BatchRegistered(c) = entry.record()
            && c.supersedes == Some(self.id)
        {
            self.apply_superseding(entry);
            return;
        }
        let off = utc_offset_minutes;
        let (org, time) = (entry.chain().clone(), entry.time_unix_ms());
        let anomaly = self
            .check(&org, time, entry.record(), off)
            .err()
            .map(|e| e.to_string());
        let about_us = entry.record().certificate() == Some(&self.id);
        let summary = if about_us {
            self.adopt(entry, &org, time)
        } else {
            format!(
                "recorded a {} not about this certificate",
                entry.record().kind()
            )
        };
        self.timeline.push(timeline(entry, summary, anomaly));
    }

    /// Applies a registration that supersedes this certificate (the caller routes it here).
    /// Adopted from the producer only, and only the first; always on the timeline.
    pub fn apply_superseding(&mut self, entry: &impl Recorded) {
        let (summary, anomaly) = match entry.record() {
            Record::BatchRegistered(c) if c.supersedes == Some(self.id) => {
                let anomaly = self.check_superseding(entry.chain()).err();
                if anomaly.is_none() {
                    self.superseded_by = Some(EventRef::of(entry, None));
                }
                (
                    format!(
                        "superseded by {} batch {} (entry {})",
                        c.code,
                        c.batch,
                        entry.id()
                    ),
                    anomaly,
                )
            }
            other => (
                format!(
                    "recorded a {} that does not supersede this certificate",
                    other.kind()
                ),
                Some(RuleError::new(
                    "wrong-certificate",
                    format!("entry {} does not supersede {}", entry.id(), self.id),
                )),
            ),
        };
        self.timeline
            .push(timeline(entry, summary, anomaly.map(|e| e.to_string())));
    }

    /// The state change of an entry about this certificate; returns its timeline sentence.
    fn adopt(&mut self, entry: &impl Recorded, org: &OrgId, time: u64) -> String {
        let producer = *org == self.producer;
        match entry.record() {
            Record::CertificateRevised(r) => {
                if producer {
                    self.revisions.push(Revision {
                        number: r.revision,
                        certificate: r.certificate.clone(),
                        entry: entry.id(),
                        time_unix_ms: time,
                        reason: Some(r.reason.clone()),
                    });
                }
                format!(
                    "revised the certificate to revision {}: {}",
                    r.revision, r.reason
                )
            }
            Record::StabilityCheck(r) => {
                if producer {
                    self.stability.push(StabilityRecord {
                        entry: entry.id(),
                        time_unix_ms: time,
                        record: r.clone(),
                    });
                }
                format!(
                    "checked the stability of {}: {} {} ({})",
                    r.quantity,
                    r.value,
                    r.unit,
                    match r.conclusion {
                        StabilityConclusion::Stable => "stable",
                        StabilityConclusion::Trend => "trend",
                        StabilityConclusion::Unstable => "unstable",
                    }
                )
            }
            Record::ValueVerification(r) => {
                let record = self.verification_record(entry, r);
                let summary = format!(
                    "verified {} against revision {}: {} {}{}",
                    r.quantity,
                    r.revision,
                    r.value,
                    r.unit,
                    record.comparison.map_or(String::new(), |c| format!(
                        ", En = {:.2}{}",
                        c.en,
                        c.verdict
                            .map_or(String::new(), |v| format!(" ({})", verdict_text(v)))
                    ))
                );
                self.verifications.push(record);
                summary
            }
            Record::Suspended(s) => {
                if self.suspended.is_none() {
                    let event = EventRef::of(entry, Some(s.reason.clone()));
                    self.suspensions.push(SuspensionPeriod {
                        suspended: event.clone(),
                        reinstated: None,
                    });
                    self.suspended = Some(event);
                }
                status_text("suspended", s)
            }
            Record::Reinstated(s) => {
                if self.suspended.take().is_some()
                    && let Some(period) = self.suspensions.last_mut()
                {
                    period.reinstated = Some(EventRef::of(entry, Some(s.reason.clone())));
                }
                status_text("reinstated", s)
            }
            Record::Recalled(s) => {
                if self.recalled.is_none() {
                    self.recalled = Some(EventRef::of(entry, Some(s.reason.clone())));
                }
                status_text("recalled", s)
            }
            Record::Withdrawn(s) => {
                if producer && self.withdrawn.is_none() {
                    self.withdrawn = Some(EventRef::of(entry, Some(s.reason.clone())));
                }
                status_text("withdrawn", s)
            }
            Record::Shipped(r) => {
                if producer {
                    self.move_units(&r.serials, |u| {
                        if u.stage == UnitStage::Produced {
                            u.stage = UnitStage::Shipped;
                            u.shipped_to = Some(r.to.clone());
                            u.shipped_at = Some(time);
                        }
                    });
                }
                format!("shipped {} to {}", units_text(&r.serials), r.to)
            }
            Record::Received(r) => {
                self.move_units(&r.serials, |u| {
                    if u.stage == UnitStage::Shipped && u.shipped_to.as_ref() == Some(org) {
                        u.stage = UnitStage::Received;
                        u.holder = org.clone();
                        u.received_by = Some(org.clone());
                        u.received_at = Some(time);
                    }
                });
                format!("received {} from {}", units_text(&r.serials), r.from)
            }
            Record::Opened(r) => {
                if let Some(u) = self.unit_mut(&r.serial)
                    && u.stage == UnitStage::Received
                    && u.received_by.as_ref() == Some(org)
                {
                    u.stage = UnitStage::Opened;
                    u.opened_at = Some(time);
                }
                format!("opened unit {}", r.serial)
            }
            Record::Used(r) => {
                if let Some(u) = self.unit_mut(&r.serial)
                    && matches!(u.stage, UnitStage::Received | UnitStage::Opened)
                    && u.received_by.as_ref() == Some(org)
                {
                    // A use without an Opened entry opens the unit implicitly (the anomaly
                    // says so), so that "used ⇒ opened" holds in the state.
                    if u.stage == UnitStage::Received {
                        u.stage = UnitStage::Opened;
                        u.opened_at = Some(time);
                    }
                    u.uses = u.uses.saturating_add(1);
                    u.last_used_at = Some(time);
                }
                let mut text = format!("used unit {} for {}", r.serial, purpose_text(r.purpose));
                if let Some(q) = &r.quantity {
                    text.push_str(&format!(" ({} {})", q.value, q.unit));
                }
                if let Some(reference) = &r.reference {
                    text.push_str(&format!(", report {reference}"));
                }
                text
            }
            Record::Disposed(r) => {
                let producer_org = self.producer.clone();
                self.move_units(&r.serials, |u| {
                    let holds = if *org == producer_org {
                        u.stage == UnitStage::Produced
                    } else {
                        u.received_by.as_ref() == Some(org)
                    };
                    if holds && u.stage != UnitStage::Disposed {
                        u.stage = UnitStage::Disposed;
                        u.disposed_at = Some(time);
                    }
                });
                let mut text = format!("disposed of {}", units_text(&r.serials));
                if let Some(reason) = &r.reason {
                    text.push_str(&format!(": {reason}"));
                }
                text
            }
            other => format!("recorded a {}", other.kind()),
        }
    }

    fn verification_record(
        &self,
        entry: &impl Recorded,
        r: &ValueVerification,
    ) -> VerificationRecord {
        // The comparison is made whenever the named revision has the quantity, independently
        // of whether the stated verdict passes the rules.
        let compared = self
            .revision(r.revision)
            .ok_or_else(|| format!("revision {} not found", r.revision))
            .and_then(|rev| {
                rev.certificate.value(&r.quantity).ok_or_else(|| {
                    format!("revision {} has no value for {:?}", r.revision, r.quantity)
                })
            })
            .and_then(|value| {
                verification::compare(value, &r.value, r.unit, &r.uncertainty)
                    .map_err(|e| e.to_string())
            });
        let (comparison, mut note) = match compared {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        let rule_verdict = comparison.and_then(|c| c.verdict);
        if let (Some(stated), Some(rule)) = (r.verdict, rule_verdict)
            && stated != rule
        {
            note = Some(format!(
                "stated verdict {} differs from the rule verdict {}",
                verdict_text(stated),
                verdict_text(rule)
            ));
        }
        VerificationRecord {
            entry: entry.id(),
            chain: entry.chain().clone(),
            time_unix_ms: entry.time_unix_ms(),
            record: r.clone(),
            comparison,
            rule_verdict,
            note,
        }
    }

    /// Applies `change` to each listed unit the batch produced; a record listing more than
    /// [`MAX_SERIALS_PER_RECORD`] serials changes nothing (it is noted as an anomaly).
    fn move_units(&mut self, serials: &SerialSet, mut change: impl FnMut(&mut UnitState)) {
        if serials.len() > MAX_SERIALS_PER_RECORD {
            return;
        }
        for serial in serials.iter() {
            if let Some(unit) = self.unit_mut(&serial) {
                change(unit);
            }
        }
    }
}

/// The rules of a new registration: no duplicate (same code and batch, by anyone, as
/// `existing` reports), and a superseded certificate (`superseded`, looked up by the caller
/// from `certificate.supersedes`) must exist, be `org`'s own and not be superseded already.
pub fn check_registration(
    existing: impl Fn(&RmCode, &str) -> bool,
    org: &OrgId,
    certificate: &Certificate,
    superseded: Option<&CertificateState>,
) -> Result<(), RuleError> {
    if existing(&certificate.code, &certificate.batch) {
        return refuse(
            "duplicate-registration",
            format!(
                "{} batch {} is already registered",
                certificate.code, certificate.batch
            ),
        );
    }
    if let Some(id) = certificate.supersedes {
        match superseded {
            Some(state) if state.id == id => state.check_superseding(org)?,
            _ => {
                return refuse(
                    "supersedes-unknown-certificate",
                    format!("certificate {id} is not known"),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Text

fn verdict_word(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Pass) => "pass",
        Some(Verdict::Fail) => "fail",
        Some(Verdict::Inconclusive) => "inconclusive",
        None => "no verdict",
    }
}

fn timeline(entry: &impl Recorded, summary: String, anomaly: Option<String>) -> TimelineEvent {
    TimelineEvent {
        entry: entry.id(),
        chain: entry.chain().clone(),
        seq: entry.seq(),
        time_unix_ms: entry.time_unix_ms(),
        kind: entry.record().kind(),
        summary,
        anomaly,
    }
}

fn refuse_unit<T>(id: &'static str, unit: &UnitState, what: &str) -> Result<T, RuleError> {
    refuse(id, format!("unit {} was {what}", unit.serial))
}

fn compatible(
    unit: crate::units::Unit,
    expected: crate::units::Unit,
    what: &str,
) -> Result<(), RuleError> {
    if unit.is_compatible(expected) {
        Ok(())
    } else {
        refuse(
            "incompatible-unit",
            format!(
                "{what} is in {unit} ({}), the certificate's in {expected} ({})",
                unit.dimension(),
                expected.dimension()
            ),
        )
    }
}

/// "3 units (A-0001..A-0003)"; at most three ranges are spelled out.
fn units_text(serials: &SerialSet) -> String {
    let n = serials.len();
    let ranges = serials.ranges();
    let mut shown: Vec<String> = ranges.iter().take(3).map(ToString::to_string).collect();
    if ranges.len() > 3 {
        shown.push("…".into());
    }
    let noun = if n == 1 { "unit" } else { "units" };
    format!("{n} {noun} ({})", shown.join(", "))
}

fn status_text(verb: &str, s: &StatusChange) -> String {
    format!("{verb} the certificate: {}", s.reason)
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn purpose_text(p: crate::records::Purpose) -> &'static str {
    use crate::records::Purpose as P;
    match p {
        P::Calibration => "calibration",
        P::MethodValidation => "method validation",
        P::QualityControl => "quality control",
        P::ValueAssignment => "value assignment",
        P::ProficiencyTesting => "proficiency testing",
        P::Other => "another purpose",
    }
}

fn date_text(ms: u64, off: i32) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Date::from_unix_ms(ms, off).ok())
        .map_or_else(|| format!("{ms} ms"), |d| d.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    use super::*;
    use crate::decimal::Decimal;
    use crate::entry::{Payload, VERSION};
    use crate::federation::{Genesis, GenesisBody};
    use crate::ids::{FederationId, PublicKey};
    use crate::records::{
        Anchor, DocumentKind, Enrol, Officer, PropertyValue, Purpose, Quantity, Received, Role,
        Shipped, Uncertainty, Used,
    };
    use crate::serial::SerialRange;
    use crate::units::Unit;

    const OFF: i32 = 480;
    const PRODUCER: &str = "acme-rm";
    const LAB: &str = "nclab";
    const LAB2: &str = "eastlab";
    const INSTITUTE: &str = "nim";

    /// A tiny federation: a genesis, one key per organisation, a sequence counter per chain.
    struct World {
        federation: FederationId,
        seqs: BTreeMap<String, u64>,
    }

    fn key_of(org: &str) -> SigningKey {
        let mut seed = [7u8; 32];
        for (i, b) in org.bytes().enumerate() {
            seed[i % 32] ^= b;
        }
        SigningKey::from_bytes(&seed)
    }

    impl World {
        fn new() -> Self {
            let registrar = key_of("registrar");
            let genesis = Genesis::create(
                &registrar,
                GenesisBody {
                    version: 1,
                    name: "test federation".into(),
                    time_unix_ms: at("2024-01-01", 0),
                    registrar: Enrol {
                        org: org("registrar"),
                        keys: vec![PublicKey(registrar.verifying_key().to_bytes())],
                        name: "Registrar".into(),
                        roles: vec![Role::Registrar],
                    },
                    utc_offset_minutes: OFF,
                },
            )
            .unwrap();
            World {
                federation: genesis.id(),
                seqs: BTreeMap::new(),
            }
        }

        /// Signs `record` as the next entry on `chain`.
        fn entry(&mut self, chain: &str, time: u64, record: Record) -> Entry {
            let seq = self.seqs.entry(chain.into()).or_default();
            let this = *seq;
            *seq += 1;
            let payload = Payload {
                version: VERSION,
                operator: "tester".into(),
                federation: self.federation,
                record,
                seq: this,
                // The fold never follows `prev`; any id will do past seq 0.
                prev: (this > 0).then_some(EntryId([this as u8; 32])),
                time_unix_ms: time,
                chain: org(chain),
            };
            Entry::sign(&key_of(chain), payload).unwrap()
        }
    }

    fn org(text: &str) -> OrgId {
        OrgId::new(text).unwrap()
    }

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    /// Unix ms of `hour`:00 on `day` in the federation's offset.
    fn at(day: &str, hour: u64) -> u64 {
        date(day).start_unix_ms(OFF) as u64 + hour * 3_600_000
    }

    fn serials(text: &str) -> SerialSet {
        SerialSet::new(
            text.split(',')
                .map(|r| SerialRange::parse(r.trim()).unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn unc(expanded: &str) -> Uncertainty {
        Uncertainty {
            expanded: d(expanded),
            relative: false,
            coverage_factor: d("2"),
            coverage_probability: None,
        }
    }

    fn certificate(validity: Validity, after_opening: AfterOpening) -> Certificate {
        let value = |kind, quantity: &str, value, unit, u: Option<&str>| PropertyValue {
            kind,
            unit,
            basis: None,
            value: d(value),
            method: None,
            quantity: quantity.into(),
            uncertainty: u.map(unc),
        };
        Certificate {
            code: RmCode::parse("GBW07406").unwrap(),
            kind: DocumentKind::Certificate,
            name: "Soil".into(),
            batch: "a".into(),
            units: serials("A-0001..A-0010"),
            matrix: Some("soil".into()),
            values: vec![
                value(
                    ValueKind::Certified,
                    "Cd",
                    "0.21",
                    Unit::MgPerKg,
                    Some("0.01"),
                ),
                value(ValueKind::Reference, "Pb", "25", Unit::MgPerKg, Some("2")),
                value(ValueKind::Information, "pH", "7.2", Unit::Ph, None),
            ],
            name_en: None,
            storage: None,
            handling: None,
            validity,
            issue_date: date("2024-01-10"),
            supersedes: None,
            attachments: Vec::new(),
            intended_use: "calibration and quality control".into(),
            traceability: Some("SI via primary methods".into()),
            unit_content: None,
            after_opening,
            commutability: None,
            health_safety: None,
            min_sample_size: Some(Quantity {
                unit: Unit::G,
                value: d("0.1"),
            }),
            approving_officer: Some(Officer {
                name: "Li Wei".into(),
                function: "technical director".into(),
            }),
            grading_certificate: None,
            characterization_date: Some(date("2023-12-01")),
        }
    }

    fn until_2026() -> Validity {
        Validity::Until(date("2026-12-31"))
    }

    fn status(cert: CertificateId, reason: &str) -> StatusChange {
        StatusChange {
            cert,
            reason: reason.into(),
        }
    }

    fn ship(cert: CertificateId, to: &str, units: &str) -> Record {
        Record::Shipped(Shipped {
            to: org(to),
            cert,
            serials: serials(units),
        })
    }

    fn receive(cert: CertificateId, from: &str, units: &str) -> Record {
        Record::Received(Received {
            cert,
            from: org(from),
            serials: serials(units),
        })
    }

    fn open(cert: CertificateId, serial: &str) -> Record {
        Record::Opened(crate::records::Opened {
            cert,
            serial: serial.into(),
        })
    }

    fn use_unit(cert: CertificateId, serial: &str) -> Record {
        Record::Used(Used {
            cert,
            serial: serial.into(),
            purpose: Purpose::QualityControl,
            quantity: Some(Quantity {
                unit: Unit::G,
                value: d("0.25"),
            }),
            reference: Some("QC-2024-001".into()),
        })
    }

    fn dispose(cert: CertificateId, units: &str) -> Record {
        Record::Disposed(crate::records::Disposed {
            cert,
            reason: Some("used up".into()),
            serials: serials(units),
        })
    }

    fn verify(
        cert: CertificateId,
        revision: u32,
        quantity: &str,
        value: &str,
        unit: Unit,
        verdict: Option<Verdict>,
    ) -> Record {
        Record::ValueVerification(ValueVerification {
            cert,
            unit,
            value: d(value),
            method: Some("ICP-MS".into()),
            report: Some("NIM-2024-17".into()),
            sample: Some("A-0010".into()),
            verdict,
            quantity: quantity.into(),
            revision,
            uncertainty: unc("0.02"),
        })
    }

    fn revise(cert: CertificateId, revision: u32, certificate: Certificate) -> Record {
        Record::CertificateRevised(crate::records::CertificateRevised {
            cert,
            reason: "expiry extended after stability monitoring".into(),
            revision,
            certificate,
        })
    }

    /// A world, a certificate registered by the producer on 2024-01-15, and the rules seen.
    struct Scenario {
        world: World,
        state: CertificateState,
        fired: BTreeSet<&'static str>,
    }

    impl Scenario {
        fn new(validity: Validity, after_opening: AfterOpening) -> Self {
            let mut world = World::new();
            let registration = world.entry(
                PRODUCER,
                at("2024-01-15", 9),
                Record::BatchRegistered(certificate(validity, after_opening)),
            );
            Scenario {
                world,
                state: CertificateState::register(&registration).unwrap(),
                fired: BTreeSet::new(),
            }
        }

        fn id(&self) -> CertificateId {
            self.state.id
        }

        /// Checks `record` by `org` at `time`: `Ok(())` must be accepted (and is applied),
        /// `Err(rule)` must be refused with that rule (and is not applied).
        fn step(&mut self, org: &str, time: u64, record: Record, expected: Result<(), &str>) {
            let got = self.state.check(&self::org(org), time, &record, OFF);
            match (&got, expected) {
                (Ok(()), Ok(())) => {
                    let entry = self.world.entry(org, time, record);
                    let before = self.state.timeline.len();
                    self.state.apply(&entry, OFF);
                    assert_eq!(self.state.timeline.len(), before + 1);
                    assert_eq!(self.state.timeline.last().unwrap().anomaly, None);
                }
                (Err(e), Err(rule)) => {
                    assert_eq!(e.rule, rule, "{e}");
                    assert!(RuleError::rules().contains(&e.rule));
                    assert!(e.to_string().starts_with(&format!("{rule}: ")));
                    self.fired.insert(e.rule);
                }
                _ => panic!("{org} {:?}: got {got:?}, want {expected:?}", record.kind()),
            }
        }

        /// Applies without checking (a replicated fact).
        fn fact(&mut self, org: &str, time: u64, record: Record) -> Entry {
            let entry = self.world.entry(org, time, record);
            self.state.apply(&entry, OFF);
            entry
        }

        fn unit(&self, serial: &str) -> UnitState {
            self.state.unit(serial).unwrap().into_owned()
        }
    }

    #[test]
    fn happy_path() {
        let mut s = Scenario::new(until_2026(), AfterOpening::Within(Period::Days(30)));
        let id = s.id();
        let day = |n: u32| at(&format!("2024-02-{n:02}"), 10);
        let steps: Vec<(&str, u64, Record)> = vec![
            (
                INSTITUTE,
                day(1),
                verify(id, 1, "Cd", "0.23", Unit::MgPerKg, Some(Verdict::Pass)),
            ),
            (PRODUCER, day(2), ship(id, LAB, "A-0001..A-0003")),
            (LAB, day(4), receive(id, PRODUCER, "A-0001..A-0003")),
            (LAB, day(5), open(id, "A-0001")),
            (LAB, day(6), use_unit(id, "A-0001")),
            (LAB, day(7), use_unit(id, "A-0001")),
            (LAB, day(8), dispose(id, "A-0001")),
        ];
        for (org, time, record) in steps {
            s.step(org, time, record, Ok(()));
        }
        let v = &s.state.verifications[0];
        assert_eq!(v.rule_verdict, Some(Verdict::Pass));
        assert!((v.comparison.unwrap().en - 0.894).abs() < 0.001);
        assert_eq!(v.note, None);

        let a1 = s.unit("A-0001");
        assert_eq!(a1.stage, UnitStage::Disposed);
        assert_eq!(a1.uses, 2);
        assert_eq!(a1.holder, org(LAB));
        assert_eq!(a1.shipped_at, Some(day(2)));
        assert_eq!(a1.received_at, Some(day(4)));
        assert_eq!(a1.opened_at, Some(day(5)));
        assert_eq!(a1.last_used_at, Some(day(7)));
        assert_eq!(a1.disposed_at, Some(day(8)));
        let a2 = s.unit("A-0002");
        assert_eq!(
            (a2.stage, a2.holder.clone()),
            (UnitStage::Received, org(LAB))
        );
        let a4 = s.unit("A-0004");
        assert_eq!((a4.stage, a4.holder), (UnitStage::Produced, org(PRODUCER)));
        assert_eq!(s.state.units.len(), 10);

        let summaries: Vec<&str> = s
            .state
            .timeline
            .iter()
            .map(|t| t.summary.as_str())
            .collect();
        assert_eq!(
            summaries,
            [
                "registered GBW07406 batch a (Soil) with 10 units (A-0001..A-0010)",
                "verified Cd against revision 1: 0.23 mg/kg, En = 0.89 (pass)",
                "shipped 3 units (A-0001..A-0003) to nclab",
                "received 3 units (A-0001..A-0003) from acme-rm",
                "opened unit A-0001",
                "used unit A-0001 for quality control (0.25 g), report QC-2024-001",
                "used unit A-0001 for quality control (0.25 g), report QC-2024-001",
                "disposed of 1 unit (A-0001): used up",
            ]
        );
        assert_eq!(s.state.status_at(day(9), OFF), Status::Valid);
        // The state is what the JSON API shows.
        let json = serde_json::to_value(&s.state).unwrap();
        assert_eq!(json["units"]["A-0001"]["stage"], "disposed");
        assert_eq!(json["timeline"][2]["kind"], "Shipped");
    }

    #[test]
    fn every_rule_fires() {
        let mut fired = BTreeSet::new();
        let t = |n: u32| at(&format!("2024-03-{n:02}"), 10);

        // Registration and superseding.
        let mut s = Scenario::new(until_2026(), AfterOpening::SingleUse);
        let id = s.id();
        let shipped = s.world.entry(PRODUCER, t(1), ship(id, LAB, "A-0001"));
        assert_eq!(
            CertificateState::register(&shipped).unwrap_err().rule,
            "not-a-registration"
        );
        fired.insert("not-a-registration");
        let mut next = certificate(until_2026(), AfterOpening::SingleUse);
        next.batch = "b".into();
        let no = |_: &RmCode, _: &str| false;
        let registration_rule = |existing: &dyn Fn(&RmCode, &str) -> bool,
                                 by: &str,
                                 c: &Certificate,
                                 old: Option<&CertificateState>| {
            check_registration(existing, &org(by), c, old)
                .map_err(|e| e.rule)
                .err()
        };
        assert_eq!(
            registration_rule(
                &|code, batch| code.as_str() == "GBW07406" && batch == "b",
                PRODUCER,
                &next,
                None
            ),
            Some("duplicate-registration")
        );
        assert_eq!(registration_rule(&no, PRODUCER, &next, None), None);
        next.supersedes = Some(id);
        assert_eq!(
            registration_rule(&no, PRODUCER, &next, None),
            Some("supersedes-unknown-certificate")
        );
        assert_eq!(
            registration_rule(&no, "other-rm", &next, Some(&s.state)),
            Some("supersedes-foreign-certificate")
        );
        assert_eq!(
            registration_rule(&no, PRODUCER, &next, Some(&s.state)),
            None
        );
        let mut superseded = s.state.clone();
        let successor = s
            .world
            .entry(PRODUCER, t(2), Record::BatchRegistered(next.clone()));
        superseded.apply(&successor, OFF);
        assert!(superseded.superseded_by.is_some());
        assert_eq!(
            registration_rule(&no, PRODUCER, &next, Some(&superseded)),
            Some("certificate-already-superseded")
        );
        fired.extend([
            "duplicate-registration",
            "supersedes-unknown-certificate",
            "supersedes-foreign-certificate",
            "certificate-already-superseded",
        ]);

        // Record-level rules.
        let other = EntryId([9; 32]);
        let anchor = Record::Anchor(Anchor {
            root: crate::ids::TreeHash([0; 32]),
            size: 1,
            chain: org(LAB),
        });
        s.step(LAB, t(1), anchor, Err("not-a-lifecycle-record"));
        s.step(
            PRODUCER,
            t(1),
            ship(other, LAB, "A-0001"),
            Err("wrong-certificate"),
        );
        s.step(LAB, t(1), ship(id, LAB2, "A-0001"), Err("not-the-producer"));
        s.step(
            PRODUCER,
            t(1),
            ship(id, PRODUCER, "A-0001"),
            Err("ship-to-self"),
        );
        s.step(
            PRODUCER,
            t(1),
            ship(id, LAB, "A-0099"),
            Err("unit-not-produced"),
        );
        s.step(
            PRODUCER,
            t(1),
            ship(id, LAB, "Z0000001..Z0200000"),
            Err("too-many-serials"),
        );

        // Revisions.
        let cert = certificate(until_2026(), AfterOpening::SingleUse);
        s.step(
            PRODUCER,
            t(1),
            revise(id, 3, cert.clone()),
            Err("revision-out-of-order"),
        );
        let mut renamed = cert.clone();
        renamed.batch = "b".into();
        s.step(
            PRODUCER,
            t(1),
            revise(id, 2, renamed),
            Err("revision-changes-identity"),
        );
        s.step(
            INSTITUTE,
            t(1),
            revise(id, 2, cert.clone()),
            Err("not-the-producer"),
        );

        // Verifications.
        let pass = Some(Verdict::Pass);
        let cd = |value: &str, unit, verdict| verify(id, 1, "Cd", value, unit, verdict);
        s.step(
            INSTITUTE,
            t(1),
            verify(id, 5, "Cd", "0.23", Unit::MgPerKg, None),
            Err("revision-not-found"),
        );
        s.step(
            INSTITUTE,
            t(1),
            verify(id, 1, "Zn", "0.23", Unit::MgPerKg, None),
            Err("quantity-not-found"),
        );
        s.step(
            INSTITUTE,
            t(1),
            cd("0.23", Unit::MgPerL, None),
            Err("incompatible-unit"),
        );
        s.step(
            INSTITUTE,
            t(1),
            cd("0.26", Unit::MgPerKg, pass),
            Err("verdict-disagrees"),
        );
        s.step(
            INSTITUTE,
            t(1),
            verify(id, 1, "Pb", "25", Unit::MgPerKg, pass),
            Err("verdict-on-non-certified-value"),
        );
        let Record::ValueVerification(mut zero_k) = cd("0.23", Unit::MgPerKg, pass) else {
            unreachable!()
        };
        zero_k.uncertainty.coverage_factor = Decimal::ZERO;
        s.step(
            INSTITUTE,
            t(1),
            Record::ValueVerification(zero_k),
            Err("comparison-failed"),
        );
        // A verdict-less verification of an information value is recorded, without a score.
        s.step(
            INSTITUTE,
            t(1),
            verify(id, 1, "pH", "7.3", Unit::Ph, None),
            Ok(()),
        );
        assert_eq!(s.state.verifications[0].comparison, None);
        assert!(
            s.state.verifications[0]
                .note
                .as_deref()
                .unwrap()
                .contains("no-reference-uncertainty")
        );
        s.step(
            INSTITUTE,
            t(1),
            cd("0.26", Unit::MgPerKg, Some(Verdict::Fail)),
            Ok(()),
        );
        s.step(
            PRODUCER,
            t(1),
            Record::StabilityCheck(StabilityCheck {
                cert: id,
                unit: Unit::MgPerL,
                value: d("0.21"),
                quantity: "Cd".into(),
                conclusion: StabilityConclusion::Stable,
                measured_on: date("2024-03-01"),
                uncertainty: None,
            }),
            Err("incompatible-unit"),
        );

        // Units.
        s.step(PRODUCER, t(2), ship(id, LAB, "A-0001..A-0004"), Ok(()));
        s.step(
            PRODUCER,
            t(2),
            ship(id, LAB2, "A-0004..A-0005"),
            Err("unit-already-shipped"),
        );
        s.step(
            LAB,
            t(3),
            receive(id, PRODUCER, "A-0005"),
            Err("unit-not-shipped"),
        );
        s.step(
            LAB2,
            t(3),
            receive(id, PRODUCER, "A-0001"),
            Err("unit-shipped-elsewhere"),
        );
        s.step(LAB, t(3), receive(id, LAB2, "A-0001"), Err("wrong-sender"));
        s.step(LAB, t(3), open(id, "A-0001"), Err("unit-not-received"));
        s.step(LAB, t(3), receive(id, PRODUCER, "A-0001..A-0004"), Ok(()));
        s.step(
            LAB,
            t(3),
            receive(id, PRODUCER, "A-0002"),
            Err("unit-already-received"),
        );
        s.step(LAB2, t(4), open(id, "A-0001"), Err("unit-not-received"));
        s.step(LAB, t(4), use_unit(id, "A-0001"), Err("unit-not-opened"));
        s.step(LAB, t(4), open(id, "A-0001"), Ok(()));
        s.step(LAB, t(4), open(id, "A-0001"), Err("unit-already-opened"));
        let Record::Used(mut in_ml) = use_unit(id, "A-0001") else {
            unreachable!()
        };
        in_ml.quantity = Some(Quantity {
            unit: Unit::ML,
            value: d("1"),
        });
        s.step(LAB, t(4), Record::Used(in_ml), Err("incompatible-unit"));
        s.step(LAB, t(5), use_unit(id, "A-0001"), Ok(()));
        s.step(LAB, t(6), use_unit(id, "A-0001"), Err("single-use-spent"));
        s.step(LAB2, t(6), dispose(id, "A-0002"), Err("unit-not-held"));
        s.step(PRODUCER, t(6), dispose(id, "A-0002"), Err("unit-not-held"));
        s.step(PRODUCER, t(6), dispose(id, "A-0010"), Ok(()));
        s.step(LAB, t(6), dispose(id, "A-0001..A-0003"), Ok(()));
        s.step(LAB, t(7), use_unit(id, "A-0001"), Err("unit-disposed"));
        s.step(LAB, t(7), dispose(id, "A-0003"), Err("unit-disposed"));
        s.step(
            PRODUCER,
            t(7),
            ship(id, LAB, "A-0010"),
            Err("unit-disposed"),
        );

        // Status changes and what they block.
        s.step(
            INSTITUTE,
            t(8),
            Record::Reinstated(status(id, "x")),
            Err("not-suspended"),
        );
        s.step(
            INSTITUTE,
            t(8),
            Record::Suspended(status(id, "Cd drift under review")),
            Ok(()),
        );
        s.step(
            INSTITUTE,
            t(8),
            Record::Suspended(status(id, "again")),
            Err("already-suspended"),
        );
        s.step(
            PRODUCER,
            t(9),
            ship(id, LAB, "A-0006"),
            Err("certificate-suspended"),
        );
        s.step(LAB, t(9), open(id, "A-0004"), Err("certificate-suspended"));
        s.step(
            INSTITUTE,
            t(10),
            Record::Reinstated(status(id, "drift explained")),
            Ok(()),
        );
        s.step(PRODUCER, t(11), ship(id, LAB, "A-0006"), Ok(()));
        s.step(
            PRODUCER,
            at("2027-01-01", 0),
            ship(id, LAB, "A-0007"),
            Err("certificate-expired"),
        );
        s.step(
            PRODUCER,
            at("2026-12-31", 23),
            ship(id, LAB, "A-0007"),
            Ok(()),
        );
        s.step(
            INSTITUTE,
            t(12),
            Record::Recalled(status(id, "contamination")),
            Ok(()),
        );
        s.step(
            INSTITUTE,
            t(12),
            Record::Recalled(status(id, "again")),
            Err("already-recalled"),
        );
        s.step(LAB, t(13), open(id, "A-0004"), Err("certificate-recalled"));
        s.step(
            PRODUCER,
            t(13),
            revise(id, 2, cert.clone()),
            Err("certificate-recalled"),
        );
        s.step(
            INSTITUTE,
            t(13),
            Record::Suspended(status(id, "x")),
            Err("certificate-recalled"),
        );
        s.step(
            LAB,
            t(13),
            Record::Withdrawn(status(id, "x")),
            Err("not-the-producer"),
        );
        s.step(
            PRODUCER,
            t(14),
            Record::Withdrawn(status(id, "batch exhausted")),
            Ok(()),
        );
        s.step(
            PRODUCER,
            t(14),
            Record::Withdrawn(status(id, "again")),
            Err("already-withdrawn"),
        );
        s.step(
            PRODUCER,
            t(15),
            Record::Recalled(status(id, "x")),
            Err("certificate-withdrawn"),
        );
        s.step(
            PRODUCER,
            t(15),
            ship(id, LAB, "A-0008"),
            Err("certificate-withdrawn"),
        );
        fired.extend(s.fired.iter().copied());

        // After opening: usable through the opening date + 7 days.
        let mut w = Scenario::new(until_2026(), AfterOpening::Within(Period::Days(7)));
        let id = w.id();
        w.step(
            PRODUCER,
            at("2024-01-20", 10),
            ship(id, LAB, "A-0001"),
            Ok(()),
        );
        w.step(
            LAB,
            at("2024-01-25", 10),
            receive(id, PRODUCER, "A-0001"),
            Ok(()),
        );
        w.step(LAB, at("2024-02-01", 10), open(id, "A-0001"), Ok(()));
        w.step(LAB, at("2024-02-08", 23), use_unit(id, "A-0001"), Ok(()));
        w.step(
            LAB,
            at("2024-02-09", 0),
            use_unit(id, "A-0001"),
            Err("after-opening-expired"),
        );
        fired.extend(w.fired.iter().copied());

        // Validity counted from dispatch, per unit.
        let mut p = Scenario::new(
            Validity::AfterDispatch(Period::Days(30)),
            AfterOpening::UntilExpiry,
        );
        let id = p.id();
        p.step(
            PRODUCER,
            at("2024-02-01", 10),
            ship(id, LAB, "A-0001"),
            Ok(()),
        );
        p.step(
            PRODUCER,
            at("2024-02-20", 10),
            ship(id, LAB, "A-0002"),
            Ok(()),
        );
        p.step(
            LAB,
            at("2024-02-25", 10),
            receive(id, PRODUCER, "A-0001..A-0002"),
            Ok(()),
        );
        p.step(LAB, at("2024-02-26", 10), open(id, "A-0001"), Ok(()));
        p.step(LAB, at("2024-02-26", 10), open(id, "A-0002"), Ok(()));
        p.step(LAB, at("2024-03-02", 23), use_unit(id, "A-0001"), Ok(()));
        p.step(
            LAB,
            at("2024-03-03", 0),
            use_unit(id, "A-0001"),
            Err("unit-expired"),
        );
        p.step(LAB, at("2024-03-03", 0), use_unit(id, "A-0002"), Ok(()));
        let current = &p.state.current().certificate;
        assert_eq!(expiry_unix_ms(current, OFF), None);
        assert_eq!(
            p.unit("A-0001").expiry_unix_ms(current, OFF),
            Some(at("2024-03-03", 0))
        );
        assert_eq!(p.unit("A-0003").expiry_unix_ms(current, OFF), None);
        assert_eq!(p.state.status_at(at("2030-01-01", 0), OFF), Status::Valid);
        fired.extend(p.fired.iter().copied());

        let all: BTreeSet<&str> = RuleError::rules().iter().copied().collect();
        let missing: Vec<_> = all.difference(&fired).collect();
        assert!(missing.is_empty(), "rules never exercised: {missing:?}");
        assert_eq!(all.len(), RuleError::rules().len(), "rule ids are unique");
        for info in rules() {
            let kebab = |c: char| c.is_ascii_lowercase() || c == '-';
            assert!(info.id.chars().all(kebab), "{}", info.id);
        }
    }

    #[test]
    fn status_over_time() {
        // Until: valid through the expiry date in the federation's offset.
        let s = Scenario::new(until_2026(), AfterOpening::NotStated);
        assert_eq!(s.state.status_at(at("2026-12-31", 23), OFF), Status::Valid);
        assert_eq!(s.state.status_at(at("2027-01-01", 0), OFF), Status::Expired);
        assert_eq!(
            s.state.status_at(at("2027-01-01", 0) - 1, OFF),
            Status::Valid
        );
        // Characterized 2023-12-01 + 2 years: valid through 2025-12-01.
        let c = Scenario::new(
            Validity::FromCharacterization(Period::Years(2)),
            AfterOpening::NotStated,
        );
        assert_eq!(c.state.status_at(at("2025-12-01", 23), OFF), Status::Valid);
        assert_eq!(c.state.status_at(at("2025-12-02", 0), OFF), Status::Expired);
        assert_eq!(
            c.state.current().expiry_unix_ms(OFF),
            Some(at("2025-12-02", 0))
        );
        let r = Scenario::new(Validity::UntilRevoked, AfterOpening::NotStated);
        assert_eq!(r.state.status_at(at("2099-01-01", 0), OFF), Status::Valid);

        // Suspension, reinstatement, recall, supersession, withdrawal: each from its time on.
        let mut s = Scenario::new(until_2026(), AfterOpening::NotStated);
        let id = s.id();
        let t = |n: u32| at(&format!("2024-05-{n:02}"), 10);
        s.fact(INSTITUTE, t(1), Record::Suspended(status(id, "review")));
        s.fact(INSTITUTE, t(3), Record::Reinstated(status(id, "cleared")));
        s.fact(
            INSTITUTE,
            t(5),
            Record::Suspended(status(id, "review again")),
        );
        let mut next = certificate(until_2026(), AfterOpening::NotStated);
        next.batch = "b".into();
        next.supersedes = Some(id);
        s.fact(PRODUCER, t(7), Record::BatchRegistered(next));
        s.fact(
            INSTITUTE,
            t(9),
            Record::Recalled(status(id, "contamination")),
        );
        s.fact(PRODUCER, t(11), Record::Withdrawn(status(id, "withdrawn")));
        let expected = [
            (t(1) - 1, Status::Valid),
            (t(1), Status::Suspended),
            (t(2), Status::Suspended),
            (t(3), Status::Valid),
            (t(4), Status::Valid),
            (t(6), Status::Suspended),
            (t(8), Status::Superseded),
            (t(10), Status::Recalled),
            (t(12), Status::Withdrawn),
            (at("2030-01-01", 0), Status::Withdrawn),
        ];
        for (time, status) in expected {
            assert_eq!(s.state.status_at(time, OFF), status, "at {time}");
        }
        assert_eq!(s.state.suspensions.len(), 2);
        assert!(s.state.suspended.is_some());
        assert!(
            s.state.timeline.iter().all(|t| t.anomaly.is_none()),
            "{:#?}",
            s.state.timeline
        );
        assert_eq!(Status::Superseded.to_string(), "superseded");
        assert_eq!(serde_json::to_value(Status::Recalled).unwrap(), "recalled");
    }

    #[test]
    fn revisions_are_kept_and_dated() {
        let mut s = Scenario::new(Validity::Until(date("2025-06-30")), AfterOpening::NotStated);
        let id = s.id();
        let mut extended =
            certificate(Validity::Until(date("2027-06-30")), AfterOpening::NotStated);
        extended.values[0].value = d("0.22");
        s.step(
            PRODUCER,
            at("2025-08-01", 9),
            revise(id, 2, extended),
            Ok(()),
        );
        assert_eq!(s.state.revisions.len(), 2);
        assert_eq!(s.state.current().number, 2);
        let first = s.state.revision(1).unwrap();
        assert_eq!(
            first.certificate.validity,
            Validity::Until(date("2025-06-30"))
        );
        assert_eq!(first.certificate.value("Cd").unwrap().value, d("0.21"));
        // Before the revision the old validity applies: expired in July 2025.
        assert_eq!(s.state.status_at(at("2025-07-15", 0), OFF), Status::Expired);
        assert_eq!(s.state.status_at(at("2025-08-02", 0), OFF), Status::Valid);
        assert_eq!(s.state.revision_at(at("2025-07-15", 0)).number, 1);
        // A verification names its revision and is compared with that one's value.
        s.step(
            INSTITUTE,
            at("2025-08-03", 9),
            verify(id, 1, "Cd", "0.23", Unit::MgPerKg, Some(Verdict::Pass)),
            Ok(()),
        );
        s.step(
            INSTITUTE,
            at("2025-08-03", 9),
            verify(id, 2, "Cd", "0.26", Unit::MgPerKg, Some(Verdict::Pass)),
            Err("verdict-disagrees"),
        );
        // The producer's revision 2 cannot be repeated; revision 3 follows.
        let again = certificate(Validity::Until(date("2028-06-30")), AfterOpening::NotStated);
        s.step(
            PRODUCER,
            at("2025-09-01", 9),
            revise(id, 2, again.clone()),
            Err("revision-out-of-order"),
        );
        s.step(PRODUCER, at("2025-09-01", 9), revise(id, 3, again), Ok(()));
    }

    #[test]
    fn replicated_facts_are_recorded_not_refused() {
        let mut s = Scenario::new(until_2026(), AfterOpening::SingleUse);
        let id = s.id();
        // A use of a serial the batch never produced: on the timeline, no unit created.
        s.fact(LAB, at("2024-02-01", 9), use_unit(id, "A-0099"));
        let last = s.state.timeline.last().unwrap();
        assert_eq!(last.kind, RecordKind::Used);
        assert!(
            last.anomaly
                .as_deref()
                .unwrap()
                .starts_with("unit-not-produced")
        );
        assert_eq!(s.state.units.len(), 10);
        assert!(s.state.unit("A-0099").is_none());
        // Another member cannot revise the certificate or take a unit through a fact.
        let mut changed = certificate(until_2026(), AfterOpening::SingleUse);
        changed.values[0].value = d("9.99");
        s.fact(LAB, at("2024-02-02", 9), revise(id, 2, changed));
        assert_eq!(s.state.revisions.len(), 1);
        s.fact(PRODUCER, at("2024-02-03", 9), ship(id, LAB, "A-0001"));
        s.fact(LAB2, at("2024-02-04", 9), receive(id, PRODUCER, "A-0001"));
        assert_eq!(s.unit("A-0001").stage, UnitStage::Shipped);
        s.fact(LAB, at("2024-02-05", 9), receive(id, PRODUCER, "A-0001"));
        // A use without an Opened entry opens the unit implicitly; a second use of a
        // single-use unit is still a fact, flagged for the audit.
        s.fact(LAB, at("2024-02-06", 9), use_unit(id, "A-0001"));
        s.fact(LAB, at("2024-02-07", 9), use_unit(id, "A-0001"));
        let unit = s.unit("A-0001");
        assert_eq!((unit.stage, unit.uses), (UnitStage::Opened, 2));
        assert_eq!(unit.opened_at, Some(at("2024-02-06", 9)));
        let anomalies: Vec<&str> = s
            .state
            .timeline
            .iter()
            .filter_map(|t| t.anomaly.as_deref())
            .map(|a| a.split(':').next().unwrap())
            .collect();
        assert_eq!(
            anomalies,
            [
                "unit-not-produced",
                "not-the-producer",
                "unit-shipped-elsewhere",
                "unit-not-opened",
                "single-use-spent"
            ]
        );
        // A verification whose stated verdict the rules contradict is kept, with a note.
        s.fact(
            INSTITUTE,
            at("2024-02-08", 9),
            verify(id, 1, "Cd", "0.26", Unit::MgPerKg, Some(Verdict::Pass)),
        );
        let v = s.state.verifications.last().unwrap();
        assert_eq!(v.rule_verdict, Some(Verdict::Fail));
        assert!(v.note.as_deref().unwrap().contains("differs"));
        // Entries about other certificates and the registration itself change nothing.
        let before = s.state.timeline.len();
        let registration = s.world.entry(
            PRODUCER,
            0,
            Record::Anchor(Anchor {
                root: crate::ids::TreeHash([0; 32]),
                size: 1,
                chain: org(PRODUCER),
            }),
        );
        s.state.apply(&registration, OFF);
        assert_eq!(s.state.timeline.len(), before + 1);
    }

    #[test]
    fn large_batches_are_tracked_lazily() {
        let mut world = World::new();
        let mut big = certificate(until_2026(), AfterOpening::NotStated);
        big.units = serials("B000000000001..B999999999999");
        let entry = world.entry(PRODUCER, at("2024-01-15", 9), Record::BatchRegistered(big));
        let mut state = CertificateState::register(&entry).unwrap();
        assert!(state.units.is_empty());
        let id = state.id;
        assert_eq!(
            state.unit("B000000000007").unwrap().stage,
            UnitStage::Produced
        );
        let shipped = world.entry(
            PRODUCER,
            at("2024-02-01", 9),
            ship(id, LAB, "B000000000007"),
        );
        state
            .check(&org(PRODUCER), at("2024-02-01", 9), shipped.record(), OFF)
            .unwrap();
        state.apply(&shipped, OFF);
        assert_eq!(state.units.len(), 1);
        assert_eq!(
            state.unit("B000000000007").unwrap().stage,
            UnitStage::Shipped
        );
    }

    // -----------------------------------------------------------------------------------------
    // Property: random histories never panic, and accepted writes keep the unit invariants.

    const ORGS: [&str; 4] = [PRODUCER, LAB, LAB2, INSTITUTE];

    #[derive(Debug, Clone)]
    enum Op {
        Ship(usize, u8, u8),
        Receive(usize, u8, u8),
        Open(u8),
        Use(u8),
        Dispose(u8, u8),
        Suspend,
        Reinstate,
        Recall,
        Withdraw,
        Revise(u32),
        Verify(u8),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let serial = 1u8..=8;
        prop_oneof![
            4 => (0..4usize, serial.clone(), 0u8..3).prop_map(|(o, a, n)| Op::Ship(o, a, n)),
            4 => (0..4usize, serial.clone(), 0u8..3).prop_map(|(o, a, n)| Op::Receive(o, a, n)),
            4 => serial.clone().prop_map(Op::Open),
            6 => serial.clone().prop_map(Op::Use),
            2 => (serial, 0u8..2).prop_map(|(a, n)| Op::Dispose(a, n)),
            1 => Just(Op::Suspend),
            1 => Just(Op::Reinstate),
            1 => Just(Op::Recall),
            1 => Just(Op::Withdraw),
            1 => (1u32..4).prop_map(Op::Revise),
            1 => (0u8..40).prop_map(Op::Verify),
        ]
    }

    fn range(a: u8, n: u8) -> String {
        if n == 0 {
            format!("A-{a:04}")
        } else {
            format!("A-{a:04}..A-{:04}", u32::from(a) + u32::from(n))
        }
    }

    fn op_record(op: &Op, id: CertificateId) -> Record {
        match *op {
            Op::Ship(to, a, n) => ship(id, ORGS[to], &range(a, n)),
            Op::Receive(from, a, n) => receive(id, ORGS[from], &range(a, n)),
            Op::Open(a) => open(id, &range(a, 0)),
            Op::Use(a) => use_unit(id, &range(a, 0)),
            Op::Dispose(a, n) => dispose(id, &range(a, n)),
            Op::Suspend => Record::Suspended(status(id, "r")),
            Op::Reinstate => Record::Reinstated(status(id, "r")),
            Op::Recall => Record::Recalled(status(id, "r")),
            Op::Withdraw => Record::Withdrawn(status(id, "r")),
            Op::Revise(n) => revise(id, n, certificate(until_2026(), AfterOpening::SingleUse)),
            Op::Verify(x) => verify(
                id,
                1,
                "Cd",
                &format!("0.{:02}", 10 + x),
                Unit::MgPerKg,
                None,
            ),
        }
    }

    fn unit_invariants(state: &CertificateState, single_use: bool) {
        for u in state.units.values() {
            let ctx = format!("{u:?}");
            if u.uses > 0 {
                assert!(
                    u.opened_at.is_some() && u.stage >= UnitStage::Opened,
                    "{ctx}"
                );
            }
            if single_use {
                assert!(u.uses <= 1, "{ctx}");
            }
            if u.opened_at.is_some() {
                assert!(u.received_at.is_some(), "{ctx}");
            }
            if u.received_at.is_some() {
                assert!(u.shipped_at.is_some(), "{ctx}");
                assert_eq!(u.received_by, u.shipped_to, "{ctx}");
                assert_eq!(Some(&u.holder), u.received_by.as_ref(), "{ctx}");
            } else {
                assert_eq!(u.holder, state.producer, "{ctx}");
            }
            assert_eq!(
                u.stage == UnitStage::Disposed,
                u.disposed_at.is_some(),
                "{ctx}"
            );
            match u.stage {
                UnitStage::Produced => assert!(u.shipped_at.is_none(), "{ctx}"),
                UnitStage::Shipped => {
                    assert!(u.shipped_at.is_some() && u.received_at.is_none(), "{ctx}")
                }
                UnitStage::Received => {
                    assert!(u.received_at.is_some() && u.opened_at.is_none(), "{ctx}")
                }
                UnitStage::Opened => assert!(u.opened_at.is_some(), "{ctx}"),
                UnitStage::Disposed => {}
            }
            let times = [u.shipped_at, u.received_at, u.opened_at, u.last_used_at];
            let known: Vec<u64> = times.iter().flatten().copied().collect();
            assert!(known.windows(2).all(|w| w[0] <= w[1]), "{ctx}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_histories(
            ops in prop::collection::vec((arb_op(), 0usize..4, 0u64..3 * 24 * 60), 1..40),
            policy in 0u8..3,
        ) {
            let after_opening = match policy {
                0 => AfterOpening::SingleUse,
                1 => AfterOpening::Within(Period::Days(1)),
                _ => AfterOpening::UntilExpiry,
            };
            let mut world = World::new();
            let mut cert = certificate(until_2026(), after_opening.clone());
            cert.units = serials("A-0001..A-0006");
            let registration = world.entry(PRODUCER, at("2024-01-15", 9), Record::BatchRegistered(cert));
            let mut strict = CertificateState::register(&registration).unwrap();
            let mut lenient = strict.clone();
            let id = strict.id;
            let mut time = at("2024-01-16", 9);
            for (i, (op, actor, minutes)) in ops.iter().enumerate() {
                time += minutes * 60_000;
                let record = op_record(op, id);
                let entry = world.entry(ORGS[*actor], time, record);
                lenient.apply(&entry, OFF);
                prop_assert_eq!(lenient.timeline.len(), i + 2);
                unit_invariants(&lenient, false);
                if strict.check(entry.chain(), time, entry.record(), OFF).is_ok() {
                    strict.apply(&entry, OFF);
                    prop_assert_eq!(strict.timeline.last().unwrap().anomaly.as_deref(), None);
                    unit_invariants(&strict, after_opening == AfterOpening::SingleUse);
                }
            }
        }
    }
}
