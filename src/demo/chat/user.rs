//! Who a chat user is, and how that identity travels in the `name` cookie.
//!
//! As in the tutorial, the cookie is not signed: its value is base64 of the
//! JSON `{"id":N,"name":"…","image":N%10}`. Anything a client sends back is
//! therefore validated again here (name normalised, avatar index in range)
//! before the room trusts it.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use http::HeaderMap;
use http::header::COOKIE;
use serde::{Deserialize, Serialize};

/// Name of the cookie carrying the signed-in user.
pub(crate) const COOKIE_NAME: &str = "name";

/// Longest name kept, in characters; longer names are cut.
pub(crate) const MAX_NAME_CHARS: usize = 32;

/// Name given to a user who signs in with an empty name (the tutorial's "passer-by A").
pub(crate) const DEFAULT_NAME: &str = "路人甲";

/// Number of avatar pictures under `/static/images/`.
pub(crate) const AVATAR_COUNT: u8 = 10;

/// Attributes shared by the cookie we set and the one we clear.
const COOKIE_ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Lax";

/// Decodes both the standard and the URL-safe alphabet, with or without padding,
/// as Node's `Buffer.from(s, 'base64')` does.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signed-in chat user, serialised exactly as the tutorial's `user` objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) image: u8,
}

impl User {
    /// A freshly signed-in user: the name is normalised (empty → [`DEFAULT_NAME`])
    /// and the avatar is `id % 10`.
    pub(crate) fn sign_in(id: u64, requested_name: &str) -> User {
        let name = normalise_name(requested_name).unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let image = u8::try_from(id % u64::from(AVATAR_COUNT)).unwrap_or(0);
        User { id, name, image }
    }

    /// The `name` cookie value: base64 of the user's JSON.
    pub(crate) fn to_cookie_value(&self) -> String {
        // Serialising a struct of a number, a string and a number cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        STANDARD.encode(json)
    }

    /// The `Set-Cookie` header value that signs this user in.
    pub(crate) fn set_cookie_header(&self) -> String {
        format!(
            "{COOKIE_NAME}={}; {COOKIE_ATTRIBUTES}",
            self.to_cookie_value()
        )
    }

    /// Parses a `name` cookie value; `None` if it is not a valid user.
    pub(crate) fn from_cookie_value(value: &str) -> Option<User> {
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let json = LENIENT_STANDARD
            .decode(value)
            .or_else(|_| LENIENT_URL_SAFE.decode(value))
            .ok()?;
        let claimed: User = serde_json::from_slice(&json).ok()?;
        if claimed.image >= AVATAR_COUNT {
            return None;
        }
        let name = normalise_name(&claimed.name)?;
        Some(User { name, ..claimed })
    }

    /// The user named by the first valid `name` cookie among the request's
    /// `Cookie` headers, if any.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<User> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| name.trim() == COOKIE_NAME)
            .find_map(|(_, value)| User::from_cookie_value(value))
    }
}

/// The `Set-Cookie` header value that signs a user out.
pub(crate) fn clear_cookie_header() -> String {
    format!("{COOKIE_NAME}=; Max-Age=0; {COOKIE_ATTRIBUTES}")
}

/// Trims the name, drops control characters and cuts it to [`MAX_NAME_CHARS`]
/// characters; `None` when nothing is left.
pub(crate) fn normalise_name(raw: &str) -> Option<String> {
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cookie_of(json: &str) -> String {
        STANDARD.encode(json)
    }

    #[test]
    fn sign_in_assigns_avatar_from_id() {
        let user = User::sign_in(23, "alice");
        assert_eq!(
            user,
            User {
                id: 23,
                name: "alice".into(),
                image: 3
            }
        );
    }

    #[test]
    fn empty_name_gets_the_default() {
        assert_eq!(User::sign_in(1, "").name, DEFAULT_NAME);
        assert_eq!(User::sign_in(1, "   \t ").name, DEFAULT_NAME);
    }

    #[test]
    fn long_names_are_cut_by_characters() {
        let long = "長".repeat(40);
        let user = User::sign_in(1, &long);
        assert_eq!(user.name.chars().count(), MAX_NAME_CHARS);
        assert_eq!(user.name, "長".repeat(32));
    }

    #[test]
    fn names_lose_surrounding_space_and_control_characters() {
        assert_eq!(normalise_name("  bob\u{7}\n "), Some("bob".into()));
        assert_eq!(normalise_name("\u{0}\u{1b}"), None);
    }

    #[test]
    fn cookie_round_trips() {
        let user = User::sign_in(7, "Zoë <script>");
        let value = user.to_cookie_value();
        assert_eq!(User::from_cookie_value(&value), Some(user));
    }

    #[test]
    fn cookie_value_is_base64_of_the_tutorial_json() {
        let value = User::sign_in(12, "amy").to_cookie_value();
        let json = STANDARD.decode(value).unwrap();
        assert_eq!(json, br#"{"id":12,"name":"amy","image":2}"#);
    }

    #[test]
    fn cookie_accepts_url_safe_unpadded_and_quoted_values() {
        let json = r#"{"id":5,"name":"??>","image":5}"#;
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        assert_eq!(User::from_cookie_value(&url_safe).unwrap().name, "??>");
        let quoted = format!("\"{}\"", cookie_of(json));
        assert_eq!(User::from_cookie_value(&quoted).unwrap().id, 5);
    }

    #[test]
    fn cookie_rejects_garbage() {
        for bad in [
            "",
            "not base64!",
            &cookie_of("not json"),
            &cookie_of(r#"{"id":1,"name":"x"}"#),
            &cookie_of(r#"{"id":-1,"name":"x","image":1}"#),
            &cookie_of(r#"{"id":1,"name":"x","image":10}"#),
            &cookie_of(r#"{"id":1,"name":"   ","image":1}"#),
            &cookie_of(r#"{"id":"1","name":"x","image":1}"#),
        ] {
            assert_eq!(User::from_cookie_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cookie_cuts_overlong_names() {
        let json = format!(r#"{{"id":1,"name":"{}","image":1}}"#, "x".repeat(100));
        let user = User::from_cookie_value(&cookie_of(&json)).unwrap();
        assert_eq!(user.name.len(), MAX_NAME_CHARS);
    }

    #[test]
    fn user_is_found_among_other_cookies_and_headers() {
        let user = User::sign_in(3, "carol");
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark"));
        let both = format!("name=broken; sid=1; name={}", user.to_cookie_value());
        headers.append(COOKIE, HeaderValue::from_str(&both).unwrap());
        assert_eq!(User::from_headers(&headers), Some(user));
    }

    #[test]
    fn no_cookie_means_no_user() {
        let mut headers = HeaderMap::new();
        assert_eq!(User::from_headers(&headers), None);
        headers.append(COOKIE, HeaderValue::from_static("username=abc"));
        assert_eq!(User::from_headers(&headers), None);
    }

    #[test]
    fn cookie_headers_carry_the_attributes() {
        let set = User::sign_in(1, "a").set_cookie_header();
        assert!(set.starts_with("name="));
        assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"));
        assert_eq!(
            clear_cookie_header(),
            "name=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
        );
    }
}
