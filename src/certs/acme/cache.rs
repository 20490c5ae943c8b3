//! What ACME leaves on disk under `cache`, so a restart reuses it: one
//! folder per ACME directory, holding the account (`account.json`) and each
//! certificate (`NAME.crt`, `NAME.key`, named for its first domain). Files
//! are written with mode 0600 (folders 0700) to a temporary name, then
//! renamed into place, so a crash never leaves half a file.

use super::Settings;
use crate::certs::material::Material;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The folder for the settings' ACME directory.
pub fn folder(settings: &Settings) -> PathBuf {
    let url = settings
        .directory
        .split_once("://")
        .map_or(settings.directory.as_str(), |(_, rest)| rest);
    let slug: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    settings.cache.join(slug.trim_matches('_'))
}

pub fn account_path(settings: &Settings) -> PathBuf {
    folder(settings).join("account.json")
}

fn cert_paths(settings: &Settings) -> (PathBuf, PathBuf) {
    let name = settings
        .domains
        .first()
        .map_or("certificate", String::as_str)
        .replace('*', "_wildcard");
    let folder = folder(settings);
    (
        folder.join(format!("{name}.crt")),
        folder.join(format!("{name}.key")),
    )
}

/// The cached certificate, if there is one for every configured domain.
pub fn load_certificate(settings: &Settings) -> Option<Material> {
    let (cert, key) = cert_paths(settings);
    if !cert.exists() {
        return None;
    }
    match Material::load(&cert, &key) {
        Ok(material) if material.covers(&settings.domains) => Some(material),
        Ok(_) => {
            tracing::info!(
                "cached certificate {} does not name every domain of {}; a new one will be ordered",
                cert.display(),
                settings.domains.join(", ")
            );
            None
        }
        Err(e) => {
            tracing::warn!("cached certificate unusable ({e}); a new one will be ordered");
            None
        }
    }
}

/// Keep `chain` and `key` (PEM) as the certificate of `settings`.
pub fn save_certificate(settings: &Settings, chain: &str, key: &str) -> std::io::Result<()> {
    let (cert_path, key_path) = cert_paths(settings);
    write_private(&key_path, key.as_bytes())?;
    write_private(&cert_path, chain.as_bytes())
}

/// Write `bytes` at `path` with mode 0600, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_folders_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            domains: vec!["chat.example.com".into()],
            directory: "https://127.0.0.1:14000/dir".into(),
            cache: dir.path().join("acme"),
            ..Settings::for_tests()
        };
        assert_eq!(
            folder(&settings),
            dir.path().join("acme").join("127.0.0.1_14000_dir")
        );
        write_private(&account_path(&settings), b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&account_path(&settings)), 0o600);
        assert_eq!(mode(&folder(&settings)), 0o700);
        save_certificate(&settings, "chain", "key").unwrap();
        let (cert, key) = cert_paths(&settings);
        assert_eq!(mode(&cert), 0o600);
        assert_eq!(mode(&key), 0o600);
        assert!(cert.ends_with("chat.example.com.crt"));
        // Unreadable material is no cached certificate.
        assert!(load_certificate(&settings).is_none());
    }
}
