//! What a user may name a certificate by — a full id, a unique id prefix of at least 8 hex
//! digits, or `CODE@BATCH` — and where `verify` may take a bundle from: a file, a node URL that
//! names the certificate (`…/v1/certificates/ID/bundle`, `…/v1/certificates/ID`, a QR label's
//! `…/c/ID[/u/SERIAL]`), or a certificate on the configured node.

use std::path::PathBuf;
use std::str::FromStr;

use rmledger_schema::ids::CertificateId;

use crate::client::Client;
use crate::error::Error;

/// The shortest id prefix accepted.
pub const MIN_PREFIX: usize = 8;

/// A certificate as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRef {
    Id(CertificateId),
    /// Lowercase hex, at least [`MIN_PREFIX`] digits.
    Prefix(String),
    CodeBatch {
        code: String,
        batch: String,
    },
}

impl FromStr for CertRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some((code, batch)) = text.rsplit_once('@') {
            if code.is_empty() || batch.is_empty() {
                return Err(format!(
                    "{text:?}: write CODE@BATCH, e.g. GBW(E)082345@2025a"
                ));
            }
            let code = rmledger_schema::rmcode::RmCode::parse(code)
                .map_err(|e| format!("{text:?}: {e}"))?;
            return Ok(CertRef::CodeBatch {
                code: code.as_str().to_string(),
                batch: batch.to_string(),
            });
        }
        let hex = text.to_ascii_lowercase();
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if hex.len() == 64 {
                return CertificateId::from_hex(&hex)
                    .map(CertRef::Id)
                    .map_err(|e| e.to_string());
            }
            if (MIN_PREFIX..64).contains(&hex.len()) {
                return Ok(CertRef::Prefix(hex));
            }
        }
        Err(format!(
            "{text:?} is not a certificate: give its 64-hex id, a unique prefix of at least {MIN_PREFIX} hex digits, or CODE@BATCH (e.g. GBW(E)082345@2025a)"
        ))
    }
}

impl CertRef {
    /// The certificate id, asking the node when the reference is not a full id.
    pub async fn resolve(&self, client: &Client) -> Result<CertificateId, Error> {
        let (matches, what) = match self {
            CertRef::Id(id) => return Ok(*id),
            CertRef::Prefix(prefix) => {
                let all = client.certificates(None, None).await?;
                let matches: Vec<CertificateId> = all
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|id| id.to_hex().starts_with(prefix.as_str()))
                    .collect();
                (matches, format!("id prefix {prefix}"))
            }
            CertRef::CodeBatch { code, batch } => {
                let found = client.certificates(Some(code), Some(batch)).await?;
                let matches = found
                    .into_iter()
                    .filter(|c| c.code == *code && c.batch == *batch)
                    .map(|c| c.id)
                    .collect();
                (matches, format!("{code}@{batch}"))
            }
        };
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::Resolve(format!(
                "no certificate matches {what} on {}",
                client.base()
            ))),
            many => Err(Error::Resolve(format!(
                "{what} is ambiguous on {}: {}",
                client.base(),
                many.iter()
                    .map(CertificateId::to_hex)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Where `verify` takes its bundle from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    File(PathBuf),
    /// A node and a certificate on it, from a URL.
    Url {
        node: String,
        id: CertificateId,
    },
    /// A certificate on the configured node.
    Node(CertRef),
}

impl BundleSource {
    /// Reads the argument: a URL, an existing file, or a certificate reference.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return parse_url(text);
        }
        let path = PathBuf::from(text);
        if path.is_file() {
            return Ok(BundleSource::File(path));
        }
        text.parse::<CertRef>()
            .map(BundleSource::Node)
            .map_err(|e| format!("{e}; nor is it a bundle file or a URL"))
    }
}

fn parse_url(text: &str) -> Result<BundleSource, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    let found = segments
        .windows(2)
        .enumerate()
        .find_map(|(i, pair)| match pair {
            ["certificates", id] if i >= 1 && segments[i - 1] == "v1" => Some((i - 1, *id)),
            ["c", id] => Some((i, *id)),
            _ => None,
        });
    let Some((prefix_len, id)) = found else {
        return Err(format!(
            "{text:?} names no certificate: give …/v1/certificates/ID/bundle, …/c/ID or a node URL with --node and the id"
        ));
    };
    let id = CertificateId::from_hex(id).map_err(|e| format!("{text:?}: certificate id {e}"))?;
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(&segments[..prefix_len].join("/"));
    Ok(BundleSource::Url {
        node: base.as_str().trim_end_matches('/').to_string(),
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5f0c6a1e9b2d4c3a8e7f6b5a4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";

    #[test]
    fn certificate_references() {
        assert!(matches!(ID.parse::<CertRef>(), Ok(CertRef::Id(_))));
        assert_eq!(
            "5F0C6A1E".parse::<CertRef>(),
            Ok(CertRef::Prefix("5f0c6a1e".into()))
        );
        assert_eq!(
            "GBW(E)082345@2025a".parse::<CertRef>(),
            Ok(CertRef::CodeBatch {
                code: "GBW(E)082345".into(),
                batch: "2025a".into()
            })
        );
        for bad in ["5f0c6a1", "xyz", "@2025a", "GBW(E)082345@", ""] {
            assert!(bad.parse::<CertRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_sources_from_urls() {
        let id = CertificateId::from_hex(ID).unwrap();
        for (url, node) in [
            (
                format!("http://127.0.0.1:7300/v1/certificates/{ID}/bundle"),
                "http://127.0.0.1:7300",
            ),
            (
                format!("http://127.0.0.1:7300/v1/certificates/{ID}"),
                "http://127.0.0.1:7300",
            ),
            (
                format!("https://rm.example/ledger/c/{ID}/u/S-0001"),
                "https://rm.example/ledger",
            ),
        ] {
            assert_eq!(
                BundleSource::parse(&url),
                Ok(BundleSource::Url {
                    node: node.into(),
                    id
                }),
                "{url}"
            );
        }
        assert!(BundleSource::parse("http://127.0.0.1:7300/").is_err());
        assert!(matches!(
            BundleSource::parse("GBW(E)082345@2025a"),
            Ok(BundleSource::Node(_))
        ));
    }
}
