//! The connection front (src/front.rs) on raw TCP: it answers unpaid 402s itself and hands every
//! other request to the pingora proxy on the same connection, byte for byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header names (lower case) and values, without the per-response Date and Connection.
    fn stable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<_> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| k != "date" && k != "connection")
            .collect();
        h.sort();
        h
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A raw HTTP/1.1 connection that reads Content-Length-delimited responses.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(s: &Setup) -> Conn {
        Conn {
            sock: TcpStream::connect(("127.0.0.1", s.tg.port)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.sock.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn response(&mut self) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("tollgate's answers carry Content-Length");
                while self.buf.len() < n + len {
                    assert!(self.fill().await, "connection closed mid-body");
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Response { status, headers, body };
            }
            assert!(self.fill().await, "connection closed before a response");
        }
    }

    /// True when the server closed the connection (and sent nothing more).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}\r\n")
}

#[tokio::test]
async fn pipelined_unpaid_requests_each_get_their_own_402() {
    let s = setup().await;
    let mut c = Conn::open(&s).await;
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
    let mut c = Conn::open(&s).await;

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
    let mut c = Conn::open(&s).await;
    c.send(get("/paid/same?q=1", extra).as_bytes()).await;
    let front = c.response().await;

    // `Connection: close` is the proxy's (the front only keeps connections alive).
    let mut c2 = Conn::open(&s).await;
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
    let mut c = Conn::open(&s).await;
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
    let mut c = Conn::open(&s).await;
    c.send(b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(c.response().await.status, 400);

    // HTTP/1.0 and HEAD still get their 402 (from the proxy); HEAD without a body.
    let mut c = Conn::open(&s).await;
    c.send(b"GET /paid/old HTTP/1.0\r\nHost: api.test\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 402);
    assert_eq!(r.json()["accepts"][0]["resource"], "http://api.test/paid/old");

    let mut c = Conn::open(&s).await;
    c.send(b"HEAD /paid/h HTTP/1.1\r\nHost: api.test\r\n\r\n").await;
    c.fill().await;
    let head = String::from_utf8_lossy(&c.buf).to_string();
    assert!(head.starts_with("HTTP/1.1 402"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

    // A head longer than the front reads (8 KiB) is the proxy's to judge.
    let mut c = Conn::open(&s).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    c.send(get("/paid/big", &big).as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 402);
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_request_is_not_logged_as_an_error() {
    let s = setup().await;
    let mut c = Conn::open(&s).await;
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
