//! The regulator's audit end to end: real `rmledger-node` processes on 127.0.0.1 and the real
//! `rmledger` binary.
//!
//! - `audit_of_a_federation_clean_then_broken`: a registrar/institute/producer node and a lab's
//!   node replicating each other. A clean ledger built through the API has zero findings via
//!   `rmledger audit --node`, via `--data` (read while the node runs) and via
//!   `GET /v1/audit/findings`; then domain breaks that the nodes' write checks let through are
//!   built through the API, and exactly the expected findings appear with the right evidence;
//!   `report.json`, `report.html` (hostile serials escaped), `audit certificate`, `impact` and
//!   `--since`.
//! - `lone_chain_goes_unanchored`: a one-node federation has no one to anchor its chain; past
//!   `--anchor-max-age` that is exactly one `chain/anchor-overdue` finding.
//!
//! Domain rules the node refuses at write time (so they cannot be built through the API, and
//! are covered by the rule tests in `schema/src/audit_tests.rs` with ledgers written directly
//! with the `schema` library): `domain/unknown-certificate` (a record about an unregistered
//! certificate is `unknown-certificate` at write), `domain/foreign-record` (only the producer
//! may revise, withdraw or ship), `domain/serial-not-produced`, `domain/unit-shipped-twice`,
//! `domain/unit-not-shipped-to-lab`, `domain/use-without-receipt`, `domain/use-after-expiry`,
//! `domain/use-after-opening-period`, `domain/single-use-reused`, `domain/use-after-disposal`,
//! `domain/use-after-recall` and `domain/use-after-withdrawal` as seen by the writing node, and
//! `domain/verdict-disagrees` / `domain/verdict-on-non-certified-value` /
//! `domain/verification-unmatched` (the institute's node computes the verdict and checks the
//! quantity and revision). The integrity rules need bytes no honest node signs: they are in the
//! schema rule tests too. What replication lets through — a fact recorded on one node before
//! another node's fact reached it — is built here with `use-while-suspended`; `never-verified`,
//! `failed-verification-not-acted-on` and `anchor-overdue` depend only on time and omission.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Harness

use rmledger_tests::{NodeCli, TestNode, workspace};

/// `rmledger-node init` in `root/<org>` on a port fixed now: the registrar (with `roles`) when
/// `genesis` is None.
fn init(root: &Path, org: &str, roles: &[&str], genesis: Option<&Path>) -> TestNode {
    TestNode::init_in(&root.join(org), org, roles, genesis)
}

fn genesis(node: &TestNode) -> PathBuf {
    node.dir().join("genesis.cbor")
}

fn data(node: &TestNode) -> PathBuf {
    node.dir().join("data")
}

/// chain → size, from `GET /v1/chains`.
fn sizes(node: &TestNode) -> Vec<(String, u64)> {
    let chains: Value =
        serde_json::from_str(&get(&node.listen_url(), "/v1/chains").unwrap()).unwrap();
    let mut sizes: Vec<(String, u64)> = chains
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["chain"].as_str().unwrap().to_owned(),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect();
    sizes.sort();
    sizes
}

/// A plain HTTP/1.0 GET on 127.0.0.1: the body of a 200, else None.
fn get(url: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nhost: x\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8(answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// Waits until every node holds the same chains with the same sizes, and they stay so for two
/// seconds (anchors are written at most every second).
fn wait_quiet(nodes: &[&TestNode]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stable_since: Option<(Instant, Vec<(String, u64)>)> = None;
    loop {
        let all: Vec<_> = nodes.iter().map(|n| sizes(n)).collect();
        let same = all.windows(2).all(|w| w[0] == w[1]);
        if same {
            match &stable_since {
                Some((since, sizes)) if *sizes == all[0] => {
                    if since.elapsed() > Duration::from_secs(2) {
                        return;
                    }
                }
                _ => stable_since = Some((Instant::now(), all[0].clone())),
            }
        } else {
            stable_since = None;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not converge: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `node` holds at least `size` entries of `chain`.
fn wait_for(node: &TestNode, chain: &str, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sizes(node)
        .iter()
        .find(|(c, _)| c == chain)
        .is_none_or(|(_, s)| *s < size)
    {
        assert!(
            Instant::now() < deadline,
            "{} did not get {chain} up to {size}",
            node.org()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The soil example with its batch (and optionally its units) changed, written under `dir`.
fn certificate_file(dir: &Path, batch: &str, units: Option<&str>) -> PathBuf {
    let mut text =
        std::fs::read_to_string(workspace().join("docs/examples/soil-gbw-e.toml")).unwrap();
    text = text.replacen("batch = \"2025a\"", &format!("batch = \"{batch}\""), 1);
    if let Some(units) = units {
        text = text.replacen(
            "units = [\"S-0001..S-0500\"]",
            &format!("units = ['{units}']"),
            1,
        );
    }
    let path = dir.join(format!("soil-{batch}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The finding ids of a report.
fn ids(report: &Value) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {report}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding {id} in {report}"))
}

fn evidence(finding: &Value) -> Vec<String> {
    finding["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

fn node_findings(node: &TestNode) -> Value {
    serde_json::from_str(&get(node.url(), "/v1/audit/findings").expect("GET /v1/audit/findings"))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn audit_of_a_federation_clean_then_broken() {
    let root = tempfile::Builder::new()
        .prefix("rmledger-audit-test-")
        .tempdir()
        .unwrap();
    let mut jxim = init(root.path(), "jxim", &["institute", "producer"], None);
    let mut lab = init(root.path(), "nclab", &[], Some(&genesis(&jxim)));
    jxim.configure_peers(&[lab.listen_url()]);
    lab.configure_peers(&[jxim.listen_url()]);
    jxim.start();
    let xdg = root.path().join("xdg");
    let producer = NodeCli::of(&xdg, &jxim);
    let labcli = NodeCli::of(&xdg, &lab);
    producer.json(&["federation", "trust", jxim.url()]);
    producer.json(&[
        "member",
        "enrol",
        "--org",
        "nclab",
        "--name",
        "Nanchang Testing Lab",
        "--roles",
        "lab",
        "--key",
        &lab.report().public_key,
    ]);
    lab.start();

    // A clean ledger: a verified certificate, units shipped, received, opened and used.
    let soil = producer.write(&[
        "batch",
        "register",
        s(&certificate_file(root.path(), "2025a", None)),
    ]);
    let verify_pass = [
        "--quantity",
        "Cd",
        "--value",
        "0.215",
        "--unit",
        "mg/kg",
        "--u",
        "0.02",
        "--k",
        "2",
    ];
    let mut args = vec!["verify-value", soil.as_str()];
    args.extend(verify_pass);
    assert_eq!(producer.json(&args)["verdict"], "pass");
    producer.write(&[
        "ship",
        &soil,
        "--to",
        "nclab",
        "--serials",
        "S-0001..S-0003",
    ]);
    wait_for(
        &lab,
        "jxim",
        sizes(&jxim).iter().find(|c| c.0 == "jxim").unwrap().1,
    );
    labcli.write(&[
        "receive",
        &soil,
        "--from",
        "jxim",
        "--serials",
        "S-0001..S-0003",
    ]);
    labcli.write(&["open", &soil, "--serial", "S-0001"]);
    let clean_use = labcli.write(&[
        "use",
        &soil,
        "--serial",
        "S-0001",
        "--purpose",
        "quality-control",
        "--reference",
        "QC-1",
    ]);
    wait_quiet(&[&jxim, &lab]);

    // Zero findings three ways: replicated over the API (from either node), read from the data
    // directory while the node runs, and the node's own endpoint.
    let out = root.path().join("clean-report");
    let run = producer.expect(0, &["audit", "--node", jxim.url(), "--out", s(&out)]);
    assert!(run.stdout.contains("No findings."), "{run:#?}");
    assert!(
        run.stderr.is_empty(),
        "no progress bar off a terminal: {run:#?}"
    );
    let via_node = producer.json(&["audit", "--node", lab.url()]);
    assert_eq!(ids(&via_node), BTreeSet::new(), "{via_node}");
    let via_data = producer.json(&[
        "audit",
        "--data",
        s(&data(&jxim)),
        "--genesis",
        s(&genesis(&jxim)),
    ]);
    assert_eq!(ids(&via_data), BTreeSet::new(), "{via_data}");
    let served = node_findings(&jxim);
    assert_eq!(ids(&served), BTreeSet::new(), "{served}");
    let total: u64 = sizes(&jxim).iter().map(|c| c.1).sum();
    for report in [&via_node, &via_data, &served] {
        assert_eq!(report["entries"], total, "every entry audited: {report}");
        assert_eq!(report["certificates"], 1);
        assert_eq!(report["chains"].as_object().unwrap().len(), 2);
    }
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for field in [
        "federation",
        "now_unix_ms",
        "config",
        "entries",
        "checkpoints",
        "certificates",
        "chains",
        "counts",
        "findings",
    ] {
        assert!(
            json.get(field).is_some(),
            "report.json lacks {field}: {json}"
        );
    }
    assert_eq!(json["federation"], served["federation"]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("No findings."), "{html}");
    assert!(
        !["<script", "<link", "src=", "http://", "https://", "url("]
            .iter()
            .any(|bad| html.contains(bad)),
        "self-contained: {html}"
    );

    // Domain breaks the write checks let through.
    // 1. A certificate never verified.
    let never = producer.write(&[
        "batch",
        "register",
        s(&certificate_file(root.path(), "2025b", None)),
    ]);
    // 2. A failed verification (|En| > 1) with no suspension.
    let failing = producer.write(&[
        "batch",
        "register",
        s(&certificate_file(root.path(), "2025c", None)),
    ]);
    let failed = producer.json(&[
        "verify-value",
        &failing,
        "--quantity",
        "Cd",
        "--value",
        "0.30",
        "--unit",
        "mg/kg",
        "--u",
        "0.01",
        "--k",
        "2",
    ]);
    assert_eq!(failed["verdict"], "fail", "{failed}");
    let failed_entry = failed["id"].as_str().unwrap().to_owned();
    let failed_seq = failed["seq"].as_u64().unwrap();
    // 3. A use of a suspended batch recorded on the lab's node before the suspension reached it;
    //    its serials carry markup, which every report must escape.
    let hostile = producer.write(&[
        "batch",
        "register",
        s(&certificate_file(
            root.path(),
            "2025d",
            Some("<b>&X-0001..<b>&X-0003"),
        )),
    ]);
    let mut args = vec!["verify-value", hostile.as_str()];
    args.extend(verify_pass);
    producer.json(&args);
    producer.write(&[
        "ship",
        &hostile,
        "--to",
        "nclab",
        "--serials",
        "<b>&X-0001..<b>&X-0002",
    ]);
    wait_for(
        &lab,
        "jxim",
        sizes(&jxim).iter().find(|c| c.0 == "jxim").unwrap().1,
    );
    labcli.write(&[
        "receive",
        &hostile,
        "--from",
        "jxim",
        "--serials",
        "<b>&X-0001..<b>&X-0002",
    ]);
    labcli.write(&["open", &hostile, "--serial", "<b>&X-0001"]);
    wait_quiet(&[&jxim, &lab]);
    lab.stop();
    let suspension = producer.write(&["suspend", &hostile, "--reason", "stability doubt"]);
    jxim.stop();
    lab.start();
    std::thread::sleep(Duration::from_millis(50));
    let late_use = labcli.write(&[
        "use",
        &hostile,
        "--serial",
        "<b>&X-0001",
        "--purpose",
        "calibration",
        "--reference",
        "CAL-7",
    ]);
    jxim.start();
    wait_quiet(&[&jxim, &lab]);

    let expected_default: BTreeSet<String> = [
        format!("domain/never-verified/{never}"),
        format!("domain/use-while-suspended/{hostile}/<b>&X-0001/nclab"),
    ]
    .into();
    let mut expected_short_deadline = expected_default.clone();
    expected_short_deadline.insert(format!(
        "domain/failed-verification-not-acted-on/{failing}/jxim/{failed_seq}"
    ));
    let out = root.path().join("broken-report");
    let check = |report: &Value, expected: &BTreeSet<String>| {
        assert_eq!(&ids(report), expected, "{report:#}");
        assert_eq!(
            evidence(finding(report, &format!("domain/never-verified/{never}"))),
            vec![never.clone()]
        );
        let f = finding(
            report,
            &format!("domain/use-while-suspended/{hostile}/<b>&X-0001/nclab"),
        );
        assert_eq!(evidence(f), [suspension.clone(), late_use.clone()]);
        assert_eq!(f["severity"], "high");
        assert_eq!(f["rule"], "domain/use-while-suspended");
        assert!(f["explanation"].as_str().unwrap().contains("suspended"));
    };
    // Default deadline (30 days): the failed verification is not overdue yet; no critical
    // finding, so exit 0 at the default --fail-on, 1 at --fail-on high.
    let run = producer.expect(0, &["audit", "--json"]);
    check(&run.json(), &expected_default);
    producer.expect(1, &["audit", "--fail-on", "high"]);
    let short = [
        "audit",
        "--suspension-deadline",
        "1ms",
        "--fail-on",
        "high",
        "--out",
        s(&out),
        "--json",
    ];
    let run = producer.expect(1, &short);
    let via_node = run.json();
    check(&via_node, &expected_short_deadline);
    let f = finding(
        &via_node,
        &format!("domain/failed-verification-not-acted-on/{failing}/jxim/{failed_seq}"),
    );
    assert_eq!(evidence(f), vec![failed_entry.clone()]);
    let run = producer.expect(
        1,
        &[
            "audit",
            "--data",
            s(&data(&lab)),
            "--genesis",
            s(&genesis(&jxim)),
            "--suspension-deadline",
            "1ms",
            "--fail-on",
            "high",
            "--json",
        ],
    );
    check(&run.json(), &expected_short_deadline);
    check(&node_findings(&jxim), &expected_default);
    check(&node_findings(&lab), &expected_default);

    // The terminal summary names each finding with its evidence, escape-free.
    let text = producer
        .expect(
            1,
            &["audit", "--suspension-deadline", "1ms", "--fail-on", "high"],
        )
        .stdout;
    assert!(text.contains("high 2") && text.contains("low 1"), "{text}");
    assert!(
        text.contains(&late_use) && text.contains(&failed_entry),
        "{text}"
    );

    // report.json is the --json report; report.html escapes the hostile serial everywhere.
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(ids(&json), expected_short_deadline);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<b>&X"),
        "unescaped ledger text in report.html"
    );
    assert!(html.contains("&lt;b&gt;&amp;X-0001"), "{html}");
    for id in &expected_short_deadline {
        let escaped = id
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(html.contains(&escaped), "report.html lacks {id}");
    }
    assert!(html.contains(&late_use) && html.contains(&suspension) && html.contains(&failed_entry));

    // One certificate: its life and findings from its verified bundle.
    let run = producer.expect(
        1,
        &[
            "audit",
            "certificate",
            &hostile,
            "--fail-on",
            "high",
            "--json",
        ],
    );
    let one = run.json();
    assert_eq!(one["status"], "suspended");
    assert_eq!(
        ids(&one),
        [format!(
            "domain/use-while-suspended/{hostile}/<b>&X-0001/nclab"
        )]
        .into()
    );
    let run = producer.expect(0, &["audit", "certificate", &soil]);
    assert!(run.stdout.contains("No findings."), "{run:#?}");

    // Impact of the suspension: the lab, its units and the use after it.
    let impact = producer.json(&["impact", &hostile]);
    assert_eq!(impact["cause"][0]["kind"], "suspended");
    assert_eq!(impact["cause"][0]["entry"], suspension.as_str());
    let labs = impact["labs"].as_array().unwrap();
    assert_eq!(labs.len(), 1, "{impact}");
    assert_eq!(labs[0]["org"], "nclab");
    assert_eq!(
        labs[0]["units"],
        serde_json::json!(["<b>&X-0001", "<b>&X-0002"])
    );
    let uses = labs[0]["uses_after_cutoff"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{impact}");
    assert_eq!(uses[0]["entry"], late_use.as_str());
    assert_eq!(uses[0]["reference"], "CAL-7");
    // --since: after the use, nothing; long before, the use (and only uses since then).
    let later = producer.json(&["impact", &hostile, "--since", "2999-01-01"]);
    assert_eq!(later["labs"][0]["uses_after_cutoff"], serde_json::json!([]));
    let earlier = producer.json(&["impact", &soil, "--since", "2000-01-01"]);
    assert_eq!(earlier["cause"], serde_json::json!([]));
    assert_eq!(
        earlier["labs"][0]["uses_after_cutoff"][0]["entry"],
        clean_use.as_str()
    );
    let none = producer.json(&["impact", &soil]);
    assert_eq!(none["cutoff"], Value::Null);
    assert_eq!(none["labs"][0]["uses_after_cutoff"], serde_json::json!([]));
    let text = producer.expect(0, &["impact", &hostile]).stdout;
    assert!(text.contains("nclab") && text.contains(&late_use), "{text}");

    // Usage errors exit 2: no trust anchor for another config, a bad duration, a missing dir.
    let stranger = NodeCli::of(&root.path().join("xdg-stranger"), &jxim);
    let run = stranger.expect(2, &["audit"]);
    assert!(run.stderr.contains("trust anchor"), "{run:#?}");
    producer.expect(2, &["audit", "--suspension-deadline", "soon"]);
    let run = producer.expect(2, &["audit", "--data", s(&root.path().join("nowhere"))]);
    assert!(run.stderr.contains("data directory"), "{run:#?}");
}

#[test]
fn lone_chain_goes_unanchored() {
    let root = tempfile::Builder::new()
        .prefix("rmledger-audit-test-")
        .tempdir()
        .unwrap();
    let mut jxim = init(root.path(), "jxim", &["institute", "producer"], None);
    jxim.start();
    let cli = NodeCli::of(&root.path().join("xdg"), &jxim);
    cli.json(&["federation", "trust", jxim.url()]);
    let soil = cli.write(&[
        "batch",
        "register",
        s(&certificate_file(root.path(), "2025a", None)),
    ]);
    let last = cli.write(&[
        "verify-value",
        &soil,
        "--quantity",
        "Cd",
        "--value",
        "0.215",
        "--unit",
        "mg/kg",
        "--u",
        "0.02",
        "--k",
        "2",
    ]);
    // Within the default seven days nobody needed to anchor it yet.
    assert_eq!(ids(&cli.json(&["audit"])), BTreeSet::new());
    std::thread::sleep(Duration::from_millis(20));
    // The registrar is the only member, so nobody can anchor its chain.
    let run = cli.expect(0, &["audit", "--anchor-max-age", "10ms", "--json"]);
    let report = run.json();
    assert_eq!(
        ids(&report),
        ["chain/anchor-overdue/jxim".to_owned()].into()
    );
    let f = finding(&report, "chain/anchor-overdue/jxim");
    assert_eq!(f["severity"], "medium");
    assert_eq!(evidence(f), vec![last.clone()]);
    let run = cli.expect(
        0,
        &[
            "audit",
            "--data",
            s(&data(&jxim)),
            "--anchor-max-age",
            "10ms",
            "--json",
        ],
    );
    assert_eq!(
        ids(&run.json()),
        ["chain/anchor-overdue/jxim".to_owned()].into()
    );
    cli.expect(
        1,
        &["audit", "--anchor-max-age", "10ms", "--fail-on", "medium"],
    );

    // The node's own audit: default deadlines, then the ones of `[audit]` in node.toml.
    assert_eq!(ids(&node_findings(&jxim)), BTreeSet::new());
    jxim.stop();
    jxim.configure_peers_with(&[], |table| {
        let mut audit = toml::Table::new();
        audit.insert("anchor_max_age".into(), "10ms".into());
        table.insert("audit".into(), audit.into());
    });
    jxim.start();
    let served = node_findings(&jxim);
    assert_eq!(
        ids(&served),
        ["chain/anchor-overdue/jxim".to_owned()].into(),
        "{served}"
    );
}
