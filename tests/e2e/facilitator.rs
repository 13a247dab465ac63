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
struct ExpressServer {
    child: std::process::Child,
    url: String,
}

impl Drop for ExpressServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExpressServer {
    async fn start(facilitator: &str, key: &str) -> ExpressServer {
        let port = free_port();
        let child = std::process::Command::new("node")
            .arg(js_dir().join("express-server.mjs"))
            .arg(port.to_string())
            .env("FACILITATOR_URL", facilitator)
            .env("TENANT_KEY", key)
            .env("PAY_TO", PAYEE_A.to_string())
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
    let (_, key) = h.tenant("p@p.test", "free", Some("pending")).await;
    h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;
    let server = ExpressServer::start(&format!("{}/facilitator", h.api), &key).await;
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
