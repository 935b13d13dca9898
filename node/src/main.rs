//! `rmledger-node`: the daemon a member organisation runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rmledger_node::init::{FederationChoice, InitOptions, init};
use rmledger_schema::ids::OrgId;
use rmledger_schema::records::Role;

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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
