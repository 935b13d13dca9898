//! The regulator's audit on the client side: replicate a node's whole ledger over the API, or
//! read a node's data directory read-only, and stream it through `schema::audit::Auditor`
//! judged against the pinned genesis alone; then the report as terminal text, JSON
//! (`report.json`) and one self-contained HTML file (`report.html`).
//!
//! Nothing a node says is trusted: entries, checkpoints and anchors are verified by the
//! auditor against the genesis the caller pins; the node only decides what it serves, and a
//! node that withholds entries shows up as anchors naming more than the audit was given.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use maud::{DOCTYPE, Markup, html};
use rmledger_node::storage::{self, RecordType};
use rmledger_schema::audit::{AuditConfig, AuditReport, Auditor, Finding};
use rmledger_schema::checkpoint::Checkpoint;
use rmledger_schema::federation::Genesis;
use rmledger_schema::ids::OrgId;
use rmledger_schema::records::Severity;

use crate::client::Client;
use crate::error::Error;
use crate::render::Style;
use crate::time::format_time;

/// Entries asked for per page when replicating over the API (the node may send fewer).
pub const PAGE_ENTRIES: usize = 1000;

/// Severities from the most serious down, with their names in reports.
pub const SEVERITIES: [(Severity, &str); 5] = [
    (Severity::Critical, "critical"),
    (Severity::High, "high"),
    (Severity::Medium, "medium"),
    (Severity::Low, "low"),
    (Severity::Info, "info"),
];

/// The name of a severity in reports and on the command line.
pub fn severity_name(severity: Severity) -> &'static str {
    SEVERITIES
        .iter()
        .find(|(s, _)| *s == severity)
        .map_or("info", |(_, name)| name)
}

/// How many findings are at `level` or more serious.
pub fn findings_at_or_above(report: &AuditReport, level: Severity) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.severity <= level)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Progress

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    /// Visible when `wanted` and stderr is a terminal; hidden (and free) otherwise.
    pub fn new(wanted: bool) -> Self {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {human_pos}/{human_len} ({elapsed}, {eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self(bar)
    }

    fn stage(&self, message: &'static str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(message);
    }

    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn done(&self) {
        self.0.finish_and_clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Sources

/// Replicates the whole ledger of the node behind `client` — every chain (the registrar's
/// first, as the auditor requires) in pages, and each chain's signed checkpoint — and audits it
/// against `genesis`.
pub async fn from_node(
    client: &Client,
    genesis: &Genesis,
    config: AuditConfig,
    progress: &Progress,
) -> Result<AuditReport, Error> {
    let served = client.federation().await?;
    if served.federation_id != genesis.id() {
        return Err(Error::Usage(format!(
            "the node at {} serves federation {}, not {} that the audit is pinned to (give --genesis FILE to audit another federation)",
            client.base(),
            served.federation_id,
            genesis.id()
        )));
    }
    let registrar = genesis.registrar().clone();
    let mut chains = client.chains().await?;
    chains.sort_by_key(|c| c.chain != registrar);
    let mut auditor = Auditor::new(genesis, config);
    let total = chains
        .iter()
        .fold(0u64, |sum, c| sum.saturating_add(c.size));
    progress.stage("replicating and checking", total);
    for chain in &chains {
        // The checkpoint first: the node signs one only over durable entries, so fetching up to
        // its size (the chain may have grown since the list) never asks for what is not there.
        let checkpoint = client.checkpoint_bytes(&chain.chain).await?;
        let checkpoint_size = checkpoint
            .as_deref()
            .and_then(|b| Checkpoint::decode(b).ok())
            .filter(|c| c.body().chain == chain.chain)
            .map_or(0, |c| c.body().size);
        let target = chain.size.max(checkpoint_size);
        let mut from = 0u64;
        while from < target {
            let want = PAGE_ENTRIES.min(usize::try_from(target - from).unwrap_or(PAGE_ENTRIES));
            let mut page = client.entries(&chain.chain, from, Some(want)).await?;
            if page.is_empty() {
                break;
            }
            page.truncate(want);
            from += page.len() as u64;
            progress.inc(page.len() as u64);
            auditor
                .chain_entries(&chain.chain, &page)
                .map_err(|e| Error::Usage(format!("audit feed: {e}")))?;
        }
        if let Some(bytes) = checkpoint {
            auditor.checkpoint(&bytes);
        }
    }
    progress.stage("evaluating the rules", 0);
    let report = auditor.finish();
    progress.done();
    Ok(report)
}

/// Audits a node's data directory `dir` without opening its store (no lock, no index, no
/// writes; it works while the node runs): one pass feeds the registrar's chain, a second pass
/// over exactly the same records feeds every other chain, in pages per chain. Each chain's
/// newest checkpoint (largest size, then time) is checked, as the node serves it.
pub fn from_data_dir(
    dir: &Path,
    genesis: &Genesis,
    config: AuditConfig,
    progress: &Progress,
) -> Result<AuditReport, Error> {
    let read_error =
        |e: storage::StorageError| Error::Usage(format!("reading {}: {e}", dir.display()));
    let registrar = genesis.registrar().clone();
    let mut auditor = Auditor::new(genesis, config);
    let mut feed_error = None;
    let mut registrar_page: Vec<Vec<u8>> = Vec::new();
    let mut records = 0u64;
    let mut newest: BTreeMap<OrgId, (u64, u64, Vec<u8>)> = BTreeMap::new();
    let mut last_chain = None;
    // The first pass is measured in bytes of the segment files (the record count is not known).
    let log_bytes = std::fs::read_dir(dir.join("segments"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|f| f.metadata().ok())
        .fold(0u64, |sum, m| sum.saturating_add(m.len()));
    progress.stage("reading the log (bytes)", log_bytes);
    let end = storage::read_log(dir, None, |record| {
        records += 1;
        progress.inc((storage::FRAME_HEADER + record.bytes.len()) as u64);
        match record.kind {
            RecordType::Entry => {
                let chain = chain_of(record.bytes, &mut last_chain, &registrar);
                if chain == registrar {
                    registrar_page.push(record.bytes.to_vec());
                    if registrar_page.len() >= rmledger_schema::audit::PAGE
                        && let Err(e) = auditor.chain_entries(&registrar, registrar_page.drain(..))
                    {
                        feed_error = Some(e);
                        return ControlFlow::Break(());
                    }
                }
            }
            RecordType::Checkpoint => {
                // Undecodable checkpoints cannot be in a data directory the node opened (it
                // decodes each at replay); any that are go to the auditor as they are.
                let key = Checkpoint::decode(record.bytes)
                    .map(|c| (c.body().chain.clone(), c.body().size, c.body().time_unix_ms))
                    .ok();
                match key {
                    Some((chain, size, time)) => {
                        let newer = newest
                            .get(&chain)
                            .is_none_or(|(s, t, _)| (size, time) >= (*s, *t));
                        if newer {
                            newest.insert(chain, (size, time, record.bytes.to_vec()));
                        }
                    }
                    None => auditor.checkpoint(record.bytes),
                }
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(read_error)?;
    if let Some(e) = feed_error {
        return Err(Error::Usage(format!("audit feed: {e}")));
    }
    auditor
        .chain_entries(&registrar, registrar_page.drain(..))
        .map_err(|e| Error::Usage(format!("audit feed: {e}")))?;
    progress.stage("checking every chain", records);
    // Other chains: pages per chain, fed when full, so signatures are still checked in bulk.
    let mut pages: BTreeMap<OrgId, Vec<Vec<u8>>> = BTreeMap::new();
    let mut last_chain = None;
    let mut feed_error = None;
    storage::read_log(dir, Some(end), |record| {
        progress.inc(1);
        if record.kind != RecordType::Entry {
            return ControlFlow::Continue(());
        }
        let chain = chain_of(record.bytes, &mut last_chain, &registrar);
        if chain == registrar {
            return ControlFlow::Continue(());
        }
        let page = pages.entry(chain.clone()).or_default();
        page.push(record.bytes.to_vec());
        if page.len() >= rmledger_schema::audit::PAGE {
            let page = std::mem::take(page);
            if let Err(e) = auditor.chain_entries(&chain, page) {
                feed_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(read_error)?;
    if let Some(e) = feed_error {
        return Err(Error::Usage(format!("audit feed: {e}")));
    }
    for (chain, page) in pages {
        auditor
            .chain_entries(&chain, page)
            .map_err(|e| Error::Usage(format!("audit feed: {e}")))?;
    }
    for (_, (_, _, bytes)) in newest {
        auditor.checkpoint(&bytes);
    }
    progress.stage("evaluating the rules", 0);
    let report = auditor.finish();
    progress.done();
    Ok(report)
}

/// The chain an entry's bytes claim (read from the protected header only); bytes without a
/// readable header count as the previous entry's chain (the registrar's before any), as
/// [`Auditor::entry`] counts them, and the auditor reports them as undecodable there.
fn chain_of(bytes: &[u8], last: &mut Option<OrgId>, registrar: &OrgId) -> OrgId {
    let chain = rmledger_schema::audit::peek_chain(bytes)
        .or_else(|| last.clone())
        .unwrap_or_else(|| registrar.clone());
    *last = Some(chain.clone());
    chain
}

// ---------------------------------------------------------------------------------------------
// Terminal

/// Ledger text on a terminal: control characters (escape sequences) become `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The short terminal summary: counts by severity, then every finding with its evidence.
pub fn render_text(report: &AuditReport, style: Style, utc_offset_minutes: i32) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} of federation {} at {}\n  {} entries in {} chains, {} checkpoints, {} certificates\n",
        style.bold("Audit"),
        report.federation,
        format_time(report.now_unix_ms, utc_offset_minutes),
        report.entries,
        report.chains.len(),
        report.checkpoints,
        report.certificates,
    ));
    let counts: Vec<String> = SEVERITIES
        .iter()
        .map(|(_, name)| format!("{name} {}", report.counts.get(name).copied().unwrap_or(0)))
        .collect();
    out.push_str(&format!("  findings: {}\n", counts.join(", ")));
    if report.findings.is_empty() {
        out.push_str(&format!("\n{}\n", style.good("No findings.")));
        return out;
    }
    for f in &report.findings {
        let severity = severity_name(f.severity).to_uppercase();
        let severity = match f.severity {
            Severity::Critical | Severity::High => style.bad(&severity),
            Severity::Medium => style.warn(&severity),
            _ => style.dim(&severity),
        };
        out.push_str(&format!(
            "\n{severity} {}\n  rule     {}\n  subject  {}\n  {}\n",
            style.bold(&printable(&f.id)),
            f.rule,
            printable(&f.subject),
            printable(&f.explanation),
        ));
        for entry in &f.entries {
            out.push_str(&format!("  evidence {entry}\n"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTML

const REPORT_CSS: &str = "
body{font:16px/1.5 system-ui,-apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;margin:0;color:#1a1a1a;background:#fafafa}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.2rem;margin:1.5rem 0 .5rem;border-bottom:1px solid #ccc}
code,.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;overflow-wrap:anywhere;word-break:break-all}
.counts{display:flex;flex-wrap:wrap;gap:.5rem;padding:0;list-style:none}
.counts li{padding:.4rem .8rem;border-radius:.4rem;background:#eee}
.finding{background:#fff;border:1px solid #ddd;border-left-width:.4rem;border-radius:.3rem;padding:.6rem .8rem;margin:.6rem 0}
.critical{border-left-color:#b00020}.high{border-left-color:#e65100}.medium{border-left-color:#f9a825}.low{border-left-color:#1565c0}.info{border-left-color:#777}
.sev{font-weight:bold;text-transform:uppercase;font-size:.8rem}
.finding p{margin:.3rem 0}.evidence{margin:.3rem 0;padding-left:1.2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left;vertical-align:top}
.muted{color:#666}
";

/// `report.html`: one self-contained page (inline CSS, no script, no external resource; every
/// ledger string escaped by maud) with the summary, the findings grouped by severity with their
/// evidence, and the chains audited.
pub fn render_html(report: &AuditReport, utc_offset_minutes: i32) -> String {
    let time = |ms: u64| format_time(ms, utc_offset_minutes);
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                title { "rmledger audit report · 审计报告" }
                style { (maud::PreEscaped(REPORT_CSS)) }
            }
            body { main {
                h1 { "Audit report · 审计报告" }
                p {
                    "Federation · 联盟 " code { (report.federation) } br;
                    "Made at · 审计时间 " (time(report.now_unix_ms))
                }
                h2 { "Summary · 摘要" }
                p {
                    (report.entries) " entries in " (report.chains.len()) " chains, "
                    (report.checkpoints) " checkpoints, " (report.certificates) " certificates."
                }
                ul.counts {
                    @for (_, name) in SEVERITIES {
                        li class=(name) { (name) ": " strong { (report.counts.get(name).copied().unwrap_or(0)) } }
                    }
                }
                @if report.findings.is_empty() {
                    p { strong { "No findings. · 未发现问题。" } }
                }
                @for (severity, name) in SEVERITIES {
                    @let group: Vec<&Finding> = report.findings.iter().filter(|f| f.severity == severity).collect();
                    @if !group.is_empty() {
                        h2 id=(name) { (name) " (" (group.len()) ")" }
                        @for f in group {
                            section class={ "finding " (name) } {
                                p { span.sev { (name) } " " code.id { (f.id) } }
                                p { "Rule · 规则: " code { (f.rule) } }
                                p { "Subject · 对象: " code { (f.subject) } }
                                p { (f.explanation) }
                                @if f.entries.is_empty() {
                                    p.muted { "No entry evidence (the finding is about what is missing)." }
                                } @else {
                                    p { "Evidence · 证据 (" (f.entries.len()) "):" }
                                    ul.evidence { @for e in &f.entries { li { code { (e) } } } }
                                }
                            }
                        }
                    }
                }
                h2 { "Chains · 链" }
                table {
                    thead { tr { th { "chain" } th { "size" } th { "root" } th { "last entry" } th { "last anchor" } } }
                    tbody {
                        @for (chain, c) in &report.chains {
                            tr {
                                td { code { (chain) } }
                                td { (c.size) }
                                td { code { (c.root) } }
                                td { (time(c.last_time_unix_ms)) }
                                td {
                                    @match &c.last_anchor {
                                        Some(a) => { "by " code { (a.by) } " at size " (a.size) ", " (time(a.time_unix_ms)) }
                                        None => { span.muted { "none" } }
                                    }
                                }
                            }
                        }
                    }
                }
                p.muted {
                    "Settings: failed verification acted on within "
                    (report.config.suspension_deadline_ms / 3_600_000) " h; anchors at most "
                    (report.config.anchor_max_age_ms / 3_600_000) " h old. Rules: docs/audit-report.md."
                }
            } }
        }
    };
    page.into_string()
}
