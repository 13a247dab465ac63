#![allow(dead_code)]

//! A small HTTP/1.1 upstream for tests and the example: answers JSON, records exactly what it got.
//!
//! `GET /status/{code}` answers with that status; `/slow/{ms}` waits first; anything else is 200.
//! Every request is kept with its raw bytes, so that tests see what was forwarded byte for byte.
//!
//! It reads requests the way careless upstreams do, which is what makes request smuggling possible:
//! it never reads the body of a GET or HEAD, nor of any request whose path contains `/noread`
//! (whatever it left unread is read as the next request on the connection), and it keeps a
//! connection open until `Connection: close`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The request line and headers exactly as received.
    pub raw_head: Vec<u8>,
    pub body: Vec<u8>,
    /// Which upstream connection it came on (1, 2, …).
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Listens on `addr` (use port 0 for a free one) on the current runtime.
    pub async fn start(addr: &str) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let up = Upstream {
            addr: listener.local_addr()?,
            seen: Default::default(),
        };
        let seen = up.seen.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((sock, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(serve_conn(sock, seen.clone(), n));
            }
        });
        Ok(up)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests reached the upstream.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_chunked(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).await.ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk).await.ok()?;
        if n == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_conn(sock: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, conn: usize) {
    let mut r = BufReader::new(sock);
    loop {
        let mut raw_head = Vec::new();
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        raw_head.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut parts = text.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = Vec::new();
            if r.read_until(b'\n', &mut h).await.unwrap_or(0) == 0 {
                return;
            }
            raw_head.extend_from_slice(&h);
            let h = String::from_utf8_lossy(&h).trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut s = Seen {
            method,
            path: path.clone(),
            headers,
            raw_head,
            body: Vec::new(),
            conn,
        };
        let careless = s.method == "GET" || s.method == "HEAD" || path.contains("/noread");
        if !careless {
            if s.header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
            {
                match read_chunked(&mut r).await {
                    Some(b) => s.body = b,
                    None => return,
                }
            } else {
                let len: usize = s.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                s.body = vec![0u8; len];
                if len > 0 && r.read_exact(&mut s.body).await.is_err() {
                    return;
                }
            }
        }
        let payer = s.header("x-tollgate-payer").unwrap_or("").to_string();
        let close = s.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        seen.lock().unwrap().push(s);
        let mut status = 200u16;
        if let Some((_, code)) = path.split_once("/status/") {
            status = code.parse().unwrap_or(200);
        }
        if let Some((_, ms)) = path.split_once("/slow/") {
            tokio::time::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        let body = format!(
            r#"{{"ok":{},"path":"{}","payer":"{}"}}"#,
            status < 400,
            path.replace(['"', '\\'], ""),
            payer
        );
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
