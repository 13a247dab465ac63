#![allow(dead_code)]

//! A small HTTP/1.1 upstream for tests and the example: answers JSON, records what it received.
//!
//! `GET /status/{code}` answers with that status; `/slow/{ms}` waits first; anything else is 200.
//! Every request's method, path and headers are kept so that tests can see what was forwarded.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
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
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_conn(sock, seen.clone()));
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
}

async fn serve_conn(sock: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut r = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut body = vec![0u8; len];
        if len > 0 && r.read_exact(&mut body).await.is_err() {
            return;
        }
        let s = Seen {
            method,
            path: path.clone(),
            headers,
        };
        let payer = s.header("x-tollgate-payer").unwrap_or("").to_string();
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
            path.replace('"', ""),
            payer
        );
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
