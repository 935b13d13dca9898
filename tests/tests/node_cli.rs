//! The `rmledger-node` command line on real directories: init, fsck, reindex, a corrupted
//! segment, a lost index, and SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmledger_schema::entry::Entry;
use rmledger_tests::records;
use rmledger_tests::{
    Api, ChainRow, ORG, TestNode, Written, init_registrar_in, node_command, spawn_run,
};

async fn write_anchors(api: &Api, n: u64) -> Vec<Written> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&i.to_be_bytes());
        out.push(api.write(&records::anchor("nclab", i + 1, root)).await);
    }
    out
}

async fn chains_and_entries(api: &Api) -> (Vec<ChainRow>, Vec<Vec<u8>>) {
    (api.chains().await, api.all_entries(ORG).await)
}

#[test]
fn init_refuses_an_existing_node_and_keeps_the_key_private() {
    let node = TestNode::init_registrar();
    let report = node.report();
    let mode = std::fs::metadata(&report.key_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    assert_eq!(report.org, ORG);
    assert_eq!(report.config_file, node.config_file());
    assert!(report.genesis_file.is_file());
    assert_eq!(report.operator_token.len(), 64);
    let config = std::fs::read_to_string(node.config_file()).unwrap();
    assert!(
        !config.contains(&report.operator_token),
        "node.toml must hold only the token's hash"
    );

    let key_before = std::fs::read(&report.key_file).unwrap();
    let config_before = std::fs::read(node.config_file()).unwrap();
    let err = init_registrar_in(node.dir()).expect_err("init over an existing node");
    let message = format!("{err:#}");
    assert!(
        message.contains("already") && message.contains(node.dir().to_str().unwrap()),
        "init names the existing node: {message}"
    );
    assert_eq!(std::fs::read(&report.key_file).unwrap(), key_before);
    assert_eq!(std::fs::read(node.config_file()).unwrap(), config_before);

    // Neither --registrar nor --genesis: a usage error, nothing created.
    let other = node.dir().with_file_name("nothing");
    let out = node_command(&["init", "--dir", other.to_str().unwrap(), "--org", "nclab"]);
    assert!(!out.status.success());
    assert!(!other.join("node.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_and_reindex_on_a_stopped_node() {
    let mut node = TestNode::started();
    write_anchors(node.api(), 40).await;
    let before = chains_and_entries(node.api()).await;

    node.stop();
    node.assert_fsck_ok();
    let out = node.fsck();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("fsck: ok") && stdout.contains("40 entries"),
        "{stdout}"
    );

    // reindex, then run: the same chains and entries.
    let out = node.reindex();
    assert!(
        out.status.success(),
        "reindex: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.start();
    assert_eq!(chains_and_entries(node.api()).await, before);
    // Writing continues where the chain ended.
    let next = write_anchors(node.api(), 1).await;
    assert_eq!(next[0].seq, 40);
    node.stop();

    // A lost index is rebuilt from the segments on start.
    std::fs::remove_dir_all(node.dir().join("data/index")).expect("the index directory");
    node.start();
    let (rows, entries) = chains_and_entries(node.api()).await;
    assert_eq!(entries.len(), 41);
    assert_eq!(entries[..40], before.1[..]);
    assert_eq!(rows[0].size, 41);
    node.stop();
    node.assert_fsck_ok();
}

/// The message names the damaged file.
fn names_first_segment(message: &str) -> bool {
    message.contains("segments/0000000000.seg")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_segment_stops_the_node_from_starting() {
    let mut node = TestNode::started();
    write_anchors(node.api(), 30).await;
    node.stop();
    let segment = node.dir().join("data/segments/0000000000.seg");
    let mut bytes = std::fs::read(&segment).expect("the first segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let err = node
        .try_start()
        .expect_err("the node must refuse a corrupted segment");
    assert!(err.status.is_some_and(|s| !s.success()), "{err}");
    assert!(
        names_first_segment(&err.stderr),
        "the refusal names the segment: {err}"
    );
    let out = node.fsck();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "fsck must fail on a corrupted segment"
    );
    assert!(
        names_first_segment(&stderr),
        "fsck names the segment: {stderr}"
    );
    // Nothing was "repaired" behind the operator's back.
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_writes_and_exits_0() {
    let mut node = TestNode::started();
    let api = node.api().clone();
    write_anchors(&api, 5).await;
    // Writers keep posting while SIGTERM arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Written>>> = Arc::default();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4u8 {
        let (api, stop, acks) = (api.clone(), stop.clone(), acks.clone());
        writers.spawn(async move {
            let mut n = 0u8;
            while !stop.load(Ordering::Relaxed) && n < 250 {
                n += 1;
                let mut root = [w; 32];
                root[31] = n;
                match api
                    .try_post_record(&records::anchor("nclab", u64::from(n), root))
                    .await
                {
                    Ok(resp) if resp.status == 201 => {
                        acks.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&resp.body).unwrap());
                    }
                    _ => break,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = tokio::task::block_in_place(|| node.stop_sigterm());
    stop.store(true, Ordering::Relaxed);
    while writers.join_next().await.is_some() {}
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    assert!(!acks.is_empty(), "writes were in flight");

    node.assert_fsck_ok();
    let api = node.start().clone();
    for ack in &acks {
        let bytes = api
            .entry(ORG, ack.seq)
            .await
            .unwrap_or_else(|| panic!("acknowledged seq {} lost at SIGTERM", ack.seq));
        assert_eq!(Entry::id_of(&bytes).unwrap(), ack.entry_id());
    }
    let checkpoint = api.checkpoint(ORG).await;
    assert_eq!(checkpoint.body().size, api.chain_size(ORG).await);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_nodes_store_is_locked() {
    let mut node = TestNode::started();
    write_anchors(node.api(), 3).await;

    let out = node.fsck_while_running();
    assert!(
        !out.status.success(),
        "fsck must refuse a running node's store, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another rmledger-node process"),
        "{stderr}"
    );
    let out = node_command(&["reindex", "--config", node.config_file().to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "reindex must refuse a running node's store, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let second = spawn_run(&node.config_file(), &node.dir().join("second-stderr.log"));
    if let Ok((mut child, url)) = second {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a second `run` on the same node directory started and listens on {url}");
    }
    // The first node is unharmed.
    write_anchors(node.api(), 1).await;
    node.stop();
    node.assert_fsck_ok();
}
