//! `rmledger-node`: the daemon a member organisation runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmledger_node::api::{AppState, serve as serve_api};
use rmledger_node::append::Writer;
use rmledger_node::config::Config;
use rmledger_node::fsck::fsck;
use rmledger_node::init::{FederationChoice, InitOptions, init};
use rmledger_node::keys;
use rmledger_node::ledger::Ledger;
use rmledger_node::metrics::Metrics;
use rmledger_node::replicate::Replication;
use rmledger_node::storage::{Store, StoreOptions};
use rmledger_schema::federation::Genesis;
use rmledger_schema::ids::OrgId;
use rmledger_schema::records::Role;
use std::sync::Arc;

/// mimalloc instead of the system allocator: every request, entry and index key allocates, and
/// glibc's malloc/free were ~14 % of the node's CPU per append (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rmledger-node",
    version,
    about = "The rmledger node: durable signed chains of one organisation and its federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: serve the API and sign this organisation's entries.
    Run {
        /// The node's configuration file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Re-verify every stored chain, tree and checkpoint; report the first problem.
    Fsck {
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
    /// Rebuild every derived index from the chains' segment files.
    Reindex {
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
    /// Create a node directory: the organisation's key (0600), the genesis and node.toml.
    Init {
        /// The node directory to create.
        #[arg(long)]
        dir: PathBuf,
        /// The organisation id, e.g. acme-rm.
        #[arg(long)]
        org: String,
        /// Found a new federation with this node's organisation as registrar.
        #[arg(long, conflicts_with = "genesis", requires_all = ["federation_name", "org_name"])]
        registrar: bool,
        /// The new federation's name (with --registrar).
        #[arg(long)]
        federation_name: Option<String>,
        /// The registrar organisation's full name (with --registrar).
        #[arg(long)]
        org_name: Option<String>,
        /// Roles of the registrar besides `registrar`, e.g. institute (with --registrar).
        #[arg(long, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
        /// The federation's civil time zone offset in minutes (with --registrar).
        #[arg(long, default_value_t = 480, allow_hyphen_values = true)]
        utc_offset_minutes: i32,
        /// Join an existing federation from its genesis file.
        #[arg(long, required_unless_present = "registrar")]
        genesis: Option<PathBuf>,
        /// Address for the HTTP API.
        #[arg(long, default_value = "127.0.0.1:7300")]
        listen: std::net::SocketAddr,
        /// Name of the first operator (its token is printed once).
        #[arg(long, default_value = "admin")]
        operator: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| {
            format!(
                "unknown role {text:?}; roles are registrar, producer, institute, lab, regulator"
            )
        })
}

fn now_unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc returns freed memory to the
/// kernel after a delay and touches it again later; with huge pages each such touch makes the
/// kernel zero 2 MiB. In the catch-up benchmark the mirror's kernel time was 4.3–6.4 µs per
/// replicated entry with them, 0.9–2.0 µs without (docs/performance.md). Failure only costs
/// that time.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this process.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, log_format } => {
            init_tracing(log_format);
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(config))
        }
        Command::Fsck { config } => {
            let config = Config::load(&config)?;
            let genesis = read_genesis(&config)?;
            let store = Store::open(config.data_dir.clone(), store_options(&config)?)
                .context("opening the store (is the node running? stop it first)")?;
            match fsck(&store, &genesis) {
                Ok(report) => {
                    println!(
                        "fsck: ok — {} entries on {} chains, {} checkpoints verified",
                        report.entries,
                        report.chains.len(),
                        report.checkpoints
                    );
                    Ok(())
                }
                Err(problem) => anyhow::bail!("fsck: {problem}"),
            }
        }
        Command::Reindex { config } => {
            let config = Config::load(&config)?;
            let genesis = read_genesis(&config)?;
            let org = OrgId::new(&config.org)?;
            let store = Store::reindex(config.data_dir.clone(), store_options(&config)?)
                .context("rebuilding the index (is the node running? stop it first)")?;
            let chains = store.chains().len();
            // The certificate maps are rebuilt from the reindexed entries and checked, with the
            // trees, against each chain's latest checkpoint, as at start-up.
            Ledger::open(Arc::new(store), genesis, org)
                .context("checking the reindexed chains and certificate maps")?;
            println!("reindex: rebuilt the index and the certificate maps of {chains} chains");
            Ok(())
        }
        Command::Init {
            dir,
            org,
            registrar,
            federation_name,
            org_name,
            roles,
            utc_offset_minutes,
            genesis,
            listen,
            operator,
            json,
        } => {
            let org = OrgId::new(&org)?;
            let federation = match (registrar, genesis) {
                (true, _) => FederationChoice::Found {
                    federation_name: federation_name
                        .context("--federation-name is required with --registrar")?,
                    org_name: org_name.context("--org-name is required with --registrar")?,
                    roles,
                    utc_offset_minutes,
                },
                (false, Some(genesis_file)) => FederationChoice::Join { genesis_file },
                (false, None) => anyhow::bail!(
                    "give --registrar to found a federation, or --genesis FILE to join one"
                ),
            };
            let report = init(&InitOptions {
                dir,
                org,
                listen,
                operator,
                federation,
                now_unix_ms: now_unix_ms(),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "Created node {} in {}",
                    report.org,
                    report.config_file.display()
                );
                println!("  federation id  {}", report.federation_id);
                println!(
                    "  public key     {}  (give this to the registrar to enrol)",
                    report.public_key
                );
                println!("  key file       {} (mode 0600)", report.key_file.display());
                println!("  operator       {}", report.operator);
                println!(
                    "  operator token {}  (shown once; only its hash is stored)",
                    report.operator_token
                );
            }
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sled=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn read_genesis(config: &Config) -> anyhow::Result<Genesis> {
    let bytes = std::fs::read(&config.genesis_file)
        .with_context(|| format!("reading {}", config.genesis_file.display()))?;
    Genesis::decode(&bytes)
        .with_context(|| format!("{} is not a valid genesis", config.genesis_file.display()))
}

/// How every command opens the store: this node's own chain is the writer's, so a commit of it
/// a crash cut short is cut off at open (see `StoreOptions::writer_chain`).
fn store_options(config: &Config) -> anyhow::Result<StoreOptions> {
    Ok(StoreOptions {
        writer_chain: Some(OrgId::new(&config.org)?),
        ..StoreOptions::default()
    })
}

/// Opens the store and ledger, starts the writer and serves until SIGTERM or Ctrl-C; then
/// finishes queued writes and flushes.
async fn serve(config: Config) -> anyhow::Result<()> {
    let key = keys::read(&config.key_file)?;
    let genesis = read_genesis(&config)?;
    let org = OrgId::new(&config.org)?;
    let store_dir = config.data_dir.clone();
    let options = store_options(&config)?;
    let (store, recovery) =
        tokio::task::spawn_blocking(move || Store::open_with_recovery(store_dir, options))
            .await?
            .context("opening the store")?;
    if recovery.rebuilt || recovery.replayed > 0 || recovery.truncated > 0 {
        tracing::warn!(
            rebuilt = recovery.rebuilt,
            replayed = recovery.replayed,
            truncated_bytes = recovery.truncated,
            cut_entries = recovery.cut_entries,
            "recovered the store"
        );
    }
    let store = Arc::new(store);
    let ledger = Arc::new(
        Ledger::open(store.clone(), genesis, org.clone()).context("checking the stored chains")?,
    );
    {
        let membership = ledger.membership();
        let enrolled = membership
            .key(&rmledger_schema::cose::key_id(&key.verifying_key()))
            .is_some_and(|(m, _)| m.org == org);
        if !enrolled {
            tracing::warn!(%org, "this node's key is not enrolled for its organisation yet; writes will be refused until the registrar's enrolment is replicated");
        }
    }
    let metrics = Arc::new(Metrics::default());
    let (writer, writer_task) = Writer::spawn(ledger.clone(), key, metrics.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%org, federation = %ledger.genesis().id(), %address, "listening");
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "rmledger-node listening on http://{address}")?;
        stdout.flush()?;
    }
    let config = Arc::new(config);
    let replication = Replication::new(
        ledger.clone(),
        writer.clone(),
        metrics.clone(),
        config.clone(),
    )?;
    let (stop_tasks, stopped) = tokio::sync::watch::channel(false);
    let tasks = replication.spawn(stopped);
    let audit = Arc::new(rmledger_node::audit::NodeAudit::new(&config));
    let state = AppState {
        ledger: ledger.clone(),
        writer,
        config,
        metrics,
        replication: replication.clone(),
        audit,
    };
    serve_api(listener, state, shutdown_signal()).await?;
    // Replication and anchors hold writer handles: stop them before the writer drains.
    let _ = stop_tasks.send(true);
    for mut task in tasks {
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("a replication task did not stop in time; aborting it");
            task.abort();
            let _ = task.await;
        }
    }
    drop(replication);
    // The router (and every writer handle) is gone: the writer drains its queue and ends.
    writer_task.await?;
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
