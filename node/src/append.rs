//! The write path: validate a record against the rules and the current state, sign it as the
//! next entry of this node's chain, and make it durable with group commit.
//!
//! One writer task owns the chain. Requests queue on a channel; the writer takes every request
//! waiting (up to [`MAX_BATCH`]), checks each against the state as left by the ones before it
//! in the same batch, signs the accepted ones and a checkpoint over the new tree, and appends
//! them all with one fsync. Only then does any request get its answer, so an acknowledged write
//! survives a crash, and concurrent writers share one flush.
//!
//! Checking is in order; signing is not. An entry's id names the bytes its signature covers,
//! not the signature, so each entry links to the one before as soon as it is built, and the
//! batch's signatures are made on every core once all of it is checked ([`sign_all`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use rmledger_schema::checkpoint::{Checkpoint, CheckpointBody};
use rmledger_schema::entry::{Entry, Payload, Recorded, Unsigned, VERSION};
use rmledger_schema::federation::{FederationError, Membership};
use rmledger_schema::ids::{CertificateId, EntryId, OrgId, TreeHash};
use rmledger_schema::lifecycle::{self, CertificateState, RuleError, RuleKind};
use rmledger_schema::merkle::{Frontier, Sha256};
use rmledger_schema::records::{MAX_BATCH_RECORDS, Record, RecordError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::storage::Batch;

/// The most records one commit takes (a batch request larger than this commits alone).
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
    /// A batch request with no records or too many (422).
    #[error("a batch carries 1 to {MAX_BATCH_RECORDS} records; this one carries {0}")]
    BatchSize(usize),
}

/// A batch request refused: the record at `index` (in submission order), when one record is to
/// blame, was refused for `error`. Nothing of the request was written.
#[derive(Debug)]
pub struct Refused {
    pub index: Option<usize>,
    pub error: WriteError,
}

impl Refused {
    fn whole(error: WriteError) -> Self {
        Self { index: None, error }
    }
}

type Reply = oneshot::Sender<Result<Vec<Appended>, Refused>>;

/// One submission: one record, or a batch that is written all together or not at all.
struct Request {
    operator: String,
    records: Vec<Record>,
    /// Submitted as a batch: a refused record is named by its index (even in a batch of one).
    batch: bool,
    reply: Reply,
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
        let task = tokio::spawn(run(rx, ledger, Arc::new(key), metrics));
        (Self { tx }, task)
    }

    /// Validates, signs and durably appends `record` on behalf of `operator`.
    pub async fn submit(&self, operator: String, record: Record) -> Result<Appended, WriteError> {
        let mut appended = self
            .enqueue(operator, vec![record], false)
            .await
            .map_err(|refused| refused.error)?;
        Ok(appended.remove(0))
    }

    /// Validates, signs and durably appends `records`, in order, as consecutive entries of this
    /// node's chain: all of them or none. Each record is checked against the state the ones
    /// before it leave; the first refused one refuses the request, naming its index.
    pub async fn submit_all(
        &self,
        operator: String,
        records: Vec<Record>,
    ) -> Result<Vec<Appended>, Refused> {
        self.enqueue(operator, records, true).await
    }

    async fn enqueue(
        &self,
        operator: String,
        records: Vec<Record>,
        batch: bool,
    ) -> Result<Vec<Appended>, Refused> {
        let at = |index: usize| batch.then_some(index);
        if records.is_empty() || records.len() > MAX_BATCH_RECORDS {
            return Err(Refused::whole(WriteError::BatchSize(records.len())));
        }
        // Static rules need no state: refuse early, outside the writer.
        for (index, record) in records.iter().enumerate() {
            record.validate().map_err(|e| Refused {
                index: at(index),
                error: WriteError::Invalid(e),
            })?;
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Request {
                operator,
                records,
                batch,
                reply,
            })
            .map_err(|_| {
                Refused::whole(WriteError::Unavailable("the write queue is full or closed"))
            })?;
        answer
            .await
            .map_err(|_| Refused::whole(WriteError::Unavailable("the writer stopped")))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    ledger: Arc<Ledger>,
    key: Arc<SigningKey>,
    metrics: Arc<Metrics>,
) {
    // Two-stage pipeline. Checking and signing a batch is CPU work; writing it is mostly
    // waiting for the fsync. So while batch k is being written (on a blocking thread), batch
    // k+1 is checked and signed (on another) against the state batch k leaves behind
    // ([`Carry`]); batch k is answered as soon as it is durable, even while k+1 is being
    // signed. Batch k+1 is handed to the store only after batch k is durable, so the chain is
    // written strictly in order, every 201 still follows its own fsync, and if batch k fails
    // batch k+1 is refused without a byte of it written.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let first = match in_flight.as_mut() {
            None => match rx.recv().await {
                Some(request) => request,
                None => break,
            },
            // A write is in flight: start on the next batch as soon as a request comes, or
            // answer the write's requests if it finishes first.
            Some(flight) => tokio::select! {
                biased;
                request = rx.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                joined = &mut flight.task => {
                    let flight = in_flight.take().expect("polled above");
                    finish(&ledger, &metrics, flight.started, flight.waiting, joined);
                    continue;
                }
            },
        };
        let mut records = first.records.len();
        let mut requests = vec![first];
        while records < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => {
                    records += request.records.len();
                    requests.push(request);
                }
                Err(_) => break,
            }
        }
        let carry = in_flight
            .as_mut()
            .map(|flight| std::mem::take(&mut flight.carry));
        // Checking and signing run on a blocking thread, so the in-flight batch is answered the
        // moment it is durable rather than when this batch is signed, and the async workers
        // stay free for requests.
        let mut preparing = {
            let (ledger, key) = (ledger.clone(), key.clone());
            tokio::task::spawn_blocking(move || prepare(&ledger, &key, requests, carry))
        };
        let mut previous_ok = true;
        let prepared = loop {
            let Some(flight) = in_flight.as_mut() else {
                break (&mut preparing).await;
            };
            tokio::select! {
                joined = &mut flight.task => {
                    let flight = in_flight.take().expect("polled above");
                    previous_ok = finish(&ledger, &metrics, flight.started, flight.waiting, joined);
                }
                prepared = &mut preparing => break prepared,
            }
        };
        // The previous batch must be durable before this one is written.
        if let Some(flight) = in_flight.take() {
            let joined = flight.task.await;
            previous_ok = finish(&ledger, &metrics, flight.started, flight.waiting, joined);
        }
        // A panic while preparing drops the requests' reply senders: their writers are told
        // the writer stopped, and nothing of the batch was written.
        let Ok(Some(prepared)) = prepared else {
            continue;
        };
        if !previous_ok {
            // The store refuses writes after a failed append; say why, write nothing.
            for (reply, _) in prepared.waiting {
                let _ = reply.send(Err(Refused::whole(WriteError::Storage(
                    "an earlier append failed; the node refuses writes until restarted".into(),
                ))));
            }
            continue;
        }
        in_flight = Some(start_write(ledger.store().clone(), prepared));
    }
    // The queue is closed (every handle dropped): finish the last write before ending.
    if let Some(flight) = in_flight.take() {
        let joined = flight.task.await;
        finish(&ledger, &metrics, flight.started, flight.waiting, joined);
    }
}

type Waiting = Vec<(Reply, Vec<Appended>)>;
type WriteResult = (Batch, Result<(), crate::storage::StorageError>);

/// A signed batch whose append (write + fsync) is running on a blocking thread.
struct InFlight {
    task: tokio::task::JoinHandle<WriteResult>,
    waiting: Waiting,
    started: Instant,
    /// The state this batch leaves behind, for checking and signing the next one.
    carry: Carry,
}

/// A batch checked and signed, ready to append.
struct Prepared {
    batch: Batch,
    waiting: Waiting,
    started: Instant,
    carry: Carry,
}

/// The chain's tip and the pending effects a batch leaves behind before it is durable: what
/// the next batch must see that the ledger and store do not show yet. Only what the batch
/// itself touched is kept, so this stays as small as one batch.
#[derive(Default)]
struct Carry {
    frontier: Frontier,
    head: Option<EntryId>,
    last_time: u64,
    /// The membership after the batch, when it is on the registrar's chain.
    membership: Option<Membership>,
    /// States of the certificates the batch checked or changed, after the batch.
    certificates: HashMap<CertificateId, CertificateState>,
    /// (code, batch) pairs the batch registered.
    registrations: HashSet<(String, String)>,
}

/// The state a batch sees: the ledger plus the effects of the in-flight batch (if any) and of
/// this batch's earlier requests.
struct Pending<'a> {
    ledger: &'a Ledger,
    /// The key this node signs with.
    kid: rmledger_schema::ids::KeyId,
    membership: Option<Membership>,
    certificates: HashMap<CertificateId, CertificateState>,
    registrations: HashSet<(String, String)>,
    /// Certificates this batch checked or changed, and the pairs it registered: what its
    /// [`Carry`] keeps.
    touched: HashSet<CertificateId>,
    registered: HashSet<(String, String)>,
    /// While a request of several records is being checked: how to undo its effects.
    undo: Option<Undo>,
}

/// What a request of several records changed in [`Pending`], to put back if a later record of
/// it is refused.
#[derive(Default)]
struct Undo {
    /// Each certificate as it was before the request first touched it (`None`: not loaded).
    certificates: Vec<(CertificateId, Option<CertificateState>)>,
    seen: HashSet<CertificateId>,
    /// (code, batch) pairs the request registered.
    registrations: Vec<(String, String)>,
    /// The membership before the request, when it is on the registrar's chain.
    membership: Option<Option<Membership>>,
}

impl Pending<'_> {
    /// Starts recording how to undo the records that follow.
    fn begin(&mut self) {
        let registrar = self.ledger.org() == self.ledger.genesis().registrar();
        self.undo = Some(Undo {
            membership: registrar.then(|| self.membership.clone()),
            ..Undo::default()
        });
    }

    /// Keeps the effects recorded since [`Pending::begin`].
    fn commit(&mut self) {
        self.undo = None;
    }

    /// Puts back the state as it was at [`Pending::begin`].
    fn rollback(&mut self) {
        let Some(undo) = self.undo.take() else { return };
        for (id, before) in undo.certificates.into_iter().rev() {
            match before {
                Some(state) => self.certificates.insert(id, state),
                None => self.certificates.remove(&id),
            };
        }
        for pair in undo.registrations {
            self.registrations.remove(&pair);
            self.registered.remove(&pair);
        }
        if let Some(membership) = undo.membership {
            self.membership = membership;
        }
    }

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
        if let Some(undo) = &mut self.undo
            && undo.seen.insert(*id)
        {
            undo.certificates
                .push((*id, self.certificates.get(id).cloned()));
        }
        if !self.certificates.contains_key(id) {
            match self.ledger.certificate(id).map_err(storage)? {
                Some(state) => {
                    self.certificates.insert(*id, (*state).clone());
                }
                None => return Ok(None),
            }
        }
        self.touched.insert(*id);
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

/// Checks and signs a batch: refused requests are answered at once, accepted ones become
/// entries plus one checkpoint over the new tree. `carry` is the in-flight batch's state, or
/// `None` when every earlier batch is durable (then the store has the tip). Returns `None` when
/// nothing was accepted.
fn prepare(
    ledger: &Ledger,
    key: &SigningKey,
    requests: Vec<Request>,
    carry: Option<Carry>,
) -> Option<Prepared> {
    let started = Instant::now();
    let org = ledger.org().clone();
    let offset = ledger.utc_offset_minutes();
    let kid = rmledger_schema::cose::key_id(&key.verifying_key());
    let (mut frontier, mut head, mut last_time, mut pending) = match carry {
        Some(carry) => (
            carry.frontier,
            carry.head,
            carry.last_time,
            Pending {
                ledger,
                kid,
                membership: carry.membership,
                certificates: carry.certificates,
                registrations: carry.registrations,
                touched: HashSet::new(),
                registered: HashSet::new(),
                undo: None,
            },
        ),
        None => {
            let store = ledger.store();
            let frontier = store.frontier(&org);
            let head = store.chain(&org).and_then(|c| c.head);
            let last_time = match head {
                Some(_) => crate::ledger::read_entry(store, &org, frontier.size() - 1)
                    .map(|e| e.time_unix_ms())
                    .unwrap_or(0),
                None => 0,
            };
            let pending = Pending {
                ledger,
                kid,
                membership: None,
                certificates: HashMap::new(),
                registrations: HashSet::new(),
                touched: HashSet::new(),
                registered: HashSet::new(),
                undo: None,
            };
            (frontier, head, last_time, pending)
        }
    };
    // Built and checked in order; signed together below.
    let mut unsigned: Vec<Unsigned> = Vec::with_capacity(requests.len());
    let mut waiting = Vec::with_capacity(requests.len());
    for request in requests {
        let Request {
            operator,
            records,
            batch,
            reply,
        } = request;
        // A request of several records is all or nothing: remember where it started so a
        // refusal part-way can undo the records before it. A single record refused changed
        // nothing, so it needs no savepoint.
        let start = (records.len() > 1).then(|| {
            pending.begin();
            (head, last_time, unsigned.len())
        });
        let mut appended = Vec::with_capacity(records.len());
        let mut refused = None;
        for (index, record) in records.into_iter().enumerate() {
            // Time never goes backwards on a chain, even if the clock does.
            let time = now_unix_ms().max(last_time);
            let seq = frontier.size() + unsigned.len() as u64;
            let built = check(&mut pending, &org, time, &record).and_then(|()| {
                let payload = Payload {
                    version: VERSION,
                    operator: operator.clone(),
                    federation: ledger.genesis().id(),
                    record,
                    seq,
                    prev: head,
                    time_unix_ms: time,
                    chain: org.clone(),
                };
                Unsigned::new(key, payload)
                    .map_err(|e| WriteError::Storage(format!("building the entry failed: {e}")))
            });
            let entry = match built {
                Ok(entry) => entry,
                Err(error) => {
                    refused = Some(Refused {
                        index: batch.then_some(index),
                        error,
                    });
                    break;
                }
            };
            apply(&mut pending, &entry, offset);
            head = Some(entry.id());
            last_time = time;
            appended.push(Appended {
                id: entry.id(),
                chain: org.clone(),
                seq,
            });
            unsigned.push(entry);
        }
        match refused {
            None => {
                pending.commit();
                waiting.push((reply, appended));
            }
            Some(refused) => {
                if let Some((tip, time, len)) = start {
                    (head, last_time) = (tip, time);
                    unsigned.truncate(len);
                    pending.rollback();
                }
                let _ = reply.send(Err(refused));
            }
        }
    }
    if unsigned.is_empty() {
        return None;
    }
    let entries = sign_all(key, unsigned);
    for entry in &entries {
        if frontier.append::<Sha256>(entry.leaf_hash().0).is_err() {
            for (reply, _) in waiting {
                let _ = reply.send(Err(Refused::whole(WriteError::Unavailable(
                    "the chain is full",
                ))));
            }
            return None;
        }
    }
    let certs = ledger.cert_maps().advance(ledger.store(), &entries);
    let body = certs.map(|certs| CheckpointBody {
        federation: ledger.genesis().id(),
        head: head.expect("a batch with entries has a head"),
        root: TreeHash(frontier.root::<Sha256>()),
        size: frontier.size(),
        time_unix_ms: last_time,
        certs,
        chain: org.clone(),
    });
    let checkpoint = match body
        .map_err(|e| e.to_string())
        .and_then(|body| Checkpoint::sign(key, body).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            for (reply, _) in waiting {
                let _ = reply.send(Err(Refused::whole(WriteError::Storage(format!(
                    "checkpoint: {e}"
                )))));
            }
            return None;
        }
    };
    // Keep only what this batch touched: older effects are durable by the time they are needed.
    let Pending {
        membership,
        mut certificates,
        touched,
        registered,
        ..
    } = pending;
    certificates.retain(|id, _| touched.contains(id));
    Some(Prepared {
        batch: Batch {
            entries,
            checkpoints: vec![checkpoint],
        },
        waiting,
        started,
        carry: Carry {
            frontier,
            head,
            last_time,
            membership,
            certificates,
            registrations: registered,
        },
    })
}

/// Below this many entries a batch is signed on the writer's thread alone: starting another
/// thread costs more than the signatures it would take over.
const PARALLEL_SIGNING_FROM: usize = 4;

/// Signs a checked batch, in order of the chain, on up to every core: the entries are split
/// into one contiguous run per thread. The ids and links were fixed when the entries were
/// built, so the order of signing does not matter.
fn sign_all(key: &SigningKey, unsigned: Vec<Unsigned>) -> Vec<Entry> {
    let cores = crate::cores();
    if cores < 2 || unsigned.len() < PARALLEL_SIGNING_FROM {
        return unsigned.into_iter().map(|u| u.sign(key)).collect();
    }
    let threads = cores.min(unsigned.len() / 2);
    let run = unsigned.len().div_ceil(threads);
    let mut runs: Vec<Vec<Unsigned>> = Vec::with_capacity(threads);
    let mut rest = unsigned;
    while rest.len() > run {
        let tail = rest.split_off(run);
        runs.push(rest);
        rest = tail;
    }
    runs.push(rest);
    let sign_run = |run: Vec<Unsigned>| run.into_iter().map(|u| u.sign(key)).collect::<Vec<_>>();
    std::thread::scope(|scope| {
        let mut runs = runs.into_iter();
        let first = runs.next().expect("at least one run");
        let others: Vec<_> = runs.map(|run| scope.spawn(move || sign_run(run))).collect();
        let mut entries = sign_run(first);
        for other in others {
            // Signing cannot fail; a panic on another thread is passed on as this thread's.
            match other.join() {
                Ok(signed) => entries.extend(signed),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        entries
    })
}

/// Starts appending a prepared batch: the write and fsync block, so they run off the async
/// workers.
fn start_write(store: Arc<crate::storage::Store>, prepared: Prepared) -> InFlight {
    let Prepared {
        batch,
        waiting,
        started,
        carry,
    } = prepared;
    let task = tokio::task::spawn_blocking(move || {
        let result = store.append(&batch);
        (batch, result)
    });
    InFlight {
        task,
        waiting,
        started,
        carry,
    }
}

/// Answers a batch's requests once its append has finished; returns whether it is durable.
fn finish(
    ledger: &Ledger,
    metrics: &Metrics,
    started: Instant,
    waiting: Waiting,
    joined: Result<WriteResult, tokio::task::JoinError>,
) -> bool {
    let (batch, result) = joined.unwrap_or_else(|e| {
        (
            Batch::default(),
            Err(crate::storage::StorageError::Inconsistent(format!(
                "append task: {e}"
            ))),
        )
    });
    metrics.observe_commit(started.elapsed(), batch.entries.len(), result.is_ok());
    match result {
        Ok(()) => {
            ledger.committed(&batch.entries);
            for (reply, appended) in waiting {
                let _ = reply.send(Ok(appended));
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed; the node refuses writes until restarted");
            for (reply, _) in waiting {
                let _ = reply.send(Err(Refused::whole(WriteError::Storage(e.to_string()))));
            }
            false
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
        // An entry signed with a key that is not (or no longer) the org's would not count.
        let forbidden = WriteError::Forbidden;
        match membership.key(&pending.kid) {
            None => return Err(forbidden(FederationError::UnknownKey { kid: pending.kid })),
            Some((owner, _)) if owner.org != *org => {
                return Err(forbidden(FederationError::KeyNotChainOwner {
                    kid: pending.kid,
                    owner: owner.org.clone(),
                    chain: org.clone(),
                }));
            }
            Some((_, key)) if time < key.valid_from => {
                return Err(forbidden(FederationError::KeyNotYetValid {
                    kid: key.kid,
                    org: org.clone(),
                    time_unix_ms: time,
                    valid_from_unix_ms: key.valid_from,
                }));
            }
            Some((_, key)) if key.revoked_from.is_some_and(|r| time >= r) => {
                return Err(forbidden(FederationError::KeyRevoked {
                    kid: key.kid,
                    org: org.clone(),
                    time_unix_ms: time,
                    revoked_from_unix_ms: key.revoked_from.unwrap_or_default(),
                }));
            }
            Some(_) => {}
        }
        if org == membership.registrar() {
            membership
                .check_record(record, time)
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

/// Carries an accepted entry's effects into the batch's pending state (before it is signed).
fn apply(pending: &mut Pending<'_>, entry: &Unsigned, offset: i32) {
    let ledger = pending.ledger;
    if entry.chain() == ledger.genesis().registrar() {
        let mut membership = pending
            .membership
            .take()
            .unwrap_or_else(|| ledger.membership().clone());
        if let Err(e) = membership.apply(entry) {
            tracing::error!(error = %e, "a checked membership record did not apply");
        }
        pending.membership = Some(membership);
    }
    match entry.record() {
        Record::BatchRegistered(certificate) => {
            let pair = (
                certificate.code.as_str().to_owned(),
                certificate.batch.clone(),
            );
            if pending.registrations.insert(pair.clone())
                && let Some(undo) = &mut pending.undo
            {
                undo.registrations.push(pair.clone());
            }
            pending.registered.insert(pair);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rmledger_schema::ids::FederationId;
    use rmledger_schema::records::Anchor;

    /// `n` entries of one chain, built and linked but not signed.
    fn built(key: &SigningKey, n: u64) -> Vec<Unsigned> {
        let org = OrgId::new("lab").unwrap();
        let mut prev = None;
        (0..n)
            .map(|seq| {
                let payload = Payload {
                    version: VERSION,
                    operator: "tester".into(),
                    federation: FederationId([7; 32]),
                    record: Record::Anchor(Anchor {
                        root: TreeHash([seq as u8; 32]),
                        size: seq,
                        chain: OrgId::new("acme-rm").unwrap(),
                    }),
                    seq,
                    prev,
                    time_unix_ms: 1_700_000_000_000 + seq,
                    chain: org.clone(),
                };
                let entry = Unsigned::new(key, payload).unwrap();
                prev = Some(entry.id());
                entry
            })
            .collect()
    }

    #[test]
    fn a_batch_signed_on_every_core_is_the_chain_signed_in_order() {
        let key = SigningKey::from_bytes(&[9; 32]);
        for n in [1, 3, 4, 5, 17, 100] {
            let unsigned = built(&key, n);
            let ids: Vec<EntryId> = unsigned.iter().map(|u| u.id()).collect();
            let in_order: Vec<Entry> = unsigned.iter().cloned().map(|u| u.sign(&key)).collect();
            let signed = sign_all(&key, unsigned);
            assert_eq!(signed, in_order, "{n} entries");
            assert_eq!(signed.iter().map(Entry::id).collect::<Vec<_>>(), ids);
            for pair in signed.windows(2) {
                assert_eq!(pair[1].payload().prev, Some(pair[0].id()));
            }
            for entry in &signed {
                let decoded = Entry::decode(entry.bytes()).unwrap();
                assert_eq!(decoded.id(), entry.id());
                decoded.verify_signature(&key.verifying_key()).unwrap();
            }
        }
    }
}
