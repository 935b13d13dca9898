//! Helpers shared by the whole-system tests: real `rmledger-node` processes on 127.0.0.1, each
//! in its own temporary directory, and a small async HTTP client for the node's API.
//!
//! - [`node_binary`] finds (and, once per test process, builds) `target/<profile>/rmledger-node`
//!   next to the running test executable. `RMLEDGER_NODE_BIN` overrides it.
//! - [`TestNode`] runs `init`, `run`, `fsck` and `reindex`; stops the node with SIGTERM or
//!   SIGKILL; kills it on drop. The node's stderr goes to `node-stderr.log` in the node's
//!   directory, and its tail is printed when a test panics while the node exists.
//!   `RMLEDGER_KEEP_DIRS=1` keeps the directories for a post-mortem.
//! - [`Api`] wraps reqwest: raw responses ([`Resp`]), JSON, CBOR entry pages, checkpoints.
//! - [`Federation`] founds a federation of several nodes replicating each other (the registrar
//!   enrols the members); [`Cli`] runs the real `rmledger` binary with its own config directory.
//! - [`records`] builds the JSON bodies of the records the tests write.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::ids::{EntryId, FederationId, PublicKey};
use rmledger_schema::merkle::{Hash, MemoryTree, Sha256};
use serde::Deserialize;
use serde_json::Value;

pub use rmledger_schema;

/// How long a node may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The binary

/// The `rmledger-node` binary: `RMLEDGER_NODE_BIN`, else `target/<profile>/rmledger-node` found
/// from the test executable's path, built once per test process with `cargo build -p
/// rmledger-node` (a no-op when it is up to date) so a stale binary is never tested.
pub fn node_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| find_or_build_node().unwrap_or_else(|e| panic!("rmledger-node: {e:#}")))
}

/// The `rmledger` CLI binary: `RMLEDGER_CLI_BIN`, else `target/<profile>/rmledger`, found and
/// built like [`node_binary`].
pub fn cli_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        find_or_build("RMLEDGER_CLI_BIN", "rmledger", "rmledger-client")
            .unwrap_or_else(|e| panic!("rmledger: {e:#}"))
    })
}

fn find_or_build_node() -> anyhow::Result<PathBuf> {
    find_or_build("RMLEDGER_NODE_BIN", "rmledger-node", "rmledger-node")
}

fn find_or_build(env: &str, name: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("{env}={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test>-<hash>: the profile directory is the first ancestor that
    // has a `deps` child.
    let profile_dir = exe
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("deps").is_dir() && dir.file_name().is_some_and(|n| n != "deps"))
        .with_context(|| format!("no target/<profile> above {}", exe.display()))?
        .to_path_buf();
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let workspace = workspace();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", package, "--bin", name])
        .stdin(Stdio::null());
    if let Some(target_dir) = profile_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) if bin.is_file() => {
            eprintln!(
                "warning: `cargo build -p {package}` failed ({s}); testing the existing {}",
                bin.display()
            );
        }
        Ok(s) => bail!("`cargo build -p {package}` failed: {s}"),
        Err(e) if bin.is_file() => {
            eprintln!("warning: could not run cargo ({e}); testing the existing binary");
        }
        Err(e) => bail!("could not run cargo to build {package}: {e}"),
    }
    if !bin.is_file() {
        bail!("{} does not exist after the build", bin.display());
    }
    Ok(bin)
}

/// The workspace root (the repository), for example files and `cargo` invocations.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// `rmledger-node ARGS…` to completion, with captured output.
pub fn node_command(args: &[&str]) -> std::process::Output {
    Command::new(node_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running rmledger-node {args:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// What `rmledger-node init --json` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct InitReport {
    pub config_file: PathBuf,
    pub key_file: PathBuf,
    pub genesis_file: PathBuf,
    pub federation_id: String,
    pub org: String,
    pub public_key: String,
    pub key_id: String,
    pub operator: String,
    pub operator_token: String,
}

/// Why `run` did not come up.
#[derive(Debug)]
pub struct StartError {
    pub status: Option<ExitStatus>,
    /// What the node wrote to stderr during this start.
    pub stderr: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "the node exited ({status}) before listening")?,
            None => write!(f, "the node did not print its listening line in time")?,
        }
        write!(f, "; its stderr:\n{}", self.stderr)
    }
}

impl std::error::Error for StartError {}

/// One node process in its own temporary directory.
pub struct TestNode {
    /// Holds the temporary root; `None` once kept for a post-mortem.
    root: Option<tempfile::TempDir>,
    dir: PathBuf,
    report: InitReport,
    child: Option<Child>,
    url: Option<String>,
    api: Option<Api>,
}

/// The org of the single-node tests: registrar with every role.
pub const ORG: &str = "jxim";

impl TestNode {
    /// `rmledger-node init` of a registrar `jxim` with every role, listening on 127.0.0.1:0.
    pub fn init_registrar() -> Self {
        let root = tempfile::Builder::new()
            .prefix("rmledger-systest-")
            .tempdir()
            .expect("temp dir");
        let dir = root.path().join(ORG);
        let report = init_registrar_in(&dir)
            .unwrap_or_else(|e| panic!("rmledger-node init in {}: {e:#}", dir.display()));
        Self {
            root: Some(root),
            dir,
            report,
            child: None,
            url: None,
            api: None,
        }
    }

    /// `init_registrar` then `start`.
    pub fn started() -> Self {
        let mut node = Self::init_registrar();
        node.start();
        node
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    pub fn report(&self) -> &InitReport {
        &self.report
    }

    pub fn token(&self) -> &str {
        &self.report.operator_token
    }

    pub fn federation_id(&self) -> FederationId {
        FederationId::from_hex(&self.report.federation_id).expect("federation id from init")
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_hex(&self.report.public_key).expect("public key from init")
    }

    pub fn stderr_log(&self) -> PathBuf {
        self.dir.join("node-stderr.log")
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`, while running.
    pub fn url(&self) -> &str {
        self.url.as_deref().expect("the node is not running")
    }

    /// The API client of the running node.
    pub fn api(&self) -> &Api {
        self.api.as_ref().expect("the node is not running")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is not running").id()
    }

    /// `rmledger-node run --config node.toml`; panics if it does not come up.
    pub fn start(&mut self) -> &Api {
        if let Err(e) = self.try_start() {
            panic!("{} did not start: {e}", self.dir.display());
        }
        self.api()
    }

    /// Starts the node and waits for `rmledger-node listening on http://…` on stdout.
    pub fn try_start(&mut self) -> Result<(), StartError> {
        assert!(self.child.is_none(), "the node is already running");
        let (child, url) = spawn_run(&self.config_file(), &self.stderr_log())?;
        self.api = Some(Api::new(&url, self.token()));
        self.url = Some(url);
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then waits for the exit (panics after [`STOP_TIMEOUT`]).
    pub fn stop_sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the node is not running");
        self.url = None;
        self.api = None;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the node did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
        }
    }

    /// SIGTERM and expects exit code 0.
    pub fn stop(&mut self) {
        let status = self.stop_sigterm();
        assert!(
            status.success(),
            "the node exited with {status} after SIGTERM; stderr tail:\n{}",
            tail(&self.stderr_log(), 40)
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the node is not running");
        self.url = None;
        self.api = None;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Graceful stop, then start again (a new port).
    pub fn restart(&mut self) -> &Api {
        self.stop();
        self.start()
    }

    /// `rmledger-node fsck --config node.toml` (the node must be stopped).
    pub fn fsck(&self) -> std::process::Output {
        assert!(self.child.is_none(), "stop the node before fsck");
        node_command(&["fsck", "--config", path_str(&self.config_file())])
    }

    /// `rmledger-node fsck` against the store of the running node (which holds its lock).
    pub fn fsck_while_running(&self) -> std::process::Output {
        assert!(self.child.is_some(), "the node is not running");
        node_command(&["fsck", "--config", path_str(&self.config_file())])
    }

    /// `rmledger-node reindex --config node.toml` (the node must be stopped).
    pub fn reindex(&self) -> std::process::Output {
        assert!(self.child.is_none(), "stop the node before reindex");
        node_command(&["reindex", "--config", path_str(&self.config_file())])
    }

    /// Runs fsck and panics unless it exits 0 printing `fsck: ok`.
    pub fn assert_fsck_ok(&self) {
        let out = self.fsck();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("fsck: ok"),
            "fsck failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} stderr (tail) ---\n{}",
                self.dir.display(),
                tail(&self.stderr_log(), 60)
            );
        }
        if std::env::var_os("RMLEDGER_KEEP_DIRS").is_some()
            && let Some(root) = self.root.take()
        {
            eprintln!("kept {}", root.keep().display());
        }
    }
}

/// Spawns `rmledger-node run --config CONFIG` with stderr appended to `log_path` and waits for
/// its listening line: the child and the base URL, or why it did not come up. Used by
/// [`TestNode::try_start`], and directly to try a second process on one node directory.
pub fn spawn_run(config: &Path, log_path: &Path) -> Result<(Child, String), StartError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("stderr log");
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = Command::new(node_binary())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn rmledger-node run");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut sent = false;
        while let Some(Ok(line)) = lines.next() {
            if !sent {
                sent = tx.send(line).is_ok();
            } else {
                eprintln!("rmledger-node stdout (unexpected): {line}");
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => {
            let Some(url) = line.strip_prefix("rmledger-node listening on ") else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("unexpected first stdout line from rmledger-node run: {line:?}");
            };
            let url = url.trim().trim_end_matches('/').to_owned();
            assert!(
                url.starts_with("http://127.0.0.1:"),
                "the node must listen on 127.0.0.1 only: {url}"
            );
            Ok((child, url))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // stdout closed without a line: the process is exiting.
            let status = wait_timeout(&mut child, Duration::from_secs(10));
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(StartError {
                status,
                stderr: read_from(log_path, log_start),
            })
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(StartError {
                status: None,
                stderr: read_from(log_path, log_start),
            })
        }
    }
}

/// `rmledger-node init --registrar` into `dir` (which must not hold a node).
pub fn init_registrar_in(dir: &Path) -> anyhow::Result<InitReport> {
    let out = node_command(&[
        "init",
        "--dir",
        path_str(dir),
        "--org",
        ORG,
        "--registrar",
        "--federation-name",
        "System test federation",
        "--org-name",
        "Test Institute of Metrology",
        "--roles",
        "institute,producer,lab,regulator",
        "--listen",
        "127.0.0.1:0",
        "--json",
    ]);
    if !out.status.success() {
        bail!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "init --json printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// The last `n` lines of a text file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Federations of several nodes

/// A port nothing listens on at the moment (bound, then released). Nodes of a federation
/// listen on ports picked in advance, because each names the others as peers before starting.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl TestNode {
    /// `rmledger-node init` of `org` in `dir` (under a root the caller keeps), listening on a
    /// port picked now: the registrar holding `roles` when `genesis` is `None`, else a member
    /// joining the federation of that genesis file (the registrar still has to enrol it).
    pub fn init_in(dir: &Path, org: &str, roles: &[&str], genesis: Option<&Path>) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["init", "--dir", path_str(dir), "--org", org];
        args.extend(["--listen", &listen, "--json"]);
        let roles = roles.join(",");
        match genesis {
            None => {
                args.extend([
                    "--registrar",
                    "--federation-name",
                    "System test federation",
                    "--org-name",
                    "Test Institute of Metrology",
                ]);
                if !roles.is_empty() {
                    args.extend(["--roles", &roles]);
                }
            }
            Some(genesis) => args.extend(["--genesis", path_str(genesis)]),
        }
        let out = node_command(&args);
        assert!(
            out.status.success(),
            "rmledger-node init {org}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: InitReport = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("init --json of {org}: {e}"));
        Self {
            root: None,
            dir: dir.to_path_buf(),
            report,
            child: None,
            url: None,
            api: None,
        }
    }

    /// The organisation this node writes for.
    pub fn org(&self) -> &str {
        &self.report.org
    }

    /// The URL the node listens on once started (from its `node.toml`).
    pub fn listen_url(&self) -> String {
        let table = self.config_table();
        let listen = table["listen"].as_str().expect("listen in node.toml");
        format!("http://{listen}")
    }

    fn config_table(&self) -> toml::Table {
        std::fs::read_to_string(self.config_file())
            .expect("node.toml")
            .parse()
            .expect("node.toml parses")
    }

    /// Sets the node's peers, with short replication and anchor intervals for tests (the node
    /// must be stopped).
    pub fn configure_peers(&self, peers: &[String]) {
        self.configure_peers_with(peers, |_| {});
    }

    /// [`Self::configure_peers`], then `edit` changes anything else in `node.toml`.
    pub fn configure_peers_with(&self, peers: &[String], edit: impl FnOnce(&mut toml::Table)) {
        assert!(
            self.child.is_none(),
            "stop the node before changing its peers"
        );
        let mut table = self.config_table();
        table.insert("replication_interval_ms".into(), 200.into());
        table.insert("replication_max_backoff_ms".into(), 1000.into());
        table.insert("anchor_interval_seconds".into(), 1.into());
        let peers: Vec<toml::Value> = peers
            .iter()
            .map(|url| {
                let mut peer = toml::Table::new();
                peer.insert("url".into(), url.clone().into());
                toml::Value::Table(peer)
            })
            .collect();
        table.insert("peers".into(), peers.into());
        edit(&mut table);
        std::fs::write(
            self.config_file(),
            toml::to_string(&table).expect("node.toml"),
        )
        .expect("write node.toml");
    }
}

/// Node processes of one federation under one temporary root: `jxim` (registrar and
/// institute) and the members it enrolled, each replicating from all the others.
pub struct Federation {
    /// Declared before `root` so the processes are stopped before their files go.
    nodes: Vec<TestNode>,
    root: tempfile::TempDir,
}

impl Federation {
    /// Founds the federation, enrols `members` (`(org, role)`) through the registrar's API,
    /// starts every node and waits until each member has replicated its own enrolment.
    pub async fn start(members: &[(&str, &str)]) -> Self {
        let root = tempfile::Builder::new()
            .prefix("rmledger-federation-")
            .tempdir()
            .expect("temp dir");
        let registrar = TestNode::init_in(&root.path().join(ORG), ORG, &["institute"], None);
        let genesis = registrar.dir().join("genesis.cbor");
        let mut nodes = vec![registrar];
        for (org, _) in members {
            nodes.push(TestNode::init_in(
                &root.path().join(org),
                org,
                &[],
                Some(&genesis),
            ));
        }
        let urls: Vec<String> = nodes.iter().map(TestNode::listen_url).collect();
        for node in &nodes {
            let own = node.listen_url();
            let peers: Vec<String> = urls.iter().filter(|u| **u != own).cloned().collect();
            node.configure_peers(&peers);
        }
        let mut federation = Self { nodes, root };
        federation.nodes[0].start();
        for (i, (org, role)) in members.iter().enumerate() {
            use rmledger_schema::records::{Enrol, Record, Role};
            let role = Role::ALL
                .into_iter()
                .find(|r| r.as_str() == *role)
                .unwrap_or_else(|| panic!("unknown role {role}"));
            let enrol = Record::Enrol(Enrol {
                org: rmledger_schema::ids::OrgId::new(org).expect("org id"),
                keys: vec![federation.nodes[i + 1].public_key()],
                name: format!("{org} (test)"),
                roles: vec![role],
            });
            federation.nodes[0].api().write(&records::json(enrol)).await;
        }
        for node in &mut federation.nodes[1..] {
            node.start();
        }
        for node in &federation.nodes[1..] {
            let org = node.org().to_owned();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let members = node.api().get_json("/v1/members").await;
                if members
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["org"] == org.as_str()))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{org} did not replicate its enrolment within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        federation
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The federation's genesis file.
    pub fn genesis_file(&self) -> PathBuf {
        self.nodes[0].dir().join("genesis.cbor")
    }

    pub fn node(&self, org: &str) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.org() == org)
            .unwrap_or_else(|| panic!("no node {org}"))
    }

    pub fn node_mut(&mut self, org: &str) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.org() == org)
            .unwrap_or_else(|| panic!("no node {org}"))
    }

    /// Stops every running node (SIGTERM, exit 0 expected).
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if node.is_running() {
                node.stop();
            }
        }
    }
}

/// Polls `condition` every 100 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI

/// The `rmledger` CLI with its own config directory (`XDG_CONFIG_HOME`), so the user's real
/// config is never touched.
pub struct Cli {
    xdg: PathBuf,
}

/// What one `rmledger` run did.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl CliRun {
    /// Stdout as JSON (after `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Cli {
    /// A CLI whose config lives in `dir` (created).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("CLI config dir");
        Self {
            xdg: dir.to_path_buf(),
        }
    }

    /// The config directory (`XDG_CONFIG_HOME`); the CLI's own files are under `rmledger/`.
    pub fn dir(&self) -> &Path {
        &self.xdg
    }

    /// `rmledger ARGS…`, talking to `node` with its operator token when given.
    pub fn run(&self, node: Option<&TestNode>, args: &[&str]) -> CliRun {
        self.run_at(node.map(TestNode::url), node.map(TestNode::token), args)
    }

    /// `rmledger ARGS…` with `RMLEDGER_NODE` and `RMLEDGER_TOKEN` set when given: for a node
    /// that is stopped (an unreachable address) or a run without the operator token.
    pub fn run_at(&self, url: Option<&str>, token: Option<&str>, args: &[&str]) -> CliRun {
        let mut command = Command::new(cli_binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", &self.xdg)
            .env("HOME", &self.xdg)
            .stdin(Stdio::null());
        if let Some(url) = url {
            command.env("RMLEDGER_NODE", url);
        }
        if let Some(token) = token {
            command.env("RMLEDGER_TOKEN", token);
        }
        let out = command.output().expect("running rmledger");
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires exit code `code`.
    pub fn expect(&self, node: Option<&TestNode>, code: i32, args: &[&str]) -> CliRun {
        let run = self.run(node, args);
        assert_eq!(
            run.code,
            code,
            "rmledger {args:?} at {:?}: {run:?}",
            node.map(TestNode::org)
        );
        run
    }

    /// Runs with `--json`, requires exit 0 and returns the JSON printed.
    pub fn json(&self, node: Option<&TestNode>, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.expect(node, 0, &all).json()
    }
}

/// A [`Cli`] bound to one node: its URL and operator token (or none of them, or an address
/// without a token), for tests that mostly talk to one node.
pub struct NodeCli {
    cli: Cli,
    url: Option<String>,
    token: Option<String>,
}

impl NodeCli {
    /// A CLI with its config in `dir`, talking to `node` with its operator token: the running
    /// node's URL, or the one it will listen on once started (from its `node.toml`), which
    /// stays the same across restarts.
    pub fn of(dir: &Path, node: &TestNode) -> Self {
        let url = if node.is_running() {
            node.url().to_owned()
        } else {
            node.listen_url()
        };
        Self::new(dir, Some(&url), Some(node.token()))
    }

    /// A CLI with its config in `dir`, talking to `url` with `token` when given.
    pub fn new(dir: &Path, url: Option<&str>, token: Option<&str>) -> Self {
        Self {
            cli: Cli::new(dir),
            url: url.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    /// The same config directory, talking to `url` with `token`.
    pub fn at(&self, url: Option<&str>, token: Option<&str>) -> Self {
        Self::new(self.cli.dir(), url, token)
    }

    /// The same config directory, with no node.
    pub fn offline(&self) -> Self {
        self.at(None, None)
    }

    /// The CLI's own files (`config.toml`, the pinned `genesis.cbor`).
    pub fn config_dir(&self) -> PathBuf {
        self.cli.dir().join("rmledger")
    }

    pub fn run(&self, args: &[&str]) -> CliRun {
        self.cli
            .run_at(self.url.as_deref(), self.token.as_deref(), args)
    }

    /// Runs and requires exit code `code`.
    pub fn expect(&self, code: i32, args: &[&str]) -> CliRun {
        let run = self.run(args);
        assert_eq!(run.code, code, "rmledger {args:?}: {run:?}");
        run
    }

    /// Runs and requires exit code 0.
    pub fn ok(&self, args: &[&str]) -> CliRun {
        self.expect(0, args)
    }

    /// Runs with `--json`, requires exit 0 and returns the JSON printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.ok(&all).json()
    }

    /// Runs a write with `--json`: the new entry's id.
    pub fn write(&self, args: &[&str]) -> String {
        self.json(args)["id"]
            .as_str()
            .unwrap_or_else(|| panic!("rmledger {args:?} printed no id"))
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A response: status, content type and body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} ({}): body is not JSON ({e}): {:?}",
                self.status,
                self.content_type,
                self.text()
            )
        })
    }

    /// Panics unless the status is `status`.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {} ({}): {}",
            self.status,
            self.content_type,
            self.text()
        );
        self
    }
}

/// What a successful `POST /v1/records` returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Written {
    pub id: String,
    pub chain: String,
    pub seq: u64,
}

impl Written {
    pub fn entry_id(&self) -> EntryId {
        EntryId::from_hex(&self.id).expect("a lowercase hex entry id")
    }
}

/// One row of `GET /v1/chains`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChainRow {
    pub chain: String,
    pub size: u64,
    pub head: Option<String>,
    pub root: String,
}

/// An error body: `{"error", "field"?, "rule"?, "index"?, "detail"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub field: Option<String>,
    pub rule: Option<String>,
    /// From `POST /v1/records/batch`: the record refused.
    pub index: Option<usize>,
    pub detail: String,
}

/// A client of one node: the base URL and the operator token.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn http_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest is built with rustls but no crypto provider; plain http on loopback never
            // uses it, but building a client needs one installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client")
        })
        .clone()
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: http_client(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Resp> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.bytes().await?.to_vec();
        Ok(Resp {
            status,
            content_type,
            body,
        })
    }

    /// `GET path` (path starts with `/`).
    pub async fn try_get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
            .with_context(|| format!("GET {path}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path).await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `GET path`, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        resp.expect_status(200);
        resp.json()
    }

    /// `POST /v1/records` with raw bytes, an optional `Authorization` header value and
    /// `Content-Type: application/json`.
    pub async fn try_post_raw(
        &self,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> anyhow::Result<Resp> {
        self.try_post_to("/v1/records", body, authorization).await
    }

    /// `POST {path}` with raw bytes, an optional `Authorization` header value and
    /// `Content-Type: application/json`.
    pub async fn try_post_to(
        &self,
        path: &str,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> anyhow::Result<Resp> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        self.send(request)
            .await
            .with_context(|| format!("POST {path}"))
    }

    /// `POST /v1/records/batch` of `records` with the operator token.
    pub async fn post_batch(&self, records: &[Value]) -> Resp {
        let body = serde_json::to_vec(records).expect("records serialise");
        let bearer = format!("Bearer {}", self.token);
        self.try_post_to("/v1/records/batch", body, Some(&bearer))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub async fn post_raw(&self, body: Vec<u8>, authorization: Option<&str>) -> Resp {
        self.try_post_raw(body, authorization)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `POST /v1/records` with the operator token.
    pub async fn try_post_record(&self, record: &Value) -> anyhow::Result<Resp> {
        let body = serde_json::to_vec(record)?;
        let bearer = format!("Bearer {}", self.token);
        self.try_post_raw(body, Some(&bearer)).await
    }

    pub async fn post_record(&self, record: &Value) -> Resp {
        self.try_post_record(record)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Writes a record, expecting 201 and `{id, chain, seq}`.
    pub async fn write(&self, record: &Value) -> Written {
        let resp = self.post_record(record).await;
        assert_eq!(
            resp.status,
            201,
            "writing {record} failed: {} {}",
            resp.status,
            resp.text()
        );
        serde_json::from_slice(&resp.body)
            .unwrap_or_else(|e| panic!("201 body {:?}: {e}", resp.text()))
    }

    pub async fn chains(&self) -> Vec<ChainRow> {
        let value = self.get_json("/v1/chains").await;
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("/v1/chains {value}: {e}"))
    }

    /// The size of each chain.
    pub async fn chain_sizes(&self) -> std::collections::BTreeMap<String, u64> {
        self.chains()
            .await
            .into_iter()
            .map(|c| (c.chain, c.size))
            .collect()
    }

    pub async fn chain(&self, chain: &str) -> Option<ChainRow> {
        self.chains().await.into_iter().find(|c| c.chain == chain)
    }

    pub async fn chain_size(&self, chain: &str) -> u64 {
        self.chain(chain).await.map_or(0, |c| c.size)
    }

    /// One page of `GET /v1/chains/{chain}/entries?from=&limit=`: the exact entry bytes.
    pub async fn entries_page(&self, chain: &str, from: u64, limit: u64) -> Vec<Vec<u8>> {
        let resp = self
            .get(&format!(
                "/v1/chains/{chain}/entries?from={from}&limit={limit}"
            ))
            .await;
        resp.expect_status(200);
        assert!(
            resp.content_type.starts_with("application/cbor"),
            "entries content type {:?}",
            resp.content_type
        );
        decode_byte_string_array(&resp.body)
            .unwrap_or_else(|e| panic!("entries page from {from}: {e:#}"))
    }

    /// Every entry of `chain`, paged.
    pub async fn all_entries(&self, chain: &str) -> Vec<Vec<u8>> {
        let size = self.chain_size(chain).await;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let page = self.entries_page(chain, out.len() as u64, 500).await;
            assert!(
                !page.is_empty(),
                "empty page at {} of {size} entries",
                out.len()
            );
            out.extend(page);
        }
        assert_eq!(out.len() as u64, size, "more entries than the chain's size");
        out
    }

    /// `GET /v1/chains/{chain}/entries/{seq}`: the entry's bytes, or `None` on 404.
    pub async fn entry(&self, chain: &str, seq: u64) -> Option<Vec<u8>> {
        let resp = self.get(&format!("/v1/chains/{chain}/entries/{seq}")).await;
        match resp.status {
            200 => Some(resp.body),
            404 => None,
            other => panic!("entry {chain}/{seq}: HTTP {other}: {}", resp.text()),
        }
    }

    /// The latest checkpoint of `chain`, decoded.
    pub async fn checkpoint(&self, chain: &str) -> Checkpoint {
        let resp = self.get(&format!("/v1/chains/{chain}/checkpoint")).await;
        resp.expect_status(200);
        Checkpoint::decode(&resp.body)
            .unwrap_or_else(|e| panic!("checkpoint of {chain} does not decode: {e}"))
    }
}

/// Decodes a CBOR array of byte strings (definite lengths, as the node writes them).
pub fn decode_byte_string_array(bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut reader = rmledger_schema::cbor::Reader::new(bytes);
    let n = reader.array().map_err(|e| anyhow!("array head: {e}"))?;
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(100_000));
    for i in 0..n {
        out.push(
            reader
                .bytes()
                .map_err(|e| anyhow!("item {i}: {e}"))?
                .to_vec(),
        );
    }
    if !reader.is_empty() {
        bail!("trailing bytes after {n} items");
    }
    Ok(out)
}

/// Panics unless `resp` is the JSON error `{"error": class, …}` with this status; returns it.
pub fn expect_error(resp: &Resp, status: u16, class: &str) -> ApiError {
    assert_eq!(
        resp.status,
        status,
        "expected HTTP {status} {class}, got {} ({}): {}",
        resp.status,
        resp.content_type,
        resp.text()
    );
    let error: ApiError = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
        panic!(
            "HTTP {status}: the error body is not {{error, field?, rule?, detail}} ({e}): {:?}",
            resp.text()
        )
    });
    assert_eq!(error.error, class, "error class; body {}", resp.text());
    assert!(
        !error.detail.trim().is_empty(),
        "an error needs a detail: {}",
        resp.text()
    );
    error
}

// ---------------------------------------------------------------------------------------------
// Trees

/// The leaf hashes of entries.
pub fn leaf_hashes(entries: &[Vec<u8>]) -> Vec<Hash> {
    entries
        .iter()
        .map(|e| rmledger_schema::entry::leaf_hash(e).0)
        .collect()
}

/// A local RFC 9162 tree over the entries.
pub fn memory_tree(entries: &[Vec<u8>]) -> MemoryTree<Sha256> {
    let mut tree = MemoryTree::new();
    for leaf in leaf_hashes(entries) {
        tree.push_leaf_hash(leaf);
    }
    tree
}

/// `roots[s]` is the root of the first `s` entries (`roots[0]` is the empty tree's).
pub fn prefix_roots(entries: &[Vec<u8>]) -> Vec<Hash> {
    let mut tree = MemoryTree::<Sha256>::new();
    let mut roots = vec![tree.root()];
    for leaf in leaf_hashes(entries) {
        tree.push_leaf_hash(leaf);
        roots.push(tree.root());
    }
    roots
}

/// A hex string as a 32-byte hash.
pub fn hash_hex(text: &str) -> Hash {
    let bytes = data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .unwrap_or_else(|e| panic!("{text:?} is not lowercase hex: {e}"));
    <[u8; 32]>::try_from(bytes.as_slice())
        .unwrap_or_else(|_| panic!("{text:?} is {} bytes, not 32", bytes.len()))
}

pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// A tiny seeded xorshift64* generator: reproducible test randomness without a dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

/// The seed of a randomised test: `RMLEDGER_TEST_SEED`, else the given default.
pub fn seed(default: u64) -> u64 {
    std::env::var("RMLEDGER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Records

/// JSON bodies of the records the tests write.
pub mod records {
    use rmledger_schema::ids::{CertificateId, OrgId, TreeHash};
    use rmledger_schema::records::{
        Anchor, Certificate, Record, Shipped, StatusChange, Uncertainty, ValueVerification,
    };
    use rmledger_schema::testkit;
    use rmledger_schema::units::Unit;
    use serde_json::Value;

    pub fn json(record: Record) -> Value {
        serde_json::to_value(record).expect("records serialize to JSON")
    }

    /// The soil certificate (Cd 0.21 ± 0.01 mg/kg, k = 2; units S-0001..S-0100).
    pub fn soil(batch: &str) -> Certificate {
        testkit::soil_certificate(batch)
    }

    pub fn register(certificate: Certificate) -> Value {
        json(Record::BatchRegistered(certificate))
    }

    /// The institute's Cd measurement: 0.23 ± 0.02 mg/kg (k = 2) against revision 1.
    pub fn verify_cd(cert: CertificateId) -> Value {
        json(Record::ValueVerification(ValueVerification {
            cert,
            unit: Unit::parse("mg/kg").expect("unit"),
            value: testkit::decimal("0.23"),
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
        }))
    }

    fn status(cert: CertificateId, reason: &str) -> StatusChange {
        StatusChange {
            cert,
            reason: reason.into(),
        }
    }

    pub fn suspend(cert: CertificateId, reason: &str) -> Value {
        json(Record::Suspended(status(cert, reason)))
    }

    pub fn reinstate(cert: CertificateId, reason: &str) -> Value {
        json(Record::Reinstated(status(cert, reason)))
    }

    pub fn recall(cert: CertificateId, reason: &str) -> Value {
        json(Record::Recalled(status(cert, reason)))
    }

    pub fn ship(cert: CertificateId, to: &str, serials: &str) -> Value {
        json(Record::Shipped(Shipped {
            to: testkit::org(to),
            cert,
            serials: testkit::serials(serials),
        }))
    }

    /// A witness statement about `chain` (any 32 bytes as the root).
    pub fn anchor(chain: &str, size: u64, root: [u8; 32]) -> Value {
        json(Record::Anchor(Anchor {
            root: TreeHash(root),
            size,
            chain: OrgId::new(chain).expect("org id"),
        }))
    }
}
