//! The client's error: what the node refused (with its class, field and rule), what the network
//! did not deliver, and answers that were not what the API promises.

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an API error `{error, field?, rule?, index?, detail}`.
    #[error("{}", api_message(.status, .class, .field, .rule, .index, .detail))]
    Api {
        status: u16,
        /// The error class: `invalid`, `forbidden`, `conflict`, `not_found`, `unauthorized`, …
        class: String,
        field: Option<String>,
        rule: Option<String>,
        /// In a batch: the position (from 0) of the record refused.
        index: Option<usize>,
        detail: String,
    },
    /// The node could not be reached, or the connection failed or timed out.
    #[error("network error talking to {url}: {detail}")]
    Network { url: String, detail: String },
    /// The node answered, but not with what the API promises.
    #[error("bad response from {url}: {detail}")]
    BadResponse { url: String, detail: String },
    /// A certificate named on the command line is not on the node, or not uniquely.
    #[error("{0}")]
    Resolve(String),
    /// A URL or argument that cannot make a request.
    #[error("{0}")]
    Usage(String),
}

fn api_message(
    status: &u16,
    class: &str,
    field: &Option<String>,
    rule: &Option<String>,
    index: &Option<usize>,
    detail: &str,
) -> String {
    let mut text = format!("the node refused ({status} {class})");
    if let Some(index) = index {
        text.push_str(&format!(", record {index} of the batch"));
    }
    if let Some(field) = field {
        text.push_str(&format!(", field {field}"));
    }
    // The node's detail usually starts with the rule id already.
    if let Some(rule) = rule.as_ref().filter(|r| !detail.starts_with(r.as_str())) {
        text.push_str(&format!(", rule {rule}"));
    }
    text.push_str(&format!(": {detail}"));
    text
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The rule an API error names.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Error::Api { rule, .. } => rule.as_deref(),
            _ => None,
        }
    }

    /// True for errors of the network or of the node's answers (not the node's refusals).
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Network { .. } | Error::BadResponse { .. })
    }

    /// The error as the JSON the API uses, for `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Error::Api {
                status,
                class,
                field,
                rule,
                index,
                detail,
            } => serde_json::json!({
                "error": class, "status": status, "field": field, "rule": rule, "index": index,
                "detail": detail,
            }),
            Error::Network { .. } => {
                serde_json::json!({"error": "network", "detail": self.to_string()})
            }
            Error::BadResponse { .. } => {
                serde_json::json!({"error": "bad_response", "detail": self.to_string()})
            }
            Error::Resolve(detail) => serde_json::json!({"error": "not_found", "detail": detail}),
            Error::Usage(detail) => serde_json::json!({"error": "usage", "detail": detail}),
        }
    }
}
