//! A gateway's life: reloads under load (SIGHUP and `tollgate reload`) with no failed request, an
//! invalid file refused with the running configuration kept, and SIGTERM in the middle of paid
//! traffic with every payment settled or given back once a new process has reconciled.

use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::U256;
use tollgate::store::{PaymentState, Store};

use crate::common::*;
use crate::upstream::Upstream;

/// The amount the first offer of `url` asks.
async fn price(url: &str) -> U256 {
    offers(url, true).await[0].amount
}

/// `tollgate reload --config FILE`: (succeeded, stdout + stderr).
fn reload_cmd(cfg: &std::path::Path) -> (bool, String) {
    tollgate_cmd(&["reload".as_ref(), "--config".as_ref(), cfg.as_os_str()])
}

#[tokio::test]
async fn ten_reloads_under_keep_alive_load_drop_nothing_and_an_invalid_file_is_refused() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("tollgate.pid");
    let mport = free_port();
    let top = format!(
        "pid_file = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n",
        pid_file.display()
    );
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    let cfg = tg.dir.path().join("tollgate.toml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    let paid = format!("{}/paid/x", tg.url);
    assert_eq!(price(&paid).await, U256::from(1_000u64));
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), tg.pid().to_string());

    // Keep-alive load on a free route for the whole run (wrk: 16 connections, 2 threads).
    let wrk = Command::new("wrk")
        .args(["-t2", "-c16", "-d6s", &format!("{}/hello", tg.url)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is installed (.ci/run installs Debian's package)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 1..=10u64 {
        // Prices alternate between $0.001 and $0.002, and a route appears and goes.
        let text = if i % 2 == 1 {
            original.replace("$0.001", "$0.002")
                + "\n[[routes]]\nmethod = \"GET\"\npath = \"/extra\"\nprice = \"$0.003\"\n"
        } else {
            original.clone()
        };
        std::fs::write(&cfg, text).unwrap();
        let (ok, out) = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || reload_cmd(&cfg)
        })
        .await
        .unwrap();
        assert!(ok, "reload {i}: {out}\n{}", tg.log());
        assert!(out.contains(&format!("configuration {} in force", i + 1)), "{out}");
        let want = if i % 2 == 1 { 2_000u64 } else { 1_000 };
        assert_eq!(price(&paid).await, U256::from(want), "after reload {i}");
        let extra = http().get(format!("{}/extra", tg.url)).send().await.unwrap().status();
        assert_eq!(extra, if i % 2 == 1 { 402 } else { 200 }, "after reload {i}");
    }

    // An invalid file: `tollgate reload` refuses it before signalling, naming the key and the fix.
    std::fs::write(&cfg, original.replace("$0.001", "$0.0x")).unwrap();
    let (ok, out) = reload_cmd(&cfg);
    assert!(!ok, "{out}");
    assert!(out.contains("price: '$0.0x' is not a USD amount"), "{out}");
    assert!(out.contains("nothing was reloaded"), "{out}");
    // And the gateway itself refuses it on SIGHUP, keeping what runs.
    signal_pid(tg.pid(), "HUP");
    eventually("the gateway to refuse the file", || async {
        tg.log().contains("reload refused, the running configuration stays")
    })
    .await;
    assert_eq!(price(&paid).await, U256::from(1_000u64));
    let (_, status) = health(mport, "/status").await;
    assert_eq!(status["config_generation"], 11, "{status}");

    let wrk = tokio::task::spawn_blocking(move || wrk.wait_with_output().unwrap())
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&wrk.stdout);
    assert!(wrk.status.success(), "{report}");
    assert!(
        !report.contains("Non-2xx"),
        "a request failed during the reloads:\n{report}"
    );
    assert!(
        !report.contains("Socket errors"),
        "a connection failed during the reloads:\n{report}"
    );
    let served: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(served > 1_000, "wrk ran: {report}");
}

#[tokio::test]
async fn a_reload_that_only_a_restart_can_apply_keeps_the_running_values_and_says_so() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    let tg = Tollgate::start(&spec).await;
    let cfg = tg.dir.path().join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let moved = free_port();
    std::fs::write(
        &cfg,
        text.replace(&format!("127.0.0.1:{}", tg.port), &format!("127.0.0.1:{moved}"))
            .replace("$0.001", "$0.005"),
    )
    .unwrap();
    signal_pid(tg.pid(), "HUP");
    eventually("the reload", || async {
        tg.log().contains("reload: configuration in force")
    })
    .await;
    assert!(
        tg.log().contains("take effect at the next start") && tg.log().contains("\"listen\""),
        "{}",
        tg.log()
    );
    // Still on its port, at the new price.
    assert_eq!(price(&format!("{}/paid/x", tg.url)).await, U256::from(5_000u64));
}

#[tokio::test]
async fn sigterm_during_paid_load_leaves_every_payment_settled_or_given_back_after_restart() {
    const N: usize = 12;
    let anvil = Anvil::start().await;
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let db = Db::postgres().await;
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    // A short grace: the slow upstream (3 s) outlives it, so some requests are cut off mid-way.
    spec.top_extra = "[limits]\nshutdown_grace_secs = 1\n";
    spec.settlement_extra = "reconcile_interval_secs = 1\nreconcile_after_secs = 1";

    let mut tg = Tollgate::start(&spec).await;
    let payer0 = anvil.usdc_balance(PAYER).await;
    // Half settle before forwarding, half after the upstream answers (or never, if cut off).
    let mut signed = Vec::new();
    for i in 0..N {
        let path = if i % 2 == 0 {
            format!("/paid/i{i}/slow/3000")
        } else {
            format!("/after/i{i}/slow/3000")
        };
        let url = format!("{}{path}", tg.url);
        let o = offers(&url, true).await.remove(0);
        // Signed as if 52 s ago: valid for 8 more seconds (the client gives at least 60).
        let p = tollgate::client::authorize(&o, &payer(), now() - 52);
        signed.push((url, tollgate::client::payment_header(&o, &p), p.authorization));
    }
    let requests: Vec<_> = signed
        .iter()
        .map(|(url, (name, value), _)| {
            let (url, name, value) = (url.clone(), *name, value.clone());
            tokio::spawn(async move { http().get(&url).header(name, &value).send().await })
        })
        .collect();
    eventually("requests to reach the upstream", || async { up.count() >= N / 2 }).await;
    signal_pid(tg.pid(), "TERM");
    let mut answered = 0;
    for r in requests {
        if let Ok(Ok(r)) = r.await {
            answered += usize::from(r.status() == 200);
        }
    }
    eventually("the gateway to exit", || {
        let exited = tg.exited().is_some();
        async move { exited }
    })
    .await;

    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store.count_payments(PaymentState::Claimed).await.unwrap(),
        0,
        "nothing left claimed by the process that stopped: {}",
        tg.log()
    );
    // A new process on the same ledger reconciles whatever was left pending.
    let _tg2 = Tollgate::start(&spec).await;
    // Cut off after verification, before their settlement started: given back by the stopping
    // process itself (nothing was sent for them, and nothing can be any more).
    assert!(
        tg.log().contains("claims whose settlement never started given back"),
        "{}",
        tg.log()
    );
    eventually("nothing left claimed or pending", || async {
        // Expiry is judged by the chain's clock: a block past the authorizations' validBefore.
        anvil.mine().await;
        store.count_payments(PaymentState::Claimed).await.unwrap() == 0
            && store.count_payments(PaymentState::Pending).await.unwrap() == 0
    })
    .await;
    let mut on_chain = 0u64;
    for (_, _, auth) in &signed {
        on_chain += u64::from(anvil.authorization_used(auth).await);
    }
    let settled = store.count_payments(PaymentState::Settled).await.unwrap() as u64;
    // Some settled (before forwarding), some given back (cut off before their settle-after).
    assert!(on_chain > 0 && on_chain < N as u64, "{on_chain} of {N} on chain");
    assert_eq!(
        settled, on_chain,
        "the ledger's settled rows are exactly the transfers on chain"
    );
    assert_eq!(
        payer0 - anvil.usdc_balance(PAYER).await,
        U256::from(1_000 * on_chain),
        "charged once per settled payment"
    );
    assert!(
        on_chain as usize >= answered,
        "every answered request was paid ({answered} answered, {on_chain} on chain)"
    );
    assert!(
        tg.log().contains("grace period over"),
        "the grace period cut requests off:\n{}",
        tg.log()
    );
}

/// Requests on fresh connections (`Connection: close`), from `tasks` loops, until `stop`: (served
/// 200, failed in any way).
async fn fresh_connection_load(
    port: u16,
    tasks: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Vec<String>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runs: Vec<_> = (0..tasks)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let one = async {
                        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .map_err(|e| format!("connect: {e}"))?;
                        s.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                        let mut answer = Vec::new();
                        s.read_to_end(&mut answer).await.map_err(|e| format!("read: {e}"))?;
                        if answer.starts_with(b"HTTP/1.1 200") {
                            Ok(())
                        } else {
                            Err(format!(
                                "answer: {}",
                                String::from_utf8_lossy(&answer[..answer.len().min(80)])
                            ))
                        }
                    };
                    match one.await {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, Vec::new());
    for r in runs {
        let (o, f) = r.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

#[tokio::test]
async fn a_graceful_upgrade_hands_the_sockets_over_without_refusing_a_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let top = format!(
        "upgrade_sock = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n",
        sock_dir.path().join("upgrade.sock").display()
    );
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    let mut old = Tollgate::start(&spec).await;
    let cfg = old.dir.path().join("tollgate.toml");

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(fresh_connection_load(old.port, 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new binary waits for the sockets; the old one hands them over on SIGQUIT and drains.
    let new_log = old.dir.path().join("new.log");
    let log = std::fs::File::create(&new_log).unwrap();
    let mut new = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--upgrade", "--config"])
        .arg(&cfg)
        .env("TEST_RELAYER_KEY", RELAYER_KEY)
        .env("TOLLGATE_LOG", "info,tollgate=debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal_pid(old.pid(), "QUIT");
    eventually("the old process to exit", || {
        let exited = old.exited().is_some();
        async move { exited }
    })
    .await;
    // Load keeps going on the new process alone for a while.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (served, failed) = load.await.unwrap();
    // The metrics listener came over too.
    let status = http().get(format!("http://127.0.0.1:{mport}/status")).send().await;
    let new_said = std::fs::read_to_string(&new_log).unwrap();
    assert_eq!(status.map(|r| r.status().as_u16()).ok(), Some(200), "{new_said}");
    let _ = new.kill();
    let _ = new.wait();
    assert!(
        failed.is_empty(),
        "{} requests failed, e.g. {:?}\n{new_said}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served > 100, "{served} served");
    assert!(
        old.log().contains("listening sockets handed to the new process"),
        "{}",
        old.log()
    );
    assert!(
        new_said.contains("took over the running gateway's listening sockets"),
        "{new_said}"
    );
}
