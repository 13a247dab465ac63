//! The official x402 clients from npm pay through tollgate, and the reference facilitator settles
//! for it in facilitator mode.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use tokio::process::Command;

use crate::common::*;
use crate::upstream::Upstream;

/// Runs a test script from tests/js; returns its JSON line.
pub async fn node(script: &str, url: &str) -> serde_json::Value {
    let out = Command::new("node")
        .arg(js_dir().join(script))
        .arg(url)
        .env("PAYER_KEY", PAYER_KEY)
        .output()
        .await
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} printed no result: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn official_client_pays(script: &str, network: &str) {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = Tollgate::start(&GatewaySpec::new(up.url(), anvil.url.clone(), &db.url)).await;
    let (payer0, payee0) = (anvil.usdc_balance(PAYER).await, anvil.usdc_balance(PAYEE).await);
    let out = node(script, &format!("{}/paid/weather", tg.url)).await;
    assert_eq!(out["status"], 200, "{out}\n{}", tg.log());
    let pr = &out["paymentResponse"];
    assert_eq!(pr["success"], true, "{out}");
    assert_eq!(pr["network"], network);
    assert_eq!(pr["payer"], PAYER.to_checksum(None));
    let body: serde_json::Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/paid/weather");
    let tx = pr["transaction"].as_str().unwrap().parse().unwrap();
    let receipt = anvil
        .provider
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .expect("tx on chain");
    assert!(receipt.status());
    assert_eq!(anvil.usdc_balance(PAYER).await, payer0 - U256::from(1000u64));
    assert_eq!(anvil.usdc_balance(PAYEE).await, payee0 + U256::from(1000u64));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn official_v2_client_x402_fetch_pays_through_tollgate() {
    official_client_pays("pay-v2.mjs", "eip155:8453").await;
}

#[tokio::test]
async fn official_v1_client_x402_fetch_legacy_pays_through_tollgate() {
    official_client_pays("pay-v1.mjs", "base").await;
}

/// The reference facilitator, as a child process.
pub struct Facilitator {
    child: tokio::process::Child,
    pub url: String,
}

impl Facilitator {
    pub async fn start(rpc: &str, token: &str) -> Facilitator {
        let port = free_port();
        let child = Command::new("node")
            .arg(js_dir().join("facilitator.mjs"))
            .args([port.to_string().as_str(), rpc, token])
            .env("RELAYER_KEY", RELAYER_KEY)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Facilitator { child, url };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the facilitator did not start");
    }

    async fn seen(&self) -> serde_json::Value {
        http()
            .get(format!("{}/seen", self.url))
            .bearer_auth("sekret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Facilitator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn facilitator_mode_settles_through_the_reference_facilitator() {
    let anvil = Anvil::start().await;
    let fac = Facilitator::start(&anvil.url, "sekret").await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let settlement = format!(
        "mode = \"facilitator\"\nfacilitator_url = \"{}\"\nfacilitator_token_env = \"TEST_FAC_TOKEN\"",
        fac.url
    );
    spec.settlement_extra = &settlement;
    spec.relayer_key = None;
    std::env::set_var("TEST_FAC_TOKEN", "sekret");
    let tg = Tollgate::start(&spec).await;
    let payee0 = anvil.usdc_balance(PAYEE).await;

    // Our Rust client in both versions, then the official v2 client.
    for v2 in [false, true] {
        let url = format!("{}/paid/x", tg.url);
        let (name, value) = signed_header(&url, v2).await;
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 200, "v2={v2}: {}", tg.log());
        let h = if v2 { "payment-response" } else { "x-payment-response" };
        let pr = decode_b64_json(r.headers()[h].to_str().unwrap());
        let tx = pr["transaction"].as_str().unwrap().parse().unwrap();
        let receipt = anvil.provider.get_transaction_receipt(tx).await.unwrap().unwrap();
        assert_eq!(receipt.from, RELAYER, "the facilitator's relayer sent it");
        // The replay guard still holds in facilitator mode.
        assert_eq!(
            http().get(&url).header(name, &value).send().await.unwrap().status(),
            402
        );
    }
    let out = node("pay-v2.mjs", &format!("{}/paid/official", tg.url)).await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(anvil.usdc_balance(PAYEE).await, payee0 + U256::from(3000u64));
    let seen = fac.seen().await;
    assert_eq!(
        (seen["verify"].as_u64(), seen["settle"].as_u64()),
        (Some(3), Some(3)),
        "{seen}"
    );
    assert_eq!(seen["unauthorized"], 0, "tollgate sent the bearer token");
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn facilitator_refusal_is_a_402_and_facilitator_down_is_503() {
    let anvil = Anvil::start().await;
    let fac = Facilitator::start(&anvil.url, "").await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let settlement = format!("mode = \"facilitator\"\nfacilitator_url = \"{}\"", fac.url);
    spec.settlement_extra = &settlement;
    let tg = Tollgate::start(&spec).await;
    let url = format!("{}/paid/x", tg.url);
    // A payer with no USDC: the offline checks pass, the facilitator refuses.
    let o = offers(&url, true).await.remove(0);
    let poor = alloy::signers::local::PrivateKeySigner::random();
    let (name, value) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &poor, now()));
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let pr = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    let body: serde_json::Value = r.json().await.unwrap();
    // The facilitator's own reason is passed through as it said it.
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("the facilitator refused the payment"),
        "{body}"
    );
    assert_eq!(body["error"], pr["errorReason"]);
    assert_eq!(pr["success"], false);
    drop(fac);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(up.count(), 0);
}
