//! EIP-3009 `transferWithAuthorization` as USDC implements it: the EIP-712 digest, signature
//! recovery and the offline checks. Pure: no I/O.

use alloy::primitives::{keccak256, Address, Signature, B256, U256};
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct};

use crate::chains::Rejection;
use crate::x402::AmountMatch;
use crate::x402::{reason, Authorization, ExactEvmPayload};

sol! {
    /// The EIP-712 struct the payer signs.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    /// The parts of FiatTokenV2 (USDC) tollgate calls.
    interface IUsdc {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }
}

/// Seconds an authorization must stay valid beyond now, so that it can still be settled.
pub const VALIDITY_MARGIN_SECS: u64 = 6;

/// secp256k1n / 2: USDC refuses signatures with a larger `s` (EIP-2).
const HALF_N: U256 = U256::from_limbs([
    0xdfe92f46681b20a0,
    0x5d576e7357a4501d,
    0xffffffffffffffff,
    0x7fffffffffffffff,
]);

/// A USDC contract's EIP-712 domain, hashed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub asset: Address,
    pub separator: B256,
}

impl Domain {
    pub fn new(name: &str, version: &str, chain_id: u64, asset: Address) -> Domain {
        let d = Eip712Domain {
            name: Some(name.to_string().into()),
            version: Some(version.to_string().into()),
            chain_id: Some(U256::from(chain_id)),
            verifying_contract: Some(asset),
            salt: None,
        };
        Domain {
            asset,
            separator: d.hash_struct(),
        }
    }

    /// The digest the payer signed for `auth`.
    pub fn digest(&self, auth: &Authorization) -> B256 {
        let s = TransferWithAuthorization {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: U256::from(auth.valid_after),
            validBefore: U256::from(auth.valid_before),
            nonce: auth.nonce,
        };
        let mut buf = [0u8; 66];
        buf[0] = 0x19;
        buf[1] = 0x01;
        buf[2..34].copy_from_slice(self.separator.as_slice());
        buf[34..66].copy_from_slice(s.eip712_hash_struct().as_slice());
        keccak256(buf)
    }
}

/// A transfer authorization that passed every offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTransfer {
    pub auth: Authorization,
    /// Low-s, parity normalised.
    pub signature: Signature,
}

impl CheckedTransfer {
    /// The wire payload again (for storage and for facilitators).
    pub fn to_payload(&self) -> ExactEvmPayload {
        ExactEvmPayload {
            signature: self.signature.as_bytes().to_vec(),
            authorization: self.auth.clone(),
        }
    }

    /// The calldata of `transferWithAuthorization(…, v, r, s)`.
    pub fn calldata(&self) -> Vec<u8> {
        use alloy::sol_types::SolCall;
        let a = &self.auth;
        IUsdc::transferWithAuthorizationCall {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: U256::from(a.valid_after),
            validBefore: U256::from(a.valid_before),
            nonce: a.nonce,
            v: 27 + u8::from(self.signature.v()),
            r: self.signature.r().into(),
            s: self.signature.s().into(),
        }
        .abi_encode()
    }
}

/// The offline checks, cheapest first: recipient, time window, amount, then the signature.
pub fn check(
    domain: &Domain,
    pay_to: Address,
    price: U256,
    amount: AmountMatch,
    payload: &ExactEvmPayload,
    now: u64,
) -> Result<CheckedTransfer, Rejection> {
    let a = &payload.authorization;
    if a.to != pay_to {
        return Err(Rejection::new(
            reason::RECIPIENT,
            format!("authorization pays {}, this route's payTo is {pay_to}", a.to),
        ));
    }
    if a.valid_after > now {
        return Err(Rejection::new(
            reason::VALID_AFTER,
            format!("authorization is valid only after {} (now is {now})", a.valid_after),
        ));
    }
    if a.valid_before < now + VALIDITY_MARGIN_SECS {
        return Err(Rejection::new(
            reason::VALID_BEFORE,
            format!(
                "authorization expired: validBefore {} is not at least {VALIDITY_MARGIN_SECS}s after now ({now})",
                a.valid_before
            ),
        ));
    }
    let amount_ok = match amount {
        AmountMatch::Exact => a.value == price,
        AmountMatch::AtLeast => a.value >= price,
    };
    if !amount_ok {
        let want = match amount {
            AmountMatch::Exact => "exactly",
            AmountMatch::AtLeast => "at least",
        };
        return Err(Rejection::new(
            reason::VALUE,
            format!("authorization value {} is not {want} the price {price}", a.value),
        ));
    }
    let signature = recover_check(domain, payload)?;
    Ok(CheckedTransfer {
        auth: a.clone(),
        signature,
    })
}

/// Checks that the signature is a 65-byte low-s ECDSA signature by `authorization.from`.
fn recover_check(domain: &Domain, payload: &ExactEvmPayload) -> Result<Signature, Rejection> {
    let bytes = &payload.signature;
    if bytes.len() != 65 {
        return Err(Rejection::new(
            reason::INVALID_SIGNATURE,
            format!(
                "signature is {} bytes; tollgate verifies 65-byte ECDSA signatures (smart-wallet signatures, EIP-1271/6492, are not supported yet)",
                bytes.len()
            ),
        ));
    }
    let sig = Signature::from_raw(bytes)
        .map_err(|e| Rejection::new(reason::INVALID_SIGNATURE, format!("signature is malformed: {e}")))?;
    if sig.s() > HALF_N {
        return Err(Rejection::new(
            reason::INVALID_SIGNATURE,
            "signature has a high s value (EIP-2); USDC refuses it: sign with a standard library",
        ));
    }
    let signer = sig
        .recover_address_from_prehash(&domain.digest(&payload.authorization))
        .map_err(|e| Rejection::new(reason::INVALID_SIGNATURE, format!("signature does not recover: {e}")))?;
    if signer != payload.authorization.from {
        return Err(Rejection::new(
            reason::INVALID_SIGNATURE,
            format!(
                "signature was made by {signer}, not by authorization.from {}",
                payload.authorization.from
            ),
        ));
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, b256};
    use alloy::signers::{local::PrivateKeySigner, SignerSync};

    /// The spec's X-PAYMENT example (../shared/x402/vectors.md): a real signature whose window closed
    /// on 2025-02-27.
    fn vector() -> ExactEvmPayload {
        serde_json::from_str(r#"{"signature":"0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c","authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66","to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","value":"10000","validAfter":"1740672089","validBefore":"1740672154","nonce":"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}}"#).unwrap()
    }
    const SEPOLIA_USDC: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    const PAY_TO: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");

    #[test]
    fn spec_vector_hashes_match_the_published_values() {
        let d = Domain::new("USDC", "2", 84532, SEPOLIA_USDC);
        assert_eq!(
            d.separator,
            b256!("71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818")
        );
        let p = vector();
        assert_eq!(
            d.digest(&p.authorization),
            b256!("f256992871671abcb27ff92885a7afa46218724e5fc0bac35d050115aa1d22e6")
        );
    }

    #[test]
    fn spec_vector_recovers_and_is_judged_expired_not_bad_signature() {
        let d = Domain::new("USDC", "2", 84532, SEPOLIA_USDC);
        let p = vector();
        // Inside its window the signature is good...
        let c = check(&d, PAY_TO, U256::from(10000u64), AmountMatch::Exact, &p, 1740672100).unwrap();
        assert_eq!(c.auth.from, address!("857b06519E91e3A54538791bDbb0E22373e36b66"));
        // ...today it has expired, and that is the answer.
        let e = check(&d, PAY_TO, U256::from(10000u64), AmountMatch::Exact, &p, 1_790_000_000).unwrap_err();
        assert_eq!(e.reason, reason::VALID_BEFORE);
    }

    #[test]
    fn spec_vector_does_not_verify_under_another_domain() {
        for d in [
            Domain::new("USD Coin", "2", 84532, SEPOLIA_USDC),
            Domain::new("USDC", "2", 8453, SEPOLIA_USDC),
        ] {
            let e = check(
                &d,
                PAY_TO,
                U256::from(10000u64),
                AmountMatch::Exact,
                &vector(),
                1740672100,
            )
            .unwrap_err();
            assert_eq!(e.reason, reason::INVALID_SIGNATURE, "{e}");
        }
    }

    fn signed(key: &PrivateKeySigner, d: &Domain, auth: Authorization) -> ExactEvmPayload {
        let sig = key.sign_hash_sync(&d.digest(&auth)).unwrap();
        ExactEvmPayload {
            signature: sig.as_bytes().to_vec(),
            authorization: auth,
        }
    }

    #[test]
    fn each_offline_check_fails_for_its_own_reason() {
        let key = PrivateKeySigner::random();
        let d = Domain::new(
            "USD Coin",
            "2",
            8453,
            address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        );
        let now = 1_800_000_000;
        let good = Authorization {
            from: key.address(),
            to: PAY_TO,
            value: U256::from(1000u64),
            valid_after: now - 600,
            valid_before: now + 60,
            nonce: B256::repeat_byte(7),
        };
        let price = U256::from(1000u64);
        let run = |auth: Authorization, amount| check(&d, PAY_TO, price, amount, &signed(&key, &d, auth), now);
        assert!(run(good.clone(), AmountMatch::Exact).is_ok());
        let r = |res: Result<CheckedTransfer, Rejection>| res.unwrap_err().reason;
        assert_eq!(
            r(run(
                Authorization {
                    to: Address::repeat_byte(1),
                    ..good.clone()
                },
                AmountMatch::Exact
            )),
            reason::RECIPIENT
        );
        assert_eq!(
            r(run(
                Authorization {
                    valid_after: now + 10,
                    ..good.clone()
                },
                AmountMatch::Exact
            )),
            reason::VALID_AFTER
        );
        assert_eq!(
            r(run(
                Authorization {
                    valid_before: now + 3,
                    ..good.clone()
                },
                AmountMatch::Exact
            )),
            reason::VALID_BEFORE
        );
        assert_eq!(
            r(run(
                Authorization {
                    value: U256::from(999u64),
                    ..good.clone()
                },
                AmountMatch::Exact
            )),
            reason::VALUE
        );
        assert_eq!(
            r(run(
                Authorization {
                    value: U256::from(1001u64),
                    ..good.clone()
                },
                AmountMatch::Exact
            )),
            reason::VALUE
        );
        assert!(run(
            Authorization {
                value: U256::from(1001u64),
                ..good.clone()
            },
            AmountMatch::AtLeast
        )
        .is_ok());
        assert_eq!(
            r(run(
                Authorization {
                    value: U256::from(999u64),
                    ..good.clone()
                },
                AmountMatch::AtLeast
            )),
            reason::VALUE
        );
        // Signed by someone else.
        let mut p = signed(&PrivateKeySigner::random(), &d, good.clone());
        assert_eq!(
            check(&d, PAY_TO, price, AmountMatch::Exact, &p, now)
                .unwrap_err()
                .reason,
            reason::INVALID_SIGNATURE
        );
        // Tampered after signing.
        p = signed(&key, &d, good.clone());
        p.authorization.nonce = B256::repeat_byte(8);
        assert_eq!(
            check(&d, PAY_TO, price, AmountMatch::Exact, &p, now)
                .unwrap_err()
                .reason,
            reason::INVALID_SIGNATURE
        );
        // Wrong length.
        p = signed(&key, &d, good.clone());
        p.signature.push(0);
        assert!(check(&d, PAY_TO, price, AmountMatch::Exact, &p, now)
            .unwrap_err()
            .detail
            .contains("66 bytes"));
    }

    #[test]
    fn high_s_twin_of_a_good_signature_is_refused() {
        let key = PrivateKeySigner::random();
        let d = Domain::new("USD Coin", "2", 8453, Address::repeat_byte(9));
        let now = 1_800_000_000;
        let auth = Authorization {
            from: key.address(),
            to: PAY_TO,
            value: U256::from(1u64),
            valid_after: 0,
            valid_before: now + 60,
            nonce: B256::ZERO,
        };
        let sig = key.sign_hash_sync(&d.digest(&auth)).unwrap();
        // (r, n - s, !v) recovers the same key but USDC refuses it.
        let n = HALF_N * U256::from(2u64) + U256::from(1u64);
        let twin = Signature::new(sig.r(), n - sig.s(), !sig.v());
        let p = ExactEvmPayload {
            signature: twin.as_bytes().to_vec(),
            authorization: auth,
        };
        let e = check(&d, PAY_TO, U256::from(1u64), AmountMatch::Exact, &p, now).unwrap_err();
        assert!(e.detail.contains("high s"), "{e}");
    }
}
