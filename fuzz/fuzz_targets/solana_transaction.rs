//! A Solana payment's transaction (the `exact` scheme's payload): decoding and every offline check
//! the gateway runs before it signs anything as fee payer. No input may panic; a refusal is always
//! a reason. The input is the wire transaction; it is checked as the payload's base64 would carry it.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use solana_pubkey::Pubkey;
use tollgate::chains::solana::exact::{check, decode, Expected, Limits};
use tollgate::x402::AmountMatch;

const USDC: Pubkey = Pubkey::from_str_const("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
// The seed corpus's keys: fee payer [21; 32], payee [23; 32] (tests/e2e/solana.rs).
const FEE_PAYER: Pubkey = Pubkey::from_str_const("FMUEmtxhU46GzhKF4FW9MLJdQWiLgjiXP9TYRWSrqTpV");
const PAY_TO: Pubkey = Pubkey::from_str_const("4MfyR4G3NWfVRDWo6iNAHDBZqWMgwZX6FNtMqEW3a9JT");

fuzz_target!(|data: &[u8]| {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let Ok(tx) = decode(&b64) else {
        return;
    };
    for amount_match in [AmountMatch::Exact, AmountMatch::AtLeast] {
        let want = Expected {
            mint: &USDC,
            pay_to: &PAY_TO,
            amount: 1000,
            amount_match,
            decimals: 6,
            fee_payer: &FEE_PAYER,
            memo: None,
        };
        match check(tx.clone(), &want, &Limits::default()) {
            Ok(c) => {
                assert!(c.amount >= 1000);
                assert_eq!(c.message_hash().len(), 64);
            }
            Err(r) => assert!(!r.reason.is_empty()),
        }
    }
});
