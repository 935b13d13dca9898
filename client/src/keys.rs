//! Signing keys on disk: PKCS#8 PEM, mode 0600, never overwritten — the same format as the
//! node's `org.key`, so a key made here can be a node's key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

/// Why a key could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} exists; refusing to overwrite a key")]
    Exists { path: String },
    #[error("key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    #[error("key file {path} is not a PKCS#8 Ed25519 private key")]
    Format { path: String },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// A new key from the operating system's random number generator.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to a new file with mode 0600.
pub fn write(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let name = path.display().to_string();
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::Format { path: name.clone() })?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists { path: name.clone() }
            } else {
                KeyError::Io {
                    path: name.clone(),
                    source,
                }
            }
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Io { path: name, source })
}

/// Reads a key file, refusing one that group or others can read.
pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
    let name = path.display().to_string();
    let io = |source| KeyError::Io {
        path: name.clone(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: name, mode });
    }
    let pem = fs::read_to_string(path).map_err(io)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Format { path: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_reads_back_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = generate().unwrap();
        write(&path, &key).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(write(&path, &key), Err(KeyError::Exists { .. })));
    }
}
