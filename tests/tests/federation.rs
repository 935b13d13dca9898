//! Federation: real node processes on 127.0.0.1 replicating each other's chains, and a hostile
//! peer served by the test itself.
//!
//! - `four_organisations_converge`: a registrar+institute, a producer, a lab and a regulator;
//!   writes at three of them; identical chains and checkpoints everywhere; a producer offline
//!   for a while catches up; a node killed mid-sync resumes; a partition heals.
//! - `hostile_peer_is_detected_and_named`: a bad signature, a broken `prev`, a gap, a revoked
//!   key, a forbidden record kind, garbage and oversize bodies, a hanging peer, a fork and a
//!   wrongly rooted checkpoint; nothing invalid is stored, forks yield evidence and frozen
//!   chains, honest replication goes on.
//! - `contradicted_anchors_are_evidence_even_after_a_restart`: an anchor contradicting a chain
//!   the victim holds is evidence at once; one naming more of a chain than the victim holds
//!   waits in the store, survives a restart and is evidence once the chain catches up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rmledger_schema::checkpoint::{Checkpoint, CheckpointBody};
use rmledger_schema::entry::{Entry, Payload, VERSION};
use rmledger_schema::ids::{CertificateId, EntryId, FederationId, OrgId, PublicKey, TreeHash};
use rmledger_schema::merkle::{MemoryTree, Sha256};
use rmledger_schema::records::{
    Anchor, KeyAdded, KeyRevoked, Received, Record, Shipped, Uncertainty, ValueVerification,
};
use rmledger_schema::testkit;
use rmledger_schema::units::Unit;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Harness: node processes.

use rmledger_tests::TestNode;

/// `rmledger-node init` in `root/<org>` on a port fixed now: the registrar (with `roles`) when
/// `genesis` is `None`.
fn init(root: &Path, org: &str, roles: &[&str], genesis: Option<&Path>) -> TestNode {
    TestNode::init_in(&root.join(org), org, roles, genesis)
}

fn genesis(node: &TestNode) -> PathBuf {
    node.dir().join("genesis.cbor")
}

fn key(node: &TestNode) -> SigningKey {
    rmledger_node::keys::read(&node.dir().join("org.key")).expect("org key")
}

/// Everything the node has logged (stderr, across restarts).
fn log(node: &TestNode) -> String {
    std::fs::read_to_string(node.stderr_log()).unwrap_or_default()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Harness: the API.

async fn post_record(node: &TestNode, record: &Record) -> reqwest::Response {
    client()
        .post(format!("{}/v1/records", node.listen_url()))
        .bearer_auth(node.token())
        .json(&serde_json::to_value(record).unwrap())
        .send()
        .await
        .unwrap()
}

/// Writes a record; panics unless it was appended. Returns the entry id.
async fn write(node: &TestNode, record: Record) -> EntryId {
    let resp = post_record(node, &record).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        status.as_u16(),
        201,
        "{} refused a write: {body}",
        node.org()
    );
    EntryId::from_hex(body["id"].as_str().unwrap()).unwrap()
}

async fn get_json(node: &TestNode, path: &str) -> Value {
    client()
        .get(format!("{}{path}", node.listen_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get_bytes(node: &TestNode, path: &str) -> Option<Vec<u8>> {
    let resp = client()
        .get(format!("{}{path}", node.listen_url()))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(resp.bytes().await.ok()?.to_vec())
}

/// The overview page `/` in a language, as text.
async fn overview(node: &TestNode, lang: &str) -> String {
    let bytes = get_bytes(node, &format!("/?lang={lang}"))
        .await
        .unwrap_or_else(|| panic!("{}: GET / failed", node.org()));
    String::from_utf8(bytes).expect("the overview is UTF-8")
}

/// The row of `chain` in the overview's table of chains (from its name to the end of the row).
fn chain_row(page: &str, chain: &str) -> String {
    let table = ["Last anchor", "最新锚定"]
        .iter()
        .find_map(|header| page.find(header))
        .unwrap_or_else(|| panic!("no table of chains on the overview: {page}"));
    let start = page[table..]
        .find(&format!("<strong>{chain}</strong></td>"))
        .map(|i| table + i)
        .unwrap_or_else(|| panic!("no row for chain {chain} on the overview: {page}"));
    let end = page[start..]
        .find("</tr>")
        .map_or(page.len(), |i| start + i);
    page[start..end].to_string()
}

/// chain → (size, head)
async fn chains(node: &TestNode) -> BTreeMap<String, (u64, String)> {
    get_json(node, "/v1/chains")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["chain"].as_str().unwrap().to_owned(),
                (
                    c["size"].as_u64().unwrap(),
                    c["head"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}

async fn metrics(node: &TestNode) -> String {
    client()
        .get(format!("{}/metrics", node.listen_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric line (`name{labels}`), 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn entries(node: &TestNode, chain: &str) -> Vec<Entry> {
    let bytes = get_bytes(
        node,
        &format!("/v1/chains/{chain}/entries?from=0&limit=100000"),
    )
    .await
    .unwrap_or_default();
    rmledger_node::replicate::decode_byte_strings(&bytes)
        .unwrap()
        .iter()
        .map(|b| Entry::decode(b).unwrap())
        .collect()
}

async fn notify(node: &TestNode) {
    let _ = client()
        .post(format!("{}/v1/notify", node.listen_url()))
        .send()
        .await;
}

/// Polls `$cond` (an expression that may `.await`) every 100 ms until it holds; panics with
/// `$what` after `$secs` seconds.
macro_rules! wait_for {
    ($what:expr, $secs:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        loop {
            if $cond {
                break;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// Waits until every node lists the same chains twice in a row, 1.5 s apart (anchors run
/// every second, so a quiet federation stays equal), then checks every chain's checkpoint is
/// byte-identical everywhere.
async fn converge(nodes: &[&TestNode], limit: Duration) -> BTreeMap<String, (u64, String)> {
    let deadline = Instant::now() + limit;
    let mut last: Option<BTreeMap<String, (u64, String)>> = None;
    loop {
        let mut views = Vec::new();
        for node in nodes {
            views.push(chains(node).await);
        }
        let equal = views.windows(2).all(|w| w[0] == w[1]);
        if equal && last.as_ref() == Some(&views[0]) {
            let view = views.swap_remove(0);
            // Checkpoints converge right after the entries: poll briefly.
            let cp_deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut same = true;
                for chain in view.keys() {
                    let path = format!("/v1/chains/{chain}/checkpoint");
                    let first = get_bytes(nodes[0], &path).await;
                    for node in &nodes[1..] {
                        if get_bytes(node, &path).await != first {
                            same = false;
                        }
                    }
                }
                if same {
                    return view;
                }
                assert!(Instant::now() < cp_deadline, "checkpoints did not converge");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        last = if equal {
            Some(views.swap_remove(0))
        } else {
            None
        };
        if Instant::now() > deadline {
            let mut report = String::new();
            for node in nodes {
                report.push_str(&format!("{}: {:?}\n", node.org(), chains(node).await));
            }
            panic!("nodes did not converge:\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

fn enrol(org: &TestNode, name: &str, roles: &[&str]) -> Record {
    serde_json::from_value(json!({"Enrol": {
        "org": org.org(), "keys": [org.report().public_key], "name": name, "roles": roles,
    }}))
    .unwrap()
}

/// Registrar `jxim` (also institute) plus the joiners given; every honest node peers with
/// every other (and with `extra_peers` for the node named in it); all started and enrolled.
async fn federation(
    root: &Path,
    joiners: &[(&str, &str)],
    anchor_seconds: i64,
    extra: impl Fn(&str, &mut toml::Table),
) -> Vec<TestNode> {
    let registrar = init(root, "jxim", &["institute"], None);
    let genesis = genesis(&registrar);
    let mut nodes = vec![registrar];
    for (org, _) in joiners {
        nodes.push(init(root, org, &[], Some(&genesis)));
    }
    let urls: Vec<String> = nodes.iter().map(TestNode::listen_url).collect();
    for node in &nodes {
        let peers: Vec<String> = urls
            .iter()
            .filter(|u| **u != node.listen_url())
            .cloned()
            .collect();
        node.configure_peers_with(&peers, |t| {
            t.insert("anchor_interval_seconds".into(), anchor_seconds.into());
            extra(node.org(), t);
        });
    }
    for node in &mut nodes {
        node.start();
    }
    for (i, (org, role)) in joiners.iter().enumerate() {
        let record = enrol(&nodes[i + 1], &format!("{org} Ltd"), &[role]);
        write(&nodes[0], record).await;
    }
    // Every joiner learns of its own enrolment by replication.
    for node in &nodes[1..] {
        let me = node.org().to_owned();
        wait_for!(&format!("{me} to see its enrolment"), 30, {
            get_json(node, "/v1/members")
                .await
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["org"] == me.as_str()))
        });
    }
    nodes
}

fn verification(cert: CertificateId, value: &str) -> Record {
    Record::ValueVerification(ValueVerification {
        cert,
        unit: Unit::parse("mg/kg").unwrap(),
        value: testkit::decimal(value),
        method: Some("ICP-MS after microwave digestion".into()),
        report: Some("JXIM-2026-0042".into()),
        sample: Some("S-0007".into()),
        verdict: None,
        quantity: "Cd".into(),
        revision: 1,
        uncertainty: Uncertainty {
            expanded: testkit::decimal("0.02"),
            relative: false,
            coverage_factor: testkit::decimal("2"),
            coverage_probability: None,
        },
    })
}

async fn has_certificate(node: &TestNode, cert: CertificateId) -> bool {
    get_bytes(node, &format!("/v1/certificates/{cert}"))
        .await
        .is_some()
}

// ---------------------------------------------------------------------------------------------
// Convergence, offline producer, restart mid-sync, partition.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_organisations_converge() {
    let t0 = Instant::now();
    let phase = |name: &str| eprintln!("[{:6.1} s] {name}", t0.elapsed().as_secs_f64());
    let root = tempfile::tempdir().unwrap();
    let mut nodes = federation(
        root.path(),
        &[
            ("acme-rm", "producer"),
            ("nclab", "lab"),
            ("jxsamr", "regulator"),
        ],
        1,
        |org, t| {
            if org == "jxsamr" {
                // Small pages, so a restart can land in the middle of a catch-up.
                t["limits"]
                    .as_table_mut()
                    .unwrap()
                    .insert("max_page_entries".into(), 10.into());
            }
        },
    )
    .await;
    let [jxim, acme, nclab, jxsamr] = &mut nodes[..] else {
        unreachable!()
    };
    phase("federation up");

    // acme-rm registers and ships; nclab receives once the certificate reached it; jxim
    // verifies a value.
    let cert: CertificateId = write(
        acme,
        Record::BatchRegistered(testkit::soil_certificate("2026-001")),
    )
    .await;
    write(
        acme,
        Record::Shipped(Shipped {
            to: OrgId::new("nclab").unwrap(),
            cert,
            serials: testkit::serials("S-0001..S-0010"),
        }),
    )
    .await;
    let shipped = chains(acme).await["acme-rm"].0;
    wait_for!("nclab to hold the shipment", 30, {
        has_certificate(nclab, cert).await
            && chains(nclab).await.get("acme-rm").map(|c| c.0) >= Some(shipped)
    });
    write(
        nclab,
        Record::Received(Received {
            cert,
            from: OrgId::new("acme-rm").unwrap(),
            serials: testkit::serials("S-0001..S-0010"),
        }),
    )
    .await;
    wait_for!("jxim to hold the certificate", 30, {
        has_certificate(jxim, cert).await
    });
    write(jxim, verification(cert, "0.23")).await;

    phase("writes done");
    let view = converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;
    phase("converged");
    assert!(view.contains_key("acme-rm") && view.contains_key("nclab"));
    // The institute anchored the producer's chain; the others anchored the institute's.
    let anchors = |entries: &[Entry], chain: &str| {
        entries
            .iter()
            .filter(|e| matches!(e.record(), Record::Anchor(a) if a.chain.as_str() == chain))
            .count()
    };
    assert!(anchors(&entries(jxim, "jxim").await, "acme-rm") > 0);
    assert!(anchors(&entries(jxim, "nclab").await, "jxim") > 0);
    let m = metrics(nclab).await;
    assert!(metric(&m, "rmledger_replicated_entries_total") > 0, "{m}");
    assert_eq!(metric(&m, "rmledger_forks_total"), 0);
    // The lab's overview names, per chain, the last anchor witnessing it: the institute's of
    // the producer's chain, the lab's own of the institute's; and no fork evidence.
    wait_for!("nclab's overview to show the anchors", 30, {
        let page = overview(nclab, "en").await;
        chain_row(&page, "acme-rm").contains("witnessed by <strong>jxim</strong> · at size")
            && chain_row(&page, "jxim").contains("witnessed by <strong>")
    });
    let page = overview(nclab, "en").await;
    assert!(page.contains("no fork evidence"), "{page}");
    let zh = overview(nclab, "zh").await;
    assert!(
        chain_row(&zh, "acme-rm").contains("见证方 <strong>jxim</strong>"),
        "{zh}"
    );
    assert!(zh.contains("无分叉证据"), "{zh}");
    // The state folded from replicated entries agrees across organisations.
    let state = |v: Value| v["state"].clone();
    assert_eq!(
        state(get_json(jxsamr, &format!("/v1/certificates/{cert}")).await),
        state(get_json(acme, &format!("/v1/certificates/{cert}")).await)
    );

    // A producer offline for a while catches up.
    acme.stop();
    write(jxim, ghost_anchor(2)).await;
    write(
        nclab,
        Record::Anchor(Anchor {
            root: TreeHash([7; 32]),
            size: 1,
            chain: OrgId::new("ghost").unwrap(),
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    acme.start();
    converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;
    phase("offline producer caught up");

    // A node killed in the middle of a catch-up resumes after a restart.
    jxsamr.stop();
    let records = (0..200u64)
        .map(|i| {
            Record::Anchor(Anchor {
                root: TreeHash([1; 32]),
                size: i + 1,
                chain: OrgId::new("ghost").unwrap(),
            })
        })
        .collect();
    write_many(jxim, records, 25).await;
    let target = chains(jxim).await["jxim"].0;
    jxsamr.start();
    wait_for!("jxsamr to start catching up", 30, {
        chains(jxsamr).await.get("jxim").map_or(0, |c| c.0) > 0
    });
    let midway = chains(jxsamr).await["jxim"].0;
    jxsamr.kill9();
    jxsamr.start();
    let view = converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;
    assert!(view["jxim"].0 >= target, "midway {midway}, target {target}");
    // After the restart the anchors held are read back from the stored chains.
    let page = overview(jxsamr, "en").await;
    assert!(
        chain_row(&page, "acme-rm").contains("witnessed by <strong>jxim</strong>"),
        "{page}"
    );
    phase("restart mid-sync resumed");

    // A partition heals: nclab is cut off while others write, then comes back.
    nclab.stop();
    write(
        acme,
        Record::Shipped(Shipped {
            to: OrgId::new("nclab").unwrap(),
            cert,
            serials: testkit::serials("S-0011..S-0020"),
        }),
    )
    .await;
    write(jxim, ghost_anchor(3)).await;
    nclab.start();
    converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;
    write(
        nclab,
        Record::Received(Received {
            cert,
            from: OrgId::new("acme-rm").unwrap(),
            serials: testkit::serials("S-0011..S-0020"),
        }),
    )
    .await;
    converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;
    phase("partition healed");
    for node in [&*jxim, &*acme, &*nclab, &*jxsamr] {
        let evidence = get_json(node, "/v1/evidence").await;
        assert_eq!(evidence, json!([]), "{} reports evidence", node.org());
    }
}

/// Writes `records` at `node`, `concurrency` at a time; panics unless all were appended.
async fn write_many(node: &TestNode, records: Vec<Record>, concurrency: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for record in records {
        if tasks.len() >= concurrency {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (url, token) = (node.listen_url(), node.token().to_owned());
        tasks.spawn(async move {
            let resp = client()
                .post(format!("{url}/v1/records"))
                .bearer_auth(token)
                .json(&serde_json::to_value(&record).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile peer.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Serve,
    Garbage,
    Oversize,
    Hang,
}

#[derive(Default)]
struct Hostile {
    mode: Option<Mode>,
    /// `/v1/chains` rows.
    rows: Vec<Value>,
    /// Entries served for any `from`, per chain.
    entries: BTreeMap<String, Vec<Vec<u8>>>,
    checkpoints: BTreeMap<String, Vec<u8>>,
}

impl Hostile {
    fn set(&mut self, chain: &str, size: u64, head: EntryId, served: Vec<Vec<u8>>) {
        self.mode = Some(Mode::Serve);
        self.rows = vec![
            json!({"chain": chain, "size": size, "head": head.to_string(), "root": "00".repeat(32)}),
        ];
        self.entries.clear();
        self.entries.insert(chain.into(), served);
        self.checkpoints.clear();
    }

    fn respond(&self, path: &str) -> (u16, Vec<u8>) {
        let path = path.split('?').next().unwrap_or("");
        let mode = self.mode.unwrap_or(Mode::Serve);
        if path == "/v1/chains" {
            return (200, serde_json::to_vec(&self.rows).unwrap());
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["", "v1", "chains", chain, "entries"] => match mode {
                Mode::Garbage => (200, b"\xff garbage, not CBOR".to_vec()),
                Mode::Oversize => (200, vec![0x5a; 17 * 1024 * 1024]),
                _ => {
                    let list = self.entries.get(*chain).cloned().unwrap_or_default();
                    let mut w = rmledger_schema::cbor::Writer::new();
                    w.head(rmledger_schema::cbor::major::ARRAY, list.len() as u64);
                    for bytes in &list {
                        w.bytes(bytes);
                    }
                    (200, w.into_bytes())
                }
            },
            ["", "v1", "chains", chain, "checkpoint"] => match self.checkpoints.get(*chain) {
                Some(bytes) => (200, bytes.clone()),
                None => (404, b"{}".to_vec()),
            },
            ["", "v1", "notify"] => (202, Vec::new()),
            _ => (404, b"{}".to_vec()),
        }
    }
}

/// Serves `state` on 127.0.0.1: a raw HTTP/1.1 server that answers what the test set.
async fn serve_hostile(state: Arc<Mutex<Hostile>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                })
                .await;
                if read != Ok(true) {
                    return;
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (mode, (status, body)) = {
                    let s = state.lock().unwrap();
                    (s.mode.unwrap_or(Mode::Serve), s.respond(&path))
                };
                if mode == Mode::Hang && path != "/v1/notify" {
                    // Accept, never answer (bounded so the test process ends cleanly).
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// The next entry of `chain` after `tip`, signed with `key`.
fn next_entry(
    key: &SigningKey,
    federation: FederationId,
    chain: &str,
    seq: u64,
    prev: Option<EntryId>,
    time: u64,
    record: Record,
) -> Entry {
    Entry::sign(
        key,
        Payload {
            version: VERSION,
            operator: "mallory".into(),
            federation,
            record,
            seq,
            prev,
            time_unix_ms: time,
            chain: OrgId::new(chain).unwrap(),
        },
    )
    .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ghost_anchor(size: u64) -> Record {
    Record::Anchor(Anchor {
        root: TreeHash([9; 32]),
        size,
        chain: OrgId::new("ghost").unwrap(),
    })
}

/// (size, head, time of head) of `chain` at `node`.
async fn tip(node: &TestNode, chain: &str) -> (u64, EntryId, u64) {
    let all = entries(node, chain).await;
    let last = all.last().expect("a non-empty chain");
    (all.len() as u64, last.id(), last.time_unix_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_is_detected_and_named() {
    let t0 = Instant::now();
    let phase = |name: &str| eprintln!("[{:6.1} s] {name}", t0.elapsed().as_secs_f64());
    let root = tempfile::tempdir().unwrap();
    let hostile = Arc::new(Mutex::new(Hostile::default()));
    let hostile_url = serve_hostile(hostile.clone()).await;
    let mut nodes = {
        let hostile_url = hostile_url.clone();
        federation(
            root.path(),
            &[
                ("acme-rm", "producer"),
                ("nclab", "lab"),
                ("jxsamr", "regulator"),
            ],
            // No spontaneous anchors: the crafted entries must stay "next" on their chains.
            3600,
            move |org, t| {
                if org == "jxsamr" {
                    let peers = t["peers"].as_array_mut().unwrap();
                    let mut peer = toml::Table::new();
                    peer.insert("url".into(), hostile_url.clone().into());
                    peers.push(peer.into());
                    t["limits"]
                        .as_table_mut()
                        .unwrap()
                        .insert("request_timeout_ms".into(), 2000.into());
                }
            },
        )
        .await
    };
    let [jxim, acme, nclab, jxsamr] = &mut nodes[..] else {
        unreachable!()
    };
    let federation_id = FederationId::of(&std::fs::read(genesis(jxim)).unwrap());

    // Content on every chain, and a second key of acme-rm that the registrar then revokes.
    write(
        acme,
        Record::BatchRegistered(testkit::soil_certificate("2026-H1")),
    )
    .await;
    write(nclab, ghost_anchor(1)).await;
    let extra = SigningKey::from_bytes(&[42; 32]);
    let extra_public = PublicKey(extra.verifying_key().to_bytes());
    write(
        jxim,
        Record::KeyAdded(KeyAdded {
            key: extra_public,
            org: OrgId::new("acme-rm").unwrap(),
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let revoked_from = now_ms();
    write(
        jxim,
        Record::KeyRevoked(KeyRevoked {
            kid: rmledger_schema::ids::KeyId::of(&extra_public.0),
            org: OrgId::new("acme-rm").unwrap(),
            revoked_from_unix_ms: revoked_from,
            reason: "laptop stolen".into(),
        }),
    )
    .await;
    converge(&[jxim, acme, nclab, jxsamr], Duration::from_secs(60)).await;

    let acme_key = key(acme);
    let nclab_key = key(nclab);
    let (size, head, time) = tip(jxsamr, "acme-rm").await;
    let later = (time + 1).max(revoked_from + 1);

    // Each refusal: serve it, wake the victim, wait for the named counter, check nothing was
    // stored and the log names the peer and the reason.
    struct Case {
        kind: &'static str,
        chain: &'static str,
        mode: Mode,
        served: Vec<Vec<u8>>,
        listed_size: u64,
    }
    let signed = |key: &SigningKey, chain: &'static str, seq, prev, time, record| {
        next_entry(key, federation_id, chain, seq, prev, time, record)
    };
    let valid_next = signed(
        &acme_key,
        "acme-rm",
        size,
        Some(head),
        later,
        ghost_anchor(2),
    );
    let mut bad_signature = valid_next.bytes().to_vec();
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let broken_prev = signed(
        &acme_key,
        "acme-rm",
        size,
        Some(EntryId([3; 32])),
        later,
        ghost_anchor(2),
    );
    let gap = signed(
        &acme_key,
        "acme-rm",
        size + 1,
        Some(head),
        later,
        ghost_anchor(2),
    );
    let revoked = signed(
        &extra,
        "acme-rm",
        size,
        Some(head),
        later + 5,
        ghost_anchor(2),
    );
    let (lab_size, lab_head, lab_time) = tip(jxsamr, "nclab").await;
    let forbidden = signed(
        &nclab_key,
        "nclab",
        lab_size,
        Some(lab_head),
        lab_time + 1,
        Record::BatchRegistered(testkit::soil_certificate("2026-H2")),
    );
    let cases = vec![
        Case {
            kind: "signature",
            chain: "acme-rm",
            mode: Mode::Serve,
            served: vec![bad_signature],
            listed_size: size + 1,
        },
        Case {
            kind: "broken_link",
            chain: "acme-rm",
            mode: Mode::Serve,
            served: vec![broken_prev.bytes().to_vec()],
            listed_size: size + 1,
        },
        Case {
            kind: "gap",
            chain: "acme-rm",
            mode: Mode::Serve,
            served: vec![gap.bytes().to_vec()],
            listed_size: size + 2,
        },
        Case {
            kind: "key_revoked",
            chain: "acme-rm",
            mode: Mode::Serve,
            served: vec![revoked.bytes().to_vec()],
            listed_size: size + 1,
        },
        Case {
            kind: "role_not_allowed",
            chain: "nclab",
            mode: Mode::Serve,
            served: vec![forbidden.bytes().to_vec()],
            listed_size: lab_size + 1,
        },
        Case {
            kind: "malformed",
            chain: "acme-rm",
            mode: Mode::Garbage,
            served: Vec::new(),
            listed_size: size + 1,
        },
        Case {
            kind: "too_large",
            chain: "acme-rm",
            mode: Mode::Oversize,
            served: Vec::new(),
            listed_size: size + 1,
        },
    ];
    phase("federation up");
    for case in cases {
        phase(case.kind);
        let series = format!(
            "rmledger_replication_errors_total{{peer=\"{hostile_url}\",kind=\"{}\"}}",
            case.kind
        );
        let before = metric(&metrics(jxsamr).await, &series);
        {
            let mut h = hostile.lock().unwrap();
            h.set(case.chain, case.listed_size, head, case.served);
            h.mode = Some(case.mode);
        }
        notify(jxsamr).await;
        wait_for!(&format!("the victim to refuse: {}", case.kind), 20, {
            metric(&metrics(jxsamr).await, &series) > before
        });
        let owner: &TestNode = if case.chain == "acme-rm" { acme } else { nclab };
        assert_eq!(
            chains(owner).await[case.chain],
            chains(jxsamr).await[case.chain],
            "{}: the chain changed",
            case.kind
        );
        let log = log(jxsamr);
        assert!(
            log.lines().any(|l| l.contains("refused input from peer")
                && l.contains(&hostile_url)
                && l.contains(case.kind)),
            "the log does not name {}",
            case.kind
        );
    }

    phase("refusals done");
    // A peer that hangs: timed out, and replication from honest peers goes on meanwhile.
    {
        let mut h = hostile.lock().unwrap();
        h.mode = Some(Mode::Hang);
    }
    let series =
        format!("rmledger_replication_errors_total{{peer=\"{hostile_url}\",kind=\"timeout\"}}");
    let before = metric(&metrics(jxsamr).await, &series);
    notify(jxsamr).await;
    let honest_write = write(jxim, ghost_anchor(5)).await;
    wait_for!("the honest write to arrive during the hang", 20, {
        chains(jxsamr).await["jxim"].1 == honest_write.to_string()
    });
    wait_for!("the hanging peer to time out", 20, {
        metric(&metrics(jxsamr).await, &series) > before
    });

    phase("hang done");
    // A fork: a second, validly signed entry at a position the victim holds.
    let (size, head, _) = tip(jxsamr, "acme-rm").await;
    let original = entries(jxsamr, "acme-rm").await[(size - 1) as usize].clone();
    let fork = signed(
        &acme_key,
        "acme-rm",
        size - 1,
        original.payload().prev,
        original.time_unix_ms() + 1,
        ghost_anchor(77),
    );
    {
        let mut h = hostile.lock().unwrap();
        h.set("acme-rm", size, fork.id(), vec![fork.bytes().to_vec()]);
    }
    notify(jxsamr).await;
    wait_for!("fork evidence", 20, {
        get_json(jxsamr, "/v1/evidence")
            .await
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e["kind"] == "entries" && e["chain"] == "acme-rm")
            })
    });
    let evidence = get_json(jxsamr, "/v1/evidence").await;
    let item = evidence
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "entries")
        .unwrap();
    assert_eq!(item["seq"], size - 1);
    assert_eq!(item["first_id"], original.id().to_string());
    assert_eq!(item["second_id"], fork.id().to_string());
    assert_eq!(item["second"], data_encoding::HEXLOWER.encode(fork.bytes()));
    // The overview shows the evidence, in both languages, naming both entries.
    let page = overview(jxsamr, "en").await;
    assert!(!page.contains("no fork evidence"), "{page}");
    assert!(page.contains("fork: two entries at one position"), "{page}");
    assert!(page.contains(&original.id().to_string()[..12]), "{page}");
    assert!(page.contains(&fork.id().to_string()[..12]), "{page}");
    let zh = overview(jxsamr, "zh").await;
    assert!(zh.contains("分叉：同一位置有两条记录"), "{zh}");
    for node in [&*jxim, &*acme, &*nclab] {
        assert!(overview(node, "en").await.contains("no fork evidence"));
    }
    assert_eq!(chains(jxsamr).await["acme-rm"], (size, head.to_string()));
    // Frozen: an honest acme-rm write no longer reaches the victim.
    let acme_write = write(acme, ghost_anchor(3)).await;
    wait_for!("nclab to get acme's write", 20, {
        chains(nclab).await["acme-rm"].1 == acme_write.to_string()
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        chains(jxsamr).await["acme-rm"].0,
        size,
        "a frozen chain was replicated"
    );

    phase("fork done");
    // A validly signed checkpoint with the true root and head but a certificate map root that
    // is not the chain's (what a signer hiding an entry from bundles would sign).
    let (lab_size, lab_head, _) = tip(jxsamr, "nclab").await;
    let mut lab_tree = MemoryTree::<Sha256>::new();
    for entry in entries(jxsamr, "nclab").await {
        lab_tree.push_leaf_hash(entry.leaf_hash().0);
    }
    let bad_checkpoint = Checkpoint::sign(
        &nclab_key,
        CheckpointBody {
            federation: federation_id,
            head: lab_head,
            root: TreeHash(lab_tree.root()),
            size: lab_size,
            time_unix_ms: now_ms(),
            certs: TreeHash([0xee; 32]),
            chain: OrgId::new("nclab").unwrap(),
        },
    )
    .unwrap();
    {
        let mut h = hostile.lock().unwrap();
        h.set("nclab", lab_size, lab_head, Vec::new());
        h.checkpoints
            .insert("nclab".into(), bad_checkpoint.bytes().to_vec());
    }
    notify(jxsamr).await;
    wait_for!("checkpoint evidence", 20, {
        get_json(jxsamr, "/v1/evidence")
            .await
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e["kind"] == "checkpoints" && e["chain"] == "nclab")
            })
    });

    assert!(
        overview(jxsamr, "en")
            .await
            .contains("checkpoint contradicts the chain")
    );
    // Both reports are on the victim's own chain; counted; the chains stay frozen after a
    // restart; honest replication of other chains goes on.
    wait_for!("two ForkReported entries", 20, {
        entries(jxsamr, "jxsamr")
            .await
            .iter()
            .filter(|e| matches!(e.record(), Record::ForkReported(_)))
            .count()
            == 2
    });
    let m = metrics(jxsamr).await;
    assert_eq!(metric(&m, "rmledger_forks_total"), 2, "{m}");
    assert_eq!(metric(&m, "rmledger_chain_frozen{chain=\"acme-rm\"}"), 1);
    assert_eq!(metric(&m, "rmledger_chain_frozen{chain=\"nclab\"}"), 1);
    assert!(log(jxsamr).contains("FORK"));
    phase("checkpoint done");
    {
        hostile.lock().unwrap().mode = Some(Mode::Hang);
    }
    jxsamr.stop();
    jxsamr.start();
    let m = metrics(jxsamr).await;
    assert_eq!(
        metric(&m, "rmledger_chain_frozen{chain=\"acme-rm\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        get_json(jxsamr, "/v1/evidence")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let last = write(jxim, ghost_anchor(6)).await;
    wait_for!("an honest write after the restart", 20, {
        chains(jxsamr).await["jxim"].1 == last.to_string()
    });
    assert_eq!(chains(jxsamr).await["acme-rm"].0, size);
    // Other nodes saw none of the hostile input.
    for node in [&*jxim, &*acme, &*nclab] {
        assert_eq!(
            get_json(node, "/v1/evidence").await,
            json!([]),
            "{}",
            node.org()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Anchors that contradict the chain they name.

/// The anchor evidence `node` holds about `chain`, if any.
async fn anchor_evidence(node: &TestNode, chain: &str) -> Option<Value> {
    get_json(node, "/v1/evidence")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "anchor" && e["chain"] == chain)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicted_anchors_are_evidence_even_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let hostile = Arc::new(Mutex::new(Hostile::default()));
    let hostile_url = serve_hostile(hostile.clone()).await;
    let mut nodes = {
        let hostile_url = hostile_url.clone();
        federation(
            root.path(),
            &[("nclab", "lab"), ("jxsamr", "regulator")],
            3600,
            move |org, t| {
                if org == "jxsamr" {
                    let peers = t["peers"].as_array_mut().unwrap();
                    let mut peer = toml::Table::new();
                    peer.insert("url".into(), hostile_url.clone().into());
                    peers.push(peer.into());
                }
            },
        )
        .await
    };
    let [jxim, nclab, jxsamr] = &mut nodes[..] else {
        unreachable!()
    };
    let federation_id = FederationId::of(&std::fs::read(genesis(jxim)).unwrap());

    // A member whose chain only the hostile peer serves, signed with a key the test holds.
    let mallory = SigningKey::from_bytes(&[77; 32]);
    write(
        jxim,
        Record::Enrol(rmledger_schema::records::Enrol {
            org: OrgId::new("mallory").unwrap(),
            keys: vec![PublicKey(mallory.verifying_key().to_bytes())],
            name: "Mallory Ltd".into(),
            roles: vec![rmledger_schema::records::Role::Lab],
        }),
    )
    .await;
    write(nclab, ghost_anchor(1)).await;
    converge(&[jxim, nclab, jxsamr], Duration::from_secs(60)).await;
    let (lab_size, _, _) = tip(jxsamr, "nclab").await;
    let (jx_size, _, _) = tip(jxsamr, "jxim").await;

    // Two validly signed anchors on mallory's chain: one contradicts nclab's chain at a size
    // the victim holds; the other names a false root for more of jxim's chain than anyone
    // holds yet, so it can only be checked later.
    let time = now_ms();
    let contradicting = next_entry(
        &mallory,
        federation_id,
        "mallory",
        0,
        None,
        time,
        Record::Anchor(Anchor {
            root: TreeHash([0xaa; 32]),
            size: lab_size,
            chain: OrgId::new("nclab").unwrap(),
        }),
    );
    let ahead = next_entry(
        &mallory,
        federation_id,
        "mallory",
        1,
        Some(contradicting.id()),
        time + 1,
        Record::Anchor(Anchor {
            root: TreeHash([0xbb; 32]),
            size: jx_size + 3,
            chain: OrgId::new("jxim").unwrap(),
        }),
    );
    hostile.lock().unwrap().set(
        "mallory",
        2,
        ahead.id(),
        vec![contradicting.bytes().to_vec(), ahead.bytes().to_vec()],
    );
    notify(jxsamr).await;

    // Detected, named, kept as evidence, counted; the chain it contradicts is frozen.
    wait_for!("evidence of the contradicted anchor", 30, {
        anchor_evidence(jxsamr, "nclab").await.is_some()
    });
    let item = anchor_evidence(jxsamr, "nclab").await.unwrap();
    assert_eq!(item["seq"], lab_size);
    assert_eq!(item["first_id"], contradicting.id().to_string());
    assert_eq!(
        item["first"],
        data_encoding::HEXLOWER.encode(contradicting.bytes())
    );
    assert_eq!(
        chains(jxsamr).await["mallory"].0,
        2,
        "both anchors are stored"
    );
    let m = metrics(jxsamr).await;
    assert_eq!(metric(&m, "rmledger_forks_total"), 1, "{m}");
    assert_eq!(
        metric(&m, "rmledger_chain_frozen{chain=\"nclab\"}"),
        1,
        "{m}"
    );
    assert!(
        log(jxsamr)
            .lines()
            .any(|l| l.contains("anchor contradicts the chain we hold") && l.contains("mallory")),
        "the log does not name the witness"
    );
    wait_for!("the ForkReported entry on the victim's chain", 20, {
        entries(jxsamr, "jxsamr")
            .await
            .iter()
            .any(|e| matches!(e.record(), Record::ForkReported(r) if r.chain.as_str() == "nclab"))
    });
    assert!(
        anchor_evidence(jxsamr, "jxim").await.is_none(),
        "jxim is not that long yet"
    );

    // The anchor ahead of jxim's chain waits in the store, so a restart does not lose it.
    jxsamr.stop();
    jxsamr.start();
    // Honest replication goes on: jxim's next entries arrive, and once the victim holds the
    // size the anchor names, the anchor is checked and found false.
    // (jxim itself may have added a ForkReported meanwhile, so the first write leaves the victim
    // at most at jx_size + 2.)
    let written = write(jxim, ghost_anchor(100)).await;
    wait_for!("an honest jxim entry to arrive after the restart", 20, {
        entries(jxsamr, "jxim")
            .await
            .iter()
            .any(|e| e.id() == written)
    });
    assert!(anchor_evidence(jxsamr, "jxim").await.is_none());
    write(jxim, ghost_anchor(101)).await;
    write(jxim, ghost_anchor(102)).await;
    wait_for!("evidence of the anchor that was waiting", 30, {
        anchor_evidence(jxsamr, "jxim").await.is_some()
    });
    let item = anchor_evidence(jxsamr, "jxim").await.unwrap();
    assert_eq!(item["seq"], jx_size + 3);
    assert_eq!(item["first_id"], ahead.id().to_string());
    let m = metrics(jxsamr).await;
    assert!(metric(&m, "rmledger_forks_total") >= 1, "{m}");
    assert_eq!(
        metric(&m, "rmledger_chain_frozen{chain=\"jxim\"}"),
        1,
        "{m}"
    );
    // The evidence from before the restart is still there.
    assert!(anchor_evidence(jxsamr, "nclab").await.is_some());
}
