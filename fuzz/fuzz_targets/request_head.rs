//! The front's request-head reader: whatever bytes a client sends, it either answers a 402 for a
//! whole head it read, hands the request on with a length that covers the head, or waits for more.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

use tollgate::config::Settings;
use tollgate::directory::Directory;
use tollgate::front::{read_head, Client, Head};

fn drop_in() -> &'static (Settings, Directory) {
    static D: OnceLock<(Settings, Directory)> = OnceLock::new();
    D.get_or_init(|| {
        let (settings, tenant) = common::tenant("");
        (settings, Directory::One(Arc::new(tenant)))
    })
}

fuzz_target!(|data: &[u8]| {
    let (settings, tenant) = drop_in();
    let mut out = Vec::new();
    match read_head(tenant, settings, Client::default(), data, &mut out) {
        Head::Unpaid(n) => {
            assert!(n > 0 && n <= data.len(), "{n} of {}", data.len());
            assert!(out.starts_with(b"HTTP/1.1 402 "));
            // The same head alone is answered the same way: nothing after it counted.
            let mut again = Vec::new();
            assert_eq!(
                read_head(tenant, settings, Client::default(), &data[..n], &mut again),
                Head::Unpaid(n)
            );
        }
        // No client address, so no per-IP limit applies.
        Head::Limited(n) => panic!("limited without a client address ({n} bytes)"),
        Head::Other(Some(len)) => assert!(len > 0),
        Head::Other(None) | Head::Partial => {}
    }
});
