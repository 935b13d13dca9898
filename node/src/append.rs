//! The write path: validate a record against the rules and the current state, sign it as the
//! next entry of this node's chain, and make it durable with group commit.
//!
//! One writer task owns the chain. Requests queue on a channel; the writer takes every request
//! waiting (up to [`MAX_BATCH`]), checks each against the state as left by the ones before it
//! in the same batch, signs the accepted ones and a checkpoint over the new tree, and appends
//! them all with one fsync. Only then does any request get its answer, so an acknowledged write
//! survives a crash, and concurrent writers share one flush.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use rmledger_schema::checkpoint::{Checkpoint, CheckpointBody};
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::federation::{FederationError, Membership};
use rmledger_schema::ids::{CertificateId, EntryId, OrgId, TreeHash};
use rmledger_schema::lifecycle::{self, CertificateState, RuleError, RuleKind};
use rmledger_schema::merkle::Sha256;
use rmledger_schema::records::{Record, RecordError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::storage::Batch;

/// The most requests one commit takes.
pub const MAX_BATCH: usize = 512;
/// How many requests may wait for the writer before submitters are refused.
const QUEUE: usize = 8192;

/// What an acknowledged write returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub id: EntryId,
    pub chain: OrgId,
    pub seq: u64,
}

/// Why a write was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The record breaks a static rule (422).
    #[error("{0}")]
    Invalid(RecordError),
    /// The organisation may not write this kind of record (403).
    #[error("{0}")]
    Forbidden(FederationError),
    /// A state rule refused it (404 for unknown things, 409 for conflicts, 403 for forbidden).
    #[error("{0}")]
    Rule(RuleError),
    /// A membership record that cannot apply (409).
    #[error("{0}")]
    Membership(FederationError),
    /// The certificate named does not exist here (404).
    #[error("certificate {0} is not known to this node")]
    UnknownCertificate(CertificateId),
    /// An anchor that contradicts this node's copy of the chain it names (409): signing it
    /// would witness a root this node knows to be false.
    #[error("{0}")]
    AnchorContradicts(String),
    /// The store failed; the node needs attention (500).
    #[error("storage failed: {0}")]
    Storage(String),
    /// The writer is shutting down or overloaded (503).
    #[error("the node is not accepting writes now: {0}")]
    Unavailable(&'static str),
}

struct Request {
    operator: String,
    record: Record,
    reply: oneshot::Sender<Result<Appended, WriteError>>,
}

/// The handle HTTP handlers use to submit writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the writer task. It ends when every `Writer` handle is dropped, after finishing
    /// the requests already queued.
    pub fn spawn(
        ledger: Arc<Ledger>,
        key: SigningKey,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(rx, ledger, key, metrics));
        (Self { tx }, task)
    }

    /// Validates, signs and durably appends `record` on behalf of `operator`.
    pub async fn submit(&self, operator: String, record: Record) -> Result<Appended, WriteError> {
        // Static rules need no state: refuse early, outside the writer.
        record.validate().map_err(WriteError::Invalid)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Request {
                operator,
                record,
                reply,
            })
            .map_err(|_| WriteError::Unavailable("the write queue is full or closed"))?;
        answer
            .await
            .map_err(|_| WriteError::Unavailable("the writer stopped"))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    ledger: Arc<Ledger>,
    key: SigningKey,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut requests = vec![first];
        while requests.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        commit(&ledger, &key, &metrics, requests).await;
    }
}

/// The state a batch sees: the ledger plus the effects of the batch's earlier requests.
struct Pending<'a> {
    ledger: &'a Ledger,
    membership: Option<Membership>,
    certificates: HashMap<CertificateId, CertificateState>,
    registrations: HashSet<(String, String)>,
}

impl Pending<'_> {
    fn membership(&self) -> MembershipView<'_> {
        match &self.membership {
            Some(m) => MembershipView::Owned(m),
            None => MembershipView::Shared(self.ledger.membership()),
        }
    }

    fn certificate(
        &mut self,
        id: &CertificateId,
    ) -> Result<Option<&mut CertificateState>, WriteError> {
        if !self.certificates.contains_key(id) {
            match self.ledger.certificate(id).map_err(storage)? {
                Some(state) => {
                    self.certificates.insert(*id, (*state).clone());
                }
                None => return Ok(None),
            }
        }
        Ok(self.certificates.get_mut(id))
    }
}

enum MembershipView<'a> {
    Owned(&'a Membership),
    Shared(std::sync::RwLockReadGuard<'a, Membership>),
}

impl std::ops::Deref for MembershipView<'_> {
    type Target = Membership;
    fn deref(&self) -> &Membership {
        match self {
            MembershipView::Owned(m) => m,
            MembershipView::Shared(m) => m,
        }
    }
}

fn storage(e: LedgerError) -> WriteError {
    WriteError::Storage(e.to_string())
}

async fn commit(ledger: &Arc<Ledger>, key: &SigningKey, metrics: &Metrics, requests: Vec<Request>) {
    let started = Instant::now();
    let org = ledger.org().clone();
    let store = ledger.store().clone();
    let offset = ledger.utc_offset_minutes();
    let mut frontier = store.frontier(&org);
    let mut head = store.chain(&org).and_then(|c| c.head);
    let mut last_time = match head {
        Some(_) => crate::ledger::read_entry(&store, &org, frontier.size() - 1)
            .map(|e| e.time_unix_ms())
            .unwrap_or(0),
        None => 0,
    };
    let mut pending = Pending {
        ledger,
        membership: None,
        certificates: HashMap::new(),
        registrations: HashSet::new(),
    };
    let mut entries = Vec::with_capacity(requests.len());
    let mut waiting = Vec::with_capacity(requests.len());
    for request in requests {
        // Time never goes backwards on a chain, even if the clock does.
        let time = now_unix_ms().max(last_time);
        let checked = check(&mut pending, &org, time, &request.record);
        let signed = checked.and_then(|()| {
            let payload = Payload {
                version: VERSION,
                operator: request.operator.clone(),
                federation: ledger.genesis().id(),
                record: request.record.clone(),
                seq: frontier.size(),
                prev: head,
                time_unix_ms: time,
                chain: org.clone(),
            };
            Entry::sign(key, payload)
                .map_err(|e| WriteError::Storage(format!("signing failed: {e}")))
        });
        match signed {
            Ok(entry) => {
                apply(&mut pending, &entry, offset);
                if frontier.append::<Sha256>(entry.leaf_hash().0).is_err() {
                    let _ = request
                        .reply
                        .send(Err(WriteError::Unavailable("the chain is full")));
                    continue;
                }
                head = Some(entry.id());
                last_time = time;
                waiting.push((
                    request.reply,
                    Appended {
                        id: entry.id(),
                        chain: org.clone(),
                        seq: entry.seq(),
                    },
                ));
                entries.push(entry);
            }
            Err(e) => {
                let _ = request.reply.send(Err(e));
            }
        }
    }
    if entries.is_empty() {
        return;
    }
    let body = CheckpointBody {
        federation: ledger.genesis().id(),
        head: head.expect("a batch with entries has a head"),
        root: TreeHash(frontier.root::<Sha256>()),
        size: frontier.size(),
        time_unix_ms: last_time,
        chain: org.clone(),
    };
    let checkpoint = match Checkpoint::sign(key, body) {
        Ok(c) => c,
        Err(e) => {
            for (reply, _) in waiting {
                let _ = reply.send(Err(WriteError::Storage(format!("checkpoint: {e}"))));
            }
            return;
        }
    };
    let count = entries.len();
    let batch = Batch {
        entries,
        checkpoints: vec![checkpoint],
    };
    // The fsync blocks; keep it off the async workers.
    let store_for_append = store.clone();
    let (batch, result) = tokio::task::spawn_blocking(move || {
        let result = store_for_append.append(&batch);
        (batch, result)
    })
    .await
    .unwrap_or_else(|e| {
        (
            Batch::default(),
            Err(crate::storage::StorageError::Inconsistent(format!(
                "append task: {e}"
            ))),
        )
    });
    metrics.observe_commit(started.elapsed(), count, result.is_ok());
    match result {
        Ok(()) => {
            ledger.committed(&batch.entries);
            for (reply, appended) in waiting {
                let _ = reply.send(Ok(appended));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed; the node refuses writes until restarted");
            for (reply, _) in waiting {
                let _ = reply.send(Err(WriteError::Storage(e.to_string())));
            }
        }
    }
}

/// The rules a record must pass against the current state to be written by `org` at `time`.
fn check(
    pending: &mut Pending<'_>,
    org: &OrgId,
    time: u64,
    record: &Record,
) -> Result<(), WriteError> {
    let offset = pending.ledger.utc_offset_minutes();
    {
        let membership = pending.membership();
        let member = membership.member(org).ok_or_else(|| {
            WriteError::Forbidden(FederationError::NotAMember { org: org.clone() })
        })?;
        if member.suspended_at(time) {
            return Err(WriteError::Forbidden(FederationError::MemberSuspended {
                org: org.clone(),
                time_unix_ms: time,
            }));
        }
        membership
            .check_role(org, record.kind())
            .map_err(WriteError::Forbidden)?;
        if org == membership.registrar() {
            membership
                .check_record(record)
                .map_err(WriteError::Membership)?;
        }
    }
    match record {
        Record::Anchor(anchor) => {
            // A witness statement must agree with what this node holds; an anchor of a size
            // beyond our copy cannot be checked yet (replication re-checks it later).
            let store = pending.ledger.store();
            if anchor.size > 0 && anchor.size <= store.chain_size(&anchor.chain) {
                let root = store
                    .root(&anchor.chain, anchor.size)
                    .map_err(|e| WriteError::Storage(e.to_string()))?;
                if root != anchor.root {
                    return Err(WriteError::AnchorContradicts(format!(
                        "anchor of {} at size {} names root {}, but this node's copy has root {root}",
                        anchor.chain, anchor.size, anchor.root
                    )));
                }
            }
            Ok(())
        }
        Record::BatchRegistered(certificate) => {
            let store = pending.ledger.store().clone();
            let key = (
                certificate.code.as_str().to_owned(),
                certificate.batch.clone(),
            );
            let pending_duplicate = pending.registrations.contains(&key);
            let superseded = match &certificate.supersedes {
                Some(id) => pending.certificate(id)?.map(|s| s.clone()),
                None => None,
            };
            let existing = |code: &rmledger_schema::rmcode::RmCode, batch: &str| {
                pending_duplicate
                    || store
                        .certificates_by_code(code.as_str(), Some(batch))
                        .map(|v| !v.is_empty())
                        .unwrap_or(true)
            };
            lifecycle::check_registration(existing, org, certificate, superseded.as_ref())
                .map_err(WriteError::Rule)
        }
        other => match other.certificate() {
            Some(id) => {
                let id = *id;
                let state = pending
                    .certificate(&id)?
                    .ok_or(WriteError::UnknownCertificate(id))?;
                state
                    .check(org, time, record, offset)
                    .map_err(WriteError::Rule)
            }
            None => Ok(()),
        },
    }
}

/// Carries an accepted entry's effects into the batch's pending state.
fn apply(pending: &mut Pending<'_>, entry: &Entry, offset: i32) {
    let registrar = pending.ledger.genesis().registrar().clone();
    if *entry.chain() == registrar {
        let mut membership = pending
            .membership
            .take()
            .unwrap_or_else(|| pending.ledger.membership().clone());
        if let Err(e) = membership.apply(entry) {
            tracing::error!(error = %e, "a checked membership record did not apply");
        }
        pending.membership = Some(membership);
    }
    match entry.record() {
        Record::BatchRegistered(certificate) => {
            pending.registrations.insert((
                certificate.code.as_str().to_owned(),
                certificate.batch.clone(),
            ));
            if let Some(superseded) = certificate.supersedes
                && let Some(state) = pending.certificates.get_mut(&superseded)
            {
                state.apply(entry, offset);
            }
        }
        other => {
            if let Some(id) = other.certificate()
                && let Some(state) = pending.certificates.get_mut(id)
            {
                state.apply(entry, offset);
            }
        }
    }
}

/// The HTTP status class of a rule error.
pub fn rule_status(rule: &RuleError) -> u16 {
    match rule.kind {
        RuleKind::NotFound => 404,
        RuleKind::Forbidden => 403,
        RuleKind::Conflict => 409,
    }
}

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
