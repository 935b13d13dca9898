//! `rmledger`: the command line of the federation — found or trust a federation, make keys,
//! enrol members, register and revise certificates, record verifications, status changes and
//! the units' journey, show a certificate, verify it offline from a proof bundle, print labels.
//!
//! Exit codes: 0 success (for `verify`: the certificate is valid; for `audit`: no finding at the
//! `--fail-on` level or above); 1 refused — by the node, by a local check of the input, or
//! (`verify`) not valid, (`audit`) findings; 2 usage, configuration or network error.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rmledger_client::audit::{self as audit_report, Progress};
use rmledger_client::certfile::{self, FileError};
use rmledger_client::client::Appended;
use rmledger_client::config::Settings;
use rmledger_client::render::{self, Style};
use rmledger_client::resolve::{BundleSource, CertRef};
use rmledger_client::time::{format_time, now_unix_ms, parse_time};
use rmledger_client::verify::{VerifyError, verify_bundle};
use rmledger_client::view::CertificateView;
use rmledger_client::{Client, Error, keys, qr};
use rmledger_schema::audit::{AuditConfig, audit_bundle, impact as audit_impact};
use rmledger_schema::bundle::{Bundle, VerifiedBundle};
use rmledger_schema::date::Date;
use rmledger_schema::date::parse_duration_ms;
use rmledger_schema::decimal::Decimal;
use rmledger_schema::federation::{Genesis, GenesisBody};
use rmledger_schema::ids::{CertificateId, FederationId, KeyId, OrgId, PublicKey};
use rmledger_schema::records::{
    Disposed, Enrol, KeyAdded, KeyRevoked, MAX_BATCH_RECORDS, MemberStatus, Opened, Purpose,
    Received, Record, RecordError, Role, Severity, Shipped, StabilityCheck, StabilityConclusion,
    StatusChange, Uncertainty, Used, ValueVerification, Verdict,
};
use rmledger_schema::serial::{SerialRange, SerialSet};
use rmledger_schema::units::Unit;
use rmledger_schema::verification;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "rmledger",
    version,
    about = "The rmledger CLI: a federated signed ledger for certified reference materials",
    after_help = "Exit codes: 0 success (verify: valid; audit: no finding at --fail-on or above), 1 refused, not valid or findings, 2 usage, configuration or network error.\nSee docs/cli.md for every command with an example."
)]
struct Cli {
    /// The node to talk to, e.g. http://127.0.0.1:7300 (else RMLEDGER_NODE, else the config file).
    #[arg(long, global = true, env = "RMLEDGER_NODE")]
    node: Option<String>,
    /// The operator token for writes (else RMLEDGER_TOKEN, else the config file).
    #[arg(long, global = true, env = "RMLEDGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Found a federation, or pin one as the trust anchor.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Membership records (registrar): enrol, add or revoke keys, suspend, reinstate, list.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Register a batch from a certificate file (producer).
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Revise a certificate, or list certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Record a stability-monitoring point (producer).
    #[command(subcommand)]
    Stability(StabilityCommand),
    /// Record an independent measurement of a property (institute); prints En, ζ and the verdict.
    VerifyValue(VerifyValueArgs),
    /// Suspend a certificate (institute).
    Suspend(StatusArgs),
    /// Lift a suspension (institute).
    Reinstate(StatusArgs),
    /// Recall a batch (producer, institute or regulator).
    Recall(StatusArgs),
    /// Withdraw a certificate (producer).
    Withdraw(StatusArgs),
    /// Ship units to a lab (producer).
    Ship {
        cert: CertRef,
        /// The receiving organisation.
        #[arg(long)]
        to: OrgId,
        /// Serials: ranges and singles, comma separated, e.g. S-0001..S-0003,S-0007.
        #[arg(long, value_parser = parse_serials)]
        serials: SerialSet,
    },
    /// Record units received (lab).
    Receive {
        cert: CertRef,
        /// The sending organisation (the producer).
        #[arg(long)]
        from: OrgId,
        #[arg(long, value_parser = parse_serials)]
        serials: SerialSet,
    },
    /// Record a unit opened for the first time (lab).
    Open {
        cert: CertRef,
        #[arg(long)]
        serial: String,
    },
    /// Record a use of an opened unit (lab).
    Use {
        cert: CertRef,
        #[arg(long)]
        serial: String,
        #[arg(long, value_enum)]
        purpose: PurposeArg,
        /// The test report or job that relied on the unit.
        #[arg(long)]
        reference: Option<String>,
    },
    /// Record units disposed of (lab or producer).
    Dispose {
        cert: CertRef,
        #[arg(long, value_parser = parse_serials)]
        serials: SerialSet,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Submit records written as JSON (as in the API guide): one record, or an array of up to
    /// 1000 appended as consecutive entries, all or none. FILE `-` reads standard input.
    Submit { file: PathBuf },
    /// Show a certificate as the node knows it: status, values, verifications, units, timeline.
    Show { cert: CertRef },
    /// Verify a certificate offline from its proof bundle, against the pinned federation.
    Verify(VerifyArgs),
    /// Save a certificate's proof bundle to a file (for offline `verify`).
    FetchBundle {
        cert: CertRef,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Write a QR label (SVG or PNG by extension) pointing at the certificate's page.
    Qr {
        cert: CertRef,
        /// Label one unit: the QR code points at the unit's page.
        #[arg(long)]
        unit: Option<String>,
        #[arg(short, long)]
        out: PathBuf,
        /// The public base URL printed in the code (default: the node URL).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// The regulator's audit of the whole ledger (`--node` or `--data DIR`), or of one
    /// certificate (`audit certificate ID`): findings with their evidence entries.
    Audit(AuditArgs),
    /// Every lab and unit affected by a recall, withdrawal, suspension or failed verification,
    /// and every use from the cutoff on, with entry ids.
    Impact {
        cert: CertRef,
        /// List uses from this moment (RFC 3339 or a date) instead of the earliest cause.
        #[arg(long)]
        since: Option<String>,
        /// Verify against this genesis file instead of the pinned federation.
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
    /// The node's health, federation and chains.
    Status,
    /// Show or change the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum FederationCommand {
    /// Create a registrar key (0600) and a signed genesis in a directory.
    Init {
        /// The registrar organisation id, e.g. jxim.
        #[arg(long)]
        org: OrgId,
        /// The registrar organisation's full name.
        #[arg(long)]
        name: String,
        /// The federation's name.
        #[arg(long)]
        federation_name: String,
        /// Roles besides registrar, e.g. institute.
        #[arg(long, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
        /// The federation's civil time zone offset in minutes (480 = China Standard Time).
        #[arg(long, default_value_t = 480, allow_hyphen_values = true)]
        utc_offset_minutes: i32,
        /// Sign with this existing key instead of creating DIR/org.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Where to write org.key and genesis.cbor.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pin a federation as the trust anchor, from its genesis file or a node URL.
    Trust { source: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a PKCS#8 Ed25519 key (mode 0600); prints the public key to enrol.
    Gen {
        #[arg(short, long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Enrol an organisation with its roles and first keys.
    Enrol {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        name: String,
        #[arg(long, value_delimiter = ',', value_parser = parse_role, required = true)]
        roles: Vec<Role>,
        /// Public key hex (from `rmledger key gen` or `rmledger-node init`); repeatable.
        #[arg(long, value_delimiter = ',', required = true)]
        key: Vec<PublicKey>,
    },
    /// Add a key to a member (rotation).
    AddKey {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        key: PublicKey,
    },
    /// Revoke a member's key from a time on (which may be in the past).
    RevokeKey {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        kid: KeyId,
        /// RFC 3339 time, a date (00:00 in the federation's zone) or now.
        #[arg(long)]
        from: String,
        #[arg(long)]
        reason: String,
    },
    /// Suspend a member.
    Suspend {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a suspended member.
    Reinstate {
        #[arg(long)]
        org: OrgId,
        #[arg(long)]
        reason: String,
    },
    /// List members, roles and keys.
    List,
}

#[derive(Subcommand)]
enum BatchCommand {
    /// Register a batch: its certificate from a TOML or JSON file.
    Register { file: PathBuf },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue a new revision of a certificate from a file; the old one is superseded, not erased.
    Revise {
        cert: CertRef,
        file: PathBuf,
        #[arg(long)]
        reason: String,
    },
    /// List certificates on the node.
    List {
        #[arg(long)]
        code: Option<String>,
        #[arg(long)]
        batch: Option<String>,
    },
}

#[derive(Subcommand)]
enum StabilityCommand {
    /// Record a stability-monitoring result for a property.
    Record {
        cert: CertRef,
        #[arg(long)]
        quantity: String,
        #[arg(long)]
        value: Decimal,
        #[arg(long, value_parser = parse_unit)]
        unit: Unit,
        /// Expanded uncertainty (with --k).
        #[arg(long, requires = "k")]
        u: Option<Decimal>,
        #[arg(long, requires = "u")]
        k: Option<Decimal>,
        #[arg(long)]
        relative: bool,
        #[arg(long, value_enum)]
        conclusion: ConclusionArg,
        /// The measurement date (default: today in the federation's zone).
        #[arg(long)]
        measured_on: Option<Date>,
    },
}

#[derive(Args)]
struct VerifyValueArgs {
    cert: CertRef,
    #[arg(long)]
    quantity: String,
    #[arg(long)]
    value: Decimal,
    #[arg(long, value_parser = parse_unit)]
    unit: Unit,
    /// Expanded uncertainty U of the measurement.
    #[arg(long)]
    u: Decimal,
    /// Coverage factor k.
    #[arg(long)]
    k: Decimal,
    /// U is a percentage of the value.
    #[arg(long)]
    relative: bool,
    /// The certificate revision compared with (default: the current one).
    #[arg(long)]
    revision: Option<u32>,
    /// The institute's report number.
    #[arg(long)]
    report: Option<String>,
    #[arg(long)]
    method: Option<String>,
    /// The serial of the unit measured.
    #[arg(long)]
    sample: Option<String>,
    /// State a verdict (default: the rules decide from En).
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
}

#[derive(Args)]
struct StatusArgs {
    cert: CertRef,
    #[arg(long)]
    reason: String,
}

#[derive(Args)]
struct VerifyArgs {
    /// A certificate (id, prefix, CODE@BATCH) on the node, a URL naming it, or a bundle file.
    target: String,
    /// Evaluate at this moment: RFC 3339 (2027-03-01T12:00:00+08:00) or a date (2027-03-01).
    #[arg(long)]
    at: Option<String>,
    /// Verify against this federation id instead of the pinned one.
    #[arg(long)]
    federation: Option<FederationId>,
    /// Also save the fetched bundle to this file.
    #[arg(long)]
    save: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    target: Option<AuditCommand>,
    /// Read this node data directory directly (read-only; works while the node runs) instead of
    /// replicating from --node.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Write report.json and report.html into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    settings: AuditSettings,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// One certificate's whole life from its proof bundle (verified offline) and its findings.
    Certificate {
        cert: CertRef,
        #[command(flatten)]
        settings: AuditSettings,
    },
}

#[derive(Args)]
struct AuditSettings {
    /// Audit against this genesis file instead of the pinned federation.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// A failed verification must be followed by a suspension, recall or withdrawal within
    /// this (e.g. 30d, 12h, 90s).
    #[arg(long, default_value = "30d", value_parser = parse_duration_ms)]
    suspension_deadline: u64,
    /// A chain must be anchored at least this often (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = parse_duration_ms)]
    anchor_max_age: u64,
    /// Exit 1 when there are findings of this severity or more serious.
    #[arg(long, value_enum, default_value = "critical")]
    fail_on: SeverityArg,
    /// Judge at this moment (RFC 3339 or a date) instead of now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SeverityArg {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Critical => Severity::Critical,
            SeverityArg::High => Severity::High,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Info => Severity::Info,
        }
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration (the token masked).
    Show,
    /// Set the default node and/or token.
    Set {
        #[arg(long = "node", id = "set_node")]
        node: Option<String>,
        #[arg(long = "token", id = "set_token")]
        token: Option<String>,
        /// Remove the stored token.
        #[arg(long)]
        clear_token: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PurposeArg {
    Calibration,
    MethodValidation,
    QualityControl,
    ValueAssignment,
    ProficiencyTesting,
    Other,
}

impl From<PurposeArg> for Purpose {
    fn from(p: PurposeArg) -> Self {
        match p {
            PurposeArg::Calibration => Purpose::Calibration,
            PurposeArg::MethodValidation => Purpose::MethodValidation,
            PurposeArg::QualityControl => Purpose::QualityControl,
            PurposeArg::ValueAssignment => Purpose::ValueAssignment,
            PurposeArg::ProficiencyTesting => Purpose::ProficiencyTesting,
            PurposeArg::Other => Purpose::Other,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ConclusionArg {
    Stable,
    Trend,
    Unstable,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerdictArg {
    Pass,
    Fail,
    Inconclusive,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == text.trim())
        .ok_or_else(|| {
            format!(
                "unknown role {text:?}; roles are registrar, producer, institute, lab, regulator"
            )
        })
}

fn parse_unit(text: &str) -> Result<Unit, String> {
    Unit::parse_lenient(text).map_err(|e| e.to_string())
}

fn parse_serials(text: &str) -> Result<SerialSet, String> {
    let ranges = text
        .split(',')
        .map(|part| SerialRange::parse(part.trim()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    SerialSet::new(ranges).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Errors and exit codes

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
    json: serde_json::Value,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code: 2,
            json: json!({"error": "usage", "detail": message}),
            message,
        }
    }

    fn refused(message: impl Into<String>, json: serde_json::Value) -> Self {
        Self {
            code: 1,
            message: message.into(),
            json,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Api { .. } | Error::Resolve(_) => 1,
            Error::Network { .. } | Error::BadResponse { .. } | Error::Usage(_) => 2,
        };
        Self {
            code,
            json: e.to_json(),
            message: e.to_string(),
        }
    }
}

impl From<FileError> for Failure {
    fn from(e: FileError) -> Self {
        Self::refused(
            e.to_string(),
            json!({"error": "invalid", "file": e.file, "field": e.field, "rule": e.rule}),
        )
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        Self::refused(
            format!(
                "invalid record: field {}: {} ({})",
                e.field, e.detail, e.rule
            ),
            json!({"error": "invalid", "field": e.field, "rule": e.rule, "detail": e.detail}),
        )
    }
}

macro_rules! usage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Self::usage(e.to_string())
            }
        }
    )*};
}
usage_from!(
    rmledger_client::config::ConfigError,
    rmledger_client::keys::KeyError,
    rmledger_client::qr::LabelError,
    rmledger_schema::federation::FederationError,
    std::io::Error,
    serde_json::Error
);

type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            if json {
                println!("{}", failure.json);
            }
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// What every command shares.
struct Ctx {
    settings: Settings,
    node: Option<String>,
    token: Option<String>,
    json: bool,
    style: Style,
}

impl Ctx {
    fn client(&self) -> Result<Client, Failure> {
        let node = self
            .node
            .clone()
            .or_else(|| self.settings.file.node.clone())
            .ok_or_else(|| {
                Failure::usage(
                    "no node: give --node URL, set RMLEDGER_NODE, or run `rmledger config set --node URL`",
                )
            })?;
        let token = self
            .token
            .clone()
            .or_else(|| self.settings.file.token.clone());
        Ok(Client::new(&node, token)?)
    }

    /// Prints a JSON value, or the text.
    fn print(&self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            print!("{}", text());
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let settings = Settings::load(None)?;
    let ctx = Ctx {
        settings,
        node: cli.node,
        token: cli.token,
        json: cli.json,
        style: Style::detect(),
    };
    match cli.command {
        Command::Federation(FederationCommand::Init {
            org,
            name,
            federation_name,
            roles,
            utc_offset_minutes,
            key,
            out,
        }) => federation_init(
            &ctx,
            org,
            name,
            federation_name,
            roles,
            utc_offset_minutes,
            key,
            &out,
        ),
        Command::Federation(FederationCommand::Trust { source }) => {
            federation_trust(ctx, &source).await
        }
        Command::Key(KeyCommand::Gen { out }) => key_gen(&ctx, &out),
        Command::Member(command) => member(&ctx, command).await,
        Command::Batch(BatchCommand::Register { file }) => {
            let certificate = certfile::load(&file)?;
            submit(&ctx, &ctx.client()?, Record::BatchRegistered(certificate)).await
        }
        Command::Cert(CertCommand::Revise { cert, file, reason }) => {
            let client = ctx.client()?;
            let certificate = certfile::load(&file)?;
            let id = cert.resolve(&client).await?;
            let info = client.certificate(&id).await?;
            let revision = info
                .state
                .revisions
                .iter()
                .map(|r| r.number)
                .max()
                .unwrap_or(1)
                + 1;
            let record = Record::CertificateRevised(rmledger_schema::records::CertificateRevised {
                cert: id,
                reason,
                revision,
                certificate,
            });
            submit(&ctx, &client, record).await
        }
        Command::Cert(CertCommand::List { code, batch }) => {
            let client = ctx.client()?;
            let list = client
                .certificates(code.as_deref(), batch.as_deref())
                .await?;
            ctx.print(&serde_json::to_value(&list)?, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_hex()[..16].to_string(),
                            c.code.clone(),
                            c.batch.clone(),
                            ctx.style.status(&c.status),
                            c.producer.to_string(),
                            c.name.clone(),
                        ]
                    })
                    .collect();
                render::table(
                    ctx.style,
                    &["id", "code", "batch", "status", "producer", "name"],
                    &rows,
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Stability(StabilityCommand::Record {
            cert,
            quantity,
            value,
            unit,
            u,
            k,
            relative,
            conclusion,
            measured_on,
        }) => {
            let client = ctx.client()?;
            let id = cert.resolve(&client).await?;
            let measured_on = match measured_on {
                Some(d) => d,
                None => {
                    let offset = client.federation().await?.utc_offset_minutes;
                    Date::from_unix_ms(i64::try_from(now_unix_ms()).unwrap_or(0), offset)
                        .map_err(|e| Failure::usage(e.to_string()))?
                }
            };
            let uncertainty = match (u, k) {
                (Some(expanded), Some(coverage_factor)) => Some(Uncertainty {
                    expanded,
                    relative,
                    coverage_factor,
                    coverage_probability: None,
                }),
                _ => None,
            };
            let record = Record::StabilityCheck(StabilityCheck {
                cert: id,
                unit,
                value,
                quantity,
                conclusion: match conclusion {
                    ConclusionArg::Stable => StabilityConclusion::Stable,
                    ConclusionArg::Trend => StabilityConclusion::Trend,
                    ConclusionArg::Unstable => StabilityConclusion::Unstable,
                },
                measured_on,
                uncertainty,
            });
            submit(&ctx, &client, record).await
        }
        Command::VerifyValue(args) => verify_value(&ctx, args).await,
        Command::Suspend(a) => status_change(&ctx, a, Record::Suspended).await,
        Command::Reinstate(a) => status_change(&ctx, a, Record::Reinstated).await,
        Command::Recall(a) => status_change(&ctx, a, Record::Recalled).await,
        Command::Withdraw(a) => status_change(&ctx, a, Record::Withdrawn).await,
        Command::Ship { cert, to, serials } => {
            let client = ctx.client()?;
            let cert = cert.resolve(&client).await?;
            submit(
                &ctx,
                &client,
                Record::Shipped(Shipped { to, cert, serials }),
            )
            .await
        }
        Command::Receive {
            cert,
            from,
            serials,
        } => {
            let client = ctx.client()?;
            let cert = cert.resolve(&client).await?;
            submit(
                &ctx,
                &client,
                Record::Received(Received {
                    cert,
                    from,
                    serials,
                }),
            )
            .await
        }
        Command::Open { cert, serial } => {
            let client = ctx.client()?;
            let cert = cert.resolve(&client).await?;
            submit(&ctx, &client, Record::Opened(Opened { cert, serial })).await
        }
        Command::Use {
            cert,
            serial,
            purpose,
            reference,
        } => {
            let client = ctx.client()?;
            let cert = cert.resolve(&client).await?;
            let record = Record::Used(Used {
                cert,
                serial,
                purpose: purpose.into(),
                quantity: None,
                reference,
            });
            submit(&ctx, &client, record).await
        }
        Command::Dispose {
            cert,
            serials,
            reason,
        } => {
            let client = ctx.client()?;
            let cert = cert.resolve(&client).await?;
            submit(
                &ctx,
                &client,
                Record::Disposed(Disposed {
                    cert,
                    reason,
                    serials,
                }),
            )
            .await
        }
        Command::Show { cert } => show(&ctx, cert).await,
        Command::Verify(args) => verify(&ctx, args).await,
        Command::FetchBundle { cert, out } => {
            let client = ctx.client()?;
            let id = cert.resolve(&client).await?;
            let bytes = client.bundle_bytes(&id).await?;
            std::fs::write(&out, &bytes)?;
            ctx.print(
                &json!({"certificate": id, "file": out, "bytes": bytes.len()}),
                || {
                    format!(
                        "Saved the proof bundle of {id} ({} bytes) to {}\nVerify it offline with: rmledger verify {}\n",
                        bytes.len(),
                        out.display(),
                        out.display()
                    )
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Qr {
            cert,
            unit,
            out,
            base_url,
        } => qr_label(&ctx, cert, unit, &out, base_url).await,
        Command::Audit(args) => audit(&ctx, args).await,
        Command::Impact {
            cert,
            since,
            genesis,
        } => impact(&ctx, &cert, since.as_deref(), genesis.as_deref()).await,
        Command::Status => status(&ctx).await,
        Command::Submit { file } => submit_file(&ctx, &file).await,
        Command::Config(command) => config(ctx, command),
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Validates a record locally (so a bad one is never sent), submits it and reports where it went.
async fn submit(ctx: &Ctx, client: &Client, record: Record) -> Outcome {
    record.validate()?;
    let kind = record.kind();
    let appended: Appended = client.post_record(&record).await?;
    ctx.print(
        &json!({"kind": kind, "id": appended.id, "chain": appended.chain, "seq": appended.seq}),
        || {
            format!(
                "{} {kind} appended to {} at seq {}\n  entry {}\n",
                ctx.style.good("✓"),
                appended.chain,
                appended.seq,
                appended.id
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// `submit FILE`: records as JSON, one or an array, checked locally (naming the record that is
/// wrong) and sent in one request, all or none.
async fn submit_file(ctx: &Ctx, file: &Path) -> Outcome {
    let name = file.display().to_string();
    let text = if name == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_SUBMIT_BYTES + 1)
            .read_to_string(&mut text)?;
        text
    } else {
        let size = std::fs::metadata(file)?.len();
        if size > MAX_SUBMIT_BYTES {
            return Err(Failure::usage(format!(
                "{name} is larger than {MAX_SUBMIT_BYTES} bytes; split it into batches of at most {MAX_BATCH_RECORDS} records"
            )));
        }
        std::fs::read_to_string(file)?
    };
    if text.len() as u64 > MAX_SUBMIT_BYTES {
        return Err(Failure::usage(format!(
            "{name} is larger than {MAX_SUBMIT_BYTES} bytes"
        )));
    }
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("{name} is not JSON: {e}")))?;
    let (single, values) = match value {
        serde_json::Value::Array(values) => (false, values),
        value => (true, vec![value]),
    };
    if values.is_empty() || values.len() > MAX_BATCH_RECORDS {
        return Err(Failure::usage(format!(
            "{name} holds {} records; a batch carries 1 to {MAX_BATCH_RECORDS}",
            values.len()
        )));
    }
    let mut records = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let at = if single {
            name.clone()
        } else {
            format!("{name}, record {index}")
        };
        let record: Record = serde_path_to_error::deserialize(value).map_err(|e| {
            Failure::refused(
                format!("{at}: not a record at {}: {}", e.path(), e.inner()),
                json!({"error": "malformed", "index": (!single).then_some(index),
                       "field": e.path().to_string(), "detail": e.inner().to_string()}),
            )
        })?;
        record.validate().map_err(|e| {
            Failure::refused(
                format!(
                    "{at}: invalid record: field {}: {} ({})",
                    e.field, e.detail, e.rule
                ),
                json!({"error": "invalid", "index": (!single).then_some(index), "field": e.field,
                       "rule": e.rule, "detail": e.detail}),
            )
        })?;
        records.push(record);
    }
    let client = ctx.client()?;
    if single {
        let record = records.pop().expect("one record");
        return submit(ctx, &client, record).await;
    }
    let appended = client.post_records(&records).await?;
    let rows: Vec<serde_json::Value> = records
        .iter()
        .zip(&appended)
        .map(|(r, a)| json!({"kind": r.kind(), "id": a.id, "chain": a.chain, "seq": a.seq}))
        .collect();
    ctx.print(&json!(rows), || {
        let (first, last) = (&appended[0], &appended[appended.len() - 1]);
        let mut text = format!(
            "{} {} records appended to {} at seq {}..{}\n",
            ctx.style.good("✓"),
            appended.len(),
            first.chain,
            first.seq,
            last.seq
        );
        for (record, a) in records.iter().zip(&appended) {
            text.push_str(&format!("  {:>6}  {:<18} {}\n", a.seq, record.kind(), a.id));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

/// The largest file `submit` reads: the node's default body limit is 256 KiB.
const MAX_SUBMIT_BYTES: u64 = 4 * 1024 * 1024;

async fn status_change(ctx: &Ctx, args: StatusArgs, make: fn(StatusChange) -> Record) -> Outcome {
    let client = ctx.client()?;
    let cert = args.cert.resolve(&client).await?;
    submit(
        ctx,
        &client,
        make(StatusChange {
            cert,
            reason: args.reason,
        }),
    )
    .await
}

async fn member(ctx: &Ctx, command: MemberCommand) -> Outcome {
    let client = ctx.client()?;
    let record = match command {
        MemberCommand::Enrol {
            org,
            name,
            roles,
            key,
        } => Record::Enrol(Enrol {
            org,
            keys: key,
            name,
            roles,
        }),
        MemberCommand::AddKey { org, key } => Record::KeyAdded(KeyAdded { key, org }),
        MemberCommand::RevokeKey {
            org,
            kid,
            from,
            reason,
        } => {
            let offset = client.federation().await?.utc_offset_minutes;
            let from = parse_time(&from, offset).map_err(Failure::usage)?;
            Record::KeyRevoked(KeyRevoked {
                kid,
                org,
                revoked_from_unix_ms: from,
                reason,
            })
        }
        MemberCommand::Suspend { org, reason } => {
            Record::MemberSuspended(MemberStatus { org, reason })
        }
        MemberCommand::Reinstate { org, reason } => {
            Record::MemberReinstated(MemberStatus { org, reason })
        }
        MemberCommand::List => {
            let members = client.members().await?;
            ctx.print(&serde_json::to_value(&members)?, || {
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|m| {
                        let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
                        let keys: Vec<String> = m
                            .keys
                            .iter()
                            .map(|k| {
                                let kid = k.kid.to_hex();
                                if k.revoked_from.is_some() {
                                    format!("{}… (revoked)", &kid[..12])
                                } else {
                                    format!("{}…", &kid[..12])
                                }
                            })
                            .collect();
                        vec![
                            m.org.to_string(),
                            m.name.clone(),
                            roles.join(","),
                            if m.suspended {
                                ctx.style.bad("suspended")
                            } else {
                                "active".into()
                            },
                            keys.join(" "),
                        ]
                    })
                    .collect();
                render::table(ctx.style, &["org", "name", "roles", "state", "keys"], &rows)
            });
            return Ok(ExitCode::SUCCESS);
        }
    };
    submit(ctx, &client, record).await
}

async fn verify_value(ctx: &Ctx, args: VerifyValueArgs) -> Outcome {
    let client = ctx.client()?;
    let id = args.cert.resolve(&client).await?;
    let info = client.certificate(&id).await?;
    let revisions = &info.state.revisions;
    let revision = match args.revision {
        Some(n) => revisions
            .iter()
            .rev()
            .find(|r| r.number == n)
            .ok_or_else(|| {
                Failure::refused(
                    format!("certificate {id} has no revision {n}"),
                    json!({"error": "invalid", "field": "revision", "detail": "no such revision"}),
                )
            })?,
        None => revisions
            .last()
            .ok_or_else(|| Failure::usage("the node sent a certificate without revisions"))?,
    };
    let reference = revision.certificate.value(&args.quantity).ok_or_else(|| {
        let known: Vec<&str> = revision
            .certificate
            .values
            .iter()
            .map(|v| v.quantity.as_str())
            .collect();
        Failure::refused(
            format!(
                "revision {} of {id} has no value for {:?}; it has: {}",
                revision.number,
                args.quantity,
                known.join(", ")
            ),
            json!({"error": "invalid", "field": "quantity", "detail": "no such quantity"}),
        )
    })?;
    let uncertainty = Uncertainty {
        expanded: args.u,
        relative: args.relative,
        coverage_factor: args.k,
        coverage_probability: None,
    };
    let record = Record::ValueVerification(ValueVerification {
        cert: id,
        unit: args.unit,
        value: args.value,
        method: args.method,
        report: args.report,
        sample: args.sample,
        verdict: args.verdict.map(|v| match v {
            VerdictArg::Pass => Verdict::Pass,
            VerdictArg::Fail => Verdict::Fail,
            VerdictArg::Inconclusive => Verdict::Inconclusive,
        }),
        quantity: args.quantity.clone(),
        revision: revision.number,
        uncertainty: uncertainty.clone(),
    });
    record.validate()?;
    let comparison = verification::compare(reference, &args.value, args.unit, &uncertainty)
        .map_err(|e| {
            Failure::refused(
                format!(
                    "cannot compare with the certificate's {}: {e}",
                    args.quantity
                ),
                json!({"error": "invalid", "field": "unit", "detail": e.to_string()}),
            )
        })?;
    let appended = client.post_record(&record).await?;
    let verdict = comparison.verdict.map(render::verdict_text);
    let (u_ref, k_ref) = render::uncertainty_text(reference);
    ctx.print(
        &json!({
            "kind": "ValueVerification", "id": appended.id, "chain": appended.chain,
            "seq": appended.seq, "revision": revision.number, "en": comparison.en,
            "zeta": comparison.zeta, "verdict": verdict,
        }),
        || {
            let s = ctx.style;
            format!(
                "{} ValueVerification appended to {} at seq {}\n  entry {}\n  certified  {} = {} ± {} {} (k={}), revision {}\n  measured   {} ± {}{} {} (k={})\n  En = {:.3}   ζ = {:.3}   verdict {}\n",
                s.good("✓"),
                appended.chain,
                appended.seq,
                appended.id,
                reference.quantity,
                reference.value,
                u_ref,
                reference.unit.display(),
                k_ref,
                revision.number,
                args.value,
                args.u,
                if args.relative { " %" } else { "" },
                args.unit.display(),
                args.k,
                comparison.en,
                comparison.zeta,
                s.status(verdict.unwrap_or("none (not a certified value)")),
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Federation, keys, config

#[allow(clippy::too_many_arguments)]
fn federation_init(
    ctx: &Ctx,
    org: OrgId,
    name: String,
    federation_name: String,
    mut roles: Vec<Role>,
    utc_offset_minutes: i32,
    key_file: Option<PathBuf>,
    out: &Path,
) -> Outcome {
    std::fs::create_dir_all(out)?;
    let genesis_file = out.join("genesis.cbor");
    if genesis_file.exists() {
        return Err(Failure::usage(format!(
            "{} exists; refusing to overwrite a genesis",
            genesis_file.display()
        )));
    }
    let (key, key_path) = match key_file {
        Some(path) => (keys::read(&path)?, path),
        None => {
            let path = out.join("org.key");
            let key = keys::generate()?;
            keys::write(&path, &key)?;
            (key, path)
        }
    };
    if !roles.contains(&Role::Registrar) {
        roles.insert(0, Role::Registrar);
    }
    let public_key = PublicKey(key.verifying_key().to_bytes());
    let genesis = Genesis::create(
        &key,
        GenesisBody {
            version: 1,
            name: federation_name,
            time_unix_ms: now_unix_ms(),
            registrar: Enrol {
                org: org.clone(),
                keys: vec![public_key],
                name,
                roles,
            },
            utc_offset_minutes,
        },
    )?;
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&genesis_file)?;
        file.write_all(genesis.bytes())?;
        file.sync_all()?;
    }
    ctx.print(
        &json!({
            "federation_id": genesis.id(), "org": org, "public_key": public_key,
            "key_id": KeyId::of(&public_key.0), "key_file": key_path, "genesis_file": genesis_file,
        }),
        || {
            format!(
                "Founded federation {}\n  federation id  {}\n  registrar      {org}\n  public key     {public_key}\n  key file       {} (mode 0600)\n  genesis        {}\n\nNext: run the registrar's node with this key and genesis:\n  rmledger-node init --dir NODE --org {org} --genesis {}\n  cp {} NODE/org.key   # the node must sign with the registrar key\n(or found the federation and the node in one step: rmledger-node init --registrar …)\n",
                genesis.body().name,
                genesis.id(),
                key_path.display(),
                genesis_file.display(),
                genesis_file.display(),
                key_path.display(),
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

async fn federation_trust(mut ctx: Ctx, source: &str) -> Outcome {
    let from_node = source.starts_with("http://") || source.starts_with("https://");
    let genesis = if from_node {
        let client = Client::new(source, None)?;
        let info = client.federation().await?;
        info.decode_genesis().map_err(|detail| {
            Failure::from(Error::BadResponse {
                url: source.to_string(),
                detail,
            })
        })?
    } else {
        let bytes = std::fs::read(source).map_err(|e| Failure::usage(format!("{source}: {e}")))?;
        Genesis::decode(&bytes).map_err(|e| Failure::usage(format!("{source}: {e}")))?
    };
    let previous = ctx.settings.file.federation_id;
    if from_node && ctx.settings.file.node.is_none() {
        ctx.settings.file.node = Some(source.trim_end_matches('/').to_string());
    }
    ctx.settings.pin(&genesis)?;
    let replaced = previous.filter(|p| *p != genesis.id());
    ctx.print(
        &json!({
            "federation_id": genesis.id(), "name": genesis.body().name,
            "registrar": genesis.registrar(), "config_file": ctx.settings.path(),
            "replaced": replaced,
        }),
        || {
            let mut text = format!(
                "Pinned federation {}\n  federation id  {}\n  registrar      {}\n  config         {}\n",
                genesis.body().name,
                ctx.style.bold(&genesis.id().to_hex()),
                genesis.registrar(),
                ctx.settings.path().display()
            );
            if let Some(old) = replaced {
                text.push_str(&format!(
                    "  {} it replaces the previously pinned federation {old}\n",
                    ctx.style.warn("note:")
                ));
            }
            text.push_str("Compare the federation id with the one your registrar published.\n");
            text
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn key_gen(ctx: &Ctx, out: &Path) -> Outcome {
    let key = keys::generate()?;
    keys::write(out, &key)?;
    let public_key = PublicKey(key.verifying_key().to_bytes());
    ctx.print(
        &json!({"public_key": public_key, "key_id": KeyId::of(&public_key.0), "key_file": out}),
        || {
            format!(
                "Created key {} (mode 0600)\n  public key  {public_key}\n  key id      {}\nGive the public key to the registrar: rmledger member enrol --key {public_key} …\n",
                out.display(),
                KeyId::of(&public_key.0)
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn config(mut ctx: Ctx, command: ConfigCommand) -> Outcome {
    if let ConfigCommand::Set {
        node,
        token,
        clear_token,
    } = command
    {
        if let Some(node) = node {
            rmledger_client::client::parse_base(&node)?;
            ctx.settings.file.node = Some(node.trim_end_matches('/').to_string());
        }
        if let Some(token) = token {
            ctx.settings.file.token = Some(token);
        }
        if clear_token {
            ctx.settings.file.token = None;
        }
        ctx.settings.save()?;
    }
    let file = &ctx.settings.file;
    ctx.print(
        &json!({
            "config_file": ctx.settings.path(), "node": file.node,
            "token": file.token.as_ref().map(|_| "(set)"),
            "federation_id": file.federation_id, "federation_name": file.federation_name,
        }),
        || {
            format!(
                "config file    {}\nnode           {}\ntoken          {}\nfederation     {}\n",
                ctx.settings.path().display(),
                file.node.as_deref().unwrap_or("(none)"),
                if file.token.is_some() {
                    "(set)"
                } else {
                    "(none)"
                },
                file.federation_id
                    .map_or("(none pinned)".to_string(), |id| format!(
                        "{id} ({})",
                        file.federation_name.as_deref().unwrap_or("")
                    )),
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn show(ctx: &Ctx, cert: CertRef) -> Outcome {
    let client = ctx.client()?;
    let id = cert.resolve(&client).await?;
    let info = client.certificate(&id).await?;
    let offset = client.federation().await?.utc_offset_minutes;
    ctx.print(&serde_json::to_value(&info)?, || {
        render::certificate(
            ctx.style,
            &info.state,
            &info.status,
            info.expiry_unix_ms,
            offset,
            true,
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn status(ctx: &Ctx) -> Outcome {
    let client = ctx.client()?;
    let health = client.health().await?;
    let federation = client.federation().await?;
    let chains = client.chains().await?;
    let pinned = ctx.settings.file.federation_id;
    let matches_pin = pinned.map(|p| p == federation.federation_id);
    ctx.print(
        &json!({
            "node": client.base(), "health": health, "federation_id": federation.federation_id,
            "federation_name": federation.name, "registrar": federation.registrar,
            "utc_offset_minutes": federation.utc_offset_minutes, "pinned_federation_id": pinned,
            "matches_pinned": matches_pin, "chains": chains,
        }),
        || {
            let s = ctx.style;
            let pin = match matches_pin {
                Some(true) => s.good("matches the pinned federation"),
                Some(false) => s.bad("DIFFERS from the pinned federation"),
                None => s.warn("no federation pinned (rmledger federation trust …)"),
            };
            let rows: Vec<Vec<String>> = chains
                .iter()
                .map(|c| {
                    vec![
                        c.chain.to_string(),
                        c.size.to_string(),
                        c.head.map(|h| h.to_hex()[..16].to_string()).unwrap_or_default(),
                        c.root.to_hex()[..16].to_string(),
                    ]
                })
                .collect();
            format!(
                "node        {} ({})\nfederation  {} — {}\n            {pin}\nregistrar   {}\nzone        UTC{:+}:{:02}\n\nChains\n{}",
                client.base(),
                if health == "ok" { s.good("ok") } else { s.bad(&health) },
                federation.federation_id,
                federation.name,
                federation.registrar,
                federation.utc_offset_minutes / 60,
                (federation.utc_offset_minutes % 60).abs(),
                render::table(s, &["chain", "size", "head", "root"], &rows)
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

async fn qr_label(
    ctx: &Ctx,
    cert: CertRef,
    unit: Option<String>,
    out: &Path,
    base_url: Option<String>,
) -> Outcome {
    let extension = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(extension.as_deref(), Some("svg" | "png")) {
        return Err(Failure::usage(format!(
            "{}: the label file must end in .svg or .png",
            out.display()
        )));
    }
    let client = ctx.client()?;
    let id = cert.resolve(&client).await?;
    let info = client.certificate(&id).await?;
    let Some(current) = info.state.current() else {
        return Err(Failure::usage(
            "the node sent a certificate without revisions",
        ));
    };
    let registered = &info.state.revisions[0].certificate;
    if let Some(serial) = &unit
        && !registered.units.contains(serial)
    {
        return Err(Failure::refused(
            format!("{serial} is not a unit of certificate {id}"),
            json!({"error": "invalid", "field": "unit", "detail": "not a unit of this batch"}),
        ));
    }
    let base = match base_url {
        Some(url) => rmledger_client::client::parse_base(&url)?
            .as_str()
            .trim_end_matches('/')
            .to_string(),
        None => client.base().to_string(),
    };
    let c = &current.certificate;
    let label = qr::Label::new(
        &base,
        &id.to_hex(),
        c.code.as_str(),
        &c.batch,
        unit.as_deref(),
    );
    let bytes = if extension.as_deref() == Some("svg") {
        label.svg()?.into_bytes()
    } else {
        label.png()?
    };
    std::fs::write(out, &bytes)?;
    ctx.print(
        &json!({"file": out, "url": label.url, "lines": label.lines}),
        || {
            format!(
                "Wrote {} ({} bytes)\n  QR  {}\n  text {}\n",
                out.display(),
                bytes.len(),
                label.url,
                label.lines.join(" / ")
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// verify

async fn verify(ctx: &Ctx, args: VerifyArgs) -> Outcome {
    let pinned = match args.federation.or(ctx.settings.file.federation_id) {
        Some(id) => id,
        None => {
            return Err(Failure::usage(
                "no trust anchor: pin the federation first with `rmledger federation trust <genesis file | node URL>` (compare the id with the one your registrar published), or pass --federation HEX",
            ));
        }
    };
    let source = BundleSource::parse(&args.target).map_err(Failure::usage)?;
    let (bytes, origin) = match &source {
        BundleSource::File(path) => (std::fs::read(path)?, path.display().to_string()),
        BundleSource::Url { node, id } => {
            let client = Client::new(node, None)?;
            (
                client.bundle_bytes(id).await?,
                format!("{node}/v1/certificates/{id}/bundle"),
            )
        }
        BundleSource::Node(cert) => {
            let client = ctx.client()?;
            let id: CertificateId = cert.resolve(&client).await?;
            (
                client.bundle_bytes(&id).await?,
                format!("{}/v1/certificates/{id}/bundle", client.base()),
            )
        }
    };
    if let Some(path) = &args.save {
        std::fs::write(path, &bytes)?;
    }
    // The federation's zone reads a bare --at date; it comes from the bundle's genesis, which
    // verification then checks against the pinned id.
    let offset = Bundle::decode(&bytes)
        .ok()
        .and_then(|b| Genesis::decode(&b.genesis.0).ok())
        .map_or(480, |g| g.body().utc_offset_minutes);
    let at = match &args.at {
        Some(text) => parse_time(text, offset).map_err(Failure::usage)?,
        None => now_unix_ms(),
    };
    let s = ctx.style;
    match verify_bundle(&bytes, pinned, at) {
        Err(e) => {
            let class = match e {
                VerifyError::Decode(_) => "not_a_bundle",
                VerifyError::Integrity(_) => "integrity",
                VerifyError::Fold(_) => "lifecycle",
            };
            ctx.print(
                &json!({"valid": false, "source": origin, "error": class, "detail": e.to_string(), "pinned_federation_id": pinned}),
                || {
                    format!(
                        "{} the bundle from {origin} does not verify\n  {e}\n  pinned federation {pinned}\n",
                        s.bad("NOT VALID:")
                    )
                },
            );
            Ok(ExitCode::from(1))
        }
        Ok(v) => {
            let valid = v.status == rmledger_schema::lifecycle::Status::Valid;
            ctx.print(
                &json!({
                    "valid": valid, "status": v.status, "source": origin, "at_unix_ms": v.at_unix_ms,
                    "at": format_time(v.at_unix_ms, v.utc_offset_minutes),
                    "certificate": v.certificate, "federation_id": v.federation_id,
                    "federation_name": v.federation_name, "expiry_unix_ms": v.expiry_unix_ms,
                    "entries": v.entries, "registrar_entries": v.registrar_entries,
                    "checkpoints": v.checkpoints, "unproven_chains": v.unproven_chains,
                    "anchors": v.anchors, "state": v.state,
                }),
                || {
                    let mut out = String::new();
                    let verdict = if valid {
                        s.good("VALID")
                    } else {
                        s.bad(&format!("NOT VALID: {}", v.status.as_str().to_uppercase()))
                    };
                    out.push_str(&format!(
                        "{verdict} at {}\n\n",
                        format_time(v.at_unix_ms, v.utc_offset_minutes)
                    ));
                    out.push_str(&render::certificate(
                        s,
                        &v.state,
                        v.status.as_str(),
                        v.expiry_unix_ms,
                        v.utc_offset_minutes,
                        true,
                    ));
                    out.push_str(&format!(
                        "\nVerified offline from {origin}\n  federation  {} ({}) — the pinned trust anchor\n  signatures, authorisation and links of {} entries and {} registrar membership entries\n",
                        v.federation_id, v.federation_name, v.entries, v.registrar_entries
                    ));
                    let rows: Vec<Vec<String>> = v
                        .checkpoints
                        .iter()
                        .map(|c| {
                            vec![
                                c.chain.to_string(),
                                c.size.to_string(),
                                format_time(c.time_unix_ms, v.utc_offset_minutes),
                            ]
                        })
                        .collect();
                    out.push_str(&render::table(
                        s,
                        &["checkpoint of", "size", "signed at"],
                        &rows,
                    ));
                    out.push_str(
                        "  complete as of these checkpoints: every entry each chain counts for the certificate is in the bundle; later entries need a newer bundle\n",
                    );
                    for chain in &v.unproven_chains {
                        out.push_str(&format!(
                            "  chain {chain}: no checkpoint in the bundle and no anchor in it names the chain (its builder knew of no entry on it); not proven to hold nothing about the certificate\n"
                        ));
                    }
                    if v.anchors.is_empty() {
                        out.push_str("  anchors: none in the bundle\n");
                    } else {
                        for a in &v.anchors {
                            out.push_str(&format!(
                                "  anchor: {} witnessed {} up to size {}\n",
                                a.witness, a.chain, a.size
                            ));
                        }
                    }
                    out
                },
            );
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

/// The genesis the audit trusts: `--genesis FILE`, else the pinned one.
fn audit_genesis(ctx: &Ctx, file: Option<&Path>) -> Result<Genesis, Failure> {
    if let Some(path) = file {
        let bytes =
            std::fs::read(path).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
        return Genesis::decode(&bytes)
            .map_err(|e| Failure::usage(format!("{} is not a genesis: {e}", path.display())));
    }
    ctx.settings.pinned_genesis()?.ok_or_else(|| {
        Failure::usage(
            "no trust anchor: pin the federation first with `rmledger federation trust <genesis file | node URL>`, or pass --genesis FILE",
        )
    })
}

fn audit_config(settings: &AuditSettings, genesis: &Genesis) -> Result<AuditConfig, Failure> {
    let now = match &settings.at {
        Some(text) => {
            parse_time(text, genesis.body().utc_offset_minutes).map_err(Failure::usage)?
        }
        None => now_unix_ms(),
    };
    let mut config = AuditConfig::at(now);
    config.suspension_deadline_ms = settings.suspension_deadline;
    config.anchor_max_age_ms = settings.anchor_max_age;
    config.threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    Ok(config)
}

async fn audit(ctx: &Ctx, args: AuditArgs) -> Outcome {
    if let Some(AuditCommand::Certificate { cert, settings }) = args.target {
        return audit_certificate(ctx, &cert, &settings).await;
    }
    let settings = &args.settings;
    let genesis = audit_genesis(ctx, settings.genesis.as_deref())?;
    let offset = genesis.body().utc_offset_minutes;
    let config = audit_config(settings, &genesis)?;
    let progress = Progress::new(true);
    let report = match &args.data {
        Some(dir) => audit_report::from_data_dir(dir, &genesis, config, &progress)?,
        None => audit_report::from_node(&ctx.client()?, &genesis, config, &progress).await?,
    };
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)
            .map_err(|e| Failure::usage(format!("{}: {e}", out.display())))?;
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(out.join("report.json"), json)
            .map_err(|e| Failure::usage(format!("{}: {e}", out.join("report.json").display())))?;
        std::fs::write(
            out.join("report.html"),
            audit_report::render_html(&report, offset),
        )
        .map_err(|e| Failure::usage(format!("{}: {e}", out.join("report.html").display())))?;
    }
    ctx.print(&serde_json::to_value(&report)?, || {
        let mut text = audit_report::render_text(&report, ctx.style, offset);
        if let Some(out) = &args.out {
            text.push_str(&format!(
                "\nWrote {} and {}\n",
                out.join("report.json").display(),
                out.join("report.html").display()
            ));
        }
        text
    });
    Ok(fail_on(&report.findings, settings.fail_on))
}

/// Exit 1 when a finding is at the `--fail-on` level or more serious, else 0.
fn fail_on(findings: &[rmledger_schema::audit::Finding], level: SeverityArg) -> ExitCode {
    let level = Severity::from(level);
    if findings.iter().any(|f| f.severity <= level) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A certificate's bundle from the node, verified offline against `genesis`.
async fn verified_bundle(
    ctx: &Ctx,
    cert: &CertRef,
    genesis: &Genesis,
) -> Result<(CertificateId, VerifiedBundle), Failure> {
    let client = ctx.client()?;
    let id = cert.resolve(&client).await?;
    let bytes = client.bundle_bytes(&id).await?;
    let bundle = Bundle::decode(&bytes).map_err(|e| {
        Failure::refused(
            format!("the node's bundle of {id} is not a proof bundle: {e}"),
            json!({"error": "not_a_bundle", "detail": e.to_string()}),
        )
    })?;
    let verified = bundle.verify(genesis.id()).map_err(|e| {
        Failure::refused(
            format!(
                "the node's bundle of {id} does not verify against federation {}: {e}",
                genesis.id()
            ),
            json!({"error": "integrity", "detail": e.to_string()}),
        )
    })?;
    Ok((id, verified))
}

async fn audit_certificate(ctx: &Ctx, cert: &CertRef, settings: &AuditSettings) -> Outcome {
    let genesis = audit_genesis(ctx, settings.genesis.as_deref())?;
    let offset = genesis.body().utc_offset_minutes;
    let config = audit_config(settings, &genesis)?;
    let (id, verified) = verified_bundle(ctx, cert, &genesis).await?;
    let result = audit_bundle(&verified, id, &config).map_err(|e| {
        Failure::refused(
            format!("the certificate's entries do not fold: {e}"),
            json!({"error": "lifecycle", "rule": e.rule, "detail": e.detail}),
        )
    })?;
    let view = CertificateView::of(&result.state).map_err(|e| Failure::usage(e.to_string()))?;
    let status = result.state.status_at(config.now_unix_ms, offset);
    let expiry = result
        .state
        .revision_at(config.now_unix_ms)
        .expiry_unix_ms(offset);
    ctx.print(
        &json!({
            "certificate": id, "federation": genesis.id(), "now_unix_ms": config.now_unix_ms,
            "status": status, "state": view, "findings": result.findings,
        }),
        || {
            let mut out =
                render::certificate(ctx.style, &view, status.as_str(), expiry, offset, true);
            out.push_str(&format!(
                "\nVerified offline against federation {} ({} entries)\n",
                genesis.id(),
                verified.entries.len()
            ));
            if result.findings.is_empty() {
                out.push_str(&format!("\n{}\n", ctx.style.good("No findings.")));
            }
            for f in &result.findings {
                out.push_str(&format!(
                    "\n{} {}\n  {}\n",
                    audit_report::severity_name(f.severity).to_uppercase(),
                    audit_report::printable(&f.id),
                    audit_report::printable(&f.explanation)
                ));
                for e in &f.entries {
                    out.push_str(&format!("  evidence {e}\n"));
                }
            }
            out
        },
    );
    Ok(fail_on(&result.findings, settings.fail_on))
}

async fn impact(
    ctx: &Ctx,
    cert: &CertRef,
    since: Option<&str>,
    genesis_file: Option<&Path>,
) -> Outcome {
    let genesis = audit_genesis(ctx, genesis_file)?;
    let offset = genesis.body().utc_offset_minutes;
    let since = since
        .map(|text| parse_time(text, offset))
        .transpose()
        .map_err(Failure::usage)?;
    let (id, verified) = verified_bundle(ctx, cert, &genesis).await?;
    let report = audit_impact(offset, id, &verified.entries, since).map_err(|e| {
        Failure::refused(
            format!("the certificate's entries do not fold: {e}"),
            json!({"error": "lifecycle", "rule": e.rule, "detail": e.detail}),
        )
    })?;
    ctx.print(&serde_json::to_value(&report)?, || {
        let time = |ms: u64| format_time(ms, offset);
        let mut out = format!("{} of certificate {id}\n", ctx.style.bold("Impact"));
        if report.cause.is_empty() {
            out.push_str("  no recall, withdrawal, suspension or failed verification\n");
        }
        for c in &report.cause {
            out.push_str(&format!(
                "  cause     {} by {} at {}  entry {}\n",
                c.kind,
                c.by,
                time(c.time_unix_ms),
                c.entry
            ));
        }
        match report.cutoff {
            Some(cutoff) => out.push_str(&format!("  uses from {}\n", time(cutoff))),
            None => out.push_str("  no cutoff: no uses listed\n"),
        }
        for lab in &report.labs {
            out.push_str(&format!(
                "\n{}  units: {}\n",
                ctx.style.bold(lab.org.as_str()),
                audit_report::printable(&lab.units.join(", "))
            ));
            if lab.uses_after_cutoff.is_empty() {
                out.push_str("  no uses from the cutoff on\n");
            }
            for u in &lab.uses_after_cutoff {
                out.push_str(&format!(
                    "  use of {} at {}  entry {}{}\n",
                    audit_report::printable(&u.serial),
                    time(u.time_unix_ms),
                    u.entry,
                    u.reference
                        .as_deref()
                        .map(|r| format!("  ({})", audit_report::printable(r)))
                        .unwrap_or_default()
                ));
            }
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}
