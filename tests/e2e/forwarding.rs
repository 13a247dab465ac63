//! The front's own forwarding path (src/forward.rs) for plain bodiless requests to free routes,
//! checked against pingora's path for the same requests: what the upstream gets, what the client
//! gets for every framing an upstream may use, keep-alive reuse, and upstream faults.
//!
//! The same request goes through pingora when it carries more headers than the front reads
//! ([`via_proxy`]: filler headers past its 48), so each case is sent both ways and compared.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// One request as the scripted upstream saw it: its raw head and the connection it came on.
#[derive(Debug, Clone)]
struct Got {
    head: String,
    conn: usize,
}

/// An upstream that answers each path with the bytes a test scripts for it (`/say/{name}`), and
/// records each request head it read. After a `/quiet-close` answer it closes the connection
/// without saying so (as an upstream's keep-alive timeout does).
#[derive(Clone)]
struct Scripted {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

/// The answers, by name: each as an upstream may frame it.
fn script(name: &str) -> &'static [u8] {
    match name {
        "length" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-up: 1\r\ncontent-length: 5\r\n\r\nhello",
        "chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: 2\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n",
        "length-and-chunked" => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        }
        "close-delimited" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil the close",
        "http10" => b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nold!",
        "no-content" => b"HTTP/1.1 204 No Content\r\nx-up: 3\r\n\r\n",
        "not-modified" => b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
        "informational" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "same-lengths" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
        "conflicting-lengths" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        "bad-length" => b"HTTP/1.1 200 OK\r\ncontent-length: 3x\r\n\r\nabc",
        "garbage" => b"this is not http\r\n\r\n",
        "switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        "upstream-status" => b"HTTP/1.1 503 Busy\r\ncontent-length: 4\r\nretry-after: 9\r\n\r\nbusy",
        "hop-headers" => {
            b"HTTP/1.1 200 OK\r\nkeep-alive: timeout=5\r\nconnection: keep-alive\r\ndate: Mon, 01 Jan 1990 00:00:00 GMT\r\ncontent-length: 2\r\n\r\nok"
        }
        // An answer followed by bytes no request asked for: they must never reach a client.
        "extra" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
        "quiet-close" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ndefault",
    }
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Scripted {
            addr: listener.local_addr().unwrap(),
            got: Default::default(),
        };
        let got = up.got.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((sock, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(Self::serve(sock, got.clone(), n));
            }
        });
        up
    }

    async fn serve(mut sock: TcpStream, got: Arc<Mutex<Vec<Got>>>, conn: usize) {
        let mut buf = Vec::new();
        loop {
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            got.lock().unwrap().push(Got { head, conn });
            let name = path.rsplit('/').next().unwrap_or("");
            let _ = sock.write_all(script(name)).await;
            if matches!(
                name,
                "close-delimited" | "http10" | "quiet-close" | "garbage" | "switch"
            ) {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn last(&self) -> Got {
        self.all().pop().expect("a request reached the upstream")
    }
}

/// A client's view of one answer: status, headers (lower-case names, without Date and
/// Connection, sorted), the body decoded, whether it came chunked, and its Connection header.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    connection: Option<String>,
}

/// Reads one answer from `c`: Content-Length or chunked (decoded here, strictly), or a body that
/// ends with the connection.
async fn answer(c: &mut Conn) -> Seen {
    let (status, headers, n) = loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        if let httparse::Status::Complete(n) = r.parse(&c.buf).unwrap() {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (r.code.unwrap(), headers, n);
        }
        assert!(c.fill().await, "closed before an answer");
    };
    c.buf.drain(..n);
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if (100..200).contains(&status) || status == 204 || status == 304 {
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = c.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(c.fill().await, "closed mid-chunk");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&c.buf[..line_end]).unwrap(), 16).unwrap();
            c.buf.drain(..line_end + 2);
            while c.buf.len() < size + 2 {
                assert!(c.fill().await, "closed mid-chunk");
            }
            assert_eq!(&c.buf[size..size + 2], b"\r\n", "chunk data ends with CRLF");
            body.extend_from_slice(&c.buf[..size]);
            c.buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        while c.buf.len() < len {
            assert!(c.fill().await, "closed mid-body");
        }
        body = c.buf.drain(..len).collect();
    } else {
        while c.fill().await {}
        body = std::mem::take(&mut c.buf);
    }
    let connection = get("connection");
    let mut headers: Vec<_> = headers
        .into_iter()
        .filter(|(k, _)| k != "date" && k != "connection")
        .collect();
    headers.sort();
    Seen {
        status,
        headers,
        body,
        chunked,
        connection,
    }
}

/// Headers that make a request the proxy's, and nothing else: far past the 48 the front reads
/// (`front::MAX_HEADERS`, so that raising it a little cannot quietly make these comparisons
/// front-against-front), within pingora's 256.
fn via_proxy() -> String {
    (0..200).map(|i| format!("x-fill-{i}: 1\r\n")).collect()
}

/// An upstream request head as comparable lines: the request line, then the headers (lower-case
/// names) sorted, without the fillers.
fn comparable(head: &str) -> Vec<String> {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap().to_string();
    let mut rest: Vec<String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            format!("{}: {}", k.to_ascii_lowercase(), v.trim())
        })
        .filter(|l| !l.starts_with("x-fill-"))
        .collect();
    rest.sort();
    let mut all = vec![first];
    all.extend(rest);
    all
}

struct Setup {
    up: Scripted,
    tg: Tollgate,
    /// The metrics listener's port.
    mport: u16,
    _db: Db,
}

async fn setup() -> Setup {
    let up = Scripted::start().await;
    let db = Db::sqlite();
    let mut spec = GatewaySpec::new(up.url(), "http://127.0.0.1:9".into(), &db.url);
    spec.routes = format!("{}\n[request]\nunderscores_in_headers = true\n", spec.routes);
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    Setup { up, tg, mport, _db: db }
}

#[tokio::test]
async fn free_requests_reach_the_upstream_as_the_proxy_sends_them() {
    let s = setup().await;
    let cases = [
        ("/free/plain", ""),
        ("/free//a/./b/../c?q=1", ""),
        ("/%66ree/x", ""),
        (
            "/free/h",
            "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Host: shop.example\r\n",
        ),
        ("/free/h", "X-Forwarded-Proto: https\r\nAccept: */*\r\nUser-Agent: t\r\n"),
        (
            "/free/h",
            "Keep-Alive: 300\r\nProxy-Connection: x\r\nProxy-Authorization: secret\r\nTE: trailers\r\nTrailer: x\r\nHTTP2-Settings: x\r\nConnection: keep-alive\r\n",
        ),
        (
            "/free/h",
            "X-Tollgate-Payer: 0xdead\r\nX-Tollgate-Tx: 0x1\r\nX-Tollgate-Network: n\r\nX_Tollgate_Payer: 0xbeef\r\nX_Custom: 1\r\n",
        ),
        ("/free/h", "Content-Length: 0\r\n"),
        ("/nowhere/at/all", ""),
    ];
    for (target, extra) in cases {
        let mut c = Conn::open(s.tg.port).await;
        c.send(get(target, extra).as_bytes()).await;
        let front = answer(&mut c).await;
        let front_head = s.up.last().head;
        c.send(get(target, &format!("{extra}{}", via_proxy())).as_bytes()).await;
        let proxy = answer(&mut c).await;
        let proxy_head = s.up.last().head;
        assert_eq!(front, proxy, "{target} {extra:?}");
        assert_eq!(comparable(&front_head), comparable(&proxy_head), "{target} {extra:?}");
    }
    // And what that is, spelled out for the header case.
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/free/h", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nKeep-Alive: 300\r\nProxy-Authorization: secret\r\nX-Tollgate-Payer: 0xdead\r\nX_Tollgate_Payer: 0xbeef\r\nX_Custom: 1\r\n").as_bytes())
        .await;
    assert_eq!(answer(&mut c).await.status, 200);
    let head = comparable(&s.up.last().head);
    let has = |l: &str| head.iter().any(|h| h == l);
    let named = |n: &str| head.iter().any(|h| h.starts_with(&format!("{n}:")));
    assert_eq!(head[0], "GET /free/h HTTP/1.1");
    assert!(has(&format!("host: {}", s.up.addr)), "{head:?}");
    assert!(has("x-forwarded-host: api.test"), "{head:?}");
    assert!(has("x-forwarded-proto: http"), "{head:?}");
    assert!(has("x-forwarded-for: 1.2.3.4, 127.0.0.1"), "{head:?}");
    assert!(has("x_custom: 1"), "{head:?}");
    for gone in [
        "keep-alive",
        "proxy-authorization",
        "x-tollgate-payer",
        "x_tollgate_payer",
        "connection",
    ] {
        assert!(!named(gone), "{gone} forwarded: {head:?}");
    }
    assert_eq!(head.iter().filter(|h| h.starts_with("host:")).count(), 1);
}

#[tokio::test]
async fn heads_pingora_refuses_are_not_forwarded_by_the_front() {
    let s = setup().await;
    for head in [
        "GET /free/x HTTP/1.1\r\nHost: user@api.test\r\n\r\n",
        "GET /free/x HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n",
    ] {
        let mut c = Conn::open(s.tg.port).await;
        c.send(head.as_bytes()).await;
        assert_eq!(answer(&mut c).await.status, 400, "{head:?}");
    }
    assert!(s.up.all().is_empty(), "{:?}", s.up.all());
}

#[tokio::test]
async fn answers_are_framed_as_the_proxy_frames_them() {
    let s = setup().await;
    for name in [
        "length",
        "chunked",
        "length-and-chunked",
        "close-delimited",
        "http10",
        "no-content",
        "not-modified",
        "informational",
        "same-lengths",
        "upstream-status",
        "hop-headers",
    ] {
        let path = format!("/free/say/{name}");
        let mut c = Conn::open(s.tg.port).await;
        c.send(get(&path, "").as_bytes()).await;
        let mut front = answer(&mut c).await;
        if name == "informational" {
            assert_eq!(front.status, 103);
            assert_eq!(front.headers, vec![("link".to_string(), "</a.css>".to_string())]);
            front = answer(&mut c).await;
        }
        // The connection goes on after each: the next request on it is answered.
        c.send(get("/free/say/length", "").as_bytes()).await;
        assert_eq!(answer(&mut c).await.body, b"hello", "{name}: the connection goes on");

        let mut c = Conn::open(s.tg.port).await;
        c.send(get(&path, &via_proxy()).as_bytes()).await;
        let mut proxy = answer(&mut c).await;
        if proxy.status == 103 {
            proxy = answer(&mut c).await;
        }
        assert_eq!(front, proxy, "{name}");
        assert_eq!(front.connection.as_deref(), Some("keep-alive"), "{name}");
    }
    // What those are, spelled out where they change the upstream's framing.
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/free/say/chunked", "").as_bytes()).await;
    let a = answer(&mut c).await;
    assert!(a.chunked);
    assert_eq!(a.body, b"hello, world");
    assert!(!a.headers.iter().any(|(k, _)| k == "x-trailer"), "{:?}", a.headers);
    c.send(get("/free/say/length-and-chunked", "").as_bytes()).await;
    let a = answer(&mut c).await;
    assert!(a.chunked && a.body == b"abc" && !a.headers.iter().any(|(k, _)| k == "content-length"));
    c.send(get("/free/say/close-delimited", "").as_bytes()).await;
    let a = answer(&mut c).await;
    assert!(a.chunked);
    assert_eq!(a.body, b"until the close");
    c.send(get("/free/say/hop-headers", "").as_bytes()).await;
    let a = answer(&mut c).await;
    assert!(!a.headers.iter().any(|(k, _)| k == "keep-alive"));
}

#[tokio::test]
async fn answers_an_upstream_frames_badly_are_a_502_both_ways() {
    let s = setup().await;
    for name in ["conflicting-lengths", "bad-length", "garbage", "switch"] {
        let path = format!("/free/say/{name}");
        for extra in [String::new(), via_proxy()] {
            let mut c = Conn::open(s.tg.port).await;
            c.send(get(&path, &extra).as_bytes()).await;
            let a = answer(&mut c).await;
            assert_eq!(a.status, 502, "{name} via proxy: {}", !extra.is_empty());
            assert_eq!(a.connection.as_deref(), Some("close"), "{name}");
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(body["error"], "upstream_unavailable", "{name}");
            assert!(
                !String::from_utf8_lossy(&a.body).contains("127.0.0.1"),
                "no address leaks"
            );
        }
    }
}

#[tokio::test]
async fn kept_upstream_connections_are_reused_and_one_the_upstream_closed_is_retried_once() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    for i in 0..20 {
        c.send(get(&format!("/free/n{i}"), "").as_bytes()).await;
        assert_eq!(answer(&mut c).await.body, b"default");
    }
    let all = s.up.all();
    assert_eq!(all.len(), 20, "each request reached the upstream once");
    let conns: std::collections::BTreeSet<usize> = all.iter().map(|g| g.conn).collect();
    assert!(
        conns.len() <= 2,
        "kept connections reused (one per worker at most): {conns:?}"
    );

    // The upstream closes each connection after this answer without saying so; the next request
    // meets the closed connection, and goes once more on a new one: each request reaches the
    // upstream exactly once, and the client never sees the failure.
    for i in 0..10 {
        c.send(get(&format!("/free/{i}/quiet-close"), "").as_bytes()).await;
        assert_eq!(answer(&mut c).await.body, b"ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = s.up.all();
    assert_eq!(all.len(), 30, "{all:?}");
    let quiet: Vec<&Got> = all[20..].iter().collect();
    let conns: std::collections::BTreeSet<usize> = quiet.iter().map(|g| g.conn).collect();
    assert_eq!(conns.len(), 10, "each on its own connection: {quiet:?}");
}

#[tokio::test]
async fn bytes_an_upstream_sends_after_its_answer_never_reach_a_client() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    c.send(get("/free/say/extra", "").as_bytes()).await;
    assert_eq!(answer(&mut c).await.body, b"ok");
    let before = s.up.last().conn;
    for _ in 0..4 {
        c.send(get("/free/say/length", "").as_bytes()).await;
        let a = answer(&mut c).await;
        assert_eq!(a.body, b"hello", "not the smuggled answer");
    }
    assert_ne!(
        s.up.all()[1].conn,
        before,
        "the connection with extra bytes was not kept"
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502_and_counted() {
    let db = Db::sqlite();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut spec = GatewaySpec::new(dead, "http://127.0.0.1:9".into(), &db.url);
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    let mut c = Conn::open(tg.port).await;
    c.send(get("/free/x", "").as_bytes()).await;
    let a = answer(&mut c).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.connection.as_deref(), Some("close"));
    assert!(c.closed().await, "the connection ends after a 502");
    let text = metrics_text(mport).await;
    assert_eq!(
        metric_sum(&text, "tollgate_requests_total", &["outcome=\"upstream_failed\""]),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn forwarded_requests_are_counted_as_the_proxy_counts_them() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    for _ in 0..7 {
        c.send(get("/free/say/length", "").as_bytes()).await;
        assert_eq!(answer(&mut c).await.status, 200);
    }
    c.send(get("/free/say/length", &via_proxy()).as_bytes()).await;
    assert_eq!(answer(&mut c).await.status, 200);
    c.send(get("/free/say/upstream-status", "").as_bytes()).await;
    assert_eq!(answer(&mut c).await.status, 503);
    let text = metrics_text(s.mport).await;
    let free = metric_sum(
        &text,
        "tollgate_requests_total",
        &["route=\"none\"", "outcome=\"free\""],
    );
    assert_eq!(free, 8.0, "seven by the front, one by the proxy, one series: {text}");
    assert_eq!(
        metric_sum(&text, "tollgate_requests_total", &["outcome=\"unavailable\""]),
        1.0
    );
    assert!(
        metric_sum(&text, "tollgate_upstream_seconds_count", &[]) >= 9.0,
        "{text}"
    );
}

#[tokio::test]
async fn pipelined_free_and_unpaid_requests_are_answered_in_order() {
    let s = setup().await;
    let mut c = Conn::open(s.tg.port).await;
    let all = format!(
        "{}{}{}{}{}",
        get("/free/say/chunked", ""),
        get("/paid/x", ""),
        get("/free/say/length", ""),
        get("/free/say/no-content", ""),
        get("/free/say/length", &via_proxy()),
    );
    c.send(all.as_bytes()).await;
    assert_eq!(answer(&mut c).await.body, b"hello, world");
    assert_eq!(answer(&mut c).await.status, 402);
    assert_eq!(answer(&mut c).await.body, b"hello");
    assert_eq!(answer(&mut c).await.status, 204);
    assert_eq!(answer(&mut c).await.body, b"hello");
}
