//! Config loading: any text either builds a gateway or is refused with named problems; nothing
//! panics. The upstream is pinned to an address (building resolves its host name, which a fuzzer
//! must not do).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::{build, FileConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    file.upstream = Some("http://127.0.0.1:8080".into());
    if let Err(problems) = build(file) {
        assert!(
            !problems.is_empty() && problems.iter().all(|p| p.contains(':')),
            "{problems:?}"
        );
    }
});
