//! A model's `config.toml` (`sluice::repository::ModelConfig::parse`):
//! arbitrary UTF-8 text parsed and checked. Properties: no panic (a bad file
//! is an error naming the file); a config that parses selects versions
//! without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::repository::ModelConfig;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelConfig::parse(Path::new("m/config.toml"), text) {
        Ok(config) => {
            let selected = config.version_policy.select(&[1, 2, 3, 7]);
            assert!(selected.len() <= 4);
            let _ = config.execution_providers.iter().map(|p| p.name()).count();
        }
        Err(e) => assert!(e.starts_with("m/config.toml: "), "{e}"),
    }
});
