//! The route file: any text, read and checked. Never a panic; a file that
//! checks out holds at least one listener and one route, and every error
//! carries the file name and, when it has one, a position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use switchyard::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent-fuzz-dir/switchyard.toml");
    match Config::parse(path, text) {
        Ok(config) => {
            assert!(!config.listeners.is_empty());
            assert!(!config.routes.is_empty());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            let lines = text.split('\n').count();
            for error in &errors.0 {
                assert_eq!(error.file, path);
                if let Some(position) = error.position {
                    assert!(position.line >= 1 && position.line <= lines);
                    assert!(position.column >= 1);
                }
                assert!(!error.message.is_empty());
            }
        }
    }
});
