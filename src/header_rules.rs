//! A route's `response_headers` and `request_headers`: headers to set or
//! remove, checked once when the route file is read, applied to every
//! message of the route. Pure: no I/O.
//!
//! "Set" replaces: a header set by a rule has exactly that one value,
//! whatever the message carried before. An empty value removes the header.
//! Headers that frame the message or describe one connection
//! (`Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`…) and the
//! WebSocket handshake's `Sec-WebSocket-*` are the proxy's business and may
//! not be named; nor may `request_headers` remove the forwarding headers
//! (`X-Real-IP`, `X-Forwarded-*`) or `Host`.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Which messages a set of rules is for: the checks differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `request_headers`: on requests sent upstream.
    Request,
    /// `response_headers`: on every response of the route.
    Response,
}

/// One rule: set `name` to `value`, or remove it (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

/// The rules of one table, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules(Vec<Rule>);

impl HeaderRules {
    pub fn new(rules: Vec<Rule>) -> HeaderRules {
        HeaderRules(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Apply every rule to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for rule in &self.0 {
            match &rule.value {
                Some(value) => {
                    headers.insert(rule.name.clone(), value.clone());
                }
                None => {
                    headers.remove(&rule.name);
                }
            }
        }
    }
}

/// Check one `NAME = "VALUE"` entry of a header table. The message says
/// what is wrong with the name or the value.
pub fn rule(name: &str, value: &str, direction: Direction) -> Result<Rule, String> {
    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!("{name:?} is not a header name (letters, digits and -_.!#$%&'*+^`|~)")
    })?;
    let lower = header.as_str();
    if is_framing(lower) {
        return Err(format!(
            "{name} is set by the proxy itself (it frames the message or describes one connection) \
             and cannot be set or removed here"
        ));
    }
    if lower.starts_with("sec-websocket-") {
        return Err(format!(
            "{name} belongs to the WebSocket handshake and cannot be set or removed here"
        ));
    }
    if value.is_empty() {
        if direction == Direction::Request && is_forwarding(lower) {
            return Err(format!(
                "{name} is a forwarding header: the upstream always gets it, so it cannot be removed \
                 (set it to replace the proxy's value)"
            ));
        }
        return Ok(Rule {
            name: header,
            value: None,
        });
    }
    let value = HeaderValue::from_str(value).map_err(|_| {
        format!("the value of {name} must be visible ASCII and spaces (no line breaks or control characters)")
    })?;
    Ok(Rule {
        name: header,
        value: Some(value),
    })
}

/// Headers that frame a message or belong to one connection.
fn is_framing(lower: &str) -> bool {
    matches!(
        lower,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
    ) || lower.starts_with("proxy-")
}

/// Headers the upstream always gets (`Host` among them: HTTP/1.1 needs it).
fn is_forwarding(lower: &str) -> bool {
    matches!(
        lower,
        "host" | "x-real-ip" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)], direction: Direction) -> HeaderRules {
        HeaderRules::new(
            pairs
                .iter()
                .map(|(k, v)| rule(k, v, direction).unwrap())
                .collect(),
        )
    }

    #[test]
    fn set_replaces_every_value_and_empty_removes() {
        let mut headers = HeaderMap::new();
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        headers.insert("server", HeaderValue::from_static("backend/1.0"));
        headers.insert("x-keep", HeaderValue::from_static("yes"));
        rules(
            &[
                ("X-Tag", "one"),
                ("Server", ""),
                ("Strict-Transport-Security", "max-age=1"),
            ],
            Direction::Response,
        )
        .apply(&mut headers);
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["one"]);
        assert!(!headers.contains_key("server"));
        assert_eq!(headers["strict-transport-security"], "max-age=1");
        assert_eq!(headers["x-keep"], "yes");
    }

    #[test]
    fn framing_and_handshake_headers_are_refused() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Upgrade",
            "Proxy-Authorization",
            "TE",
        ] {
            let error = rule(name, "x", Direction::Response).unwrap_err();
            assert!(error.contains("set by the proxy"), "{name}: {error}");
        }
        let error = rule("Sec-WebSocket-Protocol", "chat", Direction::Request).unwrap_err();
        assert!(error.contains("WebSocket handshake"), "{error}");
    }

    #[test]
    fn forwarding_headers_may_be_set_but_not_removed_upstream() {
        assert!(rule("X-Forwarded-Proto", "https", Direction::Request).is_ok());
        assert!(rule("Host", "backend.internal", Direction::Request).is_ok());
        for name in ["X-Forwarded-For", "x-real-ip", "Host"] {
            let error = rule(name, "", Direction::Request).unwrap_err();
            assert!(error.contains("cannot be removed"), "{name}: {error}");
        }
        // On responses they are ordinary headers.
        assert!(rule("X-Real-IP", "", Direction::Response).is_ok());
    }

    #[test]
    fn names_and_values_are_checked() {
        assert!(
            rule("Bad Name", "x", Direction::Response)
                .unwrap_err()
                .contains("not a header name")
        );
        assert!(
            rule("X-Ok", "line\nbreak", Direction::Response)
                .unwrap_err()
                .contains("visible ASCII")
        );
    }
}
