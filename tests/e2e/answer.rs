//! When a paid request is answered: `confirmed` (after the receipt), `submitted` (the node has the
//! transaction) and `verified` (checked and claimed; the transfer follows), on anvil with Circle's
//! USDC and mining under the test's control; the exposure bounds of the early answers; and a payer
//! who moves its funds away after being answered: its transfer fails, the failure is recorded and
//! counted, the payer is refused until the payment is collected (or, expired, recorded lost).

use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;

use crate::common::*;
use crate::upstream::Upstream;

const ROUTES: &str = r#"
[[routes]]
path = "/confirmed/*"
price = "$0.001"

[[routes]]
path = "/submitted/*"
price = "$0.001"
answer = "submitted"

[[routes]]
path = "/verified/*"
price = "$0.001"
answer = "verified"

[[routes]]
path = "/verified-after/*"
price = "$0.001"
answer = "verified"
settle = "after"
"#;

/// Anvil's account #4, a second payer.
const PAYER2_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";

struct Paid {
    /// The payment header sent.
    header: (&'static str, String),
    status: u16,
    /// PAYMENT-RESPONSE, decoded.
    response: serde_json::Value,
    auth: tollgate::x402::Authorization,
}

/// Signs a payment for `url` from `key`, valid until `now + ttl` seconds (at least 60 s with `None`).
async fn signed(
    url: &str,
    key: &PrivateKeySigner,
    ttl: Option<u64>,
) -> ((&'static str, String), tollgate::x402::Authorization) {
    let o = offers(url, true).await.remove(0);
    let mut p = tollgate::client::authorize(&o, key, now());
    if let Some(ttl) = ttl {
        p.authorization.valid_before = now() + ttl;
        p = tollgate::client::sign(&o, key, p.authorization);
    }
    (tollgate::client::payment_header(&o, &p), p.authorization)
}

async fn pay(url: &str, key: &PrivateKeySigner) -> Paid {
    let ((name, value), auth) = signed(url, key, None).await;
    send(url, name, &value, auth).await
}

async fn send(url: &str, name: &'static str, value: &str, auth: tollgate::x402::Authorization) -> Paid {
    let r = http().get(url).header(name, value).send().await.unwrap();
    let status = r.status().as_u16();
    let response = r
        .headers()
        .get("payment-response")
        .map(|v| decode_b64_json(v.to_str().unwrap()))
        .unwrap_or(serde_json::Value::Null);
    Paid {
        header: (name, value.to_string()),
        status,
        response,
        auth,
    }
}

async fn receipt(anvil: &Anvil, tx: &str) -> serde_json::Value {
    anvil.rpc("eth_getTransactionReceipt", serde_json::json!([tx])).await
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spec_with<'a>(up: &Upstream, anvil: &Anvil, db: &'a Db, settlement: &'a str, top: &'a str) -> GatewaySpec<'a> {
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.routes = ROUTES.into();
    spec.settlement_extra = settlement;
    spec.top_extra = top;
    spec
}

/// The ledger's rows in `state`, as the metrics report them (counted at each reconciliation pass;
/// the gateway holds its SQLite ledger exclusively).
async fn ledger(mport: u16, state: &str) -> f64 {
    metric_sum(
        &metrics_text(mport).await,
        "tollgate_ledger_rows",
        &[&format!("state=\"{state}\"")],
    )
}

#[tokio::test]
async fn each_answer_mode_answers_at_its_point_and_every_payment_settles() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        // Blocks only when the test mines one: "before the block" is then certain.
        anvil.set_automine(false).await;
        let mport = free_port();
        let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
        let spec = spec_with(
            &up,
            &anvil,
            &db,
            "receipt_timeout_secs = 30\nreconcile_interval_secs = 1",
            &top,
        );
        let tg = Tollgate::start(&spec).await;
        let payee0 = anvil.usdc_balance(PAYEE).await;
        let served0 = up.count();

        // verified: answered with no transaction yet, before anything is on chain.
        let v = pay(&format!("{}/verified/a", tg.url), &payer()).await;
        assert_eq!(v.status, 200, "{}", v.response);
        assert_eq!(v.response["success"], true);
        assert_eq!(
            v.response["transaction"], "",
            "verified: answered before the node has the transaction"
        );
        assert!(
            !anvil.authorization_used(&v.auth).await,
            "verified: nothing on chain at the answer"
        );
        assert_eq!(up.count(), served0 + 1, "verified: forwarded");

        // submitted: answered with the transaction the node holds, not mined yet.
        let s = pay(&format!("{}/submitted/a", tg.url), &payer()).await;
        assert_eq!(s.status, 200, "{}", s.response);
        let stx = s.response["transaction"].as_str().unwrap().to_string();
        assert_eq!(stx.len(), 66, "submitted: the transaction is named: {}", s.response);
        assert!(
            receipt(&anvil, &stx).await.is_null(),
            "submitted: answered before its block"
        );
        let pooled = anvil.rpc("eth_getTransactionByHash", serde_json::json!([stx])).await;
        assert!(pooled["hash"].is_string(), "submitted: the node holds it: {pooled}");

        // settle = "after" with verified: the upstream answers first, then the answer goes out at once.
        let va = pay(&format!("{}/verified-after/a", tg.url), &payer()).await;
        assert_eq!(va.status, 200, "{}", va.response);
        assert!(!anvil.authorization_used(&va.auth).await);

        // confirmed: still waiting while no block comes.
        let url = format!("{}/confirmed/a", tg.url);
        let confirmed = tokio::spawn(async move { pay(&url, &payer()).await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!confirmed.is_finished(), "confirmed: not answered before its block");

        // Blocks: everything lands, the confirmed request is answered with its transaction.
        anvil.rpc("evm_setIntervalMining", serde_json::json!([1])).await;
        let c = confirmed.await.unwrap();
        assert_eq!(c.status, 200);
        let ctx = c.response["transaction"].as_str().unwrap();
        assert_eq!(
            receipt(&anvil, ctx).await["status"],
            "0x1",
            "confirmed: answered after its receipt"
        );
        for p in [&v, &s, &va, &c] {
            eventually("the answered payments' transfers are on chain", || {
                anvil.authorization_used(&p.auth)
            })
            .await;
        }
        eventually("the ledger has the four settled", || async {
            ledger(mport, "settled").await == 4.0
        })
        .await;
        assert_eq!(ledger(mport, "claimed").await + ledger(mport, "pending").await, 0.0);
        assert_eq!(receipt(&anvil, &stx).await["status"], "0x1");
        assert_eq!(
            anvil.usdc_balance(PAYEE).await - payee0,
            U256::from(4_000u64),
            "four payments, each settled once"
        );
        // The same header again is a duplicate, not a second service.
        let served = up.count();
        let replay = http()
            .get(format!("{}/verified/a", tg.url))
            .header(v.header.0, &v.header.1)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), 402, "a copy of an answered payment is refused");
        assert_eq!(up.count(), served);
    }
}

#[tokio::test]
async fn early_answers_stay_within_the_exposure_bounds_under_concurrency() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let anvil = Anvil::start().await;
    let payer2: PrivateKeySigner = PAYER2_KEY.parse().unwrap();
    anvil.mint(payer2.address(), MINTED).await;
    anvil.set_automine(false).await;
    let db = Db::sqlite();
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    // $0.005 a payer, $0.008 in all: of 2 × 20 concurrent $0.001 payments, exactly 8 can be
    // answered before their blocks (5 of one payer at most); the others wait for their receipts.
    let spec = spec_with(
        &up,
        &anvil,
        &db,
        "receipt_timeout_secs = 30\nmax_unsettled_per_payer = \"$0.005\"\nmax_unsettled_total = \"$0.008\"",
        &top,
    );
    let tg = Tollgate::start(&spec).await;
    let payee0 = anvil.usdc_balance(PAYEE).await;

    let mut runs = Vec::new();
    for i in 0..40 {
        let key = if i % 2 == 0 { payer() } else { payer2.clone() };
        let url = format!("{}/verified/c{i}", tg.url);
        let ((name, value), auth) = signed(&url, &key, None).await;
        runs.push(tokio::spawn(async move { send(&url, name, &value, auth).await }));
    }
    // The early answers come back while no block is mined.
    eventually("8 early answers", || async {
        metric_sum(
            &metrics_text(mport).await,
            "tollgate_answered_early_total",
            &["outcome=\"answered\""],
        ) >= 8.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = metrics_text(mport).await;
    assert_eq!(
        metric_sum(&m, "tollgate_answered_early_total", &["outcome=\"answered\""]),
        8.0,
        "the total bound: {m}"
    );
    assert_eq!(metric_sum(&m, "tollgate_unsettled_exposure_usd", &[]), 0.008, "{m}");
    assert_eq!(
        metric_sum(&m, "tollgate_answered_early_total", &["outcome=\"over_limit\""]),
        32.0,
        "the others wait for their receipts: {m}"
    );
    let done = runs.iter().filter(|r| r.is_finished()).count();
    assert_eq!(done, 8, "only the early answers are back before a block");

    anvil.rpc("evm_setIntervalMining", serde_json::json!([1])).await;
    let mut early = 0;
    for r in runs {
        let p = r.await.unwrap();
        assert_eq!(p.status, 200, "{}", p.response);
        if p.response["transaction"] == "" {
            early += 1;
        }
        eventually("every payment on chain", || anvil.authorization_used(&p.auth)).await;
    }
    assert_eq!(early, 8);
    eventually("the exposure drains to zero", || async {
        metric_sum(&metrics_text(mport).await, "tollgate_unsettled_exposure_usd", &[]) == 0.0
    })
    .await;
    assert_eq!(anvil.usdc_balance(PAYEE).await - payee0, U256::from(40_000u64));
}

alloy::sol! {
    function transfer(address to, uint256 value) external returns (bool);
}

/// The payer sends its whole USDC balance away, ahead of anything else in the next block.
async fn drain(anvil: &Anvil, from: Address) {
    let all = anvil.usdc_balance(from).await;
    let data = transferCall { to: OWNER, value: all }.abi_encode();
    anvil
        .rpc(
            "eth_sendTransaction",
            serde_json::json!([{
                "from": from,
                "to": USDC,
                "data": format!("0x{}", alloy::hex::encode(data)),
                "gas": "0x30000",
                "maxFeePerGas": "0x174876e800",
                "maxPriorityFeePerGas": "0x174876e800",
            }]),
        )
        .await;
}

#[tokio::test]
async fn a_payer_who_empties_its_balance_after_the_answer_is_refused_and_the_failure_recorded() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        let payer2: PrivateKeySigner = PAYER2_KEY.parse().unwrap();
        anvil.mint(payer2.address(), 5_000).await;
        anvil.set_automine(false).await;
        let mport = free_port();
        let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
        let mut spec = spec_with(
            &up,
            &anvil,
            &db,
            "receipt_timeout_secs = 30\nreconcile_interval_secs = 1\nreconcile_after_secs = 1",
            &top,
        );
        spec.networks_extra = "block_time_ms = 2000";
        let tg = Tollgate::start(&spec).await;
        let payee0 = anvil.usdc_balance(PAYEE).await;

        // Answered at once; before its transfer is sent, the payer moves everything away.
        let first = answered_then_drained(&tg, &anvil, None).await;

        // The failure is recorded and counted, the exposure kept.
        eventually("the ledger records the failure", || async {
            ledger(mport, "failed").await == 1.0
        })
        .await;
        let m = metrics_text(mport).await;
        assert_eq!(
            metric_sum(&m, "tollgate_answered_early_total", &["outcome=\"failed\""]),
            1.0,
            "{m}"
        );
        assert_eq!(metric_sum(&m, "tollgate_unsettled_exposure_usd", &[]), 0.001, "{m}");
        assert!(
            metric_sum(&m, "tollgate_payments_total", &["outcome=\"failed\""]) >= 1.0,
            "the failure is an attempt record: {m}"
        );

        // The payer is refused, on every route, with the reason; nothing is forwarded.
        anvil.set_automine(true).await;
        let served = up.count();
        for route in ["verified", "confirmed"] {
            assert_eq!(
                refusal(&format!("{}/{route}/e", tg.url), &payer()).await,
                "payer_owes_failed_payment",
                "{route}"
            );
        }
        assert_eq!(up.count(), served, "nothing forwarded for a payer who owes");
        // Another payer is served as usual.
        assert_eq!(pay(&format!("{}/verified/f", tg.url), &payer2).await.status, 200);

        // Its funds back, reconciliation collects the failed payment; the payer is served again.
        anvil.mint(PAYER, 5_000).await;
        eventually("the failed payment is collected", || {
            anvil.authorization_used(&first.auth)
        })
        .await;
        eventually("the payer is served again", || async {
            pay(&format!("{}/confirmed/g", tg.url), &payer()).await.status == 200
        })
        .await;
        eventually("the ledger has no failed payment left", || async {
            ledger(mport, "failed").await == 0.0
        })
        .await;
        let m = metrics_text(mport).await;
        assert_eq!(
            metric_sum(&m, "tollgate_answered_early_total", &["outcome=\"collected\""]),
            1.0,
            "{m}"
        );
        eventually("no exposure left", || async {
            metric_sum(&metrics_text(mport).await, "tollgate_unsettled_exposure_usd", &[]) == 0.0
        })
        .await;
        // payer2's two, the collected one, and the one served at the end (the refused tries charge nothing).
        assert_eq!(anvil.usdc_balance(PAYEE).await - payee0, U256::from(4_000u64));
    }
}

/// The x402 reason of a paid request's 402.
async fn refusal(url: &str, key: &PrivateKeySigner) -> String {
    let ((name, value), _) = signed(url, key, None).await;
    let r = http().get(url).header(name, value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let body: serde_json::Value = r.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

/// PAYER is answered (`verified`) while another payer's settlement is still unmined, so that its
/// own transfer waits for the next block (the relayer keeps to 2 s blocks); in that block the payer
/// moves its whole balance away. Its transfer, sent after, is then refused.
async fn answered_then_drained(tg: &Tollgate, anvil: &Anvil, ttl: Option<u64>) -> Paid {
    let payer2: PrivateKeySigner = PAYER2_KEY.parse().unwrap();
    let lead = pay(&format!("{}/verified/lead", tg.url), &payer2).await;
    assert_eq!(lead.status, 200, "{}", lead.response);
    eventually("the other payer's settlement is sent", || async {
        pending_count(anvil).await > 0
    })
    .await;
    let url = format!("{}/verified/d", tg.url);
    let ((name, value), auth) = signed(&url, &payer(), ttl).await;
    let p = send(&url, name, &value, auth).await;
    assert_eq!(p.status, 200, "{}", p.response);
    assert_eq!(p.response["transaction"], "");
    drain(anvil, PAYER).await;
    anvil.mine().await;
    assert_eq!(anvil.usdc_balance(PAYER).await, U256::ZERO, "drained");
    p
}

async fn pending_count(anvil: &Anvil) -> u64 {
    let v = anvil.rpc("txpool_status", serde_json::json!([])).await;
    u64::from_str_radix(v["pending"].as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0)
}

#[tokio::test]
async fn a_failed_payment_that_expires_unsettled_is_recorded_lost_and_the_payer_released() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let anvil = Anvil::start().await;
    let payer2: PrivateKeySigner = PAYER2_KEY.parse().unwrap();
    anvil.mint(payer2.address(), 5_000).await;
    anvil.set_automine(false).await;
    let db = Db::postgres().await;
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    let mut spec = spec_with(
        &up,
        &anvil,
        &db,
        "receipt_timeout_secs = 30\nreconcile_interval_secs = 1\nreconcile_after_secs = 1",
        &top,
    );
    spec.networks_extra = "block_time_ms = 2000";
    let tg = Tollgate::start(&spec).await;
    // Valid for 8 s only.
    let p = answered_then_drained(&tg, &anvil, Some(8)).await;
    anvil.set_automine(true).await;
    eventually("failed", || async { ledger(mport, "failed").await == 1.0 }).await;
    assert_eq!(
        refusal(&format!("{}/confirmed/y", tg.url), &payer()).await,
        "payer_owes_failed_payment"
    );
    // Never refunded: once the authorization expires, the loss is recorded and the payer no longer owes.
    eventually("recorded lost", || async { ledger(mport, "lost").await == 1.0 }).await;
    let m = metrics_text(mport).await;
    assert_eq!(
        metric_sum(&m, "tollgate_answered_early_total", &["outcome=\"lost\""]),
        1.0,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "tollgate_unsettled_exposure_usd", &[]), 0.0, "{m}");
    anvil.mint(PAYER, 5_000).await;
    eventually("the payer is served again", || async {
        pay(&format!("{}/confirmed/z", tg.url), &payer()).await.status == 200
    })
    .await;
    assert!(
        !anvil.authorization_used(&p.auth).await,
        "the lost payment never landed"
    );
}
