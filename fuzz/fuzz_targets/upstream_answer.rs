//! The front's reader of upstream answers (`forward::Relay`): whatever bytes an upstream sends,
//! split anywhere, the client gets one well-framed HTTP/1.1 answer (or nothing and a 502), never a
//! byte past the answer's end.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate::forward::{Fed, Relay};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where the bytes are split; whether the upstream closes after them.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let step = (split as usize % 61) + 1;
    let closes = split & 0x80 != 0;
    let mut relay = Relay::new(true);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = Ok(Fed::More);
    let mut at = 0;
    while at < data.len() || closes {
        let end = (at + step).min(data.len());
        buf.extend_from_slice(&data[at..end]);
        at = end;
        let eof = closes && at == data.len();
        fed = relay.feed(&mut buf, &mut out, eof);
        if fed != Ok(Fed::More) || eof {
            break;
        }
    }
    if fed == Ok(Fed::Done) {
        check(&out, relay.status().expect("a status once done"));
        // What follows the answer was left for the caller, untouched.
        assert!(data[..at].ends_with(&buf[..]), "bytes after the answer changed");
    } else if fed.is_err() && relay.status().is_none() {
        // Nothing but informational heads went to the client before a 502.
        let mut rest = &out[..];
        while !rest.is_empty() {
            let n = head(rest).expect("only whole heads before a failure");
            let mut h = [httparse::EMPTY_HEADER; 300];
            let mut r = httparse::Response::new(&mut h);
            r.parse(rest).unwrap();
            assert!((100..200).contains(&r.code.unwrap()) && r.code != Some(101));
            rest = &rest[n..];
        }
    }
});

/// The length of the whole response head at the start of `b`.
fn head(b: &[u8]) -> Option<usize> {
    let mut h = [httparse::EMPTY_HEADER; 300];
    let mut r = httparse::Response::new(&mut h);
    match r.parse(b) {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// `out` is informational heads, then one answer whose framing covers exactly the rest.
fn check(out: &[u8], status: u16) {
    let mut rest = out;
    loop {
        let mut h = [httparse::EMPTY_HEADER; 300];
        let mut r = httparse::Response::new(&mut h);
        let n = match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("the client's answer head does not parse: {other:?}"),
        };
        assert_eq!(r.version, Some(1));
        let code = r.code.unwrap();
        let get = |name: &str| -> Vec<&[u8]> {
            r.headers
                .iter()
                .filter(|x| x.name.eq_ignore_ascii_case(name))
                .map(|x| x.value)
                .collect()
        };
        if (100..200).contains(&code) {
            rest = &rest[n..];
            continue;
        }
        assert_eq!(code, status);
        assert_eq!(get("connection"), vec![b"keep-alive".as_slice()]);
        assert_eq!(get("date").len(), 1);
        let body = &rest[n..];
        let te = get("transfer-encoding");
        let cl = get("content-length");
        if code == 204 || code == 304 {
            assert!(body.is_empty(), "no body after a {code}");
        } else if !te.is_empty() {
            assert!(cl.is_empty(), "Content-Length beside Transfer-Encoding");
            assert!(
                te.last().unwrap().eq_ignore_ascii_case(b"chunked") || {
                    let v = String::from_utf8_lossy(te.last().unwrap()).to_ascii_lowercase();
                    v.rsplit(',').next().unwrap().trim() == "chunked"
                }
            );
            let mut b = body;
            loop {
                let (used, size) = match httparse::parse_chunk_size(b) {
                    Ok(httparse::Status::Complete(x)) => x,
                    other => panic!("bad chunk framing to the client: {other:?}"),
                };
                b = &b[used..];
                if size == 0 {
                    assert_eq!(b, b"\r\n", "the chunked body ends exactly");
                    break;
                }
                let size = size as usize;
                assert!(b.len() >= size + 2);
                assert_eq!(&b[size..size + 2], b"\r\n");
                b = &b[size + 2..];
            }
        } else {
            assert_eq!(cl.len() >= 1, true, "a body without framing");
            let len: usize = std::str::from_utf8(cl[0])
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(body.len(), len, "the body is as long as it says");
        }
        return;
    }
}
