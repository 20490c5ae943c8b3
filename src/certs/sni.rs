//! Which certificate a handshake gets, by the name the client asked for
//! (SNI): an exact name first, then a wildcard (`*.example.com` covers
//! `chat.example.com`, not `example.com` nor `a.b.example.com`), else the
//! listener's default. Also the check `validate` runs: two certificates of
//! one listener claiming the same name. Pure.

/// The index of the certificate for `sni` among `names` (one name list per
/// certificate, in the listener's order; an empty list is a certificate
/// not yet available and never chosen). `None`: no certificate names it.
pub fn pick<'a>(sni: &str, names: impl Iterator<Item = &'a [String]> + Clone) -> Option<usize> {
    let sni = sni.trim_end_matches('.');
    let exact = names
        .clone()
        .position(|list| list.iter().any(|n| n.eq_ignore_ascii_case(sni)));
    exact.or_else(|| {
        let (_, parent) = sni.split_once('.')?;
        names.clone().position(|list| {
            list.iter().any(|n| {
                n.strip_prefix("*.")
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case(parent))
            })
        })
    })
}

/// Names claimed by two certificates of one listener: `(name, first,
/// second)` with indexes into `names`. A wildcard beside an exact name it
/// covers is no overlap (the exact one wins by rule); the same name twice is.
pub fn overlaps(names: &[Vec<String>]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (i, list) in names.iter().enumerate() {
        for name in list {
            let earlier = names[..i]
                .iter()
                .position(|other| other.iter().any(|n| n.eq_ignore_ascii_case(name)));
            if let Some(first) = earlier
                && !found.iter().any(|(n, _, j): &(String, usize, usize)| {
                    n.eq_ignore_ascii_case(name) && *j == i
                })
            {
                found.push((name.to_ascii_lowercase(), first, i));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn pick_in(sni: &str, names: &[Vec<String>]) -> Option<usize> {
        pick(sni, names.iter().map(Vec::as_slice))
    }

    #[test]
    fn exact_beats_wildcard_whatever_the_order() {
        let names = lists(&[&["*.example.com"], &["chat.example.com"], &["other.org"]]);
        assert_eq!(pick_in("chat.example.com", &names), Some(1));
        assert_eq!(pick_in("CHAT.example.com.", &names), Some(1));
        assert_eq!(pick_in("api.example.com", &names), Some(0));
        assert_eq!(pick_in("other.org", &names), Some(2));
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        let names = lists(&[&["*.example.com"]]);
        assert_eq!(pick_in("example.com", &names), None);
        assert_eq!(pick_in("a.b.example.com", &names), None);
        assert_eq!(pick_in("localhost", &names), None);
    }

    #[test]
    fn a_certificate_without_names_is_never_picked() {
        let names = lists(&[&[], &["chat.example.com"]]);
        assert_eq!(pick_in("chat.example.com", &names), Some(1));
        assert_eq!(pick_in("x.example.com", &names), None);
    }

    #[test]
    fn overlapping_names_are_found_once() {
        let names = lists(&[
            &["chat.example.com", "*.example.com"],
            &["Chat.Example.com", "api.example.com"],
            &["*.example.com", "chat.example.com"],
        ]);
        assert_eq!(
            overlaps(&names),
            vec![
                ("chat.example.com".to_string(), 0, 1),
                ("*.example.com".to_string(), 0, 2),
                ("chat.example.com".to_string(), 0, 2),
            ]
        );
        assert!(overlaps(&lists(&[&["*.example.com"], &["chat.example.com"]])).is_empty());
    }
}
