//! Payment header decoding (v1 `X-PAYMENT`, v2 `PAYMENT-SIGNATURE`) and the EIP-3009 offline checks
//! that run on whatever decodes: no input may panic, and a refusal is always a reason, not a crash.
//!
//! The first byte chooses the header (bit 0) and whether the rest is sent base64-encoded as it is,
//! or first encoded (bit 1), so that the fuzzer reaches the JSON and the checks behind it.
#![no_main]

use alloy_primitives::{address, U256};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tollgate::chains::evm::eip3009::{check, Domain};
use tollgate::x402::AmountMatch;
use tollgate::x402::{decode_payment, ExactEvmPayload, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let version = if mode & 1 == 0 { Version::V1 } else { Version::V2 };
    let encoded;
    let header = if mode & 2 == 0 {
        rest
    } else {
        encoded = base64::engine::general_purpose::STANDARD.encode(rest);
        encoded.as_bytes()
    };
    let Ok(payment) = decode_payment(version, header) else {
        return;
    };
    let _ = (payment.scheme(), payment.network());
    let Ok(payload) = serde_json::from_str::<ExactEvmPayload>(payment.payload.get()) else {
        return;
    };
    let usdc = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
    let domain = Domain::new("USD Coin", "2", 8453, usdc);
    let pay_to = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");
    for m in [AmountMatch::Exact, AmountMatch::AtLeast] {
        if let Err(r) = check(&domain, pay_to, U256::from(10_000u64), m, &payload, 1_750_000_000) {
            assert!(!r.reason.is_empty());
        }
    }
});
