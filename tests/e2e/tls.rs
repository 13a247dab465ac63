//! TLS on the proxy listener: a 402, a paid request and a free one over HTTPS (the resource URL
//! says https), a renewed certificate picked up by a reload, and a broken one refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::upstream::Upstream;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.crt`, `ca.key`): its certificate, PEM.
fn authority(dir: &Path) -> Vec<u8> {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tollgate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    );
    std::fs::read(dir.join("ca.crt")).unwrap()
}

/// A certificate for `localhost` signed by the test CA, written to `dir/{name}.crt` and `.key`:
/// the paths, and the certificate in PEM.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            &crt,
        ],
        dir,
    );
    (dir.join(&crt), dir.join(&key), std::fs::read(dir.join(&crt)).unwrap())
}

/// A client that trusts `pem` only, and reports the server's certificate.
fn client(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The DER of the certificate a server presents to a fresh connection.
async fn presented(url: &str, trust: &[u8]) -> Option<Vec<u8>> {
    let r = client(trust).get(url).send().await.ok()?;
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
}

#[tokio::test]
async fn https_on_the_proxy_listener_with_a_certificate_renewed_by_reload() {
    let (anvil, db) = (Anvil::start().await, Db::sqlite());
    let up = Upstream::start("127.0.0.1:0").await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = authority(certs.path());
    let (crt, key, first) = certificate(certs.path(), "first");
    let (live_crt, live_key) = (certs.path().join("live.crt"), certs.path().join("live.key"));
    std::fs::copy(&crt, &live_crt).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let top = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        live_crt.display(),
        live_key.display()
    );
    let mut spec = GatewaySpec::new(up.url(), anvil.url.clone(), &db.url);
    spec.top_extra = &top;
    let tg = Tollgate::start(&spec).await;
    let base = format!("https://localhost:{}", tg.port);
    let c = client(&ca);

    // A 402 answered by the front, over TLS: its resource URL is https.
    let r = c.get(format!("{base}/paid/x")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["accepts"][0]["resource"], format!("{base}/paid/x"), "{body}");
    // A free request, through pingora over TLS.
    let r = c.get(format!("{base}/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last().unwrap();
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("https"),
        "the upstream learns the client used TLS"
    );
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("localhost:{}", tg.port).as_str())
    );
    // A paid one, settled on anvil.
    let (name, value) = {
        let r = c.get(format!("{base}/paid/x")).send().await.unwrap();
        let pr = r
            .headers()
            .get("payment-required")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.bytes().await.unwrap();
        let o = tollgate::client::read_402(pr.as_deref(), &body, true)
            .unwrap()
            .remove(0);
        let p = tollgate::client::authorize(&o, &payer(), now());
        tollgate::client::payment_header(&o, &p)
    };
    let r = c
        .get(format!("{base}/paid/x"))
        .header(name, &value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", tg.log());
    assert!(r.headers().get("payment-response").is_some());
    // Plain HTTP on the TLS port gets no answer.
    assert!(http()
        .get(format!("http://127.0.0.1:{}/hello", tg.port))
        .send()
        .await
        .is_err());
    assert_eq!(presented(&format!("{base}/hello"), &ca).await, Some(der_of(&first)));

    // Renewal: new files in place, then a reload; new connections get the new certificate.
    let (crt2, key2, second) = certificate(certs.path(), "second");
    std::fs::copy(&crt2, &live_crt).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    signal_pid(tg.pid(), "HUP");
    eventually("the renewed certificate to be presented", || async {
        presented(&format!("{base}/hello"), &ca).await == Some(der_of(&second))
    })
    .await;

    // A broken file: the reload is refused and the renewed certificate stays.
    std::fs::write(&live_key, "not a key").unwrap();
    signal_pid(tg.pid(), "HUP");
    eventually("the reload to be refused", || async {
        tg.log().contains("reload refused") && tg.log().contains("no private key")
    })
    .await;
    assert_eq!(presented(&format!("{base}/hello"), &ca).await, Some(der_of(&second)));
}
