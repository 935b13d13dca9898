//! Offline verification of a proof bundle: [`Bundle::verify`] against the pinned federation,
//! then the lifecycle fold of the verified entries, evaluated at a moment. Nothing here talks to
//! a node; the bundle may come from anywhere.

use rmledger_schema::bundle::{Bundle, BundleError};
use rmledger_schema::ids::{CertificateId, FederationId, OrgId};
use rmledger_schema::lifecycle::{CertificateState, RuleError, Status};
use serde::Serialize;

use crate::view::CertificateView;

/// Why a bundle is not proof of anything.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not a bundle.
    #[error("not a proof bundle: {0}")]
    Decode(BundleError),
    /// A signature, proof, link, authorisation or the federation does not check out.
    #[error("integrity: {0}")]
    Integrity(BundleError),
    /// The verified entries do not fold into a certificate.
    #[error("lifecycle: {0}")]
    Fold(String),
}

/// A chain's newest verified checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    pub chain: OrgId,
    pub size: u64,
    pub time_unix_ms: u64,
}

/// A verified anchor: `witness` vouched for `chain` up to `size`.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorSummary {
    pub witness: OrgId,
    pub chain: OrgId,
    pub size: u64,
}

/// What a verified bundle establishes about its certificate at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub certificate: CertificateId,
    pub federation_id: FederationId,
    pub federation_name: String,
    pub utc_offset_minutes: i32,
    /// The moment the status is for.
    pub at_unix_ms: u64,
    pub status: Status,
    /// When the revision in force at that moment expires, if it does.
    pub expiry_unix_ms: Option<u64>,
    pub entries: usize,
    pub registrar_entries: usize,
    pub checkpoints: Vec<CheckpointSummary>,
    /// Member chains the bundle has no checkpoint of and that no anchor in it names: that they
    /// hold nothing about the certificate rests on the bundle builder's word.
    pub unproven_chains: Vec<OrgId>,
    pub anchors: Vec<AnchorSummary>,
    pub state: CertificateView,
}

/// Decodes and verifies a bundle against `pinned`, folds the certificate's life and evaluates
/// its status at `at_unix_ms`.
pub fn verify_bundle(
    bytes: &[u8],
    pinned: FederationId,
    at_unix_ms: u64,
) -> Result<Verified, VerifyError> {
    let bundle = Bundle::decode(bytes).map_err(VerifyError::Decode)?;
    let verified = bundle.verify(pinned).map_err(VerifyError::Integrity)?;
    let offset = verified.genesis.body().utc_offset_minutes;
    let registration = verified
        .entries
        .iter()
        .find(|e| e.id() == bundle.cert)
        .ok_or(VerifyError::Integrity(BundleError::NoRegistration(
            bundle.cert,
        )))?;
    let others = verified.entries.iter().filter(|e| e.id() != bundle.cert);
    let state = CertificateState::fold(registration, others, offset)
        .map_err(|e: RuleError| VerifyError::Fold(e.to_string()))?;
    let status = state.status_at(at_unix_ms, offset);
    let expiry_unix_ms = state.revision_at(at_unix_ms).expiry_unix_ms(offset);
    let view = CertificateView::of(&state).map_err(|e| VerifyError::Fold(e.to_string()))?;
    Ok(Verified {
        certificate: bundle.cert,
        federation_id: verified.genesis.id(),
        federation_name: verified.genesis.body().name.clone(),
        utc_offset_minutes: offset,
        at_unix_ms,
        status,
        expiry_unix_ms,
        entries: verified.entries.len(),
        registrar_entries: bundle.registrar.len(),
        checkpoints: verified
            .checkpoints
            .iter()
            .map(|(chain, c)| CheckpointSummary {
                chain: chain.clone(),
                size: c.body().size,
                time_unix_ms: c.body().time_unix_ms,
            })
            .collect(),
        unproven_chains: verified.unproven_chains.clone(),
        anchors: verified
            .anchors
            .iter()
            .map(|(witness, chain, size)| AnchorSummary {
                witness: witness.clone(),
                chain: chain.clone(),
                size: *size,
            })
            .collect(),
        state: view,
    })
}
