//! `redirect` routes: the target template and its placeholders. Pure: no
//! I/O.
//!
//! A template is text with placeholders, checked when the route file is
//! read: `{host}` (the request's host without its port), `{path}` (the
//! whole request path, as sent), `{query}` (the query without `?`) and
//! `{uri}` (the path, plus `?query` when there is one). `{{` and `}}` write
//! a literal brace. `https://{host}{uri}` is the http→https redirect.

use std::fmt;

/// A checked redirect target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// The text as written, for messages and reload reports.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Host,
    Path,
    Query,
    Uri,
}

/// What a request contributes to a redirect.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The host without its port; `None` when the request named none.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Why a redirect cannot be made for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The template needs `{host}` and the request has none.
    NoHost,
    /// The request's host is not a host name or address.
    BadHost,
}

impl Template {
    /// Parse a route's `redirect` value.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "redirect {text:?}: '{{' without its '}}' (write {{{{ for a literal brace)"
                        ));
                    };
                    let part = match &rest[..end] {
                        "host" => Part::Host,
                        "path" => Part::Path,
                        "query" => Part::Query,
                        "uri" => Part::Uri,
                        other => {
                            return Err(format!(
                                "redirect {text:?}: unknown placeholder {{{other}}}; \
                                 known: {{host}}, {{path}}, {{query}}, {{uri}}"
                            ));
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                    for _ in 0..end + 1 {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "redirect {text:?}: '}}' without its '{{' (write }}}} for a literal brace)"
                    ));
                }
                c if c.is_ascii_control() || c == ' ' => {
                    return Err(format!(
                        "redirect {text:?} must not contain spaces or control characters \
                         (percent-encode them: %20)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err(
                "redirect must not be empty: write the target, e.g. \"https://{host}{uri}\"".into(),
            );
        }
        if !text.is_ascii() {
            return Err(format!(
                "redirect {text:?} must be ASCII: percent-encode other characters"
            ));
        }
        Ok(Template {
            parts,
            text: text.to_string(),
        })
    }

    /// The redirect target for `request`.
    pub fn render(&self, request: Request<'_>) -> Result<String, Refusal> {
        let mut out = String::with_capacity(self.text.len() + request.path.len() + 32);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Host => {
                    let host = request.host.ok_or(Refusal::NoHost)?;
                    if !is_host(host) {
                        return Err(Refusal::BadHost);
                    }
                    out.push_str(host);
                }
                Part::Path => out.push_str(request.path),
                Part::Query => out.push_str(request.query.unwrap_or("")),
                Part::Uri => {
                    out.push_str(request.path);
                    if let Some(query) = request.query {
                        out.push('?');
                        out.push_str(query);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A host name or IPv4 address (letters, digits, `-`, `.`) or a bracketed
/// IPv6 address: nothing that could carry a path or a user into the target.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The status codes a redirect route may answer with.
pub const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        template: &str,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
    ) -> Result<String, Refusal> {
        Template::parse(template)
            .unwrap()
            .render(Request { host, path, query })
    }

    #[test]
    fn placeholders_are_filled() {
        let host = Some("chat.example.com");
        assert_eq!(
            render("https://{host}{uri}", host, "/a/b", Some("x=1&y=2")).unwrap(),
            "https://chat.example.com/a/b?x=1&y=2"
        );
        assert_eq!(
            render("https://{host}{uri}", host, "/a", None).unwrap(),
            "https://chat.example.com/a"
        );
        assert_eq!(
            render(
                "https://new.example{path}?from=old&{query}",
                host,
                "/p",
                Some("q=1")
            )
            .unwrap(),
            "https://new.example/p?from=old&q=1"
        );
        assert_eq!(
            render("/elsewhere", None, "/p", None).unwrap(),
            "/elsewhere"
        );
        assert_eq!(
            render("https://x/{{literal}}", None, "/", None).unwrap(),
            "https://x/{literal}"
        );
    }

    #[test]
    fn hosts_must_be_hosts() {
        assert_eq!(
            render("https://{host}/", None, "/", None),
            Err(Refusal::NoHost)
        );
        assert_eq!(
            render("https://{host}/", Some("evil.example/x"), "/", None),
            Err(Refusal::BadHost)
        );
        assert_eq!(
            render("https://{host}/", Some("a@b"), "/", None),
            Err(Refusal::BadHost)
        );
        assert_eq!(
            render("https://{host}/", Some("[::1]"), "/", None).unwrap(),
            "https://[::1]/"
        );
        assert_eq!(
            render("https://{host}/", Some("10.0.0.1"), "/", None).unwrap(),
            "https://10.0.0.1/"
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(
            Template::parse("https://{hots}{uri}")
                .unwrap_err()
                .contains("unknown placeholder {hots}")
        );
        assert!(
            Template::parse("https://{host")
                .unwrap_err()
                .contains("without its")
        );
        assert!(
            Template::parse("https://x}")
                .unwrap_err()
                .contains("without its")
        );
        assert!(
            Template::parse("")
                .unwrap_err()
                .contains("must not be empty")
        );
        assert!(
            Template::parse("https://a b/")
                .unwrap_err()
                .contains("spaces")
        );
        assert!(Template::parse("https://é/").unwrap_err().contains("ASCII"));
    }
}
