//! The HTTP API under `/v1`: writes through `POST /v1/records`, reads of chains, entries,
//! checkpoints, proofs, certificates and bundles, plus `/healthz`, `/metrics` and
//! `/openapi.json`. Every byte format is the one in docs/format.md; docs/api.md describes each
//! route. Errors are JSON `{error, field?, rule?, detail}` with the status the class implies.
//! The HTML pages for people are rendered by `web` and routed here, from the same table.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use rmledger_schema::bundle::{Bundle, BundleAnchor, BundleChain, BundleEntry};
use rmledger_schema::cbor::{Writer as CborWriter, major};
use rmledger_schema::certmap::membership_key;
use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::entry::Entry;
use rmledger_schema::federation::Membership;
use rmledger_schema::ids::{CertificateId, OrgId, TreeHash};
use rmledger_schema::records::{Blob, Record};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::append::{Refused, WriteError, Writer, now_unix_ms, rule_status};
use crate::audit::NodeAudit;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::replicate::Replication;
use crate::storage::StorageError;
use crate::web;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub writer: Writer,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub replication: Arc<Replication>,
    /// The audit of the node's replica, fed as the ledger grows (`/v1/audit/findings`, `/findings`).
    pub audit: Arc<NodeAudit>,
}

/// The routes, for the router and for `/openapi.json` (one table, so they cannot drift).
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "post",
        "/v1/records",
        "Submit a record (JSON) as an operator: validated, signed, appended durably",
    ),
    (
        "post",
        "/v1/records/batch",
        "Submit several records (a JSON array) as an operator: appended together as consecutive entries, all or none",
    ),
    (
        "get",
        "/v1/federation",
        "The federation: id, name, registrar and genesis (base64)",
    ),
    (
        "get",
        "/v1/members",
        "Members with roles and keys (validity windows)",
    ),
    ("get", "/v1/chains", "Every chain held: size, head and root"),
    (
        "get",
        "/v1/chains/{chain}/entries",
        "A page of a chain's entries (?from, ?limit): a CBOR array of entry bytes",
    ),
    (
        "get",
        "/v1/chains/{chain}/entries/{seq}",
        "One entry's exact bytes (CBOR)",
    ),
    (
        "get",
        "/v1/chains/{chain}/checkpoint",
        "The chain's latest signed checkpoint (COSE_Sign1 bytes)",
    ),
    (
        "get",
        "/v1/chains/{chain}/proof/inclusion",
        "RFC 9162 inclusion proof (?index, ?size)",
    ),
    (
        "get",
        "/v1/chains/{chain}/proof/consistency",
        "RFC 9162 consistency proof (?from, ?to)",
    ),
    (
        "get",
        "/v1/certificates",
        "Certificates, by RM code and batch (?code, ?batch)",
    ),
    (
        "get",
        "/v1/certificates/{id}",
        "A certificate's state, values, verifications, units and timeline",
    ),
    (
        "get",
        "/v1/certificates/{id}/bundle",
        "A proof bundle for offline verification (CBOR)",
    ),
    (
        "post",
        "/v1/notify",
        "Wake replication for an immediate pull from every peer (no auth; body ignored)",
    ),
    (
        "get",
        "/v1/evidence",
        "Fork and equivocation evidence held: both signed objects (hex) per item",
    ),
    (
        "get",
        "/v1/audit/findings",
        "The audit of this node's replica (JSON report: counts by severity, findings with evidence entry ids)",
    ),
    ("get", "/healthz", "Liveness"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/openapi.json", "This API's OpenAPI document"),
    (
        "get",
        "/",
        "Web page (HTML, ?lang=zh|en): the federation, its members, chains and certificates",
    ),
    (
        "get",
        "/c/{id}",
        "Web page (HTML): a certificate's status, values, verifications, units, timeline, QR code and proof",
    ),
    (
        "get",
        "/c/{id}/u/{serial}",
        "Web page (HTML): one unit's stage, holder and events",
    ),
    (
        "get",
        "/findings",
        "Web page (HTML): the node's audit findings",
    ),
    ("get", "/static/style.css", "The web pages' stylesheet"),
];

/// A route's path, checked (in debug builds and tests) to be in [`ROUTES`], so a route can't
/// be served without being documented in `/openapi.json`.
fn documented(path: &'static str) -> &'static str {
    debug_assert!(
        ROUTES.iter().any(|(_, p, _)| *p == path),
        "route {path} is not in api::ROUTES"
    );
    path
}

/// Builds the router with its limits: body size, request time, panics turned into 500s,
/// tokens hidden from traces.
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    Router::new()
        .route(documented("/v1/records"), post(post_record))
        .route(documented("/v1/records/batch"), post(post_records))
        .route(documented("/v1/federation"), get(federation))
        .route(documented("/v1/members"), get(members))
        .route(documented("/v1/chains"), get(chains))
        .route(documented("/v1/chains/{chain}/entries"), get(entries))
        .route(documented("/v1/chains/{chain}/entries/{seq}"), get(entry))
        .route(documented("/v1/chains/{chain}/checkpoint"), get(checkpoint))
        .route(
            documented("/v1/chains/{chain}/proof/inclusion"),
            get(inclusion),
        )
        .route(
            documented("/v1/chains/{chain}/proof/consistency"),
            get(consistency),
        )
        .route(documented("/v1/certificates"), get(certificates))
        .route(documented("/v1/certificates/{id}"), get(certificate))
        .route(documented("/v1/certificates/{id}/bundle"), get(bundle))
        .route(documented("/v1/notify"), post(notify))
        .route(documented("/v1/evidence"), get(evidence))
        .route(documented("/v1/audit/findings"), get(audit_findings))
        .route(documented("/healthz"), get(|| async { "ok\n" }))
        .route(documented("/metrics"), get(metrics))
        .route(documented("/openapi.json"), get(openapi))
        .route(documented("/"), get(web::home))
        .route(documented("/c/{id}"), get(web::certificate))
        .route(documented("/c/{id}/u/{serial}"), get(web::unit))
        .route(documented("/findings"), get(web::findings))
        .route(documented("/static/style.css"), get(web::stylesheet))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        // Inside out: panics become 500s, slow requests 408s, and then every error — including
        // those the framework answers itself (405, bad path or query) — gets the JSON shape and
        // is counted.
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), json_errors))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .with_state(state)
}

/// Serves on a bound listener until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Responses are written in one `writev` each; with Nagle's algorithm on, a response sent
    // while the previous one's ACK is outstanding would wait for it (delayed ACK, up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Unknown paths: the HTML 404 page for a browser, the JSON error for everyone else.
async fn fallback(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if web::wants_html(&headers) {
        web::fallback_page(&state, &headers, &uri)
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
    }
}

/// Counts every response and gives every error the JSON shape `{error, detail}`, whoever
/// produced it (a handler, an extractor rejection, the method router, the timeout, a panic).
/// The web pages' own HTML error pages are left as they are.
async fn json_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.observe_http(status.as_u16());
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let (class, fallback) = match status {
        StatusCode::BAD_REQUEST => ("malformed", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took longer than the node's limit"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the body is larger than the node accepts"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("malformed", "unsupported content type"),
        _ if status.is_server_error() => ("internal", "the node failed; see its log"),
        _ => ("error", "the request failed"),
    };
    // A panic's message stays in the log, never in a response.
    let detail = if text.is_empty() || status.is_server_error() {
        fallback.to_owned()
    } else {
        text
    };
    ApiError::new(status, class, detail).into_response()
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// The JSON error every route returns.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// In a batch request: the index of the record refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            field: None,
            rule: None,
            index: None,
            detail: detail.into(),
        }
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node failed; see its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::internal(e)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        Self::internal(e)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let detail = e.to_string();
        match e {
            WriteError::Invalid(r) => Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: "invalid",
                field: Some(r.field),
                rule: Some(r.rule.to_owned()),
                index: None,
                detail,
            },
            WriteError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", detail),
            WriteError::Rule(rule) => {
                let status =
                    StatusCode::from_u16(rule_status(&rule)).unwrap_or(StatusCode::CONFLICT);
                let error = match status {
                    StatusCode::NOT_FOUND => "not_found",
                    StatusCode::FORBIDDEN => "forbidden",
                    _ => "conflict",
                };
                Self {
                    status,
                    error,
                    field: None,
                    rule: Some(rule.rule.to_owned()),
                    index: None,
                    detail,
                }
            }
            WriteError::Membership(_) => Self {
                status: StatusCode::CONFLICT,
                error: "conflict",
                field: None,
                rule: Some("membership".into()),
                index: None,
                detail,
            },
            WriteError::UnknownCertificate(_) => Self {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                field: Some("cert".into()),
                rule: Some("unknown-certificate".into()),
                index: None,
                detail,
            },
            WriteError::AnchorContradicts(_) => Self {
                status: StatusCode::CONFLICT,
                error: "conflict",
                field: Some("root".into()),
                rule: Some("anchor-contradicts".into()),
                index: None,
                detail,
            },
            WriteError::Storage(_) => Self::internal(detail),
            WriteError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
            WriteError::BatchSize(_) => Self {
                rule: Some("batch-size".into()),
                ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
            },
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        Self {
            index: refused.index,
            ..Self::from(refused.error)
        }
    }
}

fn org_path(chain: &str) -> Result<OrgId, ApiError> {
    OrgId::new(chain).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn cert_path(id: &str) -> Result<CertificateId, ApiError> {
    CertificateId::from_hex(id).map_err(|e| ApiError {
        field: Some("id".into()),
        ..ApiError::bad_request(e.to_string())
    })
}

fn cbor_response(bytes: Vec<u8>, content_type: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Writes.

async fn post_record(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (operator, body) = write_request(&state, request).await?;
    let record = parse_json::<Record>(&body, "record")?;
    let appended = state.writer.submit(operator, record).await?;
    Ok((StatusCode::CREATED, Json(appended)).into_response())
}

async fn post_records(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (operator, body) = write_request(&state, request).await?;
    let records = parse_json::<Vec<Record>>(&body, "array of records")?;
    let appended = state.writer.submit_all(operator, records).await?;
    Ok((StatusCode::CREATED, Json(appended)).into_response())
}

/// The operator and the body of a write. The headers are read in place (a `HeaderMap`
/// extractor would copy them all), then the body is taken with the router's size limit.
async fn write_request(state: &AppState, request: Request) -> Result<(String, Bytes), ApiError> {
    let operator = authenticate(&state.config, request.headers())?;
    let body = Bytes::from_request(request, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "the body is larger than {} bytes",
                        state.config.limits.max_body_bytes
                    ),
                )
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
    Ok((operator, body))
}

fn authenticate(config: &Config, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorized =
        |detail: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must be: Bearer <token>"))?;
    config
        .operator_for_token(token.trim())
        .map(|op| op.name.clone())
        .ok_or_else(|| unauthorized("unknown operator token"))
}

/// Parses a JSON body (`what`: "record" or "array of records"), naming the field that is wrong.
///
/// The common case (a valid body) is parsed directly; only a body that fails is parsed a second
/// time with `serde_path_to_error`, whose path tracking costs on every field, to name the field
/// (and, in an array, the index of the record). Parsing is deterministic, so the second pass
/// fails with the same error.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = match T::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(plain) => return Err(json_error::<T>(body, what, &plain)),
    };
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("trailing data after the {what}: {e}")))?;
    Ok(value)
}

/// The 400 for a body that is not what was expected, naming the field (JSON path) where
/// parsing failed and, in an array, the index of the element.
fn json_error<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
    plain: &serde_json::Error,
) -> ApiError {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Err(e) => {
            let path = e.path();
            let index = match path.iter().next() {
                Some(serde_path_to_error::Segment::Seq { index }) => Some(*index),
                _ => None,
            };
            let path = path.to_string();
            let detail = e.inner().to_string();
            ApiError {
                field: (path != ".").then_some(path),
                index,
                ..ApiError::bad_request(format!("the body is not valid JSON of a {what}: {detail}"))
            }
        }
        // Unreachable in practice (the same input, the same deserializer); say what failed.
        Ok(_) => ApiError::bad_request(format!("the body is not valid JSON of a {what}: {plain}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Reads.

async fn federation(State(state): State<AppState>) -> Json<serde_json::Value> {
    let genesis = state.ledger.genesis();
    Json(json!({
        "federation_id": genesis.id(),
        "name": genesis.body().name,
        "registrar": genesis.registrar(),
        "utc_offset_minutes": genesis.body().utc_offset_minutes,
        "genesis": data_encoding::BASE64.encode(genesis.bytes()),
    }))
}

async fn members(State(state): State<AppState>) -> Json<serde_json::Value> {
    let now = now_unix_ms();
    let membership = state.ledger.membership();
    let members: Vec<_> = membership
        .members()
        .map(|m| {
            json!({
                "org": m.org,
                "name": m.name,
                "roles": m.roles,
                "suspended": m.suspended_at(now),
                "keys": m.keys.iter().map(|k| json!({
                    "kid": k.kid,
                    "public_key": k.public_key,
                    "valid_from": k.valid_from,
                    "revoked_from": k.revoked_from,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!(members))
}

async fn chains(State(state): State<AppState>) -> Json<serde_json::Value> {
    let chains: Vec<_> = state
        .ledger
        .store()
        .chains()
        .into_iter()
        .map(|c| json!({"chain": c.chain, "size": c.size, "head": c.head, "root": c.root}))
        .collect();
    Json(json!(chains))
}

#[derive(Deserialize)]
struct Page {
    from: Option<u64>,
    limit: Option<usize>,
    /// The largest body the caller accepts (a replicating peer sends its own limit).
    max_bytes: Option<usize>,
}

/// The largest page body `/entries` builds, whatever the caller accepts: 1000 entries of up
/// to 64 KiB each would otherwise make a 64 MiB body, more than a peer takes by default.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

async fn entries(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let chain = org_path(&chain)?;
    let max = state.config.limits.max_page_entries;
    let limit = page.limit.unwrap_or(max).min(max);
    // The array's head takes at most 9 bytes of the budget.
    let max_bytes = page
        .max_bytes
        .unwrap_or(MAX_PAGE_BYTES)
        .min(MAX_PAGE_BYTES)
        .saturating_sub(9);
    // The stored bytes as they are, straight into the body: nothing is decoded or copied
    // per entry (the array's head, whose length depends on the count, goes in front after).
    let mut items = CborWriter::new();
    let count = state.ledger.store().for_each_entry(
        &chain,
        page.from.unwrap_or(0),
        limit,
        max_bytes,
        |bytes| {
            items.bytes(bytes);
        },
    )?;
    let mut w = CborWriter::new();
    w.buf.reserve(9 + items.buf.len());
    w.head(major::ARRAY, count as u64);
    w.raw(&items.buf);
    Ok(cbor_response(w.into_bytes(), "application/cbor"))
}

async fn entry(
    State(state): State<AppState>,
    Path((chain, seq)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    let chain = org_path(&chain)?;
    let bytes = state
        .ledger
        .store()
        .entry(&chain, seq)?
        .ok_or_else(|| ApiError::not_found(format!("{chain} has no entry {seq}")))?;
    Ok(cbor_response(bytes, "application/cbor"))
}

async fn checkpoint(
    State(state): State<AppState>,
    Path(chain): Path<String>,
) -> Result<Response, ApiError> {
    let chain = org_path(&chain)?;
    let checkpoint = state
        .ledger
        .store()
        .latest_checkpoint(&chain)?
        .ok_or_else(|| ApiError::not_found(format!("no checkpoint of {chain}")))?;
    Ok(cbor_response(
        checkpoint.bytes().to_vec(),
        "application/cose; cose-type=\"cose-sign1\"",
    ))
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    size: Option<u64>,
}

fn hexes(path: &[[u8; 32]]) -> Vec<String> {
    path.iter()
        .map(|h| data_encoding::HEXLOWER.encode(h))
        .collect()
}

async fn inclusion(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chain = org_path(&chain)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.ledger.store();
    let chain_size = store.chain_size(&chain);
    let size = q.size.unwrap_or(chain_size);
    if size == 0 || size > chain_size || q.index >= size {
        return Err(ApiError::not_found(format!(
            "{chain} holds {chain_size} entries; no proof for index {} at size {size}",
            q.index
        )));
    }
    let path = store.inclusion_proof(&chain, q.index, size)?;
    let leaf =
        rmledger_schema::entry::leaf_hash(&store.entry(&chain, q.index)?.unwrap_or_default());
    Ok(Json(json!({
        "index": q.index, "size": size, "leaf_hash": leaf, "root": store.root(&chain, size)?, "path": hexes(&path),
    })))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

async fn consistency(
    State(state): State<AppState>,
    Path(chain): Path<String>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chain = org_path(&chain)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.ledger.store();
    let chain_size = store.chain_size(&chain);
    let to = q.to.unwrap_or(chain_size);
    if q.from == 0 || q.from > to || to > chain_size {
        return Err(ApiError::not_found(format!(
            "{chain} holds {chain_size} entries; no proof from {} to {to} (from must be ≥ 1)",
            q.from
        )));
    }
    let path = store.consistency_proof(&chain, q.from, to)?;
    Ok(Json(json!({
        "from": q.from, "to": to, "root_from": store.root(&chain, q.from)?, "root_to": store.root(&chain, to)?, "path": hexes(&path),
    })))
}

#[derive(Deserialize)]
struct CertificateQuery {
    code: Option<String>,
    batch: Option<String>,
}

async fn certificates(
    State(state): State<AppState>,
    Query(q): Query<CertificateQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.ledger.store();
    let ids = match &q.code {
        Some(code) => store.certificates_by_code(code, q.batch.as_deref())?,
        None => store.all_certificates()?,
    };
    let now = now_unix_ms();
    let offset = state.ledger.utc_offset_minutes();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids.iter().take(1000) {
        if let Some(cert) = state.ledger.certificate(id)? {
            let current = &cert.current().certificate;
            out.push(json!({
                "id": id, "code": current.code, "batch": current.batch, "name": current.name,
                "producer": cert.producer, "status": cert.status_at(now, offset),
            }));
        }
    }
    Ok(Json(json!(out)))
}

async fn certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = cert_path(&id)?;
    let cert = state.ledger.certificate(&id)?.ok_or_else(|| {
        ApiError::not_found(format!("certificate {id} is not known to this node"))
    })?;
    let now = now_unix_ms();
    let offset = state.ledger.utc_offset_minutes();
    Ok(Json(json!({
        "id": id,
        "status": cert.status_at(now, offset),
        "expiry_unix_ms": cert.current().expiry_unix_ms(offset),
        "state": &*cert,
    })))
}

async fn bundle(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = cert_path(&id)?;
    let bundle = build_bundle(&state.ledger, &id)?;
    let bytes = bundle.encode().map_err(ApiError::internal)?;
    Ok(cbor_response(bytes, "application/cbor"))
}

/// Every stored entry of the certificate's life with a receipt against its chain's latest
/// checkpoint, and the registrar chain up to its latest checkpoint. Entries newer than their
/// chain's checkpoint cannot be proven yet and are left out.
/// The rule id of the 409 a bundle request gets while this node's copy of a chain is behind an
/// anchor of it that the node already holds: transient, so clients retry it.
pub const BUNDLE_BEHIND: &str = "bundle-behind";

pub fn build_bundle(ledger: &Ledger, id: &CertificateId) -> Result<Bundle, ApiError> {
    let store = ledger.store();
    let events = store.certificate_events(id)?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!(
            "certificate {id} is not known to this node"
        )));
    }
    let registrar = ledger.genesis().registrar();
    let registrar_checkpoint = store.latest_checkpoint(registrar)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this node holds no checkpoint of the registrar's chain yet",
        )
    })?;
    let registrar_size = registrar_checkpoint.body().size;
    // The registrar's membership entries up to its checkpoint, each with a receipt, and the
    // proof of how many there are (its certificate map under the membership key).
    let registrar_map = ledger
        .cert_maps()
        .map_at(store, registrar, registrar_size)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let membership_proof = registrar_map.prove(&membership_key());
    let counted = registrar_map.get(&membership_key()).map_or(0, |t| t.count);
    let mut seqs: Vec<u64> = ledger
        .membership_seqs()
        .into_iter()
        .filter(|&seq| seq < registrar_size)
        .collect();
    if seqs.len() as u64 != counted {
        // The ledger has not applied the newest registrar entries yet: find them on the chain.
        seqs.clear();
        for seq in 0..registrar_size {
            let bytes = store
                .entry(registrar, seq)?
                .ok_or_else(|| ApiError::internal(format!("{registrar}/{seq} missing")))?;
            let entry = Entry::decode(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
            if entry.record().changes_membership() {
                seqs.push(seq);
            }
        }
    }
    // The members as the bundle's membership entries list them: the verifier wants a section
    // for each of their chains, and no other.
    let mut membership = Membership::new(ledger.genesis());
    let mut registrar_entries = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let bytes = store
            .entry(registrar, seq)?
            .ok_or_else(|| ApiError::internal(format!("{registrar}/{seq} missing")))?;
        let entry = Entry::decode(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
        membership
            .apply_membership_entry(&entry)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let path = store.inclusion_proof(registrar, seq, registrar_size)?;
        registrar_entries.push(BundleEntry {
            entry: Blob(bytes),
            receipt: Blob(registrar_checkpoint.receipt(seq, &path)),
        });
    }
    // Each chain as of its latest checkpoint: the checkpoint, and what its certificate map
    // holds for the certificate at that size.
    let mut checkpoints = std::collections::HashMap::new();
    let mut chains = Vec::new();
    let mut orgs: Vec<OrgId> = membership.members().map(|m| m.org.clone()).collect();
    orgs.sort();
    for org in orgs {
        let checkpoint = if &org == registrar {
            Some(registrar_checkpoint.clone())
        } else {
            store.latest_checkpoint(&org)?
        };
        let held = checkpoint.as_ref().map_or(0, |c| c.body().size);
        // The largest size the registrar's anchors (within its checkpoint) name for the chain:
        // a section older than that would be a stale snapshot.
        let anchored = store
            .anchors_upto(&org, u64::MAX, ANCHOR_CANDIDATES)?
            .into_iter()
            .filter(|a| &a.witness == registrar && a.seq < registrar_size)
            .map(|a| a.size)
            .max()
            .unwrap_or(0);
        if anchored > held {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the registrar has anchored chain {org} at size {anchored}, but this node holds a checkpoint of it only up to size {held}; try again once it has caught up"
                ),
            );
            error.rule = Some(BUNDLE_BEHIND.to_owned());
            return Err(error);
        }
        let certs = match &checkpoint {
            Some(c) => Some(
                ledger
                    .cert_maps()
                    .map_at(store, &org, c.body().size)
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .prove(id),
            ),
            None => None,
        };
        chains.push(BundleChain {
            certs,
            chain: org.clone(),
            checkpoint: checkpoint.as_ref().map(|c| Blob(c.bytes().to_vec())),
        });
        checkpoints.insert(org, checkpoint);
    }
    let mut entries = Vec::with_capacity(events.len());
    for (chain, seq) in events {
        // Entries past the chain's checkpoint are not in the snapshot the bundle is.
        let Some(Some(checkpoint)) = checkpoints.get(&chain) else {
            continue;
        };
        let size = checkpoint.body().size;
        if seq >= size {
            continue;
        }
        let bytes = store
            .entry(&chain, seq)?
            .ok_or_else(|| ApiError::internal(format!("{chain}/{seq} missing")))?;
        let path = store.inclusion_proof(&chain, seq, size)?;
        entries.push(BundleEntry {
            entry: Blob(bytes),
            receipt: Blob(checkpoint.receipt(seq, &path)),
        });
    }
    let anchors = bundle_anchors(store, &membership, &checkpoints)?;
    Ok(Bundle {
        version: 1,
        cert: *id,
        chains,
        anchors,
        entries,
        genesis: Blob(ledger.genesis().bytes().to_vec()),
        registrar: registrar_entries,
        membership: membership_proof,
        registrar_checkpoint: Blob(registrar_checkpoint.bytes().to_vec()),
    })
}

/// Anchor candidates looked at per chain before giving up on one (an anchor whose entry lies
/// past its witness's checkpoint cannot be proven by the bundle).
const ANCHOR_CANDIDATES: usize = 8;

/// For each chain section with a checkpoint, the newest anchor this node holds (from any
/// witness's chain) naming that chain at a size up to the checkpoint's, with a receipt to the
/// witness's checkpoint in the bundle and the consistency proof from the anchored size to the
/// section's. A chain no such anchor names gets none. Bounded work: one index range read and at
/// most [`ANCHOR_CANDIDATES`] entries per chain.
fn bundle_anchors(
    store: &crate::storage::Store,
    membership: &Membership,
    checkpoints: &std::collections::HashMap<OrgId, Option<Checkpoint>>,
) -> Result<Vec<BundleAnchor>, ApiError> {
    let mut chains: Vec<(&OrgId, &Checkpoint)> = checkpoints
        .iter()
        .filter_map(|(chain, c)| Some((chain, c.as_ref()?)))
        .collect();
    chains.sort_by(|a, b| a.0.cmp(b.0));
    let mut anchors = Vec::new();
    for (chain, checkpoint) in chains {
        let size = checkpoint.body().size;
        for anchor in store.anchors_upto(chain, size, ANCHOR_CANDIDATES)? {
            if anchor.size == 0 {
                break;
            }
            // The anchor's entry must lie within its witness's checkpoint in the bundle.
            let Some(Some(witness)) = checkpoints.get(&anchor.witness) else {
                continue;
            };
            let witness_size = witness.body().size;
            if anchor.seq >= witness_size {
                continue;
            }
            let Some(bytes) = store.entry(&anchor.witness, anchor.seq)? else {
                continue;
            };
            // Signed by a key the bundle's membership knows (a key enrolled after the
            // registrar's checkpoint would not verify), and agreeing with our copy (an anchor
            // that contradicts it is fork evidence, reported elsewhere, not a proof).
            let verifies =
                Entry::decode(&bytes).is_ok_and(|entry| membership.verify_entry(&entry).is_ok());
            if !verifies || store.root(chain, anchor.size).ok() != Some(anchor.root) {
                continue;
            }
            let consistency = if anchor.size == size {
                Vec::new()
            } else {
                store
                    .consistency_proof(chain, anchor.size, size)?
                    .into_iter()
                    .map(TreeHash)
                    .collect()
            };
            let path = store.inclusion_proof(&anchor.witness, anchor.seq, witness_size)?;
            anchors.push(BundleAnchor {
                entry: Blob(bytes),
                receipt: Blob(witness.receipt(anchor.seq, &path)),
                consistency,
            });
            break;
        }
    }
    Ok(anchors)
}

async fn notify(State(state): State<AppState>) -> StatusCode {
    state.replication.notify();
    StatusCode::ACCEPTED
}

/// `GET /v1/audit/findings`: the audit report of this node's replica (the same JSON as
/// `rmledger audit --json`), from the incremental auditor in [`NodeAudit`].
async fn audit_findings(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report =
        tokio::task::spawn_blocking(move || state.audit.report(&state.ledger, now_unix_ms()))
            .await
            .map_err(|e| ApiError::internal(format!("the audit task failed: {e}")))??;
    Ok(Json(&*report).into_response())
}

async fn evidence(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!(state.replication.evidence()))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(state.ledger.store());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

/// The OpenAPI document, generated from [`ROUTES`].
pub fn openapi_document() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let params: Vec<_> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "summary": summary,
            "parameters": params,
            "responses": {"200": {"description": "success"}, "default": {"description": "error: {error, field?, rule?, detail}"}},
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "rmledger node API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    })
}

async fn openapi() -> Json<serde_json::Value> {
    Json(openapi_document())
}
