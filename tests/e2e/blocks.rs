//! Settling at the chain's rhythm: on anvil mining a block every 2 s, a stream of payments goes out as
//! one transaction per block when the block interval is configured, and as one transaction each when
//! it is not (the same stream, the same chain).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use crate::upstream::Upstream;

/// 16 payments, one every 150 ms (2.4 s: across a block boundary or two); each answered 200. Returns
/// the settlement transactions they name.
async fn stream(tg: &Tollgate) -> Vec<String> {
    let mut signed = Vec::new();
    for i in 0..16 {
        let url = format!("{}/paid/b{i}", tg.url);
        let o = offers(&url, true).await.remove(0);
        let p = tollgate::client::authorize(&o, &payer(), now());
        signed.push((url, tollgate::client::payment_header(&o, &p)));
    }
    let mut runs = Vec::new();
    for (i, (url, (name, value))) in signed.into_iter().enumerate() {
        runs.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 * i as u64)).await;
            http().get(&url).header(name, &value).send().await.unwrap()
        }));
    }
    let mut txs = Vec::new();
    for r in runs {
        let r = r.await.unwrap();
        assert_eq!(r.status(), 200);
        let v = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
        txs.push(v["transaction"].as_str().unwrap().to_string());
    }
    txs
}

async fn interval_mining(anvil: &Anvil) {
    anvil.set_automine(false).await;
    anvil.rpc("evm_setIntervalMining", serde_json::json!([2])).await;
}

#[tokio::test]
async fn with_the_block_interval_known_a_busy_relayer_sends_one_batch_per_block() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let settle = "receipt_timeout_secs = 20";

    // Without the interval: each payment goes out as it comes.
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    interval_mining(&anvil).await;
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.settlement_extra = settle;
    let tg = Tollgate::start(&spec).await;
    let loose: BTreeSet<String> = stream(&tg).await.into_iter().collect();
    drop(tg);

    // With it: the same stream keeps to the blocks.
    let (anvil2, db2) = (Anvil::start().await, Db::sqlite());
    interval_mining(&anvil2).await;
    let mut spec = GatewaySpec::new(up.url(), anvil2.url.clone(), &db2.url);
    spec.settlement_extra = settle;
    spec.networks_extra = "block_time_ms = 2000";
    let tg = Tollgate::start(&spec).await;
    let payer0 = anvil2.usdc_balance(PAYER).await;
    let kept = stream(&tg).await;
    let kept_set: BTreeSet<&String> = kept.iter().collect();
    assert!(
        kept_set.len() <= 3,
        "16 payments over ~2.4 s of 2 s blocks: at most 3 transactions (the first alone, then one per block), got {}: {kept_set:?}",
        kept_set.len()
    );
    assert!(
        loose.len() >= 8,
        "without the interval the same stream takes many transactions ({}), so the test tells the two apart",
        loose.len()
    );
    eprintln!(
        "16 payments: {} transactions with block_time_ms, {} without",
        kept_set.len(),
        loose.len()
    );
    // Every payment settled once.
    assert_eq!(
        payer0 - anvil2.usdc_balance(PAYER).await,
        alloy::primitives::U256::from(16_000u64)
    );
}

#[tokio::test]
async fn an_idle_gateway_settles_a_lone_payment_in_the_next_block() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    interval_mining(&anvil).await;
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.settlement_extra = "receipt_timeout_secs = 20";
    spec.networks_extra = "block_time_ms = 2000";
    let tg = Tollgate::start(&spec).await;
    let head = || async {
        let n = anvil.rpc("eth_blockNumber", serde_json::json!([])).await;
        u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let mut next = 0;
    for i in 0..3 {
        // Alone: nothing else in flight, the last block a while ago.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let url = format!("{}/paid/lone{i}", tg.url);
        let o = offers(&url, true).await.remove(0);
        let (name, value) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        let h0 = head().await;
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let tx = decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["transaction"]
            .as_str()
            .unwrap()
            .to_string();
        let receipt = anvil.rpc("eth_getTransactionReceipt", serde_json::json!([tx])).await;
        let block = u64::from_str_radix(receipt["blockNumber"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
        // The next block; one more only if a block came between reading the head and the send.
        assert!(
            block == h0 + 1 || block == h0 + 2,
            "lone payment {i}: head {h0}, mined in {block}"
        );
        next += usize::from(block == h0 + 1);
    }
    assert!(
        next >= 2,
        "a lone payment goes out at once, in the next block ({next} of 3)"
    );
}

/// Anvil's account #4: a second relayer key beside [`RELAYER_KEY`].
const RELAYER2_KEY: &str = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
const RELAYER2: alloy::primitives::Address = alloy::primitives::address!("15d34AAf54267DB7D7c367839AAf71A00a2C6A65");

#[tokio::test]
async fn several_relayer_keys_share_the_settlement_transactions() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    interval_mining(&anvil).await;
    let keys = format!("{RELAYER_KEY}, {RELAYER2_KEY}");
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.relayer_key = Some(&keys);
    // Small batches, so that one block's payments need several transactions.
    spec.settlement_extra = "receipt_timeout_secs = 20";
    spec.networks_extra = "block_time_ms = 2000\nmax_batch = 3";
    let tg = Tollgate::start(&spec).await;
    let log = tg.log();
    for a in [RELAYER, RELAYER2] {
        assert!(
            log.contains(&a.to_checksum(None)),
            "each key is announced ready: {a} missing from\n{log}"
        );
    }
    let (c1, c2) = (anvil.tx_count(RELAYER).await, anvil.tx_count(RELAYER2).await);
    let payee0 = anvil.usdc_balance(PAYEE).await;

    // 18 payments at once: six transactions of three.
    let mut runs = Vec::new();
    for i in 0..18 {
        let url = format!("{}/paid/k{i}", tg.url);
        let o = offers(&url, true).await.remove(0);
        let (name, value) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        runs.push(tokio::spawn(async move {
            http().get(&url).header(name, &value).send().await.unwrap()
        }));
    }
    let mut txs = BTreeSet::new();
    for r in runs {
        let r = r.await.unwrap();
        assert_eq!(r.status(), 200);
        let v = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
        txs.insert(v["transaction"].as_str().unwrap().to_string());
    }
    let mut from = std::collections::BTreeMap::<String, usize>::new();
    for tx in &txs {
        let t = anvil.rpc("eth_getTransactionByHash", serde_json::json!([tx])).await;
        *from
            .entry(t["from"].as_str().unwrap().to_ascii_lowercase())
            .or_default() += 1;
    }
    eprintln!("18 payments, {} transactions by sender: {from:?}", txs.len());
    assert!(
        txs.len() >= 6,
        "batches of at most 3: at least 6 transactions, got {}",
        txs.len()
    );
    for a in [RELAYER, RELAYER2] {
        let n = from.get(&a.to_string().to_ascii_lowercase()).copied().unwrap_or(0);
        assert!(
            n >= 2,
            "relayer {a} sent {n} of the {} transactions: {from:?}",
            txs.len()
        );
    }
    // Each key's nonces advanced by exactly what it sent (no gaps, no refills).
    let sent1 = anvil.tx_count(RELAYER).await - c1;
    let sent2 = anvil.tx_count(RELAYER2).await - c2;
    assert_eq!(
        sent1 + sent2,
        txs.len() as u64,
        "every transaction sent is one of theirs"
    );
    assert_eq!(
        anvil.usdc_balance(PAYEE).await - payee0,
        alloy::primitives::U256::from(18_000u64),
        "every payment settled once"
    );
}

/// One key out of gas does not pause payments while another key has gas: the node refuses the
/// empty key's transaction before anything is sent, and the next key sends it.
#[tokio::test]
async fn a_key_out_of_gas_hands_its_transactions_to_the_other_keys() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let keys = format!("{RELAYER_KEY}, {RELAYER2_KEY}");
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.relayer_key = Some(&keys);
    spec.networks_extra = "max_batch = 2";
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    anvil.set_balance(RELAYER, alloy::primitives::U256::ZERO).await;
    // Still ready: another key has gas.
    let (st, v) = health(mport, "/status/ready").await;
    assert_eq!(st, 200, "{v}");
    let (c1, c2) = (anvil.tx_count(RELAYER).await, anvil.tx_count(RELAYER2).await);
    let payee0 = anvil.usdc_balance(PAYEE).await;

    let mut runs = Vec::new();
    for i in 0..8 {
        let url = format!("{}/paid/g{i}", tg.url);
        let o = offers(&url, true).await.remove(0);
        let (name, value) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        runs.push(tokio::spawn(async move {
            http().get(&url).header(name, &value).send().await.unwrap()
        }));
    }
    for r in runs {
        let r = r.await.unwrap();
        assert_eq!(r.status(), 200, "{}", tg.log());
    }
    assert_eq!(anvil.tx_count(RELAYER).await, c1, "the empty key sent nothing");
    assert!(
        anvil.tx_count(RELAYER2).await > c2,
        "the other key sent the transactions"
    );
    assert_eq!(
        anvil.usdc_balance(PAYEE).await - payee0,
        alloy::primitives::U256::from(8_000u64),
        "every payment settled once"
    );
    let log = tg.log();
    assert!(
        log.contains("its transactions go out from the other keys"),
        "the empty key is named in the log:\n{log}"
    );
    assert!(
        !log.contains(RELAYER2_KEY.trim_start_matches("0x")),
        "no key in the log"
    );
    assert_eq!(up.count(), 8);
}
