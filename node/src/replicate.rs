//! Federation: replication between organisations, anchors, and fork evidence.
//!
//! # Replication is pull-based
//!
//! One task per configured peer polls it (every `replication_interval_ms`, or at once when
//! `POST /v1/notify` wakes it): `GET /v1/chains`, then, registrar chain first, the entries each
//! chain is missing in pages (`GET /v1/chains/{c}/entries?from&limit`, a CBOR array of entry
//! bytes), then the chain's signed checkpoint. Every entry is checked before it is stored:
//! decoding, federation, chain continuity and time (`ChainTip::check_next`, future bound = now +
//! `limits.max_clock_skew_ms`) and authorisation plus `verify_strict` signature
//! (`Membership::verify_entry`). Entries are self-authenticating, so any peer may serve any
//! chain; the node never takes entries of its own chain from anyone.
//!
//! Catch-up is a pipeline under the chain's lock: each page downloads while the one before it
//! is decoded and `verify_strict`-checked on every core (each entry parsed once for both); its
//! decoding starts as soon as it has downloaded, so it overlaps the ordered check of the page
//! before it (chain links and time, against the tip that page's predecessor leaves behind) and
//! the write and fsync of the page before that (one append, one flush per page). A page is
//! stored only after the one before it is durable, so the chain is stored in order and nothing
//! unverified is stored. Signatures of a page are claimed by the verifying threads in small
//! runs — membership is fixed for a page of a non-registrar chain. Registrar entries change
//! membership, so they are only decoded ahead and are authorised and verified one by one in
//! the ordered check, against a membership that grows as they apply and is carried to the
//! next page.
//!
//! An entry whose key is not known yet (its enrolment is still on its way) waits for a later
//! round; anything else invalid is refused, counted in `/metrics`
//! (`rmledger_replication_errors_total{peer,kind}`) and logged with the peer, chain, seq and
//! reason, and the peer backs off exponentially (with jitter, capped at
//! `replication_max_backoff_ms`). A hanging peer only stalls its own task: every request has a
//! connect and a total timeout, and every body is read with a size cap.
//!
//! # Forks, equivocation, contradicted anchors
//!
//! Two validly signed entries at one (chain, seq), a validly signed checkpoint that disagrees
//! with the root we hold at its size, or an anchor that disagrees with our copy of the chain it
//! names, are *evidence*: both signed objects are kept (`GET /v1/evidence`), a `ForkReported`
//! holding both is appended to this node's own chain, and the chain concerned is frozen — no
//! longer replicated from any peer. Frozen chains are derived at start-up from the
//! `ForkReported` entries on our own chain, so they stay frozen after a restart. Nothing is
//! resolved automatically.
//!
//! # Anchors
//!
//! An institute anchors every other chain; every other member anchors the registrar's and the
//! institutes' chains: at most every `anchor_interval_seconds`, for each such chain that has
//! entries other than anchors since our last anchor of it, `Anchor {chain, size, root}` is
//! written through the node's own writer. (Anchors alone do not count as a change, or two
//! nodes anchoring each other would never fall quiet.)
//!
//! A stored anchor naming a size of a chain we hold is checked at once. One naming more than
//! we hold waits in the store's index ([`Store::unchecked_anchors`]) — so it survives a restart
//! — and is checked when that chain has caught up far enough, and at start-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmledger_schema::chain::{ChainError, ChainTip};
use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::entry::Entry;
use rmledger_schema::federation::{FederationError, Membership};
use rmledger_schema::ids::{EntryId, FederationId, OrgId};
use rmledger_schema::records::{Anchor, Blob, EvidenceKind, ForkReported, Record, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::append::{Writer, now_unix_ms};
use crate::config::Config;
use crate::ledger::{Ledger, read_entry};
use crate::metrics::Metrics;
use crate::storage::{AnchorRef, Batch, Store};

/// The operator name on entries the replication and anchor tasks write.
pub const OPERATOR_ANCHOR: &str = "anchor";
/// The operator name on `ForkReported` entries.
pub const OPERATOR_REPLICATION: &str = "replication";
/// How far back the anchor task looks for a non-anchor entry before assuming there is one.
const ANCHOR_LOOKBACK: u64 = 64;
/// How long a `POST /v1/notify` to a peer may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// At start-up, how many of each chain's newest entries are read back for the anchors they
/// hold (anchors are written every `anchor_interval_seconds`, so the newest anchor of each
/// chain sits near the end of its witness's chain).
const ANCHOR_READBACK: u64 = 4096;

/// One piece of evidence: two signed objects that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub chain: OrgId,
    /// The position: entry seq for `entries`, tree size for `checkpoints` and `anchor`.
    pub seq: u64,
    pub kind: EvidenceKind,
    /// Hex of the first object's bytes (ours, or the one we held first).
    pub first: String,
    /// Hex of the second object's bytes (the one that contradicts it).
    pub second: String,
    pub first_id: String,
    pub second_id: String,
    /// Unix ms: when this node detected it (for evidence read back from our chain at start-up,
    /// the time of the `ForkReported` entry).
    pub detected_at: u64,
}

/// The newest anchor of a chain that agrees with our copy of it: who witnessed which size, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Witnessed {
    pub witness: OrgId,
    pub size: u64,
    /// Unix ms of the anchor entry.
    pub time_unix_ms: u64,
}

/// A chain as a peer lists it in `GET /v1/chains`.
#[derive(Debug, Clone, Deserialize)]
struct ChainRow {
    chain: OrgId,
    size: u64,
    head: Option<EntryId>,
}

/// Why a request or a piece of input from a peer was not used.
#[derive(Debug, Clone)]
struct Failure {
    /// Stable, metric-friendly kind: `timeout`, `connect`, `too_large`, `signature`, `gap`, …
    kind: &'static str,
    chain: Option<OrgId>,
    seq: Option<u64>,
    reason: String,
}

impl Failure {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            chain: None,
            seq: None,
            reason: reason.into(),
        }
    }

    fn at(mut self, chain: &OrgId, seq: Option<u64>) -> Self {
        self.chain = Some(chain.clone());
        self.seq = seq.or(self.seq);
        self
    }
}

/// Why a page stopped before its end.
#[derive(Debug)]
enum Stop {
    /// Invalid input: refused.
    Refused(Failure),
    /// Signed by a key we do not know yet: retry in a later round.
    Wait { seq: u64, reason: String },
    /// A different, validly signed entry at a position we hold.
    Fork { ours: Vec<u8>, theirs: Box<Entry> },
}

/// What checking a page gave: the entries to store (in order), why it stopped, if it did, and
/// the chain tip and membership the accepted entries leave behind.
struct Verdict {
    accepted: Vec<Entry>,
    stop: Option<Stop>,
    tip: ChainTip,
    membership: Membership,
}

/// A downloaded page: the response body and where each entry's bytes lie in it (one buffer,
/// not one allocation per entry).
struct Page {
    body: Vec<u8>,
    items: Vec<std::ops::Range<usize>>,
}

impl Page {
    /// A page of one entry (a probe's answer, or a test's).
    fn single(bytes: Vec<u8>) -> Self {
        Self {
            items: std::iter::once(0..bytes.len()).collect(),
            body: bytes,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn get(&self, index: usize) -> &[u8] {
        &self.body[self.items[index].clone()]
    }
}

/// An entry that did not decode or verify: the entry if it decoded, the authorisation error
/// if that is what failed, and the reason in words.
struct Rejected {
    entry: Option<Entry>,
    error: Option<FederationError>,
    reason: String,
}

/// What peer tasks remember between rounds.
#[derive(Default)]
struct PeerMemory {
    /// Per chain, the (size, head) whose checkpoint we last checked.
    checked: HashMap<OrgId, (u64, Option<EntryId>)>,
}

/// The federation side of a node: peer tasks, anchors, evidence and frozen chains.
pub struct Replication {
    ledger: Arc<Ledger>,
    writer: Writer,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    client: reqwest::Client,
    wakers: Vec<Arc<Notify>>,
    chain_locks: Mutex<HashMap<OrgId, Arc<tokio::sync::Mutex<()>>>>,
    evidence: Mutex<Vec<Evidence>>,
    /// Chain → the position of the first fork seen on it.
    frozen: Mutex<BTreeMap<OrgId, u64>>,
    /// Chain → size of our latest anchor of it.
    anchored: Mutex<HashMap<OrgId, u64>>,
    /// Chain → its newest agreeing anchor by any member (the web overview shows it).
    witnessed: Mutex<HashMap<OrgId, Witnessed>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The id of an evidence object: the entry id for an entry, else the BLAKE3 hash of the bytes.
fn object_id(bytes: &[u8]) -> String {
    match Entry::decode(bytes) {
        Ok(entry) => entry.id().to_string(),
        Err(_) => blake3::hash(bytes).to_hex().to_string(),
    }
}

impl Replication {
    /// Sets up replication over an opened ledger: reads back evidence, frozen chains and the
    /// latest anchors from this node's own chain. Tasks start with [`Replication::spawn`].
    pub fn new(
        ledger: Arc<Ledger>,
        writer: Writer,
        metrics: Arc<Metrics>,
        config: Arc<Config>,
    ) -> anyhow::Result<Arc<Self>> {
        // reqwest is built with rustls but without a crypto provider; install ring's (for
        // https peers) once per process. Plain http needs none, but building a client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(config.limits.request_timeout_ms);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("rmledger-node/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let replication = Self {
            wakers: config
                .peers
                .iter()
                .map(|_| Arc::new(Notify::new()))
                .collect(),
            ledger,
            writer,
            metrics,
            config,
            client,
            chain_locks: Mutex::new(HashMap::new()),
            evidence: Mutex::new(Vec::new()),
            frozen: Mutex::new(BTreeMap::new()),
            anchored: Mutex::new(HashMap::new()),
            witnessed: Mutex::new(HashMap::new()),
        };
        replication.read_own_chain()?;
        replication.read_back_anchors()?;
        Ok(Arc::new(replication))
    }

    /// Folds our own chain's `ForkReported` (evidence, frozen chains) and `Anchor` entries.
    fn read_own_chain(&self) -> anyhow::Result<()> {
        let store = self.store();
        let own = self.ledger.org().clone();
        let size = store.chain_size(&own);
        let mut from = 0;
        while from < size {
            let page = store.entries(&own, from, 1000)?;
            if page.is_empty() {
                break;
            }
            from += page.len() as u64;
            for bytes in page {
                let entry = Entry::decode(&bytes)?;
                match entry.record() {
                    Record::ForkReported(report) => {
                        self.remember_evidence(report, entry.time_unix_ms());
                    }
                    Record::Anchor(anchor) => {
                        let mut anchored = lock(&self.anchored);
                        let size = anchored.entry(anchor.chain.clone()).or_default();
                        *size = (*size).max(anchor.size);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Reads back the anchors among the newest [`ANCHOR_READBACK`] entries of every chain,
    /// keeping those that agree with the chain they name.
    fn read_back_anchors(&self) -> anyhow::Result<()> {
        let store = self.store();
        for info in store.chains() {
            let from = info.size.saturating_sub(ANCHOR_READBACK);
            let mut next = from;
            while next < info.size {
                let page = store.entries(&info.chain, next, 1000)?;
                if page.is_empty() {
                    break;
                }
                next += page.len() as u64;
                for bytes in page {
                    let entry = Entry::decode(&bytes)?;
                    if let Record::Anchor(anchor) = entry.record()
                        && anchor.size > 0
                        && anchor.size <= store.chain_size(&anchor.chain)
                        && store.root(&anchor.chain, anchor.size).ok() == Some(anchor.root)
                    {
                        self.note_witnessed(
                            &anchor.chain,
                            anchor.size,
                            entry.chain(),
                            entry.time_unix_ms(),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps `anchor` as its chain's newest witness if it names a larger size (or the same
    /// size later) than the one held.
    fn note_witnessed(&self, chain: &OrgId, size: u64, witness: &OrgId, time_unix_ms: u64) {
        let mut witnessed = lock(&self.witnessed);
        let newer = witnessed
            .get(chain)
            .is_none_or(|held| (size, time_unix_ms) > (held.size, held.time_unix_ms));
        if newer {
            witnessed.insert(
                chain.clone(),
                Witnessed {
                    witness: witness.clone(),
                    size,
                    time_unix_ms,
                },
            );
        }
    }

    /// The newest anchor of `chain` that agrees with our copy of it.
    pub fn last_anchor(&self, chain: &OrgId) -> Option<Witnessed> {
        lock(&self.witnessed).get(chain).cloned()
    }

    fn remember_evidence(&self, report: &ForkReported, detected_at: u64) -> bool {
        let mut evidence = lock(&self.evidence);
        if evidence
            .iter()
            .any(|e| e.chain == report.chain && e.seq == report.seq && e.kind == report.kind)
        {
            return false;
        }
        evidence.push(Evidence {
            chain: report.chain.clone(),
            seq: report.seq,
            kind: report.kind,
            first: hex(&report.first.0),
            second: hex(&report.second.0),
            first_id: object_id(&report.first.0),
            second_id: object_id(&report.second.0),
            detected_at,
        });
        drop(evidence);
        if &report.chain != self.ledger.org() {
            let mut frozen = lock(&self.frozen);
            frozen.entry(report.chain.clone()).or_insert(report.seq);
            self.metrics.set_frozen(report.chain.as_str());
        }
        true
    }

    /// Every piece of evidence this node holds.
    pub fn evidence(&self) -> Vec<Evidence> {
        lock(&self.evidence).clone()
    }

    /// Chains frozen past a fork, with the fork's position.
    pub fn frozen(&self) -> BTreeMap<OrgId, u64> {
        lock(&self.frozen).clone()
    }

    fn is_frozen(&self, chain: &OrgId) -> bool {
        lock(&self.frozen).contains_key(chain)
    }

    /// Wakes every peer task for an immediate pull (`POST /v1/notify`).
    pub fn notify(&self) {
        for waker in &self.wakers {
            waker.notify_one();
        }
    }

    fn store(&self) -> &Arc<Store> {
        self.ledger.store()
    }

    fn federation(&self) -> FederationId {
        self.ledger.genesis().id()
    }

    fn chain_lock(&self, chain: &OrgId) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.chain_locks)
            .entry(chain.clone())
            .or_default()
            .clone()
    }

    /// Starts one task per peer, the anchor task and the commit notifier. They end when
    /// `shutdown` becomes true.
    pub fn spawn(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        // Anchors stored before this start that name more of a chain than we held then.
        let this = self.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            this.check_all_waiting_anchors();
        }));
        for (index, peer) in self.config.peers.iter().enumerate() {
            let this = self.clone();
            let url = peer.url.trim_end_matches('/').to_owned();
            tasks.push(tokio::spawn(this.peer_loop(index, url, shutdown.clone())));
        }
        tasks.push(tokio::spawn(self.clone().anchor_loop(shutdown.clone())));
        if !self.config.peers.is_empty() {
            tasks.push(tokio::spawn(self.clone().notify_loop(shutdown)));
        }
        tasks
    }

    // -----------------------------------------------------------------------------------------
    // Peer tasks.

    async fn peer_loop(
        self: Arc<Self>,
        index: usize,
        url: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let base = Duration::from_millis(self.config.replication_interval_ms);
        let cap = Duration::from_millis(self.config.replication_max_backoff_ms);
        let mut failures: u32 = 0;
        let mut memory = PeerMemory::default();
        tracing::info!(peer = %url, "replicating from peer");
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ok = tokio::select! {
                ok = self.round(&url, &mut memory) => ok,
                _ = shutdown.changed() => return,
            };
            let delay = if ok {
                failures = 0;
                base
            } else {
                failures = failures.saturating_add(1);
                backoff(base, cap, failures)
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.wakers[index].notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round with a peer; `false` when anything failed or was refused (back off).
    async fn round(&self, url: &str, memory: &mut PeerMemory) -> bool {
        let rows = match self.list_chains(url).await {
            Ok(rows) => rows,
            Err(failure) => {
                self.failed(url, &failure);
                return false;
            }
        };
        let registrar = self.ledger.genesis().registrar().clone();
        let own = self.ledger.org().clone();
        let mut ok = true;
        let mut rows = rows;
        // The registrar's chain first: it holds the keys everything else is checked with.
        rows.sort_by_key(|row| (row.chain != registrar, row.chain.clone()));
        for row in rows {
            let ours = self.store().chain_size(&row.chain);
            self.metrics
                .set_lag(url, row.chain.as_str(), row.size.saturating_sub(ours));
            if self.is_frozen(&row.chain) {
                continue;
            }
            let result = if row.chain == own {
                self.check_own_chain(url, &row).await
            } else {
                self.sync_chain(url, &row, memory).await
            };
            if let Err(failure) = result {
                self.failed(url, &failure);
                ok = false;
            }
            let ours = self.store().chain_size(&row.chain);
            self.metrics
                .set_lag(url, row.chain.as_str(), row.size.saturating_sub(ours));
        }
        ok
    }

    /// Counts and logs a refusal or failure.
    fn failed(&self, url: &str, failure: &Failure) {
        self.metrics.observe_replication_error(url, failure.kind);
        let chain = failure.chain.as_ref().map(OrgId::as_str).unwrap_or("-");
        match failure.seq {
            Some(seq) => tracing::warn!(
                peer = %url, chain, seq, kind = failure.kind, reason = %failure.reason,
                "refused input from peer"
            ),
            None => tracing::warn!(
                peer = %url, chain, kind = failure.kind, reason = %failure.reason,
                "replication from peer failed"
            ),
        }
    }

    async fn list_chains(&self, url: &str) -> Result<Vec<ChainRow>, Failure> {
        let body = self
            .get(&format!("{url}/v1/chains"))
            .await?
            .ok_or_else(|| Failure::new("http_status", "GET /v1/chains: 404"))?;
        let rows: Vec<ChainRow> = serde_json::from_slice(&body)
            .map_err(|e| Failure::new("malformed", format!("GET /v1/chains: {e}")))?;
        let mut seen = HashSet::new();
        for row in &rows {
            if !seen.insert(row.chain.clone()) {
                return Err(Failure::new(
                    "malformed",
                    format!("GET /v1/chains lists {} twice", row.chain),
                ));
            }
        }
        Ok(rows)
    }

    /// GET with the size cap; `None` for 404.
    async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, Failure> {
        let max = self.config.limits.max_replication_body_bytes;
        let transport = |e: reqwest::Error| {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "http"
            };
            Failure::new(kind, format!("GET {url}: {e}"))
        };
        let mut response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Failure::new(
                "http_status",
                format!("GET {url}: status {status}"),
            ));
        }
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(Failure::new(
                "too_large",
                format!("GET {url}: body over {max} bytes"),
            ));
        }
        // Sized once from the declared length (capped above), not grown chunk by chunk.
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .map_or(0, |len| usize::try_from(len).unwrap_or(max).min(max)),
        );
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max {
                return Err(Failure::new(
                    "too_large",
                    format!("GET {url}: body over {max} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// A page of entries: the CBOR array of byte strings.
    async fn fetch_page(
        &self,
        url: &str,
        chain: &OrgId,
        from: u64,
        limit: usize,
    ) -> Result<Page, Failure> {
        // Our body limit goes along: the peer cuts the page short rather than send more.
        let max_bytes = self.config.limits.max_replication_body_bytes;
        let body = self
            .get(&format!(
                "{url}/v1/chains/{chain}/entries?from={from}&limit={limit}&max_bytes={max_bytes}"
            ))
            .await
            .map_err(|f| f.at(chain, Some(from)))?
            .unwrap_or_default();
        if body.is_empty() {
            return Ok(Page {
                body,
                items: Vec::new(),
            });
        }
        let items = byte_string_ranges(&body)
            .map_err(|reason| Failure::new("malformed", reason).at(chain, Some(from)))?;
        Ok(Page { body, items })
    }

    /// Brings `row.chain` up to the peer's size, probes for a fork when the peer's head differs
    /// from ours, and checks the peer's checkpoint.
    async fn sync_chain(
        &self,
        url: &str,
        row: &ChainRow,
        memory: &mut PeerMemory,
    ) -> Result<(), Failure> {
        let chain = &row.chain;
        if row.size > self.store().chain_size(chain) {
            self.catch_up(url, chain, row.size).await?;
        }
        if self.is_frozen(chain) {
            return Ok(());
        }
        let ours = self.store().chain_size(chain);
        if row.size == 0 || row.size > ours {
            return Ok(());
        }
        let our_head = entry_id(self.store(), chain, row.size - 1)?;
        if row.head != Some(our_head) {
            // The peer says its entry at size-1 is another one: see what it serves there.
            self.probe(url, chain, row.size - 1).await?;
            if self.is_frozen(chain) {
                return Ok(());
            }
        }
        let key = (row.size, row.head);
        if memory.checked.get(chain) != Some(&key) && self.check_checkpoint(url, chain).await? {
            memory.checked.insert(chain.clone(), key);
        }
        Ok(())
    }

    /// Fetches the peer's entry at `seq` (which we hold) and compares it with ours.
    async fn probe(&self, url: &str, chain: &OrgId, seq: u64) -> Result<(), Failure> {
        let page = self.fetch_page(url, chain, seq, 1).await?;
        if page.is_empty() {
            return Ok(());
        }
        let first = Page::single(page.get(0).to_vec());
        self.apply_page(url, chain, first).await.map(|_| ())
    }

    async fn catch_up(&self, url: &str, chain: &OrgId, target: u64) -> Result<(), Failure> {
        let limit = self.config.limits.max_page_entries;
        // Four stages overlap: page k+2 downloads (and starts decoding once it has), page k+1
        // is decoded and its signatures checked on every core, page k is checked in order against the tip page k-1 leaves
        // behind (chain links, time; on the registrar's chain, authorisation and signatures
        // against the membership as it grows), and page k-1 is written and fsync'd on a
        // blocking thread. Page k is stored only after page k-1 is durable, so the chain is
        // stored strictly in order and nothing unverified is stored. The chain lock is held
        // throughout, so no other peer task stores this chain meanwhile.
        let chain_lock = self.chain_lock(chain);
        let guard = chain_lock.lock().await;
        let store = self.store().clone();
        let start = store.chain_size(chain);
        let registrar = chain == self.ledger.genesis().registrar();
        let mut tip = current_tip(&store, self.federation(), chain)?;
        // The registrar's chain changes membership: the next page is checked against the
        // membership the previous one leaves behind, which is not committed yet.
        let mut carried: Option<Membership> = None;
        let mut storing: Option<Storing> = None;
        // The next page, being decoded: where it starts.
        let mut ahead: Option<(u64, Decoding)> = None;
        let mut from = start;
        let outcome = loop {
            if from >= target || self.is_frozen(chain) {
                break Ok(true);
            }
            let decoding = match ahead.take() {
                Some((at, decoding)) if at == from => decoding,
                _ => match self.fetch_page(url, chain, from, limit).await {
                    Ok(page) if page.is_empty() => break Ok(true),
                    Ok(page) => self.start_decoding(page, registrar),
                    Err(failure) => break Err(failure),
                },
            };
            // The next page downloads while this one is decoded, and starts decoding as soon
            // as it has arrived, even while this one is still being decoded: the cores stay
            // busy through the ordered check and the store, and through the end of this
            // page's decoding, when fewer runs are left than there are cores.
            let after = from + decoding.len as u64;
            let fetch_ahead = async {
                if after >= target {
                    return None;
                }
                match self.fetch_page(url, chain, after, limit).await {
                    Ok(page) if !page.is_empty() => Some(self.start_decoding(page, registrar)),
                    // Fetched again at the top of the loop, where a failure counts.
                    _ => None,
                }
            };
            let (checked, next) = tokio::join!(decoding.task, fetch_ahead);
            if let Some(next) = next {
                ahead = Some((after, next));
            }
            let checked = match checked {
                Ok(checked) => checked,
                Err(e) => break Err(Failure::new("internal", format!("decode task: {e}"))),
            };
            let membership = match carried.take() {
                Some(membership) => membership,
                None => self.ledger.membership().clone(),
            };
            let job = PageJob {
                store: store.clone(),
                chain: chain.clone(),
                tip: tip.clone(),
                membership,
                registrar,
                checked,
                unstored: storing.as_ref().map(|s| s.batch.clone()),
                max_time: now_unix_ms().saturating_add(self.config.limits.max_clock_skew_ms),
            };
            let verdict = tokio::task::spawn_blocking(move || job.run()).await;
            // The previous page must be durable before this one is stored.
            if let Some(previous) = storing.take()
                && let Err(failure) = self.finish_store(url, chain, previous).await
            {
                break Err(failure);
            }
            let verdict = match verdict {
                Ok(verdict) => verdict,
                Err(e) => break Err(Failure::new("internal", format!("verify task: {e}"))),
            };
            tip = verdict.tip;
            if registrar {
                carried = Some(verdict.membership);
            }
            if !verdict.accepted.is_empty() {
                storing = Some(self.start_store(verdict.accepted));
            }
            if let Some(stop) = verdict.stop {
                if let Some(last) = storing.take()
                    && let Err(failure) = self.finish_store(url, chain, last).await
                {
                    break Err(failure);
                }
                break self.stopped(url, chain, stop);
            }
            if tip.size <= from {
                break Ok(true);
            }
            from = tip.size;
        };
        // A page still decoding is not wanted any more (it ends on its own).
        drop(ahead);
        let outcome = match storing.take() {
            Some(last) => match self.finish_store(url, chain, last).await {
                Ok(()) => outcome,
                Err(failure) => Err(failure),
            },
            None => outcome,
        };
        drop(guard);
        let now = store.chain_size(chain);
        if now > start {
            tracing::info!(
                peer = %url, %chain, from = start, to = now, peer_size = target,
                "caught up"
            );
        }
        if let Err(failure) = outcome {
            // A broken link at the first new position may mean the peer holds another branch:
            // look at its entry at our last position before calling it hostile.
            if failure.kind == "broken_link" && failure.seq == Some(now) && now > 0 {
                self.probe(url, chain, now - 1).await?;
            }
            return Err(failure);
        }
        Ok(())
    }

    /// Checks one page (a probe) and stores what passes. `Ok(false)` when it stopped early
    /// without a refusal (waiting for a key, or a fork, which is reported); `Err` for a refusal.
    async fn apply_page(&self, url: &str, chain: &OrgId, page: Page) -> Result<bool, Failure> {
        let chain_lock = self.chain_lock(chain);
        let _guard = chain_lock.lock().await;
        let store = self.store().clone();
        let registrar = chain == self.ledger.genesis().registrar();
        let membership = self.ledger.membership().clone();
        let tip = current_tip(&store, self.federation(), chain)?;
        let owned = chain.clone();
        let max_time = now_unix_ms().saturating_add(self.config.limits.max_clock_skew_ms);
        let verdict = tokio::task::spawn_blocking(move || {
            let checked = decode_page(&page, (!registrar).then_some(&membership));
            PageJob {
                tip,
                store,
                chain: owned,
                membership,
                registrar,
                checked,
                unstored: None,
                max_time,
            }
            .run()
        })
        .await
        .map_err(|e| Failure::new("internal", format!("verify task: {e}")))?;
        if !verdict.accepted.is_empty() {
            let storing = self.start_store(verdict.accepted);
            self.finish_store(url, chain, storing).await?;
        }
        match verdict.stop {
            None => Ok(true),
            Some(stop) => self.stopped(url, chain, stop),
        }
    }

    /// Starts decoding a page (and, off the registrar's chain, checking its signatures) on the
    /// blocking pool, on every core ([`SharedPage::work`]). The pool's threads live on between
    /// pages, so their allocator caches stay warm (a thread started per page began every page
    /// on fresh memory, and page-faulted it in).
    fn start_decoding(&self, page: Page, registrar: bool) -> Decoding {
        let membership = (!registrar).then(|| self.ledger.membership().clone());
        let len = page.len();
        let threads = decoding_threads(len, membership.is_some());
        let shared = Arc::new(SharedPage {
            page,
            membership,
            next: std::sync::atomic::AtomicUsize::new(0),
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || shared.work())
            })
            .collect();
        let task = tokio::spawn(async move {
            let mut runs = Vec::new();
            for worker in workers {
                // A worker that failed would leave a hole in the page: fail the whole page
                // instead (catching up reports it as an internal failure and stores nothing
                // of this page).
                match worker.await {
                    Ok(done) => runs.extend(done),
                    Err(e) => panic!("a decoding worker failed: {e}"),
                }
            }
            in_page_order(runs)
        });
        Decoding { len, task }
    }

    /// Starts storing checked entries (one append, one fsync) on a blocking thread.
    fn start_store(&self, entries: Vec<Entry>) -> Storing {
        let batch = Arc::new(Batch {
            entries,
            checkpoints: Vec::new(),
        });
        let store = self.store().clone();
        let task = {
            let batch = batch.clone();
            tokio::task::spawn_blocking(move || store.append(&batch))
        };
        Storing { batch, task }
    }

    /// Waits for a store to be durable, then publishes its entries: the ledger's state, the
    /// metrics, and the anchor checks.
    async fn finish_store(
        &self,
        url: &str,
        chain: &OrgId,
        storing: Storing,
    ) -> Result<(), Failure> {
        let Storing { batch, task } = storing;
        let result = task
            .await
            .map_err(|e| Failure::new("internal", format!("append task: {e}")))?;
        if let Err(e) = result {
            tracing::error!(%chain, error = %e, "storing replicated entries failed");
            return Err(Failure::new("storage", e.to_string()).at(chain, None));
        }
        // Every entry stored: this is where per-entry derived state is updated.
        self.ledger.committed(&batch.entries);
        self.metrics.observe_replicated(batch.entries.len());
        tracing::debug!(peer = %url, %chain, entries = batch.entries.len(), "stored replicated entries");
        self.after_store(&batch.entries);
        Ok(())
    }

    /// What a page that stopped early means: `Ok(false)` for waiting (a key not known yet) and
    /// for a fork (reported here), `Err` for a refusal.
    fn stopped(&self, url: &str, chain: &OrgId, stop: Stop) -> Result<bool, Failure> {
        match stop {
            Stop::Wait { seq, reason } => {
                tracing::info!(
                    peer = %url, %chain, seq, reason = %reason,
                    "entry signed by a key not known yet; will retry after the registrar's chain catches up"
                );
                Ok(false)
            }
            Stop::Refused(failure) => Err(failure),
            Stop::Fork { ours, theirs } => {
                let seq = theirs.seq();
                self.report(
                    url,
                    EvidenceKind::Entries,
                    chain,
                    seq,
                    ours,
                    theirs.bytes().to_vec(),
                );
                Ok(false)
            }
        }
    }

    /// Fetches and checks the peer's checkpoint of `chain`; stores it when it is newer and
    /// consistent, reports it when it is validly signed and inconsistent.
    /// `Ok(false)` when the peer has none or it could not be judged yet.
    async fn check_checkpoint(&self, url: &str, chain: &OrgId) -> Result<bool, Failure> {
        let Some(bytes) = self
            .get(&format!("{url}/v1/chains/{chain}/checkpoint"))
            .await
            .map_err(|f| f.at(chain, None))?
        else {
            return Ok(false);
        };
        let refuse = |kind, reason: String| Failure::new(kind, reason).at(chain, None);
        let checkpoint = Checkpoint::decode(&bytes)
            .map_err(|e| refuse("checkpoint_decode", format!("checkpoint: {e}")))?;
        let body = checkpoint.body().clone();
        if body.federation != self.federation() || &body.chain != chain {
            return Err(refuse(
                "checkpoint_mismatch",
                format!(
                    "checkpoint is of {} in federation {}, asked for {chain}",
                    body.chain, body.federation
                ),
            ));
        }
        if let Err(reason) = self.ledger.check_checkpoint_signature(&checkpoint) {
            if self.ledger.membership().key(&checkpoint.kid()).is_none() {
                tracing::info!(peer = %url, %chain, reason = %reason, "checkpoint signed by a key not known yet");
                return Ok(false);
            }
            return Err(refuse("checkpoint_signature", reason));
        }
        let chain_lock = self.chain_lock(chain);
        let guard = chain_lock.lock().await;
        let store = self.store().clone();
        let ours = store.chain_size(chain);
        if body.size > ours {
            return Ok(false); // Checked once we hold that much.
        }
        let root = store
            .root(chain, body.size)
            .map_err(|e| Failure::new("storage", e.to_string()))?;
        let head = entry_id(&store, chain, body.size - 1)?;
        // The certificate map we rebuilt for the chain must have the root the checkpoint signs.
        let certs = self
            .ledger
            .cert_maps()
            .root_at(&store, chain, body.size)
            .map_err(|e| Failure::new("storage", e.to_string()))?;
        if root != body.root || head != body.head || certs != body.certs {
            let latest = store.latest_checkpoint(chain).ok().flatten();
            let first = match latest {
                Some(l) if l.body().size == body.size => l.bytes().to_vec(),
                _ => store
                    .entry(chain, body.size - 1)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            };
            drop(guard);
            tracing::warn!(
                peer = %url, %chain, size = body.size, signed_root = %body.root, our_root = %root,
                signed_certs = %body.certs, our_certs = %certs,
                "validly signed checkpoint contradicts the chain we hold (root, head or certificate map)"
            );
            self.report(
                url,
                EvidenceKind::Checkpoints,
                chain,
                body.size,
                first,
                bytes,
            );
            return Ok(true);
        }
        if chain == self.ledger.org() {
            return Ok(true);
        }
        let newer = match store.latest_checkpoint(chain) {
            Ok(Some(latest)) => {
                (body.size, body.time_unix_ms) > (latest.body().size, latest.body().time_unix_ms)
            }
            _ => true,
        };
        if newer {
            let batch = Batch {
                entries: Vec::new(),
                checkpoints: vec![checkpoint],
            };
            tokio::task::spawn_blocking(move || store.append(&batch))
                .await
                .map_err(|e| Failure::new("internal", e.to_string()))?
                .map_err(|e| Failure::new("storage", e.to_string()))?;
        }
        Ok(true)
    }

    /// Our own chain as a peer lists it: we never take entries of it, but a different,
    /// validly signed entry at one of our positions is evidence that our key signed twice.
    async fn check_own_chain(&self, url: &str, row: &ChainRow) -> Result<(), Failure> {
        let chain = &row.chain;
        let ours = self.store().chain_size(chain);
        if row.size > ours {
            return Err(Failure::new(
                "own_chain_ahead",
                format!(
                    "the peer lists {} entries of this node's own chain, which has {ours}; not taken (only this node writes it)",
                    row.size
                ),
            )
            .at(chain, Some(ours)));
        }
        if row.size == 0 {
            return Ok(());
        }
        let seq = row.size - 1;
        if row.head == Some(entry_id(self.store(), chain, seq)?) {
            return Ok(());
        }
        let page = self.fetch_page(url, chain, seq, 1).await?;
        if page.is_empty() {
            return Ok(());
        }
        let bytes = page.get(0).to_vec();
        let theirs = Entry::decode(&bytes)
            .map_err(|e| Failure::new("decode", e.to_string()).at(chain, Some(seq)))?;
        let ours_bytes = self
            .store()
            .entry(chain, theirs.seq())
            .map_err(|e| Failure::new("storage", e.to_string()))?;
        let Some(ours_bytes) = ours_bytes else {
            return Err(
                Failure::new("own_chain_ahead", "entry beyond our own chain")
                    .at(chain, Some(theirs.seq())),
            );
        };
        if ours_bytes == bytes || theirs.chain() != chain {
            return Ok(());
        }
        self.ledger
            .membership()
            .verify_entry(&theirs)
            .map_err(|e| federation_failure(&e).at(chain, Some(theirs.seq())))?;
        tracing::error!(
            peer = %url, %chain, seq = theirs.seq(),
            "a peer serves a different, validly signed entry of THIS node's chain: the organisation's key may be compromised"
        );
        self.report(
            url,
            EvidenceKind::Entries,
            chain,
            theirs.seq(),
            ours_bytes,
            bytes,
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Evidence.

    /// Keeps evidence, freezes the chain (not our own), counts, logs and appends a
    /// `ForkReported` to our own chain. Reporting the same (chain, position, kind) again does
    /// nothing.
    fn report(
        &self,
        url: &str,
        kind: EvidenceKind,
        chain: &OrgId,
        seq: u64,
        first: Vec<u8>,
        second: Vec<u8>,
    ) {
        let record = ForkReported {
            seq,
            kind,
            chain: chain.clone(),
            first: Blob(first),
            second: Blob(second),
        };
        if !self.remember_evidence(&record, now_unix_ms()) {
            return;
        }
        self.metrics.observe_fork(None);
        tracing::warn!(
            peer = %url, %chain, seq, kind = ?kind,
            "FORK: two validly signed objects contradict each other; evidence kept, chain frozen (never resolved automatically)"
        );
        self.metrics.observe_replication_error(url, "fork");
        let writer = self.writer.clone();
        let chain = chain.clone();
        tokio::spawn(async move {
            match writer
                .submit(OPERATOR_REPLICATION.into(), Record::ForkReported(record))
                .await
            {
                Ok(appended) => {
                    tracing::warn!(%chain, seq, entry = %appended.id, "fork reported on our chain")
                }
                Err(e) => tracing::error!(%chain, seq, error = %e, "could not append ForkReported"),
            }
        });
    }

    /// After entries were stored: check the anchors among them that name a size we hold, then
    /// the anchors waiting for the chain these entries grew.
    fn after_store(&self, entries: &[Entry]) {
        let store = self.store();
        // The size of the chain the previous anchor named: a witness's anchors come in runs
        // naming one chain. Read after the store, it is at least the size the index judged
        // each anchor by, so every anchor that did not wait there is checked here.
        let mut held: Option<(&OrgId, u64)> = None;
        for entry in entries {
            let Record::Anchor(anchor) = entry.record() else {
                continue;
            };
            let size = match held {
                Some((chain, size)) if *chain == anchor.chain => size,
                _ => {
                    let size = store.chain_size(&anchor.chain);
                    held = Some((&anchor.chain, size));
                    size
                }
            };
            if anchor.size > 0 && anchor.size <= size {
                // Not in the index (it named a size held when it was stored): judge it now.
                let reference = AnchorRef {
                    chain: anchor.chain.clone(),
                    size: anchor.size,
                    root: anchor.root,
                    witness: entry.chain().clone(),
                    seq: entry.seq(),
                };
                self.check_anchor(&reference, Some(entry.bytes()));
            }
        }
        if let Some(chain) = entries.first().map(Entry::chain) {
            self.check_waiting_anchors(chain);
        }
    }

    /// Checks the stored anchors of `chain` that named more of it than we held when they
    /// arrived, now that we hold enough. They wait in the store's index, not in memory, so
    /// anchors stored before a restart are checked too.
    fn check_waiting_anchors(&self, chain: &OrgId) {
        const CLAIM: usize = 1000;
        let store = self.store();
        loop {
            let size = store.chain_size(chain);
            let waiting = match store.unchecked_anchors(chain, size, CLAIM) {
                Ok(waiting) => waiting,
                Err(e) => {
                    tracing::error!(%chain, error = %e, "could not read the anchors waiting for this chain");
                    return;
                }
            };
            let count = waiting.len();
            let mut judged = Vec::with_capacity(count);
            let mut complete = true;
            for reference in waiting {
                if !self.check_anchor(&reference, None) {
                    complete = false;
                    break;
                }
                judged.push(reference);
            }
            if let Err(e) = store.anchors_checked(chain, &judged) {
                tracing::error!(%chain, error = %e, "could not mark anchors checked");
                return;
            }
            if !complete || count < CLAIM {
                return;
            }
        }
    }

    /// Checks the anchors waiting in the index for every chain we hold (at start-up: the
    /// anchors that arrived before the chain they name had caught up, before a restart).
    fn check_all_waiting_anchors(&self) {
        for info in self.store().chains() {
            self.check_waiting_anchors(&info.chain);
        }
    }

    /// An anchor must agree with our copy of the chain it names; the caller made sure we hold
    /// that much. `entry` is the anchor entry's bytes when the caller has them (else they are
    /// read back for the evidence). Returns whether the anchor was judged (agreeing, or
    /// reported as evidence); `false` when our side could not be read, to try again later.
    fn check_anchor(&self, anchor: &AnchorRef, entry: Option<&[u8]>) -> bool {
        let store = self.store();
        let root = match store.root(&anchor.chain, anchor.size) {
            Ok(root) => root,
            Err(e) => {
                tracing::error!(chain = %anchor.chain, size = anchor.size, error = %e, "could not compute a root to check an anchor");
                return false;
            }
        };
        if root == anchor.root {
            let time = match entry {
                Some(bytes) => Entry::decode(bytes).ok().map(|e| e.time_unix_ms()),
                None => read_entry(store, &anchor.witness, anchor.seq)
                    .ok()
                    .map(|e| e.time_unix_ms()),
            };
            if let Some(time) = time {
                self.note_witnessed(&anchor.chain, anchor.size, &anchor.witness, time);
            }
            return true;
        }
        let entry = match entry {
            Some(bytes) => bytes.to_vec(),
            None => match store.entry(&anchor.witness, anchor.seq) {
                Ok(Some(bytes)) => bytes,
                _ => {
                    tracing::error!(witness = %anchor.witness, seq = anchor.seq, "an indexed anchor entry could not be read");
                    return false;
                }
            },
        };
        let second = match store.latest_checkpoint(&anchor.chain) {
            Ok(Some(c)) => c.bytes().to_vec(),
            _ => store
                .entry(&anchor.chain, anchor.size - 1)
                .ok()
                .flatten()
                .unwrap_or_default(),
        };
        let witness = &anchor.witness;
        tracing::warn!(
            witness = %witness, seq = anchor.seq, chain = %anchor.chain, size = anchor.size,
            anchored_root = %anchor.root, our_root = %root,
            "anchor contradicts the chain we hold"
        );
        self.report(
            &format!("anchor by {witness}"),
            EvidenceKind::Anchor,
            &anchor.chain,
            anchor.size,
            entry,
            second,
        );
        true
    }

    // -----------------------------------------------------------------------------------------
    // Anchors and notifications.

    async fn anchor_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.config.anchor_interval_seconds);
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            self.anchor_round().await;
        }
    }

    /// Anchors each chain this node witnesses that changed since our last anchor of it.
    pub async fn anchor_round(&self) {
        let own = self.ledger.org().clone();
        let targets: Vec<OrgId> = {
            let membership = self.ledger.membership();
            let Some(me) = membership.member(&own) else {
                return;
            };
            if me.has_role(Role::Institute) {
                self.store()
                    .chains()
                    .into_iter()
                    .map(|c| c.chain)
                    .filter(|c| c != &own)
                    .collect()
            } else {
                let mut targets: Vec<OrgId> = membership
                    .members()
                    .filter(|m| m.has_role(Role::Institute) || &m.org == membership.registrar())
                    .map(|m| m.org.clone())
                    .filter(|c| c != &own)
                    .collect();
                targets.sort();
                targets
            }
        };
        for chain in targets {
            let store = self.store();
            let size = store.chain_size(&chain);
            let last = lock(&self.anchored).get(&chain).copied().unwrap_or(0);
            if size <= last || !has_content_since(store, &chain, last, size) {
                continue;
            }
            let Ok(root) = store.root(&chain, size) else {
                continue;
            };
            let anchor = Anchor {
                root,
                size,
                chain: chain.clone(),
            };
            match self
                .writer
                .submit(OPERATOR_ANCHOR.into(), Record::Anchor(anchor.clone()))
                .await
            {
                Ok(appended) => {
                    lock(&self.anchored).insert(chain.clone(), size);
                    let time = read_entry(store, &own, appended.seq)
                        .map_or_else(|_| now_unix_ms(), |entry| entry.time_unix_ms());
                    self.note_witnessed(&anchor.chain, anchor.size, &own, time);
                    self.metrics.observe_anchor();
                    tracing::info!(%chain, size, %root, seq = appended.seq, "anchored");
                }
                Err(e) => tracing::debug!(%chain, error = %e, "anchor not written"),
            }
        }
    }

    /// Tells every peer, fire-and-forget, after each commit of our own chain.
    async fn notify_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut commits = self.ledger.subscribe_own_commits();
        loop {
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
            commits.borrow_and_update();
            for peer in &self.config.peers {
                let request = self
                    .client
                    .post(format!("{}/v1/notify", peer.url.trim_end_matches('/')))
                    .timeout(NOTIFY_TIMEOUT)
                    .json(&serde_json::json!({"chain": self.ledger.org()}));
                tokio::spawn(async move {
                    let _ = request.send().await;
                });
            }
        }
    }
}

/// Exponential back-off after `failures` failed rounds, capped, with ±25 % jitter.
fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    let factor = 1u64 << failures.min(16);
    let millis = u64::try_from(base.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(factor)
        .min(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX));
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    // 0.75 ..= 1.25
    let jitter = 750 + u64::from(u16::from_le_bytes(random)) * 500 / 65535;
    Duration::from_millis(millis.saturating_mul(jitter) / 1000)
}

/// Whether `chain` has an entry other than an anchor among `last..size` (looking back at most
/// [`ANCHOR_LOOKBACK`] entries; beyond that, assume so).
fn has_content_since(store: &Store, chain: &OrgId, last: u64, size: u64) -> bool {
    let stop = last.max(size.saturating_sub(ANCHOR_LOOKBACK));
    for seq in (stop..size).rev() {
        match read_entry(store, chain, seq) {
            Ok(entry) if matches!(entry.record(), Record::Anchor(_)) => {}
            _ => return true,
        }
    }
    size - last > ANCHOR_LOOKBACK
}

fn entry_id(store: &Store, chain: &OrgId, seq: u64) -> Result<EntryId, Failure> {
    let bytes = store
        .entry(chain, seq)
        .map_err(|e| Failure::new("storage", e.to_string()))?
        .ok_or_else(|| Failure::new("storage", format!("{chain}/{seq} missing")))?;
    Entry::id_of(&bytes).map_err(|e| Failure::new("storage", format!("{chain}/{seq}: {e}")))
}

/// The tip of our copy of `chain`.
fn current_tip(
    store: &Store,
    federation: FederationId,
    chain: &OrgId,
) -> Result<ChainTip, Failure> {
    let mut tip = ChainTip::new(federation, chain.clone());
    let Some(info) = store.chain(chain) else {
        return Ok(tip);
    };
    if info.size > 0 {
        let last = read_entry(store, chain, info.size - 1)
            .map_err(|e| Failure::new("storage", e.to_string()))?;
        tip.size = info.size;
        tip.head = info.head;
        tip.last_time_unix_ms = last.time_unix_ms();
    }
    Ok(tip)
}

/// The metric kind of a chain rule broken.
fn chain_failure(e: &ChainError) -> Failure {
    let kind = match e {
        ChainError::WrongFederation { .. } => "wrong_federation",
        ChainError::WrongChain { .. } => "wrong_chain",
        ChainError::Gap { .. } => "gap",
        ChainError::BrokenLink { .. } => "broken_link",
        ChainError::TimeBackwards { .. } => "time_backwards",
        ChainError::TimeInFuture { .. } => "time_in_future",
        ChainError::Fork(_) => "fork",
    };
    Failure::new(kind, e.to_string())
}

/// The metric kind of an authorisation or signature failure.
fn federation_failure(e: &FederationError) -> Failure {
    let kind = match e {
        FederationError::Signature(_) => "signature",
        FederationError::UnknownKey { .. } => "unknown_key",
        FederationError::KeyNotYetValid { .. } => "key_not_yet_valid",
        FederationError::KeyNotChainOwner { .. } => "key_not_chain_owner",
        FederationError::KeyRevoked { .. } => "key_revoked",
        FederationError::MemberSuspended { .. } => "member_suspended",
        FederationError::NotAMember { .. } => "not_a_member",
        FederationError::RoleNotAllowed { .. } => "role_not_allowed",
        FederationError::WrongFederation { .. } => "wrong_federation",
        _ => "membership",
    };
    Failure::new(kind, e.to_string())
}

/// Whether a verification failure means "not known yet" rather than "invalid".
fn is_wait(e: &FederationError) -> bool {
    matches!(
        e,
        FederationError::UnknownKey { .. } | FederationError::KeyNotYetValid { .. }
    )
}

/// Decodes one entry and, given a membership, authorises it against it and checks
/// its `verify_strict` signature, over one parse of the envelope
/// ([`Entry::decode_and_verify`]). The verdict is [`Membership::verify_entry`]'s: an entry the
/// membership does not authorise is refused for that reason, whatever its signature.
fn decode_and_verify(
    bytes: &[u8],
    membership: Option<&Membership>,
) -> Result<Entry, Box<Rejected>> {
    let undecodable = |e: rmledger_schema::entry::EntryError| {
        Box::new(Rejected {
            entry: None,
            error: None,
            reason: e.to_string(),
        })
    };
    let Some(membership) = membership else {
        return Entry::decode(bytes).map_err(undecodable);
    };
    let (entry, signature) = Entry::decode_and_verify(bytes, |kid, payload| {
        if payload.federation != membership.federation() {
            return None;
        }
        let (member, key) = membership.key(&kid)?;
        (member.org == payload.chain).then_some(key)
    })
    .map_err(undecodable)?;
    let verdict = match membership.authorise(&entry) {
        Err(e) => Err(e),
        Ok(_) => match signature {
            Some(result) => result.map_err(FederationError::Signature),
            // Authorised means the key was found for this chain: not reached, but never
            // accept an entry whose signature was not checked.
            None => membership.verify_entry(&entry),
        },
    };
    match verdict {
        Ok(()) => Ok(entry),
        Err(e) => Err(Box::new(Rejected {
            entry: Some(entry),
            reason: e.to_string(),
            error: Some(e),
        })),
    }
}

/// A page being decoded on the blocking pool: how many entries it has, and the task.
struct Decoding {
    len: usize,
    task: tokio::task::JoinHandle<Vec<Vec<Checked>>>,
}

/// A page shared by the threads decoding it ([`Replication::start_decoding`]).
struct SharedPage {
    page: Page,
    membership: Option<Membership>,
    /// The next entry no thread has claimed yet.
    next: std::sync::atomic::AtomicUsize,
}

impl SharedPage {
    /// Claims runs of [`VERIFY_CLAIM`] entries in turn until none is left, decoding each (and,
    /// given the membership, checking its authorisation and signature); returns the runs with
    /// where each starts. Threads that claim small runs in turn keep pace with each other when
    /// one of them is slowed by other work on its core (the previous page's ordered check and
    /// append, the download).
    fn work(&self) -> Vec<(usize, Vec<Checked>)> {
        let mut done = Vec::new();
        loop {
            let start = self
                .next
                .fetch_add(VERIFY_CLAIM, std::sync::atomic::Ordering::Relaxed);
            if start >= self.page.len() {
                return done;
            }
            let end = (start + VERIFY_CLAIM).min(self.page.len());
            let run: Vec<Checked> = (start..end)
                .map(|i| decode_and_verify(self.page.get(i), self.membership.as_ref()))
                .collect();
            done.push((start, run));
        }
    }
}

/// How many threads decode a page of `len` entries: every core when the signatures are
/// checked there (off the registrar's chain) and the page is large enough to share.
fn decoding_threads(len: usize, verifying: bool) -> usize {
    let cores = crate::cores().clamp(1, 8);
    if verifying && len >= 2 * VERIFY_CLAIM {
        cores
    } else {
        1
    }
}

/// The runs of a page in page order (not copied into one vector: the checking walks them).
fn in_page_order(mut runs: Vec<(usize, Vec<Checked>)>) -> Vec<Vec<Checked>> {
    runs.sort_unstable_by_key(|(start, _)| *start);
    runs.into_iter().map(|(_, run)| run).collect()
}

/// Decodes every entry of a page on this thread and, given the membership, checks its
/// authorisation and `verify_strict` signature (a probe's page; catching up decodes on several
/// threads, [`Replication::start_decoding`]).
fn decode_page(page: &Page, membership: Option<&Membership>) -> Vec<Vec<Checked>> {
    vec![
        (0..page.len())
            .map(|i| decode_and_verify(page.get(i), membership))
            .collect(),
    ]
}

/// A page's entries being written and fsync'd on a blocking thread.
struct Storing {
    batch: Arc<Batch>,
    task: tokio::task::JoinHandle<Result<(), crate::storage::StorageError>>,
}

/// Everything checking one page needs, moved to a blocking thread.
struct PageJob {
    store: Arc<Store>,
    chain: OrgId,
    /// The chain as the store plus `unstored` leave it.
    tip: ChainTip,
    membership: Membership,
    registrar: bool,
    /// The page's entries decoded (and, off the registrar's chain, signature-checked), in
    /// page order ([`decode_page`]).
    checked: Vec<Vec<Checked>>,
    /// Entries checked and being written, not yet in the store: they follow the store's copy.
    unstored: Option<Arc<Batch>>,
    /// The latest entry time accepted (now + the allowed clock skew).
    max_time: u64,
}

/// One entry decoded (and, off the registrar's chain, signature-checked), or why not.
type Checked = Result<Entry, Box<Rejected>>;

/// Entries decoded and signature-checked per claim by one verifying thread.
const VERIFY_CLAIM: usize = 16;

impl PageJob {
    /// The bytes we hold at `seq` of the chain (stored or being stored).
    fn held(&self, seq: u64) -> Option<Vec<u8>> {
        if let Some(unstored) = &self.unstored
            && let Some(first) = unstored.entries.first().map(Entry::seq)
            && seq >= first
        {
            let index = usize::try_from(seq - first).ok()?;
            return unstored.entries.get(index).map(|e| e.bytes().to_vec());
        }
        self.store.entry(&self.chain, seq).ok().flatten()
    }

    /// Checks the decoded page against the tip ([`decode_page`] did the decoding and, off the
    /// registrar's chain, the signatures), in order: chain links, time and, for the registrar's
    /// chain, authorisation and signatures against the membership as it grows.
    fn run(mut self) -> Verdict {
        let checked = std::mem::take(&mut self.checked);
        let chain = self.chain.clone();
        let registrar = self.registrar;
        let mut accepted = Vec::with_capacity(checked.iter().map(Vec::len).sum());
        let stop = 'page: {
            for (index, result) in checked.into_iter().flatten().enumerate() {
                let entry = match result {
                    Ok(entry) => entry,
                    Err(rejected) => {
                        let Rejected {
                            entry,
                            error,
                            reason,
                        } = *rejected;
                        let seq = entry.as_ref().map(Entry::seq);
                        // An entry identical to one we hold is not news, whatever its key's
                        // state now.
                        if let Some(entry) = &entry
                            && entry.seq() < self.tip.size
                            && self.held(entry.seq()).as_deref() == Some(entry.bytes())
                        {
                            continue;
                        }
                        break 'page Some(match &error {
                            Some(e) if is_wait(e) => Stop::Wait {
                                seq: seq.unwrap_or(self.tip.size),
                                reason,
                            },
                            Some(e) => Stop::Refused(
                                federation_failure(e)
                                    .at(&chain, Some(seq.unwrap_or(self.tip.size + index as u64))),
                            ),
                            None => Stop::Refused(
                                Failure::new("decode", reason)
                                    .at(&chain, Some(seq.unwrap_or(self.tip.size + index as u64))),
                            ),
                        });
                    }
                };
                let refused = |failure: Failure| Some(Stop::Refused(failure));
                if (entry.chain() != &chain || entry.payload().federation != self.tip.federation)
                    && let Err(e) = self.tip.check_next(&entry, None)
                {
                    break 'page refused(chain_failure(&e).at(&chain, Some(entry.seq())));
                }
                if entry.seq() < self.tip.size {
                    let Some(ours) = self.held(entry.seq()) else {
                        break 'page refused(
                            Failure::new("storage", "entry missing").at(&chain, Some(entry.seq())),
                        );
                    };
                    if ours == entry.bytes() {
                        continue;
                    }
                    if registrar && let Err(e) = self.membership.verify_entry(&entry) {
                        break 'page refused(federation_failure(&e).at(&chain, Some(entry.seq())));
                    }
                    break 'page Some(Stop::Fork {
                        ours,
                        theirs: Box::new(entry),
                    });
                }
                if let Err(e) = self.tip.check_next(&entry, Some(self.max_time)) {
                    break 'page refused(chain_failure(&e).at(&chain, Some(entry.seq())));
                }
                if registrar {
                    if let Err(e) = self.membership.verify_entry(&entry) {
                        if is_wait(&e) {
                            break 'page Some(Stop::Wait {
                                seq: entry.seq(),
                                reason: e.to_string(),
                            });
                        }
                        break 'page refused(federation_failure(&e).at(&chain, Some(entry.seq())));
                    }
                    if let Err(e) = self.membership.apply(&entry) {
                        break 'page refused(
                            Failure::new("membership", e.to_string()).at(&chain, Some(entry.seq())),
                        );
                    }
                }
                self.tip.advance(&entry);
                accepted.push(entry);
            }
            None
        };
        Verdict {
            accepted,
            stop,
            tip: self.tip,
            membership: self.membership,
        }
    }
}

/// Decodes `GET /entries`: a definite-length CBOR array of byte strings.
pub fn decode_byte_strings(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    Ok(byte_string_ranges(bytes)?
        .into_iter()
        .map(|range| bytes[range].to_vec())
        .collect())
}

/// Where each byte string of a `GET /entries` body lies in it (see [`decode_byte_strings`]).
fn byte_string_ranges(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut pos = 0usize;
    let (major, count) = read_head(bytes, &mut pos)?;
    if major != 4 {
        return Err(format!("expected a CBOR array, found major type {major}"));
    }
    // Each element takes at least one byte: refuse counts the body cannot hold.
    if count > (bytes.len() - pos) as u64 {
        return Err(format!("array of {count} items in {} bytes", bytes.len()));
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (major, len) = read_head(bytes, &mut pos)?;
        if major != 2 {
            return Err(format!(
                "item {i}: expected a byte string, found major type {major}"
            ));
        }
        let len = usize::try_from(len).map_err(|_| format!("item {i}: length overflow"))?;
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("item {i}: truncated"))?;
        out.push(pos..end);
        pos = end;
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the array",
            bytes.len() - pos
        ));
    }
    Ok(out)
}

fn read_head(bytes: &[u8], pos: &mut usize) -> Result<(u8, u64), String> {
    let first = *bytes.get(*pos).ok_or("truncated CBOR")?;
    *pos += 1;
    let major = first >> 5;
    let info = first & 0x1f;
    let len = match info {
        0..=23 => return Ok((major, u64::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return Err(format!("unsupported CBOR length encoding {info}")),
    };
    let slice = bytes.get(*pos..*pos + len).ok_or("truncated CBOR length")?;
    *pos += len;
    let mut value = 0u64;
    for b in slice {
        value = (value << 8) | u64::from(*b);
    }
    Ok((major, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_string_arrays_decode_strictly() {
        assert_eq!(decode_byte_strings(&[0x80]).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            decode_byte_strings(&[0x82, 0x41, 1, 0x42, 2, 3]).unwrap(),
            vec![vec![1], vec![2, 3]]
        );
        assert!(decode_byte_strings(&[0x82, 0x41, 1]).is_err());
        assert!(decode_byte_strings(&[0x81, 0x41, 1, 0]).is_err());
        assert!(
            decode_byte_strings(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
        );
        assert!(decode_byte_strings(b"garbage").is_err());
        assert!(decode_byte_strings(&[]).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        let first = backoff(base, cap, 1);
        assert!(first >= Duration::from_millis(150) && first <= Duration::from_millis(250));
        let late = backoff(base, cap, 40);
        assert!(late <= Duration::from_millis(37_500) && late >= Duration::from_millis(22_500));
    }
}
