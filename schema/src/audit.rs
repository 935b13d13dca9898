//! The regulator's audit (DESIGN §5): a pure, streaming rule engine that replays the whole
//! ledger from genesis and reports findings with the entries that prove them.
//!
//! # Feeding contract
//!
//! [`Auditor::new`] takes the pinned genesis. The caller (the CLI or a node) then feeds every
//! chain it holds, **the registrar's chain first and completely**, each chain's entries in
//! `seq` order, either a whole chain at a time ([`Auditor::chain_entries`]) or entry by entry
//! ([`Auditor::entry`]). Chains may be fed in any order after the registrar's, and may even be
//! interleaved, as long as each chain's own entries come in order. Signed checkpoints the caller
//! holds go to [`Auditor::checkpoint`] at any time. [`Auditor::finish`] returns the report.
//!
//! Feeding the registrar's chain first is what makes authorisation exact: every other entry is
//! judged against the membership folded from the *whole* registrar chain, so a `KeyRevoked`
//! with a `from` earlier than entries already written (a compromise discovered late) turns those
//! entries into findings. The registrar's own entries are judged once its chain is complete.
//! A fork is seen when both entries at one position are fed; the second must come while the
//! first is among the last [`FORK_WINDOW`] entries fed for that chain.
//!
//! # How it runs
//!
//! Entries are buffered in pages of [`PAGE`] entries of one chain, back to back in one reused
//! buffer. A page is decoded, hashed and signature-checked (`verify_strict`) on `threads` threads
//! in all, with `std::thread::scope`: this thread first runs the sequential checks of the previous
//! page in order (links, gaps, time, forks, the Merkle frontier, membership on the registrar chain,
//! the compact domain facts), then takes batches of the current page like the others, so the cores
//! verify instead of time-slicing with a third thread (a registrar page is judged before the next
//! is decoded: its records change the membership the workers read). Each worker extracts from an
//! entry what the ordered checks need (ids, links, certificate map keys, the certificate fact with
//! its serial inline) into a reused result buffer and frees the decoded entry on the thread that
//! allocated it. The hot path allocates little on purpose: at 10⁶ entries the allocator's cost
//! grows with the heap and competes with the signature checks for the same two cores. At
//! [`Auditor::finish`] the domain rules judge runs of certificates on all threads.
//!
//! Memory. Per chain the auditor keeps the tip, an O(log n) Merkle frontier, a window of
//! [`FORK_WINDOW`] recent ids, an 8-byte prefix of the root at every size (so anchors and
//! checkpoints naming an earlier size can be checked after the chain went by: 8 bytes per
//! entry) and one tally (count, last entry) per certificate the chain touched, from which the
//! certificate map's root is built only where a checkpoint names the size. Anchors and
//! checkpoints naming a later size are checked exactly when the chain reaches it. Per
//! certificate it keeps its facts: one 72-byte event per entry that concerns it (time, chain,
//! seq, id and a 16-byte fact; registrations, revisions, verifications and movements box their
//! details), with the serials of opened or used units interned once. The domain rules run at
//! [`Auditor::finish`] over each certificate's facts sorted by `(time, chain, seq)`, with per
//! unit state only for the certificate being judged. Facts are kept whole because a chain fed
//! later (a recall, a suspension) can turn a use already fed into a finding.
//!
//! Every rule id, its severity and meaning are documented in `docs/audit-report.md`; [`RULES`]
//! is the same table in code.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::bundle::VerifiedBundle;
use crate::certmap::{CertMap, Tally};
use crate::checkpoint::Checkpoint;
use crate::date::{Date, Period};
use crate::entry::{Entry, EntryError};
use crate::federation::{FederationError, Genesis, Membership};
use crate::ids::{CertificateId, EntryId, FederationId, KeyId, OrgId, TreeHash};
use crate::lifecycle::{self, CertificateState, RuleError};
use crate::merkle::{Frontier, Sha256};
use crate::records::{
    AfterOpening, Certificate, DocumentKind, PropertyValue, Record, RecordKind, Role, Severity,
    Validity, ValueKind, ValueVerification, Verdict,
};
use crate::serial::SerialSet;
use crate::verification;

/// Entries of one chain decoded and verified together on all cores.
pub const PAGE: usize = 4096;
/// Entries buffered for one page, back to back in one allocation that is reused.
#[derive(Clone, Default)]
struct Page {
    bytes: Vec<u8>,
    /// Where each entry ends in `bytes`.
    ends: Vec<usize>,
}

impl Page {
    fn push(&mut self, entry: &[u8]) {
        self.bytes.extend_from_slice(entry);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// How many recent entry ids per chain are kept to recognise a fork.
pub const FORK_WINDOW: usize = 4096;
/// A movement record listing more serials than this is not followed unit by unit.
pub const MAX_SERIALS_FOLLOWED: u64 = lifecycle::MAX_SERIALS_PER_RECORD;
/// Evidence lists are cut at this many entries (the explanation gives the full count).
pub const MAX_EVIDENCE: usize = 64;

const DAY_MS: u64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Configuration, findings, report

/// What the audit is judged against. Nothing here reads a clock: `now_unix_ms` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditConfig {
    /// A failed verification must be followed by a suspension, recall or withdrawal within this.
    pub suspension_deadline_ms: u64,
    /// A chain must be anchored by an institute (an institute's chain: by another member) at
    /// least this often.
    pub anchor_max_age_ms: u64,
    /// The time the audit is made at.
    pub now_unix_ms: u64,
    /// How far past `now_unix_ms` an entry's time may be before it is a finding.
    pub max_clock_skew_ms: u64,
    /// Cores used for decoding and signature checks.
    pub threads: usize,
}

impl AuditConfig {
    /// The defaults (30 days, 7 days, 5 minutes' skew, 2 threads) at `now_unix_ms`.
    pub fn at(now_unix_ms: u64) -> Self {
        AuditConfig {
            suspension_deadline_ms: 30 * DAY_MS,
            anchor_max_age_ms: 7 * DAY_MS,
            now_unix_ms,
            max_clock_skew_ms: 5 * 60_000,
            threads: 2,
        }
    }
}

/// One documented rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuditRule {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
}

const fn r(id: &'static str, severity: Severity, summary: &'static str) -> AuditRule {
    AuditRule {
        id,
        severity,
        summary,
    }
}

/// Every rule the audit evaluates, in documentation order.
#[rustfmt::skip]
pub const RULES: [AuditRule; 42] = {
    use Severity::{Critical as C, High as H, Low as L, Medium as M};
    [
        r("integrity/undecodable", C, "an entry's bytes are not a valid entry"),
        r("integrity/wrong-chain", C, "an entry fed as one chain's belongs to another chain"),
        r("integrity/wrong-federation", C, "an entry belongs to another federation"),
        r("integrity/bad-signature", C, "an entry's signature does not verify (verify_strict)"),
        r("integrity/unknown-key", C, "an entry is signed by a key no member holds"),
        r("integrity/foreign-key", C, "an entry is signed with another member's key"),
        r("integrity/key-not-yet-valid", C, "an entry is dated before its key was enrolled"),
        r("integrity/revoked-key", C, "an entry is dated at or after its key's revocation (also retroactive)"),
        r("integrity/member-suspended", C, "an entry is dated while its organisation was suspended"),
        r("integrity/role-not-allowed", C, "an entry's record kind is not allowed for its organisation's roles"),
        r("integrity/bad-membership-record", C, "a registrar entry cannot be applied to the membership"),
        r("integrity/gap", C, "a chain skips sequence numbers"),
        r("integrity/broken-link", C, "an entry's prev is not the id of the entry before it"),
        r("integrity/time-backwards", C, "an entry is dated before the entry before it"),
        r("integrity/time-in-future", C, "an entry is dated after the time of the audit"),
        r("integrity/fork", C, "two different signed entries at one position of a chain"),
        r("integrity/checkpoint-undecodable", C, "a checkpoint's bytes are not a valid checkpoint"),
        r("integrity/checkpoint-bad-signature", C, "a checkpoint is not signed by its chain's organisation"),
        r("integrity/checkpoint-mismatch", C, "a signed checkpoint's root or head differs from the chain's"),
        r("integrity/anchor-contradicted", C, "an anchor states a root the anchored chain does not have"),
        r("integrity/anchor-beyond-chain", H, "an anchor names more entries than the audit was given for the chain"),
        r("chain/anchor-overdue", M, "a chain has gone unanchored longer than allowed"),
        r("domain/unknown-certificate", H, "entries refer to a certificate that was never registered"),
        r("domain/foreign-record", H, "someone other than the producer revised, withdrew or shipped a certificate"),
        r("domain/serial-not-produced", H, "a unit the batch never produced was moved or used"),
        r("domain/unit-shipped-twice", H, "a unit was shipped again after it had left the producer"),
        r("domain/unit-not-shipped-to-lab", H, "a lab received or used a unit never shipped to it"),
        r("domain/serial-at-two-labs", C, "one unit was received by two organisations (cloned or counterfeit)"),
        r("domain/use-without-receipt", M, "a lab used a unit shipped to it without recording its receipt"),
        r("domain/use-after-expiry", H, "a unit was used after the certificate (or the unit) expired"),
        r("domain/use-after-opening-period", M, "a unit was used after its validity after opening"),
        r("domain/single-use-reused", M, "a single-use unit was used more than once"),
        r("domain/use-after-disposal", M, "a unit was used after it was disposed of"),
        r("domain/use-while-suspended", H, "a unit was used while the certificate was suspended"),
        r("domain/use-after-recall", C, "a unit was used after the batch was recalled"),
        r("domain/use-after-withdrawal", C, "a unit was used after the producer withdrew the certificate"),
        r("domain/failed-verification-not-acted-on", H, "a failed verification was not followed by a suspension, recall or withdrawal in time"),
        r("domain/verdict-on-non-certified-value", M, "a pass or fail verdict was stated on a reference or information value"),
        r("domain/verdict-disagrees", H, "a stated verdict differs from the one En gives"),
        r("domain/verification-unmatched", M, "a verification names a revision or quantity the certificate lacks, or cannot be compared"),
        r("domain/never-verified", L, "a certificate has no value verification at all"),
        r("domain/too-many-serials", L, "a movement record lists too many serials to follow unit by unit"),
    ]
};

/// Every rule (for docs and the API).
pub fn rules() -> impl Iterator<Item = &'static AuditRule> {
    RULES.iter()
}

fn severity_of(rule: &str) -> Severity {
    rules()
        .find(|r| r.id == rule)
        .map_or(Severity::Info, |r| r.severity)
}

/// One finding: what rule, about what, in a sentence, and the entries that prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `rule/subject`: stable across runs over the same ledger.
    pub id: String,
    pub severity: Severity,
    pub rule: &'static str,
    pub subject: String,
    pub explanation: String,
    pub entries: Vec<EntryId>,
}

impl Finding {
    fn new(
        rule: &'static str,
        subject: String,
        explanation: String,
        entries: Vec<EntryId>,
    ) -> Self {
        debug_assert!(rules().any(|r| r.id == rule), "rule {rule} is undocumented");
        Finding {
            id: format!("{rule}/{subject}"),
            severity: severity_of(rule),
            rule,
            subject,
            explanation,
            entries,
        }
    }
}

/// The last consistent anchor of a chain by a qualifying witness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorRef {
    pub by: OrgId,
    pub entry: EntryId,
    pub time_unix_ms: u64,
    pub size: u64,
}

/// One chain as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSummary {
    /// Entries fed (Merkle leaves).
    pub size: u64,
    /// RFC 9162 root over those entries.
    pub root: TreeHash,
    pub head: Option<EntryId>,
    pub last_time_unix_ms: u64,
    pub last_anchor: Option<AnchorRef>,
}

/// The audit's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    pub federation: FederationId,
    pub now_unix_ms: u64,
    pub config: AuditConfig,
    /// Entries fed (including undecodable ones).
    pub entries: u64,
    pub checkpoints: u64,
    pub certificates: u64,
    pub chains: BTreeMap<OrgId, ChainSummary>,
    /// Counts by severity name.
    pub counts: BTreeMap<&'static str, u64>,
    /// Sorted by severity, rule, subject.
    pub findings: Vec<Finding>,
}

/// A breach of the feeding contract (a caller's bug, not a ledger finding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error(
        "registrar entries must be fed before any other chain's (the membership would change under entries already judged)"
    )]
    RegistrarAfterOtherChains,
}

// ---------------------------------------------------------------------------------------------
// Parallel verification

/// Splits `items` over `threads` scoped threads in small batches and maps them in order.
fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let mut out = Vec::new();
    par_map_into(items.len(), threads, |i| f(&items[i]), &mut out);
    out.into_iter().flatten().collect()
}

/// Maps `0..n` on `threads` threads (this one and `threads - 1` scoped helpers) into
/// `out[0..n]` (all `Some`; the buffer's capacity is reused), in order.
fn par_map_into<R: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> R + Sync,
    out: &mut Vec<Option<R>>,
) {
    if threads <= 1 || n < BATCH {
        out.clear();
        out.extend((0..n).map(|i| Some(f(i))));
        return;
    }
    let slots = Slots::new(n, out);
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| slots.fill(&f));
        }
        slots.fill(&f);
    });
}

/// The result slots of one page, handed out in batches to whichever thread asks next: a
/// core that is busy elsewhere (with the sequential checks of the previous page) simply takes
/// fewer, and each result is written in place.
struct Slots<'a, R> {
    batches: std::sync::Mutex<std::iter::Enumerate<std::slice::ChunksMut<'a, Option<R>>>>,
}

/// Entries per batch of [`Slots`]: ~2 ms of signature checks, so the lock is taken rarely.
const BATCH: usize = 32;

impl<'a, R> Slots<'a, R> {
    /// Empties `out` and makes `n` slots in it.
    fn new(n: usize, out: &'a mut Vec<Option<R>>) -> Self {
        out.clear();
        out.resize_with(n, || None);
        Slots {
            batches: std::sync::Mutex::new(out.chunks_mut(BATCH).enumerate()),
        }
    }

    /// Takes batches until none is left, writing `f(i)` into slot `i`.
    fn fill(&self, f: &impl Fn(usize) -> R) {
        loop {
            let next = self
                .batches
                .lock()
                .expect("an audit worker panicked")
                .next();
            let Some((batch, slots)) = next else { break };
            for (k, slot) in slots.iter_mut().enumerate() {
                *slot = Some(f(batch * BATCH + k));
            }
        }
    }
}

/// Authorises and checks the signature of every entry (`Membership::verify_entry`) on
/// `threads` cores; results are in the order of `entries`.
pub fn verify_batch_parallel(
    entries: &[Entry],
    membership: &Membership,
    threads: usize,
) -> Vec<Result<(), FederationError>> {
    par_map(entries, threads, |e| membership.verify_entry(e))
}

/// What the parallel phase learns about one entry.
// Not boxed: the results are written into a buffer reused page after page, and a box would be
// one more allocation per entry.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Checked {
    Undecodable {
        id: EntryId,
        leaf: TreeHash,
        error: EntryError,
    },
    Decoded(Decoded),
}

/// What the sequential checks need of a decoded entry. The worker that decoded the entry
/// extracts it and frees the entry itself (its strings and record) on the thread that
/// allocated them: at 10⁶ entries, frees from another thread cost the allocator's locks.
#[derive(Clone)]
struct Decoded {
    id: EntryId,
    leaf: TreeHash,
    seq: u64,
    prev: Option<EntryId>,
    time: u64,
    kid: KeyId,
    /// The chain the entry names, when it is not the chain it was fed as.
    other_chain: Option<OrgId>,
    /// The federation the entry names, when it is not the audited one.
    other_federation: Option<FederationId>,
    /// [`Entry::map_keys`].
    map_keys: MapKeys,
    /// `None`: the key was not known yet (a registrar page); check sequentially.
    signature: Option<Result<(), FederationError>>,
    /// Authorisation against the final membership (non-registrar pages, signature valid).
    auth: Option<Result<(), FederationError>>,
    /// The anchor the entry records, if it is one.
    anchor: Option<Box<crate::records::Anchor>>,
    /// The certificate fact the entry records, if any ([`new_fact`]).
    fact: Option<(CertificateId, NewFact)>,
    /// The entry itself, on registrar pages only: its record changes the membership in order,
    /// and a key enrolled earlier on the same page checks its signature.
    entry: Option<Box<Entry>>,
}

/// The certificate map keys of one entry, without an allocation ([`Entry::map_keys`] gives at
/// most four: a registration, the certificate it supersedes, a record's certificate and the
/// membership key).
#[derive(Clone, Copy)]
struct MapKeys {
    keys: [CertificateId; 4],
    len: u8,
}

impl MapKeys {
    fn of(entry: &Entry) -> Self {
        let mut out = MapKeys {
            keys: [EntryId([0; 32]); 4],
            len: 0,
        };
        for key in entry.map_keys() {
            debug_assert!(out.len < 4, "an entry has at most four map keys");
            if let Some(slot) = out.keys.get_mut(usize::from(out.len)) {
                *slot = key;
                out.len += 1;
            }
        }
        out
    }

    fn iter(&self) -> impl Iterator<Item = CertificateId> + '_ {
        self.keys[..usize::from(self.len)].iter().copied()
    }
}

/// Decodes, hashes and checks one entry fed as `chain`'s. `authorise` is false on registrar
/// pages, whose membership is still being folded: there the entry is kept for the ordered
/// checks.
fn check_one(bytes: &[u8], chain: &OrgId, membership: &Membership, authorise: bool) -> Checked {
    let leaf = crate::entry::leaf_hash(bytes);
    let decoded = Entry::decode_and_verify(bytes, |kid, payload| {
        if payload.federation != membership.federation() {
            return None;
        }
        let (member, key) = membership.key(&kid)?;
        (member.org == payload.chain).then_some(key)
    });
    let (entry, signature) = match decoded {
        Ok((entry, Some(signature))) => {
            (entry, Some(signature.map_err(FederationError::Signature)))
        }
        // No usable key: say why (or that the key is not known yet).
        Ok((entry, None)) => {
            let signature = signature_check(&entry, membership);
            (entry, signature)
        }
        Err(error) => {
            return Checked::Undecodable {
                // Named by its id when the envelope parses, else by the same hash over the
                // raw bytes.
                id: Entry::id_of(bytes).unwrap_or_else(|_| EntryId::of_sig_structure([bytes])),
                leaf,
                error,
            };
        }
    };
    let auth = (authorise && matches!(signature, Some(Ok(()))))
        .then(|| membership.authorise(&entry).map(|_| ()));
    let federation = entry.payload().federation;
    let anchor = match entry.record() {
        Record::Anchor(anchor) => Some(Box::new(anchor.clone())),
        _ => None,
    };
    Checked::Decoded(Decoded {
        id: entry.id(),
        leaf,
        seq: entry.seq(),
        prev: entry.payload().prev,
        time: entry.time_unix_ms(),
        kid: entry.kid(),
        other_chain: (entry.chain() != chain).then(|| entry.chain().clone()),
        other_federation: (federation != membership.federation()).then_some(federation),
        map_keys: MapKeys::of(&entry),
        signature,
        auth,
        anchor,
        fact: new_fact(&entry, membership.utc_offset_minutes()),
        entry: (!authorise).then(|| Box::new(entry)),
    })
}

/// The signature alone, with the key enrolled under the entry's kid (whatever its validity).
fn signature_check(entry: &Entry, membership: &Membership) -> Option<Result<(), FederationError>> {
    if entry.payload().federation != membership.federation() {
        return Some(Err(FederationError::WrongFederation {
            expected: membership.federation(),
            found: entry.payload().federation,
        }));
    }
    let (member, key) = membership.key(&entry.kid())?;
    if member.org != *entry.chain() {
        return Some(Err(FederationError::KeyNotChainOwner {
            kid: entry.kid(),
            owner: member.org.clone(),
            chain: entry.chain().clone(),
        }));
    }
    Some(
        entry
            .verify_signature(&key.verifying_key)
            .map_err(FederationError::Signature),
    )
}

/// `Membership::authorise` over the facts kept for a registrar entry.
fn authorise_facts(
    membership: &Membership,
    chain: &OrgId,
    kid: KeyId,
    time: u64,
    kind: RecordKind,
) -> Result<(), FederationError> {
    let (member, key) = membership
        .key(&kid)
        .ok_or(FederationError::UnknownKey { kid })?;
    if member.org != *chain {
        return Err(FederationError::KeyNotChainOwner {
            kid,
            owner: member.org.clone(),
            chain: chain.clone(),
        });
    }
    if time < key.valid_from {
        return Err(FederationError::KeyNotYetValid {
            kid,
            org: member.org.clone(),
            time_unix_ms: time,
            valid_from_unix_ms: key.valid_from,
        });
    }
    if let Some(revoked) = key.revoked_from.filter(|&r| time >= r) {
        return Err(FederationError::KeyRevoked {
            kid,
            org: member.org.clone(),
            time_unix_ms: time,
            revoked_from_unix_ms: revoked,
        });
    }
    if member.suspended_at(time) {
        return Err(FederationError::MemberSuspended {
            org: member.org.clone(),
            time_unix_ms: time,
        });
    }
    membership.check_role(&member.org, kind)
}

fn auth_rule(error: &FederationError) -> &'static str {
    match error {
        FederationError::WrongFederation { .. } => "integrity/wrong-federation",
        FederationError::UnknownKey { .. } | FederationError::NotAMember { .. } => {
            "integrity/unknown-key"
        }
        FederationError::KeyNotChainOwner { .. } => "integrity/foreign-key",
        FederationError::KeyNotYetValid { .. } => "integrity/key-not-yet-valid",
        FederationError::KeyRevoked { .. } => "integrity/revoked-key",
        FederationError::MemberSuspended { .. } => "integrity/member-suspended",
        FederationError::RoleNotAllowed { .. } => "integrity/role-not-allowed",
        _ => "integrity/bad-signature",
    }
}

fn auth_sentence(error: &FederationError, chain: &OrgId, seq: u64) -> String {
    let at = format!("Entry {seq} of {chain}'s chain");
    match error {
        FederationError::WrongFederation { found, .. } => {
            format!("{at} belongs to another federation ({found}).")
        }
        FederationError::UnknownKey { kid } | FederationError::KeyNotChainOwner { kid, .. }
            if matches!(error, FederationError::UnknownKey { .. }) =>
        {
            format!("{at} is signed with key {kid}, which no member of the federation holds.")
        }
        FederationError::KeyNotChainOwner { kid, owner, .. } => {
            format!("{at} is signed with key {kid}, which belongs to {owner}, not to {chain}.")
        }
        FederationError::KeyNotYetValid {
            kid,
            valid_from_unix_ms,
            time_unix_ms,
            ..
        } => format!(
            "{at} is dated {} but its key {kid} was only enrolled at {}.",
            when(*time_unix_ms),
            when(*valid_from_unix_ms)
        ),
        FederationError::KeyRevoked {
            kid,
            time_unix_ms,
            revoked_from_unix_ms,
            ..
        } => format!(
            "{at} is dated {} but its key {kid} is revoked from {}: the entry cannot be trusted.",
            when(*time_unix_ms),
            when(*revoked_from_unix_ms)
        ),
        FederationError::MemberSuspended { time_unix_ms, .. } => format!(
            "{at} was written at {} while {chain} was suspended from the federation.",
            when(*time_unix_ms)
        ),
        FederationError::RoleNotAllowed {
            kind,
            roles,
            allowed,
            ..
        } => format!(
            "{at} records a {kind}, which only a {allowed} may record; {chain} is a {roles}."
        ),
        other => {
            format!("{at}'s signature does not verify ({other}): it may be forged or altered.")
        }
    }
}

/// A time for explanations: UTC, to the second.
fn when(ms: u64) -> String {
    let days = (ms / DAY_MS) as i64;
    let rest = ms % DAY_MS;
    let date =
        Date::from_days_since_unix_epoch(days).map_or_else(|_| "?".into(), |d| d.to_string());
    format!(
        "{date} {:02}:{:02}:{:02} UTC",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60
    )
}

fn short(id: &EntryId) -> String {
    id.to_hex()[..12].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Per-chain state

#[derive(Clone)]
struct ChainState {
    /// The seq expected next.
    next_seq: u64,
    /// The id the next entry's prev must name; `None` after an undecodable entry.
    head: Option<EntryId>,
    /// The last decoded entry's id (for the summary).
    last_id: Option<EntryId>,
    last_time: u64,
    first_time: Option<u64>,
    frontier: Frontier,
    /// The first 8 bytes of the root at every size (index = size - 1).
    root_log: Vec<u64>,
    /// (seq, id, feed order) of the most recent entries, for forks.
    recent: VecDeque<(u64, EntryId)>,
    /// Sizes at which exact roots are wanted (anchors and checkpoints naming a later size),
    /// and whether the certificate map root is wanted there too (checkpoints).
    wants: BTreeMap<u64, bool>,
    /// Exact (root, head id, certificate map root) at wanted sizes.
    captured: HashMap<u64, (TreeHash, Option<EntryId>, Option<TreeHash>)>,
    /// What the chain's certificate map holds (certificate → count and last entry), so
    /// checkpoints' `certs` roots can be checked; `None` after an undecodable entry (whose
    /// certificates cannot be known). The map's root is built from it only where a checkpoint
    /// names the size: the map is canonical (a trie split at the first differing key bit),
    /// so its root does not depend on the order of insertion, and building it once is far
    /// cheaper than rehashing a path for every entry.
    certs: Option<HashMap<CertificateId, Tally>>,
    last_anchor: Option<AnchorRef>,
}

impl ChainState {
    fn new() -> Self {
        ChainState {
            next_seq: 0,
            head: None,
            last_id: None,
            last_time: 0,
            first_time: None,
            frontier: Frontier::new(),
            root_log: Vec::new(),
            recent: VecDeque::new(),
            wants: BTreeMap::new(),
            captured: HashMap::new(),
            certs: Some(HashMap::new()),
            last_anchor: None,
        }
    }

    fn size(&self) -> u64 {
        self.frontier.size()
    }

    fn push_leaf(&mut self, leaf: TreeHash, id: EntryId) {
        if self.frontier.append::<Sha256>(leaf.0).is_err() {
            return;
        }
        let root = self.frontier.root::<Sha256>();
        self.root_log
            .push(u64::from_be_bytes(root[..8].try_into().expect("8 bytes")));
        let size = self.size();
        if let Some(with_certs) = self.wants.remove(&size) {
            let certs = with_certs.then(|| self.certs_root()).flatten();
            self.captured
                .insert(size, (TreeHash(root), Some(id), certs));
        }
    }

    /// Counts entry `id` under each of its certificate map keys ([`Entry::map_keys`]: its
    /// certificates and, for a membership record, the membership key), as the map does.
    fn record_certificates(
        &mut self,
        certificates: impl Iterator<Item = CertificateId>,
        id: EntryId,
    ) {
        if let Some(certs) = &mut self.certs {
            for cert in certificates {
                let tally = certs.entry(cert).or_insert(Tally { last: id, count: 0 });
                tally.count += 1;
                tally.last = id;
            }
        }
    }

    /// The root of the chain's certificate map as fed so far.
    fn certs_root(&self) -> Option<TreeHash> {
        let tallies = self.certs.as_ref()?;
        let mut map = CertMap::new();
        for (cert, tally) in tallies {
            map.insert(*cert, *tally);
        }
        Some(map.root())
    }

    /// What the audit knows of the root at `size`: exact, an 8-byte prefix, or nothing. The
    /// certificate map root is computed only `with_certs`.
    fn root_at(&self, size: u64, with_certs: bool) -> RootKnown {
        if let Some((root, head, certs)) = self.captured.get(&size) {
            return RootKnown::Exact(*root, *head, *certs);
        }
        if size == self.size() && size > 0 {
            return RootKnown::Exact(
                TreeHash(self.frontier.root::<Sha256>()),
                self.last_id,
                with_certs.then(|| self.certs_root()).flatten(),
            );
        }
        match size
            .checked_sub(1)
            .and_then(|i| self.root_log.get(i as usize))
        {
            Some(prefix) => RootKnown::Prefix(*prefix),
            None => RootKnown::Beyond,
        }
    }

    fn remember(&mut self, seq: u64, id: EntryId) {
        if self.recent.len() == FORK_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, id));
    }
}

enum RootKnown {
    /// The root, the head and (unless an entry could not be decoded) the certificate map root.
    Exact(TreeHash, Option<EntryId>, Option<TreeHash>),
    Prefix(u64),
    Beyond,
}

/// A claim about a chain's root: an anchor entry or a checkpoint.
#[derive(Clone)]
struct Claim {
    chain: OrgId,
    size: u64,
    root: TreeHash,
    head: Option<EntryId>,
    /// The certificate map root a checkpoint signs (anchors do not state one).
    certs: Option<TreeHash>,
    kind: ClaimKind,
}

#[derive(Clone)]
enum ClaimKind {
    Anchor {
        witness: OrgId,
        seq: u64,
        entry: EntryId,
        time: u64,
    },
    Checkpoint,
}

/// What is kept of a registrar entry to authorise it once the registrar chain is complete.
#[derive(Clone)]
struct RegistrarFact {
    seq: u64,
    id: EntryId,
    kid: KeyId,
    time: u64,
    kind: RecordKind,
}

// ---------------------------------------------------------------------------------------------
// The auditor

/// The streaming audit. See the module documentation for the feeding contract.
#[derive(Clone)]
pub struct Auditor {
    config: AuditConfig,
    federation: FederationId,
    registrar: OrgId,
    membership: Membership,
    /// True once the registrar's chain is complete (the first other chain's entry arrived).
    registrar_done: bool,
    registrar_facts: Vec<RegistrarFact>,
    chains: BTreeMap<OrgId, ChainState>,
    page: Page,
    page_chain: Option<OrgId>,
    /// The final membership, shared with the workers once the registrar chain is complete.
    shared: Option<Arc<Membership>>,
    /// A checked page whose sequential checks have not run yet (see [`Auditor::flush`]).
    pending: Option<(OrgId, Vec<Option<Checked>>)>,
    /// An emptied result buffer, reused for the next page.
    spare: Vec<Option<Checked>>,
    domain: Domain,
    claims: Vec<Claim>,
    checkpoints: Vec<Checkpoint>,
    findings: Vec<Finding>,
    entries: u64,
    checkpoint_count: u64,
}

impl Auditor {
    pub fn new(genesis: &Genesis, config: AuditConfig) -> Self {
        Auditor {
            federation: genesis.id(),
            registrar: genesis.registrar().clone(),
            membership: Membership::new(genesis),
            registrar_done: false,
            registrar_facts: Vec::new(),
            chains: BTreeMap::new(),
            page: Page::default(),
            page_chain: None,
            shared: None,
            pending: None,
            spare: Vec::new(),
            domain: Domain::new(genesis.body().utc_offset_minutes),
            claims: Vec::new(),
            checkpoints: Vec::new(),
            findings: Vec::new(),
            entries: 0,
            checkpoint_count: 0,
            config,
        }
    }

    /// Moves the time the audit is made at, for a caller that keeps one auditor fed as its
    /// ledger grows and reports from a clone ([`Auditor::finish`] consumes).
    pub fn set_now(&mut self, now_unix_ms: u64) {
        self.config.now_unix_ms = now_unix_ms;
    }

    /// The membership as folded so far.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Feeds one chain's entries in seq order. Entries that name another chain are findings.
    pub fn chain_entries<B: AsRef<[u8]>>(
        &mut self,
        chain: &OrgId,
        entries: impl IntoIterator<Item = B>,
    ) -> Result<(), FeedError> {
        self.switch_to(chain)?;
        for bytes in entries {
            self.page.push(bytes.as_ref());
            if self.page.len() == PAGE {
                self.flush();
            }
        }
        self.flush();
        Ok(())
    }

    /// Feeds one entry; its chain is read from its protected header (bytes that do not even
    /// have one count as the current chain's).
    pub fn entry(&mut self, bytes: &[u8]) -> Result<(), FeedError> {
        let chain = peek_chain(bytes)
            .or_else(|| self.page_chain.clone())
            .unwrap_or_else(|| self.registrar.clone());
        if self.page_chain.as_ref() != Some(&chain) {
            self.switch_to(&chain)?;
        }
        self.page.push(bytes);
        if self.page.len() == PAGE {
            self.flush();
        }
        Ok(())
    }

    /// A signed checkpoint the caller holds: checked at [`Auditor::finish`] against the roots
    /// the audit computes and the membership.
    pub fn checkpoint(&mut self, bytes: &[u8]) {
        self.checkpoint_count += 1;
        match Checkpoint::decode(bytes) {
            Ok(checkpoint) => {
                let body = checkpoint.body();
                self.claim(Claim {
                    chain: body.chain.clone(),
                    size: body.size,
                    root: body.root,
                    head: Some(body.head),
                    certs: Some(body.certs),
                    kind: ClaimKind::Checkpoint,
                });
                self.checkpoints.push(checkpoint);
            }
            Err(error) => {
                self.findings.push(Finding::new(
                    "integrity/checkpoint-undecodable",
                    format!("checkpoint-{}", crate::ids::Digest::of(bytes).to_hex()),
                    format!("A checkpoint given to the audit cannot be read: {error}."),
                    Vec::new(),
                ));
            }
        }
    }

    fn switch_to(&mut self, chain: &OrgId) -> Result<(), FeedError> {
        self.flush();
        if *chain == self.registrar {
            if self.registrar_done {
                return Err(FeedError::RegistrarAfterOtherChains);
            }
        } else {
            self.close_registrar();
        }
        self.page_chain = Some(chain.clone());
        Ok(())
    }

    /// The registrar chain is complete: judge its own entries against the final membership.
    fn close_registrar(&mut self) {
        if self.registrar_done {
            return;
        }
        self.registrar_done = true;
        for fact in std::mem::take(&mut self.registrar_facts) {
            if let Err(e) = authorise_facts(
                &self.membership,
                &self.registrar,
                fact.kid,
                fact.time,
                fact.kind,
            ) {
                self.findings.push(Finding::new(
                    auth_rule(&e),
                    format!("{}/{}", self.registrar, fact.seq),
                    auth_sentence(&e, &self.registrar, fact.seq),
                    vec![fact.id],
                ));
            }
        }
    }

    /// Decodes and verifies the buffered page on all cores. Pages of other chains than the
    /// registrar's are pipelined: while the workers check this page, this thread runs the
    /// sequential checks of the previous one (the membership they read no longer changes).
    fn flush(&mut self) {
        if self.page.is_empty() {
            return;
        }
        let page = std::mem::take(&mut self.page);
        let chain = self
            .page_chain
            .clone()
            .unwrap_or_else(|| self.registrar.clone());
        let threads = self.config.threads;
        if chain == self.registrar && !self.registrar_done {
            self.drain();
            let membership = &self.membership;
            let mut checked = std::mem::take(&mut self.spare);
            par_map_into(
                page.len(),
                threads,
                |i| check_one(page.get(i), &chain, membership, false),
                &mut checked,
            );
            self.run(&chain, checked, true);
        } else {
            let shared = self
                .shared
                .get_or_insert_with(|| Arc::new(self.membership.clone()))
                .clone();
            let page_chain = &chain;
            let previous = self.pending.take();
            let mut checked = std::mem::take(&mut self.spare);
            // `threads` threads in all: this one runs the sequential checks of the previous
            // page, then joins the others on this page's signatures.
            let slots = Slots::new(page.len(), &mut checked);
            let check = |i: usize| check_one(page.get(i), page_chain, &shared, true);
            std::thread::scope(|scope| {
                for _ in 1..threads.max(1) {
                    scope.spawn(|| slots.fill(&check));
                }
                if let Some((chain, items)) = previous {
                    self.run(&chain, items, false);
                }
                slots.fill(&check);
            });
            self.pending = Some((chain, checked));
        }
        self.page = page;
        self.page.clear();
    }

    /// Runs the sequential checks of the page still pending.
    fn drain(&mut self) {
        if let Some((chain, items)) = self.pending.take() {
            self.run(&chain, items, false);
        }
    }

    fn run(&mut self, chain: &OrgId, mut items: Vec<Option<Checked>>, registrar_page: bool) {
        for item in items.drain(..).flatten() {
            self.entries += 1;
            self.sequential(chain, item, registrar_page);
        }
        // The emptied buffer takes the next page's results.
        self.spare = items;
    }

    fn chain_mut(&mut self, chain: &OrgId) -> &mut ChainState {
        self.add_chain(chain);
        self.chains.get_mut(chain).expect("added above")
    }

    /// Looked up before inserting: the name is cloned only for a chain's first entry.
    fn add_chain(&mut self, chain: &OrgId) {
        if !self.chains.contains_key(chain) {
            self.chains.insert(chain.clone(), ChainState::new());
        }
    }

    /// The in-order checks of one entry.
    fn sequential(&mut self, chain: &OrgId, item: Checked, registrar_page: bool) {
        let decoded = match item {
            Checked::Undecodable { id, leaf, error } => {
                let state = self.chain_mut(chain);
                let position = state.next_seq;
                state.next_seq += 1;
                state.head = None;
                state.certs = None;
                state.push_leaf(leaf, id);
                self.findings.push(Finding::new(
                    "integrity/undecodable",
                    format!("{chain}/{position}"),
                    format!(
                        "Entry {position} of {chain}'s chain cannot be read ({error}); \
                         its content cannot be trusted and its history cannot be followed."
                    ),
                    vec![id],
                ));
                return;
            }
            Checked::Decoded(decoded) => decoded,
        };
        let Decoded {
            id,
            leaf,
            seq,
            prev,
            time,
            kid,
            other_chain,
            other_federation,
            map_keys,
            signature,
            auth,
            anchor,
            fact,
            entry,
        } = decoded;
        let subject = || format!("{chain}/{seq}");
        if let Some(other) = other_chain {
            self.findings.push(Finding::new(
                "integrity/wrong-chain",
                subject(),
                format!("An entry given as {chain}'s entry {seq} is an entry of {other}'s chain."),
                vec![id],
            ));
            return;
        }
        if let Some(other) = other_federation {
            self.findings.push(Finding::new(
                "integrity/wrong-federation",
                subject(),
                format!("Entry {seq} of {chain}'s chain belongs to another federation ({other})."),
                vec![id],
            ));
            return;
        }
        // A position seen before: an identical repeat is ignored, a different entry is a fork.
        self.add_chain(chain);
        let state = self.chains.get_mut(chain).expect("added above");
        if seq < state.next_seq && state.size() > 0 {
            let earlier = state
                .recent
                .iter()
                .rev()
                .find(|(s, _)| *s == seq)
                .map(|(_, i)| *i);
            if let Some(first) = earlier
                && first != id
            {
                self.findings.push(Finding::new(
                    "integrity/fork",
                    subject(),
                    format!(
                        "{chain} signed two different entries at position {seq} of its chain \
                         ({} and {}): the chain was forked.",
                        short(&first),
                        short(&id)
                    ),
                    vec![first, id],
                ));
            }
            return;
        }
        // Links, gaps and time.
        let mut breaks = Vec::new();
        if seq > state.next_seq {
            breaks.push(Finding::new(
                "integrity/gap",
                subject(),
                format!(
                    "{chain}'s chain jumps from entry {} to entry {seq}: {} entries are missing.",
                    state.next_seq.saturating_sub(1),
                    seq - state.next_seq
                ),
                state.last_id.into_iter().chain([id]).collect(),
            ));
            state.recent.clear();
        } else if let Some(expected) = state.head
            && prev != Some(expected)
        {
            breaks.push(Finding::new(
                "integrity/broken-link",
                subject(),
                format!(
                    "Entry {seq} of {chain}'s chain does not link to the entry before it \
                     (its prev is {}, the entry before is {}): the history was altered.",
                    prev.map_or("none".into(), |p| short(&p)),
                    short(&expected)
                ),
                vec![expected, id],
            ));
        }
        if state.size() > 0 && time < state.last_time {
            breaks.push(Finding::new(
                "integrity/time-backwards",
                subject(),
                format!(
                    "Entry {seq} of {chain}'s chain is dated {}, before the entry before it ({}).",
                    when(time),
                    when(state.last_time)
                ),
                state.last_id.into_iter().chain([id]).collect(),
            ));
        }
        if time
            > self
                .config
                .now_unix_ms
                .saturating_add(self.config.max_clock_skew_ms)
        {
            breaks.push(Finding::new(
                "integrity/time-in-future",
                subject(),
                format!(
                    "Entry {seq} of {chain}'s chain is dated {}, after the time of the audit ({}).",
                    when(time),
                    when(self.config.now_unix_ms)
                ),
                vec![id],
            ));
        }
        state.next_seq = seq + 1;
        state.head = Some(id);
        state.last_id = Some(id);
        state.last_time = time;
        state.first_time.get_or_insert(time);
        state.remember(seq, id);
        state.record_certificates(map_keys.iter(), id);
        state.push_leaf(leaf, id);
        self.findings.extend(breaks);

        // Signature and authorisation.
        let signature = match (signature, &entry) {
            (Some(result), _) => result,
            (None, Some(entry)) => signature_check(entry, &self.membership)
                .unwrap_or(Err(FederationError::UnknownKey { kid })),
            (None, None) => Err(FederationError::UnknownKey { kid }),
        };
        if let Err(e) = &signature {
            self.findings.push(Finding::new(
                auth_rule(e),
                subject(),
                auth_sentence(e, chain, seq),
                vec![id],
            ));
            return;
        }
        if let (true, Some(entry)) = (registrar_page, &entry) {
            if let Err(e) = self.membership.apply_record_at(entry.record(), time) {
                self.findings.push(Finding::new(
                    "integrity/bad-membership-record",
                    subject(),
                    format!(
                        "Registrar entry {seq} ({}) cannot be applied to the membership: {e}.",
                        entry.record().kind()
                    ),
                    vec![id],
                ));
            }
            self.registrar_facts.push(RegistrarFact {
                seq,
                id,
                kid,
                time,
                kind: entry.record().kind(),
            });
        } else {
            // The workers authorise every validly signed entry of a non-registrar page.
            let auth = auth.unwrap_or(Err(FederationError::UnknownKey { kid }));
            if let Err(e) = auth {
                self.findings.push(Finding::new(
                    auth_rule(&e),
                    subject(),
                    auth_sentence(&e, chain, seq),
                    vec![id],
                ));
                return;
            }
        }
        // Facts: anchors and the certificates' lives.
        if let Some(anchor) = anchor {
            self.claim(Claim {
                chain: anchor.chain.clone(),
                size: anchor.size,
                root: anchor.root,
                head: None,
                certs: None,
                kind: ClaimKind::Anchor {
                    witness: chain.clone(),
                    seq,
                    entry: id,
                    time,
                },
            });
        }
        if let Some((cert, fact)) = fact {
            let by = self.domain.intern(chain);
            self.domain.push(cert, time, by, seq, id, fact);
        }
    }

    fn claim(&mut self, claim: Claim) {
        let state = self.chain_mut(&claim.chain.clone());
        if claim.size > state.size() {
            *state.wants.entry(claim.size).or_default() |= claim.certs.is_some();
        }
        self.claims.push(claim);
    }

    /// Ends the audit: flushes, resolves anchors and checkpoints, runs the domain rules.
    pub fn finish(mut self) -> AuditReport {
        self.flush();
        self.drain();
        self.close_registrar();
        self.check_checkpoints();
        self.resolve_claims();
        self.check_anchor_ages();
        let certificates = self.domain.certs.len() as u64;
        let config = self.config.clone();
        let mut findings = std::mem::take(&mut self.findings);
        findings.extend(self.domain.evaluate(&config, config.threads));
        findings.sort_by(|a, b| {
            (a.severity, a.rule, &a.subject).cmp(&(b.severity, b.rule, &b.subject))
        });
        let mut counts = BTreeMap::new();
        for f in &findings {
            *counts.entry(severity_name(f.severity)).or_insert(0) += 1;
        }
        let chains = self
            .chains
            .iter()
            .filter(|(_, s)| s.size() > 0)
            .map(|(org, s)| {
                (
                    org.clone(),
                    ChainSummary {
                        size: s.size(),
                        root: TreeHash(s.frontier.root::<Sha256>()),
                        head: s.last_id,
                        last_time_unix_ms: s.last_time,
                        last_anchor: s.last_anchor.clone(),
                    },
                )
            })
            .collect();
        AuditReport {
            federation: self.federation,
            now_unix_ms: config.now_unix_ms,
            entries: self.entries,
            checkpoints: self.checkpoint_count,
            certificates,
            chains,
            counts,
            findings,
            config,
        }
    }

    fn check_checkpoints(&mut self) {
        for checkpoint in std::mem::take(&mut self.checkpoints) {
            let body = checkpoint.body();
            let subject = format!("{}/{}", body.chain, body.size);
            let signed = self
                .membership
                .key(&checkpoint.kid())
                .filter(|(member, _)| member.org == body.chain)
                .filter(|(_, key)| {
                    key.valid_from <= body.time_unix_ms
                        && key.revoked_from.is_none_or(|r| body.time_unix_ms < r)
                })
                .is_some_and(|(_, key)| checkpoint.verify_signature(&key.verifying_key).is_ok());
            let problem = if body.federation != self.federation {
                Some("belongs to another federation".to_owned())
            } else if !signed {
                Some(format!(
                    "is not signed by a key {} held at {}",
                    body.chain,
                    when(body.time_unix_ms)
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.findings.push(Finding::new(
                    "integrity/checkpoint-bad-signature",
                    subject,
                    format!(
                        "The checkpoint of {}'s chain at size {} {problem}.",
                        body.chain, body.size
                    ),
                    vec![body.head],
                ));
            }
        }
    }

    fn resolve_claims(&mut self) {
        let anchor_witnesses: HashMap<OrgId, bool> = self
            .membership
            .members()
            .map(|m| (m.org.clone(), m.has_role(Role::Institute)))
            .collect();
        for claim in std::mem::take(&mut self.claims) {
            let state = self
                .chains
                .entry(claim.chain.clone())
                .or_insert_with(ChainState::new);
            let known = state.root_at(claim.size, claim.certs.is_some());
            let (contradiction, beyond) = match known {
                RootKnown::Exact(root, head, certs) => {
                    let head_wrong = match (claim.head, head) {
                        (Some(claimed), Some(ours)) => claimed != ours,
                        _ => false,
                    };
                    let why = if root != claim.root {
                        Some(format!(
                            "states root {} but the audited entries give {}",
                            claim.root, root
                        ))
                    } else if head_wrong {
                        Some(format!(
                            "states head {} but entry {} of the chain is {}",
                            short(&claim.head.unwrap_or(EntryId([0; 32]))),
                            claim.size - 1,
                            short(&head.unwrap_or(EntryId([0; 32])))
                        ))
                    } else if let (Some(claimed), Some(ours)) = (claim.certs, certs)
                        && claimed != ours
                    {
                        Some(format!(
                            "states certificate map root {claimed} but the audited entries give {ours}"
                        ))
                    } else {
                        None
                    };
                    (why, false)
                }
                RootKnown::Prefix(prefix) => {
                    let claimed = u64::from_be_bytes(claim.root.0[..8].try_into().expect("8"));
                    let why = (claimed != prefix).then(|| {
                        format!(
                            "states root {} but the audited entries give a root beginning {prefix:016x}",
                            claim.root
                        )
                    });
                    (why, false)
                }
                RootKnown::Beyond => (None, true),
            };
            match claim.kind {
                ClaimKind::Checkpoint => {
                    let subject = format!("{}/{}", claim.chain, claim.size);
                    if let Some(why) = contradiction {
                        self.findings.push(Finding::new(
                            "integrity/checkpoint-mismatch",
                            subject,
                            format!(
                                "The signed checkpoint of {}'s chain at size {} {why}: the chain \
                                 was rewritten after it was signed.",
                                claim.chain, claim.size
                            ),
                            claim.head.into_iter().collect(),
                        ));
                    } else if beyond {
                        self.findings.push(Finding::new(
                            "integrity/checkpoint-mismatch",
                            subject,
                            format!(
                                "The signed checkpoint of {}'s chain states {} entries but the \
                                 audit was given only {}: entries were withheld.",
                                claim.chain,
                                claim.size,
                                state.size()
                            ),
                            claim.head.into_iter().collect(),
                        ));
                    }
                }
                ClaimKind::Anchor {
                    witness,
                    seq,
                    entry,
                    time,
                } => {
                    let subject = format!("{witness}/{seq}");
                    if let Some(why) = contradiction {
                        self.findings.push(Finding::new(
                            "integrity/anchor-contradicted",
                            subject,
                            format!(
                                "{witness}'s anchor of {}'s chain at size {} {why}: one of the \
                                 two chains was rewritten.",
                                claim.chain, claim.size
                            ),
                            vec![entry],
                        ));
                    } else if beyond {
                        self.findings.push(Finding::new(
                            "integrity/anchor-beyond-chain",
                            subject,
                            format!(
                                "{witness} anchored {}'s chain at size {}, but the audit was \
                                 given only {} of its entries: entries are missing or hidden.",
                                claim.chain,
                                claim.size,
                                state.size()
                            ),
                            vec![entry],
                        ));
                    } else {
                        let qualifies = witness != claim.chain
                            && (anchor_witnesses.get(&witness).copied().unwrap_or(false)
                                || anchor_witnesses.get(&claim.chain).copied().unwrap_or(false));
                        let better = state
                            .last_anchor
                            .as_ref()
                            .is_none_or(|a| (claim.size, time) > (a.size, a.time_unix_ms));
                        if qualifies && better {
                            state.last_anchor = Some(AnchorRef {
                                by: witness,
                                entry,
                                time_unix_ms: time,
                                size: claim.size,
                            });
                        }
                    }
                }
            }
        }
    }

    fn check_anchor_ages(&mut self) {
        let now = self.config.now_unix_ms;
        for (org, state) in &self.chains {
            if state.size() == 0 {
                continue;
            }
            let covered = state.last_anchor.as_ref().map_or(0, |a| a.size);
            if covered >= state.size() {
                continue;
            }
            let since = state
                .last_anchor
                .as_ref()
                .map_or(state.first_time.unwrap_or(0), |a| a.time_unix_ms);
            if now.saturating_sub(since) > self.config.anchor_max_age_ms {
                let last = state
                    .last_anchor
                    .as_ref()
                    .map_or("has never been anchored".to_owned(), |a| {
                        format!("was last anchored by {} at {}", a.by, when(a.time_unix_ms))
                    });
                self.findings.push(Finding::new(
                    "chain/anchor-overdue",
                    org.to_string(),
                    format!(
                        "{org}'s chain {last}; {} of its {} entries are not witnessed and \
                         more than {} days have passed.",
                        state.size() - covered,
                        state.size(),
                        self.config.anchor_max_age_ms / DAY_MS
                    ),
                    state
                        .last_anchor
                        .as_ref()
                        .map(|a| a.entry)
                        .into_iter()
                        .chain(state.last_id)
                        .collect(),
                ));
            }
        }
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}

/// The chain an entry claims (CWT `iss` of its protected header), without decoding it all
/// (callers that sort a mixed log by chain before feeding, like `rmledger audit --data`).
pub fn peek_chain(bytes: &[u8]) -> Option<OrgId> {
    let mut r = crate::cbor::Reader::new(bytes);
    r.tag().ok()?;
    r.array().ok()?;
    let protected = r.bytes().ok()?;
    let header = crate::cose::ProtectedHeader::decode(protected).ok()?;
    OrgId::new(&header.issuer).ok()
}

// ---------------------------------------------------------------------------------------------
// Domain facts and rules

/// One revision's facts (the registration is revision 1).
#[derive(Debug, Clone)]
struct RevFacts {
    number: u32,
    kind: DocumentKind,
    expiry: Option<u64>,
    after_dispatch: Option<Period>,
    after_opening: AfterOpening,
    values: Vec<PropertyValue>,
}

impl RevFacts {
    fn of(number: u32, c: &Certificate, off: i32) -> Self {
        RevFacts {
            number,
            kind: c.kind,
            expiry: lifecycle::expiry_unix_ms(c, off),
            after_dispatch: match &c.validity {
                Validity::AfterDispatch(p) => Some(*p),
                _ => None,
            },
            after_opening: c.after_opening.clone(),
            values: c.values.clone(),
        }
    }
}

#[derive(Debug, Clone)]
/// Kept small (16 bytes): one is kept per certificate event, and uses are most of a ledger.
/// The serial of an opened or used unit is interned ([`Domain::serials`]).
enum Fact {
    Registered(Box<(RevFacts, SerialSet)>),
    Revised(Box<RevFacts>),
    Stability,
    Verification(Box<ValueVerification>),
    Suspended,
    Reinstated,
    Recalled,
    Withdrawn,
    Shipped { to: u32, serials: Box<SerialSet> },
    Received { serials: Box<SerialSet> },
    Opened { serial: u32 },
    Used { serial: u32 },
    Disposed { serials: Box<SerialSet> },
}

const _: () = assert!(
    std::mem::size_of::<Fact>() <= 16,
    "a fact is kept per event"
);
const _: () = assert!(
    std::mem::size_of::<Ev>() <= 72,
    "an event is kept per entry"
);

#[derive(Debug, Clone)]
struct Ev {
    time: u64,
    chain: u32,
    seq: u64,
    entry: EntryId,
    fact: Fact,
}

#[derive(Default, Clone)]
struct CertFacts {
    events: Vec<Ev>,
}

/// The compact facts of every certificate, and the domain rules over them.
#[derive(Clone)]
struct Domain {
    off: i32,
    orgs: Vec<OrgId>,
    org_index: HashMap<OrgId, u32>,
    /// Every serial opened or used, once (facts name them by index).
    serials: Vec<Box<str>>,
    serial_index: HashMap<Box<str>, u32>,
    certs: HashMap<CertificateId, CertFacts>,
}

impl Domain {
    fn new(off: i32) -> Self {
        Domain {
            off,
            orgs: Vec::new(),
            org_index: HashMap::new(),
            serials: Vec::new(),
            serial_index: HashMap::new(),
            certs: HashMap::new(),
        }
    }

    fn intern_serial(&mut self, serial: &str) -> u32 {
        if let Some(&i) = self.serial_index.get(serial) {
            return i;
        }
        let i = self.serials.len() as u32;
        self.serials.push(serial.into());
        self.serial_index.insert(serial.into(), i);
        i
    }

    fn intern(&mut self, org: &OrgId) -> u32 {
        if let Some(&i) = self.org_index.get(org) {
            return i;
        }
        let i = self.orgs.len() as u32;
        self.orgs.push(org.clone());
        self.org_index.insert(org.clone(), i);
        i
    }

    /// Records the facts of an authentic entry.
    fn add(&mut self, entry: &Entry) {
        if let Some((cert, fact)) = new_fact(entry, self.off) {
            let by = self.intern(entry.chain());
            self.push(
                cert,
                entry.time_unix_ms(),
                by,
                entry.seq(),
                entry.id(),
                fact,
            );
        }
    }

    /// Keeps a fact [`new_fact`] extracted, interning the names in it.
    fn push(
        &mut self,
        cert: CertificateId,
        time: u64,
        chain: u32,
        seq: u64,
        entry: EntryId,
        fact: NewFact,
    ) {
        let fact = match fact {
            NewFact::Ready(fact) => fact,
            NewFact::Shipped { to, serials } => Fact::Shipped {
                to: self.intern(&to),
                serials,
            },
            NewFact::Opened(serial) => Fact::Opened {
                serial: self.intern_serial(serial.as_str()),
            },
            NewFact::Used(serial) => Fact::Used {
                serial: self.intern_serial(serial.as_str()),
            },
        };
        self.certs.entry(cert).or_default().events.push(Ev {
            time,
            chain,
            seq,
            entry,
            fact,
        });
    }

    /// Runs the domain rules over every certificate, in the order of their ids, on `threads`
    /// threads (each judges a contiguous run of certificates; nothing is shared but the
    /// interned names), and empties the facts.
    fn evaluate(&mut self, config: &AuditConfig, threads: usize) -> Vec<Finding> {
        let mut certs: Vec<(CertificateId, CertFacts)> =
            std::mem::take(&mut self.certs).into_iter().collect();
        certs.sort_unstable_by_key(|c| c.0);
        let (orgs, serials, off) = (&self.orgs, &self.serials, self.off);
        let judge = |run: &mut [(CertificateId, CertFacts)]| {
            let mut out = Vec::new();
            for (id, facts) in run {
                facts.events.sort_by(|a, b| {
                    (a.time, &orgs[a.chain as usize], a.seq).cmp(&(
                        b.time,
                        &orgs[b.chain as usize],
                        b.seq,
                    ))
                });
                CertRun::new(*id, orgs, serials, off, config).run(&facts.events, &mut out);
            }
            out
        };
        let per_thread = certs.len().div_ceil(threads.max(1)).max(1);
        let mut parts = certs.chunks_mut(per_thread);
        let first = parts.next();
        std::thread::scope(|scope| {
            let others: Vec<_> = parts.map(|run| scope.spawn(|| judge(run))).collect();
            let mut out = first.map(&judge).unwrap_or_default();
            for other in others {
                out.extend(other.join().expect("an audit worker panicked"));
            }
            out
        })
    }
}

/// A certificate fact as the worker that decoded the entry extracts it: complete but for the
/// names [`Domain::push`] interns.
#[derive(Clone)]
enum NewFact {
    Ready(Fact),
    Shipped { to: OrgId, serials: Box<SerialSet> },
    Opened(SerialText),
    Used(SerialText),
}

/// The certificate an entry is about and the fact it records there, if any.
fn new_fact(entry: &Entry, off: i32) -> Option<(CertificateId, NewFact)> {
    let ready = |cert, fact| Some((cert, NewFact::Ready(fact)));
    match entry.record() {
        Record::BatchRegistered(c) => ready(
            entry.id(),
            Fact::Registered(Box::new((RevFacts::of(1, c, off), c.units.clone()))),
        ),
        Record::CertificateRevised(r) => ready(
            r.cert,
            Fact::Revised(Box::new(RevFacts::of(r.revision, &r.certificate, off))),
        ),
        Record::StabilityCheck(r) => ready(r.cert, Fact::Stability),
        Record::ValueVerification(r) => ready(r.cert, Fact::Verification(Box::new(r.clone()))),
        Record::Suspended(s) => ready(s.cert, Fact::Suspended),
        Record::Reinstated(s) => ready(s.cert, Fact::Reinstated),
        Record::Recalled(s) => ready(s.cert, Fact::Recalled),
        Record::Withdrawn(s) => ready(s.cert, Fact::Withdrawn),
        Record::Shipped(s) => Some((
            s.cert,
            NewFact::Shipped {
                to: s.to.clone(),
                serials: Box::new(s.serials.clone()),
            },
        )),
        Record::Received(s) => ready(
            s.cert,
            Fact::Received {
                serials: Box::new(s.serials.clone()),
            },
        ),
        Record::Opened(o) => Some((o.cert, NewFact::Opened(SerialText::new(&o.serial)))),
        Record::Used(u) => Some((u.cert, NewFact::Used(SerialText::new(&u.serial)))),
        Record::Disposed(d) => ready(
            d.cert,
            Fact::Disposed {
                serials: Box::new(d.serials.clone()),
            },
        ),
        _ => None,
    }
}

/// A unit's serial carried from a worker to the sequential checks, inline when short (uses
/// are most of a ledger, and their serials are interned once there).
#[derive(Clone)]
enum SerialText {
    Short {
        len: u8,
        bytes: [u8; SerialText::SHORT],
    },
    Long(Box<str>),
}

impl SerialText {
    const SHORT: usize = 30;

    fn new(serial: &str) -> Self {
        match u8::try_from(serial.len()) {
            Ok(len) if serial.len() <= Self::SHORT => {
                let mut bytes = [0; Self::SHORT];
                bytes[..serial.len()].copy_from_slice(serial.as_bytes());
                SerialText::Short { len, bytes }
            }
            _ => SerialText::Long(serial.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            SerialText::Short { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied whole from a str")
            }
            SerialText::Long(serial) => serial,
        }
    }
}

/// One unit's life as the rules need it.
#[derive(Default)]
struct UnitRun {
    shipments: Vec<(u32, u64, EntryId)>,
    receivers: Vec<(u32, EntryId)>,
    opened_at: Option<u64>,
    uses: u32,
    disposed: Option<EntryId>,
}

/// Aggregated findings: one per (rule, subject), evidence accumulated.
struct Acc {
    order: Vec<(&'static str, String)>,
    map: HashMap<(&'static str, String), (String, Vec<EntryId>, usize)>,
}

impl Acc {
    fn new() -> Self {
        Acc {
            order: Vec::new(),
            map: HashMap::new(),
        }
    }

    fn add(
        &mut self,
        rule: &'static str,
        subject: String,
        explanation: String,
        evidence: &[EntryId],
    ) {
        let key = (rule, subject);
        let slot = self.map.entry(key.clone()).or_insert_with(|| {
            self.order.push(key);
            (explanation, Vec::new(), 0)
        });
        for id in evidence {
            if !slot.1.contains(id) {
                slot.2 += 1;
                if slot.1.len() < MAX_EVIDENCE {
                    slot.1.push(*id);
                }
            }
        }
    }

    fn into_findings(mut self, out: &mut Vec<Finding>) {
        for key in self.order {
            if let Some((explanation, entries, total)) = self.map.remove(&key) {
                let explanation = if total > entries.len() {
                    format!(
                        "{explanation} ({total} entries; the first {} are listed)",
                        entries.len()
                    )
                } else {
                    explanation
                };
                out.push(Finding::new(key.0, key.1, explanation, entries));
            }
        }
    }
}

struct CertRun<'a> {
    id: CertificateId,
    orgs: &'a [OrgId],
    serials: &'a [Box<str>],
    off: i32,
    config: &'a AuditConfig,
    acc: Acc,
}

impl<'a> CertRun<'a> {
    fn new(
        id: CertificateId,
        orgs: &'a [OrgId],
        serials: &'a [Box<str>],
        off: i32,
        config: &'a AuditConfig,
    ) -> Self {
        CertRun {
            id,
            orgs,
            serials,
            off,
            config,
            acc: Acc::new(),
        }
    }

    fn org(&self, i: u32) -> &OrgId {
        &self.orgs[i as usize]
    }

    fn run(mut self, events: &[Ev], out: &mut Vec<Finding>) {
        let cert = self.id;
        let Some((reg, rev1, units)) = events.iter().find_map(|e| match &e.fact {
            Fact::Registered(registered) if e.entry == cert => {
                Some((e, &registered.0, &registered.1))
            }
            _ => None,
        }) else {
            let evidence: Vec<EntryId> = events.iter().map(|e| e.entry).collect();
            self.acc.add(
                "domain/unknown-certificate",
                cert.to_hex(),
                format!(
                    "{} entries refer to certificate {}, which was never registered: the units \
                     they move or use cannot be genuine.",
                    events.len(),
                    short(&cert)
                ),
                &evidence,
            );
            self.acc.into_findings(out);
            return;
        };
        let producer = reg.chain;
        let mut revisions: Vec<(u64, &RevFacts)> = vec![(reg.time, rev1)];
        let mut suspended: Option<EntryId> = None;
        let mut recalled: Option<EntryId> = None;
        let mut withdrawn: Option<EntryId> = None;
        let mut actions: Vec<(u64, EntryId)> = Vec::new();
        let mut fails: Vec<(u64, EntryId, u32, u64, bool)> = Vec::new();
        let mut verified = false;
        let mut unit_map: HashMap<Box<str>, UnitRun> = HashMap::new();

        let orgs = self.orgs;
        for ev in events {
            let by = ev.chain;
            let lab = &orgs[by as usize];
            match &ev.fact {
                Fact::Registered(..) => {}
                Fact::Revised(rev) => {
                    if by == producer {
                        revisions.push((ev.time, rev));
                    } else {
                        self.foreign(ev, "revised", producer);
                    }
                }
                Fact::Stability => {
                    if by != producer {
                        self.foreign(ev, "recorded stability checks on", producer);
                    }
                }
                Fact::Verification(v) => {
                    verified = true;
                    if let Some(failed) = self.verification(ev, v, &revisions) {
                        let acted =
                            suspended.is_some() || recalled.is_some() || withdrawn.is_some();
                        if failed {
                            fails.push((ev.time, ev.entry, ev.chain, ev.seq, acted));
                        }
                    }
                }
                Fact::Suspended => {
                    suspended.get_or_insert(ev.entry);
                    actions.push((ev.time, ev.entry));
                }
                Fact::Reinstated => suspended = None,
                Fact::Recalled => {
                    recalled.get_or_insert(ev.entry);
                    actions.push((ev.time, ev.entry));
                }
                Fact::Withdrawn => {
                    if by == producer {
                        withdrawn.get_or_insert(ev.entry);
                        actions.push((ev.time, ev.entry));
                    } else {
                        self.foreign(ev, "withdrew", producer);
                    }
                }
                Fact::Shipped { to, serials } => {
                    if by != producer {
                        self.foreign(ev, "shipped units of", producer);
                        continue;
                    }
                    let Some(list) = self.serials(ev, serials) else {
                        continue;
                    };
                    for serial in list {
                        if !units.contains(&serial) {
                            self.not_produced(ev, &serial);
                            continue;
                        }
                        let unit = unit_map.entry(serial.as_str().into()).or_default();
                        if let Some(&(first_to, _, first)) = unit.shipments.first() {
                            self.acc.add(
                                "domain/unit-shipped-twice",
                                format!("{}/{serial}", cert.to_hex()),
                                format!(
                                    "Unit {serial} of certificate {} was shipped to {} and then \
                                     shipped again to {}: more units were shipped than produced.",
                                    short(&cert),
                                    self.orgs[first_to as usize],
                                    self.orgs[*to as usize]
                                ),
                                &[first, ev.entry],
                            );
                        }
                        unit.shipments.push((*to, ev.time, ev.entry));
                    }
                }
                Fact::Received { serials } => {
                    let Some(list) = self.serials(ev, serials) else {
                        continue;
                    };
                    for serial in list {
                        if !units.contains(&serial) {
                            self.not_produced(ev, &serial);
                            continue;
                        }
                        let unit = unit_map.entry(serial.as_str().into()).or_default();
                        if unit.receivers.iter().any(|(o, _)| *o == by) {
                            continue;
                        }
                        if let Some(&(other, first)) = unit.receivers.first() {
                            self.acc.add(
                                "domain/serial-at-two-labs",
                                format!("{}/{serial}", cert.to_hex()),
                                format!(
                                    "Unit {serial} of certificate {} was received by both {} and \
                                     {lab}: one of them holds a cloned or counterfeit unit.",
                                    short(&cert),
                                    self.orgs[other as usize]
                                ),
                                &[first, ev.entry],
                            );
                        } else if !unit.shipments.iter().any(|(to, _, _)| *to == by) {
                            let evidence: Vec<EntryId> = unit
                                .shipments
                                .iter()
                                .map(|s| s.2)
                                .chain([ev.entry])
                                .collect();
                            self.acc.add(
                                "domain/unit-not-shipped-to-lab",
                                format!("{}/{serial}/{lab}", cert.to_hex()),
                                format!(
                                    "{lab} recorded receiving unit {serial} of certificate {}, \
                                     which the producer never shipped to it.",
                                    short(&cert)
                                ),
                                &evidence,
                            );
                        }
                        unit.receivers.push((by, ev.entry));
                    }
                }
                Fact::Opened { serial } | Fact::Used { serial } => {
                    let serial_s: &str = &self.serials[*serial as usize];
                    if !units.contains(serial_s) {
                        self.not_produced(ev, serial_s);
                        continue;
                    }
                    let unit = unit_map.entry(serial_s.into()).or_default();
                    let subject = || format!("{}/{serial_s}/{lab}", cert.to_hex());
                    let received = unit.receivers.iter().any(|(o, _)| *o == by);
                    let shipped = unit.shipments.iter().any(|(to, _, _)| *to == by);
                    if !received && !shipped {
                        self.acc.add(
                            "domain/unit-not-shipped-to-lab",
                            subject(),
                            format!(
                                "{lab} recorded using unit {serial_s} of certificate {}, which \
                                 the producer never shipped to it.",
                                short(&cert)
                            ),
                            &[ev.entry],
                        );
                    } else if !received {
                        self.acc.add(
                            "domain/use-without-receipt",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} without recording \
                                 its receipt.",
                                short(&cert)
                            ),
                            &[ev.entry],
                        );
                    }
                    let is_use = matches!(ev.fact, Fact::Used { .. });
                    if !is_use {
                        unit.opened_at.get_or_insert(ev.time);
                        continue;
                    }
                    // The certificate's status at the time of use.
                    let rev = revisions
                        .iter()
                        .rev()
                        .find(|(t, _)| *t <= ev.time)
                        .map_or(revisions[0].1, |(_, r)| *r);
                    let dispatched = unit
                        .shipments
                        .iter()
                        .find(|(to, _, _)| *to == by)
                        .or(unit.shipments.first())
                        .map(|s| s.1);
                    let unit_expiry = rev
                        .after_dispatch
                        .as_ref()
                        .and_then(|p| dispatched.and_then(|d| through_period(d, p, self.off)));
                    let expiry = match (rev.expiry, unit_expiry) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let date = |ms: u64| date_text(ms, self.off);
                    if let Some(w) = withdrawn {
                        self.acc.add(
                            "domain/use-after-withdrawal",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} after the producer \
                                 withdrew the certificate.",
                                short(&cert)
                            ),
                            &[w, ev.entry],
                        );
                    } else if let Some(rc) = recalled {
                        self.acc.add(
                            "domain/use-after-recall",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} after the batch was \
                                 recalled.",
                                short(&cert)
                            ),
                            &[rc, ev.entry],
                        );
                    } else if let Some(s) = suspended {
                        self.acc.add(
                            "domain/use-while-suspended",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} while the \
                                 certificate was suspended.",
                                short(&cert)
                            ),
                            &[s, ev.entry],
                        );
                    } else if let Some(end) = expiry.filter(|&end| ev.time >= end) {
                        self.acc.add(
                            "domain/use-after-expiry",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} on {}, after its \
                                 validity ended on {}.",
                                short(&cert),
                                date(ev.time),
                                date(end.saturating_sub(1))
                            ),
                            &[ev.entry],
                        );
                    }
                    let opened = *unit.opened_at.get_or_insert(ev.time);
                    match &rev.after_opening {
                        AfterOpening::SingleUse if unit.uses > 0 => self.acc.add(
                            "domain/single-use-reused",
                            subject(),
                            format!(
                                "{lab} used single-use unit {serial_s} of certificate {} more \
                                 than once.",
                                short(&cert)
                            ),
                            &[ev.entry],
                        ),
                        AfterOpening::Within(p) => {
                            if let Some(end) =
                                through_period(opened, p, self.off).filter(|&end| ev.time >= end)
                            {
                                self.acc.add(
                                    "domain/use-after-opening-period",
                                    subject(),
                                    format!(
                                        "{lab} used unit {serial_s} of certificate {} on {}; it \
                                         was opened on {} and may be used for {p} (through {}).",
                                        short(&cert),
                                        date(ev.time),
                                        date(opened),
                                        date(end.saturating_sub(1))
                                    ),
                                    &[ev.entry],
                                );
                            }
                        }
                        _ => {}
                    }
                    if let Some(d) = unit.disposed {
                        self.acc.add(
                            "domain/use-after-disposal",
                            subject(),
                            format!(
                                "{lab} used unit {serial_s} of certificate {} after it was \
                                 disposed of.",
                                short(&cert)
                            ),
                            &[d, ev.entry],
                        );
                    }
                    unit.uses = unit.uses.saturating_add(1);
                }
                Fact::Disposed { serials } => {
                    let Some(list) = self.serials(ev, serials) else {
                        continue;
                    };
                    for serial in list {
                        if !units.contains(&serial) {
                            self.not_produced(ev, &serial);
                            continue;
                        }
                        let unit = unit_map.entry(serial.as_str().into()).or_default();
                        unit.disposed.get_or_insert(ev.entry);
                    }
                }
            }
        }

        // A failed verification must be acted on within the deadline.
        let deadline = self.config.suspension_deadline_ms;
        for (time, entry, by, seq, already) in fails {
            if already {
                continue;
            }
            let end = time.saturating_add(deadline);
            let action = actions.iter().find(|(t, _)| *t >= time);
            let in_time = action.is_some_and(|(t, _)| *t <= end);
            if in_time || self.config.now_unix_ms < end {
                continue;
            }
            let institute = self.org(by).clone();
            let evidence: Vec<EntryId> = [entry].into_iter().chain(action.map(|a| a.1)).collect();
            self.acc.add(
                "domain/failed-verification-not-acted-on",
                format!("{}/{institute}/{seq}", cert.to_hex()),
                format!(
                    "{institute}'s verification of certificate {} failed (|En| > 1) on {}, but the \
                     certificate was {} within {} days.",
                    short(&cert),
                    date_text(time, self.off),
                    match action {
                        Some((t, _)) => format!(
                            "only suspended, recalled or withdrawn on {}, not",
                            date_text(*t, self.off)
                        ),
                        None => "not suspended, recalled or withdrawn".into(),
                    },
                    deadline / DAY_MS
                ),
                &evidence,
            );
        }
        if !verified && rev1.kind == DocumentKind::Certificate {
            self.acc.add(
                "domain/never-verified",
                cert.to_hex(),
                format!(
                    "Certificate {} ({} by {}) has never been verified by an independent measurement.",
                    short(&cert),
                    date_text(reg.time, self.off),
                    self.org(producer)
                ),
                &[cert],
            );
        }
        self.acc.into_findings(out);
    }

    fn foreign(&mut self, ev: &Ev, what: &str, producer: u32) {
        let by = self.org(ev.chain).clone();
        self.acc.add(
            "domain/foreign-record",
            format!("{}/{by}/{}", self.id.to_hex(), ev.seq),
            format!(
                "{by} {what} certificate {}, which belongs to {}.",
                short(&self.id),
                self.org(producer)
            ),
            &[ev.entry],
        );
    }

    fn not_produced(&mut self, ev: &Ev, serial: &str) {
        let by = self.org(ev.chain).clone();
        self.acc.add(
            "domain/serial-not-produced",
            format!("{}/{serial}", self.id.to_hex()),
            format!(
                "{by} recorded unit {serial} of certificate {}, but the batch never produced a \
                 unit with that serial.",
                short(&self.id)
            ),
            &[ev.entry],
        );
    }

    /// The serials of a movement record, or `None` (and a finding) when too many.
    fn serials(&mut self, ev: &Ev, serials: &SerialSet) -> Option<Vec<String>> {
        if serials.len() > MAX_SERIALS_FOLLOWED {
            let by = self.org(ev.chain).clone();
            self.acc.add(
                "domain/too-many-serials",
                format!("{}/{by}/{}", self.id.to_hex(), ev.seq),
                format!(
                    "{by}'s entry {} lists {} units of certificate {}; the audit does not follow \
                     more than {MAX_SERIALS_FOLLOWED} units per record.",
                    ev.seq,
                    serials.len(),
                    short(&self.id)
                ),
                &[ev.entry],
            );
            return None;
        }
        Some(serials.iter().collect())
    }

    /// Checks a verification; returns whether it failed (`None`: no verdict could be made).
    fn verification(
        &mut self,
        ev: &Ev,
        v: &ValueVerification,
        revisions: &[(u64, &RevFacts)],
    ) -> Option<bool> {
        let by = self.org(ev.chain).clone();
        let subject = format!("{}/{by}/{}", self.id.to_hex(), ev.seq);
        let value = revisions
            .iter()
            .rev()
            .find(|(_, r)| r.number == v.revision)
            .and_then(|(_, r)| r.values.iter().find(|p| p.quantity == v.quantity));
        let Some(value) = value else {
            self.acc.add(
                "domain/verification-unmatched",
                subject,
                format!(
                    "{by}'s verification of certificate {} names {} in revision {}, which the \
                     certificate does not have at that time.",
                    short(&self.id),
                    v.quantity,
                    v.revision
                ),
                &[ev.entry],
            );
            return None;
        };
        if value.kind != ValueKind::Certified {
            if matches!(v.verdict, Some(Verdict::Pass | Verdict::Fail)) {
                self.acc.add(
                    "domain/verdict-on-non-certified-value",
                    subject,
                    format!(
                        "{by} stated a {} verdict on {} of certificate {}, which is a {} value; \
                         only certified values can pass or fail.",
                        verdict_text(v.verdict),
                        v.quantity,
                        short(&self.id),
                        match value.kind {
                            ValueKind::Reference => "reference",
                            _ => "information",
                        }
                    ),
                    &[ev.entry],
                );
            }
            return None;
        }
        let comparison = match verification::compare(value, &v.value, v.unit, &v.uncertainty) {
            Ok(c) => c,
            Err(e) => {
                self.acc.add(
                    "domain/verification-unmatched",
                    subject,
                    format!(
                        "{by}'s verification of {} on certificate {} cannot be compared with \
                         the certified value: {e}.",
                        v.quantity,
                        short(&self.id)
                    ),
                    &[ev.entry],
                );
                return None;
            }
        };
        if let (Some(stated), Some(computed)) = (v.verdict, comparison.verdict)
            && stated != computed
        {
            self.acc.add(
                "domain/verdict-disagrees",
                subject,
                format!(
                    "{by} stated {} for {} of certificate {}, but En = {:.2} gives {}.",
                    verdict_text(Some(stated)),
                    v.quantity,
                    short(&self.id),
                    comparison.en,
                    verdict_text(Some(computed))
                ),
                &[ev.entry],
            );
        }
        Some(comparison.verdict == Some(Verdict::Fail))
    }
}

fn verdict_text(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Pass) => "pass",
        Some(Verdict::Fail) => "fail",
        Some(Verdict::Inconclusive) => "inconclusive",
        None => "no",
    }
}

fn date_text(ms: u64, off: i32) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Date::from_unix_ms(ms, off).ok())
        .map_or_else(|| format!("{ms} ms"), |d| d.to_string())
}

/// The start of the day after `(date of start_ms) + period`: "valid through" that date.
fn through_period(start_ms: u64, period: &Period, off: i32) -> Option<u64> {
    let start = Date::from_unix_ms(i64::try_from(start_ms).ok()?, off).ok()?;
    let next = start.add_period(period).ok()?.add_days(1).ok()?;
    u64::try_from(next.start_unix_ms(off)).ok()
}

// ---------------------------------------------------------------------------------------------
// One certificate

/// One certificate's whole life and its findings.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateAudit {
    pub certificate: CertificateId,
    pub state: CertificateState,
    pub findings: Vec<Finding>,
}

/// Audits one certificate from its verified entries (any order; e.g. a bundle's): the fold of
/// its life and the domain rules over it. Integrity is the caller's (a bundle is verified).
pub fn audit_certificate(
    utc_offset_minutes: i32,
    cert: CertificateId,
    entries: &[Entry],
    config: &AuditConfig,
) -> Result<CertificateAudit, RuleError> {
    let registration = entries
        .iter()
        .find(|e| e.id() == cert)
        .ok_or_else(|| RuleError {
            rule: "not-a-registration",
            detail: format!("no entry registers certificate {cert}"),
            kind: lifecycle::RuleKind::NotFound,
        })?;
    let state = CertificateState::fold(registration, entries, utc_offset_minutes)?;
    let mut domain = Domain::new(utc_offset_minutes);
    for entry in entries {
        let about = entry.id() == cert || entry.record().certificate() == Some(&cert);
        if about {
            domain.add(entry);
        }
    }
    let mut findings = domain.evaluate(config, 1);
    findings
        .sort_by(|a, b| (a.severity, a.rule, &a.subject).cmp(&(b.severity, b.rule, &b.subject)));
    Ok(CertificateAudit {
        certificate: cert,
        state,
        findings,
    })
}

/// [`audit_certificate`] over a verified bundle.
pub fn audit_bundle(
    bundle: &VerifiedBundle,
    cert: CertificateId,
    config: &AuditConfig,
) -> Result<CertificateAudit, RuleError> {
    audit_certificate(
        bundle.genesis.body().utc_offset_minutes,
        cert,
        &bundle.entries,
        config,
    )
}

// ---------------------------------------------------------------------------------------------
// Impact

/// Why a certificate's units are affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactCause {
    /// `recalled`, `withdrawn`, `suspended` or `failed-verification`.
    pub kind: &'static str,
    pub entry: EntryId,
    pub by: OrgId,
    pub time_unix_ms: u64,
}

/// One use of an affected unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactUse {
    pub serial: String,
    pub time_unix_ms: u64,
    pub entry: EntryId,
    /// The test report or job that relied on the unit.
    pub reference: Option<String>,
}

/// One affected lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabImpact {
    pub org: OrgId,
    /// Units shipped to or received by the lab.
    pub units: Vec<String>,
    pub uses_after_cutoff: Vec<ImpactUse>,
}

/// Every lab and unit affected by a recall, suspension or failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactReport {
    pub certificate: CertificateId,
    /// Uses at or after this time are listed: `since`, else the earliest cause.
    pub cutoff: Option<u64>,
    pub cause: Vec<ImpactCause>,
    pub labs: Vec<LabImpact>,
}

/// The impact on labs and units of whatever went wrong with `cert` (from its verified entries,
/// any order), counting uses from `since` or, without it, from the earliest cause.
pub fn impact(
    utc_offset_minutes: i32,
    cert: CertificateId,
    entries: &[Entry],
    since: Option<u64>,
) -> Result<ImpactReport, RuleError> {
    let registration = entries
        .iter()
        .find(|e| e.id() == cert)
        .ok_or_else(|| RuleError {
            rule: "not-a-registration",
            detail: format!("no entry registers certificate {cert}"),
            kind: lifecycle::RuleKind::NotFound,
        })?;
    let state = CertificateState::fold(registration, entries, utc_offset_minutes)?;
    let mut cause = Vec::new();
    let mut push = |kind, e: &lifecycle::EventRef| {
        cause.push(ImpactCause {
            kind,
            entry: e.entry,
            by: e.chain.clone(),
            time_unix_ms: e.time_unix_ms,
        })
    };
    if let Some(e) = &state.recalled {
        push("recalled", e);
    }
    if let Some(e) = &state.withdrawn {
        push("withdrawn", e);
    }
    for period in &state.suspensions {
        push("suspended", &period.suspended);
    }
    for v in &state.verifications {
        if v.rule_verdict == Some(Verdict::Fail) {
            cause.push(ImpactCause {
                kind: "failed-verification",
                entry: v.entry,
                by: v.chain.clone(),
                time_unix_ms: v.time_unix_ms,
            });
        }
    }
    cause.sort_by_key(|c| (c.time_unix_ms, c.entry));
    let cutoff = since.or_else(|| cause.first().map(|c| c.time_unix_ms));
    let mut by_lab: BTreeMap<OrgId, (BTreeSet<String>, Vec<ImpactUse>)> = BTreeMap::new();
    for unit in state.units.values() {
        for org in unit.shipped_to.iter().chain(unit.received_by.iter()) {
            by_lab
                .entry(org.clone())
                .or_default()
                .0
                .insert(unit.serial.clone());
        }
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| lifecycle::order_key(a).cmp(&lifecycle::order_key(b)));
    for entry in sorted {
        if let Record::Used(u) = entry.record()
            && u.cert == cert
            && cutoff.is_some_and(|c| entry.time_unix_ms() >= c)
        {
            by_lab
                .entry(entry.chain().clone())
                .or_default()
                .1
                .push(ImpactUse {
                    serial: u.serial.clone(),
                    time_unix_ms: entry.time_unix_ms(),
                    entry: entry.id(),
                    reference: u.reference.clone(),
                });
        }
    }
    Ok(ImpactReport {
        certificate: cert,
        cutoff,
        cause,
        labs: by_lab
            .into_iter()
            .map(|(org, (units, uses))| LabImpact {
                org,
                units: units.into_iter().collect(),
                uses_after_cutoff: uses,
            })
            .collect(),
    })
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
