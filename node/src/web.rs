//! Server-rendered HTML pages for people: the certificate page a lab technician reaches by
//! scanning a bottle's QR label (`/c/{id}`), one unit's life (`/c/{id}/u/{serial}`), the
//! federation overview (`/`) and the node's findings (`/findings`), in Chinese or English.
//!
//! Pages are `maud` templates: everything interpolated is HTML-escaped, and ledger data is
//! never wrapped in `PreEscaped` (only the QR SVG, which this module generates). No script is
//! served, and the Content-Security-Policy forbids any. Handlers gather plain data from the
//! ledger (in a blocking task: the store is synchronous) and hand it to pure render functions,
//! which the unit tests call directly. Every string of the page's own is in [`i18n`].

pub mod i18n;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rmledger_schema::audit::AuditReport;
use rmledger_schema::date::Date;
use rmledger_schema::ids::{CertificateId, EntryId, FederationId, OrgId, TreeHash};
use rmledger_schema::lifecycle::{CertificateState, Status, UnitStage, UnitState};
use rmledger_schema::records::{
    AfterOpening, DocumentKind, EvidenceKind, PropertyValue, Record, RecordKind, Role, Severity,
    Uncertainty, Validity, ValueKind,
};
use rmledger_schema::serial::SerialSet;

use crate::api::{AppState, build_bundle};
use crate::append::now_unix_ms;
use crate::ledger::{Ledger, LedgerError, read_entry};
use crate::storage::StorageError;
use i18n::{Lang, Text};

/// The stylesheet served at `/static/style.css`.
pub const STYLESHEET: &str = include_str!("web/style.css");

/// No script may run, styles come from this node only; the QR code is inline SVG.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The overview lists at most this many certificates, and `/findings` at most this many.
const LIST_LIMIT: usize = 200;

/// A unique hex prefix at least this long names a certificate (`/c/{prefix}` redirects).
pub const MIN_ID_PREFIX: usize = 8;

// ---------------------------------------------------------------------------------------------
// Request context

/// What every page needs to know about its request: the language, whether it was chosen with
/// `?lang=` (then links keep it), the path (for the language switch) and the federation's
/// clock offset (for times).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    pub explicit: bool,
    pub path: String,
    pub utc_offset_minutes: i32,
}

impl Ctx {
    /// `?lang=zh|en` wins; otherwise `Accept-Language` (zh* → Chinese); otherwise English.
    pub fn new(headers: &HeaderMap, uri: &Uri, utc_offset_minutes: i32) -> Ctx {
        let chosen = uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("lang="))
                .find_map(Lang::from_query)
        });
        let lang = chosen.unwrap_or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .map_or(Lang::En, Lang::from_accept_language)
        });
        Ctx {
            lang,
            explicit: chosen.is_some(),
            path: uri.path().to_owned(),
            utc_offset_minutes,
        }
    }

    fn t(&self, text: Text) -> &'static str {
        self.lang.t(text)
    }

    /// A link to one of our pages that keeps an explicitly chosen language.
    fn link(&self, path: &str) -> String {
        if self.explicit {
            format!("{path}?lang={}", self.lang.code())
        } else {
            path.to_owned()
        }
    }

    /// This page in the other language.
    fn switch_link(&self) -> String {
        format!("{}?lang={}", self.path, self.lang.other().code())
    }

    /// "2026-01-01 08:01" in the federation's time zone.
    fn time(&self, time_unix_ms: u64) -> String {
        time_text(time_unix_ms, self.utc_offset_minutes)
    }

    /// The local date on which `time_unix_ms` falls.
    fn date(&self, time_unix_ms: u64) -> String {
        i64::try_from(time_unix_ms)
            .ok()
            .and_then(|ms| Date::from_unix_ms(ms, self.utc_offset_minutes).ok())
            .map_or_else(|| "?".into(), |d| d.to_string())
    }
}

/// "YYYY-MM-DD HH:MM" at `utc_offset_minutes`.
pub fn time_text(time_unix_ms: u64, utc_offset_minutes: i32) -> String {
    let seconds = i64::try_from(time_unix_ms / 1000).unwrap_or(i64::MAX / 2)
        + i64::from(utc_offset_minutes) * 60;
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let date =
        Date::from_days_since_unix_epoch(days).map_or_else(|_| "?".into(), |d| d.to_string());
    format!("{date} {:02}:{:02}", of_day / 3600, of_day % 3600 / 60)
}

/// "UTC+08:00".
pub fn offset_text(utc_offset_minutes: i32) -> String {
    let sign = if utc_offset_minutes < 0 { '-' } else { '+' };
    let minutes = utc_offset_minutes.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Percent-encodes one path segment (a serial may hold `/`, `?`, `#` or `%`).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Responses

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
            (header::VARY, HeaderValue::from_static("Accept-Language")),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// 404 with one of the [`i18n`] explanations.
    NotFound(Text),
    /// 500; the detail goes to the log, not to the page.
    Internal(String),
}

impl From<LedgerError> for PageError {
    fn from(e: LedgerError) -> Self {
        PageError::Internal(e.to_string())
    }
}

impl From<StorageError> for PageError {
    fn from(e: StorageError) -> Self {
        PageError::Internal(e.to_string())
    }
}

/// The page, or the error page in the request's language.
fn respond(ctx: &Ctx, page: Result<Markup, PageError>) -> Response {
    match page {
        Ok(markup) => html_response(StatusCode::OK, markup),
        Err(PageError::NotFound(why)) => not_found_response(ctx, why),
        Err(PageError::Internal(detail)) => {
            tracing::error!(error = %detail, path = %ctx.path, "web page failed");
            html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_page(ctx, "500", i18n::SERVER_ERROR),
            )
        }
    }
}

pub fn not_found_response(ctx: &Ctx, why: Text) -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        error_page(ctx, ctx.t(i18n::NOT_FOUND), why),
    )
}

/// Whether a request prefers HTML (a browser): the router's fallback then answers with the
/// HTML 404 page instead of the API's JSON error.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Runs a page's ledger reads off the async workers (the store is synchronous).
async fn blocking(page: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(page).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "web page task failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "the page failed\n").into_response()
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

pub async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The HTML 404 for unknown paths (see [`wants_html`]).
pub fn fallback_page(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Response {
    let ctx = Ctx::new(headers, uri, state.ledger.utc_offset_minutes());
    not_found_response(&ctx, i18n::NOT_FOUND_PAGE)
}

pub async fn home(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&headers, &uri, state.ledger.utc_offset_minutes());
    blocking(move || {
        let page = overview(&state).map(|view| overview_page(&ctx, &view));
        respond(&ctx, page)
    })
    .await
}

pub async fn findings(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&headers, &uri, state.ledger.utc_offset_minutes());
    blocking(move || {
        let page = state
            .audit
            .report(&state.ledger, now_unix_ms())
            .map_err(|e| PageError::Internal(e.to_string()))
            .map(|report| findings_page(&ctx, &report));
        respond(&ctx, page)
    })
    .await
}

pub async fn certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&headers, &uri, state.ledger.utc_offset_minutes());
    blocking(move || {
        let id = match resolve_certificate(&state.ledger, &id) {
            Ok(Resolved::Exact(id)) => id,
            Ok(Resolved::Prefix(id)) => return redirect(&ctx.link(&format!("/c/{id}"))),
            Err(e) => return respond(&ctx, Err(e)),
        };
        let url = page_url(&headers, state.config.listen, &format!("/c/{id}"));
        let page =
            certificate_view(&state.ledger, &id, url).map(|view| certificate_page(&ctx, &view));
        respond(&ctx, page)
    })
    .await
}

pub async fn unit(
    State(state): State<AppState>,
    Path((id, serial)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&headers, &uri, state.ledger.utc_offset_minutes());
    blocking(move || {
        let id = match resolve_certificate(&state.ledger, &id) {
            Ok(Resolved::Exact(id)) => id,
            Ok(Resolved::Prefix(id)) => {
                return redirect(&ctx.link(&format!("/c/{id}/u/{}", path_segment(&serial))));
            }
            Err(e) => return respond(&ctx, Err(e)),
        };
        let page = unit_view(&state.ledger, &id, &serial).map(|view| unit_page(&ctx, &view));
        respond(&ctx, page)
    })
    .await
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The absolute URL of one of our pages as the client reached us (the `Host` it used, when it
/// looks like a host name), for the QR code.
fn page_url(headers: &HeaderMap, listen: SocketAddr, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map_or_else(|| listen.to_string(), str::to_owned);
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    format!("{}://{host}{path}", if https { "https" } else { "http" })
}

// ---------------------------------------------------------------------------------------------
// Looking things up

/// A certificate named by its full id, or by a unique prefix (answered with a redirect).
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    Exact(CertificateId),
    Prefix(CertificateId),
}

pub fn resolve_certificate(ledger: &Ledger, text: &str) -> Result<Resolved, PageError> {
    let text = text.to_ascii_lowercase();
    if text.len() < MIN_ID_PREFIX || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(PageError::NotFound(i18n::BAD_ID));
    }
    if text.len() == 64 {
        let id = CertificateId::from_hex(&text).map_err(|_| PageError::NotFound(i18n::BAD_ID))?;
        return Ok(Resolved::Exact(id));
    }
    let mut matches = ledger
        .store()
        .all_certificates()?
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&text));
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(Resolved::Prefix(id)),
        (Some(_), Some(_)) => Err(PageError::NotFound(i18n::AMBIGUOUS_PREFIX)),
        (None, _) => Err(PageError::NotFound(i18n::NOT_FOUND_CERTIFICATE)),
    }
}

/// Organisation ids to member names.
fn member_names(ledger: &Ledger) -> BTreeMap<OrgId, String> {
    ledger
        .membership()
        .members()
        .map(|m| (m.org.clone(), m.name.clone()))
        .collect()
}

/// What the certificate page shows.
pub struct CertificateView {
    pub state: Arc<CertificateState>,
    pub status: Status,
    pub now_unix_ms: u64,
    pub names: BTreeMap<OrgId, String>,
    pub proof: Proof,
    /// The page's own absolute URL, which the QR code encodes.
    pub url: String,
}

/// What this node established about the certificate's proof bundle.
#[derive(Debug, Clone)]
pub enum Proof {
    Verified(ProofSummary),
    /// The bundle could not be built or did not verify (the reason).
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct ProofSummary {
    pub federation: FederationId,
    /// Entries of the certificate's life in the bundle, each proven.
    pub entries: usize,
    /// Entries this node stores about the certificate (some may be newer than a checkpoint).
    pub known: usize,
    /// The checkpoint of each member chain the bundle is complete as of.
    pub checkpoints: Vec<CheckpointLine>,
    /// Member chains this node holds no checkpoint of.
    pub unproven: Vec<OrgId>,
    /// Verified anchors: (witness chain, anchored chain, anchored size).
    pub anchors: Vec<(OrgId, OrgId, u64)>,
}

#[derive(Debug, Clone)]
pub struct CheckpointLine {
    pub chain: OrgId,
    pub size: u64,
    pub time_unix_ms: u64,
    pub root: TreeHash,
}

pub fn certificate_view(
    ledger: &Ledger,
    id: &CertificateId,
    url: String,
) -> Result<CertificateView, PageError> {
    let state = ledger
        .certificate(id)?
        .ok_or(PageError::NotFound(i18n::NOT_FOUND_CERTIFICATE))?;
    let now = now_unix_ms();
    Ok(CertificateView {
        status: state.status_at(now, ledger.utc_offset_minutes()),
        now_unix_ms: now,
        names: member_names(ledger),
        proof: proof_summary(ledger, id),
        state,
        url,
    })
}

/// Builds the very bundle `/v1/certificates/{id}/bundle` serves and verifies it against this
/// node's federation, so the page states only what was checked.
pub fn proof_summary(ledger: &Ledger, id: &CertificateId) -> Proof {
    let known = match ledger.store().certificate_events(id) {
        Ok(events) => events.len(),
        Err(e) => return Proof::Unavailable(e.to_string()),
    };
    let bundle = match build_bundle(ledger, id) {
        Ok(bundle) => bundle,
        Err(e) => return Proof::Unavailable(e.detail().to_owned()),
    };
    match bundle.verify(ledger.genesis().id()) {
        Ok(verified) => Proof::Verified(ProofSummary {
            federation: verified.genesis.id(),
            entries: verified.entries.len(),
            known,
            checkpoints: verified
                .checkpoints
                .values()
                .map(|c| CheckpointLine {
                    chain: c.body().chain.clone(),
                    size: c.body().size,
                    time_unix_ms: c.body().time_unix_ms,
                    root: c.body().root,
                })
                .collect(),
            unproven: verified.unproven_chains,
            anchors: verified.anchors,
        }),
        Err(e) => Proof::Unavailable(e.to_string()),
    }
}

/// What the unit page shows.
pub struct UnitView {
    pub state: Arc<CertificateState>,
    pub status: Status,
    pub unit: UnitState,
    pub names: BTreeMap<OrgId, String>,
    /// The entries that name this unit, with their timeline sentence and anomaly.
    pub events: Vec<UnitEvent>,
}

#[derive(Debug, Clone)]
pub struct UnitEvent {
    pub time_unix_ms: u64,
    pub chain: OrgId,
    pub kind: RecordKind,
    pub summary: String,
    pub anomaly: Option<String>,
}

pub fn unit_view(ledger: &Ledger, id: &CertificateId, serial: &str) -> Result<UnitView, PageError> {
    let state = ledger
        .certificate(id)?
        .ok_or(PageError::NotFound(i18n::NOT_FOUND_CERTIFICATE))?;
    let unit = state
        .unit(serial)
        .ok_or(PageError::NotFound(i18n::NOT_FOUND_UNIT))?
        .into_owned();
    let timeline: BTreeMap<EntryId, _> = state.timeline.iter().map(|t| (t.entry, t)).collect();
    let mut events = Vec::new();
    for (chain, seq) in ledger.store().certificate_events(id)? {
        let entry = read_entry(ledger.store(), &chain, seq)?;
        if !names_unit(entry.record(), serial) {
            continue;
        }
        let line = timeline.get(&entry.id());
        events.push(UnitEvent {
            time_unix_ms: entry.time_unix_ms(),
            chain: entry.chain().clone(),
            kind: entry.record().kind(),
            summary: line.map_or_else(String::new, |t| t.summary.clone()),
            anomaly: line.and_then(|t| t.anomaly.clone()),
        });
    }
    events.sort_by(|a, b| (a.time_unix_ms, &a.chain).cmp(&(b.time_unix_ms, &b.chain)));
    Ok(UnitView {
        status: state.status_at(now_unix_ms(), ledger.utc_offset_minutes()),
        names: member_names(ledger),
        unit,
        events,
        state,
    })
}

/// Whether a record is about the unit `serial` (its production included).
fn names_unit(record: &Record, serial: &str) -> bool {
    match record {
        Record::BatchRegistered(c) => c.units.contains(serial),
        Record::Shipped(r) => r.serials.contains(serial),
        Record::Received(r) => r.serials.contains(serial),
        Record::Disposed(r) => r.serials.contains(serial),
        Record::Opened(r) => r.serial == serial,
        Record::Used(r) => r.serial == serial,
        Record::ValueVerification(r) => r.sample.as_deref() == Some(serial),
        _ => false,
    }
}

/// One row of the overview's certificate list.
pub struct CertificateRow {
    pub id: CertificateId,
    pub code: String,
    pub batch: String,
    pub name: String,
    pub status: Status,
}

/// What the overview shows.
pub struct OverviewView {
    pub federation: FederationId,
    pub name: String,
    pub registrar: OrgId,
    pub this_node: OrgId,
    pub members: Vec<MemberRow>,
    pub chains: Vec<ChainRow>,
    pub evidence: Vec<ForkEvidence>,
    pub certificates: Vec<CertificateRow>,
    /// Certificates not listed past [`LIST_LIMIT`].
    pub more_certificates: usize,
}

pub struct MemberRow {
    pub org: OrgId,
    pub name: String,
    pub roles: Vec<Role>,
    pub suspended: bool,
}

pub struct ChainRow {
    pub chain: OrgId,
    pub size: u64,
    pub root: TreeHash,
    pub checkpoint: Option<(u64, u64)>,
    /// The newest anchor of this chain: (witness, anchored size, time).
    pub last_anchor: Option<(OrgId, u64, u64)>,
}

/// Evidence that a chain forked or a member equivocated: two signed objects that cannot both
/// be true, as replication found them.
#[derive(Debug, Clone)]
pub struct ForkEvidence {
    pub chain: OrgId,
    pub kind: EvidenceKind,
    /// The entry position (`entries`) or the tree size (`checkpoints`, `anchor`).
    pub seq: u64,
    pub first_id: String,
    pub second_id: String,
    pub detected_at: u64,
}

/// The fork evidence this node holds (`GET /v1/evidence`), oldest first.
pub fn fork_evidence(state: &AppState) -> Vec<ForkEvidence> {
    let mut evidence: Vec<ForkEvidence> = state
        .replication
        .evidence()
        .into_iter()
        .map(|e| ForkEvidence {
            chain: e.chain,
            kind: e.kind,
            seq: e.seq,
            first_id: e.first_id,
            second_id: e.second_id,
            detected_at: e.detected_at,
        })
        .collect();
    evidence.sort_by_key(|e| e.detected_at);
    evidence
}

/// The newest anchor witnessing `chain` that agrees with this node's copy: (witness, anchored
/// size, time), from the replication state.
pub fn last_anchor(state: &AppState, chain: &OrgId) -> Option<(OrgId, u64, u64)> {
    state
        .replication
        .last_anchor(chain)
        .map(|w| (w.witness, w.size, w.time_unix_ms))
}

pub fn overview(state: &AppState) -> Result<OverviewView, PageError> {
    let ledger = &state.ledger;
    let now = now_unix_ms();
    let offset = ledger.utc_offset_minutes();
    let members = ledger
        .membership()
        .members()
        .map(|m| MemberRow {
            org: m.org.clone(),
            name: m.name.clone(),
            roles: m.roles.clone(),
            suspended: m.suspended_at(now),
        })
        .collect();
    let mut chains = Vec::new();
    for info in ledger.store().chains() {
        let checkpoint = ledger
            .store()
            .latest_checkpoint(&info.chain)?
            .map(|c| (c.body().size, c.body().time_unix_ms));
        chains.push(ChainRow {
            last_anchor: last_anchor(state, &info.chain),
            chain: info.chain,
            size: info.size,
            root: info.root,
            checkpoint,
        });
    }
    let ids = ledger.store().all_certificates()?;
    let mut certificates = Vec::new();
    for id in ids.iter().take(LIST_LIMIT) {
        if let Some(cert) = ledger.certificate(id)? {
            let current = &cert.current().certificate;
            certificates.push(CertificateRow {
                id: *id,
                code: current.code.to_string(),
                batch: current.batch.clone(),
                name: current.name.clone(),
                status: cert.status_at(now, offset),
            });
        }
    }
    let genesis = ledger.genesis();
    Ok(OverviewView {
        federation: genesis.id(),
        name: genesis.body().name.clone(),
        registrar: genesis.registrar().clone(),
        this_node: ledger.org().clone(),
        members,
        chains,
        evidence: fork_evidence(state),
        more_certificates: ids.len().saturating_sub(LIST_LIMIT),
        certificates,
    })
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.html_lang()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · rmledger" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.top {
                    a.brand href=(ctx.link("/")) { (ctx.t(i18n::SITE)) }
                    nav {
                        a href=(ctx.link("/")) { (ctx.t(i18n::NAV_FEDERATION)) }
                        a href=(ctx.link("/findings")) { (ctx.t(i18n::NAV_FINDINGS)) }
                        a href=(ctx.switch_link()) lang=(ctx.lang.other().html_lang()) {
                            (ctx.t(i18n::LANGUAGE_SWITCH))
                        }
                    }
                }
                main { (body) }
                footer {
                    (ctx.t(i18n::TIMES_IN)) " (" (offset_text(ctx.utc_offset_minutes)) ")."
                }
            }
        }
    }
}

fn error_page(ctx: &Ctx, heading: &str, why: Text) -> Markup {
    layout(
        ctx,
        heading,
        html! {
            h1 { (heading) }
            p { (ctx.t(why)) }
            p { a href=(ctx.link("/")) { (ctx.t(i18n::BACK_HOME)) } }
        },
    )
}

fn badge(ctx: &Ctx, status: Status, small: bool) -> Markup {
    html! {
        span class={ "badge " (status.as_str()) @if small { " small" } } {
            (ctx.t(i18n::status(status)))
        }
    }
}

fn org_name(names: &BTreeMap<OrgId, String>, org: &OrgId) -> Markup {
    html! {
        @match names.get(org) {
            Some(name) => { (name) " " span.muted { "(" (org) ")" } }
            None => { (org) }
        }
    }
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// "0.21" for certified and information values, "(75)" for reference values, as Chinese
/// certificates print them.
fn value_text(value: &PropertyValue) -> String {
    match value.kind {
        ValueKind::Reference => format!("({})", value.value),
        ValueKind::Certified | ValueKind::Information => value.value.to_string(),
    }
}

/// "0.01" or "3 % (relative)".
fn uncertainty_text(ctx: &Ctx, u: &Uncertainty) -> String {
    if u.relative {
        format!("{} % ({})", u.expanded, ctx.t(i18n::RELATIVE))
    } else {
        u.expanded.to_string()
    }
}

fn validity_text(ctx: &Ctx, validity: &Validity) -> String {
    match validity {
        Validity::Until(date) => format!("{} {date}", ctx.t(i18n::EXPIRY_DATE)),
        Validity::FromCharacterization(p) => {
            i18n::valid_for(ctx.lang, p, i18n::VALID_FROM_CHARACTERIZATION)
        }
        Validity::AfterDispatch(p) => i18n::valid_for(ctx.lang, p, i18n::VALID_AFTER_DISPATCH),
        Validity::UntilRevoked => ctx.t(i18n::VALID_UNTIL_REVOKED).to_owned(),
    }
}

fn after_opening_text(ctx: &Ctx, rule: &AfterOpening) -> String {
    match rule {
        AfterOpening::SingleUse => ctx.t(i18n::SINGLE_USE).to_owned(),
        AfterOpening::Within(p) => i18n::use_within(ctx.lang, p),
        AfterOpening::UntilExpiry => ctx.t(i18n::UNTIL_EXPIRY).to_owned(),
        AfterOpening::NotStated => ctx.t(i18n::NOT_STATED).to_owned(),
    }
}

fn serials_text(serials: &SerialSet) -> String {
    let ranges: Vec<String> = serials.ranges().iter().map(ToString::to_string).collect();
    format!("{} ({})", ranges.join(", "), serials.len())
}

/// The QR code of `url` as inline SVG (generated here, so it may be inserted unescaped; it
/// holds only rectangles, never the URL's text).
pub fn qr_svg(url: &str) -> Option<String> {
    use qrcode::render::svg;
    let code =
        qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<svg::Color>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // Inline SVG in HTML takes no XML declaration.
    Some(svg[svg.find("<svg")?..].to_owned())
}

pub fn certificate_page(ctx: &Ctx, view: &CertificateView) -> Markup {
    let state = &*view.state;
    let revision = state.current();
    let cert = &revision.certificate;
    let (title, subtitle) = match (ctx.lang, &cert.name_en) {
        (Lang::En, Some(en)) => (en.as_str(), Some(cert.name.as_str())),
        (_, en) => (cert.name.as_str(), en.as_deref()),
    };
    let offset = ctx.utc_offset_minutes;
    let status_event = match view.status {
        Status::Withdrawn => state.withdrawn.as_ref(),
        Status::Recalled => state.recalled.as_ref(),
        Status::Superseded => state.superseded_by.as_ref(),
        Status::Suspended => state.suspended.as_ref(),
        Status::Expired | Status::Valid => None,
    };
    let expiry = cert.expiry_date();
    let moved: Vec<&UnitState> = state
        .units
        .values()
        .filter(|u| u.stage != UnitStage::Produced)
        .collect();
    let body = html! {
        p.subtitle {
            (ctx.t(match cert.kind {
                DocumentKind::Certificate => i18n::CERTIFICATE,
                DocumentKind::ProductInformationSheet => i18n::PRODUCT_INFORMATION_SHEET,
            }))
            " · " (cert.code) " · " (ctx.t(i18n::BATCH)) " " (cert.batch)
        }
        h1 { (title) }
        @if let Some(subtitle) = subtitle { p.subtitle { (subtitle) } }
        div.status-line {
            span.muted { (ctx.t(i18n::STATUS)) }
            (badge(ctx, view.status, false))
            @if let Some(event) = status_event {
                span.muted {
                    (ctx.t(i18n::STATUS_SINCE)) " " (ctx.time(event.time_unix_ms)) " · " (event.chain)
                }
            }
            @if view.status == Status::Expired {
                @if let Some(date) = expiry { span.muted { (ctx.t(i18n::EXPIRY_DATE)) " " (date) } }
            }
        }
        @if let Some(event) = status_event {
            @if let Some(reason) = &event.reason {
                div.notice { strong { (ctx.t(i18n::REASON)) ": " } (reason) }
            }
            @if view.status == Status::Superseded {
                div.notice.info {
                    (ctx.t(i18n::SUPERSEDED_BY)) " "
                    a href=(ctx.link(&format!("/c/{}", event.entry))) .mono { (event.entry) }
                }
            }
        }

        dl.facts {
            dt { (ctx.t(i18n::RM_CODE)) } dd { (cert.code) }
            dt { (ctx.t(i18n::BATCH)) } dd { (cert.batch) }
            dt { (ctx.t(i18n::PRODUCER)) } dd { (org_name(&view.names, &state.producer)) }
            @if let Some(matrix) = &cert.matrix { dt { (ctx.t(i18n::MATRIX)) } dd { (matrix) } }
            dt { (ctx.t(i18n::ISSUE_DATE)) } dd { (cert.issue_date) }
            @if let Some(date) = &cert.characterization_date {
                dt { (ctx.t(i18n::CHARACTERIZATION_DATE)) } dd { (date) }
            }
            dt { (ctx.t(i18n::REVISION)) }
            dd {
                (revision.number)
                @if let Some(reason) = &revision.reason {
                    span.muted { " · " (ctx.t(i18n::REVISED_BECAUSE)) ": " (reason) }
                }
            }
            @if let Some(old) = &cert.supersedes {
                dt { (ctx.t(i18n::SUPERSEDES)) }
                dd { a.mono href=(ctx.link(&format!("/c/{old}"))) { (short(&old.to_hex())) "…" } }
            }
            dt { (ctx.t(i18n::INTENDED_USE)) } dd { (cert.intended_use) }
            @if let Some(text) = &cert.traceability { dt { (ctx.t(i18n::TRACEABILITY)) } dd { (text) } }
            @if let Some(text) = &cert.storage { dt { (ctx.t(i18n::STORAGE)) } dd { (text) } }
            @if let Some(text) = &cert.handling { dt { (ctx.t(i18n::HANDLING)) } dd { (text) } }
            @if let Some(officer) = &cert.approving_officer {
                dt { (ctx.t(i18n::APPROVED_BY)) } dd { (officer.name) ", " (officer.function) }
            }
            dt { (ctx.t(i18n::CERTIFICATE_ID)) } dd.mono { (state.id) }
        }

        h2 { (ctx.t(i18n::PROPERTY_VALUES)) }
        (values_table(ctx, &cert.values))
        p.note { (ctx.t(i18n::VALUES_NOTE)) }

        h2 { (ctx.t(i18n::VALIDITY)) }
        dl.facts {
            dt { (ctx.t(i18n::VALIDITY)) } dd { (validity_text(ctx, &cert.validity)) }
            @if let Some(date) = expiry { dt { (ctx.t(i18n::EXPIRY_DATE)) } dd { strong { (date) } } }
            dt { (ctx.t(i18n::AFTER_OPENING)) } dd { (after_opening_text(ctx, &cert.after_opening)) }
        }

        h2 { (ctx.t(i18n::VERIFICATIONS)) }
        @if state.verifications.is_empty() {
            p.muted { (ctx.t(i18n::NO_VERIFICATIONS)) }
        } @else {
            table.stack {
                thead { tr {
                    th { (ctx.t(i18n::TIME)) } th { (ctx.t(i18n::INSTITUTE)) }
                    th { (ctx.t(i18n::QUANTITY)) } th { (ctx.t(i18n::MEASURED)) }
                    th { "En" } th { "ζ" } th { (ctx.t(i18n::VERDICT)) }
                } }
                tbody {
                    @for v in &state.verifications {
                        tr {
                            td { span.label { (ctx.t(i18n::TIME)) }  (ctx.time(v.time_unix_ms)) }
                            td { span.label { (ctx.t(i18n::INSTITUTE)) }  (v.chain) }
                            td { span.label { (ctx.t(i18n::QUANTITY)) }
                                (v.record.quantity) span.muted { " · " (ctx.t(i18n::REVISION)) " " (v.record.revision) }
                            }
                            td.num { span.label { (ctx.t(i18n::MEASURED)) }
                                (v.record.value) " ± " (uncertainty_text(ctx, &v.record.uncertainty))
                                " " (v.record.unit.display())
                                " (k = " (v.record.uncertainty.coverage_factor) ")"
                            }
                            td.num { span.label { "En" }
                                @match &v.comparison { Some(c) => { (format!("{:.2}", c.en)) } None => { "—" } }
                            }
                            td.num { span.label { "ζ" }
                                @match &v.comparison { Some(c) => { (format!("{:.2}", c.zeta)) } None => { "—" } }
                            }
                            td { span.label { (ctx.t(i18n::VERDICT)) }
                                @let verdict = v.rule_verdict;
                                span class={ "verdict " (verdict.map_or("none", verdict_class)) } {
                                    (ctx.t(i18n::verdict(verdict)))
                                }
                            }
                        }
                        @if let Some(note) = &v.note {
                            tr { td.wide colspan="7" { span.label { (ctx.t(i18n::ANOMALY)) }  span.anomaly { (note) } } }
                        }
                    }
                }
            }
            p.note { (ctx.t(i18n::EN_NOTE)) }
        }

        h2 { (ctx.t(i18n::UNITS)) }
        dl.facts {
            dt { (ctx.t(i18n::UNITS_PRODUCED)) } dd { (serials_text(&cert.units)) }
        }
        @if moved.is_empty() {
            p.muted { (ctx.t(i18n::NO_UNITS_MOVED)) }
        } @else {
            h3 { (ctx.t(i18n::UNITS_MOVED)) }
            table.stack {
                thead { tr {
                    th { (ctx.t(i18n::SERIAL)) } th { (ctx.t(i18n::STAGE)) } th { (ctx.t(i18n::HOLDER)) }
                    th { (ctx.t(i18n::SHIPPED_TO)) } th { (ctx.t(i18n::USES)) }
                } }
                tbody {
                    @for unit in moved.iter().take(LIST_LIMIT) {
                        tr {
                            td { span.label { (ctx.t(i18n::SERIAL)) }
                                a href=(ctx.link(&format!("/c/{}/u/{}", state.id, path_segment(&unit.serial)))) { (unit.serial) }
                            }
                            td { span.label { (ctx.t(i18n::STAGE)) }  (ctx.t(i18n::stage(unit.stage))) }
                            td { span.label { (ctx.t(i18n::HOLDER)) }  (unit.holder) }
                            td { span.label { (ctx.t(i18n::SHIPPED_TO)) }
                                @if let Some(to) = &unit.shipped_to { (to) } @else { "—" }
                            }
                            td.num { span.label { (ctx.t(i18n::USES)) }  (unit.uses) }
                        }
                    }
                }
            }
        }
        @if let Some(first) = cert.units.ranges().first() {
            p.note {
                (ctx.t(i18n::UNIT_LOOKUP)) " "
                a href=(ctx.link(&format!("/c/{}/u/{}", state.id, path_segment(&first.first())))) { (first.first()) }
            }
        }

        h2 { (ctx.t(i18n::TIMELINE)) }
        (timeline_table(ctx, state.timeline.iter().map(|t| (t.time_unix_ms, &t.chain, t.kind, t.summary.as_str(), t.anomaly.as_deref()))))

        h2 { (ctx.t(i18n::PROOF)) }
        div.proof {
            @if let Some(svg) = qr_svg(&view.url) {
                figure.qr {
                    // Generated by qr_svg from our own URL: rectangles only, no ledger text.
                    (PreEscaped(svg))
                    figcaption { (ctx.t(i18n::SCAN_QR)) br; span.mono { (view.url) } }
                }
            }
            div.text {
                p { a.button href=(format!("/v1/certificates/{}/bundle", state.id)) download=(format!("{}.rmbundle", state.id)) { (ctx.t(i18n::DOWNLOAD_BUNDLE)) } }
                (proof_section(ctx, &view.proof, offset))
            }
        }
    };
    layout(
        ctx,
        &format!("{title} · {}", ctx.t(i18n::status(view.status))),
        body,
    )
}

fn verdict_class(verdict: rmledger_schema::records::Verdict) -> &'static str {
    use rmledger_schema::records::Verdict;
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn values_table(ctx: &Ctx, values: &[PropertyValue]) -> Markup {
    html! {
        table.stack.values {
            thead { tr {
                th { (ctx.t(i18n::QUANTITY)) } th { (ctx.t(i18n::KIND)) } th { (ctx.t(i18n::VALUE)) }
                th { (ctx.t(i18n::EXPANDED_UNCERTAINTY)) } th { (ctx.t(i18n::COVERAGE_FACTOR)) }
                th { (ctx.t(i18n::UNIT_OF_MEASURE)) }
            } }
            tbody {
                @for value in values {
                    tr class=(match value.kind { ValueKind::Certified => "certified", ValueKind::Reference => "reference", ValueKind::Information => "information" }) {
                        td { span.label { (ctx.t(i18n::QUANTITY)) }
                            strong { (value.quantity) }
                            @if let Some(basis) = &value.basis { span.muted { " (" (basis) ")" } }
                            @if let Some(method) = &value.method { br; span.note { (ctx.t(i18n::METHOD)) ": " (method) } }
                        }
                        td { span.label { (ctx.t(i18n::KIND)) }  (ctx.t(i18n::value_kind(value.kind))) }
                        td.num { span.label { (ctx.t(i18n::VALUE)) }  strong { (value_text(value)) } }
                        td.num { span.label { (ctx.t(i18n::EXPANDED_UNCERTAINTY)) }
                            @match &value.uncertainty { Some(u) => { (uncertainty_text(ctx, u)) } None => { "—" } }
                        }
                        td.num { span.label { (ctx.t(i18n::COVERAGE_FACTOR)) }
                            @match &value.uncertainty {
                                Some(u) => {
                                    "k = " (u.coverage_factor)
                                    @if let Some(p) = &u.coverage_probability { span.muted { " (p = " (p) ")" } }
                                }
                                None => { "—" }
                            }
                        }
                        td.num { span.label { (ctx.t(i18n::UNIT_OF_MEASURE)) }  (value.unit.display()) }
                    }
                }
            }
        }
    }
}

fn timeline_table<'a>(
    ctx: &Ctx,
    events: impl Iterator<Item = (u64, &'a OrgId, RecordKind, &'a str, Option<&'a str>)>,
) -> Markup {
    html! {
        table.stack.timeline {
            thead { tr {
                th { (ctx.t(i18n::TIME)) } th { (ctx.t(i18n::ORGANISATION)) }
                th { (ctx.t(i18n::EVENT)) } th { (ctx.t(i18n::DETAIL)) }
            } }
            tbody {
                @for (time, chain, kind, summary, anomaly) in events {
                    tr {
                        td.num { span.label { (ctx.t(i18n::TIME)) }  (ctx.time(time)) }
                        td { span.label { (ctx.t(i18n::ORGANISATION)) }  (chain) }
                        td { span.label { (ctx.t(i18n::EVENT)) }  strong { (ctx.t(i18n::record_kind(kind))) } }
                        td.wide { span.label { (ctx.t(i18n::DETAIL)) }
                            (summary)
                            @if let Some(anomaly) = anomaly {
                                br; span.anomaly { "⚠ " (ctx.t(i18n::ANOMALY)) ": " (anomaly) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn proof_section(ctx: &Ctx, proof: &Proof, offset: i32) -> Markup {
    html! {
        @match proof {
            Proof::Verified(p) => {
                p {
                    (ctx.t(i18n::BUNDLE_VERIFIED)) " " span.mono { (p.federation) } ". "
                    (p.entries) " " (ctx.t(i18n::BUNDLE_ENTRIES)) "."
                    @if p.known > p.entries {
                        " " (p.known - p.entries) " " (ctx.t(i18n::BUNDLE_PENDING)) "."
                    }
                }
                h3 { (ctx.t(i18n::CHECKPOINTS)) }
                p { (ctx.t(i18n::BUNDLE_COMPLETE)) "." }
                @for chain in &p.unproven {
                    p.muted { (chain) ": " (ctx.t(i18n::BUNDLE_UNPROVEN)) }
                }
                table.stack {
                    thead { tr {
                        th { (ctx.t(i18n::CHAIN)) } th { (ctx.t(i18n::SIZE)) }
                        th { (ctx.t(i18n::TIME)) } th { (ctx.t(i18n::ROOT)) }
                    } }
                    tbody {
                        @for c in &p.checkpoints {
                            tr {
                                td { span.label { (ctx.t(i18n::CHAIN)) }  (c.chain) }
                                td.num { span.label { (ctx.t(i18n::SIZE)) }  (c.size) }
                                td.num { span.label { (ctx.t(i18n::TIME)) }  (time_text(c.time_unix_ms, offset)) }
                                td { span.label { (ctx.t(i18n::ROOT)) }  span.mono title=(c.root) { (short(&c.root.to_string())) "…" } }
                            }
                        }
                    }
                }
                h3 { (ctx.t(i18n::ANCHORS)) }
                @if p.anchors.is_empty() {
                    p.muted { (ctx.t(i18n::NO_ANCHORS)) }
                } @else {
                    ul {
                        @for (witness, chain, size) in &p.anchors {
                            li { (chain) " @ " (size) " — " (ctx.t(i18n::ANCHORED_BY)) " " (witness) }
                        }
                    }
                }
            }
            Proof::Unavailable(reason) => {
                p.notice { (ctx.t(i18n::BUNDLE_FAILED)) ": " (reason) }
            }
        }
    }
}

pub fn unit_page(ctx: &Ctx, view: &UnitView) -> Markup {
    let state = &*view.state;
    let cert = &state.current().certificate;
    let unit = &view.unit;
    let offset = ctx.utc_offset_minutes;
    let time_or_dash = |t: Option<u64>| t.map_or_else(|| "—".to_owned(), |t| ctx.time(t));
    // Both ends are "the start of the day after the last valid day": show the last valid day.
    let unit_expiry = match cert.validity {
        Validity::AfterDispatch(_) => unit.expiry_unix_ms(cert, offset),
        _ => None,
    };
    let open_expiry = unit.open_expiry_unix_ms(cert, offset);
    let body = html! {
        p.subtitle {
            a href=(ctx.link(&format!("/c/{}", state.id))) { (cert.code) " · " (ctx.t(i18n::BATCH)) " " (cert.batch) }
        }
        h1 { (ctx.t(i18n::UNIT)) " " (unit.serial) }
        p.subtitle { (cert.name) }
        div.status-line {
            span.muted { (ctx.t(i18n::CERTIFICATE)) }
            (badge(ctx, view.status, false))
        }
        dl.facts {
            dt { (ctx.t(i18n::STAGE)) } dd { strong { (ctx.t(i18n::stage(unit.stage))) } }
            dt { (ctx.t(i18n::HOLDER)) } dd { (org_name(&view.names, &unit.holder)) }
            dt { (ctx.t(i18n::SHIPPED_TO)) }
            dd {
                @if let Some(to) = &unit.shipped_to { (org_name(&view.names, to)) " · " (time_or_dash(unit.shipped_at)) } @else { "—" }
            }
            dt { (ctx.t(i18n::RECEIVED_BY)) }
            dd {
                @if let Some(by) = &unit.received_by { (org_name(&view.names, by)) " · " (time_or_dash(unit.received_at)) } @else { "—" }
            }
            dt { (ctx.t(i18n::OPENED_AT)) } dd { (time_or_dash(unit.opened_at)) }
            dt { (ctx.t(i18n::USES)) } dd { (unit.uses) }
            dt { (ctx.t(i18n::LAST_USED)) } dd { (time_or_dash(unit.last_used_at)) }
            @if unit.disposed_at.is_some() {
                dt { (ctx.t(i18n::DISPOSED_AT)) } dd { (time_or_dash(unit.disposed_at)) }
            }
            dt { (ctx.t(i18n::AFTER_OPENING)) } dd { (after_opening_text(ctx, &cert.after_opening)) }
            @if let Some(end) = unit_expiry {
                dt { (ctx.t(i18n::UNIT_VALID_UNTIL)) } dd { (ctx.date(end.saturating_sub(1))) }
            }
            @if let Some(end) = open_expiry {
                dt { (ctx.t(i18n::OPEN_VALID_UNTIL)) } dd { (ctx.date(end.saturating_sub(1))) }
            }
        }
        h2 { (ctx.t(i18n::UNIT_EVENTS)) }
        (timeline_table(ctx, view.events.iter().map(|e| (e.time_unix_ms, &e.chain, e.kind, e.summary.as_str(), e.anomaly.as_deref()))))
    };
    layout(ctx, &format!("{} {}", ctx.t(i18n::UNIT), unit.serial), body)
}

pub fn overview_page(ctx: &Ctx, view: &OverviewView) -> Markup {
    let body = html! {
        p.subtitle { (ctx.t(i18n::FEDERATION)) }
        h1 { (view.name) }
        dl.facts {
            dt { (ctx.t(i18n::FEDERATION_ID)) } dd.mono { (view.federation) }
            dt { (ctx.t(i18n::REGISTRAR)) } dd { (view.registrar) }
            dt { (ctx.t(i18n::THIS_NODE)) } dd { (view.this_node) }
        }

        h2 { (ctx.t(i18n::MEMBERS)) }
        table.stack {
            thead { tr { th { (ctx.t(i18n::ORGANISATION)) } th { (ctx.t(i18n::NAME)) } th { (ctx.t(i18n::ROLES)) } } }
            tbody {
                @for m in &view.members {
                    tr {
                        td { span.label { (ctx.t(i18n::ORGANISATION)) }  strong { (m.org) } }
                        td { span.label { (ctx.t(i18n::NAME)) }
                            (m.name)
                            @if m.suspended { " " span.badge.small.suspended { (ctx.t(i18n::MEMBER_SUSPENDED)) } }
                        }
                        td { span.label { (ctx.t(i18n::ROLES)) }
                            (m.roles.iter().map(|r| ctx.t(i18n::role(*r))).collect::<Vec<_>>().join(", "))
                        }
                    }
                }
            }
        }

        h2 { (ctx.t(i18n::CHAINS)) }
        table.stack {
            thead { tr {
                th { (ctx.t(i18n::CHAIN)) } th { (ctx.t(i18n::SIZE)) } th { (ctx.t(i18n::ROOT)) }
                th { (ctx.t(i18n::LAST_CHECKPOINT)) } th { (ctx.t(i18n::LAST_ANCHOR)) }
            } }
            tbody {
                @for c in &view.chains {
                    tr {
                        td { span.label { (ctx.t(i18n::CHAIN)) }  strong { (c.chain) } }
                        td.num { span.label { (ctx.t(i18n::SIZE)) }  (c.size) }
                        td { span.label { (ctx.t(i18n::ROOT)) }  span.mono title=(c.root) { (short(&c.root.to_string())) "…" } }
                        td.num { span.label { (ctx.t(i18n::LAST_CHECKPOINT)) }
                            @if let Some((size, time)) = c.checkpoint { (size) " · " (ctx.time(time)) } @else { "—" }
                        }
                        td { span.label { (ctx.t(i18n::LAST_ANCHOR)) }
                            @if let Some((witness, size, time)) = &c.last_anchor {
                                (ctx.t(i18n::ANCHORED_BY)) " " strong { (witness) } " · "
                                (ctx.t(i18n::AT_SIZE)) " " (size) " · " (ctx.time(*time))
                            } @else { span.muted { (ctx.t(i18n::NO_ANCHORS)) } }
                        }
                    }
                }
            }
        }

        h2 { (ctx.t(i18n::FORK_EVIDENCE)) }
        @if view.evidence.is_empty() {
            p.muted { (ctx.t(i18n::NO_FORK_EVIDENCE)) }
        } @else {
            section.evidence {
                p.anomaly { strong { (ctx.t(i18n::EVIDENCE_NOTE)) } }
                table.stack {
                    thead { tr {
                        th { (ctx.t(i18n::CHAIN)) } th { (ctx.t(i18n::EVIDENCE_KIND)) }
                        th { (ctx.t(i18n::EVIDENCE_AT)) } th { (ctx.t(i18n::EVIDENCE_OBJECTS)) }
                        th { (ctx.t(i18n::EVIDENCE_DETECTED)) }
                    } }
                    tbody {
                        @for e in &view.evidence {
                            tr.anomaly {
                                td { span.label { (ctx.t(i18n::CHAIN)) }  strong { (e.chain) } }
                                td { span.label { (ctx.t(i18n::EVIDENCE_KIND)) }  (ctx.t(i18n::evidence_kind(e.kind))) }
                                td.num { span.label { (ctx.t(i18n::EVIDENCE_AT)) }  (e.seq) }
                                td { span.label { (ctx.t(i18n::EVIDENCE_OBJECTS)) }
                                    span.mono title=(e.first_id) { (short(&e.first_id)) "…" }
                                    " ≠ "
                                    span.mono title=(e.second_id) { (short(&e.second_id)) "…" }
                                }
                                td { span.label { (ctx.t(i18n::EVIDENCE_DETECTED)) }  (ctx.time(e.detected_at)) }
                            }
                        }
                    }
                }
            }
        }

        h2 { (ctx.t(i18n::CERTIFICATES)) }
        @if view.certificates.is_empty() {
            p.muted { (ctx.t(i18n::NO_CERTIFICATES)) }
        } @else {
            table.stack {
                thead { tr {
                    th { (ctx.t(i18n::RM_CODE)) } th { (ctx.t(i18n::BATCH)) }
                    th { (ctx.t(i18n::NAME)) } th { (ctx.t(i18n::STATUS)) }
                } }
                tbody {
                    @for c in &view.certificates {
                        tr {
                            td { span.label { (ctx.t(i18n::RM_CODE)) }  a href=(ctx.link(&format!("/c/{}", c.id))) { (c.code) } }
                            td { span.label { (ctx.t(i18n::BATCH)) }  (c.batch) }
                            td { span.label { (ctx.t(i18n::NAME)) }  (c.name) }
                            td { span.label { (ctx.t(i18n::STATUS)) }  (badge(ctx, c.status, true)) }
                        }
                    }
                }
            }
            @if view.more_certificates > 0 {
                p.muted { (view.more_certificates) " " (ctx.t(i18n::MORE_NOT_SHOWN)) }
            }
        }
    };
    layout(ctx, &view.name, body)
}

fn severity_class(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}

/// A finding's subject, linked to the certificate page when it names a certificate.
fn subject(ctx: &Ctx, subject: &str) -> Markup {
    let certificate = subject
        .get(..64)
        .and_then(|hex| CertificateId::from_hex(hex).ok());
    html! {
        @match certificate {
            Some(id) => { a.mono href=(ctx.link(&format!("/c/{id}"))) { (subject) } }
            None => { span.mono { (subject) } }
        }
    }
}

pub fn findings_page(ctx: &Ctx, report: &AuditReport) -> Markup {
    let body = html! {
        h1 { (ctx.t(i18n::FINDINGS)) }
        p.note {
            (ctx.t(i18n::FINDINGS_NOTE)) " "
            (report.entries) " " (ctx.t(i18n::ENTRIES_WORD)) " · "
            (report.checkpoints) " " (ctx.t(i18n::CHECKPOINTS_WORD)) " · "
            (report.certificates) " " (ctx.t(i18n::CERTIFICATES_WORD)) " · "
            (ctx.time(report.now_unix_ms))
        }
        @if report.findings.is_empty() {
            p.muted { (ctx.t(i18n::NO_FINDINGS)) }
        } @else {
            table.stack.findings {
                thead { tr {
                    th { (ctx.t(i18n::SEVERITY)) } th { (ctx.t(i18n::RULE)) }
                    th { (ctx.t(i18n::SUBJECT)) } th { (ctx.t(i18n::DETAIL)) }
                } }
                tbody {
                    @for f in report.findings.iter().take(LIST_LIMIT) {
                        tr {
                            td { span.label { (ctx.t(i18n::SEVERITY)) }
                                span class={ "severity " (severity_class(f.severity)) } { (ctx.t(i18n::severity(f.severity))) }
                            }
                            td { span.label { (ctx.t(i18n::RULE)) } code { (f.rule) } }
                            td.wide { span.label { (ctx.t(i18n::SUBJECT)) } (subject(ctx, &f.subject)) }
                            td.wide { span.label { (ctx.t(i18n::DETAIL)) } (f.explanation) }
                        }
                    }
                }
            }
            @if report.findings.len() > LIST_LIMIT {
                p.muted { (report.findings.len() - LIST_LIMIT) " " (ctx.t(i18n::MORE_NOT_SHOWN)) }
            }
        }
    };
    layout(ctx, ctx.t(i18n::FINDINGS), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmledger_schema::audit::{AuditConfig, Auditor};
    use rmledger_schema::records::{StatusChange, ValueVerification};
    use rmledger_schema::testkit::{START_UNIX_MS, TestFederation, decimal, org, soil_certificate};
    use rmledger_schema::units::Unit;

    const OFFSET: i32 = 480;

    fn ctx(lang: Lang, explicit: bool) -> Ctx {
        Ctx {
            lang,
            explicit,
            path: "/c/x".into(),
            utc_offset_minutes: OFFSET,
        }
    }

    /// A soil certificate of acme-rm, verified by jxim (En 0.89, pass); recalled when asked.
    fn view(name: Option<&str>, recalled: bool) -> CertificateView {
        let mut federation = TestFederation::with_members();
        let mut certificate = soil_certificate("2025a");
        if let Some(name) = name {
            certificate.name = name.into();
            certificate.name_en = Some(name.into());
        }
        let registration = federation.append("acme-rm", Record::BatchRegistered(certificate));
        let id = registration.id();
        let mut others = vec![federation.append(
            "jxim",
            Record::ValueVerification(ValueVerification {
                cert: id,
                unit: Unit::parse("mg/kg").unwrap(),
                value: decimal("0.23"),
                method: None,
                report: None,
                sample: None,
                verdict: None,
                quantity: "Cd".into(),
                revision: 1,
                uncertainty: Uncertainty {
                    expanded: decimal("0.02"),
                    relative: false,
                    coverage_factor: decimal("2"),
                    coverage_probability: None,
                },
            }),
        )];
        if recalled {
            others.push(federation.append(
                "jxsamr",
                Record::Recalled(StatusChange {
                    cert: id,
                    reason: "drift".into(),
                }),
            ));
        }
        let state = CertificateState::fold(&registration, &others, OFFSET).unwrap();
        let now = federation.clock_unix_ms;
        CertificateView {
            status: state.status_at(now, OFFSET),
            now_unix_ms: now,
            names: BTreeMap::from([(org("acme-rm"), "Acme RM".to_owned())]),
            proof: Proof::Verified(ProofSummary {
                federation: federation.genesis.id(),
                entries: others.len() + 1,
                known: others.len() + 2,
                checkpoints: vec![CheckpointLine {
                    chain: org("acme-rm"),
                    size: 1,
                    time_unix_ms: now,
                    root: TreeHash([7; 32]),
                }],
                unproven: vec![org("nclab")],
                anchors: Vec::new(),
            }),
            state: Arc::new(state),
            url: "http://127.0.0.1:7300/c/abc".into(),
        }
    }

    fn check(page: &Markup, shown: &[&str]) {
        let html = page.clone().into_string();
        for text in shown {
            assert!(html.contains(text), "{text:?} is not on the page");
        }
    }

    #[test]
    fn certificate_page_in_english() {
        let page = certificate_page(&ctx(Lang::En, false), &view(None, false));
        check(
            &page,
            &[
                r#"<html lang="en">"#,
                r#"name="viewport""#,
                r#"class="badge valid">Valid<"#,
                "<strong>0.21</strong>",
                ">0.01<",
                "k = 2",
                "(75)",
                "Certified value",
                "Reference value",
                "Expiry date",
                "2030-06-30",
                "0.89",
                r#"class="verdict pass">pass<"#,
                "Timeline",
                "no anchors yet",
                "every entry about this certificate as of these checkpoints",
                "nclab: no checkpoint known",
                "/v1/certificates/",
                "1 entries are newer",
                "<svg",
            ],
        );
    }

    #[test]
    fn certificate_page_in_chinese_uses_the_domain_terms() {
        let page = certificate_page(&ctx(Lang::Zh, true), &view(None, true));
        check(
            &page,
            &[
                r#"<html lang="zh-CN">"#,
                r#"class="badge recalled">召回<"#,
                "证书",
                "认定值",
                "参考值",
                "扩展不确定度 U",
                "包含因子 k",
                "量值核查",
                "单元",
                "时间线",
                "开封后",
                "drift",
                r#"href="/findings?lang=zh""#,
                r#"href="/c/x?lang=en""#,
            ],
        );
    }

    #[test]
    fn ledger_text_is_escaped() {
        let hostile = r#"<script>alert(1)</script>"><img src=x onerror=alert(1)>"#;
        let html =
            certificate_page(&ctx(Lang::En, false), &view(Some(hostile), false)).into_string();
        assert!(
            !html.contains("<script"),
            "a script element reached the page"
        );
        assert!(!html.contains("<img"), "an img element reached the page");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
    }

    #[test]
    fn unavailable_proof_says_why() {
        let mut view = view(None, false);
        view.proof = Proof::Unavailable("no checkpoint of the registrar's chain yet".into());
        check(
            &certificate_page(&ctx(Lang::En, false), &view),
            &[
                "could not be built or verified",
                "no checkpoint of the registrar",
            ],
        );
    }

    #[test]
    fn language_comes_from_the_query_then_accept_language() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("zh-CN,zh;q=0.9"),
        );
        let uri: Uri = "/c/abc".parse().unwrap();
        let c = Ctx::new(&headers, &uri, OFFSET);
        assert_eq!((c.lang, c.explicit), (Lang::Zh, false));
        assert_eq!(c.link("/findings"), "/findings");
        assert_eq!(c.switch_link(), "/c/abc?lang=en");
        let uri: Uri = "/c/abc?x=1&lang=en".parse().unwrap();
        let c = Ctx::new(&headers, &uri, OFFSET);
        assert_eq!((c.lang, c.explicit), (Lang::En, true));
        assert_eq!(c.link("/findings"), "/findings?lang=en");
        let uri: Uri = "/?lang=fr".parse().unwrap();
        assert_eq!(Ctx::new(&HeaderMap::new(), &uri, OFFSET).lang, Lang::En);
    }

    #[test]
    fn times_paths_and_qr() {
        assert_eq!(time_text(START_UNIX_MS, 480), "2026-01-01 08:00");
        assert_eq!(time_text(START_UNIX_MS, -330), "2025-12-31 18:30");
        assert_eq!(offset_text(480), "UTC+08:00");
        assert_eq!(offset_text(-330), "UTC-05:30");
        assert_eq!(path_segment("S-0001"), "S-0001");
        assert_eq!(path_segment("A/1 ?#%"), "A%2F1%20%3F%23%25");
        let svg = qr_svg("http://127.0.0.1:7300/c/abc").unwrap();
        assert!(svg.starts_with("<svg") && !svg.contains("127.0.0.1"));
    }

    #[test]
    fn overview_shows_anchors_and_fork_evidence() {
        let federation = TestFederation::new();
        let view = OverviewView {
            federation: federation.genesis.id(),
            name: "Test federation".into(),
            registrar: org("jxim"),
            this_node: org("nclab"),
            members: Vec::new(),
            chains: vec![ChainRow {
                chain: org("acme-rm"),
                size: 42,
                root: TreeHash([7; 32]),
                checkpoint: Some((42, START_UNIX_MS)),
                last_anchor: Some((org("jxim"), 40, START_UNIX_MS)),
            }],
            evidence: vec![ForkEvidence {
                chain: org("acme-rm"),
                kind: EvidenceKind::Entries,
                seq: 17,
                first_id: "aa".repeat(32),
                second_id: "bb".repeat(32),
                detected_at: START_UNIX_MS,
            }],
            certificates: Vec::new(),
            more_certificates: 0,
        };
        check(
            &overview_page(&ctx(Lang::En, false), &view),
            &[
                "witnessed by <strong>jxim</strong> · at size 40 · 2026-01-01 08:00",
                "fork: two entries at one position",
                "frozen on this node",
                "aaaaaaaaaaaa…",
                "bbbbbbbbbbbb…",
            ],
        );
        check(
            &overview_page(&ctx(Lang::Zh, false), &view),
            &[
                "见证方 <strong>jxim</strong>",
                "分叉：同一位置有两条记录",
                "已冻结",
            ],
        );
    }

    #[test]
    fn overview_and_findings_say_when_there_is_nothing() {
        let federation = TestFederation::new();
        let view = OverviewView {
            federation: federation.genesis.id(),
            name: "Test <federation>".into(),
            registrar: org("jxim"),
            this_node: org("jxim"),
            members: vec![MemberRow {
                org: org("jxim"),
                name: "Institute".into(),
                roles: vec![Role::Registrar, Role::Institute],
                suspended: false,
            }],
            chains: Vec::new(),
            evidence: Vec::new(),
            certificates: Vec::new(),
            more_certificates: 0,
        };
        check(
            &overview_page(&ctx(Lang::En, false), &view),
            &[
                "Test &lt;federation&gt;",
                "registrar, institute",
                "no fork evidence",
            ],
        );
        check(
            &overview_page(&ctx(Lang::Zh, false), &view),
            &["登记机构, 计量院", "无分叉证据"],
        );
        let mut report = Auditor::new(&federation.genesis, AuditConfig::at(START_UNIX_MS)).finish();
        check(
            &findings_page(&ctx(Lang::En, false), &report),
            &["No findings."],
        );
        let cert = "ab".repeat(32);
        report.findings.push(rmledger_schema::audit::Finding {
            id: format!("domain/use-after-recall/{cert}/S-0001"),
            severity: Severity::Critical,
            rule: "domain/use-after-recall",
            subject: format!("{cert}/S-0001"),
            explanation: "nclab used <S-0001> after the recall".into(),
            entries: Vec::new(),
        });
        check(
            &findings_page(&ctx(Lang::Zh, true), &report),
            &[
                "domain/use-after-recall",
                "严重",
                &format!(r#"href="/c/{cert}?lang=zh""#),
                "nclab used &lt;S-0001&gt; after the recall",
            ],
        );
    }
}
