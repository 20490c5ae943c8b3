//! Stage one of loading a route file: the TOML text as serde structs.
//!
//! These types mirror the file one-to-one. They reject unknown keys and wrong
//! types (with the position toml reports) and keep the position of every value
//! that stage two ([`super::validate`]) may need to point at. Nothing here
//! checks meaning: that is [`super::validate`]'s job.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole route file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub upstream: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

/// `[server]`: process-wide settings, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub admin: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub shutdown_delay: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub client_header_timeout: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: Spanned<String>,
    pub tls: Option<Spanned<RawTls>>,
}

/// `tls = { cert = "…", key = "…" }` on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// One `[upstream.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Spanned<Vec<Spanned<String>>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
}

/// One `[[route]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub root: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub allow_origins: Option<Spanned<Vec<Spanned<String>>>>,
}
