//! The front's forwarding path: a plain bodiless request to a free route (or to no route at all),
//! sent to its tenant's plain-HTTP upstream over a per-worker keep-alive pool, its answer streamed
//! back to the client.
//!
//! Why it exists: pingora's per-request path for a proxied request costs several times nginx's
//! whole `proxy_pass` in instructions (README, "Instructions per request"), and free routes are
//! most of what a paywall in front of an API forwards. The front already reads every request head
//! ([`crate::front`]); for the narrow case of a free request it can also forward it.
//!
//! It does to the request exactly what the proxy does to the same request ([`crate::proxy`]):
//! - the target forwarded is the one reading's canonical target ([`crate::reading`]), under the
//!   upstream URL's path prefix;
//! - hop-by-hop headers (those pingora strips), payment headers and `X-Tollgate-*` are not
//!   forwarded, nor are underscored names ([`crate::challenge::underscored_dropped`]);
//! - `Host` becomes the upstream's (unless `preserve_host`), `X-Forwarded-Host` and
//!   `X-Forwarded-Proto` are added when absent, the client's address is appended to
//!   `X-Forwarded-For`.
//!
//! And to the answer what pingora does: `Date` and `Connection` are the gateway's, a
//! `Content-Length` beside `Transfer-Encoding` is dropped, a chunked body is decoded and chunked
//! again (extensions and trailers dropped), a body delimited by the upstream's close is sent
//! chunked, conflicting or invalid lengths are a 502 before anything reaches the client. An answer
//! that fails after its head was sent ends the client's connection (the client sees a short body,
//! never a second answer). The upstream connection goes back to the pool only when its answer was
//! framed, whole, and followed by nothing.
//!
//! The reading of the answer ([`Relay`]) does no I/O, so that the fuzz target `upstream_answer`
//! can feed it any bytes split anywhere.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::tenant::Upstream;

/// The same bounds the proxy sets on its upstream peers.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Request headers never forwarded: hop-by-hop (those pingora strips), the payment headers, and the
/// headers tollgate sets for the upstream.
const NOT_FORWARDED: [&str; 15] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "x-payment",
    "payment-signature",
    "x-tollgate-payer",
    "x-tollgate-tx",
    "x-tollgate-network",
];

/// Writes into `out` the head the upstream gets for a request read from `headers` (as parsed by
/// the front), to be forwarded as `method target` (the canonical target, without the upstream's
/// path prefix, which is added here).
#[allow(clippy::too_many_arguments)]
pub fn upstream_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[httparse::Header],
    up: &Upstream,
    keep_underscored: bool,
    tls: bool,
    ip: Option<IpAddr>,
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(up.path_prefix.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: Option<&[u8]> = None;
    let mut xff: Option<&[u8]> = None;
    let (mut has_xfh, mut has_xfp) = (false, false);
    for h in headers {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if NOT_FORWARDED.iter().any(|n| is(n)) {
            continue;
        }
        if name.contains('_') && crate::challenge::underscored_dropped(name, keep_underscored) {
            continue;
        }
        if is("host") {
            // The front takes only heads with at most one Host.
            host = Some(h.value);
            if up.preserve_host {
                field(out, name.as_bytes(), h.value);
            } else {
                field(out, b"Host", up.host_header.as_bytes());
            }
            continue;
        }
        if is("x-forwarded-for") && ip.is_some() {
            // The first one is extended; all are replaced by it (as the proxy does).
            xff.get_or_insert(h.value);
            continue;
        }
        has_xfh |= is("x-forwarded-host");
        has_xfp |= is("x-forwarded-proto");
        field(out, name.as_bytes(), h.value);
    }
    if host.is_none() && !up.preserve_host {
        field(out, b"Host", up.host_header.as_bytes());
    }
    if let (Some(h), false) = (host, has_xfh) {
        field(out, b"X-Forwarded-Host", h);
    }
    if !has_xfp {
        field(out, b"X-Forwarded-Proto", if tls { b"https" } else { b"http" });
    }
    if let Some(ip) = ip {
        let addr = crate::challenge::ip_header_value(ip);
        out.extend_from_slice(b"X-Forwarded-For: ");
        if let Some(prev) = xff {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(addr.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The largest upstream answer head (pingora's bound), and the most header lines in it.
const MAX_ANSWER_HEAD: usize = 1048575;
const MAX_ANSWER_HEADERS: usize = 256;
/// The longest chunk-size line or trailer section an answer may send.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an upstream's answer could not be relayed (for the log; the client gets a 502 or a close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad(pub &'static str);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What [`Relay::feed`] made of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The answer goes on: more bytes are needed.
    More,
    /// The answer is whole.
    Done,
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// None (204, 304).
    Empty,
    /// `Content-Length`: this much is left.
    Length(u64),
    /// Chunked: where in the chunk framing the reading is.
    Chunked(Chunk),
    /// Until the upstream closes (sent to the client chunked).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Reads one upstream answer and writes the client's copy of it; no I/O.
#[derive(Debug)]
pub struct Relay {
    keep_client: bool,
    status: u16,
    body: Option<Body>,
    /// The upstream connection may carry another request once this answer is whole.
    reusable: bool,
}

impl Relay {
    /// For a client connection that stays open after this answer (`keep_client`) or not.
    pub fn new(keep_client: bool) -> Relay {
        Relay {
            keep_client,
            status: 0,
            body: None,
            reusable: false,
        }
    }

    /// The answer's status, once its head was read (informational heads aside).
    pub fn status(&self) -> Option<u16> {
        self.body.is_some().then_some(self.status)
    }

    /// Whether the upstream connection may be used again (once [`Fed::Done`] and nothing follows).
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Reads what it can of the upstream's bytes at the start of `buf` (taking them out of it) and
    /// appends what the client is to get to `out`; `eof`: the upstream has closed. Bytes after a
    /// whole answer are left in `buf`. After an `Err`, nothing more should be fed.
    pub fn feed(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>, eof: bool) -> Result<Fed, Bad> {
        while self.body.is_none() {
            if !self.head(buf, out)? {
                if eof {
                    return Err(Bad(if buf.is_empty() {
                        "the upstream closed the connection without answering"
                    } else {
                        "the upstream closed the connection in the middle of its answer's head"
                    }));
                }
                return Ok(Fed::More);
            }
        }
        match self.body.expect("read") {
            Body::Empty => Ok(Fed::Done),
            Body::Length(left) => {
                let take = (left.min(buf.len() as u64)) as usize;
                out.extend_from_slice(&buf[..take]);
                buf.advance(take);
                let left = left - take as u64;
                self.body = Some(Body::Length(left));
                if left == 0 {
                    Ok(Fed::Done)
                } else if eof {
                    Err(Bad(
                        "the upstream closed the connection before the end of its answer's body",
                    ))
                } else {
                    Ok(Fed::More)
                }
            }
            Body::Close => {
                chunk(out, |o| {
                    o.extend_from_slice(buf);
                    buf.clear();
                });
                if eof {
                    out.extend_from_slice(b"0\r\n\r\n");
                    Ok(Fed::Done)
                } else {
                    Ok(Fed::More)
                }
            }
            Body::Chunked(state) => {
                let mut state = state;
                let read = chunk(out, |o| dechunk(&mut state, buf, o));
                self.body = Some(Body::Chunked(state));
                match read {
                    Err(b) => Err(b),
                    Ok(true) => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        Ok(Fed::Done)
                    }
                    Ok(false) if eof => Err(Bad(
                        "the upstream closed the connection before the end of its chunked answer",
                    )),
                    Ok(false) => Ok(Fed::More),
                }
            }
        }
    }

    /// Reads one head from `buf`: `false` when it has not all arrived. Informational answers are
    /// passed on and reading goes on to the next head.
    fn head(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, Bad> {
        if buf.is_empty() {
            return Ok(false);
        }
        // Left uninitialised: httparse writes the ones it uses (8 KB not cleared per answer).
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_ANSWER_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let n = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_ANSWER_HEAD => {
                return Err(Bad("the upstream's answer head is too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(Bad("the upstream's answer has too many headers")),
            Err(_) => return Err(Bad("the upstream's answer head is malformed")),
        };
        let code = resp.code.unwrap_or(0);
        let reason = resp.reason.unwrap_or("");
        let version = resp.version.unwrap_or(1);
        let headers: &[httparse::Header] = resp.headers;
        let status_line = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(itoa3(code).as_slice());
            out.push(b' ');
            out.extend_from_slice(reason.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        if code == 101 {
            return Err(Bad(
                "the upstream switched protocols for a request that asked for no upgrade",
            ));
        }
        if (100..200).contains(&code) {
            // Passed on (a proxy forwards the 1xx it did not ask for), then the real answer.
            status_line(out);
            for h in headers {
                if !is_hop(h.name) {
                    field(out, h.name.as_bytes(), h.value);
                }
            }
            out.extend_from_slice(b"\r\n");
            buf.advance(n);
            return Ok(true);
        }
        let mut te: Option<&[u8]> = None;
        let mut length: Option<u64> = None;
        let mut lengths_agree = true;
        let (mut close, mut keep_alive) = (false, false);
        for h in headers {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                for v in h.value.split(|&b| b == b',') {
                    match parse_length(v) {
                        Some(l) if length.is_none_or(|p| p == l) => length = Some(l),
                        _ => lengths_agree = false,
                    }
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|&b| b == b',') {
                    let t = t.trim_ascii();
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let body = if code == 204 || code == 304 {
            Body::Empty
        } else if let Some(te) = te {
            if last_token(te).eq_ignore_ascii_case(b"chunked") {
                Body::Chunked(Chunk::Size)
            } else {
                Body::Close
            }
        } else if !lengths_agree {
            return Err(Bad(
                "the upstream's answer has an invalid or conflicting Content-Length",
            ));
        } else if let Some(l) = length {
            Body::Length(l)
        } else {
            Body::Close
        };
        status_line(out);
        for h in headers {
            let is = |n: &str| h.name.eq_ignore_ascii_case(n);
            if is_hop(h.name) || is("date") {
                continue;
            }
            // Transfer-Encoding wins over Content-Length; a coding other than chunked is delimited
            // by the close, which the client gets chunked.
            if (te.is_some() && is("content-length")) || (body == Body::Close && is("transfer-encoding")) {
                continue;
            }
            field(out, h.name.as_bytes(), h.value);
        }
        if body == Body::Close {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
        out.extend_from_slice(if self.keep_client {
            b"\r\nconnection: keep-alive\r\n\r\n".as_slice()
        } else {
            b"\r\nconnection: close\r\n\r\n".as_slice()
        });
        self.status = code;
        self.reusable = body != Body::Close && if version == 1 { !close } else { keep_alive && !close };
        self.body = Some(body);
        buf.advance(n);
        Ok(true)
    }
}

/// Response headers that describe one connection: the gateway writes its own (`Connection`) or
/// none.
fn is_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive")
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A status code as its three digits (httparse reads only three-digit codes).
fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// A Content-Length token: digits only (spaces around allowed), at most 19 of them.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The last coding of a Transfer-Encoding value.
fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii()
}

/// Appends one chunk holding whatever `fill` appends to `out` (nothing when it appends nothing),
/// and gives back what `fill` returned. The size is written with leading zeros into room kept
/// before the data, so the data is copied once.
fn chunk<T>(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    const ROOM: usize = 10; // 8 hex digits and CRLF: chunks up to 4 GiB, more than one read holds
    let at = out.len();
    out.extend_from_slice(b"00000000\r\n");
    let filled = fill(out);
    let len = out.len() - at - ROOM;
    if len == 0 {
        out.truncate(at);
        return filled;
    }
    let hex = b"0123456789abcdef";
    for i in 0..8 {
        out[at + 7 - i] = hex[(len >> (4 * i)) & 0xf];
    }
    out.extend_from_slice(b"\r\n");
    filled
}

/// Decodes chunked framing from `buf` into `out` (the data only); `Ok(true)` at its end (after
/// the trailers, which are dropped).
fn dechunk(state: &mut Chunk, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, Bad> {
    loop {
        match *state {
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *state = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    return Err(Bad("the upstream sent a chunk-size line that is too long"))
                }
                Ok(httparse::Status::Partial) => return Ok(false),
                Err(_) => return Err(Bad("the upstream sent an invalid chunk size")),
            },
            Chunk::Data(left) => {
                let take = (left.min(buf.len() as u64)) as usize;
                if take == 0 {
                    return Ok(false);
                }
                out.extend_from_slice(&buf[..take]);
                buf.advance(take);
                *state = if left == take as u64 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - take as u64)
                };
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Bad("the upstream's chunk data is not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(true);
                }
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(i) if i + 2 <= MAX_TRAILERS => buf.advance(i + 2),
                    Some(_) => return Err(Bad("the upstream's trailers are too large")),
                    None if buf.len() > MAX_TRAILERS => return Err(Bad("the upstream's trailers are too large")),
                    None => return Ok(false),
                }
            }
        }
    }
}

/// An idle upstream connection, with its read buffer.
struct UpConn {
    stream: TcpStream,
    buf: BytesMut,
    since: Instant,
}

/// Idle upstream connections a worker keeps, across all upstreams (the oldest go first).
const POOL_MAX: usize = 256;
/// Dropped when idle longer than this.
const POOL_IDLE_MAX: Duration = Duration::from_secs(60);
/// Idle longer than this, a connection is checked for a close from the upstream before it is used
/// (a read that finds nothing); sooner, a close is met by one retry on a new connection.
const POOL_CHECK_AFTER: Duration = Duration::from_secs(1);

thread_local! {
    static POOL: RefCell<Vec<(SocketAddr, UpConn)>> = const { RefCell::new(Vec::new()) };
}

fn take(addr: SocketAddr) -> Option<UpConn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        while let Some(i) = p.iter().rposition(|(a, _)| *a == addr) {
            let (_, c) = p.remove(i);
            let idle = c.since.elapsed();
            if idle > POOL_IDLE_MAX {
                continue;
            }
            if idle > POOL_CHECK_AFTER {
                let mut probe = [0u8; 1];
                match c.stream.try_read(&mut probe) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // Closed, failed, or sent something unasked: not usable.
                    _ => continue,
                }
            }
            return Some(c);
        }
        None
    })
}

fn put(addr: SocketAddr, mut c: UpConn) {
    let now = Instant::now();
    c.since = now;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        // Oldest first: those idle too long (an upstream no longer used after a reload, say) go as
        // the pool is used, and the oldest when it is full.
        while p
            .first()
            .is_some_and(|(_, c)| now.duration_since(c.since) > POOL_IDLE_MAX)
            || p.len() >= POOL_MAX
        {
            p.remove(0);
        }
        p.push((addr, c));
    });
}

async fn connect(addr: SocketAddr) -> Result<UpConn, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to {addr}: {e}")),
        Err(_) => {
            return Err(format!(
                "connecting to {addr}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(UpConn {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
        since: Instant::now(),
    })
}

/// How a forwarded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// The status the client got (the upstream's, or 502); 0 when none was written.
    pub status: u16,
    /// The client's connection may carry its next request.
    pub keep: bool,
    /// The upstream's time to answer (request sent to answer head).
    pub upstream: Option<Duration>,
}

/// Sends `head` (from [`upstream_head`]) to `up` and relays its answer to `client`; `keep_client`:
/// whether the client's connection stays open after it. `out` is scratch room for the answer.
///
/// While the answer is awaited the client's connection is watched, as pingora does: a client that
/// goes away ends the request (and its upstream connection) at once. What it sends meanwhile (its
/// next, pipelined, request) is kept in `pipelined`, up to `watch_max` bytes.
pub async fn forward(
    client: &mut Conn,
    pipelined: &mut BytesMut,
    watch_max: usize,
    up: &Upstream,
    head: &[u8],
    keep_client: bool,
    out: &mut Vec<u8>,
) -> Forwarded {
    let addr = up.addr;
    let mut retried = false;
    'attempt: loop {
        // A retry goes on a new connection: the pool's others may be as stale as the first.
        let kept = if retried { None } else { take(addr) };
        let (mut c, reused) = match kept {
            Some(c) => (c, true),
            None => match connect(addr).await {
                Ok(c) => (c, false),
                Err(e) => return failed(client, &e).await,
            },
        };
        let sent = Instant::now();
        match tokio::time::timeout(IO_TIMEOUT, c.stream.write_all(head)).await {
            Ok(Ok(())) => {}
            // A kept connection the upstream closed meanwhile: once more on a new one.
            Ok(Err(_)) if reused && !retried => {
                retried = true;
                continue 'attempt;
            }
            Ok(Err(e)) => return failed(client, &format!("sending to {addr}: {e}")).await,
            Err(_) => {
                return failed(
                    client,
                    &format!("sending to {addr}: stalled for {} s", IO_TIMEOUT.as_secs()),
                )
                .await
            }
        }
        let mut relay = Relay::new(keep_client);
        let mut upstream = None;
        let mut received = false;
        let mut eof = false;
        let mut answered = false;
        c.buf.clear();
        out.clear();
        loop {
            let fed = relay.feed(&mut c.buf, out, eof);
            if upstream.is_none() && relay.status().is_some() {
                upstream = Some(sent.elapsed());
            }
            let status = relay.status().unwrap_or(0);
            match fed {
                Err(_) if !received && reused && !retried => {
                    // Nothing came back on a kept connection: it was closed before our request.
                    retried = true;
                    continue 'attempt;
                }
                Err(bad) if !answered && relay.status().is_none() => {
                    return failed(client, &format!("{bad} ({addr})")).await;
                }
                Err(bad) => {
                    // The client has (or is about to have) the head: all that can be done is to end
                    // its connection, so that it sees a short answer rather than a wrong one.
                    tracing::warn!(error = %bad, upstream = %addr, "upstream answer cut short");
                    if !out.is_empty() && client.write_all(out).await.is_ok() {
                        let _ = client.flush().await;
                    }
                    return Forwarded {
                        status,
                        keep: false,
                        upstream,
                    };
                }
                Ok(Fed::Done) => {
                    let wrote = client.write_all(out).await.is_ok() && client.flush().await.is_ok();
                    if relay.reusable() && c.buf.is_empty() && !eof {
                        put(addr, c);
                    }
                    return Forwarded {
                        status,
                        keep: wrote && keep_client,
                        upstream,
                    };
                }
                Ok(Fed::More) => {
                    if !out.is_empty() {
                        answered = true;
                        if client.write_all(out).await.is_err() || client.flush().await.is_err() {
                            return Forwarded {
                                status,
                                keep: false,
                                upstream,
                            };
                        }
                        out.clear();
                    }
                }
            }
            if c.buf.capacity() - c.buf.len() < 4096 {
                c.buf.reserve(16 * 1024);
            }
            let read = tokio::time::timeout(IO_TIMEOUT, c.stream.read_buf(&mut c.buf));
            let read = if pipelined.len() < watch_max {
                tokio::select! {
                    biased;
                    r = read => r,
                    r = client.read_buf(pipelined) => {
                        if matches!(r, Ok(n) if n > 0) {
                            continue;
                        }
                        tracing::debug!(route = "none", "client went away");
                        return Forwarded {
                            status,
                            keep: false,
                            upstream,
                        };
                    }
                }
            } else {
                read.await
            };
            match read {
                Ok(Ok(0)) => eof = true,
                Ok(Ok(_)) => received = true,
                Ok(Err(_)) if !received && reused && !retried => {
                    retried = true;
                    continue 'attempt;
                }
                Ok(Err(e)) if !answered && relay.status().is_none() => {
                    return failed(client, &format!("reading from {addr}: {e}")).await;
                }
                Err(_) if !answered && relay.status().is_none() => {
                    return failed(
                        client,
                        &format!("reading from {addr}: no answer within {} s", IO_TIMEOUT.as_secs()),
                    )
                    .await;
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(upstream = %addr, "upstream answer cut short (read failed or stalled)");
                    return Forwarded {
                        status,
                        keep: false,
                        upstream,
                    };
                }
            }
        }
    }
}

/// The upstream could not be reached or answered badly before anything went to the client: the
/// proxy's 502 (the cause goes to the log, not to the client), and the connection ends.
async fn failed(client: &mut Conn, why: &str) -> Forwarded {
    tracing::warn!(error = %why, route = "none", "upstream failed");
    let reply = crate::challenge::upstream_failed(
        "the API behind this gateway could not be reached; try again later",
        None,
        None,
    );
    let mut wire = Vec::with_capacity(256 + reply.body.len());
    wire.extend_from_slice(b"HTTP/1.1 502 Bad Gateway\r\n");
    for (k, v) in &reply.headers {
        field(&mut wire, k.as_bytes(), v.as_bytes());
    }
    field(&mut wire, b"content-length", reply.body.len().to_string().as_bytes());
    field(
        &mut wire,
        b"date",
        pingora_core::protocols::http::date::get_cached_date().as_bytes(),
    );
    wire.extend_from_slice(b"connection: close\r\n\r\n");
    wire.extend_from_slice(&reply.body);
    if client.write_all(&wire).await.is_ok() {
        let _ = client.flush().await;
    }
    Forwarded {
        status: 502,
        keep: false,
        upstream: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `answer` `step` bytes at a time (the upstream closing after it when `closes`).
    fn relay(answer: &[u8], step: usize, closes: bool) -> (Result<Fed, Bad>, Vec<u8>, Vec<u8>) {
        let mut r = Relay::new(true);
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        let mut fed = Ok(Fed::More);
        for (i, piece) in answer.chunks(step).enumerate() {
            buf.extend_from_slice(piece);
            let last = (i + 1) * step >= answer.len();
            fed = r.feed(&mut buf, &mut out, closes && last);
            if fed != Ok(Fed::More) {
                break;
            }
        }
        // The client's copy without its Date (which changes by the second).
        let text = String::from_utf8_lossy(&out).into_owned();
        let dateless: String = text
            .split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n");
        (fed, dateless.into_bytes(), buf.to_vec())
    }

    #[test]
    fn an_answer_reads_the_same_however_it_arrives() {
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nt: 1\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nlink: <a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        ];
        for a in answers {
            let closes = a.ends_with(b"until close");
            let whole = relay(a, a.len(), closes);
            assert_eq!(whole.0, Ok(Fed::Done), "{}", String::from_utf8_lossy(a));
            for step in [1, 2, 3, 7] {
                let (fed, out, _) = relay(a, step, closes);
                assert_eq!(fed, Ok(Fed::Done));
                // Chunked copies come in as many chunks as reads: compare them decoded.
                assert_eq!(
                    decoded(&out),
                    decoded(&whole.1),
                    "step {step}: {}",
                    String::from_utf8_lossy(a)
                );
            }
        }
        let (_, out, _) = relay(answers[1], answers[1].len(), false);
        // Re-chunked: the data only, sizes with leading zeros, no extension, no trailer.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n00000006\r\nhello!\r\n0\r\n\r\n"
        );
    }

    /// A client's copy with a chunked body decoded (the head as it is).
    fn decoded(out: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(out);
        if !text.contains("transfer-encoding: chunked") {
            return out.to_vec();
        }
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let (mut d, mut b) = (out[..at].to_vec(), &out[at..]);
        loop {
            let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(b) else {
                panic!("bad chunking: {text}");
            };
            b = &b[used..];
            if size == 0 {
                assert_eq!(b, b"\r\n");
                return d;
            }
            d.extend_from_slice(&b[..size as usize]);
            assert_eq!(&b[size as usize..size as usize + 2], b"\r\n");
            b = &b[size as usize + 2..];
        }
    }

    #[test]
    fn a_chunk_size_is_patched_in_place() {
        let mut out = b"x".to_vec();
        chunk(&mut out, |o| o.extend_from_slice(&[7u8; 300]));
        assert_eq!(&out[..11], b"x0000012c\r\n");
        assert_eq!(out.len(), 1 + 10 + 300 + 2);
        let mut empty = b"x".to_vec();
        chunk(&mut empty, |_| {});
        assert_eq!(empty, b"x");
    }

    #[test]
    fn framing_faults_are_refused_before_anything_reaches_the_client() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"not http at all\r\n\r\n",
        ] {
            let (fed, out, _) = relay(bad, bad.len(), false);
            assert!(fed.is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(out.is_empty(), "{}", String::from_utf8_lossy(bad));
        }
        // Equal lengths, repeated or listed, are one length.
        let (fed, _, _) = relay(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
            64,
            false,
        );
        assert_eq!(fed, Ok(Fed::Done));
        // A bad chunk after the head: an error (the driver then ends the client's connection).
        let (fed, _, _) = relay(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            64,
            false,
        );
        assert!(fed.is_err());
        // Closed early: an error, not a short answer called whole.
        let (fed, _, _) = relay(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort", 64, true);
        assert!(fed.is_err());
    }

    #[test]
    fn bytes_after_an_answer_stay_out_of_it_and_keep_the_connection_from_reuse() {
        let (fed, out, left) = relay(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA", 64, false);
        assert_eq!(fed, Ok(Fed::Done));
        assert!(out.ends_with(b"\r\n\r\nok"));
        assert_eq!(left, b"EXTRA", "left for the driver, which then drops the connection");
        let mut r = Relay::new(false);
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"[..]);
        let mut out = Vec::new();
        assert_eq!(r.feed(&mut buf, &mut out, false), Ok(Fed::Done));
        assert!(!r.reusable(), "HTTP/1.0 without keep-alive");
        assert!(String::from_utf8_lossy(&out).ends_with("connection: close\r\n\r\n"));
    }

    #[test]
    fn the_upstream_head_is_the_proxys() {
        let up = Upstream::parse("http://127.0.0.1:8080/v1", false).unwrap();
        let raw = b"GET /a?b HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 9.9.9.9\r\nKeep-Alive: 1\r\nX_Tollgate_Payer: 1\r\nX-Tollgate-Tx: 2\r\nAccept: */*\r\n\r\n";
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut h);
        req.parse(raw).unwrap();
        let mut out = Vec::new();
        upstream_head(
            &mut out,
            "GET",
            "/a?b",
            req.headers,
            &up,
            true,
            false,
            Some("10.0.0.1".parse().unwrap()),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /v1/a?b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nX-Forwarded-Host: api.test\r\nX-Forwarded-Proto: http\r\nX-Forwarded-For: 9.9.9.9, 10.0.0.1\r\n\r\n"
        );
    }
}
