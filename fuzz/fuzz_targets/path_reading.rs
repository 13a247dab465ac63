//! One reading of a request: canonicalisation and route matching. Properties:
//! - no input panics;
//! - the canonical target reads as itself (idempotent), so what is forwarded is read the same way
//!   by tollgate again;
//! - the route a request is priced by depends only on what is forwarded: the raw target and its
//!   canonical form fall under the same route.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use tollgate::reading::{read, Request};

const METHODS: [&str; 6] = ["GET", "POST", "DELETE", "PUT", "get", "PROPFIND"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, target)) = data.split_first() else { return };
    let (_, tenant) = common::default_tenant();
    let over = [Some(&b"DELETE"[..]).filter(|_| m & 0x80 != 0), None, None, None];
    let req = Request {
        method: METHODS[(m & 7) as usize % METHODS.len()],
        target,
        overrides: over,
        form: m & 0x40 != 0,
        has_body: m & 0x20 != 0,
    };
    let Ok(first) = read(&req, &tenant.rules) else { return };
    let again = Request {
        target: first.target.as_bytes(),
        ..req
    };
    let second = read(&again, &tenant.rules).expect("a canonical target reads");
    assert_eq!(first.target, second.target, "canonicalisation is idempotent");
    assert_eq!(first.also, second.also);
    let route = |r: &tollgate::reading::Reading| tenant.route_for(r).map(|(i, _)| i);
    assert_eq!(route(&first), route(&second), "priced by what is forwarded");
});
