//! The CLI's settings: `--node`/`--token` flags, `RMLEDGER_NODE`/`RMLEDGER_TOKEN`, and the
//! config file `$XDG_CONFIG_HOME/rmledger/config.toml` (or `~/.config/rmledger/config.toml`),
//! written with mode 0600 because it may hold a token. The trust anchor pinned by
//! `federation trust` lives there too: the federation id and a copy of the genesis beside it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rmledger_schema::federation::Genesis;
use rmledger_schema::ids::FederationId;
use serde::{Deserialize, Serialize};

/// The config file's name inside the config directory.
pub const FILE_NAME: &str = "config.toml";
/// The pinned genesis copy's name inside the config directory.
pub const GENESIS_NAME: &str = "genesis.cbor";

/// Why the configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config directory: set XDG_CONFIG_HOME or HOME")]
    NoDirectory,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The node to talk to, e.g. `http://127.0.0.1:7300`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The operator token for writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The pinned federation (the trust anchor of `verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_id: Option<FederationId>,
    /// Its name, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_name: Option<String>,
    /// The copy of the pinned genesis, relative to the config directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_file: Option<PathBuf>,
}

/// The config directory: `$XDG_CONFIG_HOME/rmledger`, else `$HOME/.config/rmledger`.
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("XDG_CONFIG_HOME") {
        return Ok(dir.join("rmledger"));
    }
    absolute("HOME")
        .map(|home| home.join(".config").join("rmledger"))
        .ok_or(ConfigError::NoDirectory)
}

/// The config file and its directory.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub file: ConfigFile,
}

impl Settings {
    /// Loads the config file from `dir` (the default directory when `None`); a missing file is
    /// an empty configuration.
    pub fn load(dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        let dir = match dir {
            Some(dir) => dir,
            None => config_dir()?,
        };
        let path = dir.join(FILE_NAME);
        let file = match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self { dir, file })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Writes the config file (mode 0600, directory 0700) by temp file and rename.
    pub fn save(&self) -> Result<(), ConfigError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700));
        let text = toml::to_string_pretty(&self.file).map_err(|e| ConfigError::Parse {
            path: self.path().display().to_string(),
            message: e.to_string(),
        })?;
        let header = "# rmledger CLI configuration (mode 0600: it may hold an operator token).\n";
        write_private(&self.path(), format!("{header}{text}").as_bytes())
    }

    /// Pins the federation: records its id and name and keeps a copy of its genesis.
    pub fn pin(&mut self, genesis: &Genesis) -> Result<(), ConfigError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        write_private(&self.dir.join(GENESIS_NAME), genesis.bytes())?;
        self.file.federation_id = Some(genesis.id());
        self.file.federation_name = Some(genesis.body().name.clone());
        self.file.genesis_file = Some(PathBuf::from(GENESIS_NAME));
        self.save()
    }

    /// The pinned genesis copy, checked against the pinned id.
    pub fn pinned_genesis(&self) -> Result<Option<Genesis>, ConfigError> {
        let (Some(id), Some(file)) = (&self.file.federation_id, &self.file.genesis_file) else {
            return Ok(None);
        };
        let path = self.dir.join(file);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let genesis = Genesis::decode(&bytes).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if genesis.id() != *id {
            return Err(ConfigError::Parse {
                path: path.display().to_string(),
                message: format!(
                    "this genesis is federation {}, but {} pins {id}",
                    genesis.id(),
                    self.path().display()
                ),
            });
        }
        Ok(Some(genesis))
    }
}

/// Writes a file readable only by its owner, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_with_mode_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load(Some(dir.path().join("rmledger"))).unwrap();
        assert_eq!(settings.file, ConfigFile::default());
        settings.file.node = Some("http://127.0.0.1:7300".into());
        settings.file.token = Some("secret".into());
        settings.save().unwrap();
        let mode = fs::metadata(settings.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Settings::load(Some(dir.path().join("rmledger"))).unwrap();
        assert_eq!(again.file, settings.file);
        assert!(again.pinned_genesis().unwrap().is_none());
    }
}
