//! Human output: plain ANSI colour only when stdout is a terminal (and `NO_COLOR` is unset),
//! aligned tables, and a certificate's state as `show` and `verify` print it.

use std::fmt::Write as _;
use std::io::IsTerminal;

use rmledger_schema::records::{PropertyValue, ValueKind};

use crate::time::{format_date, format_time};
use crate::view::CertificateView;

/// Whether to colour, decided once from the terminal and `NO_COLOR`.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    pub fn detect() -> Self {
        Self {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn good(self, text: &str) -> String {
        self.paint("1;32", text)
    }
    pub fn bad(self, text: &str) -> String {
        self.paint("1;31", text)
    }
    pub fn warn(self, text: &str) -> String {
        self.paint("1;33", text)
    }

    /// A status word coloured by meaning: valid green, expired yellow, anything else red.
    pub fn status(self, status: &str) -> String {
        let upper = status.to_uppercase();
        match status {
            "valid" | "pass" => self.good(&upper),
            "expired" | "inconclusive" => self.warn(&upper),
            _ => self.bad(&upper),
        }
    }
}

/// Left-aligned columns, two spaces apart; the header is bold.
pub fn table(style: Style, header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(cell));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i].saturating_sub(width(cell)) + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    let head = line(header.iter().map(|h| (*h).to_string()).collect());
    let _ = writeln!(out, "{}", style.bold(&head));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.clone()));
    }
    out
}

/// `U` as written on a certificate: absolute in the value's unit, or a percentage.
pub fn uncertainty_text(value: &PropertyValue) -> (String, String) {
    match &value.uncertainty {
        Some(u) if u.relative => (format!("{} %", u.expanded), u.coverage_factor.to_string()),
        Some(u) => (u.expanded.to_string(), u.coverage_factor.to_string()),
        None => ("—".into(), "—".into()),
    }
}

fn kind_text(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Certified => "certified",
        ValueKind::Reference => "reference",
        ValueKind::Information => "information",
    }
}

/// A certificate's state: header, values, validity, verifications, units and (optionally) the
/// timeline.
pub fn certificate(
    style: Style,
    view: &CertificateView,
    status: &str,
    expiry_unix_ms: Option<u64>,
    utc_offset_minutes: i32,
    with_timeline: bool,
) -> String {
    let mut out = String::new();
    let Some(current) = view.current() else {
        return "(no revision)\n".into();
    };
    let c = &current.certificate;
    let _ = writeln!(
        out,
        "{}  batch {}  {}",
        style.bold(c.code.as_str()),
        c.batch,
        c.name
    );
    let _ = writeln!(out, "  id          {}", view.id);
    let _ = writeln!(out, "  status      {}", style.status(status));
    let _ = writeln!(out, "  producer    {}", view.producer);
    let _ = writeln!(
        out,
        "  registered  {}",
        format_time(view.registered_at_unix_ms, utc_offset_minutes)
    );
    let _ = writeln!(
        out,
        "  issued      {}{}",
        c.issue_date,
        c.characterization_date
            .map(|d| format!("  (characterized {d})"))
            .unwrap_or_default()
    );
    let validity = match &c.validity {
        rmledger_schema::records::Validity::Until(d) => format!("until {d}"),
        rmledger_schema::records::Validity::FromCharacterization(p) => {
            format!("{p} from characterization")
        }
        rmledger_schema::records::Validity::AfterDispatch(p) => format!("{p} after dispatch"),
        rmledger_schema::records::Validity::UntilRevoked => "until revoked".into(),
    };
    let expiry = expiry_unix_ms.map_or_else(
        || "—".to_string(),
        |ms| {
            // The expiry instant is the start of the day after the last valid date.
            format!(
                "valid through {}",
                format_date(ms.saturating_sub(1), utc_offset_minutes)
            )
        },
    );
    let _ = writeln!(out, "  validity    {validity}; {expiry}");
    let _ = writeln!(
        out,
        "  revision    {} of {}{}",
        current.number,
        view.revisions.len(),
        current
            .reason
            .as_ref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default()
    );
    for (label, event) in [
        ("suspended", &view.suspended),
        ("recalled", &view.recalled),
        ("withdrawn", &view.withdrawn),
        ("superseded", &view.superseded_by),
    ] {
        if let Some(e) = event {
            let _ = writeln!(
                out,
                "  {label:<11} {} by {}{}",
                format_time(e.time_unix_ms, utc_offset_minutes),
                e.chain,
                e.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    }

    let rows: Vec<Vec<String>> = c
        .values
        .iter()
        .map(|v| {
            let (u, k) = uncertainty_text(v);
            vec![
                v.quantity.clone(),
                kind_text(v.kind).into(),
                v.value.to_string(),
                u,
                k,
                v.unit.display().to_string(),
                v.basis.clone().unwrap_or_default(),
                v.method.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nValues");
    out.push_str(&table(
        style,
        &[
            "quantity", "kind", "value", "U", "k", "unit", "basis", "method",
        ],
        &rows,
    ));

    if !view.verifications.is_empty() {
        let rows: Vec<Vec<String>> = view
            .verifications
            .iter()
            .map(|v| {
                let r = &v.record;
                let u = &r.uncertainty;
                let u_text = if u.relative {
                    format!("{} %", u.expanded)
                } else {
                    u.expanded.to_string()
                };
                let (en, zeta) = v.comparison.map_or(("—".into(), "—".into()), |c| {
                    (format!("{:.2}", c.en), format!("{:.2}", c.zeta))
                });
                let verdict = v
                    .rule_verdict
                    .or(r.verdict)
                    .map_or("—".to_string(), |v| verdict_text(v).to_string());
                vec![
                    format_time(v.time_unix_ms, utc_offset_minutes),
                    v.chain.to_string(),
                    r.quantity.clone(),
                    format!(
                        "{} ± {} {} (k={})",
                        r.value,
                        u_text,
                        r.unit.display(),
                        u.coverage_factor
                    ),
                    format!("r{}", r.revision),
                    en,
                    zeta,
                    style.status(&verdict),
                ]
            })
            .collect();
        let _ = writeln!(out, "\nVerifications");
        out.push_str(&table(
            style,
            &[
                "time", "by", "quantity", "measured", "rev", "En", "ζ", "verdict",
            ],
            &rows,
        ));
    }

    let stages = view.unit_stages();
    if !stages.is_empty() {
        let total: usize = stages.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            out,
            "\nUnits: {total} ({})",
            stages
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let moved: Vec<Vec<String>> = view
            .units
            .values()
            .filter(|u| u.stage != "produced")
            .take(50)
            .map(|u| {
                vec![
                    u.serial.clone(),
                    u.stage.clone(),
                    u.holder.to_string(),
                    u.shipped_to
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    u.uses.to_string(),
                ]
            })
            .collect();
        if !moved.is_empty() {
            out.push_str(&table(
                style,
                &["serial", "stage", "holder", "shipped to", "uses"],
                &moved,
            ));
        }
    }

    if with_timeline {
        let rows: Vec<Vec<String>> = view
            .timeline
            .iter()
            .map(|t| {
                let mut summary = t.summary.clone();
                if let Some(a) = &t.anomaly {
                    summary.push_str(&format!("  [{}]", style.bad(a)));
                }
                vec![
                    format_time(t.time_unix_ms, utc_offset_minutes),
                    format!("{}#{}", t.chain, t.seq),
                    t.kind.to_string(),
                    summary,
                ]
            })
            .collect();
        let _ = writeln!(out, "\nTimeline");
        out.push_str(&table(style, &["time", "chain", "kind", "summary"], &rows));
    }
    out
}

pub fn verdict_text(v: rmledger_schema::records::Verdict) -> &'static str {
    match v {
        rmledger_schema::records::Verdict::Pass => "pass",
        rmledger_schema::records::Verdict::Fail => "fail",
        rmledger_schema::records::Verdict::Inconclusive => "inconclusive",
    }
}
