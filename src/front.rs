//! The connection front: the first thing a plain-HTTP connection meets.
//!
//! Most traffic a paywall sees is the unpaid request to a priced route, answered by a 402 that
//! never touches the upstream. pingora spends most of its per-request CPU on machinery that answer
//! does not need (a boxed session with its modules and phases, a header map, the response header
//! built and serialised again). The front reads each request head itself and, when it is exactly
//! that case, writes the worker's cached 402 bytes straight back (README, Performance, has what
//! that changed). Every other request (paid, free, preflight, anything with a body or
//! anything unusual) is put back on the connection unread ([`L4Stream::rewind`]) and handed to the
//! pingora proxy, which sees exactly the bytes the client sent; when pingora is done with it, the
//! connection comes back here for its next request.
//!
//! The front is deliberately narrow: it answers only GET/POST/… requests in HTTP/1.1 without a
//! body, without `Connection` options other than keep-alive, without a payment header, whose head
//! fits in [`MAX_HEAD`] bytes and parses cleanly. Anything else is pingora's, byte for byte.
//!
//! Unpaid 402s answered here never pass through the proxy's phases (`logging` included): anything
//! counted per request (metrics) must be counted here too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::challenge;
use crate::payment::Gateway;
use crate::proxy::Proxy;

/// Request heads longer than this go to pingora (which allows more).
pub const MAX_HEAD: usize = 8 * 1024;
/// Request heads with more headers than this go to pingora.
const MAX_HEADERS: usize = 48;
/// How long an idle connection waits for its next request (pingora's own keep-alive default).
const KEEPALIVE_SECS: u64 = 60;
const KEEPALIVE: Duration = Duration::from_secs(KEEPALIVE_SECS);

/// The server application of each worker: the front, and the pingora proxy behind it.
pub struct Front {
    proxy: Arc<HttpProxy<Proxy>>,
    gw: Arc<Gateway>,
}

impl Front {
    pub fn new(proxy: HttpProxy<Proxy>, gw: Arc<Gateway>) -> Self {
        Front {
            proxy: Arc::new(proxy),
            gw,
        }
    }
}

/// What the front makes of the bytes it holds.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// An unpaid request to a priced route, `n` bytes long, answered by `out`.
    Unpaid(usize),
    /// Not all of the head has arrived.
    Partial,
    /// Anything else: pingora's. With the request's length in bytes (head and body) when the head
    /// is whole and says how long the body is.
    Other(Option<usize>),
}

enum Step {
    Answered,
    /// Hand the first `n` bytes held (all, if `None`) to pingora.
    Delegate(Option<usize>),
    Close,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // TLS (later) and any other transport: pingora all the way.
        if !stream.as_any().is::<L4Stream>() {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut conn: Box<L4Stream> = stream.into_any().downcast().ok()?;
        let mut shutdown = shutdown.clone();
        let mut buf = BytesMut::with_capacity(2048);
        let mut out = Vec::with_capacity(2048);
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            match self.step(&mut conn, &mut buf, &mut out, &mut shutdown).await {
                Step::Answered => continue,
                Step::Close => return None,
                Step::Delegate(len) => {
                    // pingora reads the request from the start, as the client sent it. Requests
                    // pipelined behind it stay here: pingora drops a connection it over-read on.
                    let take = len.map_or(buf.len(), |n| n.min(buf.len()));
                    conn.rewind(&buf[..take]);
                    buf.advance(take);
                    let mut session = ServerSession::new_http1(conn);
                    match settings.take() {
                        // Keep-alive state pingora carries between its own requests. (pingora's
                        // pipelining, which would carry over-read bytes here, is not enabled.)
                        Some(s) => s.apply_to_session(&mut session),
                        None => session.set_keepalive(Some(KEEPALIVE_SECS)),
                    }
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    }
                    let reused = self.proxy.process_new_http(session, &shutdown).await?;
                    let (stream, next) = reused.consume();
                    settings = next;
                    // pingora hands back the stream it was given.
                    conn = stream.into_any().downcast().ok()?;
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl Front {
    /// Answers one request from `buf` (reading more as needed) or says who else should.
    async fn step(
        &self,
        conn: &mut L4Stream,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        shutdown: &mut ShutdownWatch,
    ) -> Step {
        loop {
            if !buf.is_empty() {
                match self.answer(buf, out) {
                    Head::Unpaid(n) => {
                        buf.advance(n);
                        if conn.write_all(out).await.is_err() || conn.flush().await.is_err() {
                            return Step::Close;
                        }
                        return Step::Answered;
                    }
                    Head::Partial if buf.len() < MAX_HEAD => {}
                    Head::Partial => return Step::Delegate(None),
                    Head::Other(len) => return Step::Delegate(len),
                }
            } else if *shutdown.borrow() {
                // Shutting down between requests: close, as pingora does.
                return Step::Close;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(2048);
            }
            let read = tokio::select! {
                biased;
                r = tokio::time::timeout(KEEPALIVE, conn.read_buf(buf)) => r,
                _ = shutdown.changed() => return Step::Close,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or idle too long.
                _ => return Step::Close,
            }
        }
    }

    /// Parses the head at the start of `buf`; for an unpaid request to a priced route, writes the
    /// whole 402 into `out`.
    fn answer(&self, buf: &[u8], out: &mut Vec<u8>) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(_) => return Head::Other(None),
        };
        // Only requests the front hands on need their length: worked out then, not for every 402.
        let headers: &[httparse::Header] = req.headers;
        let other = || Head::Other(request_len(n, headers));
        if req.version != Some(1) {
            return other();
        }
        let (Some(method), Some(target)) = (req.method, req.path) else {
            return other();
        };
        // OPTIONS (preflight), HEAD (no body) and CONNECT are pingora's.
        let method = match method {
            "GET" => http::Method::GET,
            "POST" => http::Method::POST,
            "PUT" => http::Method::PUT,
            "DELETE" => http::Method::DELETE,
            "PATCH" => http::Method::PATCH,
            _ => return other(),
        };
        // Origin-form targets only, and only those pingora would accept too.
        if !target.starts_with('/') {
            return other();
        }
        let Ok(pq) = http::uri::PathAndQuery::try_from(target) else {
            return other();
        };
        let mut seen = Seen::default();
        for h in req.headers.iter() {
            if !seen.note(h.name, h.value) {
                return other();
            }
        }
        let tenant = &self.gw.tenant;
        let Some((_, route)) = tenant.route(&method, pq.path()) else {
            return other();
        };
        let Some(pricing) = route.pricing.as_ref() else {
            return other();
        };
        let settings = &self.gw.settings;
        let asked = challenge::asked_raw(
            &method,
            pq.path(),
            settings.public_url.as_deref(),
            seen.x_forwarded_proto,
            seen.x_forwarded_host,
            seen.host,
        );
        let cors = challenge::allowed_origin_raw(seen.origin, &settings.cors_origins);
        let Ok((head, body)) = challenge::unpaid_wire(pricing, &asked, cors.as_deref()) else {
            return other();
        };
        out.clear();
        out.extend_from_slice(&head);
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
        out.extend_from_slice(b"\r\nconnection: keep-alive\r\n\r\n");
        out.extend_from_slice(&body);
        Head::Unpaid(n)
    }
}

/// How long a request with this whole head is, head and body, when its headers say so plainly:
/// no Transfer-Encoding, and no Content-Length or only equal valid ones.
fn request_len(head: usize, headers: &[httparse::Header]) -> Option<usize> {
    let mut body: Option<usize> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok()?.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let len: usize = v.parse().ok()?;
            if body.is_some_and(|b| b != len) {
                return None;
            }
            body = Some(len);
        }
    }
    head.checked_add(body.unwrap_or(0))
}

/// The headers of a head the front may answer, and the values it needs.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    x_forwarded_host: Option<&'a [u8]>,
    x_forwarded_proto: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
}

impl<'a> Seen<'a> {
    /// Takes one header; `false` when it makes the request pingora's.
    fn note(&mut self, name: &str, value: &'a [u8]) -> bool {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("content-length") {
            // A body (even an empty one declared twice) is pingora's to read.
            return value == b"0";
        }
        if is("transfer-encoding") || is("upgrade") || is("expect") || is("x-payment") || is("payment-signature") {
            return false;
        }
        if is("connection") {
            return value.eq_ignore_ascii_case(b"keep-alive");
        }
        let first = |slot: &mut Option<&'a [u8]>| {
            slot.get_or_insert(value);
        };
        if is("host") {
            // Two Hosts is a malformed request: pingora's to refuse.
            if self.host.is_some() {
                return false;
            }
            self.host = Some(value);
        } else if is("x-forwarded-host") {
            first(&mut self.x_forwarded_host);
        } else if is("x-forwarded-proto") {
            first(&mut self.x_forwarded_proto);
        } else if is("origin") {
            first(&mut self.origin);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note_all(headers: &[(&str, &str)]) -> bool {
        let mut seen = Seen::default();
        headers.iter().all(|(k, v)| seen.note(k, v.as_bytes()))
    }

    #[test]
    fn only_plain_bodiless_unpaid_heads_are_the_fronts() {
        assert!(note_all(&[
            ("Host", "a"),
            ("Accept", "*/*"),
            ("Connection", "keep-alive")
        ]));
        assert!(note_all(&[("content-length", "0")]));
        for bad in [
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Expect", "100-continue"),
            ("X-PAYMENT", "e30="),
            ("payment-signature", "e30="),
        ] {
            assert!(!note_all(&[("Host", "a"), bad]), "{bad:?}");
        }
        assert!(!note_all(&[("Host", "a"), ("host", "b")]), "two Hosts");
    }

    #[test]
    fn request_lengths_come_only_from_plain_content_lengths() {
        let h = |n: &'static str, v: &'static str| httparse::Header {
            name: n,
            value: v.as_bytes(),
        };
        assert_eq!(request_len(100, &[h("Host", "a")]), Some(100));
        assert_eq!(request_len(100, &[h("Content-Length", " 5 ")]), Some(105));
        assert_eq!(
            request_len(100, &[h("content-length", "5"), h("Content-Length", "5")]),
            Some(105)
        );
        assert_eq!(
            request_len(100, &[h("content-length", "5"), h("Content-Length", "6")]),
            None
        );
        assert_eq!(request_len(100, &[h("content-length", "+5")]), None);
        assert_eq!(request_len(100, &[h("content-length", "")]), None);
        assert_eq!(request_len(100, &[h("Transfer-Encoding", "chunked")]), None);
        assert_eq!(
            request_len(100, &[h("content-length", "99999999999999999999999")]),
            None
        );
    }

    #[test]
    fn the_first_forwarding_values_are_kept() {
        let mut seen = Seen::default();
        assert!(seen.note("X-Forwarded-Host", b"one"));
        assert!(seen.note("x-forwarded-host", b"two"));
        assert!(seen.note("ORIGIN", b"https://a"));
        assert_eq!(seen.x_forwarded_host, Some(&b"one"[..]));
        assert_eq!(seen.origin, Some(&b"https://a"[..]));
    }
}
