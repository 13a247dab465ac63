//! Everything tollgate answers itself, in one place: the 402 challenge, refusals (400/402/503),
//! upstream failures (502), CORS, and the headers a forwarded request carries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde::Serialize;

use crate::payment::Refusal;
use crate::reading::{Reading, Refused, Request, Rules, OVERRIDE_HEADERS};
use crate::tenant::{Pricing, Tenant, Upstream};
use crate::x402::requirements::{payment_required_v1, payment_required_v2};
use crate::x402::{
    encode_header, reason, Asked, DecodeError, RequirementsV1, Resource, SettleResponse, Version, MAX_HEADER_BYTES,
};

/// Header names, parsed once (looking a header up by `&str` parses the name every time).
pub mod names {
    use http::header::HeaderName;
    pub const X_PAYMENT: HeaderName = HeaderName::from_static("x-payment");
    pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_TOLLGATE_PAYER: HeaderName = HeaderName::from_static("x-tollgate-payer");
    pub const X_TOLLGATE_TX: HeaderName = HeaderName::from_static("x-tollgate-tx");
    pub const X_TOLLGATE_NETWORK: HeaderName = HeaderName::from_static("x-tollgate-network");
}
use names::*;

/// Headers a browser must be allowed to read on priced routes.
pub const EXPOSE_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";
/// Headers a browser may send on priced routes (preflight), besides what it asks for.
const ALLOW_HEADERS: &str = "Content-Type, Authorization, X-PAYMENT, PAYMENT-SIGNATURE";

/// A whole response tollgate writes itself.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    fn json(status: u16, body: impl Serialize, cors: Option<&str>) -> Reply {
        let body = Bytes::from(serde_json::to_vec(&body).expect("replies serialize"));
        let mut r = Reply {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("cache-control", "no-store".into()),
            ],
            body,
        };
        if let Some(o) = cors {
            r.headers.push(("access-control-allow-origin", o.to_string()));
            r.headers.push(("access-control-expose-headers", EXPOSE_HEADERS.into()));
            if o != "*" {
                r.headers.push(("vary", "Origin".into()));
            }
        }
        r
    }

    /// The response header, with Content-Length for the body.
    pub fn header(&self) -> pingora_core::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(self.headers.len() + 1))?;
        for (k, v) in &self.headers {
            h.insert_header(*k, v.as_str())?;
        }
        h.insert_header("content-length", self.body.len().to_string())?;
        Ok(h)
    }

    /// The status line and headers (with Content-Length) as HTTP/1.1 bytes, each line ending in
    /// CRLF, without the blank line that ends the head.
    pub fn wire_head(&self) -> Bytes {
        let status = http::StatusCode::from_u16(self.status).expect("replies use valid statuses");
        let mut w = Vec::with_capacity(256 + self.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>());
        w.extend_from_slice(b"HTTP/1.1 ");
        w.extend_from_slice(status.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        w.extend_from_slice(b"\r\n");
        for (k, v) in &self.headers {
            w.extend_from_slice(k.as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(v.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        Bytes::from(w)
    }
}

/// `{"error": code, "detail": message}`: the body of every non-402 refusal.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

/// The v1 402 body plus a human-readable `detail` when a check failed.
/// (Written out rather than `#[serde(flatten)]`, which serialises through a map: slower, and it
/// reorders the keys.)
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChallengeBody<'a> {
    x402_version: u8,
    error: &'a str,
    accepts: Vec<RequirementsV1>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payer: Option<&'a str>,
}

/// The 402 for a priced route: the v1 JSON body and the v2 `PAYMENT-REQUIRED` header, one
/// requirement per accepted network. `failure` is `(reason, detail)` when a payment was refused.
pub fn payment_required(
    pricing: &Pricing,
    asked: &Asked,
    failure: Option<(&str, &str, Option<&str>)>,
    cors: Option<&str>,
) -> Reply {
    let resource = Resource {
        url: &asked.url,
        method: &asked.method,
        description: &pricing.description,
        mime_type: &pricing.mime_type,
    };
    let (v1_error, v2_error) = match failure {
        Some((reason, _, _)) => (reason, reason),
        None => ("X-PAYMENT header is required", "PAYMENT-SIGNATURE header is required"),
    };
    let extensions = crate::x402::identifier::declaration(pricing.payment_id)
        .map(|d| serde_json::json!({ crate::x402::identifier::EXTENSION: d }));
    let v2 = payment_required_v2(&pricing.offers, &resource, v2_error, extensions);
    let v1 = payment_required_v1(&pricing.offers, &resource, v1_error);
    let body = ChallengeBody {
        x402_version: v1.x402_version,
        error: v1_error,
        accepts: v1.accepts,
        detail: failure.map(|f| f.1),
        payer: failure.and_then(|f| f.2),
    };
    let mut r = Reply::json(402, body, cors);
    r.headers.push(("payment-required", encode_header(&v2)));
    r
}

/// The rendered unpaid 402s a worker keeps for reuse are bounded by bytes, not entries: their keys
/// come from the client (Host, X-Forwarded-Host, the path), so a few large ones must not pin memory.
/// When the budget is reached the cache starts over.
const UNPAID_CACHE_BYTES: usize = 4 << 20;
/// A 402 for a longer resource URL (or CORS origin) is rendered each time, never kept.
const UNPAID_CACHE_MAX_KEY: usize = 1024;

struct RenderedChallenge {
    /// Held so that the pointer in the key cannot be reused by another pricing while cached.
    pricing: Arc<Pricing>,
    url: String,
    method: String,
    cors: Option<String>,
    header: ResponseHeader,
    /// The same head as HTTP/1.1 bytes (status line and headers, without Date, Connection and the
    /// blank line), for [`crate::front`], which writes the 402 itself.
    wire: Bytes,
    body: Bytes,
}

impl RenderedChallenge {
    fn render(pricing: &Arc<Pricing>, asked: &Asked, cors: Option<&str>) -> pingora_core::Result<Self> {
        let reply = payment_required(pricing, asked, None, cors);
        Ok(RenderedChallenge {
            pricing: pricing.clone(),
            url: asked.url.clone(),
            method: asked.method.clone(),
            cors: cors.map(str::to_string),
            header: reply.header()?,
            wire: reply.wire_head(),
            body: reply.body,
        })
    }

    /// What it holds, roughly (the parsed header about as much as its wire form).
    fn bytes(&self) -> usize {
        self.url.len()
            + self.method.len()
            + self.cors.as_ref().map_or(0, String::len)
            + 2 * self.wire.len()
            + self.body.len()
            + 128
    }
}

#[derive(Default)]
struct UnpaidCache {
    entries: HashMap<u64, RenderedChallenge>,
    bytes: usize,
}

thread_local! {
    static UNPAID: RefCell<UnpaidCache> = RefCell::new(UnpaidCache::default());
}

/// Runs `f` on the unpaid 402 for this route, URL, method and origin: the worker's cached one, or
/// rendered now (and kept, when small enough and within the budget).
fn with_unpaid<R>(
    pricing: &Arc<Pricing>,
    asked: &Asked,
    cors: Option<&str>,
    f: impl FnOnce(&RenderedChallenge) -> R,
) -> pingora_core::Result<R> {
    if asked.url.len() > UNPAID_CACHE_MAX_KEY || cors.is_some_and(|c| c.len() > UNPAID_CACHE_MAX_KEY) {
        return Ok(f(&RenderedChallenge::render(pricing, asked, cors)?));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (Arc::as_ptr(pricing) as usize, &asked.url, &asked.method, cors).hash(&mut h);
    let key = h.finish();
    UNPAID.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(c) = cache.entries.get(&key) {
            if Arc::ptr_eq(&c.pricing, pricing)
                && c.url == asked.url
                && c.method == asked.method
                && c.cors.as_deref() == cors
            {
                return Ok(f(c));
            }
        }
        let entry = RenderedChallenge::render(pricing, asked, cors)?;
        let size = entry.bytes();
        if cache.bytes + size > UNPAID_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        let out = f(&entry);
        if let Some(old) = cache.entries.insert(key, entry) {
            cache.bytes -= old.bytes();
        }
        cache.bytes += size;
        Ok(out)
    })
}

/// The 402 for an unpaid request: [`payment_required`], rendered once per route, URL, method and
/// origin on each worker and reused (serialising and base64-encoding the requirements was the
/// largest piece of tollgate's own work on this path).
pub fn unpaid(
    pricing: &Arc<Pricing>,
    asked: &Asked,
    cors: Option<&str>,
) -> pingora_core::Result<(ResponseHeader, Bytes)> {
    with_unpaid(pricing, asked, cors, |c| (c.header.clone(), c.body.clone()))
}

/// [`unpaid`] as HTTP/1.1 bytes: the head without Date, Connection and the final blank line, and
/// the body.
pub fn unpaid_wire(pricing: &Arc<Pricing>, asked: &Asked, cors: Option<&str>) -> pingora_core::Result<(Bytes, Bytes)> {
    with_unpaid(pricing, asked, cors, |c| (c.wire.clone(), c.body.clone()))
}

/// Reads a request the one way tollgate prices and forwards it ([`crate::reading`]).
pub fn reading<'a>(req: &'a RequestHeader, prefix: usize, rules: &Rules) -> Result<Reading<'a>, Refused> {
    let mut overrides = [None; 4];
    let mut n = 0;
    for name in OVERRIDE_HEADERS {
        for v in req.headers.get_all(name) {
            if n < overrides.len() {
                overrides[n] = Some(v.as_bytes());
                n += 1;
            }
        }
    }
    let has_body = has_body(req);
    let form = req.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        let starts = |p: &[u8]| v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p);
        starts(b"application/x-www-form-urlencoded") || starts(b"multipart/form-data")
    });
    let method = req.method.as_str();
    let request = Request {
        method,
        target: &req.raw_path()[prefix..],
        overrides,
        form,
        has_body,
    };
    crate::reading::read(&request, rules)
}

/// Whether a request carries a body (any Transfer-Encoding, or a Content-Length other than 0).
pub fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().iter().any(|&b| b != b'0' && b != b' ' && b != b','))
}

/// Header names that some upstreams fold into tollgate's own (WSGI reads `X_Tollgate_Payer` as
/// `X-Tollgate-Payer`): always dropped when spelled with `_`.
const OWN_PREFIXES: [&str; 5] = ["x-tollgate-", "x-forwarded-", "forwarded", "x-payment", "payment-"];

/// Drops header names spelled with `_`: all of them (as nginx does by default), or with `keep_others`
/// only those that fold into a header tollgate sets or reads.
pub fn drop_underscored_headers(up: &mut RequestHeader, keep_others: bool) {
    let doomed: Vec<HeaderName> = up
        .headers
        .keys()
        .filter(|k| underscored_dropped(k.as_str(), keep_others))
        .cloned()
        .collect();
    for k in doomed {
        up.remove_header(&k);
    }
}

/// Whether a header name is dropped on its way to the upstream for its `_`s
/// ([`drop_underscored_headers`]); the front's forwarding path asks the same.
pub fn underscored_dropped(name: &str, keep_others: bool) -> bool {
    name.contains('_') && {
        !keep_others || {
            let folded = name.to_ascii_lowercase().replace('_', "-");
            OWN_PREFIXES.iter().any(|p| folded.starts_with(p)) || folded == "host"
        }
    }
}

/// A request without one reading (target, method, body): 400 with the reason.
pub fn bad_request(detail: &str) -> Reply {
    Reply::json(
        400,
        ErrorBody {
            error: "invalid_request",
            detail,
        },
        None,
    )
}

/// No tenant goes by the name in the request's Host or path prefix (hosted mode): 404.
pub fn unknown_tenant() -> Reply {
    Reply::json(
        404,
        ErrorBody {
            error: "unknown_tenant",
            detail: "no API is served under this host name or path; check the URL",
        },
        None,
    )
}

/// A malformed payment header: 400 with the reason.
pub fn malformed(detail: &str, cors: Option<&str>) -> Reply {
    Reply::json(
        400,
        ErrorBody {
            error: "invalid_payment_header",
            detail,
        },
        cors,
    )
}

/// A public JSON document (discovery), cacheable for five minutes.
pub fn document(v: &serde_json::Value) -> Reply {
    let mut r = Reply::json(200, v, Some("*"));
    r.headers.push(("cache-control", "public, max-age=300".into()));
    r
}

/// A payment identifier already used for another payment (409), or in use by a request running
/// now (409, try again shortly).
pub fn id_conflict(in_progress: bool, cors: Option<&str>) -> Reply {
    let (error, detail) = if in_progress {
        (
            "payment_identifier_in_progress",
            "a request with this payment identifier and payment is running; send it again shortly",
        )
    } else {
        (
            "payment_identifier_conflict",
            "this payment identifier was used for another payment; use a new id for a new payment",
        )
    };
    let mut r = Reply::json(409, ErrorBody { error, detail }, cors);
    if in_progress {
        r.headers.push(("retry-after", "1".into()));
    }
    r
}

/// The answer to a refused payment.
pub fn refused(
    r: &Refusal,
    pricing: &Pricing,
    asked: &Asked,
    version: Version,
    payer: Option<&str>,
    cors: Option<&str>,
) -> Reply {
    match r {
        Refusal::Malformed(m) => malformed(m, cors),
        Refusal::Unavailable(m) => Reply::json(
            503,
            ErrorBody {
                error: "payment_unavailable",
                detail: m,
            },
            cors,
        ),
        Refusal::Rejected(rej) => {
            let mut reply = payment_required(pricing, asked, Some((&rej.reason, &rej.detail, payer)), cors);
            reply
                .headers
                .push(failed_settlement(pricing, version, &rej.reason, None, payer));
            reply
        }
        Refusal::OverQuota { retry_after, .. } => over_quota(*retry_after, false, cors),
        Refusal::OverGasBudget { retry_after, .. } => over_quota(*retry_after, true, cors),
        Refusal::RateLimited(d) => rate_limited(d, cors),
        // Maybe charged: not a 503 (which means "nothing charged"), and never a fresh 402 (which
        // makes clients sign and pay again). The same header, sent again, is served once settled.
        Refusal::Pending { tx, detail } => {
            let mut reply = Reply::json(
                504,
                PendingBody {
                    error: "payment_pending",
                    detail,
                    transaction: tx.as_deref(),
                    retry: "send the same request with the same payment header; it is served once the payment settles, and never charged twice",
                },
                cors,
            );
            reply.headers.push(("retry-after", "2".into()));
            reply.headers.push(failed_settlement(
                pricing,
                version,
                reason::SETTLEMENT_PENDING,
                tx.as_deref(),
                payer,
            ));
            reply
        }
    }
}

/// A rate limit refused the request: 429 with `Retry-After` and the `RateLimit-*` headers;
/// nothing forwarded, nothing charged.
pub fn rate_limited(d: &crate::ratelimit::Decision, cors: Option<&str>) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'static str,
        scope: &'static str,
        detail: &'a str,
    }
    let detail = d.detail();
    let mut reply = Reply::json(
        429,
        Body {
            error: "rate_limited",
            scope: d.scope.as_str(),
            detail: &detail,
        },
        cors,
    );
    reply.headers.extend(d.headers());
    reply
}

/// A hosted tenant's monthly allowance is used up: 429 with when it refills; nothing forwarded,
/// nothing charged.
pub fn over_quota(retry_after: u64, gas: bool, cors: Option<&str>) -> Reply {
    let body = if gas {
        ErrorBody {
            error: "over_gas_budget",
            detail: "this API's monthly settlement gas on the gateway is used up; nothing was charged; try again after the reset",
        }
    } else {
        ErrorBody {
            error: "over_quota",
            detail: "this API's monthly allowance of paid requests is used up; nothing was charged; try again after the reset",
        }
    };
    let mut reply = Reply::json(429, body, cors);
    reply.headers.push(("retry-after", retry_after.max(1).to_string()));
    reply
}

/// A hosted tenant is suspended: its priced routes take no payment (403), nothing is forwarded.
pub fn suspended(cors: Option<&str>) -> Reply {
    Reply::json(
        403,
        ErrorBody {
            error: "tenant_suspended",
            detail: "this API is suspended by the gateway's operator and takes no payments; nothing was charged",
        },
        cors,
    )
}

/// A hosted tenant cannot serve yet (no upstream, or a setting the gateway refuses): 503.
pub fn tenant_not_ready() -> Reply {
    Reply::json(
        503,
        ErrorBody {
            error: "tenant_not_ready",
            detail: "this API is not configured on the gateway yet; nothing was charged",
        },
        None,
    )
}

/// The body of a "payment pending" answer.
#[derive(Serialize)]
struct PendingBody<'a> {
    error: &'a str,
    detail: &'a str,
    transaction: Option<&'a str>,
    retry: &'a str,
}

/// The `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` header of a payment that did not settle (yet).
fn failed_settlement(
    pricing: &Pricing,
    version: Version,
    why: &str,
    tx: Option<&str>,
    payer: Option<&str>,
) -> (&'static str, String) {
    let network = pricing
        .offers
        .first()
        .map(|o| o.network_id(version))
        .unwrap_or_default();
    let resp = SettleResponse {
        success: false,
        error_reason: Some(why.to_string()),
        transaction: tx.unwrap_or_default().to_string(),
        network,
        payer: payer.map(str::to_string),
    };
    (version.response_header_lower(), encode_header(&resp))
}

/// The upstream could not be reached: 502. A payment settled before forwarding still shows its tx.
pub fn upstream_failed(detail: &str, settled: Option<(&'static str, String)>, cors: Option<&str>) -> Reply {
    let mut r = Reply::json(
        502,
        ErrorBody {
            error: "upstream_unavailable",
            detail,
        },
        cors,
    );
    if let Some((name, value)) = settled {
        r.headers.push((name, value));
    }
    r
}

/// The payment header a request carries, and in which version. `Err` when both are sent.
pub fn payment_header(req: &RequestHeader) -> Result<Option<(Version, Vec<u8>)>, DecodeError> {
    let v1 = req.headers.get(&X_PAYMENT);
    let v2 = req.headers.get(&PAYMENT_SIGNATURE);
    match (v1, v2) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(DecodeError::BothHeaders),
        (Some(h), None) => Ok(Some((Version::V1, h.as_bytes().to_vec()))),
        (None, Some(h)) => Ok(Some((Version::V2, h.as_bytes().to_vec()))),
    }
    .and_then(|r| match r {
        Some((v, h)) if h.len() > MAX_HEADER_BYTES => Err(DecodeError::TooLarge {
            header: v.payment_header(),
            len: h.len(),
        }),
        other => Ok(other),
    })
}

/// The first value of a forwarding header, if it is plain printable text.
fn forwarded_value(v: &[u8]) -> Option<&str> {
    // As `HeaderValue::to_str`: visible ASCII (and tabs) only.
    if !v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        return None;
    }
    let v = std::str::from_utf8(v).ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty() && first.bytes().all(|b| b.is_ascii_graphic())).then_some(first)
}

fn forwarded<'a>(req: &'a RequestHeader, name: &HeaderName) -> Option<&'a str> {
    forwarded_value(req.headers.get(name)?.as_bytes())
}

/// The first value of a Host or X-Forwarded-Host header, if it is a plain `host[:port]` (a name,
/// an IPv4 or a bracketed IPv6 address, at most 255 bytes); anything else is ignored.
fn host_value(v: &[u8]) -> Option<&str> {
    let first = forwarded_value(v)?;
    let ok = first.len() <= 255
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    ok.then_some(first)
}

/// The URL the client asked for, as the 402 names it: `public_url` if configured, else
/// X-Forwarded-Proto/Host (a proxy in front of tollgate), else the Host header.
/// `tls`: the request came over TLS (the URL is `https` unless `X-Forwarded-Proto` says otherwise).
pub fn asked(req: &RequestHeader, path: &str, public_url: Option<&str>, tls: bool) -> Asked {
    let host_of = |name: &HeaderName| req.headers.get(name).and_then(|v| host_value(v.as_bytes()));
    let host = host_of(&http::header::HOST).or_else(|| req.uri.authority().map(|a| a.as_str()));
    Asked {
        url: resource_url(
            path,
            public_url,
            forwarded(req, &X_FORWARDED_PROTO).or(tls.then_some("https")),
            host_of(&X_FORWARDED_HOST),
            host,
        ),
        method: req.method.to_string(),
    }
}

/// [`asked`] from the raw request-head values ([`crate::front`] parses heads itself): the path,
/// and the first X-Forwarded-Proto, X-Forwarded-Host and Host values.
pub fn asked_raw(
    method: &http::Method,
    path: &str,
    public_url: Option<&str>,
    x_forwarded_proto: Option<&[u8]>,
    x_forwarded_host: Option<&[u8]>,
    host: Option<&[u8]>,
) -> Asked {
    Asked {
        url: resource_url(
            path,
            public_url,
            x_forwarded_proto.and_then(forwarded_value),
            x_forwarded_host.and_then(host_value),
            host.and_then(host_value),
        ),
        method: method.to_string(),
    }
}

fn resource_url(
    path: &str,
    public_url: Option<&str>,
    x_forwarded_proto: Option<&str>,
    x_forwarded_host: Option<&str>,
    host: Option<&str>,
) -> String {
    if let Some(base) = public_url {
        return format!("{base}{path}");
    }
    let proto = match x_forwarded_proto {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = x_forwarded_host.or(host).unwrap_or("localhost");
    format!("{proto}://{host}{path}")
}

/// The CORS origin to allow for this request, if it has an Origin the config allows.
pub fn allowed_origin(req: &RequestHeader, allowed: &[String]) -> Option<String> {
    allowed_origin_raw(req.headers.get(http::header::ORIGIN).map(|v| v.as_bytes()), allowed)
}

/// [`allowed_origin`] from the raw Origin value.
pub fn allowed_origin_raw(origin: Option<&[u8]>, allowed: &[String]) -> Option<String> {
    if allowed.iter().any(|o| o == "*") {
        return Some("*".into());
    }
    let origin = origin?;
    allowed
        .iter()
        .any(|o| o.as_bytes() == origin)
        .then(|| String::from_utf8_lossy(origin).into_owned())
}

/// Answers a browser's CORS preflight for a priced route (a 402 would fail the preflight).
pub fn preflight(req: &RequestHeader, read: &Reading, tenant: &Tenant, allowed: &[String]) -> Option<Reply> {
    if req.method != http::Method::OPTIONS {
        return None;
    }
    let wanted = req.headers.get("access-control-request-method")?.to_str().ok()?;
    let method = http::Method::from_bytes(wanted.as_bytes()).ok()?;
    // The route the real request would fall under: the same reading, with the method it announces.
    let announced = read.as_method(method.clone());
    let (_, route) = tenant.route_for(&announced)?;
    route.pricing.as_ref()?;
    let origin = allowed_origin(req, allowed)?;
    let asked = req
        .headers
        .get("access-control-request-headers")
        .and_then(|v| v.to_str().ok());
    let allow_headers = match asked {
        Some(a) if !a.is_empty() => format!("{ALLOW_HEADERS}, {a}"),
        _ => ALLOW_HEADERS.to_string(),
    };
    let mut headers = vec![
        ("access-control-allow-origin", origin.clone()),
        ("access-control-allow-methods", format!("{method}, OPTIONS")),
        ("access-control-allow-headers", allow_headers),
        ("access-control-expose-headers", EXPOSE_HEADERS.into()),
        ("access-control-max-age", "600".into()),
    ];
    if origin != "*" {
        headers.push(("vary", "Origin".into()));
    }
    Some(Reply {
        status: 204,
        headers,
        body: Bytes::new(),
    })
}

/// Adds CORS to a forwarded response of a priced route, merging with what the upstream set.
pub fn add_cors(resp: &mut ResponseHeader, origin: Option<&str>) -> pingora_core::Result<()> {
    let Some(origin) = origin else { return Ok(()) };
    if resp.headers.get("access-control-allow-origin").is_none() {
        resp.insert_header("access-control-allow-origin", origin)?;
    }
    let expose = match resp
        .headers
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
    {
        Some(existing) if !existing.is_empty() => format!("{existing}, {EXPOSE_HEADERS}"),
        _ => EXPOSE_HEADERS.to_string(),
    };
    resp.insert_header("access-control-expose-headers", expose)?;
    Ok(())
}

/// Host, X-Forwarded-* and the upstream's path prefix on a forwarded request.
///
/// On every forwarded request, so kept cheap (`benches/instructions.sh`): names go to pingora as
/// static bytes in the case they are sent (no title-casing lookup, no copy), values as shared or
/// static bytes, and the client's address is formatted once per address, not once per request.
pub fn forwarding_headers(session: &Session, up: &mut RequestHeader, upstream: &Upstream) -> pingora_core::Result<()> {
    let original_host = up.headers.get(http::header::HOST).cloned();
    if !upstream.preserve_host {
        up.insert_header("Host", upstream.host_header.clone())?;
    }
    if let Some(h) = original_host {
        if !up.headers.contains_key(&X_FORWARDED_HOST) {
            up.insert_header("X-Forwarded-Host", h)?;
        }
    }
    if !up.headers.contains_key(&X_FORWARDED_PROTO) {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        up.insert_header(
            "X-Forwarded-Proto",
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        )?;
    }
    if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
        let addr = ip_header_value(ip);
        let xff = match up.headers.get(&X_FORWARDED_FOR) {
            Some(prev) => {
                let mut v = Vec::with_capacity(prev.len() + 2 + addr.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(addr.as_bytes());
                HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or(addr)
            }
            None => addr,
        };
        up.insert_header("X-Forwarded-For", xff)?;
    }
    if !upstream.path_prefix.is_empty() {
        let pq = up.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri: http::Uri = format!("{}{pq}", upstream.path_prefix).parse().map_err(|e| {
            pingora_core::Error::because(pingora_core::ErrorType::InternalError, "upstream path prefix", e)
        })?;
        up.set_uri(uri);
    }
    Ok(())
}

/// A client address as a header value; the last one each thread formatted is reused (a keep-alive
/// connection's requests all come from one address).
pub(crate) fn ip_header_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(std::net::IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((a, v)) if *a == ip => v.clone(),
            _ => {
                let v = HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
                    .unwrap_or(HeaderValue::from_static("unknown"));
                *last = Some((ip, v.clone()));
                v
            }
        }
    })
}
