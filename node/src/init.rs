//! `rmledger-node init`: creates a node's directory — its key, its copy of the genesis (a new
//! federation's, when this node is the registrar) and a `node.toml` with one operator.

use std::fs;
use std::path::{Path, PathBuf};

use rmledger_schema::federation::{Genesis, GenesisBody};
use rmledger_schema::ids::{KeyId, OrgId, PublicKey};
use rmledger_schema::records::{Enrol, Role};

use crate::config::{self, Config, Limits, Operator};
use crate::keys;

/// What `init` needs to know.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub org: OrgId,
    pub listen: std::net::SocketAddr,
    pub operator: String,
    pub federation: FederationChoice,
    pub now_unix_ms: u64,
}

/// Found a new federation (this node is its registrar) or join one from its genesis file.
#[derive(Debug, Clone)]
pub enum FederationChoice {
    Found {
        federation_name: String,
        org_name: String,
        roles: Vec<Role>,
        utc_offset_minutes: i32,
    },
    Join {
        genesis_file: PathBuf,
    },
}

/// What `init` made, for the operator to act on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitReport {
    pub config_file: PathBuf,
    pub key_file: PathBuf,
    pub genesis_file: PathBuf,
    pub federation_id: String,
    pub org: String,
    pub public_key: PublicKey,
    pub key_id: KeyId,
    pub operator: String,
    /// Shown once; only its hash is stored.
    pub operator_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already holds a node (node.toml exists); refusing to overwrite it")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("genesis: {0}")]
    Genesis(#[from] rmledger_schema::federation::FederationError),
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("config: {0}")]
    Config(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the node directory. Nothing existing is overwritten.
pub fn init(options: &InitOptions) -> Result<InitReport, InitError> {
    let dir = &options.dir;
    let config_file = dir.join("node.toml");
    if config_file.exists() {
        return Err(InitError::Exists(dir.display().to_string()));
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let key_file = dir.join("org.key");
    let genesis_file = dir.join("genesis.cbor");
    let key = keys::generate()?;
    let public_key = PublicKey(key.verifying_key().to_bytes());

    let genesis = match &options.federation {
        FederationChoice::Found {
            federation_name,
            org_name,
            roles,
            utc_offset_minutes,
        } => {
            let mut roles = roles.clone();
            if !roles.contains(&Role::Registrar) {
                roles.insert(0, Role::Registrar);
            }
            let body = GenesisBody {
                version: 1,
                name: federation_name.clone(),
                time_unix_ms: options.now_unix_ms,
                registrar: Enrol {
                    org: options.org.clone(),
                    keys: vec![public_key],
                    name: org_name.clone(),
                    roles,
                },
                utc_offset_minutes: *utc_offset_minutes,
            };
            Genesis::create(&key, body)?
        }
        FederationChoice::Join { genesis_file } => {
            let bytes = fs::read(genesis_file).map_err(io(genesis_file))?;
            Genesis::decode(&bytes)?
        }
    };
    keys::write(&key_file, &key)?;
    write_new(&genesis_file, genesis.bytes())?;

    let token = config::new_token().map_err(|e| InitError::Random(e.to_string()))?;
    let config = Config {
        org: options.org.to_string(),
        data_dir: PathBuf::from("data"),
        listen: options.listen,
        key_file: PathBuf::from("org.key"),
        genesis_file: PathBuf::from("genesis.cbor"),
        operators: vec![Operator {
            name: options.operator.clone(),
            token_hash: data_encoding::HEXLOWER.encode(&config::token_hash(&token)),
        }],
        peers: Vec::new(),
        limits: Limits::default(),
        replication_interval_ms: 2000,
        replication_max_backoff_ms: 30_000,
        anchor_interval_seconds: 60,
        audit: config::AuditSettings::default(),
    };
    let text = toml::to_string_pretty(&config).map_err(|e| InitError::Config(e.to_string()))?;
    let header = "# rmledger node configuration. Operator tokens are stored only as hashes.\n";
    write_new(&config_file, format!("{header}{text}").as_bytes())?;
    fs::create_dir_all(dir.join("data")).map_err(io(dir))?;

    Ok(InitReport {
        config_file,
        key_file,
        genesis_file,
        federation_id: genesis.id().to_hex(),
        org: options.org.to_string(),
        public_key,
        key_id: KeyId::of(&public_key.0),
        operator: options.operator.clone(),
        operator_token: token,
    })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, federation: FederationChoice, org: &str) -> InitOptions {
        InitOptions {
            dir: dir.to_path_buf(),
            org: OrgId::new(org).unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            operator: "admin".into(),
            federation,
            now_unix_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn found_then_join() {
        let root = tempfile::tempdir().unwrap();
        let registrar_dir = root.path().join("jxim");
        let found = FederationChoice::Found {
            federation_name: "Test federation".into(),
            org_name: "Test Institute".into(),
            roles: vec![Role::Institute],
            utc_offset_minutes: 480,
        };
        let report = init(&options(&registrar_dir, found.clone(), "jxim")).unwrap();
        let config = Config::load(&report.config_file).unwrap();
        assert_eq!(
            config
                .operator_for_token(&report.operator_token)
                .unwrap()
                .name,
            "admin"
        );
        assert_eq!(
            keys::read(&config.key_file)
                .unwrap()
                .verifying_key()
                .to_bytes(),
            report.public_key.0
        );
        let genesis = Genesis::decode(&fs::read(&config.genesis_file).unwrap()).unwrap();
        assert_eq!(genesis.id().to_hex(), report.federation_id);
        assert_eq!(
            genesis.body().registrar.roles,
            vec![Role::Registrar, Role::Institute]
        );
        assert!(matches!(
            init(&options(&registrar_dir, found, "jxim")),
            Err(InitError::Exists(_))
        ));

        let lab_dir = root.path().join("nclab");
        let join = FederationChoice::Join {
            genesis_file: config.genesis_file.clone(),
        };
        let lab = init(&options(&lab_dir, join, "nclab")).unwrap();
        assert_eq!(lab.federation_id, report.federation_id);
        assert_ne!(lab.public_key, report.public_key);

        let bad = root.path().join("bad.cbor");
        fs::write(&bad, b"garbage").unwrap();
        let err = init(&options(
            &root.path().join("x"),
            FederationChoice::Join { genesis_file: bad },
            "x1",
        ))
        .unwrap_err();
        assert!(matches!(err, InitError::Genesis(_)), "{err}");
    }
}
