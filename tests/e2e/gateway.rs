//! The gateway through its front door: challenge, pay, replay, refuse, fail safely.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;

use crate::common::*;
use crate::upstream::Upstream;
use tollgate::client;
use tollgate::x402::reason;

const PRICE: u64 = 1000;

struct Setup {
    anvil: Anvil,
    up: Upstream,
    tg: Tollgate,
    _db: Db,
}

async fn setup_with(f: impl FnOnce(&mut GatewaySpec)) -> Setup {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    f(&mut spec);
    let tg = Tollgate::start(&spec).await;
    Setup { anvil, up, tg, _db: db }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// The gateway's ledger, once the gateway has stopped (a SQLite ledger belongs to one process).
async fn store_of(s: &mut Setup) -> tollgate::store::Store {
    s.tg.stop().await;
    tollgate::store::Store::connect(&s._db.url).await.unwrap()
}

#[tokio::test]
async fn unpaid_request_gets_both_v1_and_v2_challenges() {
    let s = setup().await;
    let r = http()
        .get(format!("{}/paid/report?x=1", s.tg.url))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let h = r.headers().clone();
    assert_eq!(
        h["access-control-expose-headers"],
        "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"
    );
    let v2 = decode_b64_json(h["payment-required"].to_str().unwrap());
    let v1: serde_json::Value = r.json().await.unwrap();

    // v1 body: every field of every requirement.
    assert_eq!(v1["x402Version"], 1);
    assert_eq!(v1["error"], "X-PAYMENT header is required");
    let a = &v1["accepts"].as_array().unwrap()[0];
    assert_eq!(v1["accepts"].as_array().unwrap().len(), 1);
    assert_eq!(a["scheme"], "exact");
    assert_eq!(a["network"], "base");
    assert_eq!(a["maxAmountRequired"], "1000");
    assert_eq!(a["asset"], "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
    assert_eq!(a["payTo"], PAYEE.to_checksum(None));
    assert_eq!(a["resource"], "https://api.example.com/paid/report");
    assert_eq!(a["description"], "paid data");
    assert_eq!(a["mimeType"], "application/json");
    assert_eq!(
        a["outputSchema"],
        serde_json::json!({"input": {"type": "http", "method": "GET", "discoverable": true}})
    );
    assert_eq!(a["maxTimeoutSeconds"], 60);
    // The EIP-712 domain offered is the one the contract on chain really has.
    let (name, version) = s.anvil.usdc_domain().await;
    assert_eq!(a["extra"], serde_json::json!({"name": name, "version": version}));

    // v2 header: CAIP-2 network, amount, top-level resource.
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(v2["error"], "PAYMENT-SIGNATURE header is required");
    assert_eq!(
        v2["resource"],
        serde_json::json!({"url": "https://api.example.com/paid/report", "description": "paid data", "mimeType": "application/json"})
    );
    let b = &v2["accepts"][0];
    assert_eq!(v2["accepts"].as_array().unwrap().len(), 1);
    assert_eq!(b["scheme"], "exact");
    assert_eq!(b["network"], "eip155:8453");
    assert_eq!(b["amount"], "1000");
    assert_eq!(b["asset"], a["asset"]);
    assert_eq!(b["payTo"], a["payTo"]);
    assert_eq!(b["maxTimeoutSeconds"], 60);
    assert_eq!(b["extra"], a["extra"]);
    assert!(b.get("maxAmountRequired").is_none() && b.get("resource").is_none());

    // Without forwarding headers the resource is built from Host.
    let r = http().get(format!("{}/paid/x", s.tg.url)).send().await.unwrap();
    let v1: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v1["accepts"][0]["resource"],
        format!("http://127.0.0.1:{}/paid/x", s.tg.port)
    );
    assert_eq!(s.up.count(), 0, "nothing unpaid reaches the upstream");
}

#[tokio::test]
async fn one_requirement_per_accepted_network() {
    let s = setup_with(|spec| {
        spec.networks_extra = "[networks.base-sepolia]\nrpc_url = \"http://127.0.0.1:9\"";
        spec.routes =
            "[[routes]]\npath = \"/multi\"\nprice = \"$0.02\"\nnetworks = [\"base\", \"base-sepolia\"]".into();
    })
    .await;
    let v1 = offers(&format!("{}/multi", s.tg.url), false).await;
    let v2 = offers(&format!("{}/multi", s.tg.url), true).await;
    let nets = |o: &[client::Offered]| o.iter().map(|x| x.network.clone()).collect::<Vec<_>>();
    assert_eq!(nets(&v1), ["base", "base-sepolia"]);
    assert_eq!(nets(&v2), ["eip155:8453", "eip155:84532"]);
    assert_eq!(v2[1].eip712_name, "USDC");
    assert!(v1.iter().all(|o| o.amount == U256::from(20_000u64)));
}

#[tokio::test]
async fn free_routes_pass_and_spoofed_payer_headers_are_stripped() {
    let s = setup().await;
    let r = http()
        .get(format!("{}/free/thing", s.tg.url))
        .header("x-tollgate-payer", "0xdead")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.last().unwrap();
    assert_eq!(seen.path, "/free/thing");
    assert_eq!(seen.header("x-tollgate-payer"), None);
    assert_eq!(seen.header("host"), Some(s.up.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("127.0.0.1:{}", s.tg.port).as_str())
    );

    // A chain of proxies before this one: its address is appended, the client's own names kept.
    let r = http()
        .get(format!("{}/free/other", s.tg.url))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.up.last().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.example.com"));
}

#[tokio::test]
async fn path_tricks_do_not_walk_around_the_paywall() {
    let s = setup().await;
    for p in ["//paid/x", "/paid/./x", "/free/../paid/x", "/%70aid/x", "/paid"] {
        let r = http().get(format!("{}{p}", s.tg.url)).send().await.unwrap();
        assert_eq!(r.status(), 402, "{p}");
    }
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn cors_preflight_is_answered_for_priced_routes() {
    let s = setup().await;
    let r = http()
        .request(reqwest::Method::OPTIONS, format!("{}/paid/x", s.tg.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "payment-signature")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("PAYMENT-SIGNATURE"));
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("X-PAYMENT-RESPONSE"));
    assert_eq!(s.up.count(), 0);
}

async fn paid_request_settles(v2: bool) {
    let mut s = setup().await;
    let url = format!("{}/paid/data", s.tg.url);
    let (payer0, payee0) = (s.anvil.usdc_balance(PAYER).await, s.anvil.usdc_balance(PAYEE).await);
    let (name, value) = signed_header(&url, v2).await;
    assert_eq!(name, if v2 { "PAYMENT-SIGNATURE" } else { "X-PAYMENT" });
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.tg.log());
    let resp_header = if v2 { "payment-response" } else { "x-payment-response" };
    let other = if v2 { "x-payment-response" } else { "payment-response" };
    assert!(
        r.headers().get(other).is_none(),
        "answers in the version it was paid in"
    );
    let settle = decode_b64_json(r.headers()[resp_header].to_str().unwrap());
    assert_eq!(settle["success"], true);
    assert_eq!(settle["network"], if v2 { "eip155:8453" } else { "base" });
    assert_eq!(settle["payer"], PAYER.to_checksum(None));
    assert!(settle.get("errorReason").is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["payer"], PAYER.to_checksum(None), "the upstream was told who paid");

    // The upstream saw the payer and the tx, never the payment header.
    let seen = s.up.last().unwrap();
    assert_eq!(s.up.count(), 1);
    assert!(seen.header("x-payment").is_none() && seen.header("payment-signature").is_none());
    let tx: B256 = settle["transaction"].as_str().unwrap().parse().unwrap();
    assert_eq!(seen.header("x-tollgate-tx"), Some(tx.to_string().as_str()));

    // The transaction is on chain, sent by the relayer to USDC, and moved exactly the price.
    let receipt = s
        .anvil
        .provider
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .expect("tx on chain");
    assert!(receipt.status());
    assert_eq!(receipt.from, RELAYER);
    assert_eq!(receipt.to, Some(USDC));
    assert_eq!(s.anvil.usdc_balance(PAYER).await, payer0 - U256::from(PRICE));
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));

    // The ledger says settled, and the attempt is recorded.
    let store = store_of(&mut s).await;
    assert_eq!(
        store
            .count_payments(tollgate::store::PaymentState::Settled)
            .await
            .unwrap(),
        1
    );
    // Written before the gateway exited.
    assert_eq!(
        store.count_attempts(tollgate::store::Outcome::Settled).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn paid_v1_request_settles_on_chain_and_is_forwarded() {
    paid_request_settles(false).await;
}

#[tokio::test]
async fn paid_v2_request_settles_on_chain_and_is_forwarded() {
    paid_request_settles(true).await;
}

#[tokio::test]
async fn a_replayed_header_is_refused() {
    let s = setup().await;
    let url = format!("{}/paid/data", s.tg.url);
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let (name, value) = signed_header(&url, true).await;
    assert_eq!(
        http().get(&url).header(name, &value).send().await.unwrap().status(),
        200
    );
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let pr = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    assert_eq!(pr["success"], false);
    assert_eq!(pr["errorReason"], reason::DUPLICATE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], reason::DUPLICATE);
    assert_eq!(s.up.count(), 1);
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
}

#[tokio::test]
async fn twenty_concurrent_copies_of_one_header_forward_exactly_once() {
    let s = setup().await;
    let url = format!("{}/paid/data", s.tg.url);
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let (name, value) = signed_header(&url, false).await;
    let client = http();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, u, v) = (client.clone(), url.clone(), value.clone());
            tokio::spawn(async move { c.get(&u).header(name, v).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    // The others are replays: refused (402), or told the payment is still being settled by the
    // first (504 pending) — never served.
    assert_eq!(codes.iter().filter(|&&c| c == 402 || c == 504).count(), 19, "{codes:?}");
    assert_eq!(s.up.count(), 1);
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
}

/// Sends a payment header made by `tweak` from a good authorization; returns status, reason, detail.
async fn refused_for(
    s: &Setup,
    path: &str,
    v2: bool,
    tweak: impl FnOnce(&mut client::Offered, &mut tollgate::x402::Authorization),
) -> (u16, String, String) {
    let url = format!("{}{path}", s.tg.url);
    let mut o = offers(&url, v2).await.remove(0);
    let good = client::authorize(&o, &payer(), now());
    let mut auth = good.authorization.clone();
    tweak(&mut o, &mut auth);
    let p = client::sign(&o, &payer(), auth);
    let (name, value) = client::payment_header(&o, &p);
    let r = http().get(&url).header(name, value).send().await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or("").to_string(),
        body["detail"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn each_failed_check_is_a_402_with_its_reason_and_nothing_moves() {
    let s = setup().await;
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let nonce0 = s.anvil.tx_count(RELAYER).await;
    let t = now();
    let cases: Vec<(
        &str,
        Box<dyn FnOnce(&mut client::Offered, &mut tollgate::x402::Authorization)>,
    )> = vec![
        (reason::VALUE, Box::new(|_, a| a.value = U256::from(999u64))),
        (reason::VALUE, Box::new(|_, a| a.value = U256::from(1001u64))),
        (reason::RECIPIENT, Box::new(|_, a| a.to = Address::repeat_byte(0x42))),
        (reason::VALID_BEFORE, Box::new(move |_, a| a.valid_before = t - 1)),
        (reason::VALID_AFTER, Box::new(move |_, a| a.valid_after = t + 3600)),
        // Signed under another domain (wrong EIP-712 name): the signature does not recover to `from`.
        (
            reason::INVALID_SIGNATURE,
            Box::new(|o, _| o.eip712_name = "USDC".into()),
        ),
        (reason::INVALID_SIGNATURE, Box::new(|o, _| o.chain_id = 84532)),
    ];
    for (i, (want, tweak)) in cases.into_iter().enumerate() {
        let (status, why, detail) = refused_for(&s, "/paid/x", i % 2 == 0, tweak).await;
        assert_eq!((status, why.as_str()), (402, want), "case {i}: {detail}");
        assert!(!detail.is_empty());
    }
    // A signature by someone else.
    let url = format!("{}/paid/x", s.tg.url);
    let o = offers(&url, true).await.remove(0);
    let mut p = client::authorize(&o, &payer(), now());
    p.authorization.from = Address::repeat_byte(7);
    let (name, value) = client::payment_header(&o, &p);
    let r = http().get(&url).header(name, value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(
        decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["errorReason"],
        reason::INVALID_SIGNATURE
    );

    assert_eq!(s.up.count(), 0, "no refused request reaches the upstream");
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0);
    assert_eq!(s.anvil.tx_count(RELAYER).await, nonce0, "no transaction was sent");
}

#[tokio::test]
async fn wrong_network_and_scheme_are_402s() {
    let s = setup().await;
    let url = format!("{}/paid/x", s.tg.url);
    let o = offers(&url, false).await.remove(0);
    let p = client::authorize(&o, &payer(), now());
    for (field, val, want) in [
        ("network", "polygon", reason::INVALID_NETWORK),
        ("scheme", "upto", reason::INVALID_SCHEME),
    ] {
        let (_, v) = client::payment_header(&o, &p);
        let mut json = decode_b64_json(&v);
        json[field] = val.into();
        let hdr = tollgate::x402::encode_header(&json);
        let r = http().get(&url).header("X-PAYMENT", hdr).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], want);
        assert_eq!(body["accepts"][0]["network"], "base", "the requirements come again");
    }
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn insufficient_balance_is_found_on_chain() {
    let s = setup().await;
    let url = format!("{}/paid/x", s.tg.url);
    let o = offers(&url, true).await.remove(0);
    let poor = alloy::signers::local::PrivateKeySigner::random();
    let p = client::authorize(&o, &poor, now());
    let (name, value) = client::payment_header(&o, &p);
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], reason::INSUFFICIENT_FUNDS, "{body}");
    assert_eq!(s.up.count(), 0);
    // The claim was released: once funded, the very same authorization pays.
    s.anvil.mint(poor.address(), PRICE).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.tg.log());
}

#[tokio::test]
async fn malformed_headers_are_400s_with_a_reason() {
    let mut s = setup().await;
    let url = format!("{}/paid/x", s.tg.url);
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cases = [
        ("X-PAYMENT", "%%%not-base64%%%".to_string(), "not valid base64"),
        ("X-PAYMENT", b64("{not json"), "not a valid x402 PaymentPayload"),
        (
            "PAYMENT-SIGNATURE",
            b64(r#"{"x402Version":2,"payload":{}}"#),
            "must carry `accepted`",
        ),
        (
            "X-PAYMENT",
            b64(r#"{"x402Version":7,"scheme":"exact","network":"base","payload":{}}"#),
            "x402Version 7",
        ),
        ("X-PAYMENT", "A".repeat(17 * 1024), "the limit is 16384 bytes"),
    ];
    for (name, value, want) in cases {
        let r = http().get(&url).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 400, "{want}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_payment_header");
        assert!(body["detail"].as_str().unwrap().contains(want), "{body}");
    }
    // A well-formed header whose payload is not an authorization is a failed check (402).
    let r = http()
        .get(&url)
        .header(
            "X-PAYMENT",
            b64(r#"{"x402Version":1,"scheme":"exact","network":"base","payload":{"nope":1}}"#),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let (n, v) = signed_header(&url, false).await;
    let r = http()
        .get(&url)
        .header(n, &v)
        .header("PAYMENT-SIGNATURE", &v)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "both headers at once");
    assert_eq!(s.up.count(), 0);
    let store = store_of(&mut s).await;
    for st in [
        tollgate::store::PaymentState::Claimed,
        tollgate::store::PaymentState::Settled,
    ] {
        assert_eq!(store.count_payments(st).await.unwrap(), 0, "nothing recorded as paid");
    }
}

#[tokio::test]
async fn settle_after_charges_nothing_when_the_upstream_fails() {
    let s = setup().await;
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let nonce0 = s.anvil.tx_count(RELAYER).await;
    let url = format!("{}/after/status/500", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 500, "the upstream's answer is passed on");
    assert!(r.headers().get("payment-response").is_none());
    assert_eq!(s.up.count(), 1);
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0, "no transfer on chain");
    assert_eq!(s.anvil.tx_count(RELAYER).await, nonce0, "no transaction sent");
    // Released: the same signed header (same amount, same payee) pays for a request that succeeds.
    let ok = format!("{}/after/fine", s.tg.url);
    let r = http().get(&ok).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.tg.log());
    assert!(decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["success"] == true);
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
}

#[tokio::test]
async fn chain_rpc_down_is_503_and_nothing_is_forwarded() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = Tollgate::start(&GatewaySpec::new(up.url(), dead, &db.url)).await;
    let url = format!("{}/paid/x", tg.url);
    // Challenges need no chain.
    let (name, value) = signed_header(&url, false).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "payment_unavailable");
    // The client learns which network; the operator's log says what to check, without the URL's
    // path or query (where hosted RPCs keep their API keys).
    assert!(body["detail"].as_str().unwrap().contains("base network"), "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    assert!(tg.log().contains("check networks.base.rpc_url"), "{}", tg.log());
    assert_eq!(up.count(), 0);
    let mut tg = tg;
    tg.stop().await;
    let store = tollgate::store::Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store
            .count_payments(tollgate::store::PaymentState::Claimed)
            .await
            .unwrap(),
        0,
        "claim released"
    );
}

#[tokio::test]
async fn without_a_relayer_key_challenges_work_and_payments_say_what_to_set() {
    let s = setup_with(|spec| spec.relayer_key = None).await;
    let url = format!("{}/paid/x", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("TEST_RELAYER_KEY"), "{body}");
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn relayer_without_gas_is_503_with_a_log_line_and_loses_nothing() {
    let s = setup().await;
    s.anvil.set_balance(RELAYER, U256::ZERO).await;
    let url = format!("{}/paid/x", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("relayer needs funds"),
        "{body}"
    );
    assert!(s.tg.log().contains("relayer is out of gas"), "{}", s.tg.log());
    assert!(
        !s.tg.log().contains(RELAYER_KEY.trim_start_matches("0x")),
        "the key never appears in logs"
    );
    assert_eq!(s.up.count(), 0);
    // Funded again, the same authorization goes through: it was released, not lost.
    s.anvil
        .set_balance(RELAYER, U256::from(10u64).pow(U256::from(19)))
        .await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.tg.log());
}

#[tokio::test]
async fn upstream_down_is_502_and_after_mode_charges_nothing() {
    let anvil = Anvil::start().await;
    let db = Db::sqlite();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let tg = Tollgate::start(&GatewaySpec::new(dead, anvil.url.clone(), &db.url)).await;
    let payee0 = anvil.usdc_balance(PAYEE).await;
    let after = format!("{}/after/x", tg.url);
    let (name, value) = signed_header(&after, false).await;
    let r = http().get(&after).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );
    assert_eq!(anvil.usdc_balance(PAYEE).await, payee0, "after mode: not charged");
    // Before mode settles first; the 502 still carries the transaction so the client can see it.
    let before = format!("{}/paid/x", tg.url);
    let (name, value) = signed_header(&before, false).await;
    let r = http().get(&before).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let pr = decode_b64_json(r.headers()["x-payment-response"].to_str().unwrap());
    assert_eq!(pr["success"], true);
    assert_eq!(anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
}

#[tokio::test]
async fn spec_vector_is_judged_expired_not_bad_signature() {
    let s = setup_with(|spec| {
        spec.pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".parse().unwrap();
        spec.networks_extra = "[networks.base-sepolia]\nrpc_url = \"http://127.0.0.1:9\"";
        spec.routes = "[[routes]]\npath = \"/premium-data\"\nprice = 10000\nnetworks = [\"base-sepolia\"]".into();
    })
    .await;
    let vector = include_str!("../../tests/data/spec-vector-x-payment.txt").trim();
    let r = http()
        .get(format!("{}/premium-data", s.tg.url))
        .header("X-PAYMENT", vector)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], reason::VALID_BEFORE, "{body}");
    assert_eq!(body["payer"], "0x857b06519E91e3A54538791bDbb0E22373e36b66");
}

#[tokio::test]
async fn a_receipt_timeout_is_pending_then_reconciled_never_lost() {
    // PostgreSQL: the test watches the ledger while the gateway reconciles it.
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.settlement_extra = "receipt_timeout_secs = 1\nreconcile_interval_secs = 1\nreconcile_after_secs = 0";
    let tg = Tollgate::start(&spec).await;
    let s = Setup { anvil, up, tg, _db: db };
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let url = format!("{}/paid/x", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    s.anvil.set_automine(false).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    // Sent but unconfirmed: the content is served, the transaction named, the ledger says pending.
    assert_eq!(r.status(), 200);
    let tx = decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["transaction"]
        .as_str()
        .unwrap()
        .to_string();
    let store = tollgate::store::Store::connect(&s._db.url).await.unwrap();
    assert_eq!(
        store
            .count_payments(tollgate::store::PaymentState::Pending)
            .await
            .unwrap(),
        1
    );
    // A replay while pending is refused: it was served.
    assert_eq!(
        http().get(&url).header(name, &value).send().await.unwrap().status(),
        402
    );
    // Reconciliation passes meanwhile (every second) keep it: it is still valid and may still land.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        store
            .count_payments(tollgate::store::PaymentState::Pending)
            .await
            .unwrap(),
        1,
        "a pending payment is not released while it can still land"
    );
    s.anvil.mine().await;
    s.anvil.set_automine(true).await;
    eventually("reconciliation to settle the payment", || async {
        store
            .count_payments(tollgate::store::PaymentState::Settled)
            .await
            .unwrap()
            == 1
    })
    .await;
    let row = store.unfinished(u64::MAX, 10).await.unwrap();
    assert!(row.is_empty());
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
    let receipt = s
        .anvil
        .provider
        .get_transaction_receipt(tx.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(receipt.status());
}

#[tokio::test]
async fn two_gateways_sharing_postgres_accept_one_header_once() {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let a = Tollgate::start(&GatewaySpec::new(up.url(), anvil.url.clone(), &db.url)).await;
    let b = Tollgate::start(&GatewaySpec::new(up.url(), anvil.url.clone(), &db.url)).await;
    let payee0 = anvil.usdc_balance(PAYEE).await;
    let (name, value) = signed_header(&format!("{}/paid/x", a.url), false).await;
    let client = http();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let url = format!("{}/paid/x", if i % 2 == 0 { &a.url } else { &b.url });
            let (c, v) = (client.clone(), value.clone());
            tokio::spawn(async move { c.get(&url).header(name, v).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    assert_eq!(up.count(), 1);
    assert_eq!(anvil.usdc_balance(PAYEE).await, payee0 + U256::from(PRICE));
    // And a fresh payment goes through the other instance, recorded in the shared database.
    let (name, value) = signed_header(&format!("{}/paid/y", b.url), true).await;
    assert_eq!(
        http()
            .get(format!("{}/paid/y", b.url))
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let store = tollgate::store::Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store
            .count_payments(tollgate::store::PaymentState::Settled)
            .await
            .unwrap(),
        2
    );
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_chain_rpc_that_never_answers_is_503_within_the_rpc_timeout() {
    // Accepts connections and never answers: a hung node, not a dead one.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc = format!("http://{}", hung.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = Tollgate::start(&GatewaySpec::new(up.url(), rpc, &db.url)).await;
    let url = format!("{}/paid/x", tg.url);
    let (name, value) = signed_header(&url, true).await;
    let t0 = std::time::Instant::now();
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t0.elapsed() < Duration::from_secs(10), "bounded by rpc_timeout_ms");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn check_config_names_every_problem_and_passes_the_shipped_config() {
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let ok = std::process::Command::new(bin)
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("GET /api/weather/{city}"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "upstream = \"http://127.0.0.1:8080\"\npay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\n\
         [[routes]]\npath = \"/a\"\nprice = \"$0.01\"\n[[routes]]\npath = \"/b\"\nprice = \"$0.01\"\n\
         [[routes]]\npath = \"/c\"\nprice = \"$0.0x\"\n[[routes]]\npath = \"/d\"\nprice = \"$1\"\nnetworks = [\"polygon\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[2].price: '$0.0x' is not a USD amount like '$0.01'"),
        "{err}"
    );
    assert!(
        err.contains("routes[3].networks[0]: 'polygon' is not configured"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_gateway_on_a_taken_port_refuses_to_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"http://127.0.0.1:9\"\ndatabase = \"sqlite://{}/t.db\"\npay_to = \"{PAYEE}\"",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listen 127.0.0.1:{port}")) && err.contains("already listening"),
        "{err}"
    );
}

/// Fires one request per header at once; returns the statuses and the settlement transactions.
async fn fire_all(url: &str, headers: Vec<(&'static str, String)>) -> (Vec<u16>, Vec<String>) {
    let client = http();
    let tasks: Vec<_> = headers
        .into_iter()
        .map(|(name, value)| {
            let (c, u) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let r = c.get(&u).header(name, value).send().await.unwrap();
                let tx = r.headers().get("payment-response").map(|v| {
                    decode_b64_json(v.to_str().unwrap())["transaction"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                (r.status().as_u16(), tx)
            })
        })
        .collect();
    let (mut codes, mut txs) = (Vec::new(), Vec::new());
    for t in tasks {
        let (c, tx) = t.await.unwrap();
        codes.push(c);
        txs.extend(tx.filter(|t| !t.is_empty()));
    }
    (codes, txs)
}

#[tokio::test]
async fn concurrent_payments_share_settlement_transactions() {
    let s = setup().await;
    let url = format!("{}/paid/x", s.tg.url);
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let o = offers(&url, true).await.remove(0);
    let headers: Vec<_> = (0..24)
        .map(|_| client::payment_header(&o, &client::authorize(&o, &payer(), now())))
        .collect();
    let (codes, txs) = fire_all(&url, headers).await;
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}\n{}", s.tg.log());
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(24 * PRICE));
    let distinct: std::collections::BTreeSet<_> = txs.iter().collect();
    assert!(
        distinct.len() < 24,
        "24 payments went out in {} transactions: no batching",
        distinct.len()
    );
    // Every payment's transaction carries that payment (its own AuthorizationUsed log).
    for tx in &distinct {
        let r = s
            .anvil
            .provider
            .get_transaction_receipt(tx.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(r.status());
    }
    assert_eq!(s.up.count(), 24);
}

#[tokio::test]
async fn a_transfer_that_fails_inside_a_batch_fails_alone() {
    let s = setup().await;
    let url = format!("{}/paid/x", s.tg.url);
    let o = offers(&url, true).await.remove(0);
    // A payer who can afford one payment signs two; each passes the simulation on its own.
    let poor = alloy::signers::local::PrivateKeySigner::random();
    s.anvil.mint(poor.address(), PRICE).await;
    let mut headers: Vec<_> = (0..2)
        .map(|_| client::payment_header(&o, &client::authorize(&o, &poor, now())))
        .collect();
    // And others pay at the same time, so that the two land in batches with company.
    headers.extend((0..10).map(|_| client::payment_header(&o, &client::authorize(&o, &payer(), now()))));
    let payee0 = s.anvil.usdc_balance(PAYEE).await;
    let (codes, _) = fire_all(&url, headers).await;
    assert_eq!(
        codes.iter().filter(|&&c| c == 200).count(),
        11,
        "{codes:?}\n{}",
        s.tg.log()
    );
    assert_eq!(codes.iter().filter(|&&c| c == 402).count(), 1, "{codes:?}");
    assert_eq!(s.anvil.usdc_balance(PAYEE).await, payee0 + U256::from(11 * PRICE));
    assert_eq!(s.anvil.usdc_balance(poor.address()).await, U256::ZERO);
    assert_eq!(s.up.count(), 11);
}

#[tokio::test]
async fn without_multicall3_each_payment_is_its_own_transaction() {
    let anvil = Anvil::start_with(&["--no-multicall3"]).await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = Tollgate::start(&GatewaySpec::new(up.url(), anvil.url.clone(), &db.url)).await;
    let url = format!("{}/paid/x", tg.url);
    let o = offers(&url, true).await.remove(0);
    let headers: Vec<_> = (0..8)
        .map(|_| client::payment_header(&o, &client::authorize(&o, &payer(), now())))
        .collect();
    let (codes, txs) = fire_all(&url, headers).await;
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    let distinct: std::collections::BTreeSet<_> = txs.iter().collect();
    assert_eq!(distinct.len(), 8);
}

#[tokio::test]
async fn settle_after_that_cannot_settle_replaces_the_upstream_answer() {
    let s = setup().await;
    let url = format!("{}/after/secret", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    // The relayer cannot pay gas: verification passes, the upstream answers, settlement fails.
    s.anvil.set_balance(RELAYER, U256::ZERO).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503, "{}", s.tg.log());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("payment_unavailable") && !body.contains("/after/secret"),
        "the content is not served: {body}"
    );
    assert_eq!(s.up.count(), 1, "the upstream was asked (settle = after)");
    // Nothing was charged and the claim is free again: funded, the same header pays.
    s.anvil
        .set_balance(RELAYER, U256::from(10u64).pow(U256::from(19)))
        .await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/after/secret"));
}

#[tokio::test]
async fn with_two_confirmations_the_request_waits_for_the_next_block() {
    let s = setup_with(|spec| spec.settlement_extra = "confirmations = 2").await;
    let url = format!("{}/paid/deep", s.tg.url);
    let (name, value) = signed_header(&url, true).await;
    let head = s.anvil.provider.get_block_number().await.unwrap();
    let req = tokio::spawn(async move { http().get(&url).header(name, &value).send().await.unwrap() });

    // anvil mines a block per transaction: the transfer lands in head + 1, and nothing else mines.
    eventually("the transfer is mined", || async {
        s.anvil.provider.get_block_number().await.unwrap() > head
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!req.is_finished(), "answered with only one confirmation");
    assert_eq!(s.up.count(), 0, "settle-before forwards only once settled");

    s.anvil.mine().await;
    let r = tokio::time::timeout(Duration::from_secs(10), req)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", s.tg.log());
    let settle = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    let tx: B256 = settle["transaction"].as_str().unwrap().parse().unwrap();
    let receipt = s.anvil.provider.get_transaction_receipt(tx).await.unwrap().unwrap();
    assert_eq!(receipt.block_number, Some(head + 1));
    assert_eq!(s.up.count(), 1);
}
