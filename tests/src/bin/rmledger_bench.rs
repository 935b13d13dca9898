//! `rmledger-bench`: a load generator for `POST /v1/records` and a raw Ed25519 rate probe.
//!
//! * `append` runs N concurrent writers against a node for S seconds. Each writer owns one
//!   keep-alive HTTP/1.1 connection and sends its next record only when the previous one was
//!   acknowledged (closed loop), so N is the number of requests in flight. It prints one JSON
//!   object: acknowledged appends per second and the p50/p99/max acknowledgement latency.
//! * `sign-rate` measures `SigningKey::sign` and `verify_strict` over a ~600-byte message, and
//!   `Entry::sign` of a small record, on one thread, so the append rate can be read as a ratio
//!   of what this machine's CPU can sign.
//!
//! The HTTP client is a deliberately minimal one written on `tokio::net::TcpStream`: the
//! workspace's reqwest is built without a rustls crypto provider (building a client panics),
//! and on a 2-core machine every cycle the load generator spends is a cycle the node does not
//! get, so the leanest client gives the node's figure the least distortion. It speaks only
//! what the node answers: `Content-Length` bodies, keep-alive.
//!
//! Everything is bounded: the run ends at its deadline, each request has a timeout, and only
//! 127.0.0.1-style `http://host:port` URLs are accepted.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use ed25519_dalek::{Signer, SigningKey};
use rmledger_schema::date::Date;
use rmledger_schema::decimal::Decimal;
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::ids::{CertificateId, EntryId, FederationId, OrgId, TreeHash};
use rmledger_schema::records::*;
use rmledger_schema::rmcode::RmCode;
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(
    name = "rmledger-bench",
    about = "Load generator for rmledger-node appends, and the raw Ed25519 rate of this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop writers POSTing records; prints JSON with appends/s and latency percentiles.
    Append {
        /// The node's base URL, e.g. http://127.0.0.1:7300 (plain HTTP only).
        #[arg(long)]
        url: String,
        /// An operator token of the node.
        #[arg(long, env = "RMLEDGER_TOKEN", hide_env_values = true)]
        token: String,
        /// Concurrent writers (connections), each with one request in flight.
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// What to write: small anchors (valid for any member) or a mix of certificate
        /// registrations, verifications, stability checks and anchors (needs a node with the
        /// producer and institute roles).
        #[arg(long, value_enum, default_value_t = Mix::Anchor)]
        mix: Mix,
        /// The chain named in anchors: by default one the node does not hold, since an anchor
        /// of a held chain must carry that chain's true root (the generator's are made up).
        #[arg(long, default_value = "bench-ghost")]
        chain: String,
        /// Runtime threads of the load generator (it shares the machine with the node).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Give up on one request after this long (counted as an error).
        #[arg(long, default_value_t = 10.0)]
        request_timeout: f64,
        /// Records per request: 1 posts to `/v1/records`, more to `/v1/records/batch`.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Raw Ed25519 sign and verify_strict rates on one thread; prints JSON.
    SignRate {
        /// Seconds for each of the measurements.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mix {
    /// `{"Anchor": {"root", "size", "chain"}}`, ~130 bytes of JSON.
    Anchor,
    /// Per ten writes: 1 BatchRegistered (~1.5 KB), 5 ValueVerification, 2 StabilityCheck,
    /// 2 Anchor.
    Realistic,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Append {
            url,
            token,
            writers,
            seconds,
            mix,
            chain,
            threads,
            request_timeout,
            batch,
        } => {
            anyhow::ensure!((1..=1024).contains(&writers), "--writers must be 1..=1024");
            anyhow::ensure!((1..=1000).contains(&batch), "--batch must be 1..=1000");
            anyhow::ensure!(
                seconds > 0.0 && seconds <= 3600.0,
                "--seconds must be in (0, 3600]"
            );
            let target = Target::parse(&url)?;
            let chain = OrgId::new(&chain)?;
            // One thread (the default): a current-thread runtime, which wakes a task without
            // the work-stealing scheduler's cross-thread hand-offs; the generator's CPU is
            // taken from the same 2 cores as the node's.
            let runtime = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()?
            };
            let report = runtime.block_on(append(AppendRun {
                target,
                token,
                writers,
                duration: Duration::from_secs_f64(seconds),
                mix,
                chain,
                request_timeout: Duration::from_secs_f64(request_timeout),
                batch,
            }))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::SignRate { seconds } => {
            anyhow::ensure!(
                seconds > 0.0 && seconds <= 600.0,
                "--seconds must be in (0, 600]"
            );
            println!(
                "{}",
                serde_json::to_string(&sign_rate(Duration::from_secs_f64(seconds))?)?
            );
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sign-rate

/// Runs `op` in rounds of 64 until `budget` passes; returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    // A short warm-up so caches and the CPU clock settle.
    for i in 0..64 {
        op(i);
    }
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            op(done);
            done += 1;
        }
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn sign_rate(budget: Duration) -> anyhow::Result<serde_json::Value> {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    // About the size of a signed registration's protected bytes.
    let mut message: Vec<u8> = (0..600u32).map(|i| (i * 31 % 251) as u8).collect();

    let signs = rate(budget, |i| {
        message[0] = i as u8;
        std::hint::black_box(key.sign(std::hint::black_box(&message)));
    });
    message[0] = 0;
    let signature_for_zero = key.sign(&message);
    let verifies = rate(budget, |_| {
        public
            .verify_strict(
                std::hint::black_box(&message),
                std::hint::black_box(&signature_for_zero),
            )
            .expect("a signature just made verifies");
    });

    // What the node's writer does per entry: canonical CBOR of the payload, the COSE
    // structure, one signature and the entry id (BLAKE3).
    let federation = FederationId::from_hex(&"ab".repeat(32))?;
    let chain = OrgId::new("jxim")?;
    let entry_signs = rate(budget, |i| {
        let payload = Payload {
            version: VERSION,
            operator: "admin".into(),
            federation,
            record: Record::Anchor(Anchor {
                root: TreeHash([i as u8; 32]),
                size: i,
                chain: chain.clone(),
            }),
            seq: i + 1,
            prev: Some(EntryId([(i % 251) as u8; 32])),
            time_unix_ms: 1_767_225_600_000 + i,
            chain: chain.clone(),
        };
        std::hint::black_box(Entry::sign(&key, payload).expect("signs"));
    });

    Ok(json!({
        "threads": 1,
        "message_bytes": message.len(),
        "signs_per_s": signs.round(),
        "sign_us": round2(1e6 / signs),
        "verify_strict_per_s": verifies.round(),
        "verify_us": round2(1e6 / verifies),
        "entry_signs_per_s": entry_signs.round(),
        "entry_sign_us": round2(1e6 / entry_signs),
    }))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// append

struct AppendRun {
    target: Target,
    token: String,
    writers: usize,
    duration: Duration,
    mix: Mix,
    chain: OrgId,
    request_timeout: Duration,
    batch: usize,
}

#[derive(Default)]
struct WriterResult {
    /// Acknowledgement latencies of 201 answers, microseconds.
    latencies_us: Vec<u32>,
    errors: u64,
    /// The first few refusals, for the operator to see why.
    samples: Vec<String>,
}

async fn append(run: AppendRun) -> anyhow::Result<serde_json::Value> {
    let before = scrape(&run.target).await.ok();
    let started = Instant::now();
    let deadline = started + run.duration;
    // Names this run's batches apart from earlier runs' against the same node, whose
    // registrations would otherwise be refused as duplicates.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut tasks = Vec::with_capacity(run.writers);
    for w in 0..run.writers {
        let target = run.target.clone();
        let auth = format!("Bearer {}", run.token);
        let chain = run.chain.clone();
        let (mix, timeout, batch) = (run.mix, run.request_timeout, run.batch);
        let records = Records::new(run_id, w, chain, mix, batch);
        tasks.push(tokio::spawn(async move {
            writer(target, auth, records, deadline, timeout).await
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut samples = Vec::new();
    for task in tasks {
        let result = task.await?;
        latencies.extend(result.latencies_us);
        errors += result.errors;
        for s in result.samples {
            if samples.len() < 5 {
                samples.push(s);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(&run.target).await.ok();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        round2(f64::from(latencies[i]) / 1000.0)
    };
    // Every record of a request is acknowledged by its answer, with its latency.
    let acknowledged = (latencies.len() * run.batch) as u64;
    let mut report = json!({
        "writers": run.writers,
        "batch": run.batch,
        "mix": match run.mix { Mix::Anchor => "anchor", Mix::Realistic => "realistic" },
        "acknowledged": acknowledged,
        "errors": errors,
        "seconds": round2(elapsed),
        "appends_per_s": (acknowledged as f64 / elapsed).round(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies.last().map_or(0.0, |&us| round2(f64::from(us) / 1000.0)),
    });
    // The node's own view of the run: how many group commits, their mean size and duration.
    if let (Some(before), Some(after)) = (before, after) {
        let commits = after.commits - before.commits;
        let appended = after.appended - before.appended;
        let commit_seconds = after.commit_seconds - before.commit_seconds;
        report["node_commits"] = json!(commits);
        report["node_mean_batch"] = json!(if commits > 0 {
            round2(appended as f64 / commits as f64)
        } else {
            0.0
        });
        report["node_mean_commit_ms"] = json!(if commits > 0 {
            round2(commit_seconds * 1000.0 / commits as f64)
        } else {
            0.0
        });
    }
    if !samples.is_empty() {
        report["error_samples"] = json!(samples);
    }
    Ok(report)
}

/// One closed-loop writer: its own connection, one request in flight, until the deadline.
async fn writer(
    target: Target,
    auth: String,
    mut records: Records,
    deadline: Instant,
    timeout: Duration,
) -> WriterResult {
    let mut result = WriterResult::default();
    let mut connection: Option<Connection> = None;
    let path = if records.batch > 1 {
        "/v1/records/batch"
    } else {
        "/v1/records"
    };
    let mut consecutive_failures = 0u32;
    while Instant::now() < deadline {
        let body = records.next();
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            if connection.is_none() {
                connection = Some(Connection::open(&target).await?);
            }
            let c = connection.as_mut().expect("just opened");
            c.request("POST", path, Some(&auth), &body).await
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {timeout:?}")));
        match outcome {
            Ok(response) if response.status == 201 => {
                let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                result.latencies_us.push(us);
                records.acknowledged(&response.body);
                consecutive_failures = 0;
            }
            Ok(response) => {
                result.errors += 1;
                if result.samples.len() < 3 {
                    result.samples.push(format!(
                        "{} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                if response.close {
                    connection = None;
                }
                consecutive_failures += 1;
            }
            Err(e) => {
                result.errors += 1;
                if result.samples.len() < 3 {
                    result.samples.push(format!("{e:#}"));
                }
                connection = None;
                consecutive_failures += 1;
            }
        }
        if consecutive_failures > 0 {
            // Back off a little so a refusing node is not spun against.
            let pause = Duration::from_millis(u64::from(consecutive_failures.min(50)) * 2);
            tokio::time::sleep(pause).await;
        }
    }
    result
}

/// The records one writer sends.
struct Records {
    run_id: u64,
    writer: usize,
    chain: OrgId,
    mix: Mix,
    /// Records per request.
    batch: usize,
    n: u64,
    /// The certificate this writer registered last (realistic mix).
    certificate: Option<CertificateId>,
    /// Where the last registration is in the request in flight, if it has one.
    registration: Option<usize>,
}

impl Records {
    fn new(run_id: u64, writer: usize, chain: OrgId, mix: Mix, batch: usize) -> Self {
        Self {
            run_id,
            writer,
            chain,
            mix,
            batch,
            n: 0,
            certificate: None,
            registration: None,
        }
    }

    /// The next request's body: one record, or a JSON array of `batch` records.
    fn next(&mut self) -> Vec<u8> {
        self.registration = None;
        if self.batch == 1 {
            let record = self.record(0);
            return serde_json::to_vec(&record).expect("records serialise");
        }
        let records: Vec<Record> = (0..self.batch).map(|i| self.record(i)).collect();
        serde_json::to_vec(&records).expect("records serialise")
    }

    /// The record at `index` of the next request.
    fn record(&mut self, index: usize) -> Record {
        let n = self.n;
        self.n += 1;
        let anchor = |n: u64, chain: &OrgId, writer: usize| {
            // A distinct root per request: writer and sequence in the first bytes.
            let mut root = [0u8; 32];
            root[..8].copy_from_slice(&(writer as u64).to_be_bytes());
            root[8..16].copy_from_slice(&n.to_be_bytes());
            Record::Anchor(Anchor {
                root: TreeHash(root),
                size: n + 1,
                chain: chain.clone(),
            })
        };
        match (self.mix, self.certificate) {
            (Mix::Anchor, _) => anchor(n, &self.chain, self.writer),
            (Mix::Realistic, cert) => match (n % 10, cert) {
                (0, _) | (_, None) => {
                    self.registration = Some(index);
                    Record::BatchRegistered(certificate(self.run_id, self.writer, n))
                }
                (1..=5, Some(cert)) => Record::ValueVerification(verification(cert, n)),
                (6 | 7, Some(cert)) => Record::StabilityCheck(stability(cert, n)),
                _ => anchor(n, &self.chain, self.writer),
            },
        }
    }

    /// Takes note of a 201: the id of a certificate the request registered.
    fn acknowledged(&mut self, body: &[u8]) {
        let Some(index) = self.registration else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let answer = if self.batch == 1 { &v } else { &v[index] };
        if let Some(id) = answer["id"].as_str()
            && let Ok(id) = CertificateId::from_hex(id)
        {
            self.certificate = Some(id);
        }
    }
}

fn dec(text: &str) -> Decimal {
    Decimal::parse(text).expect("decimal literal")
}

/// A soil CRM certificate of ~1.5 KB of JSON; the batch name is unique per run, writer and
/// request.
fn certificate(run_id: u64, writer: usize, n: u64) -> Certificate {
    Certificate {
        code: RmCode::parse("GBW(E)082345").expect("code"),
        kind: DocumentKind::Certificate,
        name: "土壤成分分析标准物质".into(),
        batch: format!("bench-{run_id}-{writer}-{n}"),
        units: SerialSet::new(vec![SerialRange::parse("S-0001..S-0200").expect("range")])
            .expect("set"),
        matrix: Some("soil".into()),
        values: ["Cd", "Pb", "As", "Hg"]
            .iter()
            .map(|quantity| PropertyValue {
                kind: ValueKind::Certified,
                unit: Unit::parse("mg/kg").expect("unit"),
                basis: Some("dry mass".into()),
                value: dec("0.21"),
                method: Some("ICP-MS".into()),
                quantity: (*quantity).into(),
                uncertainty: Some(Uncertainty {
                    expanded: dec("0.01"),
                    relative: false,
                    coverage_factor: dec("2"),
                    coverage_probability: None,
                }),
            })
            .collect(),
        name_en: Some("Soil CRM".into()),
        storage: Some("below 30 °C, dry".into()),
        handling: Some("homogenise before use; minimum sample 0.25 g".into()),
        validity: Validity::FromCharacterization(
            rmledger_schema::date::Period::parse("P60M").expect("period"),
        ),
        issue_date: Date::parse("2025-09-01").expect("date"),
        supersedes: None,
        attachments: Vec::new(),
        intended_use: "calibration and method validation for soil analysis".into(),
        traceability: Some("traceable to the SI through NIM primary standards".into()),
        unit_content: None,
        after_opening: AfterOpening::UntilExpiry,
        commutability: None,
        health_safety: None,
        min_sample_size: None,
        approving_officer: Some(Officer {
            name: "Li Wei".into(),
            function: "technical director".into(),
        }),
        grading_certificate: None,
        characterization_date: Some(Date::parse("2025-06-30").expect("date")),
    }
}

fn verification(cert: CertificateId, n: u64) -> ValueVerification {
    ValueVerification {
        cert,
        unit: Unit::parse("mg/kg").expect("unit"),
        value: dec(["0.20", "0.21", "0.22"][(n % 3) as usize]),
        method: Some("ICP-MS".into()),
        report: Some(format!("JXIM-2026-{n}")),
        sample: Some("S-0010".into()),
        verdict: None,
        quantity: ["Cd", "Pb", "As", "Hg"][(n % 4) as usize].into(),
        revision: 1,
        uncertainty: Uncertainty {
            expanded: dec("0.02"),
            relative: false,
            coverage_factor: dec("2"),
            coverage_probability: None,
        },
    }
}

fn stability(cert: CertificateId, n: u64) -> StabilityCheck {
    StabilityCheck {
        cert,
        unit: Unit::parse("mg/kg").expect("unit"),
        value: dec("0.21"),
        quantity: ["Cd", "Pb"][(n % 2) as usize].into(),
        conclusion: StabilityConclusion::Stable,
        measured_on: Date::parse("2026-01-15").expect("date"),
        uncertainty: None,
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client.

#[derive(Clone)]
struct Target {
    /// host:port
    authority: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("only http:// URLs are supported: {url}"))?;
        let authority = rest.trim_end_matches('/');
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "give the node's base URL (http://host:port), not {url}"
        );
        Ok(Self {
            authority: authority.to_owned(),
        })
    }
}

struct Response {
    status: u16,
    body: Vec<u8>,
    /// The server will close the connection after this response.
    close: bool,
}

struct Connection {
    stream: TcpStream,
    host: String,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: target.authority.clone(),
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(4096),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        use std::io::Write;
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        )?;
        if let Some(auth) = auth {
            write!(self.request, "Authorization: {auth}\r\n")?;
        }
        if method == "POST" {
            write!(
                self.request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            anyhow::ensure!(self.buf.len() < 64 * 1024, "response head too large");
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("chunked responses are not supported by this client");
            }
        }
        let length = length.ok_or_else(|| anyhow::anyhow!("response without Content-Length"))?;
        anyhow::ensure!(length <= 16 << 20, "response body too large");
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Response {
            status,
            body,
            close,
        })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the node closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counters read from the node's `/metrics`.
struct NodeCounters {
    appended: u64,
    commits: u64,
    commit_seconds: f64,
}

async fn scrape(target: &Target) -> anyhow::Result<NodeCounters> {
    let mut c = Connection::open(target).await?;
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        c.request("GET", "/metrics", None, b""),
    )
    .await??;
    anyhow::ensure!(
        response.status == 200,
        "/metrics answered {}",
        response.status
    );
    let text = String::from_utf8(response.body)?;
    let value = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .ok_or_else(|| anyhow::anyhow!("{name} missing from /metrics"))?
            .trim()
            .parse::<f64>()
            .map_err(Into::into)
    };
    Ok(NodeCounters {
        appended: value("rmledger_appended_entries_total")? as u64,
        commits: value("rmledger_commits_total")? as u64,
        commit_seconds: value("rmledger_commit_seconds_sum")?,
    })
}
