//! A certificate's state as the node's JSON (`GET /v1/certificates/{id}`) carries it, typed for
//! display. The same view is made from a locally folded [`CertificateState`], so `show` (the
//! node's word) and `verify` (checked offline) print alike.

use std::collections::BTreeMap;

use rmledger_schema::ids::{CertificateId, EntryId, OrgId};
use rmledger_schema::lifecycle::CertificateState;
use rmledger_schema::records::{
    Certificate, RecordKind, StabilityCheck, ValueVerification, Verdict,
};
use rmledger_schema::verification::Comparison;
use serde::{Deserialize, Serialize};

/// See the module doc; field names are those of [`CertificateState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateView {
    pub id: CertificateId,
    pub producer: OrgId,
    pub registered_at_unix_ms: u64,
    pub revisions: Vec<RevisionView>,
    #[serde(default)]
    pub suspended: Option<EventView>,
    #[serde(default)]
    pub recalled: Option<EventView>,
    #[serde(default)]
    pub withdrawn: Option<EventView>,
    #[serde(default)]
    pub superseded_by: Option<EventView>,
    #[serde(default)]
    pub verifications: Vec<VerificationView>,
    #[serde(default)]
    pub stability: Vec<StabilityView>,
    #[serde(default)]
    pub units: BTreeMap<String, UnitView>,
    #[serde(default)]
    pub timeline: Vec<TimelineView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionView {
    pub number: u32,
    pub certificate: Certificate,
    pub entry: EntryId,
    pub time_unix_ms: u64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    pub entry: EntryId,
    pub chain: OrgId,
    pub seq: u64,
    pub time_unix_ms: u64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationView {
    pub entry: EntryId,
    pub chain: OrgId,
    pub time_unix_ms: u64,
    pub record: ValueVerification,
    pub comparison: Option<Comparison>,
    pub rule_verdict: Option<Verdict>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilityView {
    pub entry: EntryId,
    pub time_unix_ms: u64,
    pub record: StabilityCheck,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitView {
    pub serial: String,
    /// produced, shipped, received, opened or disposed.
    pub stage: String,
    pub holder: OrgId,
    pub shipped_to: Option<OrgId>,
    pub received_by: Option<OrgId>,
    pub uses: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineView {
    pub entry: EntryId,
    pub chain: OrgId,
    pub seq: u64,
    pub time_unix_ms: u64,
    pub kind: RecordKind,
    pub summary: String,
    #[serde(default)]
    pub anomaly: Option<String>,
}

impl CertificateView {
    /// The view of a locally folded state.
    pub fn of(state: &CertificateState) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(state)?)
    }

    /// The current revision (the last one).
    pub fn current(&self) -> Option<&RevisionView> {
        self.revisions.last()
    }

    /// How many units are at each stage, in life order.
    pub fn unit_stages(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for stage in ["produced", "shipped", "received", "opened", "disposed"] {
            let n = self.units.values().filter(|u| u.stage == stage).count();
            if n > 0 {
                counts.push((stage.to_string(), n));
            }
        }
        counts
    }
}
