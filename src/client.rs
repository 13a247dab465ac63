//! A paying client: reads a 402, signs an EIP-3009 authorization with a local key, and builds the
//! payment header. Used by `examples/pay.rs`, the benchmarks and the tests.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use serde_json::value::RawValue;

use crate::chains::evm::Domain;
use crate::x402::network::builtin;
use crate::x402::{
    codec, encode_header, Authorization, ExactEvmPayload, Offer, PaymentPayload, PaymentRequiredV1, PaymentRequiredV2,
    RequirementsV2, Version,
};

/// One offered way to pay, read from a 402 in either version, in version-neutral terms.
#[derive(Debug, Clone)]
pub struct Offered {
    pub version: Version,
    pub scheme: String,
    /// As the 402 wrote it (v1 name or CAIP-2).
    pub network: String,
    pub chain_id: u64,
    pub amount: U256,
    pub asset: Address,
    pub pay_to: Address,
    pub max_timeout_seconds: u64,
    pub eip712_name: String,
    pub eip712_version: String,
    /// v2: the requirement exactly as offered, echoed back in `accepted`.
    pub v2: Option<RequirementsV2>,
}

impl Offered {
    /// An offer as a client would read it from the 402 (for callers that hold the [`Offer`] itself).
    pub fn from_offer(o: &Offer, version: Version) -> Offered {
        Offered {
            version,
            scheme: o.scheme.to_string(),
            network: match version {
                Version::V1 => o.network.name.clone(),
                Version::V2 => o.network.caip2.clone(),
            },
            chain_id: o.network.chain_id,
            amount: o.amount,
            asset: o.network.asset.parse().unwrap_or_default(),
            pay_to: o.pay_to.parse().unwrap_or_default(),
            max_timeout_seconds: o.max_timeout_seconds,
            eip712_name: o.network.eip712_name.clone(),
            eip712_version: o.network.eip712_version.clone(),
            v2: Some(o.to_v2()),
        }
    }
}

/// Reads the offers of a 402: the v2 `PAYMENT-REQUIRED` header if `prefer_v2` and present, else the v1 body.
pub fn read_402(payment_required: Option<&str>, body: &[u8], prefer_v2: bool) -> Result<Vec<Offered>, String> {
    let extra_str = |extra: &Option<serde_json::Value>, k: &str| {
        extra
            .as_ref()
            .and_then(|e| e.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let chain_of = |network: &str| -> Result<u64, String> {
        if let Some(id) = network.strip_prefix("eip155:") {
            return id.parse().map_err(|_| format!("bad CAIP-2 network {network}"));
        }
        builtin(network)
            .map(|k| k.chain_id)
            .ok_or_else(|| format!("unknown network {network}"))
    };
    if let (true, Some(h)) = (prefer_v2, payment_required) {
        let json = codec::decode_base64(h.as_bytes()).map_err(|e| format!("PAYMENT-REQUIRED is not base64: {e}"))?;
        let pr: PaymentRequiredV2 = serde_json::from_slice(&json).map_err(|e| format!("PAYMENT-REQUIRED: {e}"))?;
        return pr
            .accepts
            .into_iter()
            .map(|r| {
                Ok(Offered {
                    version: Version::V2,
                    scheme: r.scheme.clone(),
                    network: r.network.clone(),
                    chain_id: chain_of(&r.network)?,
                    amount: r.amount.parse().map_err(|_| "bad amount".to_string())?,
                    asset: r.asset.parse().map_err(|_| "bad asset".to_string())?,
                    pay_to: r.pay_to.parse().map_err(|_| "bad payTo".to_string())?,
                    max_timeout_seconds: r.max_timeout_seconds,
                    eip712_name: extra_str(&r.extra, "name"),
                    eip712_version: extra_str(&r.extra, "version"),
                    v2: Some(r),
                })
            })
            .collect();
    }
    let pr: PaymentRequiredV1 = serde_json::from_slice(body).map_err(|e| format!("402 body: {e}"))?;
    pr.accepts
        .into_iter()
        .map(|r| {
            Ok(Offered {
                version: Version::V1,
                scheme: r.scheme.clone(),
                network: r.network.clone(),
                chain_id: chain_of(&r.network)?,
                amount: r.max_amount_required.parse().map_err(|_| "bad amount".to_string())?,
                asset: r.asset.parse().map_err(|_| "bad asset".to_string())?,
                pay_to: r.pay_to.parse().map_err(|_| "bad payTo".to_string())?,
                max_timeout_seconds: r.max_timeout_seconds,
                eip712_name: extra_str(&r.extra, "name"),
                eip712_version: extra_str(&r.extra, "version"),
                v2: None,
            })
        })
        .collect()
}

/// Signs a transfer authorization for an offer, valid from 10 minutes ago until `max_timeout_seconds`
/// from `now`, with a random nonce.
pub fn authorize(offer: &Offered, key: &PrivateKeySigner, now: u64) -> ExactEvmPayload {
    let auth = Authorization {
        from: key.address(),
        to: offer.pay_to,
        value: offer.amount,
        valid_after: now.saturating_sub(600),
        valid_before: now + offer.max_timeout_seconds.max(60),
        nonce: B256::from(rand::random::<[u8; 32]>()),
    };
    sign(offer, key, auth)
}

/// Signs a given authorization under the offer's USDC domain.
pub fn sign(offer: &Offered, key: &PrivateKeySigner, auth: Authorization) -> ExactEvmPayload {
    let domain = Domain::new(&offer.eip712_name, &offer.eip712_version, offer.chain_id, offer.asset);
    let sig = key.sign_hash_sync(&domain.digest(&auth)).expect("local key signs");
    ExactEvmPayload {
        signature: sig.as_bytes().to_vec(),
        authorization: auth,
    }
}

/// The header (name, value) that pays with `payload` for `offer`.
pub fn payment_header(offer: &Offered, payload: &ExactEvmPayload) -> (&'static str, String) {
    let raw = RawValue::from_string(serde_json::to_string(payload).expect("payload serializes")).expect("valid json");
    let p = match offer.version {
        Version::V1 => PaymentPayload {
            x402_version: 1,
            scheme: Some(offer.scheme.clone()),
            network: Some(offer.network.clone()),
            resource: None,
            accepted: None,
            payload: raw,
            extensions: None,
        },
        Version::V2 => PaymentPayload {
            x402_version: 2,
            scheme: None,
            network: None,
            resource: None,
            accepted: offer.v2.clone(),
            payload: raw,
            extensions: None,
        },
    };
    (offer.version.payment_header(), encode_header(&p))
}
