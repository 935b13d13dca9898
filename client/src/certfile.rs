//! Certificate files: the TOML (or, by extension, JSON) form of
//! [`rmledger_schema::records::Certificate`], every field as its serde name.
//!
//! Friendlier than the wire form in three ways, none of which changes a value: units may be
//! written as displayed (`µg/mL`, `°C`, `ppm`; stored as their UCUM code), RM codes are
//! normalised (`GBW(E) 082345` → `GBW(E)082345`), and TOML dates may be bare
//! (`issue_date = 2025-09-01`). Decimals must be strings (`value = "0.210"`) so that trailing
//! zeros — significant digits — are never lost through a binary float. Errors name the file,
//! the field and the rule; the certificate's static rules ([`Certificate::validate`]) run too.

use std::path::Path;

use rmledger_schema::records::Certificate;
use rmledger_schema::rmcode::RmCode;
use rmledger_schema::units::Unit;
use serde_json::{Map, Value};

/// The largest certificate file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What is wrong with a certificate file: the file, the field (a path such as
/// `values[1].uncertainty.expanded`, when one is to blame) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{rule}", .field.as_ref().map(|f| format!("field {f}: ")).unwrap_or_default())]
pub struct FileError {
    pub file: String,
    pub field: Option<String>,
    pub rule: String,
}

/// Reads, parses and validates a certificate file.
pub fn load(path: &Path) -> Result<Certificate, FileError> {
    let file = path.display().to_string();
    let fail = |field: Option<String>, rule: String| FileError {
        file: file.clone(),
        field,
        rule,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(None, e.to_string()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(fail(
            None,
            format!("larger than {MAX_FILE_BYTES} bytes; is this a certificate file?"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(None, e.to_string()))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse(&text, json).map_err(|(field, rule)| fail(field, rule))
}

/// Parses certificate text (TOML, or JSON when `json`) and validates it; the error is
/// `(field, rule)`.
pub fn parse(text: &str, json: bool) -> Result<Certificate, (Option<String>, String)> {
    let raw = if json {
        serde_json::from_str::<Value>(text).map_err(|e| (None, format!("JSON syntax: {e}")))?
    } else {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| (None, format!("TOML syntax: {}", e.to_string().trim_end())))?;
        toml_to_json(toml::Value::Table(table), "")?
    };
    let value = normalise(raw, "")?;
    let certificate: Certificate = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        (field, e.into_inner().to_string())
    })?;
    certificate
        .validate()
        .map_err(|e| (Some(e.field), format!("{} ({})", e.detail, e.rule)))?;
    Ok(certificate)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// TOML to JSON, keeping integers exact (as decimal strings) and refusing floats.
fn toml_to_json(value: toml::Value, path: &str) -> Result<Value, (Option<String>, String)> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::String(i.to_string()),
        toml::Value::Float(f) => return Err(float_error(path, &f.to_string())),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| {
                    let sub = join(path, &k);
                    toml_to_json(v, &sub).map(|v| (k, v))
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
    })
}

fn float_error(path: &str, text: &str) -> (Option<String>, String) {
    (
        Some(path.to_string()),
        format!(
            "write decimals as strings, e.g. \"{text}\", so that significant trailing zeros are kept exactly"
        ),
    )
}

/// Makes JSON numbers strings (refusing non-integers, as for TOML), and maps displayed units
/// and unnormalised RM codes to their stored forms.
fn normalise(value: Value, path: &str) -> Result<Value, (Option<String>, String)> {
    Ok(match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
        Value::Number(n) => return Err(float_error(path, &n.to_string())),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| normalise(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let sub = join(path, &k);
                    let v = match (k.as_str(), v) {
                        ("unit", Value::String(s)) => Value::String(
                            Unit::parse_lenient(&s).map_or(s, |u| u.code().to_string()),
                        ),
                        ("code", Value::String(s)) if path.is_empty() => {
                            Value::String(RmCode::parse(&s).map_or(s, |c| c.as_str().to_string()))
                        }
                        (_, v) => normalise(v, &sub)?,
                    };
                    Ok((k, v))
                })
                .collect::<Result<Map<_, _>, _>>()?,
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("docs")
            .join("examples")
    }

    #[test]
    fn the_shipped_examples_parse_and_validate() {
        use rmledger_schema::records::{AfterOpening, Validity, ValueKind};
        let soil = load(&examples_dir().join("soil-gbw-e.toml")).unwrap();
        assert_eq!(soil.code.as_str(), "GBW(E)082345");
        assert!(matches!(soil.validity, Validity::FromCharacterization(_)));
        assert!(soil.values.iter().any(|v| v.kind == ValueKind::Certified));
        assert!(soil.values.iter().any(|v| v.kind == ValueKind::Reference));
        assert!(soil.expiry_date().is_some());

        let cd = load(&examples_dir().join("cadmium-solution.toml")).unwrap();
        assert_eq!(cd.after_opening, AfterOpening::SingleUse);
        let value = &cd.values[0];
        assert_eq!(value.unit.code(), "ug/mL");
        let u = value.uncertainty.as_ref().unwrap();
        assert!(u.relative);
        assert_eq!(u.expanded.to_string(), "0.5");
        assert_eq!(u.coverage_factor.to_string(), "2");
    }

    /// `(edit of the soil example, field expected, substring of the rule)`.
    fn check(edit: impl Fn(String) -> String, field: Option<&str>, rule: &str) {
        let text = std::fs::read_to_string(examples_dir().join("soil-gbw-e.toml")).unwrap();
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed nothing");
        let (got_field, got_rule) = parse(&edited, false).unwrap_err();
        assert_eq!(got_field.as_deref(), field, "rule was {got_rule}");
        assert!(got_rule.contains(rule), "{got_rule:?} lacks {rule:?}");
    }

    #[test]
    fn each_error_class_names_the_field_and_the_rule() {
        check(
            |t| t.replacen("name = ", "name = = ", 1),
            None,
            "TOML syntax",
        );
        check(
            |t| t.replacen("batch = ", "colour = \"red\"\nbatch = ", 1),
            Some("colour"),
            "unknown field `colour`",
        );
        check(
            |t| t.replacen("value = \"0.21\"", "value = \"0.2.1\"", 1),
            Some("values[0].value"),
            "",
        );
        check(
            |t| t.replacen("value = \"0.21\"", "value = 0.21", 1),
            Some("values[0].value"),
            "as strings",
        );
        check(
            |t| t.replacen("unit = \"mg/kg\"", "unit = \"furlong\"", 1),
            Some("values[0].unit"),
            "furlong",
        );
        check(
            |t| t.replacen("expanded = \"0.01\"", "expanded = \"0\"", 1),
            Some("values[0].uncertainty.expanded"),
            "must be > 0",
        );
        check(
            |t| {
                let start = t.find("[values.uncertainty]").unwrap();
                let end = t[start..].find("\n\n").unwrap() + start;
                format!("{}{}", &t[..start], &t[end..])
            },
            Some("values[0].uncertainty"),
            "needs an expanded uncertainty",
        );
        check(
            |t| t.replacen("issue_date = 2025-09-01", "issue_date = 2031-09-01", 1),
            Some("validity"),
            "ends before the issue date",
        );
    }
}
