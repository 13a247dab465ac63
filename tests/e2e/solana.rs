//! Solana's `exact` scheme end to end: the real tollgate binary, the real SVM and SPL Token program
//! (LiteSVM, behind tests/js/solana-rpc.mjs: test support speaking Solana JSON-RPC, since no
//! validator can run here), USDC at its real mint address, and the official `@x402/svm` client.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use solana_keypair::Keypair;
use solana_message::v0;
use solana_message::VersionedMessage;
use solana_pubkey::Pubkey;
use solana_signer::Signer;
use tokio::io::AsyncBufReadExt;
use tollgate::chains::solana::exact::{self, Payment};

use crate::common::*;
use crate::upstream::Upstream;

pub const MINT: Pubkey = Pubkey::from_str_const("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");

pub fn fee_payer() -> Keypair {
    Keypair::new_from_array([21; 32])
}
pub fn client() -> Keypair {
    Keypair::new_from_array([22; 32])
}
pub fn payee() -> Pubkey {
    Keypair::new_from_array([23; 32]).pubkey()
}

/// TEST SUPPORT: the LiteSVM JSON-RPC server (tests/js/solana-rpc.mjs) on a free loopback port.
pub struct SolanaRpc {
    child: tokio::process::Child,
    pub url: String,
}

impl Drop for SolanaRpc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl SolanaRpc {
    /// Started with the fee payer funded (10 SOL), the client holding 10 USDC, the payee's USDC
    /// account created.
    pub async fn start() -> SolanaRpc {
        let mut child = tokio::process::Command::new("node")
            .arg(js_dir().join("solana-rpc.mjs"))
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed");
        let out = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(out).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the LiteSVM RPC server starts within 20 s")
            .unwrap()
            .expect("it prints its port");
        let port = serde_json::from_str::<Value>(&line).unwrap()["port"].as_u64().unwrap();
        let rpc = SolanaRpc {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        rpc.call(
            "requestAirdrop",
            json!([fee_payer().pubkey().to_string(), 10_000_000_000u64]),
        )
        .await;
        rpc.call("tg_mintUsdc", json!([client().pubkey().to_string(), 10_000_000]))
            .await;
        rpc.call("tg_createUsdcAccount", json!([payee().to_string()])).await;
        rpc
    }

    pub async fn call(&self, method: &str, params: Value) -> Value {
        let r: Value = http()
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    pub async fn usdc(&self, owner: &Pubkey) -> u64 {
        let ata = exact::associated_token_account(owner, &MINT, &exact::TOKEN_PROGRAM);
        let v = self.call("getAccountInfo", json!([ata.to_string()])).await;
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["value"]["data"][0].as_str().unwrap())
            .unwrap();
        u64::from_le_bytes(data[64..72].try_into().unwrap())
    }

    pub async fn blockhash(&self) -> solana_hash::Hash {
        let v = self.call("getLatestBlockhash", json!([])).await;
        v["value"]["blockhash"].as_str().unwrap().parse().unwrap()
    }

    pub async fn landed(&self) -> u64 {
        self.call("tg_landed", json!([])).await.as_u64().unwrap()
    }

    /// The official client's transaction for `amount`, edited, signed by the client.
    pub async fn payment(
        &self,
        amount: u64,
        edit: impl FnOnce(&mut v0::Message),
    ) -> solana_transaction::versioned::VersionedTransaction {
        let mut m = exact::payment_message(&Payment {
            client: client().pubkey(),
            fee_payer: fee_payer().pubkey(),
            pay_to: payee(),
            mint: MINT,
            amount,
            blockhash: self.blockhash().await,
            memo: format!("{:032x}", rand_u128()).into_bytes(),
        });
        edit(&mut m);
        exact::sign_as_client(&client(), VersionedMessage::V0(m))
    }
}

fn rand_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    (now() as u128) << 64 | N.fetch_add(1, Ordering::Relaxed) as u128
}

/// A drop-in gateway whose only network is Solana (the LiteSVM RPC).
pub async fn gateway(rpc: &SolanaRpc, upstream: &str, db: &str, settlement_extra: &str) -> Tollgate {
    let (rpc_url, upstream, db, extra) = (
        rpc.url.clone(),
        upstream.to_string(),
        db.to_string(),
        settlement_extra.to_string(),
    );
    let payee = payee();
    Tollgate::start_text(
        move |port| {
            format!(
                r#"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
database = "{db}"
pay_to_solana = "{payee}"
threads = 2

[settlement]
solana_key_env = "TEST_SOLANA_KEY"
receipt_poll_ms = 20
{extra}

[networks.solana]
rpc_url = "{rpc_url}"
rpc_timeout_ms = 2000

[[routes]]
method = "GET"
path = "/paid/*"
price = "$0.001"
description = "paid data"
"#
            )
        },
        &[("TEST_SOLANA_KEY", &fee_payer().to_base58_string())],
    )
    .await
}

/// The route's v2 requirement from its 402.
pub async fn requirement(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let h = r.headers()["payment-required"].to_str().unwrap().to_string();
    let v = decode_b64_json(&h);
    v["accepts"][0].clone()
}

/// The v2 `PAYMENT-SIGNATURE` value for a transaction.
pub fn v2_header(accepted: &Value, tx: &solana_transaction::versioned::VersionedTransaction) -> String {
    let p = json!({
        "x402Version": 2,
        "accepted": accepted,
        "payload": {"transaction": exact::to_wire_base64(tx)},
    });
    base64::engine::general_purpose::STANDARD.encode(p.to_string())
}

async fn pay(url: &str, header: &str) -> (u16, Value, Option<Value>) {
    let r = http()
        .get(url)
        .header("payment-signature", header)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let settle = r
        .headers()
        .get("payment-response")
        .map(|v| decode_b64_json(v.to_str().unwrap()));
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, settle)
}

#[tokio::test]
async fn a_solana_payment_is_verified_settled_and_forwarded_on_both_databases() {
    for db in Db::both().await {
        let rpc = SolanaRpc::start().await;
        let up = Upstream::start("127.0.0.1:0").await.unwrap();
        let tg = gateway(&rpc, &up.url(), &db.url, "").await;
        let url = format!("{}/paid/weather", tg.url);
        let req = requirement(&url).await;
        assert_eq!(req["network"], "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
        assert_eq!(req["asset"], MINT.to_string());
        assert_eq!(req["payTo"], payee().to_string());
        assert_eq!(req["amount"], "1000");
        assert_eq!(req["extra"]["feePayer"], fee_payer().pubkey().to_string());
        eventually("the fee payer's balance is reported at start", || async {
            tg.log().contains("signer funded")
        })
        .await;

        let (c0, p0) = (rpc.usdc(&client().pubkey()).await, rpc.usdc(&payee()).await);
        let tx = rpc.payment(1000, |_| {}).await;
        let (status, body, settle) = pay(&url, &v2_header(&req, &tx)).await;
        assert_eq!(status, 200, "{body}\n{}", tg.log());
        let settle = settle.expect("PAYMENT-RESPONSE");
        assert_eq!(settle["success"], true);
        assert_eq!(settle["payer"], client().pubkey().to_string());
        // The transaction is the fee payer's signature, and it is on chain, succeeded.
        let sig = settle["transaction"].as_str().unwrap().to_string();
        let st = rpc.call("getSignatureStatuses", json!([[sig]])).await;
        assert_eq!(st["value"][0]["err"], Value::Null, "{st}");
        assert_eq!(rpc.usdc(&client().pubkey()).await, c0 - 1000);
        assert_eq!(rpc.usdc(&payee()).await, p0 + 1000);
        assert_eq!(up.count(), 1);

        // The same header again: served already, a duplicate; nothing moves.
        let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
        assert_eq!(status, 402, "{body}");
        assert_eq!(body["error"], "duplicate_settlement", "{body}");
        // A copy of the same message with other bytes (junk in the fee payer's slot): the
        // replay key is the message, so it is the same payment.
        let mut copy = tx.clone();
        copy.signatures[0] = solana_signature::Signature::from([9u8; 64]);
        let (status, body, _) = pay(&url, &v2_header(&req, &copy)).await;
        assert_eq!(status, 402, "{body}");
        assert_eq!(body["error"], "duplicate_settlement", "{body}");
        assert_eq!(rpc.usdc(&payee()).await, p0 + 1000);
        assert_eq!(up.count(), 1);

        // v1: network name, X-PAYMENT.
        let tx = rpc.payment(1000, |_| {}).await;
        let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "solana", "payload": {"transaction": exact::to_wire_base64(&tx)}});
        let r = http()
            .get(&url)
            .header(
                "x-payment",
                base64::engine::general_purpose::STANDARD.encode(v1.to_string()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", tg.log());
        let pr = decode_b64_json(r.headers()["x-payment-response"].to_str().unwrap());
        assert_eq!(pr["network"], "solana");
        assert_eq!(rpc.usdc(&payee()).await, p0 + 2000);
    }
}

#[tokio::test]
async fn each_bad_transaction_is_refused_with_its_reason_and_nothing_lands() {
    let rpc = SolanaRpc::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = gateway(&rpc, &up.url(), &db.url, "").await;
    let url = format!("{}/paid/x", tg.url);
    let req = requirement(&url).await;
    let other = Keypair::new_from_array([31; 32]).pubkey();
    let system = Pubkey::from_str_const("11111111111111111111111111111111");
    let before = rpc.landed().await;

    type Edit = Box<dyn FnOnce(&mut v0::Message)>;
    let cases: Vec<(&str, u64, Edit, &str)> = vec![
        (
            "wrong amount",
            999,
            Box::new(|_| {}),
            "invalid_exact_svm_payload_amount_mismatch",
        ),
        (
            "wrong mint",
            1000,
            Box::new(move |m| m.account_keys[4] = other),
            "invalid_exact_svm_payload_mint_mismatch",
        ),
        (
            "wrong destination",
            1000,
            Box::new(move |m| m.account_keys[3] = other),
            "invalid_exact_svm_payload_recipient_mismatch",
        ),
        (
            "an extra instruction (a system transfer)",
            1000,
            Box::new(move |m| {
                m.account_keys.push(system);
                let mut d = vec![2, 0, 0, 0];
                d.extend_from_slice(&5u64.to_le_bytes());
                m.instructions.push(
                    solana_message::compiled_instruction::CompiledInstruction::new_from_raw_parts(8, d, vec![1, 2]),
                );
            }),
            "invalid_exact_svm_payload_unknown_optional_instruction",
        ),
        (
            "an instruction that uses the fee payer",
            1000,
            Box::new(|m| m.instructions[3].accounts = vec![0]),
            "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
        ),
        (
            "the fee payer as the transfer's authority",
            1000,
            Box::new(|m| m.instructions[2].accounts[3] = 0),
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
        ),
        (
            "a create-account instruction first",
            1000,
            Box::new(move |m| {
                m.account_keys.push(system);
                let mut d = vec![0, 0, 0, 0];
                d.extend_from_slice(&1_000_000u64.to_le_bytes());
                d.extend_from_slice(&165u64.to_le_bytes());
                d.extend_from_slice(other.as_ref());
                m.instructions.insert(
                    0,
                    solana_message::compiled_instruction::CompiledInstruction::new_from_raw_parts(8, d, vec![1, 2]),
                );
            }),
            "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
        ),
        (
            "a lookup table",
            1000,
            Box::new(move |m| {
                m.address_table_lookups.push(v0::MessageAddressTableLookup {
                    account_key: other,
                    writable_indexes: vec![0],
                    readonly_indexes: vec![],
                })
            }),
            "invalid_exact_svm_payload_transaction",
        ),
        (
            "another fee payer",
            1000,
            Box::new(move |m| m.account_keys[0] = other),
            "fee_payer_not_managed_by_facilitator",
        ),
    ];
    for (what, amount, edit, want) in cases {
        let tx = rpc.payment(amount, edit).await;
        let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
        assert_eq!(status, 402, "{what}: {body}");
        assert_eq!(body["error"], want, "{what}: {body}");
    }
    // A bad client signature: refused locally, before anything is signed or simulated.
    let mut tx = rpc.payment(1000, |_| {}).await;
    tx.signatures[1] = solana_signature::Signature::from([1u8; 64]);
    let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("invalid_exact_svm_payload_signature_invalid")),
        "{body}"
    );
    // A transaction whose blockhash has expired: the simulation refuses it, nothing is charged.
    let stale = rpc.payment(1000, |_| {}).await;
    rpc.call("tg_expireBlockhash", json!([])).await;
    let (status, body, _) = pay(&url, &v2_header(&req, &stale)).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "transaction_simulation_failed", "{body}");
    assert!(
        body["detail"].as_str().unwrap().to_lowercase().contains("blockhash"),
        "{body}"
    );

    assert_eq!(rpc.landed().await, before, "no refused transaction landed");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_same_transaction_sent_concurrently_is_settled_once() {
    let rpc = SolanaRpc::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let tg = gateway(&rpc, &up.url(), &db.url, "").await;
    let url = format!("{}/paid/x", tg.url);
    let req = requirement(&url).await;
    let p0 = rpc.usdc(&payee()).await;
    let tx = rpc.payment(1000, |_| {}).await;
    // Ten sends of one message: five identical, five with junk in the fee payer's slot.
    let mut sends = Vec::new();
    for i in 0..10 {
        let mut t = tx.clone();
        if i % 2 == 1 {
            t.signatures[0] = solana_signature::Signature::from([i as u8; 64]);
        }
        let (url, h) = (url.clone(), v2_header(&req, &t));
        sends.push(tokio::spawn(async move { pay(&url, &h).await }));
    }
    let mut ok = 0;
    for s in sends {
        let (status, body, _) = s.await.unwrap();
        match status {
            200 => ok += 1,
            // Identical copies wait for the first (pending); other bytes are duplicates.
            402 => assert_eq!(body["error"], "duplicate_settlement", "{body}"),
            504 => assert_eq!(body["error"], "payment_pending", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ok, 1, "exactly one request is served");
    assert_eq!(up.count(), 1);
    assert_eq!(rpc.usdc(&payee()).await, p0 + 1000, "paid once");
}

#[tokio::test]
async fn rpc_down_is_503_and_unconfirmed_or_lost_sends_are_pending_then_reconciled() {
    let rpc = SolanaRpc::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = gateway(
        &rpc,
        &up.url(),
        &db.url,
        "receipt_timeout_secs = 1\nreconcile_interval_secs = 1\nreconcile_after_secs = 1",
    )
    .await;
    let url = format!("{}/paid/x", tg.url);
    let req = requirement(&url).await;
    let p0 = rpc.usdc(&payee()).await;

    // The node is down: 503, nothing forwarded, nothing charged.
    let tx = rpc.payment(1000, |_| {}).await;
    rpc.call("tg_down", json!([true])).await;
    let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
    assert_eq!(status, 503, "{body}");
    rpc.call("tg_down", json!([false])).await;
    assert_eq!(up.count(), 0);

    // The node takes the transaction but it does not land within the confirmation timeout: sent,
    // so served as pending (as an EVM transfer without a receipt is); the reconciler settles it
    // once it lands, and the header is a duplicate from then on.
    rpc.call("tg_hold", json!([true])).await;
    let (status, body, settle) = pay(&url, &v2_header(&req, &tx)).await;
    assert_eq!(status, 200, "{body}\n{}", tg.log());
    let sig = settle.expect("PAYMENT-RESPONSE")["transaction"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(up.count(), 1);
    assert!(tg.log().contains("recorded as pending"), "{}", tg.log());
    rpc.call("tg_hold", json!([false])).await;
    assert_eq!(rpc.call("tg_release", json!([])).await, 1);
    assert_eq!(rpc.usdc(&payee()).await, p0 + 1000);
    let st = rpc.call("getSignatureStatuses", json!([[sig]])).await;
    assert_eq!(
        st["value"][0]["err"],
        Value::Null,
        "the answer named the transaction that landed: {st}"
    );
    eventually("the reconciler settles the pending payment", || async {
        tg.log().contains("reconciled: payment is on chain")
    })
    .await;
    let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("duplicate_settlement")),
        "{body}"
    );

    // The node runs the transaction but the answer to sendTransaction is lost: in doubt, so
    // 504 payment_pending naming the transaction, not forwarded; the same header is served once
    // the chain shows it, and only once.
    let tx = rpc.payment(1000, |_| {}).await;
    rpc.call("tg_dropAnswers", json!(["sendTransaction", 1])).await;
    let h = v2_header(&req, &tx);
    let (status, body, _) = pay(&url, &h).await;
    assert_eq!(status, 504, "{body}\n{}", tg.log());
    assert_eq!(body["error"], "payment_pending");
    let sig = body["transaction"]
        .as_str()
        .expect("the pending answer names the transaction")
        .to_string();
    assert_eq!(up.count(), 1);
    assert_eq!(rpc.usdc(&payee()).await, p0 + 2000, "it did land");
    eventually("the in-doubt payment is served", || {
        let (url, h) = (url.clone(), h.clone());
        async move { pay(&url, &h).await.0 == 200 }
    })
    .await;
    assert_eq!(up.count(), 2);
    let (status, body, _) = pay(&url, &h).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("duplicate_settlement")),
        "served once: {body}"
    );
    let st = rpc.call("getSignatureStatuses", json!([[sig]])).await;
    assert_eq!(st["value"][0]["err"], Value::Null, "{st}");
    assert_eq!(rpc.usdc(&payee()).await, p0 + 2000, "charged once");
}

#[tokio::test]
async fn the_official_svm_client_pays_through_tollgate() {
    let rpc = SolanaRpc::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let tg = gateway(&rpc, &up.url(), &db.url, "").await;
    let p0 = rpc.usdc(&payee()).await;
    let c0 = rpc.usdc(&client().pubkey()).await;
    let seed = bs58_seed(&client());
    let out = tokio::process::Command::new("node")
        .arg(js_dir().join("pay-svm.mjs"))
        .arg(format!("{}/paid/weather", tg.url))
        .env("PAYER_SECRET", seed)
        .env("SOLANA_RPC", &rpc.url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "pay-svm.mjs: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tg.log()
        )
    });
    assert_eq!(v["status"], 200, "{v}\n{}", tg.log());
    assert_eq!(v["payer"], client().pubkey().to_string());
    let pr = &v["paymentResponse"];
    assert_eq!(pr["success"], true, "{v}");
    assert_eq!(pr["network"], "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp");
    let st = rpc.call("getSignatureStatuses", json!([[pr["transaction"]]])).await;
    assert_eq!(st["value"][0]["err"], Value::Null, "{st}");
    assert_eq!(rpc.usdc(&payee()).await, p0 + 1000);
    assert_eq!(rpc.usdc(&client().pubkey()).await, c0 - 1000);
    assert_eq!(up.count(), 1);
}

/// The base58 of a keypair's 32-byte secret seed (what `createKeyPairSignerFromPrivateKeyBytes` takes).
fn bs58_seed(k: &Keypair) -> String {
    bs58::encode(k.secret_bytes()).into_string()
}

/// A USDC transfer the client makes itself (its own fee payer, one signature): what a customer
/// sends before asking a hosted tenant's server to check it with `/verify`.
async fn direct_transfer(rpc: &SolanaRpc, amount: u64) -> String {
    use solana_message::compiled_instruction::CompiledInstruction;
    let c = client().pubkey();
    rpc.call("requestAirdrop", json!([c.to_string(), 1_000_000_000u64]))
        .await;
    let source = exact::associated_token_account(&c, &MINT, &exact::TOKEN_PROGRAM);
    let dest = exact::associated_token_account(&payee(), &MINT, &exact::TOKEN_PROGRAM);
    let mut data = vec![12];
    data.extend_from_slice(&amount.to_le_bytes());
    data.push(6);
    let m = v0::Message {
        header: solana_message::MessageHeader {
            num_required_signatures: 1,
            num_readonly_signed_accounts: 0,
            num_readonly_unsigned_accounts: 2,
        },
        account_keys: vec![c, source, dest, MINT, exact::TOKEN_PROGRAM],
        recent_blockhash: rpc.blockhash().await,
        instructions: vec![CompiledInstruction::new_from_raw_parts(4, data, vec![1, 3, 2, 0])],
        address_table_lookups: vec![],
    };
    let m = VersionedMessage::V0(m);
    let sig = client().sign_message(&m.serialize());
    let tx = solana_transaction::versioned::VersionedTransaction {
        signatures: vec![sig],
        message: m,
    };
    let out = rpc
        .call(
            "sendTransaction",
            json!([exact::to_wire_base64(&tx), {"encoding": "base64"}]),
        )
        .await;
    assert_eq!(out, sig.to_string());
    sig.to_string()
}

#[tokio::test]
async fn hosted_tenants_take_solana_payments_proofs_and_facilitator_settlements() {
    use crate::hosted::{Auth, Hosted, HostedSpec};
    let db = Db::postgres().await;
    let anvil = Anvil::start().await;
    let rpc = SolanaRpc::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let extra = format!("[networks.solana]\nrpc_url = \"{}\"\nrpc_timeout_ms = 2000\n", rpc.url);
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    spec.extra = &extra;
    spec.solana_key = Some(fee_payer().to_base58_string());
    let h = Hosted::start(&spec).await;
    // The free plan enables Solana.
    let (_, key) = h.tenant("sol@t.test", "free", Some("sol")).await;
    let (st, v) = h
        .patch(
            &key,
            json!({"pay_to": {"solana": "0x90F79bf6EB2c4f870365E785982E1f101E93b906"}}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("pay_to.solana"), "{v}");
    let (st, v) = h
        .patch(
            &key,
            json!({"upstream": up.url(), "pay_to": {"solana": payee().to_string()},
                   "routes": [{"method": "GET", "path": "/paid/*", "price": "$0.001"}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let p0 = rpc.usdc(&payee()).await;

    // The tenant's proxy offers Solana with the operator's fee payer, and takes a payment.
    let url = format!("{}/t/sol/paid/x", h.tg.url);
    let req = requirement(&url).await;
    assert_eq!(req["payTo"], payee().to_string());
    assert_eq!(req["extra"]["feePayer"], fee_payer().pubkey().to_string());
    let tx = rpc.payment(1000, |_| {}).await;
    let (status, body, _) = pay(&url, &v2_header(&req, &tx)).await;
    assert_eq!(status, 200, "{body}\n{}", h.tg.log());
    assert_eq!(rpc.usdc(&payee()).await, p0 + 1000);

    // A proof: a transfer the customer made itself, checked once.
    let sig = direct_transfer(&rpc, 500_000).await;
    let body = json!({"tx_hash": sig, "chain": "solana", "expected_amount": "0.5"});
    let (st, v, _) = h
        .call("POST", "/api/v1/x402/verify", Auth::Key(&key), Some(body.clone()))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["amount_usdc"], 0.5, "{v}");
    assert_eq!(v["from_address"], client().pubkey().to_string(), "{v}");
    assert_eq!(v["to_address"], payee().to_string(), "{v}");
    let (_, v, _) = h.call("POST", "/api/v1/x402/verify", Auth::Key(&key), Some(body)).await;
    assert_eq!(v["error_code"], "TX_ALREADY_USED", "{v}");
    // More than was paid: refused.
    let sig = direct_transfer(&rpc, 100).await;
    let (_, v, _) = h
        .call(
            "POST",
            "/api/v1/x402/verify",
            Auth::Key(&key),
            Some(json!({"tx_hash": sig, "chain": "solana", "expected_amount": "0.5"})),
        )
        .await;
    assert_eq!(v["success"], false, "{v}");
    // A signature that is not on chain.
    let (_, v, _) = h
        .call(
            "POST",
            "/api/v1/x402/verify",
            Auth::Key(&key),
            Some(json!({"tx_hash": solana_signature::Signature::from([3u8; 64]).to_string(), "chain": "solana"})),
        )
        .await;
    assert_eq!(v["error_code"], "TX_NOT_FOUND", "{v}");

    // The facilitator endpoints: /supported names the fee payer; /settle settles a Solana payment
    // into the tenant's own wallet, and refuses another payee.
    let (st, v, _) = h.call("GET", "/facilitator/supported", Auth::Key(&key), None).await;
    assert_eq!(st, 200, "{v}");
    let sol = v["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["network"] == "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp")
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert_eq!(sol["extra"]["feePayer"], fee_payer().pubkey().to_string());
    assert_eq!(v["signers"]["solana:*"][0], fee_payer().pubkey().to_string(), "{v}");
    let requirements = json!({"scheme": "exact", "network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "amount": "1000",
        "asset": MINT.to_string(), "payTo": payee().to_string(), "maxTimeoutSeconds": 60,
        "extra": {"feePayer": fee_payer().pubkey().to_string()}});
    let tx = rpc.payment(1000, |_| {}).await;
    let payload =
        json!({"x402Version": 2, "accepted": requirements, "payload": {"transaction": exact::to_wire_base64(&tx)}});
    let b = json!({"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirements});
    let (st, v, _) = h
        .call("POST", "/facilitator/verify", Auth::Key(&key), Some(b.clone()))
        .await;
    assert_eq!((st, &v["isValid"]), (200, &json!(true)), "{v}");
    let (st, v, _) = h
        .call("POST", "/facilitator/settle", Auth::Key(&key), Some(b.clone()))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["payer"], client().pubkey().to_string());
    assert_eq!(rpc.usdc(&payee()).await, p0 + 1000 + 500_000 + 100 + 1000);
    // The same transaction again: a duplicate.
    let (_, v, _) = h.call("POST", "/facilitator/settle", Auth::Key(&key), Some(b)).await;
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["errorReason"], "duplicate_settlement", "{v}");
    // Another payee: refused before anything is signed.
    let mut other = requirements.clone();
    other["payTo"] = json!(Keypair::new_from_array([41; 32]).pubkey().to_string());
    let tx = rpc.payment(1000, |_| {}).await;
    let payload = json!({"x402Version": 2, "accepted": other, "payload": {"transaction": exact::to_wire_base64(&tx)}});
    let (_, v, _) = h
        .call(
            "POST",
            "/facilitator/settle",
            Auth::Key(&key),
            Some(json!({"x402Version": 2, "paymentPayload": payload, "paymentRequirements": other})),
        )
        .await;
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["errorReason"], "invalid_exact_svm_payload_recipient_mismatch", "{v}");
}
