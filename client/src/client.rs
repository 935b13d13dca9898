//! [`Client`]: one typed async method per route of the node's HTTP API (docs/api.md), with a
//! connect and a request timeout, a user agent, and a bound on every response body.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use rmledger_schema::bundle::{Bundle, MAX_BUNDLE_BYTES};
use rmledger_schema::checkpoint::{Checkpoint, MAX_CHECKPOINT_BYTES};
use rmledger_schema::entry::{Entry, MAX_ENTRY_BYTES};
use rmledger_schema::federation::{Genesis, MAX_GENESIS_BYTES};
use rmledger_schema::ids::{
    CertificateId, EntryId, FederationId, KeyId, OrgId, PublicKey, TreeHash,
};
use rmledger_schema::records::{Blob, Record, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::view::CertificateView;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer read.
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
/// The largest error body read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// What `POST /v1/records` answers: where the record was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub id: EntryId,
    pub chain: OrgId,
    pub seq: u64,
}

/// `GET /v1/federation`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationInfo {
    pub federation_id: FederationId,
    pub name: String,
    pub registrar: OrgId,
    pub utc_offset_minutes: i32,
    /// The genesis document, base64.
    pub genesis: String,
}

impl FederationInfo {
    /// Decodes the genesis and checks that it is the federation the node says it is.
    pub fn decode_genesis(&self) -> Result<Genesis, String> {
        let bytes = data_encoding::BASE64
            .decode(self.genesis.as_bytes())
            .map_err(|e| format!("genesis is not base64: {e}"))?;
        if bytes.len() > MAX_GENESIS_BYTES {
            return Err("genesis too large".into());
        }
        let genesis = Genesis::decode(&bytes).map_err(|e| e.to_string())?;
        if genesis.id() != self.federation_id {
            return Err(format!(
                "the genesis has id {}, but the node says {}",
                genesis.id(),
                self.federation_id
            ));
        }
        Ok(genesis)
    }
}

/// One key of a member, as `GET /v1/members` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberKeyInfo {
    pub kid: KeyId,
    pub public_key: PublicKey,
    pub valid_from: u64,
    pub revoked_from: Option<u64>,
}

/// `GET /v1/members`: one member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    pub org: OrgId,
    pub name: String,
    pub roles: Vec<Role>,
    pub suspended: bool,
    pub keys: Vec<MemberKeyInfo>,
}

/// `GET /v1/chains`: one chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainInfo {
    pub chain: OrgId,
    pub size: u64,
    pub head: Option<EntryId>,
    pub root: TreeHash,
}

/// `GET /v1/chains/{chain}/proof/inclusion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: TreeHash,
    pub root: TreeHash,
    pub path: Vec<TreeHash>,
}

/// `GET /v1/chains/{chain}/proof/consistency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub root_from: TreeHash,
    pub root_to: TreeHash,
    pub path: Vec<TreeHash>,
}

/// `GET /v1/certificates`: one certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub id: CertificateId,
    pub code: String,
    pub batch: String,
    pub name: String,
    pub producer: OrgId,
    pub status: String,
}

/// `GET /v1/certificates/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub id: CertificateId,
    pub status: String,
    pub expiry_unix_ms: Option<u64>,
    pub state: CertificateView,
}

/// A client of one node.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7300`); `token` authorises writes.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let base = parse_base(base)?;
        // reqwest is built with rustls but without a crypto provider: install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("rmledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The node's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a request and returns the body of a successful answer, at most `limit` bytes.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<u8>, Error> {
        let name = url.to_string();
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            let token = self.token.as_deref().ok_or_else(|| {
                Error::Usage(
                    "writing needs an operator token: --token, RMLEDGER_TOKEN or `rmledger config set --token`"
                        .into(),
                )
            })?;
            request = request
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let network = |e: reqwest::Error| Error::Network {
            url: name.clone(),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(network)?;
        let status = response.status();
        if status.is_success() {
            return read_limited(response, limit, &name).await;
        }
        let body = read_limited(response, MAX_ERROR_BYTES, &name)
            .await
            .unwrap_or_default();
        Err(api_error(status, &body))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let url = self.url(path, query);
        let name = url.to_string();
        let body = self.send(Method::GET, url, None, MAX_JSON_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
            url: name,
            detail: format!("not the expected JSON: {e}"),
        })
    }

    async fn get_bytes(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: usize,
    ) -> Result<(Vec<u8>, String), Error> {
        let url = self.url(path, query);
        let name = url.to_string();
        Ok((self.send(Method::GET, url, None, limit).await?, name))
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    /// `POST /v1/records`: submits a record; the node validates, signs and appends it durably.
    pub async fn post_record(&self, record: &Record) -> Result<Appended, Error> {
        Ok(self.post_json("/v1/records", record, "record").await?.0)
    }

    /// `POST /v1/records/batch`: submits up to 1000 records, appended as consecutive entries,
    /// all or none. A refusal names the record (`Error::Api { index, .. }`).
    pub async fn post_records(&self, records: &[Record]) -> Result<Vec<Appended>, Error> {
        let (appended, url): (Vec<Appended>, _) = self
            .post_json("/v1/records/batch", records, "records")
            .await?;
        if appended.len() != records.len() {
            return Err(Error::BadResponse {
                url,
                detail: format!(
                    "{} records sent, {} acknowledged",
                    records.len(),
                    appended.len()
                ),
            });
        }
        Ok(appended)
    }

    /// POSTs `body` as JSON to `path` and reads the JSON answer; returns it with the URL.
    async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> Result<(T, String), Error> {
        let url = self.url(path, &[]);
        let name = url.to_string();
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::Usage(format!("cannot encode the {what}: {e}")))?;
        let answer = self
            .send(Method::POST, url, Some(body), MAX_JSON_BYTES)
            .await?;
        let value = serde_json::from_slice(&answer).map_err(|e| Error::BadResponse {
            url: name.clone(),
            detail: format!("not the expected JSON: {e}"),
        })?;
        Ok((value, name))
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// `GET /v1/federation`.
    pub async fn federation(&self) -> Result<FederationInfo, Error> {
        self.get_json("/v1/federation", &[]).await
    }

    /// `GET /v1/members`.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, Error> {
        self.get_json("/v1/members", &[]).await
    }

    /// `GET /v1/chains`.
    pub async fn chains(&self) -> Result<Vec<ChainInfo>, Error> {
        self.get_json("/v1/chains", &[]).await
    }

    /// `GET /v1/chains/{chain}/entries`: the exact bytes of a page of entries.
    pub async fn entries(
        &self,
        chain: &OrgId,
        from: u64,
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let mut query = vec![("from", from.to_string())];
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let (bytes, url) = self
            .get_bytes(
                &format!("/v1/chains/{chain}/entries"),
                &query,
                MAX_BUNDLE_BYTES,
            )
            .await?;
        let blobs: Vec<Blob> = rmledger_schema::cbor::from_canonical(&bytes, MAX_BUNDLE_BYTES)
            .map_err(|e| Error::BadResponse {
                url,
                detail: format!("not a CBOR array of entries: {e}"),
            })?;
        Ok(blobs.into_iter().map(|b| b.0).collect())
    }

    /// `GET /v1/chains/{chain}/entries/{seq}`, decoded (signature not checked here).
    pub async fn entry(&self, chain: &OrgId, seq: u64) -> Result<Entry, Error> {
        let (bytes, url) = self
            .get_bytes(
                &format!("/v1/chains/{chain}/entries/{seq}"),
                &[],
                MAX_ENTRY_BYTES,
            )
            .await?;
        Entry::decode(&bytes).map_err(|e| Error::BadResponse {
            url,
            detail: format!("not an entry: {e}"),
        })
    }

    /// `GET /v1/chains/{chain}/checkpoint` as the node served it (for the audit, which turns
    /// bytes that do not decode into a finding); `None` when the chain has no checkpoint.
    pub async fn checkpoint_bytes(&self, chain: &OrgId) -> Result<Option<Vec<u8>>, Error> {
        match self
            .get_bytes(
                &format!("/v1/chains/{chain}/checkpoint"),
                &[],
                MAX_CHECKPOINT_BYTES,
            )
            .await
        {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/chains/{chain}/checkpoint`, decoded (signature not checked here).
    pub async fn checkpoint(&self, chain: &OrgId) -> Result<Checkpoint, Error> {
        let (bytes, url) = self
            .get_bytes(
                &format!("/v1/chains/{chain}/checkpoint"),
                &[],
                MAX_CHECKPOINT_BYTES,
            )
            .await?;
        Checkpoint::decode(&bytes).map_err(|e| Error::BadResponse {
            url,
            detail: format!("not a checkpoint: {e}"),
        })
    }

    /// `GET /v1/chains/{chain}/proof/inclusion`.
    pub async fn inclusion_proof(
        &self,
        chain: &OrgId,
        index: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, Error> {
        let mut query = vec![("index", index.to_string())];
        if let Some(size) = size {
            query.push(("size", size.to_string()));
        }
        self.get_json(&format!("/v1/chains/{chain}/proof/inclusion"), &query)
            .await
    }

    /// `GET /v1/chains/{chain}/proof/consistency`.
    pub async fn consistency_proof(
        &self,
        chain: &OrgId,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, Error> {
        let mut query = vec![("from", from.to_string())];
        if let Some(to) = to {
            query.push(("to", to.to_string()));
        }
        self.get_json(&format!("/v1/chains/{chain}/proof/consistency"), &query)
            .await
    }

    /// `GET /v1/certificates`, optionally by RM code and batch.
    pub async fn certificates(
        &self,
        code: Option<&str>,
        batch: Option<&str>,
    ) -> Result<Vec<CertificateSummary>, Error> {
        let mut query = Vec::new();
        if let Some(code) = code {
            query.push(("code", code.to_string()));
        }
        if let Some(batch) = batch {
            query.push(("batch", batch.to_string()));
        }
        self.get_json("/v1/certificates", &query).await
    }

    /// `GET /v1/certificates/{id}`: the node's view of the certificate.
    pub async fn certificate(&self, id: &CertificateId) -> Result<CertificateInfo, Error> {
        self.get_json(&format!("/v1/certificates/{id}"), &[]).await
    }

    /// `GET /v1/certificates/{id}/bundle`: the proof bundle's exact bytes (not verified here).
    ///
    /// A node whose copy of a chain is briefly behind an anchor it already holds answers 409
    /// `bundle-behind` until replication catches up; that answer is retried for a few seconds.
    pub async fn bundle_bytes(&self, id: &CertificateId) -> Result<Vec<u8>, Error> {
        const ATTEMPTS: u32 = 20;
        const PAUSE: std::time::Duration = std::time::Duration::from_millis(250);
        let path = format!("/v1/certificates/{id}/bundle");
        let mut attempt = 1;
        loop {
            match self.get_bytes(&path, &[], MAX_BUNDLE_BYTES).await {
                Ok((bytes, _)) => return Ok(bytes),
                Err(Error::Api {
                    status: 409,
                    rule: Some(rule),
                    ..
                }) if rule == "bundle-behind" && attempt < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The proof bundle, decoded (not verified: see [`Bundle::verify`]).
    pub async fn bundle(&self, id: &CertificateId) -> Result<Bundle, Error> {
        let bytes = self.bundle_bytes(id).await?;
        Bundle::decode(&bytes).map_err(|e| Error::BadResponse {
            url: self
                .url(&format!("/v1/certificates/{id}/bundle"), &[])
                .to_string(),
            detail: format!("not a bundle: {e}"),
        })
    }

    /// `GET /healthz`: `Ok` when the node answers.
    pub async fn health(&self) -> Result<String, Error> {
        let (bytes, _) = self.get_bytes("/healthz", &[], 1024).await?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (bytes, _) = self.get_bytes("/metrics", &[], MAX_JSON_BYTES).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/openapi.json", &[]).await
    }
}

/// A node URL: `http` or `https`, with a host; a trailing slash is ignored.
pub fn parse_base(text: &str) -> Result<Url, Error> {
    let url =
        Url::parse(text.trim()).map_err(|e| Error::Usage(format!("node URL {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::Usage(format!(
            "node URL {text:?} must be http:// or https:// with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Usage(format!(
            "node URL {text:?} must not have a query or fragment"
        )));
    }
    Ok(url)
}

/// Reads a body of at most `limit` bytes, chunk by chunk, so a hostile node cannot exhaust memory.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    url: &str,
) -> Result<Vec<u8>, Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Error::BadResponse {
            url: url.into(),
            detail: format!("the answer is larger than {limit} bytes"),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::Network {
        url: url.into(),
        detail: error_chain(&e),
    })? {
        if body.len() + chunk.len() > limit {
            return Err(Error::BadResponse {
                url: url.into(),
                detail: format!("the answer is larger than {limit} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    detail: String,
}

fn api_error(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(e) => Error::Api {
            status: status.as_u16(),
            class: e.error,
            field: e.field,
            rule: e.rule,
            index: e.index,
            detail: e.detail,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            class: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            field: None,
            rule: None,
            index: None,
            detail: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        },
    }
}

/// The error and its sources, e.g. "error sending request: connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
