//! The facilitator endpoints as stock x402 servers use them: settlement that outlives the caller,
//! the payment-identifier extension, discovery, the drop-in mode's private facilitator, the gas
//! budget, and `/supported` checked field by field.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use serde_json::{json, Value};

use crate::common::*;
use crate::hosted::{Auth, Hosted, HostedSpec, PAYEE_A};

/// The official @x402/express server of `tests/js/express-server.mjs`, with tollgate as facilitator.
pub struct ExpressServer {
    child: std::process::Child,
    pub url: String,
}

impl Drop for ExpressServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExpressServer {
    pub async fn start(facilitator: &str, key: &str, pay_to: alloy::primitives::Address) -> ExpressServer {
        let port = free_port();
        let child = std::process::Command::new("node")
            .arg(js_dir().join("express-server.mjs"))
            .arg(port.to_string())
            .env("FACILITATOR_URL", facilitator)
            .env("TENANT_KEY", key)
            .env("PAY_TO", pay_to.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually("the express server", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        ExpressServer {
            child,
            url: format!("http://127.0.0.1:{port}/weather"),
        }
    }
}

#[tokio::test]
async fn a_stock_server_retrying_a_pending_settlement_gets_the_first_transaction() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    spec.receipt_timeout_secs = 3;
    let h = Hosted::start(&spec).await;
    let key = payee_tenant(&h, "pending").await;
    let server = ExpressServer::start(&format!("{}/facilitator", h.api), &key, PAYEE_A).await;
    let relayer = RELAYER_KEY.parse::<PrivateKeySigner>().unwrap().address();
    let sent_before = anvil.tx_count(relayer).await;
    let before = anvil.usdc_balance(PAYEE_A).await;

    // The receipt is held back: blocks are mined only when the test says so.
    anvil.set_automine(false).await;
    let url = server.url.clone();
    let paying = tokio::spawn(async move { crate::interop::node("pay-v2.mjs", &url).await });
    let mut in_pool = Value::Null;
    for _ in 0..400 {
        let pool = anvil.rpc("txpool_content", json!([])).await;
        if pool["pending"].as_object().is_some_and(|p| !p.is_empty()) {
            in_pool = pool;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Vec<String> = in_pool["pending"]
        .as_object()
        .expect("the settlement reaches the node's pool")
        .values()
        .flat_map(|by_nonce| by_nonce.as_object().unwrap().values())
        .map(|t| t["hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent.len(), 1, "{in_pool}");
    // The first settle times out after 3 s and answers settlement_pending with this transaction;
    // the server retries at once, and the block comes while the retry waits for it.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    anvil.mine().await;
    anvil.set_automine(true).await;
    let out = paying.await.unwrap();

    assert_eq!(out["status"], json!(200), "{out}\n{}", h.tg.log());
    assert_eq!(out["paymentResponse"]["success"], json!(true), "{out}");
    assert_eq!(
        out["paymentResponse"]["transaction"].as_str().unwrap().to_lowercase(),
        sent[0].to_lowercase(),
        "the retry answers with the transaction sent first"
    );
    assert_eq!(
        anvil.tx_count(relayer).await,
        sent_before + 1,
        "one transaction was ever sent"
    );
    assert_eq!(
        anvil.usdc_balance(PAYEE_A).await,
        before + U256::from(1000u64),
        "paid once"
    );
    assert!(
        h.tg.log().contains("no receipt within the receipt timeout"),
        "the first settle did time out: {}",
        h.tg.log()
    );
    let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(u["verifications_used"], json!(1), "counted once: {u}");
    let (_, p, _) = h.call("GET", "/api/v1/x402/payments", Auth::Key(&key), None).await;
    assert_eq!(p["payments"][0]["state"], json!("settled"), "{p}");
}

/// A requirement for 0.01 USDC on Base to `pay_to`, as a stock server would send it, and the client's
/// reading of it.
pub fn usdc_offer(pay_to: alloy::primitives::Address) -> (tollgate::x402::Offer, tollgate::client::Offered) {
    let net = std::sync::Arc::new(tollgate::x402::Network::from_known(
        tollgate::x402::network::builtin("base").unwrap(),
    ));
    let offer = tollgate::x402::Offer::exact(net, U256::from(10_000u64), pay_to.to_checksum(None), 60);
    let o = tollgate::client::Offered::from_offer(&offer, tollgate::x402::Version::V2);
    (offer, o)
}

/// A tenant on the free plan paid into `PAYEE_A`: its key.
async fn payee_tenant(h: &Hosted, slug: &str) -> String {
    let (_, key) = h.tenant(&format!("{slug}@t.test"), "free", Some(slug)).await;
    let (st, v) = h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;
    assert_eq!(st, 200, "{v}");
    key
}

/// A payment header (as `payment_header` makes it) with a payment-identifier id added.
fn with_id(header: &str, id: &str) -> String {
    let mut p = decode_b64_json(header);
    p["extensions"] = json!({"payment-identifier": {"info": {"required": true, "id": id}}});
    tollgate::x402::encode_header(&p)
}

#[tokio::test]
async fn the_proxy_answers_a_retried_payment_identifier_from_its_first_answer() {
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        let up = crate::upstream::Upstream::start("127.0.0.1:0").await.unwrap();
        let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
        spec.routes = r#"
[[routes]]
path = "/idem/*"
price = "$0.001"
payment_identifier = "required"
"#
        .into();
        let tg = Tollgate::start(&spec).await;
        let url = format!("{}/idem/order", tg.url);

        // The 402 declares the extension, required.
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 402);
        let pr = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
        assert_eq!(
            pr["extensions"]["payment-identifier"]["info"]["required"],
            json!(true),
            "{pr}"
        );
        assert_eq!(
            pr["extensions"]["payment-identifier"]["schema"]["properties"]["id"]["minLength"],
            json!(16)
        );

        let o = &offers(&url, true).await[0];
        let fresh = || tollgate::client::payment_header(o, &tollgate::client::authorize(o, &payer(), now())).1;
        let pay = |h: String| {
            let url = url.clone();
            #[allow(clippy::redundant_async_block)]
            async move {
                let r = http().get(url).header("payment-signature", h).send().await.unwrap();
                let st = r.status().as_u16();
                let headers = r.headers().clone();
                (st, headers, r.text().await.unwrap())
            }
        };
        let before = anvil.usdc_balance(PAYEE).await;

        // Required and missing: 400, nothing forwarded or charged.
        let (st, _, body) = pay(fresh()).await;
        assert_eq!(st, 400, "{body}");
        assert!(body.contains("payment-identifier"), "{body}");
        // An id outside the rules: 400.
        let (st, _, body) = pay(with_id(&fresh(), "short")).await;
        assert_eq!(st, 400, "{body}");
        assert_eq!(up.count(), 0);

        // Paid with an id: served once.
        let first = with_id(&fresh(), "order_0001_abcdefgh");
        let (st, h1, b1) = pay(first.clone()).await;
        assert_eq!(st, 200, "{b1}");
        assert_eq!(up.count(), 1);
        assert_eq!(anvil.usdc_balance(PAYEE).await, before + U256::from(1000u64));
        // The same payment again: the first answer, replayed; not forwarded, not charged.
        let (st, h2, b2) = pay(first.clone()).await;
        assert_eq!(st, 200, "{b2}");
        assert_eq!(b2, b1);
        assert_eq!(h2["payment-response"], h1["payment-response"]);
        assert_eq!(h2["idempotent-replayed"], "true");
        assert_eq!(h2["content-type"], h1["content-type"]);
        assert_eq!(up.count(), 1, "a replay is not forwarded");
        assert_eq!(
            anvil.usdc_balance(PAYEE).await,
            before + U256::from(1000u64),
            "nor charged"
        );

        // Another payment under the same id: 409, and that payment is not charged.
        let other = fresh();
        let (st, _, body) = pay(with_id(&other, "order_0001_abcdefgh")).await;
        assert_eq!(st, 409, "{body}");
        assert!(body.contains("payment_identifier_conflict"), "{body}");
        assert_eq!(anvil.usdc_balance(PAYEE).await, before + U256::from(1000u64));
        // The same payment under a new id: served.
        let (st, _, body) = pay(with_id(&other, "order_0002_abcdefgh")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(up.count(), 2);

        // A refused payment frees its id (nothing was charged): the id then serves a good payment.
        let o_bad = tollgate::client::Offered {
            amount: U256::from(1u64),
            ..o.clone()
        };
        let cheap = tollgate::client::payment_header(&o_bad, &tollgate::client::authorize(&o_bad, &payer(), now())).1;
        let (st, _, body) = pay(with_id(&cheap, "order_0003_abcdefgh")).await;
        assert_eq!(st, 402, "{body}");
        let (st, _, body) = pay(with_id(&fresh(), "order_0003_abcdefgh")).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(up.count(), 3);

        // Ten concurrent sends of one payment with one id: forwarded and charged once; each of the
        // others gets the replay or "in progress".
        let same = with_id(&fresh(), "order_0004_abcdefgh");
        let before = anvil.usdc_balance(PAYEE).await;
        let calls: Vec<_> = (0..10).map(|_| tokio::spawn(pay(same.clone()))).collect();
        let mut all = Vec::new();
        for c in calls {
            all.push(c.await.unwrap());
        }
        let ok = all.iter().filter(|(st, _, _)| *st == 200).count();
        let busy = all
            .iter()
            .filter(|(st, _, b)| *st == 409 && b.contains("payment_identifier_in_progress"))
            .count();
        assert_eq!(ok + busy, 10, "{all:?}");
        assert!(ok >= 1);
        assert_eq!(up.count(), 4, "forwarded once");
        assert_eq!(
            anvil.usdc_balance(PAYEE).await,
            before + U256::from(1000u64),
            "charged once"
        );
    }
}

#[tokio::test]
async fn the_facilitator_honours_payment_identifiers() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let key = payee_tenant(&h, "ids").await;
    let (offer, o) = usdc_offer(PAYEE_A);
    let body = |id: Option<&str>| {
        let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        let mut p = decode_b64_json(&header);
        p["extensions"] = json!({"payment-identifier": {"info": {"required": true}}});
        if let Some(id) = id {
            p["extensions"]["payment-identifier"]["info"]["id"] = json!(id);
        }
        json!({"x402Version": 2, "paymentPayload": p, "paymentRequirements": offer.to_v2()})
    };
    let call = |what: &'static str, b: Value| {
        let url = format!("{}/facilitator/{what}", h.api);
        let k = key.clone();
        async move {
            let r = http().post(url).bearer_auth(k).json(&b).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };
    let before = anvil.usdc_balance(PAYEE_A).await;

    // Required (the declaration the client copied says so) and missing: 400 on verify and settle.
    for what in ["verify", "settle"] {
        let (st, v) = call(what, body(None)).await;
        assert_eq!(st, 400, "{what}: {v}");
        assert!(v["error"].as_str().unwrap().contains("payment-identifier"), "{v}");
    }
    // Settled under an id; the same payload again: the same answer, no second transfer, no second count.
    let b = body(Some("settle_0001_abcdefgh"));
    let (st, first) = call("settle", b.clone()).await;
    assert_eq!((st, &first["success"]), (200, &json!(true)), "{first}");
    let (st, again) = call("settle", b.clone()).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again, first, "the stored answer, not duplicate_settlement");
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before + U256::from(10_000u64));
    // Another payload under the same id: 409, not settled.
    let (st, v) = call("settle", body(Some("settle_0001_abcdefgh"))).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error_code"], json!("PAYMENT_ID_CONFLICT"), "{v}");
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before + U256::from(10_000u64));
    let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(u["verifications_used"], json!(1), "{u}");
    // /supported lists the extension.
    let (_, sup, _) = h.call("GET", "/facilitator/supported", Auth::Key(&key), None).await;
    assert!(
        sup["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("payment-identifier")),
        "{sup}"
    );
}

#[tokio::test]
async fn the_drop_in_gateway_is_a_private_facilitator_for_its_one_payee() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let up = crate::upstream::Upstream::start("127.0.0.1:0").await.unwrap();
    let api_port = free_port();
    let key = "dropin-facilitator-key-0123456789";
    let digest = tollgate::tenancy::keys::hash(key);
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let top = format!("[api]\nlisten = \"127.0.0.1:{api_port}\"\nfacilitator_keys = [\"{digest}\"]\n");
    spec.top_extra = &top;
    let _tg = Tollgate::start(&spec).await;
    let base = format!("http://127.0.0.1:{api_port}/facilitator");
    eventually("the API listener", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.is_ok()
    })
    .await;

    // A wrong key: 401; the right one: the configured networks and relayer.
    let r = http()
        .get(format!("{base}/supported"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let sup: Value = http()
        .get(format!("{base}/supported"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        sup["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["network"] == json!("eip155:8453")),
        "{sup}"
    );
    assert_eq!(sup["signers"]["eip155:*"], json!([RELAYER.to_string()]), "{sup}");

    // The stock server with this gateway as its facilitator, paying the gateway's own payTo.
    let server = ExpressServer::start(&base, key, PAYEE).await;
    let before = anvil.usdc_balance(PAYEE).await;
    let out = crate::interop::node("pay-v2.mjs", &server.url).await;
    assert_eq!(out["status"], json!(200), "{out}");
    assert_eq!(out["paymentResponse"]["success"], json!(true), "{out}");
    assert_eq!(anvil.usdc_balance(PAYEE).await, before + U256::from(1000u64));
    // Another payee is refused: the relayer only ever pays the configured one.
    let other = ExpressServer::start(&base, key, PAYEE_A).await;
    let out = crate::interop::node("pay-v2.mjs", &other.url).await;
    assert_ne!(out["status"], json!(200), "{out}");
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, U256::ZERO);
    assert_eq!(up.count(), 0, "the facilitator never touches the proxy's upstream");
}

#[tokio::test]
async fn discovery_lists_what_tenants_publish_and_each_proxy_describes_its_routes() {
    // The drop-in proxy's /.well-known/x402: every priced route but the hidden one.
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let up = crate::upstream::Upstream::start("127.0.0.1:0").await.unwrap();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.routes = r#"
[[routes]]
method = "GET"
path = "/paid/*"
price = "$0.001"
description = "paid data"

[[routes]]
path = "/secret/*"
price = "$0.002"
discoverable = false

[[routes]]
path = "/free"
price = "free"
"#
    .into();
    let tg = Tollgate::start(&spec).await;
    let r = http().get(format!("{}/.well-known/x402", tg.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["version"], json!(1));
    assert_eq!(doc["resources"], json!([format!("{}/paid/*", tg.url)]), "{doc}");
    let item = &doc["items"][0];
    assert_eq!(
        item["metadata"],
        json!({"method": "GET", "description": "paid data", "mimeType": "application/json"})
    );
    assert_eq!(item["accepts"][0]["amount"], json!("1000"));
    assert_eq!(item["accepts"][0]["payTo"], json!(PAYEE.to_checksum(None)));
    assert_eq!(item["accepts"][0]["network"], json!("eip155:8453"));
    assert_eq!(up.count(), 0, "answered by the gateway, not forwarded");

    // Hosted: the catalog lists published routes of active tenants only.
    let db = Db::postgres().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let routes = json!([
        {"method": "GET", "path": "/forecast/*", "price": "$0.01", "description": "forecasts", "discoverable": true},
        {"path": "/internal/*", "price": "$0.05"},
    ]);
    let mut keys = Vec::new();
    for slug in ["pub-a", "pub-b", "quiet", "gone"] {
        let (id, key) = h.tenant(&format!("{slug}@d.test"), "free", Some(slug)).await;
        let body = if slug == "quiet" {
            json!({"upstream": up.url(), "pay_to": {"evm": PAYEE_A.to_string()}, "routes": [{"path": "/x/*", "price": "$0.01"}]})
        } else {
            json!({"upstream": up.url(), "pay_to": {"evm": PAYEE_A.to_string()}, "routes": routes})
        };
        let (st, v) = h.patch(&key, body).await;
        assert_eq!(st, 200, "{v}");
        keys.push((slug, id, key));
    }
    let (st, v, _) = h
        .call(
            "POST",
            &format!("/api/v1/x402/admin/tenants/{}/suspend", keys[3].1),
            Auth::Admin(crate::hosted::ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, cat, _) = h.call("GET", "/discovery/resources?type=http", Auth::None, None).await;
    assert_eq!(st, 200, "{cat}");
    assert_eq!(cat["x402Version"], json!(2));
    assert_eq!(
        cat["pagination"],
        json!({"limit": 100, "offset": 0, "total": 2}),
        "{cat}"
    );
    let mut listed: Vec<&str> = cat["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["resource"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["https://pub-a.gw.test/forecast/*", "https://pub-b.gw.test/forecast/*"]
    );
    let i = &cat["items"][0];
    assert_eq!(i["type"], json!("http"));
    assert_eq!(i["accepts"][0]["amount"], json!("10000"));
    assert_eq!(i["accepts"][0]["payTo"], json!(PAYEE_A.to_checksum(None)));
    assert!(i["lastUpdated"].as_str().unwrap().ends_with('Z'), "{i}");
    let (_, page, _) = h
        .call("GET", "/discovery/resources?limit=1&offset=1", Auth::None, None)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["pagination"], json!({"limit": 1, "offset": 1, "total": 2}));
    let (st, _, _) = h.call("GET", "/discovery/resources?type=mcp", Auth::None, None).await;
    assert_eq!(st, 400);
    let (st, _, _) = h.call("GET", "/discovery/resources?limit=0", Auth::None, None).await;
    assert_eq!(st, 400);

    // A hosted tenant's own /.well-known/x402, through its path prefix: both its priced routes.
    let doc: Value = http()
        .get(format!("{}/t/pub-a/.well-known/x402", h.tg.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["resources"],
        json!([
            format!("{}/t/pub-a/forecast/*", h.tg.url),
            format!("{}/t/pub-a/internal/*", h.tg.url)
        ]),
        "{doc}"
    );
}

#[tokio::test]
async fn a_tenants_settlement_gas_is_bounded_by_its_plan() {
    let db = Db::postgres().await;
    let anvil = Anvil::start().await;
    let up = crate::upstream::Upstream::start("127.0.0.1:0").await.unwrap();
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    let budget: u64 = 150_000;
    let extra = format!("[plans.free]\nverifications = 1000\nchains = [\"base\"]\ngas_per_month = {budget}\n");
    spec.extra = &extra;
    let h = Hosted::start(&spec).await;
    let (_, key) = h.tenant("g@g.test", "free", Some("gas")).await;
    crate::hosted::serve_api(&h, &key, &up, PAYEE_A).await;
    let (offer, o) = usdc_offer(PAYEE_A);

    // Settle until refused: each settle passes while the gas its tenant used so far (the sum of its
    // transactions' gasUsed, read from the chain) is under the budget.
    let mut used = 0u64;
    let mut settled = 0;
    let refusal = loop {
        let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        let b =
            json!({"x402Version": 2, "paymentPayload": decode_b64_json(&header), "paymentRequirements": offer.to_v2()});
        let r = http()
            .post(format!("{}/facilitator/settle", h.api))
            .bearer_auth(&key)
            .json(&b)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        if st != 200 {
            assert!(used >= budget, "refused at {used} gas of {budget}: {v}");
            break (st, v, retry_after);
        }
        assert!(used < budget, "settled past the budget: {used} of {budget}");
        assert_eq!(v["success"], json!(true), "{v}");
        let receipt = anvil.rpc("eth_getTransactionReceipt", json!([v["transaction"]])).await;
        used += u64::from_str_radix(receipt["gasUsed"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        settled += 1;
        assert!(settled < 10, "never refused");
        // Gas is written with the attempt records (within 20 ms of the settlement).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(settled >= 1);
    let (st, v, retry_after) = refusal;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error_code"], json!("GAS_BUDGET_EXCEEDED"), "{v}");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() > 0);
    // The proxy refuses the tenant's paid routes the same way, before anything is charged.
    let before = anvil.usdc_balance(PAYEE_A).await;
    let url = format!("{}/t/gas/paid/x", h.tg.url);
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, value).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], json!("over_gas_budget"), "{body}");
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before);
    assert_eq!(up.count(), 0);
}

/// The JSON type of a value, for shape comparisons.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[tokio::test]
async fn supported_has_the_shape_of_the_reference_facilitators() {
    let anvil = Anvil::start().await;
    // The peer: the reference facilitator (@x402/core + @x402/evm) with the same relayer key.
    let peer = crate::interop::Facilitator::start(&anvil.url, "sekret").await;
    let theirs: Value = http()
        .get(format!("{}/supported", peer.url))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let db = Db::sqlite();
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let (_, key) = h.tenant("s@s.test", "free", Some("shape")).await;
    let (st, ours, _) = h.call("GET", "/facilitator/supported", Auth::Key(&key), None).await;
    assert_eq!(st, 200);

    // Every top-level field of theirs, of the same type (FACILITATOR.md: all three present).
    for (k, v) in theirs.as_object().unwrap() {
        assert_eq!(kind_of(&ours[k]), kind_of(v), "field {k}: ours {ours}, theirs {theirs}");
    }
    for k in ["kinds", "extensions", "signers"] {
        assert!(ours.get(k).is_some(), "{k} missing: {ours}");
    }
    // Each kind: the fields of the spec, typed as theirs are; nothing else.
    for kind in ours["kinds"].as_array().unwrap() {
        for (k, v) in kind.as_object().unwrap() {
            let want = match k.as_str() {
                "x402Version" => "number",
                "scheme" | "network" => "string",
                "extra" => "object",
                other => panic!("unexpected field {other} in {kind}"),
            };
            assert_eq!(kind_of(v), want, "{k} in {kind}");
        }
        assert!(matches!(kind["x402Version"].as_u64(), Some(1 | 2)), "{kind}");
        let network = kind["network"].as_str().unwrap();
        match kind["x402Version"].as_u64() {
            Some(2) => assert!(network.starts_with("eip155:"), "v2 networks are CAIP-2: {kind}"),
            _ => assert!(!network.contains(':'), "v1 networks are names: {kind}"),
        }
    }
    let key_fields = |k: &Value| {
        let mut f: Vec<String> = k.as_object().unwrap().keys().cloned().collect();
        f.retain(|f| f != "extra");
        f.sort();
        f
    };
    for kind in theirs["kinds"].as_array().unwrap() {
        // For the networks both serve (this tenant's plan: base), every kind of theirs is ours too.
        if kind["network"] == json!("eip155:8453") || kind["network"] == json!("base") {
            let same = ours["kinds"].as_array().unwrap().iter().find(|k| {
                k["x402Version"] == kind["x402Version"]
                    && k["scheme"] == kind["scheme"]
                    && k["network"] == kind["network"]
            });
            let same = same.unwrap_or_else(|| panic!("{kind} missing from ours: {ours}"));
            assert_eq!(key_fields(same), key_fields(kind));
        }
    }
    // Extensions: names; signers: the same families, the same address, written the same way.
    assert!(
        ours["extensions"].as_array().unwrap().iter().all(Value::is_string),
        "{ours}"
    );
    for (family, addrs) in theirs["signers"].as_object().unwrap() {
        assert_eq!(
            &ours["signers"][family], addrs,
            "signers.{family}: ours {ours}, theirs {theirs}"
        );
    }
}

#[tokio::test]
async fn the_facilitator_speaks_v1_too() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let key = payee_tenant(&h, "vone").await;
    let (offer, _) = usdc_offer(PAYEE_A);
    let o = tollgate::client::Offered::from_offer(&offer, tollgate::x402::Version::V1);
    let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
    let payload = decode_b64_json(&header);
    assert_eq!(
        payload["network"],
        json!("base"),
        "a v1 payload names the network: {payload}"
    );
    let resource = tollgate::x402::Resource {
        url: "http://api.test/weather",
        method: "GET",
        description: "weather",
        mime_type: "application/json",
    };
    let body = json!({"x402Version": 1, "paymentPayload": payload, "paymentRequirements": offer.to_v1(&resource)});
    assert!(body["paymentRequirements"]["maxAmountRequired"].is_string(), "{body}");
    let call = |what: &str| {
        let url = format!("{}/facilitator/{what}", h.api);
        let (k, b) = (key.clone(), body.clone());
        async move {
            let r = http().post(url).bearer_auth(k).json(&b).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let before = anvil.usdc_balance(PAYEE_A).await;
    let (st, v) = call("verify").await;
    assert_eq!((st, v), (200, json!({"isValid": true, "payer": PAYER.to_string()})));
    let (st, v) = call("settle").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], json!(true), "{v}");
    assert_eq!(
        v["network"],
        json!("base"),
        "v1 answers name the network the v1 way: {v}"
    );
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before + U256::from(10_000u64));
    let (_, v) = call("settle").await;
    assert_eq!(v["errorReason"], json!("duplicate_settlement"), "{v}");
}

#[tokio::test]
async fn a_batch_leaves_out_a_transfer_that_would_revert_and_settles_the_rest() {
    let db = Db::postgres().await;
    let anvil = Anvil::start().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let key = payee_tenant(&h, "batch").await;
    let (offer, o) = usdc_offer(PAYEE_A);
    let broke = PrivateKeySigner::random();
    let body = |signer: &PrivateKeySigner| {
        let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, signer, now()));
        json!({"x402Version": 2, "paymentPayload": decode_b64_json(&header), "paymentRequirements": offer.to_v2()})
    };
    let mut bodies: Vec<Value> = (0..15).map(|_| body(&payer())).collect();
    bodies.insert(7, body(&broke));
    let relayer = RELAYER_KEY.parse::<PrivateKeySigner>().unwrap().address();
    let (sent_before, before) = (anvil.tx_count(relayer).await, anvil.usdc_balance(PAYEE_A).await);
    let calls: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let (url, k) = (format!("{}/facilitator/settle", h.api), key.clone());
            tokio::spawn(async move {
                http()
                    .post(url)
                    .bearer_auth(k)
                    .json(&b)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let refused: Vec<&Value> = answers.iter().filter(|v| v["success"] != json!(true)).collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert_eq!(refused[0]["errorReason"], json!("insufficient_funds"), "{answers:?}");
    assert_eq!(refused[0]["transaction"], json!(""), "never sent: {answers:?}");
    assert_eq!(refused[0]["payer"], json!(broke.address().to_string()));
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before + U256::from(15 * 10_000u64));
    let txs: std::collections::BTreeSet<&str> = answers
        .iter()
        .filter_map(|v| v["transaction"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    let sent = anvil.tx_count(relayer).await - sent_before;
    assert_eq!(
        sent as usize,
        txs.len(),
        "every transaction sent carried paid transfers"
    );
    assert!(sent < 15, "batched: {sent} transactions for 15 payments");
}
