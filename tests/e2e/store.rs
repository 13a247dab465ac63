//! The ledger and attempt log on both databases, and reconciliation against a real chain.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::U256;

use crate::common::*;
use tollgate::chains::{ReplayKey, SettleOutcome};
use tollgate::store::{Attempt, AttemptLog, NewClaim, Outcome, PaymentState, Store};

fn key(n: u8) -> ReplayKey {
    ReplayKey {
        network: "eip155:8453".into(),
        asset: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913".into(),
        payer: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8".into(),
        nonce: format!("0x{:064x}", n),
    }
}

fn claim<'a>(k: &'a ReplayKey, now_ms: u64) -> NewClaim<'a> {
    NewClaim {
        key: k,
        tenant: "default",
        route: "GET /paid/*",
        pay_to: "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        amount: "1000".into(),
        payload: "{}".into(),
        valid_before: 4_000_000_000,
        now_ms,
    }
}

#[tokio::test]
async fn an_authorization_is_claimed_once_on_both_databases() {
    for db in Db::both().await {
        let store = Store::connect(&db.url).await.unwrap();
        let k = key(1);
        assert!(store.claim(&claim(&k, 1)).await.unwrap(), "{}", db.url);
        assert!(!store.claim(&claim(&k, 2)).await.unwrap());
        match store.kind() {
            // Migrations are idempotent: a second process connecting finds the schema current, and
            // sees the same claims.
            tollgate::store::DbKind::Postgres => {
                let again = Store::connect(&db.url).await.unwrap();
                assert!(
                    !again.claim(&claim(&k, 3)).await.unwrap(),
                    "a second pool sees the same claim"
                );
            }
            // A SQLite ledger belongs to one process: a second is refused, by name.
            tollgate::store::DbKind::Sqlite => {
                let e = Store::connect(&db.url).await.unwrap_err().to_string();
                assert!(e.contains("in use by another process"), "{e}");
                store.close().await;
                let again = Store::connect(&db.url).await.unwrap();
                assert!(!again.claim(&claim(&k, 3)).await.unwrap(), "the claim is on disk");
                again.close().await;
            }
        }
        let store = Store::connect(&db.url).await.unwrap();
        let row = store.payment(&k).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.claimed_at, row.amount.as_str()),
            (PaymentState::Claimed, 1, "1000")
        );

        // Released claims may be claimed again; settled ones are never released.
        assert!(store.release(&k).await.unwrap());
        assert!(store.claim(&claim(&k, 4)).await.unwrap());
        store
            .set_state(&k, PaymentState::Settled, Some("0xabc"), 5)
            .await
            .unwrap();
        assert!(!store.release(&k).await.unwrap());
        store.forget_unlanded(&k).await.unwrap();
        let row = store.payment(&k).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.tx_hash.as_deref(), row.updated_at),
            (PaymentState::Settled, Some("0xabc"), 5)
        );
        assert!(!store.claim(&claim(&k, 6)).await.unwrap());

        // Pending keeps its tx when the state moves on without one.
        let k2 = key(2);
        store.claim(&claim(&k2, 10)).await.unwrap();
        store
            .set_state(&k2, PaymentState::Pending, Some("0xdef"), 11)
            .await
            .unwrap();
        store.set_state(&k2, PaymentState::Settled, None, 12).await.unwrap();
        assert_eq!(
            store.payment(&k2).await.unwrap().unwrap().tx_hash.as_deref(),
            Some("0xdef")
        );

        // Reconciliation sees only unfinished rows older than its cut-off.
        let k3 = key(3);
        store.claim(&claim(&k3, 100)).await.unwrap();
        let old = store.unfinished(101, 10).await.unwrap();
        assert_eq!(old.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), vec![k3.clone()]);
        assert!(store.unfinished(100, 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn concurrent_claims_from_many_pools_let_exactly_one_through() {
    for db in Db::both().await {
        // Many pools share PostgreSQL; SQLite has one per process (and its one connection).
        let pools = if db.url.starts_with("sqlite") { 1 } else { 4 };
        let mut stores = Vec::new();
        for _ in 0..pools {
            stores.push(Store::connect(&db.url).await.unwrap());
        }
        let k = key(9);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (s, k) = (stores[i % pools].clone(), k.clone());
            tasks.push(tokio::spawn(
                async move { s.claim(&claim(&k, i as u64)).await.unwrap() },
            ));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "{}", db.url);
    }
}

#[tokio::test]
async fn attempts_are_written_in_batches_on_both_databases() {
    for db in Db::both().await {
        let store = Store::connect(&db.url).await.unwrap();
        let (log, writer) = AttemptLog::start(store.clone());
        for i in 0..300u64 {
            log.record(Attempt {
                at_ms: i,
                tenant: "default".into(),
                route: "GET /paid/*".into(),
                method: "GET".into(),
                path: "/paid/x".into(),
                x402_version: 2,
                outcome: Some(if i % 3 == 0 {
                    Outcome::Settled
                } else {
                    Outcome::Rejected
                }),
                settle_mode: "before",
                total_us: 5,
                ..Default::default()
            });
        }
        drop(log);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.count_attempts(Outcome::Settled).await.unwrap(), 100, "{}", db.url);
        assert_eq!(store.count_attempts(Outcome::Rejected).await.unwrap(), 200);
        // A batch of every statement size at once (64 + 16 + 4 + 1 rows), each row its own.
        let odd: Vec<Attempt> = (0..85i64)
            .map(|i| Attempt {
                at_ms: 1_000_000 + i as u64,
                tenant: "default".into(),
                outcome: Some(Outcome::Error),
                settle_mode: "before",
                ..Default::default()
            })
            .collect();
        store.insert_attempts(&odd).await.unwrap();
        assert_eq!(store.count_attempts(Outcome::Error).await.unwrap(), 85, "{}", db.url);
        let (n, sum): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(DISTINCT at_ms), CAST(SUM(at_ms) AS BIGINT) FROM attempts WHERE at_ms >= 1000000",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(
            (n, sum),
            (85, (0..85).map(|i| 1_000_000 + i).sum::<i64>()),
            "{}",
            db.url
        );
    }
}

/// A gateway in this process, on `db`, against `anvil`.
async fn gateway(anvil: &Anvil, db: &Db) -> (Arc<tollgate::payment::Payments>, tollgate::tenant::Tenant) {
    let toml = format!(
        "upstream = \"http://127.0.0.1:9\"\ndatabase = \"{}\"\npay_to = \"{PAYEE}\"\n[networks.base]\nrpc_url = \"{}\"\n[[routes]]\npath = \"/paid/*\"\nprice = \"$0.001\"",
        db.url, anvil.url
    );
    std::env::set_var("TOLLGATE_RELAYER_KEY", RELAYER_KEY);
    let (settings, tenant) = tollgate::config::build(toml::from_str(&toml).unwrap()).unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    let (log, _) = AttemptLog::start(store.clone());
    let payments =
        tollgate::payment::Payments::new(&settings, store, log, Arc::new(tollgate::clock::SystemClock)).unwrap();
    (Arc::new(payments), tenant)
}

#[tokio::test]
async fn reconciliation_finishes_what_a_crash_left_on_both_databases() {
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        let (gw, tenant) = gateway(&anvil, &db).await;
        let chain = gw.chain("base").unwrap().clone();
        let offer = tenant.routes[0].pricing.as_ref().unwrap().offers[0].clone();
        let o = tollgate::client::Offered::from_offer(&offer, tollgate::x402::Version::V2);
        let payee0 = anvil.usdc_balance(PAYEE).await;

        // 1. Crashed after sending, before recording: claimed in the ledger, spent on chain.
        let spent = chain_checked(&*chain, &o, now() + 600);
        let k1 = spent.replay_key(&offer.network);
        gw.store.claim(&ledger_row(&k1, &spent)).await.unwrap();
        match chain.settle(&spent).await.unwrap() {
            SettleOutcome::Settled { .. } => {}
            other => panic!("{other:?}"),
        }
        // 2. Crashed before sending, and the authorization has since expired.
        let expired = chain_checked(&*chain, &o, now() + 7);
        let k2 = expired.replay_key(&offer.network);
        gw.store.claim(&ledger_row(&k2, &expired)).await.unwrap();
        // 3. Crashed before sending, and the authorization is still valid: it could still land.
        let valid = chain_checked(&*chain, &o, now() + 600);
        let k3 = valid.replay_key(&offer.network);
        gw.store.claim(&ledger_row(&k3, &valid)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;

        let resolved = gw.reconcile_once(Duration::ZERO).await.unwrap();
        assert_eq!(resolved, 2, "{}", db.url);
        assert_eq!(
            gw.store.payment(&k3).await.unwrap().map(|r| r.state),
            Some(PaymentState::Claimed),
            "still valid and not on chain: kept, not released"
        );
        let row = gw.store.payment(&k1).await.unwrap().unwrap();
        assert_eq!(
            row.state,
            PaymentState::Settled,
            "found on chain by its authorization state"
        );
        assert!(
            gw.store.payment(&k2).await.unwrap().is_none(),
            "expired and never sent: released"
        );
        assert_eq!(
            anvil.usdc_balance(PAYEE).await,
            payee0 + U256::from(1000u64),
            "charged once"
        );
    }
}

fn chain_checked(
    chain: &dyn tollgate::chains::Chain,
    o: &tollgate::client::Offered,
    valid_before: u64,
) -> tollgate::chains::Checked {
    let mut p = tollgate::client::authorize(o, &payer(), now());
    p.authorization.valid_before = valid_before;
    let p = tollgate::client::sign(o, &payer(), p.authorization);
    chain.from_stored(&serde_json::to_string(&p).unwrap()).unwrap()
}

fn ledger_row<'a>(k: &'a ReplayKey, c: &tollgate::chains::Checked) -> NewClaim<'a> {
    NewClaim {
        key: k,
        tenant: "default",
        route: "* /paid/*",
        pay_to: "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        amount: c.amount().to_string(),
        payload: c.to_stored(),
        valid_before: c.valid_before(now()),
        now_ms: 0,
    }
}

#[tokio::test]
async fn payment_identifiers_are_held_answered_leased_and_purged_on_both_databases() {
    use tollgate::store::IdClaim;
    for db in Db::both().await {
        let store = Store::connect(&db.url).await.unwrap();
        let (lease, keep_from) = (1_000, 0);
        let claim = |id: &'static str, hash: &'static str, now: i64| {
            let store = store.clone();
            async move {
                store
                    .claim_payment_id("t1", id, hash, now, lease, keep_from)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(claim("order_0000000000001", "h1", 10).await, IdClaim::Held);
        // Held: the same payment is in progress, another is a conflict; another tenant is separate.
        assert_eq!(claim("order_0000000000001", "h1", 20).await, IdClaim::InProgress);
        assert_eq!(claim("order_0000000000001", "h2", 20).await, IdClaim::Conflict);
        assert_eq!(
            store
                .claim_payment_id("t2", "order_0000000000001", "h2", 20, lease, keep_from)
                .await
                .unwrap(),
            IdClaim::Held
        );
        // Its holder died: once the lease ends the same payment takes it again (once).
        assert_eq!(claim("order_0000000000001", "h1", 2_000).await, IdClaim::Held);
        assert_eq!(claim("order_0000000000001", "h1", 2_001).await, IdClaim::InProgress);
        // Answered: the answer, for the same payment only.
        store
            .finish_payment_id("t1", "order_0000000000001", Some("{\"ok\":1}"))
            .await
            .unwrap();
        assert_eq!(
            claim("order_0000000000001", "h1", 2_002).await,
            IdClaim::Answered("{\"ok\":1}".into())
        );
        assert_eq!(claim("order_0000000000001", "h2", 2_002).await, IdClaim::Conflict);
        // Not final (pending): free for the same payment at once.
        assert_eq!(claim("order_0000000000002", "h3", 10).await, IdClaim::Held);
        store
            .finish_payment_id("t1", "order_0000000000002", None)
            .await
            .unwrap();
        assert_eq!(claim("order_0000000000002", "h3", 11).await, IdClaim::Held);
        // Forgotten (refused, nothing charged): free for any payment.
        store.forget_payment_id("t1", "order_0000000000002").await.unwrap();
        assert_eq!(claim("order_0000000000002", "h4", 12).await, IdClaim::Held);
        // Past keeping: an old id is new again, and purged.
        assert_eq!(
            store
                .claim_payment_id("t1", "order_0000000000001", "h9", 5_000, lease, 3_000)
                .await
                .unwrap(),
            IdClaim::Held
        );
        assert_eq!(store.purge_payment_ids(100_000).await.unwrap(), 3, "{}", db.url);
        assert_eq!(claim("order_0000000000001", "h7", 100_001).await, IdClaim::Held);
    }
}
