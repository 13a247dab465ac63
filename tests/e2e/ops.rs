//! Operations: Prometheus metrics scraped by a real Prometheus server (Debian's), and readiness
//! that follows the chain RPC.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::upstream::Upstream;

/// A real Prometheus server scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (.ci/run installs Debian's package)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query (a single number), if it has one yet.
    async fn value(&self, q: &str) -> Option<f64> {
        let url = url::Url::parse_with_params(&format!("{}/api/v1/query", self.url), &[("query", q)]).ok()?;
        let r = http().get(url).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// A drop-in gateway with its metrics listener on a free port (and a reconciliation pass, which
/// refreshes the ledger gauge, every second): the gateway and that port.
async fn metered(anvil: &Anvil, up: &Upstream, db: &Db) -> (Tollgate, u16) {
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    spec.settlement_extra = "reconcile_interval_secs = 1";
    (Tollgate::start(&spec).await, mport)
}

#[tokio::test]
async fn prometheus_scrapes_request_and_payment_counts() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (tg, mport) = metered(&anvil, &up, &db).await;
    let c = http();
    // 3 free, 2 unpaid (402), 2 paid (each fetching its 402 first: 2 more challenged), 1 replayed.
    for _ in 0..3 {
        assert_eq!(c.get(format!("{}/hello", tg.url)).send().await.unwrap().status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(c.get(format!("{}/paid/x", tg.url)).send().await.unwrap().status(), 402);
    }
    let mut last = None;
    for _ in 0..2 {
        let (name, value) = signed_header(&format!("{}/paid/x", tg.url), true).await;
        let r = c
            .get(format!("{}/paid/x", tg.url))
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", tg.log());
        last = Some((name, value));
    }
    let (name, value) = last.unwrap();
    let r = c
        .get(format!("{}/paid/x", tg.url))
        .header(name, &value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);

    let prom = Prometheus::start(&format!("127.0.0.1:{mport}"));
    let expect = [
        (r#"sum(tollgate_requests_total{outcome="free"})"#, 3.0),
        (r#"sum(tollgate_requests_total{outcome="challenged"})"#, 4.0),
        (r#"sum(tollgate_requests_total{outcome="paid"})"#, 2.0),
        (r#"sum(tollgate_requests_total{outcome="refused"})"#, 1.0),
        (
            r#"sum(tollgate_payments_total{outcome="settled",network="eip155:8453"})"#,
            2.0,
        ),
        (r#"sum(tollgate_payments_total{outcome="duplicate"})"#, 1.0),
        (r#"sum(tollgate_settled_atomic_units_total)"#, 2000.0),
        (r#"sum(tollgate_settle_seconds_count)"#, 2.0),
        (r#"tollgate_signer_balance{network="base"} > 0"#, f64::NAN),
        (r#"tollgate_ledger_rows{state="settled"}"#, 2.0),
        // 3 free and 2 paid requests went to the upstream.
        (r#"tollgate_upstream_seconds_count"#, 5.0),
        (r#"tollgate_chain_rpc_seconds_count{network="base"} > 0"#, f64::NAN),
        // anvil mines each transaction at once: none waiting.
        (r#"tollgate_relayer_pending_transactions{network="base"}"#, 0.0),
        // Two settlements, each alone in its transaction.
        (r#"sum(tollgate_settlement_batch_size_count)"#, 2.0),
        (r#"sum(tollgate_settlement_batch_size_sum)"#, 2.0),
    ];
    for (q, want) in expect {
        let mut got = None;
        for _ in 0..150 {
            got = prom.value(q).await;
            if got.is_some_and(|g| want.is_nan() || g == want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let g = got.unwrap_or_else(|| panic!("{q}: no value scraped"));
        assert!(want.is_nan() || g == want, "{q}: {g}, expected {want}");
    }
}

#[tokio::test]
async fn readiness_follows_the_chain_rpc() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let (tg, mport) = metered(&anvil, &up, &db).await;
    let ready = || health(mport, "/status/ready");
    let (_, alive) = health(mport, "/status").await;
    assert_eq!(alive["status"], "ok");
    let (st, v) = ready().await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["checks"]["database"]["status"], "ok", "{v}");
    assert_eq!(v["checks"]["chain:base"]["status"], "ok", "{v}");
    assert_eq!(v["checks"]["signer:base"]["status"], "ok", "{v}");

    // The chain RPC goes away: 503, naming the chain.
    let port: u16 = anvil.url.rsplit(':').next().unwrap().parse().unwrap();
    drop(anvil);
    let (st, v) = ready().await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["checks"]["chain:base"]["status"], "failing", "{v}");
    assert!(
        v["checks"]["chain:base"]["detail"]
            .as_str()
            .unwrap()
            .contains("networks.base.rpc_url"),
        "{v}"
    );
    assert_eq!(v["checks"]["database"]["status"], "ok", "{v}");

    // It comes back (a fresh anvil on the same port): 200 again.
    let mut back = Anvil::process(port, &[]);
    let ok = ready_again(mport).await;
    let _ = back.kill();
    let _ = back.wait();
    assert!(ok, "ready again once the RPC answers: {}", tg.log());
}

/// The systemd unit passes `systemd-analyze verify` (with its binary path pointed at this build).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tollgate.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tollgate", env!("CARGO_BIN_EXE_tollgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the unit's own findings count (the machine's other units are not ours to judge).
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("tollgate")).collect();
    assert!(out.status.success() && ours.is_empty(), "{said}");
}

/// `TOLLGATE_LOG_FORMAT=json`: every line is a JSON object, and each paid or refused request is
/// one line with its tenant, route, outcome, payer, transaction and latencies, never the header.
#[tokio::test]
async fn json_logs_say_one_line_per_payment_without_the_header() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.env = vec![("TOLLGATE_LOG_FORMAT", "json")];
    let tg = Tollgate::start(&spec).await;
    let url = format!("{}/paid/x", tg.url);
    let (name, value) = signed_header(&url, true).await;
    let c = http();
    assert_eq!(c.get(&url).header(name, &value).send().await.unwrap().status(), 200);
    assert_eq!(c.get(&url).header(name, &value).send().await.unwrap().status(), 402);
    let lines = || -> Vec<Value> {
        tg.log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
            .collect()
    };
    let mut payments = Vec::new();
    for _ in 0..50 {
        payments = lines()
            .into_iter()
            .filter(|l| l["target"] == "tollgate::request")
            .collect();
        if payments.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(payments.len(), 2, "{}", tg.log());
    // The paid request's line is written once its response is done, which may be after the replay's.
    let first_paid = usize::from(payments[0]["outcome"] == "duplicate");
    let (paid, refused) = (&payments[first_paid], &payments[1 - first_paid]);
    assert_eq!(paid["outcome"], "settled", "{paid}");
    assert_eq!(paid["tenant"], "default");
    assert_eq!(paid["route"], "GET /paid/*");
    assert_eq!(paid["payer"].as_str().unwrap().to_lowercase(), format!("{:#x}", PAYER));
    assert_eq!(paid["amount"], "1000");
    assert!(paid["tx"].as_str().unwrap().starts_with("0x"), "{paid}");
    assert!(paid["total_ms"].as_f64().unwrap() > 0.0 && paid["settle_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(refused["outcome"], "duplicate", "{refused}");
    assert!(!refused["reason"].as_str().unwrap().is_empty(), "{refused}");
    let log = tg.log();
    assert!(!log.contains(&value), "the payment header is in the log");
    assert!(
        !log.contains(RELAYER_KEY.trim_start_matches("0x")),
        "the relayer key is in the log"
    );
}

/// A TCP relay in front of PostgreSQL that can be cut (every connection closed, new ones refused)
/// and restored, so that one gateway loses its database while the server runs on for the others.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(target: &'static str) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { port, up, cut }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let relay = Relay::start("127.0.0.1:5432").await;
    // The same database, reached through the relay.
    let through = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port), 1);
    assert_ne!(through, db.url, "the test database is on 127.0.0.1:5432");
    let mport = free_port();
    let top = format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"");
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &through);
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    let ready = || health(mport, "/status/ready");
    let (st, v) = ready().await;
    assert_eq!(st, 200, "{v}");

    relay.set(false);
    let (st, v) = ready().await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["checks"]["database"]["status"], "failing", "{v}");
    assert_eq!(v["checks"]["chain:base"]["status"], "ok", "{v}");
    // Paid requests are refused with nothing charged while it is gone.
    let url = format!("{}/paid/x", tg.url);
    let (name, value) = signed_header(&url, true).await;
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(r.status(), 503, "{}", tg.log());

    relay.set(true);
    assert!(
        ready_again(mport).await,
        "ready again once the database answers: {}",
        tg.log()
    );
    let r = http().get(&url).header(name, &value).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the same payment, once the database is back: {}",
        tg.log()
    );
}
