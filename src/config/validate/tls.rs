//! A listener's `tls`: one table or a list of them, each a `{ cert, key }`
//! pair of files (loaded and checked here) or an `{ acme = { … } }` entry;
//! names claimed by two certificates of one listener.

use super::Checker;
use crate::certs::acme::{self, ChallengeKind};
use crate::certs::material::Material;
use crate::certs::{FilePair, Source, sni};
use crate::config::TlsConfig;
use crate::config::doc::Table;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// A listener's `tls`, checked, with the spans of HTTP-01 entries (they
/// need a plain listener, which only the whole file can tell).
pub(super) struct CheckedTls {
    pub config: Option<TlsConfig>,
    pub http01: Vec<Range<usize>>,
}

impl Checker<'_> {
    pub(super) fn tls(&self, value: &Spanned<Vec<Table>>) -> CheckedTls {
        let mut checked = CheckedTls {
            config: None,
            http01: Vec::new(),
        };
        if value.get_ref().is_empty() {
            self.error(
                value.span(),
                "tls = [] lists no certificate: give { cert, key } or { acme = { … } }",
            );
            return checked;
        }
        let mut sources = Vec::new();
        let mut spans = Vec::new();
        let mut complete = true;
        for table in value.get_ref() {
            match self.tls_entry(table, &mut checked.http01) {
                Some(source) => {
                    sources.push(source);
                    spans.push(table.span());
                }
                None => complete = false,
            }
        }
        let names: Vec<Vec<String>> = sources.iter().map(Source::names).collect();
        for (name, first, second) in sni::overlaps(&names) {
            self.error(
                spans[second].clone(),
                format!(
                    "{name} is also named by the certificate at {}: each name of a \
                     listener may come from one certificate only",
                    self.describe(&spans[first])
                ),
            );
            complete = false;
        }
        if complete {
            checked.config = Some(TlsConfig { sources });
        }
        checked
    }

    fn tls_entry(&self, table: &Table, http01: &mut Vec<Range<usize>>) -> Option<Source> {
        let cert = table.string("cert", "the path of a PEM certificate chain");
        let key = table.string("key", "the path of a PEM private key");
        let acme = table.table("acme");
        let files = table.has("cert") || table.has("key");
        match acme {
            Some(acme) if files => {
                // Read through, so its own mistakes are reported too.
                let _ = self.acme(&acme, &mut Vec::new());
                self.error(
                    table.span(),
                    "a tls entry has either `cert` and `key` or `acme`, not both \
                     (list them as two entries: tls = [{ cert, key }, { acme = { … } }])",
                );
                None
            }
            Some(acme) => {
                let settings = self.acme(&acme, http01)?;
                Some(Source::Acme(Arc::new(settings)))
            }
            None if table.has("acme") => None,
            None => self.file_pair(table, cert, key).map(Source::Files),
        }
    }

    fn file_pair(
        &self,
        table: &Table,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
    ) -> Option<FilePair> {
        let mut found = true;
        for (value, what, name) in [(&cert, "certificate", "cert"), (&key, "key", "key")] {
            match value {
                Some(value) => {
                    let path = self.path(value.get_ref());
                    if !path.is_file() {
                        self.error_at(value, format!("{what} file {} not found", path.display()));
                        found = false;
                    }
                }
                None => {
                    if !table.has(name) {
                        self.error(
                            table.span(),
                            format!("tls needs `{name} = \"FILE\"` (or `acme = {{ … }}`)"),
                        );
                    }
                    found = false;
                }
            }
        }
        let (Some(cert), Some(key)) = (cert, key) else {
            return None;
        };
        if !found {
            return None;
        }
        let (cert, key) = (self.path(cert.get_ref()), self.path(key.get_ref()));
        match Material::load(&cert, &key) {
            Ok(material) => Some(FilePair {
                cert,
                key,
                material: Arc::new(material),
            }),
            Err(e) => {
                self.error(table.span(), e.to_string());
                None
            }
        }
    }

    fn acme(&self, table: &Table, http01: &mut Vec<Range<usize>>) -> Option<acme::Settings> {
        let domains = table.strings("domains", "domain names");
        let email = table.string("email", "an e-mail address");
        let directory = table.string("directory", "the URL of an ACME directory");
        let directory_ca = table.string("directory_ca", "the path of a PEM file of roots");
        let cache = table.string("cache", "the path of a folder");
        let challenge = table.string("challenge", "\"tls-alpn-01\" or \"http-01\"");
        let renew_before = self.duration_spanned(table, "renew_before");
        let mut ok = true;

        let mut names: Vec<String> = Vec::new();
        match &domains {
            None => {
                if !table.has("domains") {
                    self.error(
                        table.span(),
                        "acme needs `domains = [\"chat.example.com\"]`",
                    );
                }
                ok = false;
            }
            Some(list) if list.get_ref().is_empty() => {
                self.error_at(list, "domains is empty: name at least one domain");
                ok = false;
            }
            Some(list) => {
                for domain in list.get_ref() {
                    let name = domain.get_ref().to_ascii_lowercase();
                    if let Err(message) = check_domain(&name) {
                        self.error_at(domain, message);
                        ok = false;
                    } else if names.contains(&name) {
                        self.error_at(domain, format!("{name} is listed twice"));
                        ok = false;
                    } else {
                        names.push(name);
                    }
                }
            }
        }
        if let Some(email) = &email
            && !email.get_ref().contains('@')
        {
            self.error_at(
                email,
                format!("{:?} is not an e-mail address", email.get_ref()),
            );
            ok = false;
        }
        let directory_url = match &directory {
            None => acme::LETS_ENCRYPT.to_string(),
            Some(url) => {
                let text = url.get_ref();
                let parsed = text.parse::<http::Uri>();
                let https = parsed
                    .as_ref()
                    .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
                if !https {
                    self.error_at(
                        url,
                        format!(
                            "directory {text:?} is not an https:// URL (RFC 8555 requires \
                             HTTPS), e.g. \"{}\"",
                            acme::LETS_ENCRYPT
                        ),
                    );
                    ok = false;
                }
                text.clone()
            }
        };
        let directory_ca = directory_ca.and_then(|ca| {
            let path = self.path(ca.get_ref());
            match read_roots(&path) {
                Ok(()) => Some(path),
                Err(message) => {
                    self.error_at(&ca, message);
                    ok = false;
                    None
                }
            }
        });
        let cache = match cache {
            None => {
                if !table.has("cache") {
                    self.error(
                        table.span(),
                        "acme needs `cache = \"FOLDER\"`, where the account and \
                         certificates are kept (e.g. \"/var/lib/switchyard/acme\")",
                    );
                }
                ok = false;
                None
            }
            Some(folder) => {
                let path = self.path(folder.get_ref());
                if let Err(message) = writable_folder(&path) {
                    self.error_at(&folder, message);
                    ok = false;
                }
                Some(path)
            }
        };
        let challenge = match &challenge {
            None => ChallengeKind::default(),
            Some(kind) => match kind.get_ref().as_str() {
                "tls-alpn-01" => ChallengeKind::TlsAlpn01,
                "http-01" => {
                    http01.push(kind.span());
                    ChallengeKind::Http01
                }
                other => {
                    self.error_at(
                        kind,
                        format!(
                            "challenge {other:?} is not \"tls-alpn-01\" or \"http-01\" \
                             (DNS-01 is not supported)"
                        ),
                    );
                    ok = false;
                    ChallengeKind::default()
                }
            },
        };
        let renew_before = match renew_before {
            Some(d) if d.get_ref().is_zero() => {
                self.error_at(&d, "must be longer than zero");
                ok = false;
                None
            }
            other => other.map(Spanned::into_inner),
        };
        let cache = cache?;
        ok.then(|| acme::Settings {
            domains: names,
            email: email.map(Spanned::into_inner),
            directory: directory_url,
            directory_ca,
            cache,
            challenge,
            renew_before,
        })
    }
}

/// Whether `name` (lower-case) can be ordered by HTTP-01 or TLS-ALPN-01.
fn check_domain(name: &str) -> Result<(), String> {
    if name.starts_with("*.") {
        return Err(format!(
            "{name}: a wildcard certificate needs the DNS-01 challenge, which Switchyard \
             does not answer; list each name, or use a wildcard certificate from files"
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name}: an IP address; ACME here orders certificates for domain names"
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a domain name"));
    }
    Ok(())
}

/// Whether `path` holds at least one PEM certificate.
fn read_roots(path: &Path) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if !path.is_file() {
        return Err(format!("directory_ca file {} not found", path.display()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read directory_ca {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no certificate found in directory_ca {} (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(())
}

/// Whether Switchyard could keep files in `path`: an existing folder it may
/// write to, or one it may create.
fn writable_folder(path: &Path) -> Result<(), String> {
    let mut existing = path;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(format!("cache {} is not a folder", existing.display()));
    }
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(existing.as_os_str().as_bytes()) else {
        return Err(format!("cache {} is not a usable path", path.display()));
    };
    // SAFETY: access(2) only reads the NUL-terminated path.
    let writable = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    if writable {
        Ok(())
    } else if existing == path {
        Err(format!(
            "cache folder {} is not writable by this user",
            path.display()
        ))
    } else {
        Err(format!(
            "cache folder {} cannot be created: {} is not writable by this user",
            path.display(),
            existing.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(check_domain("chat.example.com").is_ok());
        assert!(check_domain("localhost").is_ok());
        assert!(
            check_domain("*.example.com")
                .unwrap_err()
                .contains("DNS-01")
        );
        assert!(check_domain("127.0.0.1").is_err());
        assert!(check_domain("-bad.example").is_err());
        assert!(check_domain("a..b").is_err());
        assert!(check_domain("under_score.example").is_err());
    }

    #[test]
    fn cache_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable_folder(dir.path()).is_ok());
        assert!(writable_folder(&dir.path().join("new/deeper")).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(
            writable_folder(&file.join("sub"))
                .unwrap_err()
                .contains("is not a folder")
        );
    }
}
