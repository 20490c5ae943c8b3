//! A route's `host` key: an exact host name or a `*.` wildcard, checked
//! when the route file is read and ranked by the router.

use std::fmt;

/// A route's `host`: `chat.example.com` or `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host only (stored lower-case).
    Exact(String),
    /// `*.example.com`: matches any host ending in `.example.com` (stored
    /// lower-case with its leading dot), but not `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// Parse a route's `host` value.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (pattern, name) = match lower.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest),
            None => (HostPattern::Exact(lower.clone()), lower.as_str()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.contains(':') {
            return Err(format!("host {text:?} must not carry a port"));
        }
        if !name.split('.').all(valid_label) {
            return Err(format!(
                "host {text:?} is not a host name such as \"chat.example.com\" or \"*.example.com\""
            ));
        }
        Ok(pattern)
    }

    /// How specific a match is, or `None` when `host` does not match.
    pub(crate) fn rank(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name).then_some((2, name.len())),
            HostPattern::Suffix(suffix) => {
                let fits = host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
                fits.then_some((1, suffix.len()))
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_parse() {
        assert_eq!(
            HostPattern::parse("Chat.Example.com"),
            Ok(HostPattern::Exact("chat.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.example.com"),
            Ok(HostPattern::Suffix(".example.com".into()))
        );
        assert!(HostPattern::parse("example.com:80").is_err());
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("a..b").is_err());
        assert!(HostPattern::parse("a.*.b").is_err());
    }
}
