//! A paying x402 client in Rust: reads the 402, signs an EIP-3009 authorization with alloy, pays,
//! and prints what came back and the transaction.
//!
//! ```text
//! PAYER_KEY=0x… cargo run --example pay -- http://127.0.0.1:8402/api/weather/paris [--v1]
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::signers::local::PrivateKeySigner;
use tollgate::client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: pay URL [--v1]")?;
    let v2 = !args.any(|a| a == "--v1");
    let key: PrivateKeySigner = std::env::var("PAYER_KEY")
        .map_err(|_| "set PAYER_KEY to the payer's private key (hex)")?
        .parse()
        .map_err(|_| "PAYER_KEY is not a 32-byte hex private key")?;
    let http = reqwest::Client::new();

    let first = http.get(&url).send().await?;
    if first.status() != 402 {
        println!("{} answered {} without asking for payment", url, first.status());
        return Ok(());
    }
    let required = first
        .headers()
        .get("payment-required")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let offers = client::read_402(required.as_deref(), &first.bytes().await?, v2)?;
    let offer = offers.first().ok_or("the 402 offers no way to pay")?;
    println!(
        "402: pay {} atomic units of {} on {} to {}",
        offer.amount, offer.asset, offer.network, offer.pay_to
    );

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let payload = client::authorize(offer, &key, now);
    let (name, value) = client::payment_header(offer, &payload);
    let paid = http.get(&url).header(name, value).send().await?;
    let status = paid.status();
    let response_header = if v2 { "payment-response" } else { "x-payment-response" };
    let settlement = paid
        .headers()
        .get(response_header)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let json = tollgate::x402::codec::decode_base64(v.as_bytes()).unwrap_or_default();
            String::from_utf8_lossy(&json).into_owned()
        });
    println!("{status}: {}", paid.text().await?);
    match settlement {
        Some(s) => println!("{}: {s}", response_header.to_uppercase()),
        None => println!("no {} header", response_header.to_uppercase()),
    }
    Ok(())
}
