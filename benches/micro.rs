//! Micro benchmarks of the per-request work: header decode, EIP-712 digest and recovery, the whole
//! offline verification, 402 rendering and route matching at 10 / 1,000 / 100,000 routes.
//!
//! `cargo bench --bench micro` (under `cargo test` each runs once, as a check).

use std::hint::black_box;
use std::sync::Arc;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use tollgate::chains::evm::{EvmChain, EvmOptions};
use tollgate::chains::Chain;
use tollgate::challenge;
use tollgate::client::{self, Offered};
use tollgate::routes::{MethodMatch, RouteTable};
use tollgate::tenant::{Pricing, SettleTiming};
use tollgate::x402::network::{builtin, Network};
use tollgate::x402::{decode_payment, Offer, Version};
use tollgate::x402::{AmountMatch, Asked};

const NOW: u64 = 1_800_000_000;

fn offer() -> Offer {
    let net = Arc::new(Network::from_known(builtin("base").unwrap()));
    Offer::exact(
        net,
        U256::from(1000u64),
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906".into(),
        60,
    )
}

fn header(version: Version) -> String {
    let o = offer();
    let key: PrivateKeySigner = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
        .parse()
        .unwrap();
    let off = Offered::from_offer(&o, version);
    client::payment_header(&off, &client::authorize(&off, &key, NOW)).1
}

fn chain() -> EvmChain {
    let o = offer();
    let opts = EvmOptions {
        rpc_url: "http://127.0.0.1:9".into(),
        rpc_timeout: std::time::Duration::from_secs(1),
        gas_limit: 200_000,
        confirmations: 1,
        receipt_timeout: std::time::Duration::from_secs(1),
        receipt_poll: std::time::Duration::from_millis(100),
        max_batch: 32,
        batch_window: std::time::Duration::from_millis(5),
        block_time: std::time::Duration::ZERO,
    };
    EvmChain::new(o.network.clone(), opts, Err("bench: no relayer".into())).unwrap()
}

fn decode(c: &mut Criterion) {
    for v in [Version::V1, Version::V2] {
        let h = header(v);
        c.bench_function(&format!("decode_header/v{}", v.number()), |b| {
            b.iter(|| decode_payment(v, black_box(h.as_bytes())).unwrap())
        });
    }
}

fn eip712(c: &mut Criterion) {
    let o = offer();
    let key = PrivateKeySigner::random();
    let off = Offered::from_offer(&o, Version::V2);
    let p = client::authorize(&off, &key, NOW);
    let domain = tollgate::chains::evm::Domain::new("USD Coin", "2", 8453, off.asset);
    c.bench_function("eip712/digest", |b| {
        b.iter(|| domain.digest(black_box(&p.authorization)))
    });
    let sig = alloy::primitives::Signature::from_raw(&p.signature).unwrap();
    let digest = domain.digest(&p.authorization);
    c.bench_function("eip712/recover", |b| {
        b.iter(|| black_box(&sig).recover_address_from_prehash(&digest).unwrap())
    });
}

fn offline(c: &mut Criterion) {
    let chain = chain();
    let o = offer();
    for v in [Version::V1, Version::V2] {
        let h = header(v);
        c.bench_function(
            &format!("verify_offline/v{} (decode+checks+recover)", v.number()),
            |b| {
                b.iter(|| {
                    let p = decode_payment(v, black_box(h.as_bytes())).unwrap();
                    chain.check_offline(&o, AmountMatch::Exact, &p, NOW).unwrap()
                })
            },
        );
    }
}

fn render_402(c: &mut Criterion) {
    let pricing = Pricing {
        offers: vec![offer()],
        description: "Current weather for a city".into(),
        mime_type: "application/json".into(),
        settle: SettleTiming::Before,
        answer: Default::default(),
        amount: AmountMatch::Exact,
        payment_id: Default::default(),
    };
    let asked = Asked {
        url: "http://127.0.0.1:8402/api/weather/paris".into(),
        method: "GET".into(),
    };
    c.bench_function("render_402 (v1 body + v2 header)", |b| {
        b.iter(|| challenge::payment_required(black_box(&pricing), &asked, None, Some("*")))
    });
}

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 100_000] {
        let mut t = RouteTable::new();
        for i in 0..n {
            let (m, p) = match i % 4 {
                0 => (
                    MethodMatch::Only(http::Method::GET),
                    format!("/api/v1/svc{i}/items/{{id}}"),
                ),
                1 => (MethodMatch::Any, format!("/api/v1/svc{i}/*")),
                2 => (MethodMatch::Only(http::Method::POST), format!("/api/v1/svc{i}/orders")),
                _ => (MethodMatch::Any, format!("/static/{i}/file.json")),
            };
            t.insert(m, &p, i).unwrap();
        }
        let hit = format!("/api/v1/svc{}/items/42", (n / 2) & !3);
        let miss = "/nothing/here/at/all";
        g.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, p| {
            b.iter(|| t.find(&http::Method::GET, black_box(p)))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, p| {
            b.iter(|| t.find(&http::Method::GET, black_box(p)))
        });
    }
    g.finish();
}

/// One reading of a request (`reading::read` + `Tenant::route_for`): what every request pays before
/// it is priced, for a plain path and for ones with more readings.
fn reading(c: &mut Criterion) {
    let file: tollgate::config::FileConfig = toml::from_str(
        r#"
upstream = "http://127.0.0.1:8080"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
[networks.base]
rpc_url = "http://127.0.0.1:8545"
[[routes]]
method = "GET"
path = "/api/premium/*"
price = "$0.01"
[[routes]]
path = "/api/weather/{city}"
price = "$0.001"
[[routes]]
path = "/health"
price = "free"
"#,
    )
    .unwrap();
    let (_, tenant) = tollgate::config::build(file).unwrap();
    let mut g = c.benchmark_group("reading");
    for (name, target) in [
        ("plain", "/api/premium/report?x=1"),
        ("case+suffix", "/Api/Premium/report.json"),
        ("dirty", "/a//b/%2e%2e/../api;x/premium/%7Ey"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = tollgate::reading::Request {
                    method: "GET",
                    target: black_box(target.as_bytes()),
                    ..Default::default()
                };
                let r = tollgate::reading::read(&req, &tenant.rules).unwrap();
                tenant.route_for(&r).map(|(i, _)| i)
            })
        });
    }
    g.finish();
}

/// Solana's offline verification of a payment the way the official client builds it: decode the
/// header, decode the transaction, the instruction checks, the ATA derivation and the client's
/// ed25519 signature.
#[cfg(feature = "solana")]
fn solana_offline(c: &mut Criterion) {
    use solana_signer::Signer;
    use tollgate::chains::solana::exact::{self, Payment};
    use tollgate::chains::solana::{Limits, SolanaChain, SolanaOptions};
    let fee_payer = solana_keypair::Keypair::new_from_array([21; 32]);
    let client_key = solana_keypair::Keypair::new_from_array([22; 32]);
    let pay_to = solana_keypair::Keypair::new_from_array([23; 32]).pubkey();
    let mut net = Network::from_known(builtin("solana").unwrap());
    net.fee_payer = Some(fee_payer.pubkey().to_string());
    let net = Arc::new(net);
    let o = Offer::exact(net.clone(), U256::from(1000u64), pay_to.to_string(), 60);
    let opts = SolanaOptions {
        rpc_url: "http://127.0.0.1:9".into(),
        rpc_timeout: std::time::Duration::from_secs(1),
        confirm_timeout: std::time::Duration::from_secs(1),
        poll: std::time::Duration::from_millis(100),
        limits: Limits::default(),
        min_fee_payer_lamports: 0,
    };
    let chain = SolanaChain::new(net, opts, Ok(fee_payer.insecure_clone())).unwrap();
    let m = exact::payment_message(&Payment {
        client: client_key.pubkey(),
        fee_payer: fee_payer.pubkey(),
        pay_to,
        mint: solana_pubkey::Pubkey::from_str_const("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"),
        amount: 1000,
        blockhash: solana_hash::Hash::new_from_array([5; 32]),
        memo: b"00112233445566778899aabbccddeeff".to_vec(),
    });
    let tx = exact::sign_as_client(&client_key, solana_message::VersionedMessage::V0(m));
    let payload = serde_json::json!({"x402Version": 2, "accepted": o.to_v2(),
        "payload": {"transaction": exact::to_wire_base64(&tx)}});
    let h = tollgate::x402::encode_header(&payload);
    c.bench_function("verify_offline/solana v2 (decode+checks+ed25519)", |b| {
        b.iter(|| {
            let p = decode_payment(Version::V2, black_box(h.as_bytes())).unwrap();
            chain.check_offline(&o, AmountMatch::Exact, &p, NOW).unwrap()
        })
    });
}

#[cfg(not(feature = "solana"))]
fn solana_offline(_: &mut Criterion) {}

criterion_group!(
    benches,
    decode,
    eip712,
    offline,
    solana_offline,
    render_402,
    routes,
    reading
);
criterion_main!(benches);
