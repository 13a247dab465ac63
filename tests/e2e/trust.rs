//! The trust properties of issue 7 that need a whole gateway: a ledger that stops accepting writes,
//! money in doubt, secrets in error paths, shutdown.

use std::time::Duration;

use crate::common::*;
use crate::upstream::Upstream;

/// Makes files immutable (even to root) until dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: Vec<std::path::PathBuf>) -> Immutable {
        for p in &paths {
            if p.exists() {
                let ok = std::process::Command::new("chattr").arg("+i").arg(p).status().unwrap();
                assert!(ok.success(), "chattr +i {}", p.display());
            }
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

/// A small filesystem of its own (tmpfs), to be filled up; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(kib: u32) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("tollgate-disk-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk(dir)
    }

    /// Writes until the filesystem is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        while f.write_all(&[0u8; 4096]).and_then(|_| f.flush()).is_ok() {}
    }

    fn unfill(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// How the ledger stops accepting writes.
enum Freeze {
    Immutable,
    DiskFull,
}

async fn a_ledger_that_stops_accepting_writes(how: Freeze) {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    // Immutable files on the system disk (ext4 checks the flag on every write); a full disk on a
    // small filesystem of its own.
    let disk = SmallDisk::mount(4096);
    let plain = Db::sqlite();
    let db_url = match how {
        Freeze::Immutable => plain.url.clone(),
        Freeze::DiskFull => format!("sqlite://{}", disk.0.join("tollgate.db").display()),
    };
    let db_file = std::path::PathBuf::from(db_url.trim_start_matches("sqlite://"));
    let spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db_url);
    let mut tg = Tollgate::start(&spec).await;
    let url = format!("{}/paid/x", tg.url);
    // One payment first, so that the database files all exist.
    let (name, value) = signed_header(&url, true).await;
    assert_eq!(
        http().get(&url).header(name, &value).send().await.unwrap().status(),
        200
    );

    let mut frozen = None;
    match how {
        Freeze::Immutable => {
            let files = ["", "-wal", "-shm"]
                .iter()
                .map(|s| std::path::PathBuf::from(format!("{}{s}", db_file.display())))
                .collect();
            frozen = Some(Immutable::set(files));
        }
        Freeze::DiskFull => disk.fill(),
    }
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503, "{}", tg.log());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "payment_unavailable");
    assert_eq!(up.count(), 1, "nothing forwarded unpaid");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.exited(), None, "the gateway survives: {}", tg.log());
    assert!(tg.log().contains("payment database is unavailable"), "{}", tg.log());
    // Still serving what needs no ledger.
    assert_eq!(http().get(&url).send().await.unwrap().status(), 402);
    assert_eq!(
        http().get(format!("{}/free", tg.url)).send().await.unwrap().status(),
        200
    );

    drop(frozen);
    if let Freeze::DiskFull = how {
        disk.unfill();
    }
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the same payment goes through once the ledger is back: {}",
        tg.log()
    );
    assert_eq!(up.count(), 3, "the paid request (twice) and the free one");
}

#[tokio::test]
async fn an_immutable_ledger_fails_closed_without_killing_the_gateway() {
    a_ledger_that_stops_accepting_writes(Freeze::Immutable).await;
}

#[tokio::test]
async fn a_full_disk_fails_closed_without_killing_the_gateway() {
    a_ledger_that_stops_accepting_writes(Freeze::DiskFull).await;
}

// ---------------------------------------------------------------------------------------------
// Money in doubt: an outcome tollgate cannot know is pending, reconciled from the chain, and the
// same header sent again is served once the payment is settled — exactly once.

use crate::faults::{Fault, FaultProxy, Plan, SECRET};
use crate::interop::Facilitator;
use alloy::primitives::U256;
use alloy::providers::Provider;
use tollgate::store::{Delivery, PaymentState, Store};

const PRICE: u64 = 1000;

/// A fresh payment for `url`: its header, and the authorization (to ask the chain about).
async fn payment(url: &str) -> ((&'static str, String), tollgate::x402::Authorization) {
    let o = offers(url, true).await.remove(0);
    let p = tollgate::client::authorize(&o, &payer(), now());
    (tollgate::client::payment_header(&o, &p), p.authorization)
}

#[tokio::test]
async fn a_facilitator_that_settles_then_answers_badly_leaves_money_pending_and_the_same_header_is_served_once() {
    let anvil = Anvil::start().await;
    let fac = Facilitator::start(&anvil.url, "").await;
    let proxy = FaultProxy::start(&fac.url, Plan::Always(Fault::Pass)).await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let settlement = format!(
        "mode = \"facilitator\"\nfacilitator_url = \"{}\"\nfacilitator_timeout_secs = 2",
        proxy.url
    );
    spec.settlement_extra = &settlement;
    spec.relayer_key = None;
    let tg = Tollgate::start(&spec).await;
    let store = Store::connect(&db.url).await.unwrap();

    for (i, fault) in [
        Fault::ServerError,
        Fault::Garbage,
        Fault::Drop,
        Fault::Truncate,
        Fault::Hang,
        Fault::Refuse,
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!("{}/paid/doubt{i}", tg.url);
        let ((name, value), auth) = payment(&url).await;
        let payer0 = anvil.usdc_balance(PAYER).await;
        let served0 = up.count();
        proxy.set(Plan::When {
            needle: "POST /settle".into(),
            fault,
        });
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 504, "{fault:?}: {}", tg.log());
        assert_eq!(r.headers()["retry-after"], "2");
        let pr = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
        assert_eq!(pr["errorReason"], "settlement_pending", "{fault:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "payment_pending", "{fault:?}: {body}");
        assert!(!body.to_string().contains(SECRET), "{body}");
        assert_eq!(up.count(), served0, "{fault:?}: not served yet");
        // The facilitator settled (except when it never saw the request): charged, and recorded.
        let charged = fault != Fault::Refuse;
        assert_eq!(anvil.authorization_used(&auth).await, charged, "{fault:?}");
        let expected = if charged { payer0 - U256::from(PRICE) } else { payer0 };
        assert_eq!(anvil.usdc_balance(PAYER).await, expected, "{fault:?}");
        let pending = store.unfinished(u64::MAX, 100).await.unwrap();
        assert_eq!(pending.len(), 1, "{fault:?}: the payment is in the ledger: {pending:?}");
        assert_eq!(
            (pending[0].state, pending[0].delivery),
            (PaymentState::Pending, Delivery::Owed),
            "{fault:?}"
        );

        // The client sends the same header again: served, once, with the transaction.
        proxy.set(Plan::Always(Fault::Pass));
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 200, "{fault:?}: {}", tg.log());
        let pr = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
        assert_eq!(pr["success"], true);
        let tx = pr["transaction"].as_str().unwrap().parse().unwrap();
        let receipt = anvil.provider.get_transaction_receipt(tx).await.unwrap().unwrap();
        assert!(receipt.status(), "{fault:?}");
        assert_eq!(up.count(), served0 + 1, "{fault:?}");
        // And never again.
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 402, "{fault:?}");
        assert_eq!(up.count(), served0 + 1);
        assert_eq!(
            anvil.usdc_balance(PAYER).await,
            payer0 - U256::from(PRICE),
            "{fault:?}: charged once"
        );
        let key = tollgate::chains::ReplayKey {
            network: "eip155:8453".into(),
            asset: USDC.to_checksum(None).to_ascii_lowercase(),
            payer: PAYER.to_checksum(None).to_ascii_lowercase(),
            nonce: auth.nonce.to_string(),
        };
        let row = store.payment(&key).await.unwrap().expect("ledger row");
        assert_eq!(row.state, PaymentState::Settled, "{fault:?}");
    }
    let log = tg.log();
    assert!(
        log.contains("did not answer within 2s"),
        "a slow facilitator is called slow: {log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}

#[tokio::test]
async fn chain_rpc_faults_never_forward_unpaid_never_lose_or_double_charge_a_payment() {
    let anvil = Anvil::start().await;
    let rpc = FaultProxy::start(
        &anvil.url,
        Plan::Random {
            faults: vec![
                Fault::ServerError,
                Fault::Drop,
                Fault::Truncate,
                Fault::Garbage,
                Fault::Delay(2500),
            ],
            percent: 20,
            seed: 7,
        },
    )
    .await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let mut spec = GatewaySpec::new(up.url(), rpc.url.clone(), &db.url);
    spec.settlement_extra = "receipt_timeout_secs = 4\nreconcile_interval_secs = 1\nreconcile_after_secs = 6";
    let tg = Tollgate::start(&spec).await;
    let payer0 = anvil.usdc_balance(PAYER).await;
    const N: usize = 16;
    let mut payments = Vec::new();
    for i in 0..N {
        let url = format!("{}/paid/p{i}", tg.url);
        let (header, auth) = payment(&url).await;
        payments.push((url, header, auth));
    }

    // Each client retries its own header on 503 (nothing charged) and 504 (pending), as a careful
    // client does; four at a time.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for (url, (name, value), _) in payments.clone() {
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..20 {
                let status = match http().get(&url).header(name, &value).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                seen.push(status);
                if status == 200 || status == 402 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            seen
        }));
    }
    let mut histories = Vec::new();
    for t in tasks {
        histories.push(t.await.unwrap());
    }
    assert!(
        rpc.count(Fault::Pass) > 0 && rpc.log.lock().unwrap().iter().any(|f| *f != Fault::Pass),
        "faults were injected"
    );
    // Healed: whoever is not served yet retries the same header.
    rpc.set(Plan::Always(Fault::Pass));
    for (i, (url, (name, value), _)) in payments.iter().enumerate() {
        if histories[i].last() == Some(&200) {
            continue;
        }
        let mut status = 0;
        for _ in 0..40 {
            status = http()
                .get(url)
                .header(*name, value)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            histories[i].push(status);
            if status == 200 || status == 402 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            status,
            200,
            "payment {i} is served once healed: {:?}\n{}",
            histories[i],
            tg.log()
        );
    }
    for (i, h) in histories.iter().enumerate() {
        assert_eq!(
            h.iter().filter(|&&s| s == 200).count(),
            1,
            "payment {i}: served exactly once: {h:?}"
        );
        assert!(
            !h.contains(&402),
            "payment {i} was never refused as a replay of itself: {h:?}"
        );
    }

    // Served exactly once each, each paid on chain, each charged once.
    let served: Vec<_> = up.all();
    assert_eq!(served.len(), N, "{served:?}");
    for (i, (_, _, auth)) in payments.iter().enumerate() {
        assert!(anvil.authorization_used(auth).await, "payment {i} is on chain");
        assert_eq!(served.iter().filter(|s| s.path == format!("/paid/p{i}")).count(), 1);
    }
    assert!(served.iter().all(|s| s.header("x-tollgate-payer").is_some()));
    assert_eq!(anvil.usdc_balance(PAYER).await, payer0 - U256::from(PRICE * N as u64));
    // And every one of them is settled in the ledger (reconciled where its outcome was unknown).
    let store = Store::connect(&db.url).await.unwrap();
    eventually("the ledger to settle every payment", || async {
        store.count_payments(PaymentState::Settled).await.unwrap() == N as i64
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown and secrets.

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_and_refuses_new_connections() {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let mut tg = Tollgate::start(&spec).await;
    // A paid request whose upstream takes 1.5 s: settled first, then forwarded.
    let url = format!("{}/paid/slow/1500", tg.url);
    let ((name, value), auth) = payment(&url).await;
    let in_flight = tokio::spawn(async move { http().get(&url).header(name, &value).send().await });
    eventually("the request to reach the upstream", || async { up.count() == 1 }).await;
    assert!(anvil.authorization_used(&auth).await, "settled before forwarding");
    signal_pid(tg.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", tg.port)).await.is_err(),
        "no new connections after SIGTERM"
    );
    let r = in_flight.await.unwrap().expect("the request in flight is answered");
    assert_eq!(r.status(), 200, "{}", tg.log());
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["path"], "/paid/slow/1500");
    eventually("the gateway to exit", || {
        let exited = tg.exited().is_some();
        async move { exited }
    })
    .await;
    assert!(tg.log().contains("tollgate stopped"), "{}", tg.log());
}

#[tokio::test]
async fn rpc_and_facilitator_secrets_never_reach_clients_or_logs() {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    // An RPC URL that carries its key in the path and the query, as hosted providers do; first
    // dead, then alive but answering its own error (naming a key) to every call.
    let dead = format!("http://127.0.0.1:{}/v2/{SECRET}?apikey={SECRET}", free_port());
    let rpc = FaultProxy::start(&anvil.url, Plan::Always(Fault::ServerError)).await;
    let erring = format!("{}/v2/{SECRET}?apikey={SECRET}", rpc.url);
    for rpc_url in [dead, erring] {
        let db = Db::sqlite();
        let tg = Tollgate::start(&GatewaySpec::new(up.url(), rpc_url, &db.url)).await;
        let url = format!("{}/paid/x", tg.url);
        let ((name, value), _) = payment(&url).await;
        let r = http().get(&url).header(name, &value).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let text = format!("{:?} {}", r.headers().clone(), r.text().await.unwrap());
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("127.0.0.1"), "no addresses either: {text}");
        let log = tg.log();
        assert!(!log.contains("SECRET"), "{log}");
        assert!(
            log.contains("chain RPC failed"),
            "the operator still learns what failed: {log}"
        );
    }
    // A facilitator URL with a token in it.
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let settlement = format!(
        "mode = \"facilitator\"\nfacilitator_url = \"http://127.0.0.1:{}/t/{SECRET}\"",
        free_port()
    );
    spec.settlement_extra = &settlement;
    let tg = Tollgate::start(&spec).await;
    let url = format!("{}/paid/x", tg.url);
    let ((name, value), _) = payment(&url).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(!r.text().await.unwrap().contains("SECRET"));
    assert!(!tg.log().contains("SECRET"), "{}", tg.log());
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Crashes.

#[tokio::test]
async fn kill_9_during_paid_load_fifty_times_loses_nothing_forwards_nothing_unpaid_charges_nothing_twice() {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.settlement_extra = "reconcile_interval_secs = 1\nreconcile_after_secs = 1";
    let payer0 = anvil.usdc_balance(PAYER).await;
    let mut sent: Vec<(String, tollgate::x402::Authorization)> = Vec::new();
    let mut answered_200 = Vec::new();
    let mut last_valid = 0;
    for round in 0..50 {
        let mut tg = Tollgate::start(&spec).await;
        let mut tasks = Vec::new();
        // The offer is the same for every path under /paid/ (the signature does not cover the URL).
        let o = offers(&format!("{}/paid/k", tg.url), true).await.remove(0);
        for j in 0..6 {
            let url = format!("{}/paid/k{round}-{j}", tg.url);
            // Short-lived, so that whatever a crash left unsent can be seen expiring below.
            let now = now();
            let auth = tollgate::x402::Authorization {
                from: PAYER,
                to: o.pay_to,
                value: o.amount,
                valid_after: now - 60,
                valid_before: now + 15,
                nonce: alloy::primitives::B256::from(rand::random::<[u8; 32]>()),
            };
            last_valid = auth.valid_before;
            let (name, value) =
                tollgate::client::payment_header(&o, &tollgate::client::sign(&o, &payer(), auth.clone()));
            sent.push((format!("/paid/k{round}-{j}"), auth));
            tasks.push(tokio::spawn(async move {
                http()
                    .get(&url)
                    .header(name, value)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        // The kill falls when a random number of this round's payments (0 to 5 of 6) has been
        // forwarded: before, during or after settlements.
        let wanted = rand::random::<u64>() % 6;
        let start = up.count();
        for _ in 0..200 {
            if (up.count() - start) as u64 >= wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 15)).await;
        signal_pid(tg.pid(), "KILL");
        for _ in 0..100 {
            if tg.exited().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (j, t) in tasks.into_iter().enumerate() {
            if let Ok(Ok(200)) = t.await {
                answered_200.push(format!("/paid/k{round}-{j}"));
            }
        }
    }

    // One last start: reconciliation finishes what the crashes left, once every authorization that
    // was never sent has expired.
    let mut tg = Tollgate::start(&spec).await;
    while now() < last_valid + 3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tg.stop().await;
    let store = Store::connect(&db.url).await.unwrap();
    assert!(
        store.unfinished(u64::MAX, 1000).await.unwrap().is_empty(),
        "reconciliation left unfinished payments"
    );

    let forwarded = up.all();
    let mut spent = 0u64;
    for (path, auth) in &sent {
        let on_chain = anvil.authorization_used(auth).await;
        let key = tollgate::chains::ReplayKey {
            network: "eip155:8453".into(),
            asset: USDC.to_checksum(None).to_ascii_lowercase(),
            payer: PAYER.to_checksum(None).to_ascii_lowercase(),
            nonce: auth.nonce.to_string(),
        };
        let row = store.payment(&key).await.unwrap();
        if on_chain {
            spent += 1;
            let row = row.unwrap_or_else(|| panic!("{path}: charged on chain but not in the ledger"));
            assert_eq!(row.state, PaymentState::Settled, "{path}");
        } else {
            assert!(row.is_none(), "{path}: never charged, but the ledger has {row:?}");
        }
        let times = forwarded.iter().filter(|s| &s.path == path).count();
        assert!(times <= 1, "{path} forwarded {times} times");
        assert!(times == 0 || on_chain, "{path} was forwarded unpaid");
    }
    for path in &answered_200 {
        assert!(
            forwarded.iter().any(|s| &s.path == path),
            "{path} answered 200 without the upstream"
        );
    }
    assert_eq!(anvil.usdc_balance(PAYER).await, payer0 - U256::from(PRICE * spent));
    assert!(
        spent > 0 && spent < sent.len() as u64,
        "the crashes fell mid-load: {spent} of {} spent",
        sent.len()
    );
    eprintln!(
        "kill -9 x50: {} payments sent, {spent} charged and settled in the ledger, {} forwarded, {} answered before the kill",
        sent.len(),
        forwarded.len(),
        answered_200.len()
    );
}
