//! Payment header codec: base64(JSON) both ways, strict on the way in.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine, GeneralPurpose, GeneralPurposeConfig};
use serde::Serialize;

use super::types::{PaymentPayload, Version};

/// Payment headers larger than this are refused before decoding (an EIP-3009 payload is ~600 bytes,
/// a Solana transaction ~1.5 KB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

const INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(false);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

/// Why a payment header could not be read. Each message names the header and what to send instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{header} is {len} bytes; the limit is {MAX_HEADER_BYTES} bytes")]
    TooLarge { header: &'static str, len: usize },
    #[error("{header} is empty; send base64-encoded JSON PaymentPayload")]
    Empty { header: &'static str },
    #[error("{header} is not valid base64 (standard or URL-safe): {detail}")]
    Base64 { header: &'static str, detail: String },
    #[error("{header} is not a valid x402 PaymentPayload: {detail}")]
    Json { header: &'static str, detail: String },
    #[error("{header} carries x402Version {found}; {header} takes version {expected} payloads{hint}")]
    Version {
        header: &'static str,
        found: u8,
        expected: u8,
        hint: &'static str,
    },
    #[error("{header} names no {field}; a v{version} payload must carry `{field}`")]
    Missing {
        header: &'static str,
        field: &'static str,
        version: u8,
    },
    #[error("send one payment header, not both X-PAYMENT and PAYMENT-SIGNATURE")]
    BothHeaders,
}

/// Decodes base64 in either alphabet, padded or not.
pub fn decode_base64(s: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let url_safe = s.iter().any(|&b| b == b'-' || b == b'_');
    if url_safe {
        URL_SAFE.decode(s)
    } else {
        STANDARD.decode(s)
    }
}

/// Encodes a value as base64(JSON), the form of every x402 header.
pub fn encode_header<T: Serialize>(v: &T) -> String {
    // Serializing our own plain structs cannot fail.
    let json = serde_json::to_vec(v).expect("x402 types serialize");
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Decodes a payment header sent as `version`'s header. Strict: size, base64, JSON shape, version
/// and the fields that name the scheme and network. It does not judge whether the payment is good.
pub fn decode_payment(version: Version, raw: &[u8]) -> Result<PaymentPayload, DecodeError> {
    let header = version.payment_header();
    if raw.len() > MAX_HEADER_BYTES {
        return Err(DecodeError::TooLarge { header, len: raw.len() });
    }
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty { header });
    }
    let json = decode_base64(trimmed).map_err(|e| DecodeError::Base64 {
        header,
        detail: e.to_string(),
    })?;
    let p: PaymentPayload = serde_json::from_slice(&json).map_err(|e| DecodeError::Json {
        header,
        detail: e.to_string(),
    })?;
    let expected = version.number();
    if p.x402_version != expected {
        let hint = match (version, p.x402_version) {
            (Version::V1, 2) => "; send v2 payloads in PAYMENT-SIGNATURE",
            (Version::V2, 1) => "; send v1 payloads in X-PAYMENT",
            _ => "; tollgate speaks versions 1 and 2",
        };
        return Err(DecodeError::Version {
            header,
            found: p.x402_version,
            expected,
            hint,
        });
    }
    match version {
        Version::V1 => {
            if p.scheme.as_deref().is_none_or(str::is_empty) {
                return Err(DecodeError::Missing {
                    header,
                    field: "scheme",
                    version: 1,
                });
            }
            if p.network.as_deref().is_none_or(str::is_empty) {
                return Err(DecodeError::Missing {
                    header,
                    field: "network",
                    version: 1,
                });
            }
        }
        Version::V2 => {
            if p.accepted.is_none() {
                return Err(DecodeError::Missing {
                    header,
                    field: "accepted",
                    version: 2,
                });
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD as STD, URL_SAFE_NO_PAD};

    const V1: &str = r#"{"x402Version":1,"scheme":"exact","network":"base","payload":{"a":"??>>"}}"#;

    #[test]
    fn accepts_standard_and_url_safe_with_or_without_padding() {
        for enc in [
            STD.encode(V1),
            URL_SAFE_NO_PAD.encode(V1),
            STD.encode(V1).trim_end_matches('=').to_string(),
        ] {
            let p = decode_payment(Version::V1, enc.as_bytes()).unwrap();
            assert_eq!(p.network(), "base");
        }
    }

    #[test]
    fn refuses_oversize_before_decoding() {
        let big = vec![b'A'; MAX_HEADER_BYTES + 1];
        assert_eq!(
            decode_payment(Version::V1, &big).unwrap_err(),
            DecodeError::TooLarge {
                header: "X-PAYMENT",
                len: MAX_HEADER_BYTES + 1
            }
        );
    }

    #[test]
    fn names_the_problem() {
        let err = |v, s: &str| decode_payment(v, s.as_bytes()).unwrap_err().to_string();
        assert!(err(Version::V1, "not base64!").contains("not valid base64"));
        assert!(err(Version::V1, &STD.encode("{}")).contains("missing field `x402Version`"));
        assert!(err(Version::V1, &STD.encode("[1,2]")).contains("not a valid x402 PaymentPayload"));
        let v2_in_v1 = STD.encode(V1.replace("\"x402Version\":1", "\"x402Version\":2"));
        assert!(err(Version::V1, &v2_in_v1).contains("send v2 payloads in PAYMENT-SIGNATURE"));
        assert!(err(Version::V2, &STD.encode(V1)).contains("send v1 payloads in X-PAYMENT"));
        let v9 = STD.encode(V1.replace("\"x402Version\":1", "\"x402Version\":9"));
        assert!(err(Version::V1, &v9).contains("speaks versions 1 and 2"));
        let no_net = STD.encode(V1.replace("\"network\":\"base\",", ""));
        assert!(err(Version::V1, &no_net).contains("names no network"));
        let v2_no_accepted = STD.encode(r#"{"x402Version":2,"payload":{}}"#);
        assert!(err(Version::V2, &v2_no_accepted).contains("must carry `accepted`"));
        assert!(err(Version::V2, "  ").contains("is empty"));
    }
}
