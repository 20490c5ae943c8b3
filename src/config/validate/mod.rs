//! Stage two of loading a route file: meaning.
//!
//! Reads the document through [`super::doc`] (which reports wrong types and
//! unknown keys) and checks everything that types alone cannot: addresses
//! parse, durations carry units, files exist, certificates load, routes
//! name upstreams that exist, no upstream is left unreachable, no two
//! listeners share an address. Every problem is recorded with its position
//! and checking goes on, so an operator sees all of them at once. One file
//! per part of the route file: [`server`], [`listener`], [`upstream`],
//! [`route`].

mod listener;
mod route;
mod server;
mod tls;
mod upstream;

use super::doc::{self, Problems, Table};
use super::units::parse_duration;
use super::{Config, ConfigError, ConfigErrors, Position};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Parse and check `text`, the content of the route file at `path`.
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let problems = Problems::default();
    let checker = Checker {
        file: path.to_path_buf(),
        base: path.parent().unwrap_or(Path::new("")).to_path_buf(),
        text,
        problems: &problems,
    };
    let document = match doc::parse(text) {
        Ok(document) => document,
        Err((span, message)) => {
            match span {
                Some(span) => problems.add(span, message),
                None => problems.add_unplaced(message),
            }
            return Err(checker.finish());
        }
    };
    let config = {
        let root = Table::root(&document, &problems);
        let server = checker.server(root.table("server").as_ref());
        let listeners = checker.listeners(&root.tables("listener"), server.admin.as_ref());
        let upstream_tables = root.table("upstream");
        let upstreams = checker.upstreams(upstream_tables.as_ref());
        let routes = checker.routes(&root.tables("route"), &upstreams);
        let admin_at = server
            .admin
            .as_ref()
            .map(|(_, span)| checker.position(span.start));
        Config {
            admin_at,
            path: path.to_path_buf(),
            server: server.settings,
            listeners,
            upstreams: upstreams
                .into_iter()
                .map(|(name, (config, _))| (name, Arc::new(config)))
                .collect(),
            routes: routes.into_iter().map(Arc::new).collect(),
        }
        // Every table is dropped here, reporting the keys nobody read.
    };
    let errors = checker.finish();
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// What every part of the check shares: where problems go and how
/// positions and relative paths are worked out.
struct Checker<'t> {
    file: PathBuf,
    /// The route file's folder: relative paths start here.
    base: PathBuf,
    text: &'t str,
    problems: &'t Problems,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) {
        self.problems.add(span, message);
    }

    fn error_at<T>(&self, value: &Spanned<T>, message: impl Into<String>) {
        self.error(value.span(), message);
    }

    /// A problem of the whole file, without a position.
    fn error_unplaced(&self, message: impl Into<String>) {
        self.problems.add_unplaced(message);
    }

    fn position(&self, offset: usize) -> Position {
        Position::of_offset(self.text, offset)
    }

    /// `LINE:COL` of a span, for messages that point at a second place.
    fn describe(&self, span: &Range<usize>) -> String {
        let Position { line, column } = self.position(span.start);
        format!("{line}:{column}")
    }

    fn finish(&self) -> ConfigErrors {
        let mut errors: Vec<(usize, ConfigError)> = self
            .problems
            .take()
            .into_iter()
            .map(|(span, message)| {
                (
                    span.as_ref().map_or(usize::MAX, |s| s.start),
                    ConfigError {
                        file: self.file.clone(),
                        position: span.map(|s| self.position(s.start)),
                        message,
                    },
                )
            })
            .collect();
        // File order; errors without a position go last.
        errors.sort_by_key(|(offset, _)| *offset);
        ConfigErrors(errors.into_iter().map(|(_, e)| e).collect())
    }

    /// The duration at `key`, or `default` when absent or wrong.
    fn duration(&self, table: &Table, key: &str, default: Duration) -> Duration {
        self.duration_spanned(table, key)
            .map_or(default, |d| d.into_inner())
    }

    /// The duration at `key` with its span, if present and valid.
    fn duration_spanned(&self, table: &Table, key: &str) -> Option<Spanned<Duration>> {
        let value = table.string(key, "a duration such as \"30s\"")?;
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(Spanned::new(value.span(), d)),
            Err(message) => {
                self.error_at(&value, message);
                None
            }
        }
    }

    /// A duration that must be longer than zero.
    fn positive_duration(&self, table: &Table, key: &str, default: Duration) -> Duration {
        match self.duration_spanned(table, key) {
            Some(d) if d.get_ref().is_zero() => {
                self.error_at(&d, "must be longer than zero");
                default
            }
            Some(d) => d.into_inner(),
            None => default,
        }
    }

    /// A count that may be zero (`0` = no cap), up to a million.
    fn count(&self, table: &Table, key: &str, what: &str) -> usize {
        match table.integer(key, &format!("a whole number of {what} (0 = no cap)")) {
            None => 0,
            Some(n) if (0..=1_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.error_at(&n, format!("{key} must be between 0 (no cap) and 1000000"));
                0
            }
        }
    }

    /// The size at `key` (`"64KiB"`) with its span, if present and valid.
    fn size_spanned(&self, table: &Table, key: &str) -> Option<Spanned<u64>> {
        let value = table.string(key, "a size such as \"1MiB\"")?;
        match super::units::parse_size(value.get_ref()) {
            Ok(n) => Some(Spanned::new(value.span(), n)),
            Err(message) => {
                self.error_at(&value, message);
                None
            }
        }
    }

    /// A path written in the file, relative to the file's folder.
    fn path(&self, value: &str) -> PathBuf {
        self.base.join(value)
    }
}
