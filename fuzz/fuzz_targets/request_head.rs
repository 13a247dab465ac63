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
        Head::Free(n, free) => {
            assert!(n > 0 && n <= data.len(), "{n} of {}", data.len());
            // The upstream's head: one whole request, the same method, a path under the upstream's
            // prefix, one Host (the upstream's), nothing hop-by-hop or tollgate's own.
            let mut h = [httparse::EMPTY_HEADER; 128];
            let mut up = httparse::Request::new(&mut h);
            let m = match up.parse(&out) {
                Ok(httparse::Status::Complete(m)) => m,
                other => panic!("the upstream head does not parse: {other:?}"),
            };
            assert_eq!(m, out.len(), "one head, nothing after it");
            let mut client = [httparse::EMPTY_HEADER; 64];
            let mut sent = httparse::Request::new(&mut client);
            sent.parse(&data[..n]).unwrap();
            assert_eq!(up.method, sent.method);
            assert!(up.path.unwrap().starts_with('/'));
            let named = |n: &str| up.headers.iter().filter(|x| x.name.eq_ignore_ascii_case(n)).count();
            assert_eq!(named("host"), 1);
            let host = up.headers.iter().find(|x| x.name.eq_ignore_ascii_case("host")).unwrap();
            assert_eq!(host.value, free.tenant.upstream.authority.as_bytes());
            for gone in [
                "connection",
                "keep-alive",
                "transfer-encoding",
                "upgrade",
                "te",
                "x-payment",
                "payment-signature",
                "x-tollgate-payer",
                "proxy-authorization",
            ] {
                assert_eq!(named(gone), 0, "{gone} forwarded");
            }
            assert!(
                up.headers.iter().all(|x| !x.name.contains('_')),
                "an underscored name forwarded"
            );
            assert!(
                named("x-forwarded-proto") >= 1,
                "X-Forwarded-Proto always reaches the upstream"
            );
            let mut again = Vec::new();
            assert_eq!(
                read_head(tenant, settings, Client::default(), &data[..n], &mut again),
                Head::Free(n, free)
            );
            assert_eq!(again, out);
        }
        // No client address, so no per-IP limit applies.
        Head::Limited(n) => panic!("limited without a client address ({n} bytes)"),
        Head::Other(Some(len)) => assert!(len > 0),
        Head::Other(None) | Head::Partial => {}
    }
});
