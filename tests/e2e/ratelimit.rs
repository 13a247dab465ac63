//! Rate limits: per client IP (in the front's 402 path and in the proxy), per payer (nothing
//! claimed or charged past it), per API key on a hosted plan, and shared across two gateways
//! through the machine's Redis.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::hosted::{Auth, Hosted, HostedSpec};
use crate::upstream::Upstream;

/// A 429 from a rate limit: its headers and body, checked against `limit` per minute.
async fn assert_limited(r: reqwest::Response, scope: &str, limit: u32) {
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    let get = |n: &str| {
        h.get(n)
            .unwrap_or_else(|| panic!("{n} missing: {h:?}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let retry: u64 = get("retry-after").parse().unwrap();
    let reset: u64 = get("ratelimit-reset").parse().unwrap();
    // One token every 60/limit s: the next within that, the whole bucket within a minute.
    assert!(retry >= 1 && retry <= 60 / limit as u64 + 1, "retry-after {retry}");
    assert!(reset >= retry && reset <= 60, "reset {reset}");
    assert_eq!(get("ratelimit-limit"), limit.to_string());
    assert_eq!(get("ratelimit-remaining"), "0");
    assert_eq!(get("ratelimit-policy"), format!("{limit};w=60"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited", "{v}");
    assert_eq!(v["scope"], scope, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("more than {limit} requests")),
        "{v}"
    );
}

#[tokio::test]
async fn per_ip_limit_answers_429_with_its_headers_in_the_front_and_the_proxy() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\n[rate_limits]\nper_ip = \"4/min\"\n");
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    let c = http();
    // Two 402s (answered by the front) and two free requests (by the proxy) use the bucket up.
    for path in ["/paid/x", "/paid/y"] {
        assert_eq!(c.get(format!("{}{path}", tg.url)).send().await.unwrap().status(), 402);
    }
    for _ in 0..2 {
        assert_eq!(c.get(format!("{}/hello", tg.url)).send().await.unwrap().status(), 200);
    }
    let before = up.count();
    // Then both paths refuse, on the same keep-alive connection and on a new one.
    assert_limited(c.get(format!("{}/paid/x", tg.url)).send().await.unwrap(), "ip", 4).await;
    assert_limited(c.get(format!("{}/hello", tg.url)).send().await.unwrap(), "ip", 4).await;
    assert_limited(http().get(format!("{}/hello", tg.url)).send().await.unwrap(), "ip", 4).await;
    assert_eq!(up.count(), before, "nothing forwarded past the limit");
    let metrics = metrics_text(mport).await;
    assert!(
        metrics.contains("tollgate_rate_limited_total{scope=\"ip\"} 3"),
        "{metrics}"
    );
    let limited: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{") && l.contains("outcome=\"rate_limited\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(limited, 3.0, "{metrics}");
}

#[tokio::test]
async fn per_payer_limit_refuses_before_anything_is_claimed_or_charged() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = "[rate_limits]\nper_payer = \"2/min\"\n";
    let tg = Tollgate::start(&spec).await;
    let c = http();
    let url = format!("{}/paid/x", tg.url);
    let start = anvil.usdc_balance(PAYEE).await;
    for _ in 0..2 {
        let (name, value) = signed_header(&url, true).await;
        let r = c.get(&url).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", tg.log());
    }
    // A third payment from the same payer (a new authorization) within the minute: 429.
    let (name, value) = signed_header(&url, true).await;
    assert_limited(c.get(&url).header(name, &value).send().await.unwrap(), "payer", 2).await;
    // Unpaid requests are not the payer's: still 402.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 402);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        anvil.usdc_balance(PAYEE).await - start,
        alloy::primitives::U256::from(2_000u64),
        "two payments of $0.001 settled, the refused one not"
    );
    assert_eq!(up.all().iter().filter(|s| s.path == "/paid/x").count(), 2);
}

/// A gateway whose IP buckets live in Redis under `prefix` (or, with `redis` pointing nowhere,
/// whose Redis is down).
async fn shared(anvil: &Anvil, up: &Upstream, db: &Db, redis: &str, prefix: &str) -> Tollgate {
    let top = format!(
        "[rate_limits]\nper_ip = \"5/min\"\nshared = true\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n"
    );
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    Tollgate::start(&spec).await
}

#[tokio::test]
async fn shared_limits_hold_across_two_gateways_through_redis() {
    let anvil = Anvil::start().await;
    let (db_a, db_b) = (Db::sqlite(), Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let prefix = format!("tollgate-test-{}", rand::random::<u64>());
    let a = shared(&anvil, &up, &db_a, "redis://127.0.0.1:6379", &prefix).await;
    let b = shared(&anvil, &up, &db_b, "redis://127.0.0.1:6379", &prefix).await;
    let c = http();
    // Five requests between them (unpaid 402s and free ones, on both): all pass.
    for (tg, path, want) in [
        (&a, "/paid/x", 402),
        (&b, "/paid/x", 402),
        (&a, "/hello", 200),
        (&b, "/hello", 200),
        (&b, "/paid/y", 402),
    ] {
        let r = c.get(format!("{}{path}", tg.url)).send().await.unwrap();
        assert_eq!(r.status(), want, "{path}: {}", a.log());
    }
    // The sixth, on either, is over the one shared bucket.
    assert_limited(c.get(format!("{}/paid/x", a.url)).send().await.unwrap(), "ip", 5).await;
    assert_limited(c.get(format!("{}/hello", b.url)).send().await.unwrap(), "ip", 5).await;
}

#[tokio::test]
async fn with_redis_down_each_gateway_limits_on_its_own() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let tg = shared(&anvil, &up, &db, &nowhere, "tollgate").await;
    let c = http();
    for _ in 0..5 {
        assert_eq!(c.get(format!("{}/hello", tg.url)).send().await.unwrap().status(), 200);
    }
    assert_limited(c.get(format!("{}/hello", tg.url)).send().await.unwrap(), "ip", 5).await;
    assert!(
        tg.log()
            .contains("Redis did not answer; counting in this gateway alone"),
        "{}",
        tg.log()
    );
}

#[tokio::test]
async fn a_plans_per_key_limit_refuses_api_calls_with_its_headers() {
    let anvil = Anvil::start().await;
    let db = Db::sqlite();
    let mut spec = HostedSpec::new(&db.url, &anvil.url);
    let mport = free_port();
    let extra = format!(
        "[metrics]\nlisten = \"127.0.0.1:{mport}\"\n{}",
        r#"
[plans.free]
verifications = 100
chains = ["base"]
rate_limits = { per_key = "3/min" }

[plans.pro]
verifications = 1000
chains = ["*"]
"#
    );
    spec.extra = &extra;
    let h = Hosted::start(&spec).await;
    let (_, key) = h.tenant("rl@example.com", "free", None).await;
    let (_, pro_key) = h.tenant("rl-pro@example.com", "pro", None).await;
    for _ in 0..3 {
        let (st, v, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v, headers) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&key), None).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error_code"], "RATE_LIMITED", "{v}");
    assert_eq!(v["scope"], "key", "{v}");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(headers["ratelimit-limit"], "3");
    assert_eq!(headers["ratelimit-remaining"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=21).contains(&retry), "{retry}");
    // Another plan (no limit) is not affected.
    for _ in 0..5 {
        let (st, _, _) = h.call("GET", "/api/v1/x402/usage", Auth::Key(&pro_key), None).await;
        assert_eq!(st, 200);
    }
    // Each key was looked up in the database once, then found in the cache: 2 misses, 7 hits.
    let metrics = metrics_text(mport).await;
    assert!(
        metrics.contains("tollgate_cache_requests_total{cache=\"keys\",result=\"miss\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_cache_requests_total{cache=\"keys\",result=\"hit\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_rate_limited_total{scope=\"key\"} 1"),
        "{metrics}"
    );
}
