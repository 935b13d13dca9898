//! `node.toml`: where the node keeps its data, what it listens on, who it is, who may write
//! through it (operator tokens, stored only as hashes), its peers and its limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rmledger_schema::date::parse_duration_ms;
use serde::{Deserialize, Serialize};

/// BLAKE3 `derive_key` context for operator token hashes.
const TOKEN_CONTEXT: &str = "rmledger operator token v1";

/// The node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The organisation this node writes for.
    pub org: String,
    /// Where chains and indexes live; relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// Address of the HTTP API; loopback unless the operator opens it deliberately.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The organisation's PKCS#8 Ed25519 key (mode 0600).
    pub key_file: PathBuf,
    /// The federation's genesis document.
    pub genesis_file: PathBuf,
    /// People allowed to write through this node.
    #[serde(default)]
    pub operators: Vec<Operator>,
    /// Nodes to replicate from. Left out of a written file when empty, so `[[peers]]` tables
    /// can be appended to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub limits: Limits,
    /// How often each peer is polled for new entries when nothing wakes the replication
    /// task earlier (`POST /v1/notify`), milliseconds.
    #[serde(default = "default_replication_interval_ms")]
    pub replication_interval_ms: u64,
    /// The longest back-off after failed rounds with a peer, milliseconds.
    #[serde(default = "default_replication_max_backoff_ms")]
    pub replication_max_backoff_ms: u64,
    /// How often this node considers anchoring other chains, seconds.
    #[serde(default = "default_anchor_interval_seconds")]
    pub anchor_interval_seconds: u64,
    /// The deadlines of the node's own audit (`GET /v1/audit/findings`, the findings page).
    #[serde(default, skip_serializing_if = "AuditSettings::is_default")]
    pub audit: AuditSettings,
}

/// `[audit]`: deadlines as `30d`, `12h`, `15m`, `90s` or `500ms`, the same as the CLI's
/// `rmledger audit --suspension-deadline … --anchor-max-age …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// A failed verification must be followed by a suspension, recall or withdrawal within this.
    pub suspension_deadline: String,
    /// Every chain must be anchored at least this often.
    pub anchor_max_age: String,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            suspension_deadline: "30d".into(),
            anchor_max_age: "7d".into(),
        }
    }
}

impl AuditSettings {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// `suspension_deadline` in milliseconds (checked when the config is loaded).
    pub fn suspension_deadline_ms(&self) -> u64 {
        parse_duration_ms(&self.suspension_deadline).unwrap_or(30 * 86_400_000)
    }

    /// `anchor_max_age` in milliseconds (checked when the config is loaded).
    pub fn anchor_max_age_ms(&self) -> u64 {
        parse_duration_ms(&self.anchor_max_age).unwrap_or(7 * 86_400_000)
    }
}

fn default_replication_interval_ms() -> u64 {
    2000
}

fn default_replication_max_backoff_ms() -> u64 {
    30_000
}

fn default_anchor_interval_seconds() -> u64 {
    60
}

/// An operator: a name that goes into each entry's `op`, and the hash of its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: String,
    /// `BLAKE3-derive_key("rmledger operator token v1", token)`, hex.
    pub token_hash: String,
}

/// A node to replicate from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub url: String,
}

/// Bounds on what the network may ask of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, milliseconds.
    pub request_timeout_ms: u64,
    /// How far ahead of this node's clock a replicated entry's time may be, milliseconds.
    pub max_clock_skew_ms: u64,
    /// Most entries returned by one page of `/entries`.
    pub max_page_entries: usize,
    /// Largest response body accepted from a peer while replicating, bytes.
    pub max_replication_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            request_timeout_ms: 10_000,
            max_clock_skew_ms: 300_000,
            max_page_entries: 1000,
            max_replication_body_bytes: 16 * 1024 * 1024,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7300))
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Reads and checks a config file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: name.clone(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.key_file,
            &mut config.genesis_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.check().map_err(|message| ConfigError::Invalid {
            path: name,
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        rmledger_schema::ids::OrgId::new(&self.org).map_err(|e| format!("org: {e}"))?;
        for (i, op) in self.operators.iter().enumerate() {
            if op.name.trim().is_empty() || op.name.len() > 128 {
                return Err(format!("operators[{i}].name must be 1 to 128 characters"));
            }
            if op.token_hash.len() != 64 || !op.token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "operators[{i}].token_hash must be 64 hex characters (a hash, never the token)"
                ));
            }
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if !(peer.url.starts_with("http://") || peer.url.starts_with("https://")) {
                return Err(format!(
                    "peers[{i}].url must start with http:// or https://"
                ));
            }
        }
        if self.limits.max_body_bytes < 1024
            || self.limits.max_page_entries == 0
            || self.limits.request_timeout_ms == 0
            || self.limits.max_replication_body_bytes < 64 * 1024
        {
            return Err(
                "limits: max_body_bytes >= 1024, max_page_entries >= 1, request_timeout_ms >= 1, max_replication_body_bytes >= 65536"
                    .into(),
            );
        }
        parse_duration_ms(&self.audit.suspension_deadline)
            .map_err(|e| format!("audit.suspension_deadline: {e}"))?;
        parse_duration_ms(&self.audit.anchor_max_age)
            .map_err(|e| format!("audit.anchor_max_age: {e}"))?;
        if self.replication_interval_ms < 10
            || self.replication_max_backoff_ms < self.replication_interval_ms
            || self.anchor_interval_seconds == 0
        {
            return Err(
                "replication_interval_ms >= 10, replication_max_backoff_ms >= replication_interval_ms, anchor_interval_seconds >= 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// The operator whose token this is, compared in constant time.
    pub fn operator_for_token(&self, token: &str) -> Option<&Operator> {
        let presented = blake3::Hash::from(token_hash(token));
        self.operators.iter().find(|op| {
            blake3::Hash::from_hex(&op.token_hash).is_ok_and(|stored| stored == presented)
        })
    }
}

/// The stored hash of an operator token.
pub fn token_hash(token: &str) -> [u8; 32] {
    blake3::derive_key(TOKEN_CONTEXT, token.as_bytes())
}

/// A new random operator token (256 bits, hex), shown once and stored only as its hash.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(token_hash: &str) -> String {
        format!(
            "org = \"acme-rm\"\ndata_dir = \"data\"\nkey_file = \"org.key\"\ngenesis_file = \"genesis.cbor\"\n\
             [[operators]]\nname = \"wang.li\"\ntoken_hash = \"{token_hash}\"\n[[peers]]\nurl = \"http://127.0.0.1:7301\"\n"
        )
    }

    #[test]
    fn load_resolves_paths_and_finds_operators() {
        let dir = tempfile::tempdir().unwrap();
        let token = new_token().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            sample(&data_encoding::HEXLOWER.encode(&token_hash(&token))),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.operator_for_token(&token).unwrap().name, "wang.li");
        assert!(config.operator_for_token("wrong").is_none());
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.replication_interval_ms, 2000);
        assert_eq!(config.anchor_interval_seconds, 60);
        assert_eq!(config.audit.suspension_deadline_ms(), 30 * 86_400_000);
        assert_eq!(config.audit.anchor_max_age_ms(), 7 * 86_400_000);
    }

    #[test]
    fn audit_deadlines_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let hash = data_encoding::HEXLOWER.encode(&token_hash("t"));
        // A table header ends the top-level keys, so `[audit]` goes after the sample.
        let with_audit = |audit: &str| format!("{}\n[audit]\n{audit}\n", sample(&hash));
        std::fs::write(
            &path,
            with_audit("suspension_deadline = \"14d\"\nanchor_max_age = \"36h\""),
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.audit.suspension_deadline_ms(), 14 * 86_400_000);
        assert_eq!(config.audit.anchor_max_age_ms(), 36 * 3_600_000);
        std::fs::write(&path, with_audit("anchor_max_age = \"7 weeks\"")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("audit.anchor_max_age"), "{err}");
        std::fs::write(&path, with_audit("grace = \"1d\"")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("grace"), "{err}");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, sample("plaintext-token")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("operators[0].token_hash"), "{err}");
        std::fs::write(&path, "org = \"acme-rm\"\nbogus = 1\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        assert!(matches!(
            Config::load(&dir.path().join("missing.toml")),
            Err(ConfigError::Io { .. })
        ));
    }
}
