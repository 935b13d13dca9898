//! A unit's journey across organisations, through the real `rmledger` CLI against real node
//! processes that replicate each other: the producer `acme-rm` registers a batch and ships units
//! to the lab `nclab`; once replicated, the lab records receipt, opening and use at its own
//! node; the institute `jxim` suspends the certificate; a further use at the lab is refused
//! (409, naming the rule) and writes nothing; `rmledger verify --at` a moment before the
//! suspension says valid and after it says suspended — still so with every node stopped. Once
//! the institute has anchored the producer's and the lab's chains, a bundle fetched from the lab
//! carries those anchors and `rmledger verify` reports them verified.

use std::path::Path;
use std::time::Duration;

use rmledger_client::time::rfc3339;
use rmledger_tests::{Cli, Federation, TestNode, wait_until};

const SOIL: &str = "GBW(E)082345@2025a";

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("docs/examples")
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

/// The seq of the entry a `--json` write printed, after checking it went to `chain`.
fn seq_on(written: &serde_json::Value, chain: &str) -> u64 {
    assert_eq!(written["chain"], chain, "{written}");
    written["seq"].as_u64().expect("seq")
}

/// Waits until `node` holds `chain` up to and including `seq`.
async fn replicated(node: &TestNode, chain: &str, seq: u64) {
    let what = format!("{} to hold {chain}/{seq}", node.org());
    wait_until(&what, Duration::from_secs(60), || async {
        node.api().chain_size(chain).await > seq
    })
    .await;
}

/// Waits until `node` holds a checkpoint of `chain` covering `seq` (bundles prove entries up to
/// the latest checkpoint, which replication fetches just after the entries).
async fn checkpointed(node: &TestNode, chain: &str, seq: u64) {
    let what = format!("{} to hold a checkpoint of {chain} past {seq}", node.org());
    wait_until(&what, Duration::from_secs(60), || async {
        node.api().checkpoint(chain).await.body().size > seq
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_travels_from_producer_to_lab_and_the_suspension_stops_its_use() {
    let mut federation = Federation::start(&[("acme-rm", "producer"), ("nclab", "lab")]).await;
    let cli = Cli::new(&federation.root().join("cli-config"));
    let (jxim, acme, lab) = (
        federation.node("jxim"),
        federation.node("acme-rm"),
        federation.node("nclab"),
    );
    cli.json(
        None,
        &[
            "federation",
            "trust",
            federation.genesis_file().to_str().unwrap(),
        ],
    );

    // The producer registers at its own node and ships three units to the lab.
    let registered = cli.json(
        Some(acme),
        &["batch", "register", &example("soil-gbw-e.toml")],
    );
    seq_on(&registered, "acme-rm");
    let cert = registered["id"].as_str().unwrap().to_owned();
    let shipped = cli.json(
        Some(acme),
        &["ship", SOIL, "--to", "nclab", "--serials", "S-0001..S-0003"],
    );
    let shipped = seq_on(&shipped, "acme-rm");

    // Before the shipment reaches the lab's node, the lab cannot name the certificate there.
    // After replication it records the unit's journey at its own node.
    replicated(lab, "acme-rm", shipped).await;
    let received = cli.json(
        Some(lab),
        &[
            "receive",
            SOIL,
            "--from",
            "acme-rm",
            "--serials",
            "S-0001..S-0003",
        ],
    );
    seq_on(&received, "nclab");
    seq_on(
        &cli.json(Some(lab), &["open", SOIL, "--serial", "S-0001"]),
        "nclab",
    );
    let used = cli.json(
        Some(lab),
        &[
            "use",
            SOIL,
            "--serial",
            "S-0001",
            "--purpose",
            "calibration",
            "--reference",
            "NCLAB-2026-0001",
        ],
    );
    let used = seq_on(&used, "nclab");
    // The producer's node sees the lab's records too: the unit's journey spans two chains.
    replicated(acme, "nclab", used).await;
    let shown = cli.json(Some(acme), &["show", &cert]);
    assert!(shown.to_string().contains("NCLAB-2026-0001"), "{shown}");

    // A moment strictly between the use and the suspension (times are whole milliseconds; the
    // CLI reads RFC 3339 to the second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = rfc3339(rmledger_client::time::now_unix_ms(), 480);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The institute suspends the certificate at its node.
    replicated(jxim, "acme-rm", shipped).await;
    let suspended = cli.json(
        Some(jxim),
        &[
            "suspend",
            &cert,
            "--reason",
            "Cd value outside the certified range in the institute's check",
        ],
    );
    let suspended = seq_on(&suspended, "jxim");

    // Once the lab's node knows, a further use is refused by the rules, and nothing is written.
    replicated(lab, "jxim", suspended).await;
    let lab_size = lab.api().chain_size("nclab").await;
    let refused = cli.expect(
        Some(lab),
        1,
        &[
            "use",
            SOIL,
            "--serial",
            "S-0001",
            "--purpose",
            "quality-control",
            "--json",
        ],
    );
    let error = refused.json();
    assert_eq!(error["status"], 409, "{refused:?}");
    assert_eq!(error["rule"], "certificate-suspended", "{refused:?}");
    assert!(
        refused.stderr.contains("certificate-suspended"),
        "{refused:?}"
    );
    assert_eq!(lab.api().chain_size("nclab").await, lab_size);

    // The lab saves the proof bundle and checks it offline at two moments.
    checkpointed(lab, "jxim", suspended).await;
    checkpointed(lab, "acme-rm", shipped).await;
    checkpointed(lab, "nclab", used).await;
    let bundle = federation.root().join("soil.bundle");
    let bundle = bundle.to_str().unwrap();
    cli.json(Some(lab), &["fetch-bundle", &cert, "-o", bundle]);
    let check = |at: Option<&str>| {
        let mut args = vec!["verify", bundle, "--json"];
        if let Some(at) = at {
            args.extend(["--at", at]);
        }
        cli.run(None, &args)
    };
    let assert_verdicts = |when: &str| {
        let valid = check(Some(&before));
        assert_eq!(valid.code, 0, "{when}: at {before}: {valid:?}");
        assert_eq!(valid.json()["status"], "valid", "{valid:?}");
        let now = check(None);
        assert_eq!(now.code, 1, "{when}: now: {now:?}");
        assert_eq!(now.json()["status"], "suspended", "{now:?}");
        let text = cli.run(None, &["verify", bundle]);
        assert_eq!(text.code, 1, "{text:?}");
        assert!(text.stdout.contains("SUSPENDED"), "{text:?}");
    };
    assert_verdicts("nodes running");
    // The bundle proves all six entries about the certificate, the lab's three among them.
    let verified = check(Some(&before)).json();
    assert_eq!(verified["entries"], 6, "{verified}");

    // The institute anchors every chain that changed; once the lab holds those anchors, its
    // bundles carry them (each with its receipt on the institute's chain and the consistency
    // proof to the section's checkpoint), and verification reports each one.
    let anchored = federation.root().join("soil-anchored.bundle");
    let anchored = anchored.to_str().unwrap();
    let witnessed = |report: &serde_json::Value, chain: &str| {
        report["anchors"].as_array().is_some_and(|anchors| {
            anchors.iter().any(|a| {
                a["witness"] == "jxim" && a["chain"] == chain && a["size"].as_u64() > Some(0)
            })
        })
    };
    let fetch_anchored = || {
        // A 409 (the lab's copy behind an anchor it holds) is retried, like a missing anchor.
        let fetched = cli.run(
            Some(lab),
            &["fetch-bundle", &cert, "-o", anchored, "--json"],
        );
        if fetched.code != 0 {
            return None;
        }
        let run = cli.run(None, &["verify", anchored, "--json", "--at", &before]);
        assert_eq!(run.code, 0, "{run:?}");
        Some(run.json())
    };
    wait_until(
        "the lab's bundle to carry the institute's anchors",
        Duration::from_secs(60),
        || async {
            fetch_anchored().is_some_and(|r| witnessed(&r, "acme-rm") && witnessed(&r, "nclab"))
        },
    )
    .await;
    let report = cli
        .run(None, &["verify", anchored, "--json", "--at", &before])
        .json();
    // Each anchor is at most the size of its chain's checkpoint in the bundle.
    for anchor in report["anchors"].as_array().unwrap() {
        let checkpoint = report["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["chain"] == anchor["chain"])
            .unwrap_or_else(|| panic!("no checkpoint for {anchor}: {report}"));
        assert!(
            checkpoint["size"].as_u64() >= anchor["size"].as_u64(),
            "{report}"
        );
    }
    let text = cli.run(None, &["verify", anchored, "--at", &before]);
    assert!(
        text.stdout
            .contains("anchor: jxim witnessed acme-rm up to size"),
        "{text:?}"
    );

    // Offline: every node stopped, the same answers from the bundle and the pinned genesis.
    federation.stop_all();
    assert!(!federation.node("nclab").is_running());
    assert_verdicts("every node stopped");
    let offline = cli.run(None, &["verify", anchored, "--json", "--at", &before]);
    assert_eq!(offline.code, 0, "{offline:?}");
    assert!(witnessed(&offline.json(), "acme-rm") && witnessed(&offline.json(), "nclab"));
}
