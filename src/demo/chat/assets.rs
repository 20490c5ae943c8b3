//! The page assets compiled into the binary (from `src/demo/assets/`).
//!
//! The two HTML pages are served by the backend itself; the stylesheet, the
//! script and the avatars live under `/static/` and are written to disk by
//! [`write_static_assets`] for the proxy's static-file route to serve.

use std::fs;
use std::io;
use std::path::Path;

/// The sign-in page (`GET /signin`).
pub(crate) const SIGNIN_PAGE: &str = include_str!("../assets/signin.html");

/// The chat room page (`GET /`).
pub(crate) const ROOM_PAGE: &str = include_str!("../assets/room.html");

/// Every file under `/static/`, by its path relative to the static root.
const STATIC_FILES: &[(&str, &str)] = &[
    ("static/chat.css", include_str!("../assets/static/chat.css")),
    ("static/chat.js", include_str!("../assets/static/chat.js")),
    (
        "static/images/0.svg",
        include_str!("../assets/static/images/0.svg"),
    ),
    (
        "static/images/1.svg",
        include_str!("../assets/static/images/1.svg"),
    ),
    (
        "static/images/2.svg",
        include_str!("../assets/static/images/2.svg"),
    ),
    (
        "static/images/3.svg",
        include_str!("../assets/static/images/3.svg"),
    ),
    (
        "static/images/4.svg",
        include_str!("../assets/static/images/4.svg"),
    ),
    (
        "static/images/5.svg",
        include_str!("../assets/static/images/5.svg"),
    ),
    (
        "static/images/6.svg",
        include_str!("../assets/static/images/6.svg"),
    ),
    (
        "static/images/7.svg",
        include_str!("../assets/static/images/7.svg"),
    ),
    (
        "static/images/8.svg",
        include_str!("../assets/static/images/8.svg"),
    ),
    (
        "static/images/9.svg",
        include_str!("../assets/static/images/9.svg"),
    ),
];

/// Writes the page assets under `root/static/…`, so that a proxy route
/// `path = "/static/"`, `root = root` serves them. Existing files are replaced.
///
/// # Errors
///
/// Any error creating the folders or writing the files.
pub fn write_static_assets(root: &Path) -> io::Result<()> {
    for (relative, contents) in STATIC_FILES {
        let path = root.join(relative);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)?;
        }
        fs::write(&path, contents)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/static/…` path quoted in `text`.
    fn static_references(text: &str) -> Vec<&str> {
        text.split('"')
            .filter(|piece| piece.starts_with("/static/"))
            .collect()
    }

    #[test]
    fn pages_only_reference_shipped_files() {
        for page in [SIGNIN_PAGE, ROOM_PAGE] {
            let references = static_references(page);
            assert!(!references.is_empty());
            for reference in references {
                let relative = reference.trim_start_matches('/');
                assert!(
                    STATIC_FILES.iter().any(|(path, _)| *path == relative),
                    "{reference} is not shipped"
                );
            }
        }
    }

    #[test]
    fn room_page_has_the_elements_the_script_drives() {
        for id in [
            "message-list",
            "user-list",
            "message-input",
            "send-button",
            "status",
        ] {
            assert!(ROOM_PAGE.contains(&format!("id=\"{id}\"")), "{id}");
        }
    }

    #[test]
    fn there_is_one_avatar_per_image_index() {
        for index in 0..super::super::user::AVATAR_COUNT {
            let path = format!("static/images/{index}.svg");
            assert!(STATIC_FILES.iter().any(|(p, _)| *p == path), "{path}");
        }
    }
}
