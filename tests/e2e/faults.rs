#![allow(dead_code)]

//! A fault-injecting HTTP proxy, put between tollgate and a real peer (anvil's JSON-RPC, the
//! reference facilitator): it forwards each request to the peer for real and then, as the test
//! says, answers faithfully, late, with a server error, with garbage, cut short, or not at all —
//! the ways a remote service fails *after* it has acted on a request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward and answer faithfully.
    Pass,
    /// Forward, then answer after this many milliseconds.
    Delay(u64),
    /// Forward, then close without answering.
    Drop,
    /// Forward, then answer 500 with a body that names a secret (it must not reach clients).
    ServerError,
    /// Forward, then answer 200 with a body that is not JSON.
    Garbage,
    /// Forward, then send half of the real answer and close.
    Truncate,
    /// Forward, then never answer (until the connection is closed by the caller).
    Hang,
    /// Close without forwarding: the peer never sees the request.
    Refuse,
}

/// A fault for a request: the same for all, or chosen by a seeded draw per request.
#[derive(Debug, Clone)]
pub enum Plan {
    Always(Fault),
    /// Each request gets a fault from `faults` with probability `percent`, else passes.
    Random {
        faults: Vec<Fault>,
        percent: u32,
        seed: u64,
    },
    /// Requests whose head or body contains `needle` get `fault`; others pass.
    When {
        needle: String,
        fault: Fault,
    },
}

/// The secret that `Fault::ServerError` bodies carry.
pub const SECRET: &str = "sk_live_SECRET_FROM_UPSTREAM";

pub struct FaultProxy {
    pub url: String,
    plan: Arc<Mutex<(Plan, u64)>>,
    pub log: Arc<Mutex<Vec<Fault>>>,
}

impl FaultProxy {
    /// Listens on a free port in front of `target` (`http://host:port`).
    pub async fn start(target: &str, plan: Plan) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").trim_end_matches('/').to_string();
        let plan = Arc::new(Mutex::new((plan, 0u64)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (p, l) = (plan.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, target.clone(), p.clone(), l.clone()));
            }
        });
        FaultProxy { url, plan, log }
    }

    pub fn set(&self, plan: Plan) {
        *self.plan.lock().unwrap() = (plan, 0);
    }

    /// How many requests met each fault (passes included).
    pub fn count(&self, f: Fault) -> usize {
        self.log.lock().unwrap().iter().filter(|x| **x == f).count()
    }
}

fn choose(plan: &Mutex<(Plan, u64)>, body: &[u8]) -> Fault {
    let mut p = plan.lock().unwrap();
    p.1 += 1;
    let n = p.1;
    match &p.0 {
        Plan::Always(f) => *f,
        Plan::Random { faults, percent, seed } => {
            // splitmix64 of (seed, n): repeatable per run.
            let mut z = seed.wrapping_add(n.wrapping_mul(0x9E3779B97F4A7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            if (z % 100) < *percent as u64 {
                faults[(z >> 8) as usize % faults.len()]
            } else {
                Fault::Pass
            }
        }
        Plan::When { needle, fault } => {
            if body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                *fault
            } else {
                Fault::Pass
            }
        }
    }
}

/// Reads one HTTP/1.1 message (head and Content-Length body) from `r`.
async fn read_message<R: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        // De-chunk, and say the length instead (Node answers chunked).
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let head: String = String::from_utf8_lossy(&head)
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("transfer-encoding"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let head = format!("{head}content-length: {}\r\n\r\n", body.len()).into_bytes();
        return Some((head, body));
    }
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

async fn serve(sock: TcpStream, target: String, plan: Arc<Mutex<(Plan, u64)>>, log: Arc<Mutex<Vec<Fault>>>) {
    let mut client = BufReader::new(sock);
    while let Some((head, body)) = read_message(&mut client).await {
        let fault = choose(&plan, &[&head[..], &body[..]].concat());
        log.lock().unwrap().push(fault);
        if fault == Fault::Refuse {
            return;
        }
        // A fresh connection to the peer per request, closed after its answer.
        let Ok(peer) = TcpStream::connect(&target).await else {
            return;
        };
        let mut peer = BufReader::new(peer);
        let head_text = String::from_utf8_lossy(&head);
        let mut rewritten = String::new();
        for (i, line) in head_text.split("\r\n").enumerate() {
            let l = line.to_ascii_lowercase();
            if i > 0 && (l.starts_with("host:") || l.starts_with("connection:")) {
                continue;
            }
            if line.is_empty() {
                break;
            }
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
        rewritten.push_str(&format!("host: {target}\r\nconnection: close\r\n\r\n"));
        if peer.get_mut().write_all(rewritten.as_bytes()).await.is_err()
            || peer.get_mut().write_all(&body).await.is_err()
        {
            return;
        }
        let Some((rhead, rbody)) = read_message(&mut peer).await else {
            return;
        };
        let mut answer = rhead.clone();
        answer.extend_from_slice(&rbody);
        let out = client.get_mut();
        let ok = match fault {
            Fault::Pass => out.write_all(&answer).await.is_ok(),
            Fault::Delay(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                out.write_all(&answer).await.is_ok()
            }
            Fault::Drop => return,
            Fault::ServerError => {
                let b = format!(r#"{{"error":"internal error for key {SECRET}"}}"#);
                let resp = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                    b.len()
                );
                out.write_all(resp.as_bytes()).await.is_ok()
            }
            Fault::Garbage => {
                let b = "<html>gateway says hello</html>";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{b}",
                    b.len()
                );
                out.write_all(resp.as_bytes()).await.is_ok()
            }
            Fault::Truncate => {
                let _ = out.write_all(&answer[..answer.len() / 2]).await;
                return;
            }
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Fault::Refuse => unreachable!(),
        };
        if !ok {
            return;
        }
    }
}
