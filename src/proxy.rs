//! The pingora `ProxyHttp` implementation: route, challenge, pay, forward.
//!
//! Each phase method is short: it asks [`crate::payment`] or [`crate::challenge`] and acts on the answer.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::HeaderName;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::app::{App, Live};
use crate::chains::SettleOutcome;
use crate::challenge::names::*;
use crate::challenge::{self, Reply};
use crate::directory::Lookup;
use crate::payment::idempotency::{IdHold, IdStart};
use crate::payment::{refusal_outcome, Accepted, Refusal};
use crate::store::{Attempt, Delivery, Outcome};
use crate::tenant::{Pricing, SettleTiming, Tenant};
use crate::x402::identifier::{self, IdPolicy};
use crate::x402::reason;
use base64::Engine as _;

const UPSTREAM_CONNECT_TIMEOUT: std::time::Duration = crate::forward::CONNECT_TIMEOUT;
const UPSTREAM_READ_TIMEOUT: std::time::Duration = crate::forward::IO_TIMEOUT;

/// The proxy: one per process.
pub struct Proxy {
    live: Arc<Live>,
}

impl Proxy {
    pub fn new(live: Arc<Live>) -> Self {
        Proxy { live }
    }
}

/// What one request carries between phases.
pub struct Ctx {
    /// The configuration in force when the request began, used to its end (a reload mid-request
    /// does not change its route, price or chain).
    app: Arc<App>,
    started: Instant,
    /// The tenant the request is for, once the directory has answered.
    tenant: Option<Arc<Tenant>>,
    route: String,
    pricing: Option<Arc<Pricing>>,
    accepted: Option<Accepted>,
    attempt: Option<Attempt>,
    /// Set when the upstream's answer is replaced (settle-after failed): the body to send instead.
    replace_body: Option<Bytes>,
    replacing: bool,
    /// The CORS origin to allow on this response, when the route is priced.
    cors: Option<String>,
    /// The canonical target to forward, when it differs from what the client sent.
    target: Option<String>,
    /// The request has a body: its upstream connection is not reused (unless the config says so).
    close_upstream: bool,
    /// The upstream's answer is going to the client (the paid content was served).
    served: bool,
    /// The payment-identifier id this request holds, and its answer as it is captured for replay.
    id_hold: Option<IdHold>,
    replay: Option<Capture>,
    /// Refused by a rate limit (429).
    limited: bool,
    /// When the request went to the upstream.
    upstream_sent: Option<Instant>,
}

/// A paid response as it goes to the client, kept for replay under its payment identifier.
#[derive(Default)]
struct Capture {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
    /// Larger than [`REPLAY_MAX_BYTES`]: not kept.
    overflow: bool,
}

/// The largest response body kept for replay under a payment identifier.
const REPLAY_MAX_BYTES: usize = 256 * 1024;

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            app: self.live.app(),
            started: Instant::now(),
            tenant: None,
            route: String::new(),
            pricing: None,
            accepted: None,
            attempt: None,
            replace_body: None,
            replacing: false,
            cors: None,
            target: None,
            close_upstream: false,
            served: false,
            id_hold: None,
            replay: None,
            limited: false,
            upstream_sent: None,
        }
    }

    /// No downstream modules: pingora's default adds a (disabled) response-compression module that
    /// still inspects every request and response; compression is the upstream's business.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    /// Reads the request once (400 if it has no single reading), matches the route; unpaid → 402,
    /// malformed payment → 400, paid → verify (and settle, if before).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let app = ctx.app.clone();
        let req = session.req_header();
        let host = req.headers.get(http::header::HOST).map(|h| h.as_bytes());
        let found = match app.directory.find(host, req.raw_path()).await {
            Lookup::Found(f) => f,
            Lookup::Unknown => return send(session, challenge::unknown_tenant()).await,
            Lookup::NotReady(_) => return send(session, challenge::tenant_not_ready()).await,
        };
        let prefix = found.prefix;
        let tenant = ctx.tenant.insert(found.tenant).clone();
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(limits) = &tenant.limits {
            if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) {
                let checked = if limits.ip_is_local() {
                    limits.check_ip_local(tenant.number, ip)
                } else {
                    limits
                        .check(crate::ratelimit::Scope::Ip, &tenant.id, &ip.to_string())
                        .await
                };
                if let Err(d) = checked {
                    ctx.limited = true;
                    return send(session, challenge::rate_limited(&d, None)).await;
                }
            }
        }
        let req = session.req_header();
        let read = match challenge::reading(req, prefix, &tenant.rules) {
            Ok(r) => r,
            Err(e) => {
                // Not a client mistake worth keeping the connection for.
                session.set_keepalive(None);
                return send(session, challenge::bad_request(&e.to_string())).await;
            }
        };
        // What is forwarded is exactly what was read and priced.
        // (Behind a `/t/{slug}` prefix, the target without it.)
        if read.rewritten() || prefix > 0 {
            ctx.target = Some(read.target.to_string());
        }
        ctx.close_upstream = !tenant.rules.reuse_upstream_after_body && challenge::has_body(req);
        if read.path() == crate::discovery::WELL_KNOWN && req.method == http::Method::GET {
            let base = String::from_utf8_lossy(&req.raw_path()[..prefix]).into_owned();
            let base = challenge::asked(req, &base, app.settings.public_url.as_deref(), tls).url;
            let doc = crate::discovery::well_known(&tenant.routes, &base, app.payments.clock.now_ms() as i64);
            return send(session, challenge::document(&doc)).await;
        }
        if let Some(reply) = challenge::preflight(req, &read, &tenant, &app.settings.cors_origins) {
            return send(session, reply).await;
        }
        let Some((_, route)) = tenant.route_for(&read) else {
            return Ok(false);
        };
        let Some(pricing) = route.pricing.clone() else {
            return Ok(false);
        };
        ctx.cors = challenge::allowed_origin(req, &app.settings.cors_origins);
        if tenant.hosted.as_ref().is_some_and(|h| !h.active) {
            return send(session, challenge::suspended(ctx.cors.as_deref())).await;
        }
        let asked = if prefix > 0 {
            let path = format!("{}{}", String::from_utf8_lossy(&req.raw_path()[..prefix]), read.path());
            challenge::asked(req, &path, app.settings.public_url.as_deref(), tls)
        } else {
            challenge::asked(req, read.path(), app.settings.public_url.as_deref(), tls)
        };
        drop(read);

        let req = session.req_header();
        let (version, header) = match challenge::payment_header(req) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let (head, body) = challenge::unpaid(&pricing, &asked, ctx.cors.as_deref())?;
                return send_parts(session, head, body).await;
            }
            Err(e) => return send(session, challenge::malformed(&e.to_string(), ctx.cors.as_deref())).await,
        };
        ctx.route = route.label().to_string();
        let payments = &app.payments;
        let mut rec = new_attempt(payments.clock.now_ms(), &tenant.id, &ctx.route, req);
        let accepted = if pricing.payment_id == IdPolicy::Off {
            payments
                .accept(
                    tenant.account(),
                    &pricing,
                    &ctx.route,
                    &asked,
                    version,
                    &header,
                    &mut rec,
                )
                .await
        } else {
            // The payment-identifier extension: decode first, to read the id.
            let payment = match crate::x402::decode_payment(version, &header) {
                Ok(p) => p,
                Err(e) => return send(session, challenge::malformed(&e.to_string(), ctx.cors.as_deref())).await,
            };
            let sent = match identifier::read(payment.extensions.as_deref()) {
                Ok(s) => s,
                Err(e) => return send(session, challenge::malformed(&e, ctx.cors.as_deref())).await,
            };
            // Junk (a bad signature, the wrong amount) is refused before it can touch the database.
            if let Err(refusal) = payments.precheck(&pricing, &payment) {
                let reply = challenge::refused(&refusal, &pricing, &asked, version, None, ctx.cors.as_deref());
                let (outcome, why) = refusal_outcome(&refusal);
                rec.outcome = Some(outcome);
                rec.reason = Some(why);
                ctx.attempt = Some(rec);
                return send(session, reply).await;
            }
            let required = pricing.payment_id == IdPolicy::Required;
            match payments.hold_id(&tenant.id, &sent, required, &header).await {
                Ok(IdStart::Untracked) => {}
                Ok(IdStart::Held(h)) => {
                    ctx.replay = Some(Capture::default());
                    ctx.id_hold = Some(h);
                }
                Ok(IdStart::Answered(a)) => return replay(session, &a, ctx.cors.as_deref()).await,
                Ok(IdStart::Conflict) => {
                    return send(session, challenge::id_conflict(false, ctx.cors.as_deref())).await
                }
                Ok(IdStart::InProgress) => {
                    return send(session, challenge::id_conflict(true, ctx.cors.as_deref())).await
                }
                Err(refusal) => {
                    let reply = challenge::refused(&refusal, &pricing, &asked, version, None, ctx.cors.as_deref());
                    return send(session, reply).await;
                }
            }
            payments
                .accept_payment(
                    tenant.account(),
                    &pricing,
                    &ctx.route,
                    &asked,
                    version,
                    payment,
                    &mut rec,
                )
                .await
        };
        match accepted {
            Ok(accepted) => {
                ctx.accepted = Some(accepted);
                ctx.attempt = Some(rec);
                ctx.pricing = Some(pricing);
                Ok(false)
            }
            Err(refusal) => {
                ctx.limited = matches!(refusal, Refusal::RateLimited(_));
                let reply = challenge::refused(
                    &refusal,
                    &pricing,
                    &asked,
                    version,
                    rec.payer.as_deref(),
                    ctx.cors.as_deref(),
                );
                if !matches!(refusal, Refusal::Malformed(_)) {
                    let (outcome, why) = refusal_outcome(&refusal);
                    rec.outcome = Some(outcome);
                    rec.reason = Some(why);
                    ctx.attempt = Some(rec);
                }
                send(session, reply).await
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let up = &tenant_of(ctx)?.upstream;
        let mut peer = HttpPeer::new(up.addr, up.tls, up.host.clone());
        // A hung upstream must not hold a paid request (and its claim) forever.
        peer.options.connection_timeout = Some(UPSTREAM_CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(UPSTREAM_READ_TIMEOUT);
        peer.options.write_timeout = Some(UPSTREAM_READ_TIMEOUT);
        Ok(Box::new(peer))
    }

    /// Strips payment headers, says who paid, and points the request at the upstream.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = &ctx.target {
            up.set_raw_path(t.as_bytes())?;
        }
        // Payment headers never reach the upstream; X-Tollgate-* are tollgate's to set, not the client's.
        // One pass over the request's few names first: most requests carry none of them.
        let stripped: [HeaderName; 5] = [
            X_PAYMENT,
            PAYMENT_SIGNATURE,
            X_TOLLGATE_PAYER,
            X_TOLLGATE_TX,
            X_TOLLGATE_NETWORK,
        ];
        if up.headers.keys().any(|k| stripped.contains(k)) {
            for h in &stripped {
                up.remove_header(h);
            }
        }
        let tenant = tenant_of(ctx)?.clone();
        challenge::drop_underscored_headers(up, tenant.rules.keep_underscored_headers);
        if ctx.close_upstream {
            up.insert_header(http::header::CONNECTION, "close")?;
        }
        if let Some(a) = &ctx.accepted {
            up.insert_header(X_TOLLGATE_PAYER, a.payer())?;
            up.insert_header(X_TOLLGATE_NETWORK, a.offer.network.caip2.as_str())?;
            if let Some(o) = a.outcome.as_ref().filter(|o| !o.tx().is_empty()) {
                up.insert_header(X_TOLLGATE_TX, o.tx())?;
            }
        }
        ctx.upstream_sent = Some(Instant::now());
        challenge::forwarding_headers(session, up, &tenant.upstream)
    }

    /// Settle-after happens here, once the upstream's status is known; then the payment response header.
    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let app = ctx.app.clone();
        if let Some(sent) = ctx.upstream_sent.take() {
            let m = &crate::metrics::METRICS;
            if m.enabled() {
                m.upstream_seconds.observe(sent.elapsed().as_secs_f64());
            }
        }
        if let Some(a) = ctx.accepted.as_mut() {
            let rec = ctx.attempt.get_or_insert_with(Attempt::default);
            if a.settle == SettleTiming::After && a.outcome.is_none() {
                if resp.status.as_u16() < 400 {
                    if let Err(refusal) = app.payments.settle(a, rec).await {
                        // The upstream answered but the payment did not go through: the client gets
                        // the refusal, not the content.
                        let pricing = ctx.pricing.clone().expect("priced");
                        let reply = challenge::refused(
                            &refusal,
                            &pricing,
                            &a.asked,
                            a.version,
                            rec.payer.as_deref(),
                            ctx.cors.as_deref(),
                        );
                        let (outcome, why) = refusal_outcome(&refusal);
                        rec.outcome = Some(outcome);
                        rec.reason = Some(why);
                        *resp = reply.header()?;
                        ctx.replace_body = Some(reply.body);
                        ctx.replacing = true;
                        return Ok(());
                    }
                } else {
                    app.payments.release(&a.key).await;
                    rec.outcome = Some(Outcome::Released);
                    rec.reason = Some(format!("upstream answered {}; not charged", resp.status.as_u16()));
                }
            }
            if a.outcome.is_some() {
                resp.insert_header(
                    a.version.response_header(),
                    crate::x402::encode_header(&a.settle_response()),
                )?;
            }
        }
        // An upstream switching protocols unasked would make the client's connection a tunnel to
        // it (pingora passes such a 101 on): a 502, as the front's forwarding path answers.
        if resp.status.as_u16() == 101 && !session.req_header().headers.contains_key(http::header::UPGRADE) {
            return Err(Error::explain(
                pingora_core::ErrorType::InvalidHTTPHeader,
                "the upstream switched protocols for a request that asked for no upgrade",
            )
            .into_up());
        }
        // It describes the upstream's connection, not the client's (hop-by-hop, RFC 9110 7.6.1).
        if resp.headers.contains_key("keep-alive") {
            resp.remove_header("keep-alive");
        }
        if ctx.pricing.is_some() {
            challenge::add_cors(resp, ctx.cors.as_deref())?;
        }
        if let Some(c) = ctx.replay.as_mut() {
            c.status = resp.status.as_u16();
            c.headers = resp
                .headers
                .iter()
                .filter(|(k, _)| !NOT_REPLAYED.contains(&k.as_str()))
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
        }
        ctx.served = true;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        eos: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.replacing {
            *body = ctx.replace_body.take();
        }
        if let Some(c) = ctx.replay.as_mut() {
            if let Some(b) = body.as_ref() {
                if c.body.len() + b.len() > REPLAY_MAX_BYTES {
                    c.overflow = true;
                    c.body = Vec::new();
                } else if !c.overflow {
                    c.body.extend_from_slice(b);
                }
            }
            c.complete |= eos;
        }
        Ok(None)
    }

    /// The upstream failed: 502, and an unsettled (after-mode) payment is released, not charged. A
    /// request the client framed wrongly (a bad chunk, a protected header in `Connection`): 400.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let app = ctx.app.clone();
        if client_mistake(e) {
            // Its reading did not settle anything: an unsettled claim is given back in `logging`.
            session.set_keepalive(None);
            let reply = challenge::bad_request(&format!("the request is malformed: {}", mistake_text(e)));
            let sent = send(session, reply).await.is_ok();
            return FailToProxy {
                error_code: if sent { 400 } else { 0 },
                can_reuse_downstream: false,
            };
        }
        if *e.esource() != ErrorSource::Upstream {
            return default_fail(session, e).await;
        }
        let mut settled_header = None;
        if let Some(a) = &ctx.accepted {
            let rec = ctx.attempt.get_or_insert_with(Attempt::default);
            if a.outcome.is_none() {
                app.payments.release(&a.key).await;
                rec.outcome = Some(Outcome::Released);
                rec.reason = Some(format!("{}: {e}; not charged", reason::UPSTREAM_FAILED));
            } else {
                rec.reason = Some(format!("{}: {e}; settled before forwarding", reason::UPSTREAM_FAILED));
                settled_header = Some((
                    a.version.response_header(),
                    crate::x402::encode_header(&a.settle_response()),
                ));
            }
        }
        // The cause names internal addresses: it goes to the log, not to the client.
        tracing::warn!(error = %e, route = %ctx.route, "upstream failed");
        let reply = challenge::upstream_failed(
            "the API behind this gateway could not be reached; try again later",
            settled_header,
            ctx.cors.as_deref(),
        );
        // pingora closes the connection after a proxy failure: say so (Connection: close), or
        // keep-alive clients race the close.
        session.set_keepalive(None);
        let code = reply.status;
        if send(session, reply).await.is_err() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that went away mid-request is routine, not an error worth an ERROR line each (a
    /// load balancer's health checks and impatient clients would fill the log): debug only.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        use pingora_core::ErrorType::*;
        let client_gone = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ConnectionClosed | ReadError | WriteError | ReadTimedout | WriteTimedout
            );
        if client_gone {
            tracing::debug!(error = %e, route = %ctx.route, "client went away");
        } else if client_mistake(e) {
            tracing::debug!(error = %e, route = %ctx.route, "malformed request answered 400");
        }
        client_gone || client_mistake(e)
    }

    /// The request is over: write its attempt record.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let app = ctx.app.clone();
        if let Some(t) = &ctx.tenant {
            let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
            let route = if ctx.route.is_empty() {
                "none"
            } else {
                ctx.route.as_str()
            };
            crate::metrics::METRICS.request(&t.id, route, request_outcome(status, ctx));
        }
        if let Some(hold) = ctx.id_hold.take() {
            self.end_id(&hold, ctx).await;
        }
        let Some(mut rec) = ctx.attempt.take() else {
            return;
        };
        // A verified payment that never settled (client gone, request failed) is given back now
        // rather than at the next reconciliation.
        if let Some(a) = ctx.accepted.as_ref().filter(|a| a.outcome.is_none()) {
            if rec.outcome.is_none() {
                app.payments.release(&a.key).await;
                rec.outcome = Some(Outcome::Released);
                rec.reason
                    .get_or_insert_with(|| "request ended before settlement; not charged".into());
            }
        }
        // Charged but not served (the upstream failed, the client went away before the answer):
        // the payer may collect it by sending the same header again.
        match ctx.accepted.as_ref().map(|a| (a, &a.outcome)) {
            Some((a, Some(_))) if !ctx.served => {
                app.payments.delivered(&a.key, Delivery::Owed).await;
                tracing::info!(route = %ctx.route, payer = %a.payer(), "settled but not served; the same payment header will be served");
            }
            Some((a, Some(SettleOutcome::Pending { .. }))) => app.payments.delivered(&a.key, Delivery::Served).await,
            _ => {}
        }
        if rec.outcome.is_none() {
            rec.outcome = Some(match ctx.accepted.as_ref().and_then(|a| a.outcome.as_ref()) {
                Some(SettleOutcome::Settled { .. }) => Outcome::Settled,
                Some(SettleOutcome::Pending { .. }) => Outcome::Pending,
                Some(SettleOutcome::Underway { .. }) => Outcome::Answered,
                None => Outcome::Error,
            });
        }
        rec.total_us = ctx.started.elapsed().as_micros() as u64;
        app.payments.record(rec);
    }
}

/// What became of a request, for `tollgate_requests_total`.
fn request_outcome(status: u16, ctx: &Ctx) -> &'static str {
    let paying = ctx.attempt.is_some() || ctx.accepted.is_some();
    match status {
        402 if paying => "refused",
        402 => "challenged",
        429 if ctx.limited => "rate_limited",
        429 => "over_quota",
        503 => "unavailable",
        504 if ctx
            .attempt
            .as_ref()
            .is_some_and(|a| a.outcome == Some(Outcome::Pending)) =>
        {
            "pending"
        }
        502 | 504 => "upstream_failed",
        _ if ctx.pricing.is_some() && ctx.served && ctx.accepted.is_some() => "paid",
        _ if ctx.pricing.is_none() && ctx.served => "free",
        _ => "other",
    }
}

/// What became of a request to a free route (or none) that got `status` (0: none was written), for
/// `tollgate_requests_total`: [`request_outcome`] for a request without a payment, as the front's
/// forwarding path counts it.
pub fn free_outcome(status: u16) -> &'static str {
    match status {
        0 => "other",
        402 => "challenged",
        429 => "over_quota",
        503 => "unavailable",
        502 | 504 => "upstream_failed",
        _ => "free",
    }
}

impl Proxy {
    /// Ends a request's hold on its payment identifier: a served answer is kept for replay; a
    /// payment charged (or maybe) and not served keeps the id for the same payment; otherwise
    /// nothing was charged and the id is free again.
    async fn end_id(&self, hold: &IdHold, ctx: &Ctx) {
        let app = ctx.app.clone();
        let payments = &app.payments;
        let charged = ctx.accepted.as_ref().is_some_and(|a| a.outcome.is_some())
            || ctx
                .attempt
                .as_ref()
                .is_some_and(|r| r.outcome == Some(Outcome::Pending));
        match ctx.replay.as_ref() {
            Some(c) if ctx.served && !ctx.replacing && charged => {
                let answer = if c.complete && !c.overflow {
                    serde_json::json!({
                        "status": c.status,
                        "headers": c.headers,
                        "body": base64::engine::general_purpose::STANDARD.encode(&c.body),
                    })
                } else {
                    // Too large to keep (or cut short): a retry learns that it was paid and served.
                    let kept: Vec<&(String, String)> = c
                        .headers
                        .iter()
                        .filter(|(k, _)| k.starts_with("payment-response") || k.starts_with("x-payment-response"))
                        .collect();
                    serde_json::json!({
                        "status": 409,
                        "headers": kept,
                        "body": base64::engine::general_purpose::STANDARD.encode(
                            serde_json::to_vec(&serde_json::json!({
                                "error": "payment_identifier_answer_not_kept",
                                "detail": format!("this payment was settled and served; its answer was larger than {} KiB (or cut short) and is not kept for replay", REPLAY_MAX_BYTES / 1024),
                            })).expect("serializes")),
                    })
                };
                payments.finish_id(hold, Some(&answer.to_string())).await;
            }
            _ if charged => payments.finish_id(hold, None).await,
            _ => payments.forget_id(hold).await,
        }
    }
}

/// Response headers not kept for replay: those of one connection, and cookies (a session belongs to
/// whoever got the first answer, not to anyone who presents the same signed payment later).
const NOT_REPLAYED: [&str; 7] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "date",
    "upgrade",
    "set-cookie",
];

/// Sends an answer kept under a payment identifier again (nothing charged, nothing forwarded).
async fn replay(session: &mut Session, stored: &str, cors: Option<&str>) -> Result<bool> {
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_str(stored).unwrap_or_default();
    let body = v["body"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let status = v["status"].as_u64().unwrap_or(500) as u16;
    let mut head = ResponseHeader::build(status, None)?;
    for pair in v["headers"].as_array().into_iter().flatten() {
        if let (Some(k), Some(val)) = (pair[0].as_str(), pair[1].as_str()) {
            head.append_header(k.to_string(), val)?;
        }
    }
    head.insert_header("idempotent-replayed", "true")?;
    head.insert_header("content-length", body.len().to_string())?;
    if cors.is_some() && head.headers.get("access-control-allow-origin").is_none() {
        challenge::add_cors(&mut head, cors)?;
    }
    send_parts(session, head, Bytes::from(body)).await
}

/// The tenant `request_filter` found; every forwarded request has one.
fn tenant_of(ctx: &Ctx) -> Result<&Arc<Tenant>> {
    ctx.tenant.as_ref().ok_or_else(|| {
        Error::explain(
            pingora_core::ErrorType::InternalError,
            "no tenant for a forwarded request",
        )
    })
}

fn new_attempt(at_ms: u64, tenant: &str, route: &str, req: &RequestHeader) -> Attempt {
    Attempt {
        at_ms,
        tenant: tenant.to_string(),
        route: route.to_string(),
        method: req.method.to_string(),
        path: String::from_utf8_lossy(req.raw_path()).into_owned(),
        ..Default::default()
    }
}

/// Writes a whole reply and ends the request (`Ok(true)` tells pingora not to forward).
async fn send(session: &mut Session, reply: Reply) -> Result<bool> {
    let header = reply.header()?;
    send_parts(session, header, reply.body).await
}

async fn send_parts(session: &mut Session, header: ResponseHeader, body: Bytes) -> Result<bool> {
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// A request the client framed wrongly: pingora refused its head or body.
fn client_mistake(e: &Error) -> bool {
    use pingora_core::ErrorType::*;
    *e.esource() == ErrorSource::Downstream
        && (matches!(e.etype(), InvalidHTTPHeader | H1Error) || *e.etype() == Custom("InvalidChunk"))
}

/// What pingora said about a malformed request, without its echo of the request bytes.
fn mistake_text(e: &Error) -> String {
    let text = e
        .context
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_else(|| e.etype().as_str().to_string());
    // pingora quotes the raw head ("buf: …") in some contexts: not worth echoing back.
    text.split(", buf:")
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect()
}

async fn default_fail(session: &mut Session, e: &Error) -> FailToProxy {
    let code = match e.esource() {
        ErrorSource::Downstream => 0,
        _ => 500,
    };
    if code > 0 {
        let _ = session.respond_error(code).await;
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
