//! The x402 wire types, v1 and v2, as plain serde data (no I/O).
//!
//! Field names follow the spec exactly (camelCase on the wire). Amounts stay decimal strings on the
//! wire and become integers ([`U256`]) the moment they are parsed.

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The protocol generation a client speaks; decides header names and field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
    /// The header the client pays with in this version.
    pub fn payment_header(self) -> &'static str {
        match self {
            Version::V1 => "X-PAYMENT",
            Version::V2 => "PAYMENT-SIGNATURE",
        }
    }
    /// The header the server answers with in this version.
    pub fn response_header(self) -> &'static str {
        match self {
            Version::V1 => "X-PAYMENT-RESPONSE",
            Version::V2 => "PAYMENT-RESPONSE",
        }
    }
    /// [`Self::response_header`] in lower case, as HTTP/2 wants it.
    pub fn response_header_lower(self) -> &'static str {
        match self {
            Version::V1 => "x-payment-response",
            Version::V2 => "payment-response",
        }
    }
}

/// One way to pay, as v1 writes it (every field present; all strings but `maxTimeoutSeconds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    pub scheme: String,
    pub network: String,
    pub max_amount_required: String,
    pub asset: String,
    pub pay_to: String,
    pub resource: String,
    pub description: String,
    pub mime_type: String,
    pub output_schema: Option<serde_json::Value>,
    pub max_timeout_seconds: u64,
    pub extra: Option<serde_json::Value>,
}

/// One way to pay, as v2 writes it (resource info moved to the top level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV2 {
    pub scheme: String,
    pub network: String,
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// What is being paid for (v2 top level).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mime_type: String,
}

/// The v1 402 body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    pub error: String,
    pub accepts: Vec<RequirementsV1>,
}

/// The v2 `PAYMENT-REQUIRED` header, before base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV2 {
    pub x402_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resource: ResourceInfo,
    pub accepts: Vec<RequirementsV2>,
    /// Extensions the server declares (`payment-identifier`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
}

/// A payment as the client sends it, either version. The scheme-specific `payload` is kept raw
/// and parsed by the chain family that handles the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u8,
    /// v1: the scheme and network chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// v2: the resource and the exact requirement chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<RequirementsV2>,
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Box<RawValue>>,
}

impl PaymentPayload {
    /// The scheme the client chose, whichever version it speaks.
    pub fn scheme(&self) -> &str {
        match (&self.scheme, &self.accepted) {
            (Some(s), _) => s,
            (None, Some(a)) => &a.scheme,
            _ => "",
        }
    }
    /// The network the client chose (a v1 name or a CAIP-2 id).
    pub fn network(&self) -> &str {
        match (&self.network, &self.accepted) {
            (Some(n), _) => n,
            (None, Some(a)) => &a.network,
            _ => "",
        }
    }
}

/// The answer to a settlement, sent base64 in `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default)]
    pub transaction: String,
    #[serde(default)]
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A facilitator's answer to `/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// The body of a facilitator's `/verify` and `/settle`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest<'a, R: Serialize> {
    pub x402_version: u8,
    pub payment_payload: &'a PaymentPayload,
    pub payment_requirements: &'a R,
}

/// The EVM `exact` scheme payload: an EIP-3009 `transferWithAuthorization` signed by the payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    pub authorization: Authorization,
}

/// The signed EIP-3009 authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    #[serde(with = "decimal_u256")]
    pub value: U256,
    #[serde(with = "decimal_u64")]
    pub valid_after: u64,
    #[serde(with = "decimal_u64")]
    pub valid_before: u64,
    pub nonce: B256,
}

/// `0x`-prefixed hex bytes.
mod hex_bytes {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&alloy::hex::encode_prefixed(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <&str>::deserialize(d)?;
        let h = s
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom("signature must be 0x-prefixed hex"))?;
        alloy::hex::decode(h).map_err(|e| serde::de::Error::custom(format!("signature: {e}")))
    }
}

/// Parses a decimal integer string strictly: digits only, no sign, no spaces.
fn parse_decimal(s: &str) -> Option<U256> {
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(s, 10).ok()
}

/// Amounts as decimal strings (numbers are accepted too, as some clients send them).
mod decimal_u256 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        match StrOrNum::deserialize(d)? {
            StrOrNum::S(s) => {
                parse_decimal(&s).ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a decimal integer")))
            }
            StrOrNum::N(n) => Ok(U256::from(n)),
        }
    }
}

/// Unix times as decimal strings (numbers accepted too).
mod decimal_u64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match StrOrNum::deserialize(d)? {
            StrOrNum::S(s) => parse_decimal(&s)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a unix time"))),
            StrOrNum::N(n) => Ok(n),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    N(u64),
}

/// `U256` as a decimal string, the form every amount takes on the wire.
pub fn amount_string(v: U256) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evm_payload_parses_strings_and_rejects_junk() {
        let ok = r#"{"signature":"0x0102","authorization":{"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66","to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","value":"10000","validAfter":"1740672089","validBefore":1740672154,"nonce":"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"}}"#;
        let p: ExactEvmPayload = serde_json::from_str(ok).unwrap();
        assert_eq!(p.signature, vec![1, 2]);
        assert_eq!(p.authorization.value, U256::from(10000u64));
        assert_eq!(p.authorization.valid_before, 1740672154);
        for bad in ["\"-1\"", "\"1e6\"", "\" 1\"", "\"\"", "\"0x10\"", "1.5"] {
            let s = ok.replace("\"10000\"", bad);
            assert!(serde_json::from_str::<ExactEvmPayload>(&s).is_err(), "{bad} accepted");
        }
        let no_prefix = ok.replace("\"0x0102\"", "\"0102\"");
        assert!(serde_json::from_str::<ExactEvmPayload>(&no_prefix).is_err());
    }

    #[test]
    fn settle_response_is_camel_case_and_omits_empty_reason() {
        let ok = SettleResponse {
            success: true,
            error_reason: None,
            transaction: "0xab".into(),
            network: "base".into(),
            payer: Some("0x01".into()),
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"success":true,"transaction":"0xab","network":"base","payer":"0x01"}"#
        );
        let failed = SettleResponse {
            success: false,
            error_reason: Some("insufficient_funds".into()),
            ..ok
        };
        assert!(serde_json::to_string(&failed)
            .unwrap()
            .contains(r#""errorReason":"insufficient_funds""#));
    }

    #[test]
    fn payload_names_scheme_and_network_in_both_versions() {
        let v1: PaymentPayload =
            serde_json::from_str(r#"{"x402Version":1,"scheme":"exact","network":"base","payload":{}}"#).unwrap();
        assert_eq!((v1.scheme(), v1.network()), ("exact", "base"));
        let v2: PaymentPayload = serde_json::from_str(
            r#"{"x402Version":2,"accepted":{"scheme":"exact","network":"eip155:8453","amount":"1","asset":"0x","payTo":"0x","maxTimeoutSeconds":60},"payload":{}}"#,
        )
        .unwrap();
        assert_eq!((v2.scheme(), v2.network()), ("exact", "eip155:8453"));
    }
}
