//! `[server]`: process-wide settings, every key optional.

use super::Checker;
use crate::config::doc::Table;
use crate::config::{AccessLog, LogFormat, ServerSettings};
use std::net::SocketAddr;
use std::ops::Range;

/// `[server]` with the position of `admin`, for the listener overlap check.
pub(super) struct CheckedServer {
    pub settings: ServerSettings,
    pub admin: Option<(SocketAddr, Range<usize>)>,
}

impl Checker<'_> {
    pub(super) fn server(&self, table: Option<&Table>) -> CheckedServer {
        let base = ServerSettings::default();
        let Some(table) = table else {
            return CheckedServer {
                settings: base,
                admin: None,
            };
        };
        let admin = table
            .string("admin", "an address such as \"127.0.0.1:9901\"")
            .and_then(|admin| match admin.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some((addr, admin.span())),
                Err(_) => {
                    self.error_at(
                        &admin,
                        format!(
                            "admin address {:?} is not IP:port (for example \"127.0.0.1:9901\")",
                            admin.get_ref()
                        ),
                    );
                    None
                }
            });
        let log_format = match table.string("log_format", "\"text\" or \"json\"") {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.error_at(
                        &f,
                        format!("log_format {other:?} is not \"text\" or \"json\""),
                    );
                    LogFormat::Text
                }
            },
        };
        let workers = match table.integer("workers", "a whole number of worker threads") {
            None => base.workers,
            Some(n) if (1..=1024).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.error_at(&n, "workers must be between 1 and 1024");
                base.workers
            }
        };
        let max_connections = self.count(table, "max_connections", "open client connections");
        let access_log = match table
            .string("access_log", "\"stderr\", \"off\" or the path of a file")
        {
            None => AccessLog::Stderr,
            Some(value) => match value.get_ref().as_str() {
                "stderr" => AccessLog::Stderr,
                "off" => AccessLog::Off,
                "" => {
                    self.error_at(
                        &value,
                        "access_log is empty: write \"stderr\", \"off\" or a file path",
                    );
                    AccessLog::Stderr
                }
                path => {
                    let path = self.path(path);
                    match path.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                            self.error_at(
                                &value,
                                format!("access_log: folder {} does not exist", dir.display()),
                            );
                        }
                        _ if path.is_dir() => {
                            self.error_at(
                                &value,
                                format!("access_log: {} is a folder, not a file", path.display()),
                            );
                        }
                        _ => {}
                    }
                    AccessLog::File(path)
                }
            },
        };
        let watch = table.boolean("watch").map_or(base.watch, |w| *w.get_ref());
        let settings = ServerSettings {
            admin: admin.as_ref().map(|(addr, _)| *addr),
            shutdown_timeout: self.duration(table, "shutdown_timeout", base.shutdown_timeout),
            shutdown_delay: self.duration(table, "shutdown_delay", base.shutdown_delay),
            log_format,
            client_header_timeout: self.positive_duration(
                table,
                "client_header_timeout",
                base.client_header_timeout,
            ),
            workers,
            max_connections,
            access_log,
            client_body_timeout: self.positive_duration(
                table,
                "client_body_timeout",
                base.client_body_timeout,
            ),
            send_timeout: self.positive_duration(table, "send_timeout", base.send_timeout),
            watch,
        };
        CheckedServer { settings, admin }
    }
}
