//! Hosted mode end to end: the management API's contract (SAAS.md) field by field, proofs of real
//! USDC transfers on anvil, keys and their isolation, quotas exact across two gateways on one
//! PostgreSQL, many tenants behind one proxy each paid into its own payTo, and the SSRF guard.

use std::time::Duration;

use alloy::primitives::{address, Address, U256};
use serde_json::{json, Value};

use crate::common::*;
use crate::upstream::Upstream;

pub const ADMIN: &str = "test-admin-key-0123456789abcdef";
pub const PAYEE_A: Address = address!("1000000000000000000000000000000000000a0a");
pub const PAYEE_B: Address = address!("2000000000000000000000000000000000000b0b");

/// A hosted gateway: the proxy on `tg.port`, the management API on `api`.
pub struct Hosted {
    pub tg: Tollgate,
    pub api: String,
}

pub struct HostedSpec<'a> {
    pub db: &'a str,
    pub rpc: &'a str,
    pub allow_private: bool,
    pub confirmations: u64,
    /// Extra TOML (plans, …).
    pub extra: &'a str,
    /// The relayer's key: each gateway instance needs its own (one key's nonces are one sequence).
    pub relayer_key: &'a str,
    /// How long a settlement waits for its receipt before it is pending.
    pub receipt_timeout_secs: u64,
    /// The Solana fee payer's keypair (base58), for configs with a Solana network.
    pub solana_key: Option<String>,
}

impl<'a> HostedSpec<'a> {
    pub fn new(db: &'a str, rpc: &'a str) -> Self {
        HostedSpec {
            db,
            rpc,
            allow_private: true,
            confirmations: 1,
            extra: "",
            relayer_key: RELAYER_KEY,
            receipt_timeout_secs: 30,
            solana_key: None,
        }
    }
}

impl Hosted {
    pub async fn start(s: &HostedSpec<'_>) -> Hosted {
        let api_port = free_port();
        let tg = Tollgate::start_text(
            |port| {
                format!(
                    r#"
listen = "127.0.0.1:{port}"
database = "{db}"
threads = 2

[api]
listen = "127.0.0.1:{api_port}"

[hosted]
base_domain = "gw.test"
path_prefix = true
allow_private_upstreams = {allow}
proof_confirmations = {conf}
upgrade_url = "https://tollgate.test/upgrade"
tenant_cache_secs = 2
key_cache_secs = 2

[settlement]
relayer_key_env = "TEST_RELAYER_KEY"
receipt_poll_ms = 20
receipt_timeout_secs = {receipt}

[networks.base]
rpc_url = "{rpc}"
rpc_timeout_ms = 2000

# Configured so that a plan without it can be refused it; never contacted.
[networks.ethereum]
rpc_url = "{rpc}"

{extra}
"#,
                    db = s.db,
                    allow = s.allow_private,
                    conf = s.confirmations,
                    rpc = s.rpc,
                    extra = s.extra,
                    receipt = s.receipt_timeout_secs
                )
            },
            &[
                ("TEST_RELAYER_KEY", s.relayer_key),
                ("TOLLGATE_ADMIN_KEY", ADMIN),
                ("TOLLGATE_SOLANA_KEY", s.solana_key.as_deref().unwrap_or("")),
            ],
        )
        .await;
        let api = format!("http://127.0.0.1:{api_port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.is_ok() {
                return Hosted { tg, api };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the management API did not start: {}", tg.log());
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = http().request(method.parse().unwrap(), format!("{}{path}", self.api));
        r = match auth {
            Auth::None => r,
            Auth::Admin(k) => r.header("x-admin-key", k),
            Auth::Key(k) => r.header("authorization", format!("Bearer {k}")),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        (status, v, headers)
    }

    /// A tenant on `tier`: its id and first key.
    pub async fn tenant(&self, email: &str, tier: &str, slug: Option<&str>) -> (String, String) {
        let mut body = json!({"email": email, "tier": tier});
        if let Some(s) = slug {
            body["slug"] = json!(s);
        }
        let (st, v, _) = self
            .call(
                "POST",
                "/api/v1/x402/admin/create-tenant",
                Auth::Admin(ADMIN),
                Some(body),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        (
            v["tenant"]["id"].as_str().unwrap().into(),
            v["api_key"].as_str().unwrap().into(),
        )
    }

    pub async fn patch(&self, key: &str, body: Value) -> (u16, Value) {
        let (st, v, _) = self
            .call("PATCH", "/api/v1/x402/tenant", Auth::Key(key), Some(body))
            .await;
        (st, v)
    }

    async fn verify(&self, key: &str, tx: &str, chain: &str, expected: Value) -> (u16, Value) {
        let (st, v, _) = self
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(key),
                Some(json!({"tx_hash": tx, "chain": chain, "expected_amount": expected})),
            )
            .await;
        (st, v)
    }
}

#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Admin(&'a str),
    Key(&'a str),
}

/// The error shape of the contract.
fn error_is(v: &Value, code: &str) {
    assert_eq!(v["success"], json!(false), "{v}");
    assert_eq!(v["error_code"], json!(code), "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

fn next_month_start() -> String {
    let (_, next) = tollgate::clock::month_bounds(now() as i64);
    tollgate::clock::rfc3339(next)
}

#[tokio::test]
async fn the_contract_flow_field_by_field_on_both_databases() {
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        let mut h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
        let create = "/api/v1/x402/admin/create-tenant";

        // Admin: disabled without the key, refused with a wrong one.
        let body = json!({"email": "owner@acme.test", "tier": "free", "name": "Acme Weather"});
        let (st, v, _) = h.call("POST", create, Auth::None, Some(body.clone())).await;
        assert_eq!(st, 401);
        error_is(&v, "INVALID_API_KEY");
        let (st, v, _) = h.call("POST", create, Auth::Admin("wrong"), Some(body.clone())).await;
        assert_eq!(st, 401);
        error_is(&v, "INVALID_API_KEY");
        let (st, v, _) = h
            .call(
                "POST",
                create,
                Auth::Admin(ADMIN),
                Some(json!({"email": "x@y.z", "tier": "gold"})),
            )
            .await;
        assert_eq!(st, 400);
        error_is(&v, "INVALID_REQUEST");
        assert!(v["error"].as_str().unwrap().contains("tier"), "{v}");
        let (st, v, _) = h
            .call("POST", create, Auth::Admin(ADMIN), Some(json!({"tier": "free"})))
            .await;
        assert_eq!(st, 400, "{v}");
        error_is(&v, "INVALID_REQUEST");

        let (st, v, _) = h.call("POST", create, Auth::Admin(ADMIN), Some(body)).await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["success"], json!(true));
        assert_eq!(v["tenant"]["email"], json!("owner@acme.test"));
        assert_eq!(v["tenant"]["tier"], json!("free"));
        assert_eq!(v["tenant"]["slug"], json!("acme-weather"));
        assert!(v["tenant"]["id"].as_str().unwrap().starts_with("tn_"));
        let key = v["api_key"].as_str().unwrap().to_string();
        assert!(key.starts_with("x402_live_") && key.len() == 42, "{key}");

        // Usage and chains.
        let (st, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
        assert_eq!(st, 200, "{u}");
        assert_eq!(
            u,
            json!({"tier": "free", "verifications_used": 0, "verifications_limit": 1000,
                   "verifications_remaining": 1000, "quota_reset_date": next_month_start(),
                   "enabled_chains": ["base"]})
        );
        let (st, c, _) = h
            .call("GET", "/api/v1/x402/supported-chains", Auth::Key(&key), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(
            c,
            json!({"tier": "free", "enabled_chains": ["base"], "all_chains": ["base", "ethereum"]})
        );

        // 401s: missing, malformed, unknown.
        for auth in [
            Auth::None,
            Auth::Key("not-a-key"),
            Auth::Key("x402_live_0000000000000000000000000000000"),
        ] {
            let (st, v, _) = h.call("GET", "/api/v1/x402/usage", auth, None).await;
            assert_eq!(st, 401, "{v}");
            error_is(&v, "INVALID_API_KEY");
        }

        // Verify before a payTo exists: a clear 400.
        let (st, v) = h
            .verify(&key, &format!("{:#x}", U256::from(1u64)), "base", json!(1))
            .await;
        assert_eq!(st, 400, "{v}");
        error_is(&v, "INVALID_REQUEST");
        let (st, v) = h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;
        assert_eq!(st, 200, "{v}");

        // A real USDC payment, proven once.
        let tx = anvil.pay_usdc(PAYEE_A, 1_500_000).await.to_string();
        let (st, v) = h.verify(&key, &tx, "base", json!(1.5)).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["success"], json!(true), "{v}");
        assert_eq!(v["tx_hash"], json!(tx));
        assert_eq!(v["chain"], json!("base"));
        assert_eq!(v["amount_usdc"], json!(1.5));
        assert_eq!(v["from_address"], json!(OWNER.to_string()));
        assert_eq!(v["to_address"], json!(PAYEE_A.to_string()));
        assert_eq!(v["confirmations"], json!(1));
        let risk = v["risk_score"].as_u64().unwrap();
        assert!(risk <= 100);
        assert!(v.get("error_code").is_none(), "{v}");
        let (st, v) = h.verify(&key, &tx, "base", json!(1.5)).await;
        assert_eq!(st, 200);
        assert_eq!(
            (v["success"].clone(), v["error_code"].clone()),
            (json!(false), json!("TX_ALREADY_USED")),
            "{v}"
        );
        assert!(v["first_used_at"].as_str().is_some(), "{v}");

        // Too little: refused, and not consumed.
        let short = anvil.pay_usdc(PAYEE_A, 1_000_000).await.to_string();
        let (_, v) = h.verify(&key, &short, "base", json!("2")).await;
        assert_eq!(v["error_code"], json!("AMOUNT_TOO_LOW"), "{v}");
        assert_eq!(v["amount_usdc"], json!(1.0));
        let (_, v) = h.verify(&key, &short, "base", json!(1)).await;
        assert_eq!(v["success"], json!(true), "{v}");
        // Paid to someone else; never mined.
        let elsewhere = anvil.pay_usdc(PAYEE_B, 1_000_000).await.to_string();
        let (_, v) = h.verify(&key, &elsewhere, "base", json!(1)).await;
        assert_eq!(v["error_code"], json!("WRONG_RECIPIENT"), "{v}");
        let (_, v) = h
            .verify(&key, &format!("0x{}", "ab".repeat(32)), "base", json!(1))
            .await;
        assert_eq!(v["error_code"], json!("TX_NOT_FOUND"), "{v}");

        // The x402 form: a signed payment checked as a facilitator's /verify would, never settled.
        let x402 = |pay_to: Address, signer: alloy::signers::local::PrivateKeySigner| {
            let net = std::sync::Arc::new(tollgate::x402::Network::from_known(
                tollgate::x402::network::builtin("base").unwrap(),
            ));
            let offer = tollgate::x402::Offer::exact(net, U256::from(10_000u64), pay_to.to_checksum(None), 60);
            let o = tollgate::client::Offered::from_offer(&offer, tollgate::x402::Version::V2);
            let auth = tollgate::client::authorize(&o, &payer(), now()).authorization;
            let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::sign(&o, &signer, auth));
            json!({"x402Version": 2, "paymentPayload": decode_b64_json(&header), "paymentRequirements": offer.to_v2()})
        };
        let payer_before = anvil.usdc_balance(PAYER).await;
        let (st, v, _) = h
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(&key),
                Some(x402(PAYEE_A, payer())),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v, json!({"isValid": true, "payer": PAYER.to_string()}));
        let (_, v, _) = h
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(&key),
                Some(x402(PAYEE_B, payer())),
            )
            .await;
        assert_eq!(v["isValid"], json!(false), "another payee than the tenant's own: {v}");
        assert_eq!(v["invalidReason"], json!(tollgate::x402::reason::RECIPIENT));
        let stranger: alloy::signers::local::PrivateKeySigner = RELAYER_KEY.parse().unwrap();
        let (_, v, _) = h
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(&key),
                Some(x402(PAYEE_A, stranger)),
            )
            .await;
        assert_eq!(v["isValid"], json!(false), "{v}");
        assert_eq!(v["invalidReason"], json!(tollgate::x402::reason::INVALID_SIGNATURE));
        assert_eq!(
            anvil.usdc_balance(PAYER).await,
            payer_before,
            "verify never moves money"
        );

        // Chains: a known chain outside the plan is 403; an unknown name is a 400.
        let (st, v) = h.verify(&key, &tx, "ethereum", json!(1)).await;
        assert_eq!(st, 403, "{v}");
        error_is(&v, "CHAIN_NOT_ENABLED");
        let (st, v) = h.verify(&key, &tx, "dogecoin", json!(1)).await;
        assert_eq!(st, 400, "{v}");
        error_is(&v, "INVALID_REQUEST");
        let (st, v, _) = h
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(&key),
                Some(json!({"chain": "base"})),
            )
            .await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("tx_hash"), "{v}");

        // Counted: every verification that reached the chain (6 proofs, 3 x402), not the refused requests.
        let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
        assert_eq!(u["verifications_used"], json!(9), "{u}");
        assert_eq!(u["verifications_remaining"], json!(991), "{u}");

        // Listed, newest first, paged.
        let (st, l, _) = h
            .call("GET", "/api/v1/x402/verifications?limit=4", Auth::Key(&key), None)
            .await;
        assert_eq!(st, 200, "{l}");
        assert_eq!(l["verifications"].as_array().unwrap().len(), 4);
        let cursor = l["next_cursor"].as_str().unwrap().to_string();
        let (_, l2, _) = h
            .call(
                "GET",
                &format!("/api/v1/x402/verifications?limit=4&cursor={cursor}"),
                Auth::Key(&key),
                None,
            )
            .await;
        assert_eq!(l2["verifications"].as_array().unwrap().len(), 4, "{l2}");
        let cursor = l2["next_cursor"].as_str().unwrap().to_string();
        let (_, l3, _) = h
            .call(
                "GET",
                &format!("/api/v1/x402/verifications?limit=4&cursor={cursor}"),
                Auth::Key(&key),
                None,
            )
            .await;
        assert_eq!(l3["verifications"].as_array().unwrap().len(), 1, "{l3}");
        assert_eq!(l3["next_cursor"], Value::Null);
        let all: Vec<Value> = [&l, &l2, &l3]
            .iter()
            .flat_map(|p| p["verifications"].as_array().unwrap().clone())
            .collect();
        let ids: std::collections::HashSet<&str> = all.iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 9, "pages neither overlap nor skip");
        let (_, ok, _) = h
            .call(
                "GET",
                "/api/v1/x402/verifications?outcome=success&chain=base",
                Auth::Key(&key),
                None,
            )
            .await;
        assert_eq!(ok["verifications"].as_array().unwrap().len(), 3, "{ok}");
        let (_, b, _) = h
            .call("GET", "/api/v1/x402/usage/breakdown", Auth::Key(&key), None)
            .await;
        let total: i64 = b["verifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["count"].as_i64().unwrap())
            .sum();
        assert_eq!(total, 9, "{b}");

        // Suspended: 403, and back.
        let id = {
            let (_, t, _) = h.call("GET", "/api/v1/x402/tenant", Auth::Key(&key), None).await;
            t["tenant"]["id"].as_str().unwrap().to_string()
        };
        let (st, _, _) = h
            .call(
                "POST",
                &format!("/api/v1/x402/admin/tenants/{id}/suspend"),
                Auth::Admin(ADMIN),
                None,
            )
            .await;
        assert_eq!(st, 200);
        let (st, v, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
        assert_eq!(st, 403, "{v}");
        error_is(&v, "TENANT_SUSPENDED");
        let (st, _, _) = h
            .call(
                "POST",
                &format!("/api/v1/x402/admin/tenants/{id}/resume"),
                Auth::Admin(ADMIN),
                None,
            )
            .await;
        assert_eq!(st, 200);
        let (st, _, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
        assert_eq!(st, 200);

        // No usable key in the database or the log (read once the gateway let go of the file).
        h.tg.stop().await;
        let dump = dump_db(&db.url).await;
        assert!(
            dump.contains(&tollgate::tenancy::keys::hash(&key)),
            "the hash is what is stored"
        );
        assert!(!dump.contains(&key[10..]), "the key's secret part is in the database");
        assert!(!h.tg.log().contains(&key[10..]), "the key is in the log");
    }
}

/// Every text cell of every table, for "is a secret stored anywhere".
async fn dump_db(url: &str) -> String {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let mut out = String::new();
    for table in [
        "tenants",
        "api_keys",
        "verifications",
        "consumed_txs",
        "payments",
        "attempts",
    ] {
        for r in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            for (i, _) in r.columns().iter().enumerate() {
                if let Ok(Some(s)) = r.try_get::<Option<String>, _>(i) {
                    out.push_str(&s);
                    out.push('\n');
                }
            }
        }
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn confirmations_quota_scopes_revocation_and_isolation() {
    for db in Db::both().await {
        let anvil = Anvil::start().await;
        let mut spec = HostedSpec::new(&db.url, &anvil.url);
        spec.confirmations = 3;
        spec.extra = r#"
[plans.tiny]
verifications = 3
chains = ["base"]
[plans.free]
verifications = 1000
chains = ["solana", "base"]
"#;
        let h = Hosted::start(&spec).await;
        let (_, a) = h.tenant("a@a.test", "tiny", Some("alpha")).await;
        let (b_id, b) = h.tenant("b@b.test", "free", Some("beta")).await;
        h.patch(&a, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;

        // Too few confirmations: refused and not consumed; deep enough later: paid.
        let tx = anvil.pay_usdc(PAYEE_A, 10_000).await.to_string();
        let (_, v) = h.verify(&a, &tx, "base", json!(0.01)).await;
        assert_eq!(v["error_code"], json!("INSUFFICIENT_CONFIRMATIONS"), "{v}");
        assert_eq!(v["confirmations"], json!(1));
        anvil.mine().await;
        anvil.mine().await;
        let (_, v) = h.verify(&a, &tx, "base", json!(0.01)).await;
        assert_eq!(v["success"], json!(true), "{v}");
        assert_eq!(v["confirmations"], json!(3));
        let (_, v) = h.verify(&a, &tx, "base", json!(0.01)).await;
        assert_eq!(v["error_code"], json!("TX_ALREADY_USED"), "{v}");

        // The plan's 3 are used: 429 with when it refills, and where to upgrade.
        let (st, v, headers) = h
            .call(
                "POST",
                "/api/v1/x402/verify",
                Auth::Key(&a),
                Some(json!({"tx_hash": tx, "chain": "base"})),
            )
            .await;
        assert_eq!(st, 429, "{v}");
        error_is(&v, "QUOTA_EXCEEDED");
        assert_eq!(v["upgrade_url"], json!("https://tollgate.test/upgrade"));
        assert_eq!(v["quota_reset_date"], json!(next_month_start()));
        let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        let (_, next) = tollgate::clock::month_bounds(now() as i64);
        assert!((retry - (next - now() as i64)).abs() <= 5, "{retry}");
        let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&a), None).await;
        assert_eq!(
            (u["verifications_used"].clone(), u["verifications_remaining"].clone()),
            (json!(3), json!(0))
        );

        // A's key never sees B: B's key id is "not found" to A, and A's list holds only A's.
        let (_, kb, _) = h.call("GET", "/api/v1/x402/keys", Auth::Key(&b), None).await;
        let b_key_id = kb["keys"][0]["id"].as_str().unwrap().to_string();
        let (st, v, _) = h
            .call("DELETE", &format!("/api/v1/x402/keys/{b_key_id}"), Auth::Key(&a), None)
            .await;
        assert_eq!(st, 404, "{v}");
        let (_, ka, _) = h.call("GET", "/api/v1/x402/keys", Auth::Key(&a), None).await;
        assert_eq!(ka["keys"].as_array().unwrap().len(), 1);
        assert_ne!(ka["keys"][0]["id"], json!(b_key_id));
        assert!(ka["keys"][0]["prefix"].as_str().unwrap().starts_with("x402_live_"));
        let (_, t, _) = h.call("GET", "/api/v1/x402/tenant", Auth::Key(&a), None).await;
        assert_ne!(t["tenant"]["id"], json!(b_id));

        // Scopes, and revocation at once on the gateway that revoked.
        let (st, nk, _) = h
            .call(
                "POST",
                "/api/v1/x402/keys",
                Auth::Key(&b),
                Some(json!({"name": "dashboard", "scopes": ["analytics"]})),
            )
            .await;
        assert_eq!(st, 201, "{nk}");
        let dash = nk["api_key"].as_str().unwrap().to_string();
        let (st, _, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&dash), None).await;
        assert_eq!(st, 200);
        let (st, v) = h.verify(&dash, &tx, "base", json!(1)).await;
        assert_eq!(st, 403, "{v}");
        error_is(&v, "INSUFFICIENT_SCOPE");
        let id = nk["key"]["id"].as_str().unwrap();
        let (st, _, _) = h
            .call("DELETE", &format!("/api/v1/x402/keys/{id}"), Auth::Key(&b), None)
            .await;
        assert_eq!(st, 200);
        let (st, v, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&dash), None).await;
        assert_eq!(st, 401, "revoked keys stop at once: {v}");
        let (st, v, _) = h
            .call(
                "POST",
                "/api/v1/x402/keys",
                Auth::Key(&b),
                Some(json!({"name": "x", "scopes": ["root"]})),
            )
            .await;
        assert_eq!(st, 400, "{v}");

        // Routes naming a chain outside the plan are refused when saved.
        let (st, v) = h
            .patch(
                &b,
                json!({"routes": [{"path": "/x", "price": "$0.01", "networks": ["ethereum"]}]}),
            )
            .await;
        assert_eq!(st, 403, "{v}");
        error_is(&v, "CHAIN_NOT_ENABLED");
        let (st, v) = h.patch(&b, json!({"routes": [{"path": "/x", "price": "$0.0x"}]})).await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("routes[0].price"), "{v}");

        // A route's answer mode is the drop-in config's: saved, shown back, a wrong one named.
        let (st, v) = h
            .patch(
                &b,
                json!({"routes": [{"path": "/fast", "price": "$0.01", "answer": "verified"}, {"path": "/slow", "price": "$0.01"}]}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let (st, v, _) = h.call("GET", "/api/v1/x402/tenant", Auth::Key(&b), None).await;
        assert_eq!(st, 200, "{v}");
        let routes = v["tenant"]["routes"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(routes[0]["answer"], json!("verified"), "{v}");
        assert!(
            routes[1].get("answer").is_none() || routes[1]["answer"] == json!("confirmed"),
            "{v}"
        );
        let (st, v) = h
            .patch(
                &b,
                json!({"routes": [{"path": "/x", "price": "$0.01", "answer": "soon"}]}),
            )
            .await;
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("routes[0]"), "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("verified"),
            "names the choices: {v}"
        );
    }
}

/// Sets a tenant up behind the proxy: upstream, payee, one priced route.
pub async fn serve_api(h: &Hosted, key: &str, up: &Upstream, pay_to: Address) {
    let (st, v) = h
        .patch(
            key,
            json!({
                "upstream": up.url(),
                "pay_to": {"evm": pay_to.to_string()},
                "routes": [{"method": "GET", "path": "/paid/*", "price": "$0.001"}, {"path": "/free", "price": "free"}],
            }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn two_tenants_behind_one_proxy_each_paid_into_its_own_payto() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    spec.extra =
        "[plans.tiny]\nverifications = 2\nchains = [\"base\"]\n[plans.free]\nverifications = 1000\nchains = [\"base\"]";
    let h = Hosted::start(&spec).await;
    let (up_a, up_b) = (
        Upstream::start("127.0.0.1:0").await.unwrap(),
        Upstream::start("127.0.0.1:0").await.unwrap(),
    );
    let (_, a) = h.tenant("a@a.test", "free", Some("alpha")).await;
    let (b_id, b) = h.tenant("b@b.test", "tiny", Some("beta")).await;
    serve_api(&h, &a, &up_a, PAYEE_A).await;
    serve_api(&h, &b, &up_b, PAYEE_B).await;
    let base = &h.tg.url;

    // Each tenant's 402 names its own payee; by path prefix and by Host.
    let oa = offers(&format!("{base}/t/alpha/paid/x"), true).await;
    assert_eq!(oa[0].pay_to, PAYEE_A);
    let ob = offers(&format!("{base}/t/beta/paid/x"), true).await;
    assert_eq!(ob[0].pay_to, PAYEE_B);
    let r = http()
        .get(format!("{base}/paid/x"))
        .header("host", "beta.gw.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let r = http().get(format!("{base}/t/nobody/paid/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http().get(format!("{base}/t/alpha/free")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up_a.last().unwrap().path, "/free", "the prefix is not forwarded");

    // Paid: each into its own payTo, forwarded to its own upstream.
    for (slug, payee, up) in [("alpha", PAYEE_A, &up_a), ("beta", PAYEE_B, &up_b)] {
        let before = anvil.usdc_balance(payee).await;
        let url = format!("{base}/t/{slug}/paid/report");
        let (name, value) = signed_header(&url, true).await;
        let r = http().get(&url).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 200, "{slug}: {}", r.text().await.unwrap());
        assert_eq!(anvil.usdc_balance(payee).await, before + U256::from(1000u64), "{slug}");
        assert_eq!(up.last().unwrap().path, "/paid/report");
    }

    // Beta's plan allows 2 paid requests: the third is 429, not forwarded, not charged.
    let url = format!("{base}/t/beta/paid/more");
    let (name, value) = signed_header(&url, true).await;
    assert_eq!(http().get(&url).header(name, value).send().await.unwrap().status(), 200);
    let seen = up_b.count();
    let payer_before = anvil.usdc_balance(PAYER).await;
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, value).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], json!("over_quota"), "{body}");
    assert_eq!(up_b.count(), seen, "nothing forwarded");
    assert_eq!(anvil.usdc_balance(PAYER).await, payer_before, "nothing charged");
    // Junk payment headers never burn the allowance: malformed (400) and mis-signed (402).
    let r = http()
        .get(&url)
        .header("payment-signature", "bm90IGpzb24=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The payer's authorization, signed by somebody else.
    let stranger: alloy::signers::local::PrivateKeySigner = RELAYER_KEY.parse().unwrap();
    let auth = tollgate::client::authorize(&ob[0], &payer(), now()).authorization;
    let forged = tollgate::client::sign(&ob[0], &stranger, auth);
    let (name, value) = tollgate::client::payment_header(&ob[0], &forged);
    let r = http().get(&url).header(name, value).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&b), None).await;
    assert_eq!(u["verifications_used"], json!(2), "{u}");

    // Suspended: priced routes refuse at once on this gateway; nothing forwarded unpaid.
    let (st, _, _) = h
        .call(
            "POST",
            &format!("/api/v1/x402/admin/tenants/{b_id}/suspend"),
            Auth::Admin(ADMIN),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let r = http().get(format!("{base}/t/beta/paid/x")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], json!("tenant_suspended"));
}

#[tokio::test]
async fn upstreams_inside_the_operators_network_are_refused() {
    let db = Db::sqlite();
    let mut spec = HostedSpec::new(&db.url, "http://127.0.0.1:9");
    spec.allow_private = false;
    let h = Hosted::start(&spec).await;
    let (_, k) = h.tenant("s@s.test", "free", None).await;
    for (url, why) in [
        ("http://127.0.0.1:8080", "loopback"),
        ("http://localhost:8080", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.0.0.5", "private"),
        ("http://192.168.1.1:3000/api", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[::ffff:127.0.0.1]", "loopback"),
        ("http://0.0.0.0", "unicast"),
    ] {
        let (st, v) = h.patch(&k, json!({"upstream": url})).await;
        assert_eq!(st, 400, "{url}: {v}");
        error_is(&v, "INVALID_REQUEST");
        assert!(v["error"].as_str().unwrap().contains(why), "{url}: {v}");
    }
    let (st, v) = h.patch(&k, json!({"upstream": "http://user:pw@8.8.8.8"})).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = h.patch(&k, json!({"upstream": "http://8.8.8.8:8080"})).await;
    assert_eq!(st, 200, "a public address is accepted: {v}");
}

#[tokio::test]
async fn quota_is_exact_across_two_gateways_on_one_postgres() {
    let db = Db::postgres().await;
    let anvil = Anvil::start().await;
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    spec.extra = "[plans.ten]\nverifications = 10\nchains = [\"base\"]";
    let g1 = Hosted::start(&spec).await;
    // Its own relayer key (anvil's account 4): two processes sending from one key would race for nonces.
    spec.relayer_key = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
    let g2 = Hosted::start(&spec).await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (_, key) = g1.tenant("q@q.test", "ten", Some("quota")).await;
    serve_api(&g1, &key, &up, PAYEE_A).await;
    let urls = [
        format!("{}/t/quota/paid/x", g1.tg.url),
        format!("{}/t/quota/paid/x", g2.tg.url),
    ];
    // 50 distinct signed payments, sent at once, half to each gateway.
    let o = offers(&urls[0], true).await.remove(0);
    let payer = payer();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = urls[i % 2].clone();
            let (name, value) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer, now()));
            tokio::spawn(async move {
                http()
                    .get(&url)
                    .header(name, value)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let ok = codes.iter().filter(|&&c| c == 200).count();
    let over = codes.iter().filter(|&&c| c == 429).count();
    assert_eq!((ok, over), (10, 40), "{codes:?}");
    assert_eq!(up.count(), 10, "exactly the allowance forwarded");
    let (_, u, _) = g2.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(u["verifications_used"], json!(10), "{u}");
    let (_, none, _) = g1
        .call("GET", "/api/v1/x402/payments?chain=ethereum", Auth::Key(&key), None)
        .await;
    assert_eq!(none["payments"].as_array().unwrap().len(), 0, "{none}");
    // last_used_at is written (in the background, at most once a minute), not left empty.
    eventually("last_used_at to be written", || async {
        let (_, k, _) = g1.call("GET", "/api/v1/x402/keys", Auth::Key(&key), None).await;
        k["keys"][0]["last_used_at"].is_string()
    })
    .await;
    let (_, p, _) = g1
        .call(
            "GET",
            "/api/v1/x402/payments?limit=100&chain=base",
            Auth::Key(&key),
            None,
        )
        .await;
    let settled = p["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == json!("settled"))
        .count();
    assert_eq!(settled, 10, "{p}");
    // A price changed through one gateway reaches the other within hosted.tenant_cache_secs (2 s).
    let (st, v) = g1
        .patch(
            &key,
            json!({"routes": [{"method": "GET", "path": "/paid/*", "price": "$0.002"}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let changed = std::time::Instant::now();
    eventually("the new price to reach the other gateway", || async {
        offers(&urls[1], true).await[0].amount == U256::from(2000u64)
    })
    .await;
    assert!(changed.elapsed() < Duration::from_secs(4), "{:?}", changed.elapsed());
    // A key revoked through one gateway stops on the other within hosted.key_cache_secs (2 s here).
    let (_, nk, _) = g1
        .call(
            "POST",
            "/api/v1/x402/keys",
            Auth::Key(&key),
            Some(json!({"name": "temp"})),
        )
        .await;
    let temp = nk["api_key"].as_str().unwrap().to_string();
    let (st, _, _) = g2.call("GET", "/api/v1/x402/usage", Auth::Key(&temp), None).await;
    assert_eq!(st, 200);
    let id = nk["key"]["id"].as_str().unwrap();
    let (st, _, _) = g1
        .call("DELETE", &format!("/api/v1/x402/keys/{id}"), Auth::Key(&key), None)
        .await;
    assert_eq!(st, 200);
    let revoked = std::time::Instant::now();
    eventually("the revocation to reach the other gateway", || async {
        g2.call("GET", "/api/v1/x402/usage", Auth::Key(&temp), None).await.0 == 401
    })
    .await;
    assert!(revoked.elapsed() < Duration::from_secs(4), "{:?}", revoked.elapsed());
    eventually("ten payments on chain", || async {
        anvil.usdc_balance(PAYEE_A).await == U256::from(10_000u64)
    })
    .await;
}

#[tokio::test]
async fn the_operators_cli_manages_tenants_and_keys_on_the_database() {
    let db = Db::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hosted.toml");
    std::fs::write(
        &cfg,
        format!(
            "database = \"{}\"\n[hosted]\npath_prefix = true\n[networks.base]\nrpc_url = \"http://127.0.0.1:9\"\n",
            db.url
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.extend(["--config".as_ref(), cfg.as_os_str()]);
        tollgate_cmd(&all)
    };
    let (ok, out) = run(&[
        "tenant",
        "create",
        "--email",
        "cli@acme.test",
        "--tier",
        "starter",
        "--slug",
        "cli",
    ]);
    assert!(ok, "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("tn_"), "{out}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key (shown once): "))
        .unwrap()
        .to_string();
    assert!(key.starts_with("x402_live_"));
    let (ok, out) = run(&["tenant", "create", "--email", "x@y.z", "--tier", "platinum"]);
    assert!(!ok && out.contains("tier: 'platinum' is not one of"), "{out}");
    let (ok, out) = run(&["tenant", "set-plan", &id, "pro"]);
    assert!(ok && out.contains(" pro "), "{out}");
    let (ok, out) = run(&["key", "create", &id, "--name", "ci", "--scope", "verify"]);
    assert!(ok, "{out}");
    let second = out
        .lines()
        .find_map(|l| l.strip_prefix("api key (shown once): "))
        .unwrap()
        .to_string();
    let key_id = out.split_whitespace().next().unwrap().to_string();
    let (ok, out) = run(&["key", "list", &id]);
    assert!(ok && out.lines().count() == 2 && !out.contains(&key[10..]), "{out}");
    let (ok, out) = run(&["key", "revoke", &id, &key_id]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["tenant", "suspend", &id]);
    assert!(ok && out.contains("suspended"), "{out}");
    let (ok, out) = run(&["tenant", "resume", &id]);
    assert!(ok && out.contains("active"), "{out}");
    let (ok, out) = run(&["tenant", "list"]);
    assert!(ok && out.contains("cli@acme.test"), "{out}");

    // The gateway on the same database honours what the CLI did.
    let h = Hosted::start(&HostedSpec::new(&db.url, "http://127.0.0.1:9")).await;
    let (st, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["tier"], json!("pro"));
    assert_eq!(u["verifications_limit"], json!(500_000));
    let (st, _, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&second), None).await;
    assert_eq!(st, 401, "revoked by the CLI");
}

/// Whether `v` fits `schema` (the subset the document uses: type, required, properties, items, oneOf).
fn fits(v: &Value, schema: &Value) -> Result<(), String> {
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        return alts
            .iter()
            .find(|s| fits(v, s).is_ok())
            .map(|_| ())
            .ok_or_else(|| format!("{v} fits none of {schema}"));
    }
    let ty_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(t)) if !ty_ok(t) => return Err(format!("{v} is not {t}")),
        Some(Value::Array(ts)) if !ts.iter().any(|t| ty_ok(t.as_str().unwrap_or(""))) => {
            return Err(format!("{v} is none of {ts:?}"))
        }
        _ => {}
    }
    for k in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let k = k.as_str().unwrap();
        let field = v.get(k).ok_or_else(|| format!("missing '{k}' in {v}"))?;
        if let Some(s) = schema["properties"].get(k) {
            fits(field, s).map_err(|e| format!("{k}: {e}"))?;
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for x in arr {
            fits(x, items)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_describes_what_the_api_answers() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let (st, doc, _) = h.call("GET", "/api/v1/openapi.json", Auth::None, None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/x402/admin/create-tenant",
        "/api/v1/x402/usage",
        "/api/v1/x402/supported-chains",
        "/api/v1/x402/verify",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Request schemas come from the request types.
    let create = &paths["/api/v1/x402/admin/create-tenant"]["post"];
    let body = &create["requestBody"]["content"]["application/json"]["schema"];
    assert!(body["required"].as_array().unwrap().contains(&json!("email")), "{body}");
    assert!(body["properties"].get("tier").is_some(), "{body}");

    // Live answers fit the documented success schemas.
    let schema_of = |path: &str, method: &str, status: &str| {
        paths[path][method]["responses"][status]["content"]["application/json"]["schema"].clone()
    };
    let (st, created, _) = h
        .call(
            "POST",
            "/api/v1/x402/admin/create-tenant",
            Auth::Admin(ADMIN),
            Some(json!({"email": "d@d.test", "tier": "free"})),
        )
        .await;
    assert_eq!(st, 201);
    fits(&created, &schema_of("/api/v1/x402/admin/create-tenant", "post", "201")).unwrap();
    let key = created["api_key"].as_str().unwrap().to_string();
    h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;
    let tx = anvil.pay_usdc(PAYEE_A, 10_000).await.to_string();
    for (method, path, body, status) in [
        ("get", "/api/v1/x402/usage", None, "200"),
        ("get", "/api/v1/x402/supported-chains", None, "200"),
        (
            "post",
            "/api/v1/x402/verify",
            Some(json!({"tx_hash": tx, "chain": "base", "expected_amount": 0.01})),
            "200",
        ),
        (
            "post",
            "/api/v1/x402/verify",
            Some(json!({"tx_hash": tx, "chain": "base"})),
            "200",
        ),
        ("get", "/api/v1/x402/keys", None, "200"),
        ("get", "/api/v1/x402/tenant", None, "200"),
        ("get", "/api/v1/x402/verifications", None, "200"),
        ("get", "/api/v1/x402/payments", None, "200"),
        ("get", "/api/v1/x402/usage/breakdown", None, "200"),
    ] {
        let (st, v, _) = h.call(&method.to_uppercase(), path, Auth::Key(&key), body).await;
        assert_eq!(st.to_string(), status, "{path}: {v}");
        fits(&v, &schema_of(path, method, status)).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    }
    // Refusals fit the error schema.
    let (st, v, _) = h.call("GET", "/api/v1/x402/usage", Auth::None, None).await;
    assert_eq!(st, 401);
    fits(&v, &schema_of("/api/v1/x402/usage", "get", "401")).unwrap();
    let (st, v, _) = h.call("GET", "/api/v1/x402/nothing-here", Auth::None, None).await;
    assert_eq!(st, 404, "{v}");
}

#[tokio::test]
async fn the_facilitator_endpoints_settle_once_to_the_tenants_own_payto() {
    let db = Db::postgres().await;
    let anvil = Anvil::start().await;
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    spec.extra =
        "[plans.one]\nverifications = 1\nchains = [\"base\"]\n[plans.free]\nverifications = 1000\nchains = [\"base\"]";
    let h = Hosted::start(&spec).await;
    let (_, key) = h.tenant("f@f.test", "free", Some("fac")).await;
    h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;

    // /supported: the plan's networks in both versions, and the relayer that signs.
    let (st, sup, _) = h.call("GET", "/facilitator/supported", Auth::Key(&key), None).await;
    assert_eq!(st, 200, "{sup}");
    let kinds = sup["kinds"].as_array().unwrap();
    assert!(kinds.contains(&json!({"x402Version": 2, "scheme": "exact", "network": "eip155:8453", "extra": {"name": "USD Coin", "version": "2"}})), "{sup}");
    assert!(
        kinds
            .iter()
            .any(|k| k["x402Version"] == json!(1) && k["network"] == json!("base")),
        "{sup}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k["network"] == json!("ethereum") || k["network"] == json!("eip155:1")),
        "not on the plan: {sup}"
    );
    assert_eq!(sup["extensions"], json!(["payment-identifier", "bazaar"]));
    assert_eq!(sup["signers"], json!({"eip155:*": [RELAYER.to_string()]}));

    let body = |pay_to: Address| {
        let (offer, o) = crate::facilitator::usdc_offer(pay_to);
        let (_, header) = tollgate::client::payment_header(&o, &tollgate::client::authorize(&o, &payer(), now()));
        json!({"x402Version": 2, "paymentPayload": decode_b64_json(&header), "paymentRequirements": offer.to_v2()})
    };
    let settle = |b: Value, k: String| {
        let url = format!("{}/facilitator/settle", h.api);
        async move {
            let r = http().post(url).bearer_auth(k).json(&b).send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap())
        }
    };

    // Settled once, into the tenant's payTo; counted; in the ledger. The same payload again is a duplicate.
    let before = anvil.usdc_balance(PAYEE_A).await;
    let b = body(PAYEE_A);
    let (st, v) = settle(b.clone(), key.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], json!(true), "{v}");
    assert_eq!(v["network"], json!("eip155:8453"));
    assert_eq!(v["payer"], json!(PAYER.to_string()));
    assert!(v["transaction"].as_str().unwrap().starts_with("0x"));
    assert_eq!(anvil.usdc_balance(PAYEE_A).await, before + U256::from(10_000u64));
    let (_, v2) = settle(b.clone(), key.clone()).await;
    assert_eq!(
        (v2["success"].clone(), v2["errorReason"].clone()),
        (json!(false), json!("duplicate_settlement")),
        "{v2}"
    );
    let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(u["verifications_used"], json!(1), "{u}");
    let (_, p, _) = h.call("GET", "/api/v1/x402/payments", Auth::Key(&key), None).await;
    assert_eq!(p["payments"][0]["state"], json!("settled"), "{p}");
    assert_eq!(p["payments"][0]["route"], json!("facilitator"));

    // 100 concurrent settles of one payload: one transfer.
    let before = anvil.usdc_balance(PAYEE_A).await;
    let b = body(PAYEE_A);
    let calls: Vec<_> = (0..100).map(|_| tokio::spawn(settle(b.clone(), key.clone()))).collect();
    let mut ok = 0;
    for c in calls {
        let (st, v) = c.await.unwrap();
        assert_eq!(st, 200, "{v}");
        if v["success"] == json!(true) {
            ok += 1;
        } else {
            assert!(
                ["duplicate_settlement", "settlement_pending"].contains(&v["errorReason"].as_str().unwrap()),
                "{v}"
            );
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        anvil.usdc_balance(PAYEE_A).await,
        before + U256::from(10_000u64),
        "one transfer"
    );

    // Another payee than the tenant's own: refused, nothing moves. Wrong key: 401.
    let before = anvil.usdc_balance(PAYEE_B).await;
    let (st, v) = settle(body(PAYEE_B), key.clone()).await;
    assert_eq!(st, 200);
    assert_eq!(v["errorReason"], json!(tollgate::x402::reason::RECIPIENT), "{v}");
    assert_eq!(anvil.usdc_balance(PAYEE_B).await, before);
    let (st, _) = settle(body(PAYEE_A), "x402_live_0000000000000000000000000000000".into()).await;
    assert_eq!(st, 401);

    // Over quota: 429 with the contract's fields, nothing moves.
    let (_, one) = h.tenant("o@o.test", "one", Some("onlyone")).await;
    h.patch(&one, json!({"pay_to": {"evm": PAYEE_B.to_string()}})).await;
    let (_, v) = settle(body(PAYEE_B), one.clone()).await;
    assert_eq!(v["success"], json!(true), "{v}");
    let before = anvil.usdc_balance(PAYEE_B).await;
    let (st, v) = settle(body(PAYEE_B), one.clone()).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error_code"], json!("QUOTA_EXCEEDED"));
    assert_eq!(anvil.usdc_balance(PAYEE_B).await, before);

    // /verify in the facilitator's shape.
    let (st, v, _) = h
        .call("POST", "/facilitator/verify", Auth::Key(&key), Some(body(PAYEE_A)))
        .await;
    assert_eq!(st, 200);
    assert_eq!(v, json!({"isValid": true, "payer": PAYER.to_string()}));
}

#[tokio::test]
async fn a_stock_x402_express_server_uses_tollgate_as_its_facilitator() {
    let db = Db::sqlite();
    let anvil = Anvil::start().await;
    let h = Hosted::start(&HostedSpec::new(&db.url, &anvil.url)).await;
    let (_, key) = h.tenant("e@e.test", "free", Some("express")).await;
    h.patch(&key, json!({"pay_to": {"evm": PAYEE_A.to_string()}})).await;

    // The official @x402/express middleware, its facilitator client pointed at tollgate with the key.
    let server = crate::facilitator::ExpressServer::start(&format!("{}/facilitator", h.api), &key, PAYEE_A).await;
    let before = anvil.usdc_balance(PAYEE_A).await;
    // Paid by the official @x402/fetch client.
    let out = crate::interop::node("pay-v2.mjs", &server.url).await;
    drop(server);
    assert_eq!(out["status"], json!(200), "{out}");
    assert_eq!(out["paymentResponse"]["success"], json!(true), "{out}");
    assert_eq!(
        anvil.usdc_balance(PAYEE_A).await,
        before + U256::from(1000u64),
        "the payee got paid"
    );
    let (_, u, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    // One payment, counted once (the middleware's verify is not counted, its settle is).
    assert_eq!(u["verifications_used"], json!(1), "{u}");
    let (_, p, _) = h.call("GET", "/api/v1/x402/payments", Auth::Key(&key), None).await;
    assert_eq!(p["payments"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["payments"][0]["state"], json!("settled"));
    assert_eq!(
        p["payments"][0]["tx_hash"], out["paymentResponse"]["transaction"],
        "the ledger holds the transaction the server was told"
    );
}
