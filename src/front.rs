//! The connection front: the first thing a plain-HTTP connection meets.
//!
//! Most traffic a paywall sees is the unpaid request to a priced route, answered by a 402 that
//! never touches the upstream. pingora spends most of its per-request CPU on machinery that answer
//! does not need (a boxed session with its modules and phases, a header map, the response header
//! built and serialised again). The front reads each request head itself and, when it is exactly
//! that case, writes the worker's cached 402 bytes straight back (README, Performance, has what
//! that changed). A plain bodiless request to a free route it forwards itself
//! ([`crate::forward`]). Every other request (paid, preflight, anything with a body or
//! anything unusual) is handed to the pingora proxy with the bytes already read
//! ([`crate::fenced::Fenced`]), so pingora sees exactly what the client sent; when pingora is done
//! with it, the connection comes back here for its next request.
//!
//! The front is deliberately narrow: it answers only GET/POST/… requests in HTTP/1.1 without a
//! body, without `Connection` options other than keep-alive, without a payment header, whose head
//! parses cleanly. Anything else is pingora's, byte for byte, fenced after its own end
//! ([`crate::fenced`]) so that what the client pipelined behind it stays here.
//!
//! It is also where a connection's resources are bounded, before pingora sees anything: a head must
//! fit in `limits.max_head_bytes` (else 431) and arrive within `limits.head_timeout_secs` of its first
//! byte (else 408, which ends slow-loris connections); an idle keep-alive connection is closed after
//! `limits.idle_timeout_secs`; and the process holds at most `limits.max_connections` client
//! connections (more are answered 503 and closed, before the open-file limit is reached).
//!
//! Unpaid 402s answered here never pass through the proxy's phases (`logging` included): anything
//! counted per request (metrics) must be counted here too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::Conn;
use bytes::{Buf, BytesMut};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::Live;
use crate::challenge;
use crate::config::LimitsConfig;
use crate::fenced::Fenced;
use crate::proxy::Proxy;
use crate::reading;

/// During a shutdown, how long a connection accepted just before it may take to start its first
/// request.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// Request heads with more headers than this go to pingora (which allows more).
const MAX_HEADERS: usize = 48;

/// What every worker's front shares: the limits, and the counts they are judged by.
#[derive(Debug)]
pub struct Connections {
    limits: LimitsConfig,
    max_open: usize,
    open: AtomicUsize,
    busy: AtomicUsize,
}

impl Connections {
    pub fn new(limits: LimitsConfig, max_open: usize) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            max_open,
            open: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    /// The limits connections are held to.
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Requests being answered right now (a shutdown waits for these).
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Client connections open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more client connection, if the cap allows.
    pub fn enter(self: &Arc<Self>) -> Option<Slot> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.clone());
        (n < self.max_open).then_some(slot)
    }

    fn working(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// One open connection, counted until dropped.
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request being answered, counted until dropped.
struct Busy(Arc<Connections>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The server application of each worker: the front, and the pingora proxy behind it.
pub struct Front {
    proxy: Arc<HttpProxy<Proxy>>,
    live: Arc<Live>,
    conns: Arc<Connections>,
}

impl Front {
    pub fn new(proxy: HttpProxy<Proxy>, live: Arc<Live>, conns: Arc<Connections>) -> Self {
        Front {
            proxy: Arc::new(proxy),
            live,
            conns,
        }
    }
}

/// Who sent a request: the client's address (for per-IP limits), and whether over TLS (for the
/// resource URL's scheme).
#[derive(Debug, Clone, Copy, Default)]
pub struct Client {
    pub ip: Option<std::net::IpAddr>,
    pub tls: bool,
}

/// What the front makes of the bytes it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// An unpaid request to a priced route, `n` bytes long, answered by `out`.
    Unpaid(usize),
    /// The same, over its tenant's per-IP rate limit: `out` holds the 429.
    Limited(usize),
    /// A plain bodiless request to a free route (or none), `n` bytes long, for the front to forward
    /// ([`crate::forward`]): `out` holds the head its upstream gets.
    Free(usize, Free),
    /// Not all of the head has arrived.
    Partial,
    /// Anything else: pingora's. With the request's length in bytes (head and body) when the head
    /// is whole and says how long the body is.
    Other(Option<usize>),
}

/// The tenant whose upstream a [`Head::Free`] request goes to.
#[derive(Clone)]
pub struct Free {
    pub tenant: Arc<crate::tenant::Tenant>,
}

impl PartialEq for Free {
    fn eq(&self, other: &Free) -> bool {
        Arc::ptr_eq(&self.tenant, &other.tenant)
    }
}

impl Eq for Free {}

impl std::fmt::Debug for Free {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Free({})", self.tenant.id)
    }
}

enum Step {
    Answered,
    /// Forward the request whose upstream head is in `out` (the client's bytes are consumed).
    Forward(Free),
    /// Hand the request at the start of the buffer to pingora; its length when known.
    Delegate(Option<usize>),
    Close,
}

/// Answers the front writes itself when a client oversteps a limit (and then closes).
fn refusal(status: &str, error: &str, detail: &str) -> Vec<u8> {
    let body = format!(r#"{{"error":"{error}","detail":"{detail}"}}"#);
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes a refusal and closes without losing it: a close with unread input resets the connection,
/// and the client may then never read the answer (nginx's lingering close).
async fn refuse_and_close(conn: &mut Conn, answer: &[u8]) {
    if conn.write_all(answer).await.is_err() || conn.flush().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = conn.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Front {
    /// Serves one client connection, request after request, until it closes; `slot` is its place
    /// under the connection cap ([`Connections::enter`]), held until then.
    pub async fn serve(
        self: &Arc<Self>,
        mut conn: Conn,
        ip: Option<std::net::IpAddr>,
        _slot: Slot,
        shutdown: &ShutdownWatch,
    ) {
        let limits = &self.conns.limits;
        let mut shutdown = shutdown.clone();
        let mut buf = BytesMut::with_capacity(2048);
        let mut out = Vec::with_capacity(2048);
        let mut settings: Option<HttpPersistentSettings> = None;
        let peer = Client { ip, tls: conn.is_tls() };
        // A new connection owes its client an answer to its first request: a shutdown (or an
        // upgrade handing the socket to the next process) waits for it, briefly.
        let mut fresh = Some(self.conns.working());
        // The client's copy of forwarded answers (made on the first).
        let mut relayed = Vec::new();
        loop {
            let step = self
                .step(&mut conn, peer, fresh.is_some(), &mut buf, &mut out, &mut shutdown)
                .await;
            fresh = None;
            match step {
                Step::Answered => continue,
                Step::Close => return,
                Step::Forward(free) => {
                    let _busy = self.conns.working();
                    let keep = !*shutdown.borrow();
                    let done = crate::forward::forward(
                        &mut conn,
                        &mut buf,
                        limits.max_head_bytes,
                        &free.tenant.upstream,
                        &out,
                        keep,
                        &mut relayed,
                    )
                    .await;
                    count_forwarded(&free.tenant, &done);
                    if relayed.capacity() > 64 * 1024 {
                        relayed = Vec::new();
                    }
                    if !done.keep {
                        return;
                    }
                }
                Step::Delegate(len) => {
                    let _busy = self.conns.working();
                    // pingora reads the request from the start, as the client sent it, and nothing
                    // after it: what was pipelined behind it stays here for the next turn.
                    let fenced = Fenced::new(conn, std::mem::take(&mut buf), len, limits.max_head_bytes);
                    let mut session = ServerSession::new_http1(Box::new(fenced));
                    match settings.take() {
                        // Keep-alive state pingora carries between its own requests.
                        Some(s) => s.apply_to_session(&mut session),
                        None => session.set_keepalive(Some(limits.idle_timeout_secs)),
                    }
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    }
                    let Some(reused) = self.proxy.process_new_http(session, &shutdown).await else {
                        return;
                    };
                    let (stream, next) = reused.consume();
                    settings = next;
                    // pingora hands back the stream it was given.
                    let Ok(fenced) = stream.into_any().downcast::<Fenced>() else {
                        return;
                    };
                    (conn, buf) = fenced.into_parts();
                }
            }
        }
    }
}

/// Counts a request the front forwarded, as the proxy's `logging` counts one it forwarded.
fn count_forwarded(tenant: &crate::tenant::Tenant, done: &crate::forward::Forwarded) {
    let m = &crate::metrics::METRICS;
    if !m.enabled() {
        return;
    }
    if let Some(t) = done.upstream {
        m.upstream_seconds.observe(t.as_secs_f64());
    }
    match crate::proxy::free_outcome(done.status) {
        "free" => tenant
            .served_free
            .get_or_init(|| m.request_counter(&tenant.id, "none", "free"))
            .inc(),
        outcome => m.request(&tenant.id, "none", outcome),
    }
}

/// The answer to a connection over the cap, written without waiting and followed by a close.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 93\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":\"too_many_connections\",\"detail\":\"the gateway holds its most connections; try again\"}";

impl Front {
    /// Answers one request from `buf` (reading more as needed, within the head limits) or says who
    /// else should.
    async fn step(
        &self,
        conn: &mut Conn,
        peer: Client,
        fresh: bool,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        shutdown: &mut ShutdownWatch,
    ) -> Step {
        let limits = &self.conns.limits;
        let idle = Duration::from_secs(limits.idle_timeout_secs);
        let head_time = Duration::from_secs(limits.head_timeout_secs);
        // The head's deadline runs from its first byte.
        let mut deadline = (!buf.is_empty()).then(|| tokio::time::Instant::now() + head_time);
        loop {
            if !buf.is_empty() {
                let app = self.live.load();
                match read_head(&app.directory, &app.settings, peer, buf, out) {
                    Head::Free(n, free) => {
                        buf.advance(n);
                        return Step::Forward(free);
                    }
                    Head::Unpaid(n) | Head::Limited(n) => {
                        let _busy = self.conns.working();
                        buf.advance(n);
                        if conn.write_all(out).await.is_err() || conn.flush().await.is_err() {
                            return Step::Close;
                        }
                        return Step::Answered;
                    }
                    Head::Other(len) if len.is_some() || head_end(buf, limits.max_head_bytes).is_some() => {
                        return Step::Delegate(len)
                    }
                    // A head that does not parse (or has too many headers for the front) is
                    // pingora's to answer, once it is whole and within the limit.
                    Head::Partial | Head::Other(None) if buf.len() >= limits.max_head_bytes => {
                        let answer = refusal(
                            "431 Request Header Fields Too Large",
                            "request_head_too_large",
                            &format!("the request head exceeds {} bytes", limits.max_head_bytes),
                        );
                        refuse_and_close(conn, &answer).await;
                        return Step::Close;
                    }
                    Head::Partial | Head::Other(_) => {}
                }
            } else if *shutdown.borrow() && !fresh {
                // Shutting down between requests: close, as pingora does. (A new connection's
                // first request, on its way, is still answered.)
                return Step::Close;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(2048);
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                // Shutting down: a new connection's first request has a second to start.
                None if fresh && *shutdown.borrow() => idle.min(FIRST_REQUEST_AT_SHUTDOWN),
                None => idle,
            };
            let read = tokio::select! {
                biased;
                r = tokio::time::timeout(wait, conn.read_buf(buf)) => r,
                // Shutting down: close an idle connection; give a new one its second.
                _ = shutdown.changed(), if deadline.is_none() => {
                    if fresh {
                        continue;
                    }
                    return Step::Close;
                }
            };
            match read {
                Ok(Ok(n)) if n > 0 => {
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + head_time);
                }
                Err(_) if deadline.is_some() => {
                    let answer = refusal(
                        "408 Request Timeout",
                        "request_timeout",
                        &format!("the request head did not arrive within {} s", limits.head_timeout_secs),
                    );
                    refuse_and_close(conn, &answer).await;
                    return Step::Close;
                }
                // Closed, failed, or idle too long.
                _ => return Step::Close,
            }
        }
    }
}

/// Parses the head at the start of `buf`; for an unpaid request to a priced route of a tenant the
/// directory knows without asking the database, writes the whole 402 into `out` (or the 429 of the
/// tenant's per-IP rate limit, for a client `peer` over it). No I/O (the fuzz target
/// `request_head` drives it).
pub fn read_head(
    directory: &crate::directory::Directory,
    settings: &crate::config::Settings,
    client: Client,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other(None),
    };
    // Only requests the front hands on need their length: worked out then, not for every 402.
    let headers: &[httparse::Header] = req.headers;
    let tunnel = req.method == Some("CONNECT");
    let other = || Head::Other(if tunnel { None } else { request_len(n, headers) });
    if req.version != Some(1) {
        return other();
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return other();
    };
    // OPTIONS (preflight), HEAD (no body), CONNECT and lower-case methods are pingora's, and so
    // is any target that is not a plain path.
    if !matches!(method, "GET" | "POST" | "PUT" | "DELETE" | "PATCH") || !target.starts_with('/') {
        return other();
    }
    let mut seen = Seen::default();
    for h in req.headers.iter() {
        if !seen.note(h.name, h.value) {
            return other();
        }
    }
    let Some(found) = directory.cached(seen.host, target.as_bytes()) else {
        return other();
    };
    let tenant = &found.tenant;
    // A suspended tenant's answer is the proxy's (403), not a 402 inviting payment.
    if tenant.hosted.as_ref().is_some_and(|h| !h.active) {
        return other();
    }
    let tls = client.tls;
    // Everything that chooses and shapes the answer, as one key: answered before, the same head
    // gets the same bytes without reading, routing and rendering again.
    let mut key = ANSWERS.with(|a| std::mem::take(&mut a.borrow_mut().key));
    let keyed = answer_key(&mut key, tenant, found.prefix, method, target, &seen, tls);
    let cached = if keyed {
        ANSWERS.with(|a| a.borrow().get(&key, tenant, settings))
    } else {
        None
    };
    let fresh = cached.is_none();
    let rendered = match cached {
        Some((route_at, head, body)) => Some(Rendered::Priced(route_at, head, body)),
        None => render(settings, &found, method, target, &seen, tls),
    };
    let (route_at, head, body) = match rendered {
        Some(Rendered::Priced(route_at, head, body)) => {
            ANSWERS.with(|a| {
                let mut a = a.borrow_mut();
                if fresh && keyed {
                    a.insert(&key, tenant, settings, route_at, &head, &body);
                }
                a.key = key;
            });
            (route_at, head, body)
        }
        Some(Rendered::Free(forwarded)) => {
            ANSWERS.with(|a| a.borrow_mut().key = key);
            // Forwarded by the front only to a plain-HTTP upstream; TLS upstreams are pingora's.
            if tenant.upstream.tls {
                return other();
            }
            if let Some(limited) = ip_limit(tenant, client, "none", n, out) {
                return limited.unwrap_or_else(other);
            }
            crate::forward::upstream_head(
                out,
                method,
                forwarded.as_deref().unwrap_or(target),
                headers,
                &tenant.upstream,
                tenant.rules.keep_underscored_headers,
                tls,
                client.ip,
            );
            return Head::Free(n, Free { tenant: tenant.clone() });
        }
        None => {
            ANSWERS.with(|a| a.borrow_mut().key = key);
            return other();
        }
    };
    let route = &tenant.routes[route_at];
    if let Some(limited) = ip_limit(tenant, client, route.label(), n, out) {
        return limited.unwrap_or_else(other);
    }
    out.clear();
    out.extend_from_slice(&head);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
    out.extend_from_slice(b"\r\nconnection: keep-alive\r\n\r\n");
    out.extend_from_slice(&body);
    let m = &crate::metrics::METRICS;
    if m.enabled() {
        route
            .challenged
            .get_or_init(|| m.request_counter(&tenant.id, route.label(), "challenged"))
            .inc();
    }
    Head::Unpaid(n)
}

/// The tenant's per-IP rate limit for a request the front would answer or forward: `None` when
/// it lets the request through; `Some(Some(Limited))` with the 429 in `out` when over it;
/// `Some(None)` when the limit is kept in Redis (which needs an await: the proxy checks it).
fn ip_limit(
    tenant: &crate::tenant::Tenant,
    client: Client,
    label: &str,
    n: usize,
    out: &mut Vec<u8>,
) -> Option<Option<Head>> {
    let (Some(limits), Some(ip)) = (&tenant.limits, client.ip) else {
        return None;
    };
    if !limits.ip_is_local() {
        return Some(None);
    }
    let Err(d) = limits.check_ip_local(tenant.number, ip) else {
        return None;
    };
    d.wire(out);
    crate::metrics::METRICS.request(&tenant.id, label, "rate_limited");
    Some(Some(Head::Limited(n)))
}

/// What [`render`] makes of a head.
enum Rendered {
    /// An unpaid request to a priced route: the route (an index into the tenant's routes), and the
    /// 402's head (without Date and Connection) and body.
    Priced(usize, bytes::Bytes, bytes::Bytes),
    /// A request to a free route, or to none: forwarded, under its canonical target when that is
    /// not the target sent.
    Free(Option<String>),
}

/// What the front does with a head it may answer, worked out from the start: the 402 of a priced
/// route, or forwarding for a free one; `None` when it is pingora's to answer.
fn render(
    settings: &crate::config::Settings,
    found: &crate::directory::Found,
    method: &str,
    target: &str,
    seen: &Seen,
    tls: bool,
) -> Option<Rendered> {
    let tenant = &found.tenant;
    // The same reading as the proxy's; anything it refuses is pingora's to answer (400).
    let request = reading::Request {
        method,
        target: &target.as_bytes()[found.prefix..],
        ..Default::default()
    };
    let read = reading::read(&request, &tenant.rules).ok()?;
    if !read.also.is_empty() || read.path() == crate::discovery::WELL_KNOWN {
        return None;
    }
    let Some((route_at, route)) = tenant.route_for(&read) else {
        return Some(Rendered::Free(read_target(&read, found.prefix)));
    };
    let Some(pricing) = route.pricing.as_ref() else {
        return Some(Rendered::Free(read_target(&read, found.prefix)));
    };
    let full;
    let path = if found.prefix > 0 {
        full = format!("{}{}", &target[..found.prefix], read.path());
        full.as_str()
    } else {
        read.path()
    };
    let asked = challenge::asked_raw(
        &read.method,
        path,
        settings.public_url.as_deref(),
        seen.x_forwarded_proto.or(tls.then_some(b"https".as_slice())),
        seen.x_forwarded_host,
        seen.host,
    );
    let cors = challenge::allowed_origin_raw(seen.origin, &settings.cors_origins);
    let (head, body) = challenge::unpaid_wire(pricing, &asked, cors.as_deref()).ok()?;
    Some(Rendered::Priced(route_at, head, body))
}

/// The target a free request is forwarded under: the reading's canonical one when it differs
/// from what was sent (or the request came under a tenant prefix), as the proxy forwards it.
fn read_target(read: &reading::Reading, prefix: usize) -> Option<String> {
    (read.rewritten() || prefix > 0).then(|| read.target.to_string())
}

/// Heads longer than this (in the parts that shape the answer) are rendered each time.
const ANSWER_MAX_KEY: usize = 1024;
/// What one worker's answers may hold (keys and bytes) before they are dropped and begun again.
const ANSWERS_BYTES: usize = 2 << 20;

/// The 402s a worker has written, by [`answer_key`].
#[derive(Default)]
struct Answers {
    map: std::collections::HashMap<Box<[u8]>, Answer, foldhash::fast::RandomState>,
    bytes: usize,
    /// The key being worked with (kept to spare an allocation per request).
    key: Vec<u8>,
}

/// One answer and what else it was made from: the tenant (held, so that its address in the key
/// names it and no other), and the settings that shape the URL and CORS.
struct Answer {
    tenant: Arc<crate::tenant::Tenant>,
    public_url: Option<String>,
    cors_origins: Vec<String>,
    route: usize,
    head: bytes::Bytes,
    body: bytes::Bytes,
}

thread_local! {
    static ANSWERS: std::cell::RefCell<Answers> = std::cell::RefCell::new(Answers::default());
}

impl Answers {
    fn get(
        &self,
        key: &[u8],
        tenant: &Arc<crate::tenant::Tenant>,
        settings: &crate::config::Settings,
    ) -> Option<(usize, bytes::Bytes, bytes::Bytes)> {
        let a = self.map.get(key)?;
        (Arc::ptr_eq(&a.tenant, tenant)
            && a.public_url == settings.public_url
            && a.cors_origins == settings.cors_origins)
            .then(|| (a.route, a.head.clone(), a.body.clone()))
    }

    fn insert(
        &mut self,
        key: &[u8],
        tenant: &Arc<crate::tenant::Tenant>,
        settings: &crate::config::Settings,
        route: usize,
        head: &bytes::Bytes,
        body: &bytes::Bytes,
    ) {
        let size = key.len() + head.len() + body.len() + 256;
        if self.bytes + size > ANSWERS_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        let answer = Answer {
            tenant: tenant.clone(),
            public_url: settings.public_url.clone(),
            cors_origins: settings.cors_origins.clone(),
            route,
            head: head.clone(),
            body: body.clone(),
        };
        if self.map.insert(key.into(), answer).is_none() {
            self.bytes += size;
        }
    }
}

/// Writes into `key` everything [`render`] reads (the tenant, its prefix, whether over TLS, the
/// method, the target, and the Host, X-Forwarded-Host, X-Forwarded-Proto and Origin values), each
/// length-prefixed so that no two heads share a key; `false` when too long to keep.
fn answer_key(
    key: &mut Vec<u8>,
    tenant: &Arc<crate::tenant::Tenant>,
    prefix: usize,
    method: &str,
    target: &str,
    seen: &Seen,
    tls: bool,
) -> bool {
    key.clear();
    key.extend_from_slice(&(Arc::as_ptr(tenant) as usize).to_ne_bytes());
    key.extend_from_slice(&(prefix as u32).to_ne_bytes());
    key.push(tls as u8);
    let parts = [
        Some(method.as_bytes()),
        Some(target.as_bytes()),
        seen.host,
        seen.x_forwarded_host,
        seen.x_forwarded_proto,
        seen.origin,
    ];
    for part in parts {
        match part {
            Some(p) if p.len() <= ANSWER_MAX_KEY => {
                key.extend_from_slice(&(p.len() as u32).to_ne_bytes());
                key.extend_from_slice(p);
            }
            Some(_) => return false,
            None => key.extend_from_slice(&u32::MAX.to_ne_bytes()),
        }
    }
    key.len() <= ANSWER_MAX_KEY
}

/// Where the head at the start of `buf` ends (after its blank line; httparse also accepts bare LF
/// line ends), if it does within `max` bytes.
fn head_end(buf: &[u8], max: usize) -> Option<usize> {
    let b = &buf[..buf.len().min(max)];
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long a request with this whole head is, head and body, when its headers say so plainly:
/// no Transfer-Encoding, and no Content-Length or only equal valid ones.
fn request_len(head: usize, headers: &[httparse::Header]) -> Option<usize> {
    let mut body: Option<usize> = None;
    for h in headers {
        // Chunked bodies and upgraded connections have no length the head states: no fence.
        if h.name.eq_ignore_ascii_case("transfer-encoding") || h.name.eq_ignore_ascii_case("upgrade") {
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
        if reading::OVERRIDE_HEADERS.iter().any(|h| is(h)) {
            return false;
        }
        if is("connection") {
            return value.eq_ignore_ascii_case(b"keep-alive");
        }
        let first = |slot: &mut Option<&'a [u8]>| {
            slot.get_or_insert(value);
        };
        if is("host") {
            // Two Hosts, or userinfo in one, is a malformed request: pingora's to refuse (400).
            if self.host.is_some() || value.contains(&b'@') {
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
        assert!(!note_all(&[("Host", "user@a")]), "userinfo in Host");
    }

    #[test]
    fn the_connection_refusal_is_well_formed() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = r.parse(TOO_MANY_CONNECTIONS).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(r.code, Some(503));
        let len = r.headers.iter().find(|h| h.name == "content-length").unwrap();
        assert_eq!(
            std::str::from_utf8(len.value).unwrap(),
            (TOO_MANY_CONNECTIONS.len() - n).to_string()
        );
        let body: serde_json::Value = serde_json::from_slice(&TOO_MANY_CONNECTIONS[n..]).unwrap();
        assert_eq!(body["error"], "too_many_connections");
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

    fn drop_in(extra: &str) -> (crate::config::Settings, crate::directory::Directory) {
        let text = format!(
            r#"{extra}
upstream = "http://127.0.0.1:8080"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
[networks.base]
rpc_url = "http://127.0.0.1:8545"
[[routes]]
path = "/paid/*"
price = "$0.01"
[[routes]]
path = "/free"
price = "free"
"#
        );
        let (settings, tenant) = crate::config::build(toml::from_str(&text).unwrap()).unwrap();
        (settings, crate::directory::Directory::One(Arc::new(tenant)))
    }

    /// The answer's bytes without its Date line (which moves with the clock).
    fn answer(d: &crate::directory::Directory, s: &crate::config::Settings, tls: bool, head: &str) -> Option<String> {
        let mut out = Vec::new();
        let client = Client { ip: None, tls };
        match read_head(d, s, client, head.as_bytes(), &mut out) {
            Head::Unpaid(n) => assert_eq!(n, head.len()),
            _ => return None,
        }
        let text = String::from_utf8(out).unwrap();
        Some(
            text.lines()
                .filter(|l| !l.starts_with("date: "))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// The heads the front forwards itself, and the upstream head it writes: only plain bodiless
    /// requests to a free route (or none) of a plain-HTTP upstream (the e2e comparisons in
    /// tests/e2e/forwarding.rs rest on this: they would pass as well if nothing were forwarded).
    #[test]
    fn plain_free_heads_are_forwarded_by_the_front() {
        let (s, d) = drop_in("");
        let client = Client {
            ip: Some("10.0.0.7".parse().unwrap()),
            tls: false,
        };
        let read = |head: &str| {
            let mut out = Vec::new();
            let h = read_head(&d, &s, client, head.as_bytes(), &mut out);
            (h, String::from_utf8(out).unwrap())
        };
        for head in [
            "GET /free HTTP/1.1\r\nHost: api.test\r\n\r\n",
            "DELETE /nowhere/./x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (h, out) = read(head);
            assert!(matches!(h, Head::Free(n, _) if n == head.len()), "{head:?}: {h:?}");
            assert!(out.contains("\r\nHost: 127.0.0.1:8080\r\n"), "{out}");
            assert!(out.contains("\r\nX-Forwarded-For: 10.0.0.7\r\n"), "{out}");
        }
        assert!(read("DELETE /nowhere/./x HTTP/1.1\r\nHost: a\r\n\r\n")
            .1
            .starts_with("DELETE /nowhere/x HTTP/1.1\r\n"));
        // A body, a payment, HEAD, or a TLS upstream: pingora's. A priced route: the 402.
        for head in [
            "POST /free HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
            "GET /free HTTP/1.1\r\nHost: a\r\nX-PAYMENT: e30=\r\n\r\n",
            "HEAD /free HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(matches!(read(head).0, Head::Other(_)), "{head:?}");
        }
        assert!(matches!(
            read("GET /paid/x HTTP/1.1\r\nHost: a\r\n\r\n").0,
            Head::Unpaid(_)
        ));
        let (s, d) = {
            let (s, d) = drop_in("");
            let crate::directory::Directory::One(t) = d else {
                unreachable!()
            };
            let mut t = Arc::try_unwrap(t).unwrap();
            t.upstream = crate::tenant::Upstream::parse("https://127.0.0.1:8443", false).unwrap();
            (s, crate::directory::Directory::One(Arc::new(t)))
        };
        let mut out = Vec::new();
        let h = read_head(&d, &s, client, b"GET /free HTTP/1.1\r\nHost: a\r\n\r\n", &mut out);
        assert!(matches!(h, Head::Other(_)), "a TLS upstream is pingora's: {h:?}");
    }

    fn resource(answer: &str) -> String {
        let body = &answer[answer.find("\n{").unwrap() + 1..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["accepts"][0]["resource"].as_str().unwrap().to_string()
    }

    #[test]
    fn answers_given_again_are_those_rendered_for_the_same_head() {
        let (s, d) = drop_in("");
        let get = |host: &str, extra: &str, path: &str, tls: bool| {
            let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
            answer(&d, &s, tls, &head)
        };
        let first = get("a.example", "", "/paid/x", false).unwrap();
        assert_eq!(resource(&first), "http://a.example/paid/x");
        // Served again (from the worker's table), the same bytes.
        assert_eq!(get("a.example", "", "/paid/x", false).unwrap(), first);
        // Every part that shapes the answer makes its own.
        assert_eq!(
            resource(&get("b.example", "", "/paid/x", false).unwrap()),
            "http://b.example/paid/x"
        );
        assert_eq!(
            resource(&get("a.example", "", "/paid/y", false).unwrap()),
            "http://a.example/paid/y"
        );
        assert_eq!(
            resource(&get("a.example", "", "/paid/x", true).unwrap()),
            "https://a.example/paid/x"
        );
        assert_eq!(
            resource(&get("a.example", "X-Forwarded-Host: c.example\r\n", "/paid/x", false).unwrap()),
            "http://c.example/paid/x"
        );
        assert_eq!(
            resource(&get("a.example", "X-Forwarded-Proto: https\r\n", "/paid/x", false).unwrap()),
            "https://a.example/paid/x"
        );
        // Parts that run together differently are different heads.
        assert_eq!(
            resource(&get("a.exampl", "X-Forwarded-Proto: ehttps\r\n", "/paid/x", false).unwrap()),
            "http://a.exampl/paid/x"
        );
        // A free route is never the front's, answered before or not.
        assert_eq!(get("a.example", "", "/free", false), None);
        assert_eq!(get("a.example", "", "/free", false), None);
        // Another configuration (a reload): its own answers, not the last one's.
        let (s2, d2) = drop_in(r#"public_url = "https://api.example.com""#);
        let head = "GET /paid/x HTTP/1.1\r\nHost: a.example\r\n\r\n";
        assert_eq!(
            resource(&answer(&d2, &s2, false, head).unwrap()),
            "https://api.example.com/paid/x"
        );
        assert_eq!(
            resource(&answer(&d, &s, false, head).unwrap()),
            "http://a.example/paid/x"
        );
        // The same tenant under other settings (public_url, CORS) is answered under those.
        assert_eq!(
            resource(&answer(&d, &s2, false, head).unwrap()),
            "https://api.example.com/paid/x"
        );
        // The Origin is part of the answer when the settings allow it, and of its key.
        let (s3, d3) = drop_in(r#"cors = { allow_origins = ["https://app.example"] }"#);
        let with = |origin: &str| {
            let head = format!("GET /paid/x HTTP/1.1\r\nHost: a.example\r\nOrigin: {origin}\r\n\r\n");
            answer(&d3, &s3, false, &head).unwrap()
        };
        let allowed = "access-control-allow-origin: https://app.example";
        assert!(with("https://app.example").contains(allowed));
        assert!(!with("https://other.example").contains("access-control-allow-origin"));
        assert!(with("https://app.example").contains(allowed), "answered again");
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
