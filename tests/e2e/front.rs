//! The connection front (src/front.rs) on raw TCP: it answers unpaid 402s itself and hands every
//! other request to the pingora proxy on the same connection, byte for byte.

use std::time::Duration;

use crate::common::*;
use crate::upstream::Upstream;

struct Setup {
    up: Upstream,
    tg: Tollgate,
    _db: Db,
}

/// No chain is needed for challenges: the RPC URL points nowhere.
async fn setup() -> Setup {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let spec = GatewaySpec::new(up.url(), "http://127.0.0.1:9".into(), &db.url);
    let tg = Tollgate::start(&spec).await;
    Setup { up, tg, _db: db }
}

#[tokio::test]
async fn pipelined_unpaid_requests_each_get_their_own_402() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    let three = format!("{}{}{}", get("/paid/a", ""), get("/paid/b", ""), get("/paid/c", ""));
    c.send(three.as_bytes()).await;
    for p in ["a", "b", "c"] {
        let r = c.response().await;
        assert_eq!(r.status, 402);
        assert_eq!(r.json()["accepts"][0]["resource"], format!("http://api.test/paid/{p}"));
        assert_eq!(r.header("connection"), Some("keep-alive"));
        let v2 = decode_b64_json(r.header("payment-required").unwrap());
        assert_eq!(v2["resource"]["url"], format!("http://api.test/paid/{p}"));
    }
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn one_connection_moves_between_the_front_and_the_proxy() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;

    c.send(get("/paid/1", "").as_bytes()).await;
    assert_eq!(c.response().await.status, 402);

    // Free: the proxy forwards it.
    c.send(get("/free/2", "").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/free/2");

    // Back to the front.
    c.send(get("/paid/3", "").as_bytes()).await;
    assert_eq!(c.response().await.status, 402);

    // A request with a body is the proxy's, body and all, even pipelined behind a 402.
    let post = "POST /free/4 HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello";
    c.send(format!("{}{post}{}", get("/paid/5", ""), get("/paid/6", "")).as_bytes())
        .await;
    assert_eq!(c.response().await.status, 402);
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/free/4");
    assert_eq!(s.up.last().unwrap().method, "POST");
    assert_eq!(c.response().await.status, 402);

    // A payment header goes to the proxy, which judges it (this one is not base64).
    c.send(get("/paid/7", "X-PAYMENT: %%%\r\n").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_payment_header");

    c.send(get("/paid/8", "").as_bytes()).await;
    assert_eq!(c.response().await.status, 402);
    assert_eq!(s.up.count(), 2, "only the two free requests reached the upstream");
}

#[tokio::test]
async fn the_front_and_the_proxy_answer_the_same_402() {
    let s = setup().await;
    let extra = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example.com\r\nOrigin: https://app.example\r\n";
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/paid/same?q=1", extra).as_bytes()).await;
    let front = c.response().await;

    // `Connection: close` is the proxy's (the front only keeps connections alive).
    let mut c2 = Conn::open(s.tg.port).await;
    c2.send(get("/paid/same?q=1", &format!("{extra}Connection: close\r\n")).as_bytes())
        .await;
    let proxy = c2.response().await;
    assert_eq!(
        proxy.header("connection").map(str::to_ascii_lowercase).as_deref(),
        Some("close")
    );
    assert!(c2.closed().await);

    assert_eq!(front.status, 402);
    assert_eq!(proxy.status, 402);
    assert_eq!(front.body, proxy.body);
    assert_eq!(front.stable_headers(), proxy.stable_headers());
    assert_eq!(
        front.json()["accepts"][0]["resource"],
        "https://api.example.com/paid/same"
    );
    assert!(front.header("date").is_some());
}

#[tokio::test]
async fn a_head_split_across_writes_is_answered_once_whole() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    let req = get("/paid/slow", "Accept: */*\r\n");
    let (a, rest) = req.as_bytes().split_at(7);
    let (b, d) = rest.split_at(20);
    for part in [a, b, d] {
        c.send(part).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let r = c.response().await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["accepts"][0]["resource"], "http://api.test/paid/slow");
}

#[tokio::test]
async fn unusual_requests_are_left_to_the_proxy() {
    let s = setup().await;

    // Not HTTP: pingora's 400, and the connection closes.
    let mut c = Conn::open(s.tg.port).await;
    c.send(b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(c.response().await.status, 400);

    // HTTP/1.0 and HEAD still get their 402 (from the proxy); HEAD without a body.
    let mut c = Conn::open(s.tg.port).await;
    c.send(b"GET /paid/old HTTP/1.0\r\nHost: api.test\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["accepts"][0]["resource"], "http://api.test/paid/old");

    let mut c = Conn::open(s.tg.port).await;
    c.send(b"HEAD /paid/h HTTP/1.1\r\nHost: api.test\r\n\r\n").await;
    c.fill().await;
    let head = String::from_utf8_lossy(&c.buf).to_string();
    assert!(head.starts_with("HTTP/1.1 402"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

    // A head longer than the front reads (8 KiB) is the proxy's to judge.
    let mut c = Conn::open(s.tg.port).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    c.send(get("/paid/big", &big).as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 402);
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_request_is_not_logged_as_an_error() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/free/slow/400", "").as_bytes()).await;
    // Gone before the upstream answers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);
    eventually("the upstream to see the request", || async { s.up.count() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let log = s.tg.log();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(log.contains("client went away"), "still visible at debug: {log}");
}

// ---------------------------------------------------------------------------------------------
// Bounded resources: what one client can hold.

async fn setup_limits(limits: &str) -> Setup {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), "http://127.0.0.1:9".into(), &db.url);
    let routes = format!("{}\n[limits]\n{limits}", spec.routes);
    spec.routes = routes;
    let tg = Tollgate::start(&spec).await;
    Setup { up, tg, _db: db }
}

#[tokio::test]
async fn a_request_head_must_arrive_whole_and_in_time() {
    let s = setup_limits("head_timeout_secs = 1\nmax_head_bytes = 4096").await;
    // Slow-loris: a byte now and then never completes a head; answered 408 and closed.
    let mut c = Conn::open(s.tg.port).await;
    let started = std::time::Instant::now();
    for b in b"GET " {
        c.send(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.response().await;
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(c.closed().await);
    // Too large: 431 and closed, whatever route it is for.
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/free/x", &format!("X-Big: {}\r\n", "a".repeat(5000))).as_bytes())
        .await;
    assert_eq!(c.response().await.status, 431);
    assert!(c.closed().await);
    // An idle connection (no request started) is not a slow head: it waits for its request.
    let mut c = Conn::open(s.tg.port).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.send(get("/paid/x", "").as_bytes()).await;
    assert_eq!(c.response().await.status, 402);
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_the_rest_keep_working() {
    let s = setup_limits("max_connections = 8").await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = Conn::open(s.tg.port).await;
        c.send(get("/paid/x", "").as_bytes()).await;
        assert_eq!(c.response().await.status, 402);
        held.push(c);
    }
    let mut extra = Conn::open(s.tg.port).await;
    let r = extra.response().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "too_many_connections");
    assert!(extra.closed().await);
    // Those held still work, and a closed one frees its place.
    held[0].send(get("/free/ok", "").as_bytes()).await;
    assert_eq!(held[0].response().await.status, 200);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = Conn::open(s.tg.port).await;
    again.send(get("/paid/x", "").as_bytes()).await;
    assert_eq!(again.response().await.status, 402);
}

#[tokio::test]
async fn client_chosen_hosts_and_paths_do_not_grow_memory() {
    let s = setup().await;
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.tg.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap();
        kb / 1024
    };
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/paid/warm", "").as_bytes()).await;
    c.response().await;
    let before = rss();
    // 2,000 distinct 402s with 12 KB forwarding hosts and 12 KB paths (each would be cached
    // under its own key): 48 MB of keys if kept.
    for i in 0..2000 {
        let host = format!("X-Forwarded-Host: {}{i}\r\n", "h".repeat(12_000));
        c.send(get(&format!("/paid/{}{i}", "p".repeat(12_000)), &host).as_bytes())
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 402);
        if i == 0 {
            // Not a host name: ignored, the Host header names the resource.
            assert!(r.json()["accepts"][0]["resource"]
                .as_str()
                .unwrap()
                .starts_with("http://api.test/paid/"));
        }
    }
    let after = rss();
    assert!(
        after < before + 24,
        "resident memory grew from {before} MB to {after} MB"
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_whatever_is_proxied_before_them() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    // A request pipelined while the one before it is being proxied (the upstream takes 300 ms).
    c.send(get("/free/slow/300", "").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(format!("{}{}", get("/paid/after-slow", ""), get("/free/third", "")).as_bytes())
        .await;
    let r = c.response().await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/free/slow/300")));
    assert_eq!(c.response().await.status, 402);
    let r = c.response().await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/free/third")));

    // Behind a body longer than any first read: 200 KB, then a 402 and a free request.
    let body = "b".repeat(200_000);
    let post = format!(
        "POST /free/upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(format!("{post}{}{}", get("/paid/behind", ""), get("/free/last", "")).as_bytes())
        .await;
    let r = c.response().await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/free/upload")));
    assert_eq!(
        s.up.all().iter().find(|r| r.path == "/free/upload").unwrap().body.len(),
        200_000
    );
    assert_eq!(c.response().await.status, 402);
    let r = c.response().await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/free/last")));
}

#[tokio::test]
async fn malformed_framing_gets_a_400_not_silence_or_an_error_log() {
    let s = setup().await;
    for raw in [
        "POST /free/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_string(),
        "GET /free/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Host\r\n\r\n".to_string(),
        "POST /free/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_string(),
    ] {
        let mut c = Conn::open(s.tg.port).await;
        c.send(raw.as_bytes()).await;
        let r = c.response().await;
        assert_eq!(r.status, 400, "{raw:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.tg.log();
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn at_the_open_file_limit_the_gateway_refuses_connections_and_keeps_working() {
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), "http://127.0.0.1:9".into(), &db.url);
    spec.nofile = Some(160);
    let tg = Tollgate::start(&spec).await;
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", tg.pid())).unwrap().count();
    let baseline = fds();

    // A flood of requests whose clients go away before the (slow) upstream answers.
    for _ in 0..300 {
        let mut c = Conn::open(tg.port).await;
        c.try_send(get("/free/slow/200", "").as_bytes()).await;
    }
    // Many connections held open at once: more than the limit allows.
    let mut held = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..150 {
        let mut c = Conn::open(tg.port).await;
        // Refused: a 503, or (past the few refusals that linger) a connection closed at once.
        if !c.try_send(get("/paid/x", "").as_bytes()).await {
            refused += 1;
            continue;
        }
        match c.try_response().await.map(|r| r.status) {
            Some(402) => {
                served += 1;
                held.push(c);
            }
            Some(503) | None => refused += 1,
            Some(s) => panic!("unexpected {s}"),
        }
    }
    assert!(served >= 32 && refused > 0, "served {served}, refused {refused}");
    assert!(fds() < 160, "descriptors stay below the limit: {}", fds());
    // Still working for those it holds, and for new ones once some close.
    held[0].send(get("/free/ok", "").as_bytes()).await;
    assert_eq!(held[0].response().await.status, 200);
    drop(held);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = Conn::open(tg.port).await;
    c.send(get("/free/after", "").as_bytes()).await;
    assert_eq!(c.response().await.status, 200);
    // What the aborted requests and the closed connections held is given back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fds() < baseline + 40,
        "descriptors leak: {baseline} at start, {} now",
        fds()
    );
    assert!(!tg.log().contains("accept failed"), "{}", tg.log());
}
