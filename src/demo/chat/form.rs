//! Reading one field out of an `application/x-www-form-urlencoded` body, the
//! format of the sign-in form.

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// Why a form body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FormError {
    #[error("form field is not valid UTF-8 after decoding")]
    NotUtf8,
}

/// The decoded value of the first `key=value` pair named `key`, if there is one.
/// A key without `=` counts as an empty value.
pub(crate) fn field(body: &[u8], key: &str) -> Result<Option<String>, FormError> {
    for pair in body.split(|&byte| byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = match pair.iter().position(|&byte| byte == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        if decode(raw_key)? == key {
            return decode(raw_value).map(Some);
        }
    }
    Ok(None)
}

/// `+` stands for a space, then `%XX` escapes are decoded.
fn decode(raw: &[u8]) -> Result<String, FormError> {
    let spaced: Cow<[u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&byte| if byte == b'+' { b' ' } else { byte })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    percent_decode(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_plain_field() {
        assert_eq!(field(b"name=alice", "name"), Ok(Some("alice".into())));
    }

    #[test]
    fn decodes_plus_and_percent_escapes() {
        assert_eq!(
            field(b"x=1&name=Bob+%26+Co%2B%E4%BD%A0", "name"),
            Ok(Some("Bob & Co+你".into()))
        );
    }

    #[test]
    fn first_occurrence_wins_and_keys_are_decoded() {
        assert_eq!(field(b"n%61me=a&name=b", "name"), Ok(Some("a".into())));
    }

    #[test]
    fn missing_and_empty_fields() {
        assert_eq!(field(b"", "name"), Ok(None));
        assert_eq!(field(b"other=1&&", "name"), Ok(None));
        assert_eq!(field(b"name=", "name"), Ok(Some(String::new())));
        assert_eq!(field(b"name", "name"), Ok(Some(String::new())));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(field(b"name=%FF%FE", "name"), Err(FormError::NotUtf8));
        assert_eq!(field(b"name=\xff", "name"), Err(FormError::NotUtf8));
    }

    #[test]
    fn malformed_escapes_pass_through() {
        assert_eq!(field(b"name=100%", "name"), Ok(Some("100%".into())));
        assert_eq!(field(b"name=%zz", "name"), Ok(Some("%zz".into())));
    }
}
